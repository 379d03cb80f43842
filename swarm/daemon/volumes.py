"""The local API's volume calls: volume.ls, volume.inspect, volume.rm, volume.prune on this node's volumes.

Volumes are a node's own (Docker's local driver): these calls never reach a
manager. File work runs in a worker thread. Errors leave with Docker's
sentences: a missing volume as "not_found" ("get NAME: no such volume"), one
that tasks use as "conflict" ("remove NAME: volume is in use - [IDS]"), bad
input as "bad_request".
"""
from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from swarm.rpc.messages import Peer, RPCError
from swarm.rpc.router import Handler
from swarm.runtime.errors import ContainerError
from swarm.runtime.volumes import FILTERS, PRUNE_FILTERS, NoSuchVolume, VolumeInUse, VolumeStore, matches, \
    parse_filters

MAX_NAMES = 1000     # names in one inspect or rm call


def volume_handlers(store: VolumeStore) -> dict[str, Handler]:
    """Method name -> handler, for the local router."""

    async def volume_ls(peer: Peer, params: dict) -> list:
        filters = parse_filters(_strings(params, "filters"), FILTERS)
        found = await trio.to_thread.run_sync(store.list)
        return [v for v in found if matches(v, filters)]

    async def volume_inspect(peer: Peer, params: dict) -> dict:
        """{"volumes": [info...], "errors": [sentence...]}: docker shows what it finds, then fails."""
        names = _strings(params, "names")
        found, errors = [], []
        for name in names:
            try:
                found.append(await trio.to_thread.run_sync(store.inspect, name))
            except NoSuchVolume as exc:
                errors.append(str(exc))
        return {"volumes": found, "errors": errors}

    async def volume_rm(peer: Peer, params: dict) -> dict:
        """{"removed": [name...], "errors": [sentence...]}: every name is tried, as docker's `volume rm`."""
        force = params.get("force", False)
        if not isinstance(force, bool):
            raise RPCError("bad_request", "force must be true or false")
        removed, errors = [], []
        for name in _strings(params, "names"):
            try:
                if await trio.to_thread.run_sync(store.remove, name, force) or force:
                    removed.append(name)
            except (NoSuchVolume, VolumeInUse, ContainerError) as exc:
                errors.append(str(exc))
        return {"removed": removed, "errors": errors}

    async def volume_prune(peer: Peer, params: dict) -> dict:
        all_volumes = params.get("all", False)
        if not isinstance(all_volumes, bool):
            raise RPCError("bad_request", "all must be true or false")
        filters = parse_filters(_strings(params, "filters"), PRUNE_FILTERS)
        removed, reclaimed = await trio.to_thread.run_sync(store.prune, all_volumes, filters)
        return {"removed": removed, "reclaimed": reclaimed}

    return {"volume.ls": _refusals(volume_ls), "volume.inspect": _refusals(volume_inspect),
            "volume.rm": _refusals(volume_rm), "volume.prune": _refusals(volume_prune)}


def _strings(params: dict, key: str) -> list[str]:
    value = params.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_NAMES or not all(isinstance(v, str) for v in value):
        raise RPCError("bad_request", f"{key} must be a list of at most {MAX_NAMES} strings")
    return value


def _refusals(handler: Callable[[Peer, dict], Awaitable[Any]]) -> Handler:
    @functools.wraps(handler)
    async def run(peer: Peer, params: dict) -> Any:
        try:
            return await handler(peer, params)
        except NoSuchVolume as exc:
            raise RPCError("not_found", str(exc)) from None
        except VolumeInUse as exc:
            raise RPCError("conflict", str(exc)) from None
        except ValueError as exc:
            raise RPCError("bad_request", str(exc)) from None
        except ContainerError as exc:
            raise RPCError("unavailable", exc.message) from None
    return run

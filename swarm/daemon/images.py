"""The local API's image calls on this node's ImageStore: image.import, image.load, image.ls,
image.inspect, image.tag, image.save, image.rm, image.prune.

Imports, loads and saves run in a worker thread that stops when the call is
cancelled (runtime.images.run_cancellable); the other calls are quick file
reads and writes under the store's lock. A refused archive, a malformed
reference or a missing image is the caller's input: it leaves as
"bad_request" with the store's sentence. Calls naming several images (inspect,
rm) answer for each: what was done and one error sentence per image that
failed, as docker prints them.

The daemon and the CLI run as root on the same machine: `image.save` writes
the path the CLI gives (replacing an existing file, as `docker save -o` does),
and the images task bundles use come from their meta.json (`task_image_ids`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from swarm.api.errors import SwarmError
from swarm.rpc.messages import Peer, RPCError
from swarm.rpc.router import Handler
from swarm.runtime.errors import ImageError
from swarm.runtime.images import MAX_IMPORT_BYTES, ImageStore, run_cancellable


def image_handlers(images: ImageStore) -> dict[str, Handler]:
    """Method name -> handler, for the local router."""

    async def image_import(peer: Peer, params: dict) -> dict:
        image_id = await run_cancellable(images.import_rootfs, params["path"], params["ref"])
        return {"id": image_id, "ref": params["ref"]}

    async def image_load(peer: Peer, params: dict) -> dict:
        return {"refs": await run_cancellable(images.load_archive, params["path"])}

    async def image_ls(peer: Peer, params: dict) -> Any:
        return await trio.to_thread.run_sync(images.summaries)

    async def image_inspect(peer: Peer, params: dict) -> dict:
        found, errors = [], []
        for ref in _refs(params):
            try:
                found.append(images.inspect(ref))
            except ImageError as exc:
                errors.append(str(exc))
        return {"images": found, "errors": errors}

    async def image_tag(peer: Peer, params: dict) -> dict:
        images.tag(str(params["source"]), str(params["target"]))
        return {}

    async def image_save(peer: Peer, params: dict) -> dict:
        path = params.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ImageError("image.save needs the absolute path of the file to write.")
        await trio.to_thread.run_sync(images.save, _refs(params), path, abandon_on_cancel=False)
        return {"path": path}

    async def image_rm(peer: Peer, params: dict) -> dict:
        records, errors = [], []
        for ref in _refs(params):
            try:
                records.extend(images.remove(ref, force=bool(params.get("force"))))
            except ImageError as exc:
                errors.append(str(exc))
        return {"records": records, "errors": errors}

    async def image_prune(peer: Peer, params: dict) -> dict:
        return await trio.to_thread.run_sync(functools.partial(images.prune, all=bool(params.get("all"))))

    handlers = {"image.import": image_import, "image.load": image_load, "image.ls": image_ls,
                "image.inspect": image_inspect, "image.tag": image_tag, "image.save": image_save,
                "image.rm": image_rm, "image.prune": image_prune}
    return {name: _refusals(handler) for name, handler in handlers.items()}


def _refs(params: dict) -> list[str]:
    refs = params.get("refs")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise ImageError("Name at least one image.")
    return refs


def task_image_ids(tasks_dir: str) -> set[str]:
    """The ids of the images the task bundles under `tasks_dir` were prepared from (their
    meta.json): garbage collection and `image rm` leave these images alone."""
    used = set()
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(tasks_dir):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                with open(os.path.join(tasks_dir, name, "meta.json")) as f:
                    used.add(str(json.load(f)["image_id"]))
    return used


def _refusals(handler: Callable[[Peer, dict], Awaitable[Any]]) -> Handler:
    @functools.wraps(handler)
    async def run(peer: Peer, params: dict) -> Any:
        try:
            return await handler(peer, params)
        except (OSError, ValueError, ImageError) as exc:
            raise RPCError("bad_request", str(exc)) from None
    return run


def max_import_size() -> int:
    """SWARM_MAX_IMPORT_SIZE (a size like 20g or 512m): what one image import may expand to."""
    text = os.environ.get("SWARM_MAX_IMPORT_SIZE", "")
    if not text:
        return MAX_IMPORT_BYTES
    from swarm.api.units import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        raise SwarmError(f"SWARM_MAX_IMPORT_SIZE: {exc}") from None

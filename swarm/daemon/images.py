"""The local API's image calls: image.import, image.load, image.ls, image.rm on this node's ImageStore.

Imports and loads run in a worker thread that stops when the call is
cancelled (runtime.images.run_cancellable). A refused archive or a missing
image is the caller's input: it leaves as "bad_request" with the store's
sentence.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

from swarm.api.errors import SwarmError
from swarm.rpc.messages import Peer, RPCError
from swarm.rpc.router import Handler
from swarm.runtime.images import MAX_IMPORT_BYTES, ImageStore, run_cancellable


def image_handlers(images: ImageStore) -> dict[str, Handler]:
    """Method name -> handler, for the local router."""

    async def image_import(peer: Peer, params: dict) -> dict:
        image_id = await run_cancellable(images.import_rootfs, params["path"], params["ref"])
        return {"id": image_id, "ref": params["ref"]}

    async def image_load(peer: Peer, params: dict) -> dict:
        return {"refs": await run_cancellable(images.load_archive, params["path"])}

    async def image_ls(peer: Peer, params: dict) -> Any:
        return images.list()

    async def image_rm(peer: Peer, params: dict) -> list:
        removed = []
        for ref in params.get("refs", []):
            images.remove(ref)
            removed.append(ref)
        return removed

    return {"image.import": _refusals(image_import), "image.load": _refusals(image_load),
            "image.ls": _refusals(image_ls), "image.rm": _refusals(image_rm)}


def _refusals(handler: Callable[[Peer, dict], Awaitable[Any]]) -> Handler:
    @functools.wraps(handler)
    async def run(peer: Peer, params: dict) -> Any:
        try:
            return await handler(peer, params)
        except (OSError, ValueError) as exc:
            raise RPCError("bad_request", str(exc)) from None
        except Exception as exc:
            if type(exc).__name__ == "ImageError":
                raise RPCError("bad_request", str(exc)) from None
            raise
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

"""Reading records back from the store without trusting them.

Every record was validated when it was written, but a store outlives the code
that wrote it: a record that no longer decodes into the object model is
skipped (and logged once per record version) instead of failing every reader
that lists its kind, so one bad record never stalls the cluster.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, TypeVar

from swarm.api import model, spec

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_REMEMBERED = 10_000
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Log `message` the first time `key` is seen (a bounded memory of keys)."""
    if key in _warned:
        return
    if len(_warned) >= _MAX_REMEMBERED:
        _warned.clear()
    _warned.add(key)
    log.warning("%s", message)


# build function -> the same from the record's bytes, faster (what build(model.decode(bytes))
# gives, and the same errors for bad bytes): the tasks' records are most of a store.
_FROM_BYTES: dict[Callable, Callable[[bytes], Any]] = {spec.task_from_dict: spec.task_from_record}


def _typed(data: bytes, build: Callable[[dict], T]) -> T:
    from_bytes = _FROM_BYTES.get(build)
    if from_bytes is not None:
        return from_bytes(data)
    decoded = model.decode(data)
    if not isinstance(decoded, dict):
        raise ValueError("not a map")
    return build(decoded)


# build function -> record key -> (version, typed object): records are immutable per
# version, so a listing decodes only what changed since the last one. The objects are
# frozen dataclasses (or dicts nobody mutates) shared by every reader.
_decoded: dict[Callable, dict[str, tuple[int, Any]]] = {}


def decode_all(listing: Mapping[str, Any], build: Callable[[dict], T]) -> dict[str, tuple[T, int]]:
    """key -> (typed object, record version) for every record of a listing that decodes."""
    known = _decoded.get(build, {})
    fresh: dict[str, tuple[int, Any]] = {}
    out: dict[str, tuple[T, int]] = {}
    for key, rec in listing.items():
        hit = known.get(key)
        if hit is not None and hit[0] == rec.version:
            fresh[key] = hit
            out[key] = (hit[1], rec.version)
            continue
        try:
            obj = _typed(rec.data, build)
        except Exception as exc:  # any shape of bad bytes: skip this record, keep the rest
            why = str(exc) or type(exc).__name__
            warn_once(f"{key}@{rec.version}", f"skipping record {key} (version {rec.version}): {why}")
            continue
        fresh[key] = (rec.version, obj)
        out[key] = (obj, rec.version)
    _decoded[build] = fresh
    return out


def decode_one(key: str, rec: Any, build: Callable[[dict], T]) -> T:
    """One record typed through the cache `decode_all` keeps: a reader that follows events
    (the dispatcher's index) shares its objects with the listings (the reconciler's rounds)
    instead of holding a second typed copy of every record (0.8 KB a task: its container
    spec is shared, see spec.task_from_dict). Raises what
    `build` raises on a bad record."""
    known = _decoded.setdefault(build, {})
    hit = known.get(key)
    if hit is not None and hit[0] == rec.version:
        return hit[1]
    obj = _typed(rec.data, build)
    known[key] = (rec.version, obj)
    return obj


def forget(key: str, build: Callable[[dict], Any]) -> None:
    """A record `decode_one` typed was deleted: its object leaves the cache now (a manager that
    lists nothing would otherwise keep every deleted task's)."""
    _decoded.get(build, {}).pop(key, None)

"""`docker events` over the Engine API: the local `events` method's events as Docker's
event messages, and Docker's event filters. Pure.

How this works. GET /events streams one JSON object per line (events.Message of moby's API:
Type, Action, Actor{ID, Attributes}, scope, time, timeNano), as dockerd's encoder writes
them. The filters are Docker's: `type` and `event` (the action) match exactly, `scope` is
"swarm" for every event here, and `node`, `service`, `network`, `secret`, `config` match the
Actor's ID or name of an event of that type; `label` matches an attribute (none of these
events carries labels, so it matches none), and the names of kinds this daemon never emits
(container, image, volume, plugin, daemon) are accepted and match nothing, as on a dockerd
where nothing of that kind happens. Values of one name are alternatives; names must all match.
"""
from __future__ import annotations

import json
from typing import Any

from swarm.engineapi.fields import Unsupported

_BY_ACTOR = ("node", "service", "network", "secret", "config")
_NEVER = ("container", "image", "volume", "plugin", "daemon")
FILTERS = frozenset(("type", "event", "scope", "label", *_BY_ACTOR, *_NEVER))
MEDIA_TYPE = "application/json"


def message(e: dict) -> dict:
    """Docker's events.Message of an `events` answer's EVENT."""
    nanos = int(e["time_nano"])
    return {"Type": e["type"], "Action": e["action"],
            "Actor": {"ID": e["id"], "Attributes": dict(e.get("attributes") or {})},
            "scope": "swarm", "time": nanos // 1_000_000_000, "timeNano": nanos}


def line(e: dict) -> bytes:
    return json.dumps(message(e), separators=(",", ":")).encode() + b"\n"


def check_filters(wanted: dict[str, list[str]]) -> dict[str, list[str]]:
    """`wanted` if every name is one of Docker's event filters; Unsupported (a 400) otherwise."""
    for name in wanted:
        if name not in FILTERS:
            raise Unsupported(f"invalid filter '{name}'")
    return wanted


def matches(e: dict, wanted: dict[str, list[str]]) -> bool:
    """Whether EVENT passes every filter of `wanted` (checked by check_filters)."""
    name = (e.get("attributes") or {}).get("name", "")
    for key, values in wanted.items():
        values = [v for v in values if v]
        if not values:
            continue
        if key == "type":
            ok = e["type"] in values
        elif key == "event":
            ok = e["action"] in values
        elif key == "scope":
            ok = "swarm" in values
        elif key in _BY_ACTOR:
            ok = e["type"] == key and any(v in (e["id"], name) for v in values)
        else:                            # label, and the kinds never emitted here
            ok = False
        if not ok:
            return False
    return True


def unix_nanos(name: str, value: str | None) -> int | None:
    """Docker's ?since=/?until= (a Unix time "SECONDS[.NANOS]", as docker/cli sends it) in
    nanoseconds; None when absent."""
    if value in (None, ""):
        return None
    whole, _, frac = value.partition(".")
    if not whole.lstrip("-").isdigit() or (frac and not frac.isdigit()):
        raise Unsupported(f"{name}: {value!r} is not a Unix time (SECONDS[.NANOSECONDS])")
    return int(whole) * 1_000_000_000 + (int((frac + "000000000")[:9]) if frac else 0)


def stream_params(since: int | None, now: int) -> dict[str, Any]:
    """The first `events` call: the events kept since `since` (none in the future)."""
    return {"after": None, "since": since if since is not None and since <= now else None, "wait": 0}

"""The store's changes as Docker's swarm events: the local method `events` (`docker events`).

How this works. A manager's store tells its changes through a watch (raft.watch: the kind,
id and action of every record written, in log order). The first `events` call on a manager
starts a pump in the manager's nursery (so it ends when the node stops being a manager):
it watches the node, service, network, secret and config records, describes each change
as Docker does (`describe`: the action create/update/remove, the name, and for an update
the tracked fields that changed as "state.old"/"state.new"), stamps it with the time it
saw it and keeps the newest HISTORY events in a ring, each with a sequence number.

`events` is a long poll, as image.pull's: `{"after": SEQ}` answers the events after SEQ,
waiting up to `wait` seconds for one; the first call (`"after": null`) answers those kept
since `since` (none without it) and the sequence number to go on from. A caller that fell
more than HISTORY events behind is told (`"lost": true`). The record is read when the pump
sees the change, so two writes in quick succession may both show the newer facts: events
are a notice that something changed, not a log of values. A worker has no swarm events
(its polls answer nothing), as a Docker worker's stream shows no cluster changes.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from raft.store import Event
from raft.watch import Resync
from swarm.api import model
from swarm.api.errors import ApiError

if TYPE_CHECKING:
    from swarm.manager.membership import Manager

HISTORY = 1024          # events kept for a late poll or a `since` in the past (dockerd keeps 256)
MAX_WAIT = 5.0          # seconds one poll may wait for an event
# store kind -> Docker's event Type
TYPES = {model.NODE: "node", "service": "service", "network": "network", "secret": "secret", "config": "config"}
ACTIONS = {"create": "create", "update": "update", "delete": "remove"}


def facts(kind: str, data: dict) -> dict[str, str]:
    """The name of a record, and the fields whose change an update event names (Docker's)."""
    if kind == model.NODE:
        return {"name": data.get("hostname", ""), "state": data.get("status", ""),
                "availability": data.get("availability", ""), "role": data.get("role", "")}
    if kind == "service":
        spec = data.get("spec") or {}
        out = {"name": spec.get("name", ""), "image": (spec.get("container") or {}).get("image", "")}
        if spec.get("mode") in ("replicated", "replicated-job"):
            out["replicas"] = str(spec.get("replicas", ""))
        status = data.get("update_status")
        if status:
            out["updatestate"] = status.get("state", "")
        return out
    return {"name": data.get("name", "")}


def describe(action: str, before: dict[str, str] | None, after: dict[str, str] | None) -> tuple[str, dict[str, str]]:
    """(Docker's action, the Actor's attributes) of a store change: `before`/`after` are the
    record's facts before and after it (None: unknown, or gone)."""
    now = after if after is not None else before or {}
    attributes = {"name": now.get("name", "")}
    if action == "update" and before is not None and after is not None:
        for key, value in after.items():
            if key != "name" and before.get(key, "") != value:
                attributes[f"{key}.old"], attributes[f"{key}.new"] = before.get(key, ""), value
    return ACTIONS[action], attributes


def _decode(kind: str, data: bytes) -> dict[str, str] | None:
    try:
        return facts(kind, model.decode(data))
    except (ValueError, TypeError, AttributeError):
        return None          # a record that does not decode: its events carry no name


class EventFeed:
    """The `events` method of one daemon; `manager()`: the Manager now, None on a worker."""

    def __init__(self, manager: Callable[[], Manager | None], clock: Callable[[], int] = time.time_ns) -> None:
        self._manager = manager
        self._clock = clock
        self._pumping: Manager | None = None
        self._ring: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._seq = 0
        self._changed = trio.Event()

    def _ensure_pump(self) -> None:
        m = self._manager()
        if m is not None and m is not self._pumping and m.nursery is not None:
            self._pumping = m
            m.nursery.start_soon(self._pump, m)

    def _known(self, raft: Any) -> dict[str, dict[str, str] | None]:
        return {id: _decode(kind, rec.data) for kind in TYPES for id, rec in raft.list(kind).items()}

    async def _pump(self, m: Manager) -> None:
        raft = m.raft
        with raft.watch(kinds=list(TYPES)) as watch:
            known = self._known(raft)          # a removed record's name comes from here
            async for item in watch:
                if self._pumping is not m:
                    return
                if isinstance(item, Resync):
                    known = self._known(raft)  # events were dropped while nobody read: go on from now
                    continue
                if not isinstance(item, Event) or item.action not in ACTIONS:
                    continue
                rec = raft.get(item.kind, item.id) if item.action != "delete" else None
                after = _decode(item.kind, rec.data) if rec is not None else None
                action, attributes = describe(item.action, known.get(item.id), after)
                if item.action == "delete":
                    known.pop(item.id, None)
                else:
                    known[item.id] = after
                self._append({"type": TYPES[item.kind], "action": action, "id": item.id,
                              "attributes": attributes, "time_nano": self._clock()})

    def _append(self, event: dict[str, Any]) -> None:
        self._seq += 1
        self._ring.append(dict(event, seq=self._seq))
        self._changed.set()
        self._changed = trio.Event()

    def _after(self, after: int) -> tuple[list[dict[str, Any]], bool]:
        lost = bool(self._ring) and self._ring[0]["seq"] > after + 1
        return [e for e in self._ring if e["seq"] > after], lost

    async def poll(self, params: dict) -> dict[str, Any]:
        """The `events` method: {"after": SEQ or null, "since"?: Unix nanoseconds, "wait": seconds}
        -> {"events": [EVENT], "next": SEQ, "lost": bool}. EVENT: {"seq", "type", "action",
        "id", "attributes": {"name", ...}, "time_nano"}."""
        after, since, wait = params.get("after"), params.get("since"), params.get("wait", 0)
        if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 0):
            raise ApiError("bad_request", "after must be an event sequence number")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise ApiError("bad_request", "since must be a Unix time in nanoseconds")
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or wait < 0:
            raise ApiError("bad_request", "wait must be a number of seconds")
        self._ensure_pump()
        if after is None:
            kept = [e for e in self._ring if since is not None and e["time_nano"] >= since]
            return {"events": kept, "next": self._seq, "lost": False}
        after = min(after, self._seq)       # a cursor of an earlier feed (the daemon restarted)
        found, lost = self._after(after)
        if not found and wait:
            with trio.move_on_after(min(float(wait), MAX_WAIT)):
                await self._changed.wait()
            found, lost = self._after(after)
        return {"events": found, "next": found[-1]["seq"] if found else after, "lost": lost}

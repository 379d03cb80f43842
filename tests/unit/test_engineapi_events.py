"""`docker events`: the daemon's feed of the store's changes (swarm/daemon/events.py) over
the in-memory store, Docker's messages and filters (swarm/engineapi/events.py), and the
/events stream of the Engine API's application over a fake local API."""
from __future__ import annotations

import json
import types

import pytest
import trio
import trio.testing

from raft.memory import MemoryStore
from raft.store import Op
from swarm.api import model
from swarm.daemon.events import HISTORY, EventFeed, describe, facts
from swarm.engineapi import events
from swarm.engineapi.fields import Unsupported
from tests.unit.test_engineapi_app import FakeLocalAPI, client


def service(name: str, replicas: int = 1, image: str = "demo:1") -> bytes:
    return model.encode({"id": "s1", "spec": {"name": name, "mode": "replicated", "replicas": replicas,
                                              "container": {"image": image}}, "update_status": None})


# -- pure ------------------------------------------------------------------------------------


def test_an_update_names_the_tracked_fields_that_changed_as_docker_does():
    node = {"hostname": "m1", "status": "ready", "availability": "active", "role": "worker"}
    before, after = facts("node", node), facts("node", dict(node, status="down", availability="drain"))
    assert describe("update", before, after) == ("update", {
        "name": "m1", "state.old": "ready", "state.new": "down", "availability.old": "active",
        "availability.new": "drain"})
    assert describe("delete", before, None) == ("remove", {"name": "m1"})
    assert describe("create", None, facts("secret", {"name": "pw"})) == ("create", {"name": "pw"})
    assert describe("update", None, facts("network", {"name": "n"})) == ("update", {"name": "n"})


def test_messages_and_filters_are_dockers():
    e = {"seq": 1, "type": "service", "action": "create", "id": "s1", "attributes": {"name": "web"},
         "time_nano": 1_700_000_000_123_456_789}
    assert events.message(e) == {"Type": "service", "Action": "create", "Actor": {"ID": "s1", "Attributes": {
        "name": "web"}}, "scope": "swarm", "time": 1_700_000_000, "timeNano": 1_700_000_000_123_456_789}
    assert events.line(e).endswith(b"}\n") and json.loads(events.line(e))["Type"] == "service"
    for wanted, ok in (({}, True), ({"type": ["service"]}, True), ({"type": ["node", "secret"]}, False),
                       ({"event": ["create"]}, True), ({"event": ["remove"]}, False), ({"service": ["web"]}, True),
                       ({"service": ["s1"]}, True), ({"node": ["web"]}, False), ({"scope": ["local"]}, False),
                       ({"type": ["service"], "event": ["update"]}, False), ({"container": ["x"]}, False),
                       ({"label": ["a=b"]}, False), ({"type": [""]}, True)):
        assert events.matches(e, events.check_filters(wanted)) is ok, wanted
    with pytest.raises(Unsupported, match="invalid filter 'colour'"):
        events.check_filters({"colour": ["red"]})
    assert events.unix_nanos("since", "1700000000.5") == 1_700_000_000_500_000_000
    assert events.unix_nanos("until", "12") == 12_000_000_000 and events.unix_nanos("until", None) is None
    with pytest.raises(Unsupported, match="since: '10m' is not a Unix time"):
        events.unix_nanos("since", "10m")


# -- the feed over the store ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


@pytest.mark.trio
async def test_the_feed_tells_every_change_in_order_and_names_a_removed_record():
    store = MemoryStore()
    await store.commit([Op.create("service", "s0", service("old"))])
    async with trio.open_nursery() as nursery:
        manager = types.SimpleNamespace(raft=store, nursery=nursery)
        feed = EventFeed(lambda: manager, clock=Clock())
        first = await feed.poll({"after": None})          # starts the pump: nothing before it is told
        assert first == {"events": [], "next": 0, "lost": False}
        await trio.testing.wait_all_tasks_blocked()
        await store.commit([Op.create("service", "s1", service("web"))])
        await trio.testing.wait_all_tasks_blocked()       # the pump reads the record when it sees the change
        await store.commit([Op.update("service", "s1", service("web", replicas=3))])
        await store.commit([Op.create("secret", "x1", model.encode({"name": "pw"})),
                            Op.delete("service", "s0")])
        await store.commit([Op.create("task", "t1", b"\x80")])     # tasks are not Docker events
        await trio.testing.wait_all_tasks_blocked()
        got = await feed.poll({"after": 0, "wait": 1})
        assert [(e["seq"], e["type"], e["action"], e["id"], e["attributes"]) for e in got["events"]] == [
            (1, "service", "create", "s1", {"name": "web"}),
            (2, "service", "update", "s1", {"name": "web", "replicas.old": "1", "replicas.new": "3"}),
            (3, "secret", "create", "x1", {"name": "pw"}),
            (4, "service", "remove", "s0", {"name": "old"})]
        assert got["next"] == 4 and [e["time_nano"] for e in got["events"]] == sorted(e["time_nano"] for e in got["events"])
        # a long poll waits for the next change, and answers at once when it comes
        async with trio.open_nursery() as inner:
            answers = []

            async def poll() -> None:
                answers.append(await feed.poll({"after": 4, "wait": 5}))
            inner.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []
            await store.commit([Op.delete("secret", "x1")])
        assert [(e["action"], e["attributes"]["name"]) for e in answers[0]["events"]] == [("remove", "pw")]
        # history: `since` replays what was kept; no change within `wait`: an empty answer
        assert len((await feed.poll({"after": None, "since": 0}))["events"]) == 5
        assert (await feed.poll({"after": 5, "wait": 0.01}))["events"] == []
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_poller_that_fell_behind_the_history_is_told_and_bad_params_are_refused():
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        feed = EventFeed(lambda: types.SimpleNamespace(raft=store, nursery=nursery))
        await feed.poll({"after": None})
        await trio.testing.wait_all_tasks_blocked()
        for i in range(HISTORY + 5):
            await store.commit([Op.create("network", f"n{i}", model.encode({"name": f"net{i}"}))])
            await trio.testing.wait_all_tasks_blocked()
        got = await feed.poll({"after": 1})
        assert got["lost"] is True and len(got["events"]) == HISTORY and got["next"] == HISTORY + 5
        for params in ({"after": -1}, {"after": "1"}, {"after": None, "since": "x"}, {"after": 0, "wait": -1}):
            with pytest.raises(Exception, match="must be"):
                await feed.poll(params)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_worker_has_no_swarm_events():
    feed = EventFeed(lambda: None)
    assert await feed.poll({"after": None}) == {"events": [], "next": 0, "lost": False}
    assert (await feed.poll({"after": 0, "wait": 0.01}))["events"] == []


# -- the /events stream -----------------------------------------------------------------------


@pytest.mark.trio
async def test_events_stream_filtered_json_lines_until_until():
    kept = [{"seq": 1, "type": "service", "action": "create", "id": "s1", "attributes": {"name": "web"},
             "time_nano": 1_000_000_000},
            {"seq": 2, "type": "node", "action": "update", "id": "n1", "attributes": {"name": "m1"},
             "time_nano": 2_000_000_000},
            {"seq": 3, "type": "service", "action": "remove", "id": "s1", "attributes": {"name": "web"},
             "time_nano": 9_000_000_000}]
    api = FakeLocalAPI({"events": {"events": kept, "next": 3, "lost": False}})
    async with client(api) as c:
        r = await c.get('/v1.50/events?since=0&until=5&filters={"type":{"service":true}}')
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert [json.loads(x) for x in r.text.splitlines()] == [events.message(kept[0])]
        bad = await c.get('/events?filters={"colour":["red"]}')
        assert bad.status_code == 400 and bad.json() == {"message": "invalid filter 'colour'"}
    assert api.calls == [("events", {"after": None, "since": 0, "wait": 0})]

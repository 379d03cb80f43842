"""The manager against the in-memory store: one heartbeat deadline per node
(exact virtual times with trio's MockClock), and the one compare-and-set
retry helper."""
import contextlib
import datetime
import random
import time

import pytest
import trio

from raft.memory import MemoryStore
from raft.store import Op
from raft.watch import LeadershipChanged
from swarm.api import model
from swarm.api.errors import ApiError
from swarm.manager import membership
from swarm.manager.membership import GRACE_PERIODS, Deadlines, Manager

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
PERIOD = 1.0
GRACE = PERIOD * GRACE_PERIODS
pytestmark = pytest.mark.trio


class Store(MemoryStore):
    """The in-memory store with the little of RaftNode a heartbeat answer reads."""

    def members(self) -> list[str]:
        return ["m1@127.0.0.1:4000"]

    @property
    def leader_id(self) -> str | None:
        return "m1" if self._leader else None

    def lapse(self, acting: bool) -> None:
        """The lease lapses (or comes back) within the same term: no new leadership."""
        self._leader = acting
        self.hub.publish_leadership(LeadershipChanged(acting, self._term), self.state.index)


async def cluster(nodes=("m1", "w1", "w2")):
    store = Store()
    ops = [Op.create(model.CLUSTER, model.CLUSTER_ID, model.encode({"id": "c1", "heartbeat": PERIOD}))]
    for i, nid in enumerate(nodes):
        node = model.new_node(nid, f"h-{nid}", "manager" if nid.startswith("m") else "worker",
                              f"127.0.0.{i + 2}:2377", "", 1, NOW)
        ops.append(Op.create(model.NODE, nid, model.encode(node)))
    for i in range(0, len(ops), 100):   # a Raft entry's size limit
        await store.commit(ops[i:i + 100])
    manager = Manager(store, "m1", None, None)
    manager.rng = random.Random(7)
    return store, manager


def status(manager, node_id):
    return manager.nodes()[node_id]["status"]


async def downed(store, node_id):
    """Wait until `node_id` is marked down; returns the (virtual) time it was."""
    with store.watch([model.NODE]) as watch:
        while model.decode(store.get(model.NODE, node_id).data)["status"] != "down":
            await watch.next()
    return trio.current_time()


async def note_downs(store, downs):
    """Append the id of every node written with status down to `downs`."""
    with store.watch([model.NODE]) as watch:
        async for event in watch:
            if model.decode(store.get(model.NODE, event.id).data)["status"] == "down":
                downs.append(event.id)


@contextlib.asynccontextmanager
async def fast_beats():
    """A cluster with a 0.2 s heartbeat (grace 0.6 s), its dispatcher running, and the list of
    nodes written down as it happens (for the real-time tests of a busy loop)."""
    store, manager = await cluster()
    await manager.modify_cluster(lambda c: dict(c, heartbeat=0.2))
    downs = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(note_downs, store, downs)
        nursery.start_soon(manager.run_dispatcher)
        yield store, manager, downs, nursery


async def beat_every(manager, node_id, period, until):
    """Play a node's agent: a beat every `period` (a beat refused by a non-leader is lost)."""
    while trio.current_time() < until:
        try:
            await manager.heartbeat(node_id, {})
        except ApiError as exc:
            assert exc.code == "not_leader"
        await trio.sleep(period)


# -- heartbeat deadlines ----------------------------------------------------------------------------

async def test_a_silent_node_is_marked_down_after_exactly_the_grace_period(autojump_clock):
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        nursery.start_soon(beat_every, manager, "m1", PERIOD, start + 10)
        nursery.start_soon(beat_every, manager, "w1", PERIOD, start + 10)
        assert await downed(store, "w2") == start + GRACE
        assert status(manager, "w1") == "ready" and status(manager, "m1") == "ready"
        assert manager.nodes()["w2"]["status_message"] == "heartbeat failure"
        nursery.cancel_scope.cancel()


async def test_a_node_that_stops_beating_is_down_one_grace_period_after_its_last_beat(autojump_clock):
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        nursery.start_soon(beat_every, manager, "w1", 0.5, start + 7.2)  # last beat at start + 7.0
        assert await downed(store, "w1") == start + 7.0 + GRACE
        nursery.cancel_scope.cancel()


async def test_beats_write_nothing_when_nothing_changed(autojump_clock):
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        for nid in ("m1", "w1", "w2"):
            nursery.start_soon(beat_every, manager, nid, PERIOD, start + 30)
        await trio.sleep(0.5)
        index = store.index
        await trio.sleep(29)
        assert store.index == index
        assert all(status(manager, n) == "ready" for n in ("m1", "w1", "w2"))
        assert len(manager._deadlines) == 3
        nursery.cancel_scope.cancel()


async def test_the_dispatcher_never_scans_the_nodes_while_it_waits(autojump_clock):
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        await trio.sleep(0.1)
        reads = []
        get, listing = store.get, store.list
        store.get = lambda kind, id: (reads.append((kind, id)), get(kind, id))[1]
        store.list = lambda kind: (reads.append((kind, "*")), listing(kind))[1]
        await trio.sleep(GRACE - 0.2)
        assert reads == []  # nothing read at all until a deadline passes
        assert await downed(store, "w1") == start + GRACE
        assert (model.NODE, "*") not in reads  # a passed deadline reads its own node only
        nursery.cancel_scope.cancel()


async def test_a_heartbeat_reads_only_its_own_node_until_a_node_record_changes(autojump_clock):
    """N nodes beating must not cost N x N node decodes a period."""
    store, manager = await cluster()
    first = await manager.heartbeat("w1", {})
    reads = []
    listing = store.list
    store.list = lambda kind: (reads.append(kind), listing(kind))[1]
    for nid in ("m1", "w1", "w2") * 5:
        assert (await manager.heartbeat(nid, {}))["managers"] == first["managers"]
    assert model.NODE not in reads                       # the manager addresses came from the cache
    await manager.modify_node("w2", lambda n: dict(n, role="manager", addr="127.0.0.9:2377"))
    answer = await manager.heartbeat("w1", {})
    assert reads.count(model.NODE) == 1 and "127.0.0.9:2377" in answer["managers"]


async def test_a_node_marked_down_is_ready_again_when_it_beats_and_down_again_when_it_stops(autojump_clock):
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        assert await downed(store, "w1") == start + GRACE
        await trio.sleep(5)
        await manager.heartbeat("w1", {})
        again = trio.current_time()
        assert status(manager, "w1") == "ready"
        assert await downed(store, "w1") == again + GRACE
        nursery.cancel_scope.cancel()


async def test_a_new_leader_gives_every_node_a_full_grace_period(autojump_clock):
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        nursery.start_soon(beat_every, manager, "w1", PERIOD, start + 2.5)  # last beat at start + 2
        await trio.sleep(2.5)
        store.set_leader(False)       # another manager leads: beats go there, not here
        await trio.sleep(10)          # w1's deadline (start + 5) passed while this one followed
        assert status(manager, "w1") == "ready" and status(manager, "w2") == "ready"
        store.set_leader(True)        # a new term
        elected = trio.current_time()
        assert await downed(store, "w1") == elected + GRACE
        assert status(manager, "w2") == "down"
        nursery.cancel_scope.cancel()


async def test_a_lease_lapse_in_the_same_term_keeps_the_deadlines(autojump_clock):
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        nursery.start_soon(beat_every, manager, "w1", 0.5, start + 100)
        await trio.sleep(2.25)
        store.lapse(False)                     # w1's beats at start + 2.5 and 3.0 are refused
        await trio.sleep(1.25)                 # w2's deadline (start + 3) passes during the lapse
        assert status(manager, "w2") == "ready"  # only an acting leader marks nodes down
        store.lapse(True)
        assert await downed(store, "w2") == start + 3.5  # at once when the lease is back
        await trio.sleep(10)
        assert status(manager, "w1") == "ready"
        nursery.cancel_scope.cancel()


async def test_a_lease_that_lapses_and_comes_back_unannounced_still_marks_the_silent_node_down(autojump_clock):
    # Under load the tick thread may never see the lease lapse: is_leader() is false for a
    # while (the lease ran out on the clock) and true again, with no event either way.
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        nursery.start_soon(beat_every, manager, "w1", 0.5, start + 100)
        await trio.sleep(2.9)
        store._leader = False                  # w2's deadline (start + 3) passes in the lapse
        await trio.sleep(1.0)
        assert status(manager, "w2") == "ready"
        store._leader = True
        with trio.fail_after(30):
            assert await downed(store, "w2") <= start + 3.9 + membership.LEASE_RECHECK
        await trio.sleep(10)
        assert status(manager, "w1") == "ready"
        nursery.cancel_scope.cancel()


async def test_a_change_of_leadership_lost_in_an_overflowing_watch_is_read_again(autojump_clock, monkeypatch):
    monkeypatch.setattr(membership, "WATCH_BUFFER", 16)
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.run_dispatcher)
        await trio.sleep(2.0)                 # nobody beats: the deadlines are at 3 s
        store.set_leader(False)               # another manager leads for a while, then this one again:
        store.set_leader(True)                # a new term, whose deadlines start afresh...
        node = manager.nodes()["m1"]
        for i in range(20):                   # ...but its events are lost in a burst that overflows the watch
            await store.commit([Op.update(model.NODE, "m1", model.encode(dict(node, labels={"n": str(i)})))])
        elected = trio.current_time()
        with trio.fail_after(30):
            assert await downed(store, "w2") == elected + GRACE
        nursery.cancel_scope.cancel()


async def test_a_stall_before_a_node_s_last_beat_delays_nothing_and_one_after_it_delays_by_its_length(autojump_clock):
    # The lag probe's account is what the loop's stalls add up to; here they are written into
    # it directly (the virtual clock cannot see a blocked loop).
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.run_dispatcher)
        await trio.sleep(0.1)
        for node in ("m1", "w1"):
            nursery.start_soon(beat_every, manager, node, PERIOD, trio.current_time() + 100)
        manager._lag_total += 5.0            # the loop ran 5 s late (a large plan)...
        await trio.sleep(0.5)
        await manager.heartbeat("w2", {})   # ...before w2's last beat: w2 gets its grace period
        beat = trio.current_time()
        assert await downed(store, "w2") == pytest.approx(beat + GRACE)
        await manager.heartbeat("w2", {})   # back, and silent again
        beat = trio.current_time()
        await trio.sleep(1.0)
        manager._lag_total += 2.0            # 2 s of stalls after its beat are given back to it
        assert await downed(store, "w2") == pytest.approx(beat + GRACE + 2.0)
        assert status(manager, "w1") == "ready" and status(manager, "m1") == "ready"
        nursery.cancel_scope.cancel()


async def test_a_deadline_seen_late_waits_a_period_for_the_beats_that_waited_meanwhile():
    # Real time: the loop is blocked (a large plan, say) past a node's deadline while its
    # beat waits to be read; the beat is handled a moment after the loop is free again.
    async with fast_beats() as (store, manager, downs, nursery):
        for node in ("m1", "w1", "w2"):
            await manager.heartbeat(node, {})
        time.sleep(1.5)                       # everyone's deadline passes while nothing runs
        await trio.sleep(0.05)                # the waiting beats are read...
        for node in ("m1", "w1"):
            nursery.start_soon(beat_every, manager, node, 0.1, trio.current_time() + 30)
        with trio.fail_after(20):
            await downed(store, "w2")         # ...and the silent node is still found out
        await trio.sleep(0.1)                 # note_downs has seen that write too
        assert downs == ["w2"]                # never the others, not even for a moment
        nursery.cancel_scope.cancel()


async def test_while_the_loop_cannot_keep_up_no_node_is_marked_down_and_after_it_the_silent_one_is():
    # Real time: the loop is blocked again and again (a thousand nodes' calls, say), so that w1's
    # beats, read between the stalls, come further apart than its grace period.
    async with fast_beats() as (store, manager, downs, nursery):
        for _ in range(4):
            for node in ("m1", "w1"):
                await manager.heartbeat(node, {})
            await trio.sleep(0.3)
            time.sleep(0.8)                   # 1.1 s between beats: past the grace period
        for node in ("m1", "w1"):
            await manager.heartbeat(node, {})
        assert downs == []
        nursery.start_soon(beat_every, manager, "w1", 0.1, trio.current_time() + 30)
        nursery.start_soon(beat_every, manager, "m1", 0.1, trio.current_time() + 30)
        with trio.fail_after(20):
            await downed(store, "w2")         # the loop keeps up again: the silent node is found out
        await trio.sleep(0.1)
        assert downs == ["w2"]
        nursery.cancel_scope.cancel()


async def test_a_dispatcher_of_a_follower_marks_nobody_down(autojump_clock):
    store, manager = await cluster()
    store.set_leader(False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.run_dispatcher)
        await trio.sleep(60)
        assert all(n["status"] == "ready" for n in manager.nodes().values())
        assert len(manager._deadlines) == 0
        with pytest.raises(ApiError, match="not_leader"):
            await manager.heartbeat("w1", {})
        nursery.cancel_scope.cancel()


async def test_a_removed_node_s_deadline_passes_without_a_write(autojump_clock):
    store, manager = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.run_dispatcher)
        await trio.sleep(0.1)
        await store.commit([Op.delete(model.NODE, "w2")])
        index = store.index
        await trio.sleep(GRACE + 1)
        assert status(manager, "w1") == "down" and status(manager, "m1") == "down"
        assert store.index == index + 2  # w1 and m1 down in one write each, nothing for w2
        nursery.cancel_scope.cancel()


async def test_deadlines_move_on_reset_and_fire_once(autojump_clock):
    fired = []

    async def passed(node_id, late):
        assert late == 0.0
        fired.append((node_id, trio.current_time()))

    async with trio.open_nursery() as nursery:
        deadlines = Deadlines(nursery, passed)
        start = trio.current_time()
        deadlines.reset("a", 2.0)
        deadlines.reset("b", 5.0)
        await trio.sleep(1.0)
        deadlines.reset("a", 2.0)           # now due at start + 3
        assert "a" in deadlines and len(deadlines) == 2
        await trio.sleep(10)
        assert fired == [("a", start + 3.0), ("b", start + 5.0)]
        assert len(deadlines) == 0
        deadlines.reset("c", 1.0)
        deadlines.clear()                  # cleared: never fires
        await trio.sleep(5)
        assert fired == [("a", start + 3.0), ("b", start + 5.0)]


# -- compare-and-set ----------------------------------------------------------------------------------

class Meddling(Store):
    """A store where someone else writes the record first, `times` times."""

    def __init__(self, times):
        super().__init__()
        self.times = times

    async def commit(self, ops, timeout=5.0):
        if self.times and ops and ops[0].action == "update":
            self.times -= 1
            rec = self.get(ops[0].kind, ops[0].id)
            other = dict(model.decode(rec.data), labels={"other": str(self.times)})
            await super().commit([Op.update(ops[0].kind, ops[0].id, model.encode(other))])
        return await super().commit(ops, timeout)


async def meddled(times):
    store, _ = await cluster()
    meddling = Meddling(times)
    meddling.state = store.state
    manager = Manager(meddling, "m1", None, None)
    manager.rng = random.Random(7)
    return meddling, manager


async def test_compare_and_set_reads_again_and_reapplies_on_conflict(autojump_clock):
    store, manager = await meddled(3)
    seen = []

    def change(node):
        seen.append(dict(node["labels"]))
        return dict(node, availability="drain")

    node, version = await manager.compare_and_set(model.NODE, "w1", change)
    assert seen == [{}, {"other": "2"}, {"other": "1"}, {"other": "0"}]
    assert node["availability"] == "drain" and node["labels"] == {"other": "0"}
    assert store.get(model.NODE, "w1").version == version


async def test_compare_and_set_gives_up_after_the_retries(autojump_clock):
    store, manager = await meddled(1000)
    with pytest.raises(ApiError) as err:
        await manager.modify_node("w1", lambda n: dict(n, availability="pause"))
    assert err.value.code == "unavailable" and "kept changing" in err.value.message


async def test_compare_and_set_with_a_version_is_out_of_sequence_once_the_record_moved(autojump_clock):
    store, manager = await cluster()
    version = manager.node_version("w1")
    node, new = await manager.modify_node_at("w1", lambda n: dict(n, labels={"a": "1"}), version)
    assert new > version and node["labels"] == {"a": "1"}
    with pytest.raises(ApiError) as err:
        await manager.modify_node_at("w1", lambda n: dict(n, labels={"a": "2"}), version)
    assert err.value.code == "conflict" and "out of sequence" in err.value.message
    # Read at the right version, but someone commits first: not retried either.
    store2, manager2 = await meddled(1)
    with pytest.raises(ApiError) as err:
        await manager2.modify_node_at("w1", lambda n: dict(n, labels={"a": "3"}), manager2.node_version("w1"))
    assert err.value.code == "conflict" and "changed after version" in err.value.message
    assert model.decode(store2.get(model.NODE, "w1").data)["labels"] == {"other": "0"}


async def test_compare_and_set_writes_nothing_when_the_change_is_none_and_knows_missing_records(autojump_clock):
    store, manager = await cluster()
    index = store.index
    node, version = await manager.compare_and_set(model.NODE, "w1", lambda n: None)
    assert store.index == index and node["id"] == "w1" and version == manager.node_version("w1")
    with pytest.raises(ApiError) as err:
        await manager.modify_node("gone", lambda n: n)
    assert (err.value.code, err.value.message) == ("not_found", "node gone not found")
    cluster_rec = await manager.modify_cluster(lambda c: dict(c, heartbeat=2.0))
    assert cluster_rec["heartbeat"] == 2.0 and manager.cluster()["heartbeat"] == 2.0


async def test_while_the_dispatcher_runs_a_beat_costs_its_own_node_whatever_changes(autojump_clock):
    """The managers' addresses are kept from node events: no beat lists the nodes, not even
    after node records changed (a thousand nodes joining must not cost N x N decodes)."""
    store, manager = await cluster(("m1", "m2", "w1", "w2"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.run_dispatcher)
        await trio.sleep(0.1)
        listed = []
        listing = store.list
        store.list = lambda kind: (listed.append(kind), listing(kind))[1]
        first = await manager.heartbeat("w1", {})
        assert first["managers"] == ["127.0.0.2:2377", "127.0.0.3:2377"]
        await manager.set_status("w2", "down", "test")           # a worker's record changed
        await manager.modify_node("w1", lambda n: dict(n, role="manager", addr="127.0.0.9:2377"))
        await trio.sleep(0.1)                                     # the node events are applied
        answer = await manager.heartbeat("w2", {})
        assert answer["managers"] == ["127.0.0.2:2377", "127.0.0.3:2377", "127.0.0.9:2377"]
        await manager.modify_node("m2", lambda n: dict(n, role="worker"))
        await trio.sleep(0.1)
        assert (await manager.heartbeat("w2", {}))["managers"] == ["127.0.0.2:2377", "127.0.0.9:2377"]
        index = store.index
        for _ in range(3):
            await manager.heartbeat("w2", {})
        assert store.index == index                  # a beat that changes nothing is no Raft write
        store.lapse(False)
        manager.leader_id = lambda: "m1"             # a follower that knows the leader
        with pytest.raises(ApiError) as refused:     # a non-leader names the leader, from the roster
            await manager.heartbeat("w2", {})
        assert refused.value.code == "not_leader" and refused.value.message == "127.0.0.2:2377"
        assert model.NODE not in listed
        nursery.cancel_scope.cancel()


async def test_a_thousand_nodes_beat_within_their_grace_and_a_silent_one_is_down_in_time(autojump_clock):
    nodes = ("m1",) + tuple(f"w{i}" for i in range(1000))
    store, manager = await cluster(nodes)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(manager.run_dispatcher)
        for nid in nodes[:-1]:
            nursery.start_soon(beat_every, manager, nid, PERIOD, start + 10)
        index = store.index
        assert await downed(store, nodes[-1]) == start + GRACE
        assert store.index == index + 1               # the one write: marking it down
        assert all(status(manager, n) == "ready" for n in nodes[:-1])
        nursery.cancel_scope.cancel()

"""The dispatcher's index of assigned tasks (Placed), kept from store events by
Dispatcher.run: every answer it gives equals the answer a fresh pass over the
store gives (the invariant that lets a poll cost only the caller's tasks)."""
import pytest
import trio
import trio.testing

from swarm.api import model, spec
from swarm.manager.controlapi.networks import NetworkAPI
from swarm.manager.dispatcher import Dispatcher, Placed, group_tasks
from tests.unit.test_reconciler import NODES, cluster, create, report, settle




def answer_view(answer: dict) -> tuple:
    return sorted(answer["task_ids"]), sorted(t["id"] for t in answer["changed"])


async def same_answers(kept: Dispatcher, fresh: Dispatcher, since: int = 0) -> None:
    await trio.testing.wait_all_tasks_blocked()   # run has applied every event
    for node in NODES:
        a = await kept.assigned(node, {"since": since, "wait": 0})
        b = await fresh.assigned(node, {"since": since, "wait": 0})
        assert answer_view(a) == answer_view(b), node
        assert a["network"] == b["network"], node


@pytest.mark.trio
async def test_the_kept_index_answers_as_a_fresh_pass_through_a_service_life():
    store, manager, reconciler, kept, api = await cluster()
    fresh = Dispatcher(manager)   # never run: groups a fresh listing per store index
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await trio.testing.wait_all_tasks_blocked()
        await create(api, "web", replicas=7)
        front = await NetworkAPI(manager).create({"name": "front"})
        await create(api, "db", replicas=2, networks=[front["id"]], ports=[{"target": 80, "published": 8080}])
        await settle(reconciler)
        await same_answers(kept, fresh)
        answers = [await kept.assigned(n, {"since": 0, "wait": 0}) for n in NODES]
        assert sum(len(a["task_ids"]) for a in answers) == 9
        index = store.index
        await report(kept, store, "running", "web")
        await same_answers(kept, fresh)
        await same_answers(kept, fresh, since=index)   # only the tasks changed since
        await api.scale({"scales": {"web": 2}})
        await settle(reconciler)
        await same_answers(kept, fresh)
        await api.rm({"refs": ["web"]})
        await settle(reconciler)
        await same_answers(kept, fresh)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_poll_waits_for_the_index_the_dispatcher_has_applied():
    store, manager, reconciler, kept, api = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await trio.testing.wait_all_tasks_blocked()
        first = await kept.assigned(NODES[0], {"since": 0, "wait": 0})
        answers = []

        async def poll() -> None:
            answers.append(await kept.assigned(NODES[0], {"since": first["index"], "wait": 5}))

        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []          # nothing changed: the poll waits
        await create(api, "web", replicas=3)
        await settle(reconciler)
        with trio.fail_after(5):
            while not answers:
                await trio.sleep(0.01)
        assert answers[0]["index"] > first["index"]
        nursery.cancel_scope.cancel()


def task(task_id: str, node: str, state: str, networks: bool = False) -> spec.Task:
    attachments = (spec.Attachment("n", "10.0.0.2/24"),) if networks else ()
    return spec.Task(task_id, "s", "web", 1, node, "running", spec.ContainerSpec(image="demo:1"), 1,
                     spec.TaskStatus(state), networks=attachments)


class Rec:
    def __init__(self, t: spec.Task, version: int) -> None:
        self.data, self.version = model.encode(spec.to_dict(t)), version


def test_a_task_moves_between_nodes_and_leaves_the_index_when_removed():
    placed = Placed(0)
    placed.apply("t1", Rec(task("t1", "", "pending"), 1 << 16))
    assert placed.by_node == {}                         # not placed yet: no node's
    placed.apply("t1", Rec(task("t1", "n1", "assigned"), 2 << 16))
    assert list(placed.by_node) == ["n1"]
    placed.apply("t1", Rec(task("t1", "n2", "assigned", networks=True), 3 << 16))
    assert list(placed.by_node) == ["n2"] and list(placed.networked) == ["t1"]
    placed.apply("t1", None)
    assert placed.by_node == {} and placed.networked == {}
    placed.apply("bad", type("R", (), {"data": b"\xc1", "version": 4 << 16})())   # skipped, not raised
    assert placed.by_node == {}


def test_grouping_a_listing_equals_applying_its_records_one_by_one():
    listing = {f"t{i}": Rec(task(f"t{i}", f"n{i % 3}", ("pending", "assigned", "running")[i % 3], i % 2 == 0),
                            (i + 1) << 16) for i in range(30)}
    grouped = group_tasks(99, listing)
    applied = Placed(99)
    for task_id, rec in listing.items():
        applied.apply(task_id, rec)
    assert grouped.by_node.keys() == applied.by_node.keys()
    for node in grouped.by_node:
        assert grouped.by_node[node].keys() == applied.by_node[node].keys()
    assert grouped.networked.keys() == applied.networked.keys()
    assert "n0" not in grouped.by_node                # pending tasks are no node's yet


@pytest.mark.trio
async def test_a_status_report_cut_by_a_leader_change_is_unavailable_not_an_internal_error():
    from swarm.api.errors import ApiError
    from raft.node import RaftUnavailable
    from tests.unit.test_reconciler import tasks_of

    store, manager, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=1)
    await settle(reconciler)
    (t,) = tasks_of(store, "web")

    async def lost_leadership(ops, timeout=5.0):
        raise RaftUnavailable("the leader changed before the command committed; the outcome is unknown")

    store.commit = lost_leadership
    with pytest.raises(ApiError) as err:
        await dispatcher.status(t.node_id, {"updates": [
            {"id": t.id, "status": spec.to_dict(spec.TaskStatus("running", "running", "", 1.0))}]})
    assert err.value.code == "unavailable" and "leader changed" in err.value.message


async def _replaced_behind_the_watch(store, reconciler, api) -> None:
    """Create tasks, then put the store back to before them as a Raft snapshot install
    does: a wholesale load, with no events."""
    before = store.state.dump()
    await create(api, "web", replicas=3)
    await settle(reconciler)
    after = store.state.dump()
    store.state.load(before)
    store.state.load(dict(after, index=after["index"] + 1))   # the "snapshot": newer, no events


@pytest.mark.trio
async def test_a_store_replaced_without_events_is_read_again_at_the_next_reread(autojump_clock):
    from swarm.manager import dispatcher as dispatcher_module

    store, manager, reconciler, kept, api = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await trio.testing.wait_all_tasks_blocked()
        watch_paused = store.hub._watches.copy()
        store.hub._watches.clear()            # the snapshot's changes reach no watcher
        await _replaced_behind_the_watch(store, reconciler, api)
        store.hub._watches.update(watch_paused)
        fresh = Dispatcher(manager)
        assert await total(kept) == 0 and await total(fresh) == 3     # the kept index missed them
        await trio.sleep(dispatcher_module.REREAD_PERIOD + 1)
        assert await total(kept) == 3
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_change_of_leadership_reads_the_index_again():
    store, manager, reconciler, kept, api = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await trio.testing.wait_all_tasks_blocked()
        paused = store.hub._watches.copy()
        store.hub._watches.clear()
        await _replaced_behind_the_watch(store, reconciler, api)
        store.hub._watches.update(paused)
        assert await total(kept) == 0
        store.set_leader(False)
        await trio.testing.wait_all_tasks_blocked()
        assert await total(kept) == 3
        nursery.cancel_scope.cancel()


async def total(dispatcher: Dispatcher) -> int:
    answers = [await dispatcher.assigned(n, {"since": 0, "wait": 0}) for n in NODES]
    return sum(len(a["task_ids"]) for a in answers)

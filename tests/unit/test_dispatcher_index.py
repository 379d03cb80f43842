"""The dispatcher's index of assigned tasks (Placed), kept from store events by
Dispatcher.run, and the incremental answers it gives: an agent that applies the
answers it gets (the first full, the next ones only the changes) holds what a
fresh pass over the store gives (the invariant that lets a poll cost only the
caller's changes)."""
import pytest
import trio
import trio.testing

from raft.store import Op
from swarm.api import model, spec
from swarm.manager import dispatcher as dispatcher_module
from swarm.manager.controlapi.networks import NetworkAPI
from swarm.manager.dispatcher import Dispatcher, Placed, group_tasks
from tests.unit.test_reconciler import NODES, cluster, create, report, settle
from tests.unit.test_dispatcher import polled


class AgentView:
    """What an agent holds after applying a dispatcher's answers, as swarm/agent does."""

    def __init__(self, node: str) -> None:
        self.node, self.since, self.tasks, self.answers = node, 0, {}, []

    async def poll(self, dispatcher: Dispatcher) -> dict:
        answer = await polled(dispatcher, self.node, {"since": self.since, "wait": 0})
        self.answers.append(answer)
        self.since = answer["index"]
        for data in answer["changed"]:
            self.tasks[data["id"]] = data
        if "task_ids" in answer:
            self.tasks = {k: v for k, v in self.tasks.items() if k in set(answer["task_ids"])}
        else:
            for task_id in answer["removed"]:
                self.tasks.pop(task_id, None)
        return answer


def held(agent: AgentView) -> dict:
    """The tasks it holds, as what it acts on: the wanted state, and whether the managers ended them."""
    return {k: (t["desired_state"], spec.is_terminal(t["status"]["state"])) for k, t in agent.tasks.items()}


async def same_state(kept: Dispatcher, fresh: Dispatcher, agents: dict[str, AgentView]) -> None:
    await trio.testing.wait_all_tasks_blocked()   # run has applied every event
    for node in NODES:
        answer = await agents[node].poll(kept)
        truth = AgentView(node)
        full = await truth.poll(fresh)
        assert full["full"] and held(agents[node]) == held(truth), node
        assert answer["network"] == full["network"], node


@pytest.mark.trio
async def test_an_agent_applying_the_kept_answers_holds_what_a_fresh_pass_gives_through_a_service_life():
    store, manager, reconciler, kept, api = await cluster()
    fresh = Dispatcher(manager)   # never run: groups a fresh listing per store index
    agents = {n: AgentView(n) for n in NODES}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await trio.testing.wait_all_tasks_blocked()
        await create(api, "web", replicas=7)
        front = await NetworkAPI(manager).create({"name": "front"})
        await create(api, "db", replicas=2, networks=[front["id"]], ports=[{"target": 80, "published": 8080}])
        await settle(reconciler)
        await same_state(kept, fresh, agents)
        assert sum(len(a.tasks) for a in agents.values()) == 9
        assert all(a.answers[0]["full"] for a in agents.values())      # the first answer: the full set
        await report(kept, store, "running", "web")
        await same_state(kept, fresh, agents)
        await api.scale({"scales": {"web": 2}})
        await settle(reconciler)
        await same_state(kept, fresh, agents)
        await api.rm({"refs": ["web"]})
        await settle(reconciler)
        await same_state(kept, fresh, agents)
        # Every answer after the first carried only the changes.
        assert not any(a["full"] or "task_ids" in a for ag in agents.values() for a in ag.answers[1:])
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_answers_carry_only_the_changes_and_not_the_agents_own_status_reports():
    store, manager, reconciler, kept, api = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await create(api, "web", replicas=30)
        await settle(reconciler)
        await trio.testing.wait_all_tasks_blocked()
        agent = AgentView("n1")
        first = await agent.poll(kept)
        assert first["full"] and len(first["task_ids"]) == len(first["changed"]) == 10
        await report(kept, store, "running", "web")     # the agents' own reports: nothing to send back
        await trio.testing.wait_all_tasks_blocked()
        echo = await agent.poll(kept)
        assert echo["changed"] == [] and echo["removed"] == [] and "task_ids" not in echo
        await api.scale({"scales": {"web": 27}})
        await settle(reconciler)
        await trio.testing.wait_all_tasks_blocked()
        down = await agent.poll(kept)          # the slots that go: their desired state only
        stopping = {t["id"] for t in down["changed"]}
        assert 0 < len(stopping) <= 3 and all(t["desired_state"] != "running" for t in down["changed"])
        assert down["removed"] == []
        await kept.status("n1", {"updates": [{"id": tid, "status": spec.to_dict(
            spec.TaskStatus("shutdown", "shutdown", "", 1.0, None, tid))} for tid in stopping]})
        await settle(reconciler, rounds=20)
        await trio.testing.wait_all_tasks_blocked()
        ended = await agent.poll(kept)   # a task that ended is sent once (the managers end tasks too)
        assert {t["id"] for t in ended["changed"]} == stopping and ended["removed"] == []
        await api.rm({"refs": ["web"]})
        await settle(reconciler)
        await report(kept, store, "shutdown", "web")
        await settle(reconciler, rounds=20)
        await trio.testing.wait_all_tasks_blocked()
        gone = await agent.poll(kept)          # removed from the store: only their ids
        assert len(gone["removed"]) == 10 and agent.tasks == {} and gone["changed"] == []
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_node_polling_from_before_what_the_index_remembers_gets_the_full_set():
    store, manager, reconciler, kept, api = await cluster()
    async with trio.open_nursery() as nursery:
        await create(api, "web", replicas=6)
        await settle(reconciler)
        old = store.index
        await create(api, "db", replicas=3)
        await settle(reconciler)
        nursery.start_soon(kept.run)    # read whole now: it knows no removal from before
        await trio.testing.wait_all_tasks_blocked()
        stale = await polled(kept, "n1", {"since": old, "wait": 0})
        assert stale["full"] and len(stale["task_ids"]) == 3
        agent = AgentView("n1")
        await agent.poll(kept)
        again = await agent.poll(kept)
        assert not again["full"]
        # The node has seen up to `again`: the removals before it are forgotten, and a
        # node coming back from further back (a lost answer, another manager) gets the full set.
        await api.rm({"refs": ["web"]})
        await settle(reconciler)
        await report(kept, store, "shutdown", "web")
        await settle(reconciler, rounds=20)
        await trio.testing.wait_all_tasks_blocked()
        now = await agent.poll(kept)
        assert len(now["removed"]) == 2 and len(agent.tasks) == 1
        await agent.poll(kept)
        assert (await polled(kept, "n1", {"since": again["index"], "wait": 0}))["full"]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_burst_of_events_lets_the_polls_run_and_never_shows_half_a_transaction(monkeypatch):
    store, manager, reconciler, kept, api = await cluster()
    monkeypatch.setattr(dispatcher_module, "SLICE", 0.0)     # a checkpoint after every event
    big = [task(f"b{i}", "n1", "assigned") for i in range(50)]
    agent, answers = AgentView("n1"), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await trio.testing.wait_all_tasks_blocked()

        async def poller() -> None:
            while True:
                full = await polled(kept, "n1", {"since": 0, "wait": 0})
                answers.append((full["index"], len(full["task_ids"])))
                await agent.poll(kept)
                await trio.sleep(0)

        nursery.start_soon(poller)
        await store.commit([Op.create(spec.TASK, t.id, model.encode(spec.to_dict(t))) for t in big])
        at = store.index
        with trio.fail_after(5):
            while len(agent.tasks) < 50 or agent.since < at:
                await trio.sleep(0)
        # The polls ran while the 50 events were applied, answering the index before theirs
        # (an agent then gets the rest later); an answer at their index holds all 50.
        assert any(0 < n < 50 for _, n in answers)
        assert all(n == 50 for index, n in answers if index >= at)
        assert all(index in (at - 1, at) for index, n in answers if 0 < n < 50)
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
    placed.apply("t1", Rec(task("t1", "", "pending"), 1 << 16), 1)
    assert placed.by_node == {}                         # not placed yet: no node's
    placed.apply("t1", Rec(task("t1", "n1", "assigned"), 2 << 16), 2)
    assert list(placed.by_node) == ["n1"]
    placed.apply("t1", Rec(task("t1", "n2", "assigned", networks=True), 3 << 16), 3)
    assert list(placed.by_node) == ["n2"] and list(placed.networked) == ["t1"]
    assert placed.removed == {"n1": {"t1": 3}}          # n1 is told it left
    placed.apply("t1", None, 4)
    assert placed.by_node == {} and placed.networked == {}
    assert placed.removed == {"n1": {"t1": 3}, "n2": {"t1": 4}}
    placed.apply("bad", type("R", (), {"data": b"\xc1", "version": 5 << 16})(), 5)   # skipped, not raised
    assert placed.by_node == {}


def test_a_status_change_keeps_a_task_in_place_and_any_other_change_moves_it_last():
    placed = Placed(0)
    for i, tid in enumerate(("t1", "t2", "t3"), 1):
        placed.apply(tid, Rec(task(tid, "n1", "assigned"), i << 16), i)
    placed.apply("t1", Rec(task("t1", "n1", "running"), 4 << 16), 4)      # the agent's report
    assert list(placed.by_node["n1"]) == ["t1", "t2", "t3"] and placed.by_node["n1"]["t1"].sent_at == 1
    assert placed.by_node["n1"]["t1"].task.status.state == "running"      # the record is the newest
    placed.apply("t1", Rec(task("t1", "n1", "failed"), 5 << 16), 5)       # ended: the agent must know
    assert list(placed.by_node["n1"]) == ["t2", "t3", "t1"]
    delta = placed.delta("n1", 3)
    assert [t.id for t, _ in delta.changed] == ["t1"] and not delta.full


def test_grouping_a_listing_equals_applying_its_records_one_by_one():
    listing = {f"t{i}": Rec(task(f"t{i}", f"n{i % 3}", ("pending", "assigned", "running")[i % 3], i % 2 == 0),
                            (30 - i) << 16) for i in range(30)}
    grouped = group_tasks(99, listing)
    applied = Placed(99)
    for task_id, rec in sorted(listing.items(), key=lambda kv: kv[1].version):
        applied.apply(task_id, rec, rec.version >> 16)
    assert grouped.by_node.keys() == applied.by_node.keys()
    for node in grouped.by_node:
        assert list(grouped.by_node[node]) == list(applied.by_node[node])   # in the order of their changes
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
async def test_a_store_replaced_by_a_snapshot_is_read_again_and_every_node_resyncs():
    store, manager, reconciler, kept, api = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await trio.testing.wait_all_tasks_blocked()
        agents = {n: AgentView(n) for n in NODES}
        for agent in agents.values():
            await agent.poll(kept)
        watch_paused = store.hub._watches.copy()
        store.hub._watches.clear()            # the snapshot's changes reach no watcher
        await _replaced_behind_the_watch(store, reconciler, api)
        store.hub._watches.update(watch_paused)
        fresh = Dispatcher(manager)
        assert await total(kept) == 0 and await total(fresh) == 3     # the kept index missed them
        store.hub.publish_resync(store.index)     # what raft does when it installs a snapshot
        await trio.testing.wait_all_tasks_blocked()
        assert await total(kept) == 3
        answers = [await agent.poll(kept) for agent in agents.values()]
        assert all(a["full"] for a in answers) and sum(len(a.tasks) for a in agents.values()) == 3
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_change_of_leadership_costs_no_pass_over_the_tasks():
    store, manager, reconciler, kept, api = await cluster()
    await create(api, "web", replicas=3)
    await settle(reconciler)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kept.run)
        await trio.testing.wait_all_tasks_blocked()
        listed = []
        listing = store.list
        store.list = lambda kind: (listed.append(kind), listing(kind))[1]
        store.set_leader(False)
        store.set_leader(True)
        await trio.testing.wait_all_tasks_blocked()
        assert spec.TASK not in listed and await total(kept) == 3
        nursery.cancel_scope.cancel()


async def total(dispatcher: Dispatcher) -> int:
    answers = [await polled(dispatcher, n, {"since": 0, "wait": 0}) for n in NODES]
    return sum(len(a["task_ids"]) for a in answers)


def test_the_index_shares_its_typed_tasks_with_the_listings_and_forgets_deleted_ones():
    """One typed copy of a task per manager (3 KB each), not one for the index and one for the rounds."""
    from swarm.api import records

    listing = {f"t{i}": Rec(task(f"t{i}", "n1", "assigned"), (i + 1) << 16) for i in range(5)}
    placed = Placed(0)
    for task_id, rec in listing.items():
        placed.apply(task_id, rec, rec.version >> 16)
    typed = records.decode_all(listing, spec.task_from_dict)
    assert all(typed[k][0] is placed.by_node["n1"][k].task for k in listing)
    cache = records._decoded[spec.task_from_dict]
    assert "t0" in cache
    placed.apply("t0", None, 9)
    assert "t0" not in cache and "t0" not in placed.by_node["n1"]


"""The leader's reconcile loop (with the dispatcher and the service API) against
the in-memory store: bad input is refused at the boundary, and one bad
service, record or node never stops the round for the others (the hardening
defects 1-5 and 13). The planner's decisions alone: test_planner.py; the
dispatcher's calls: test_dispatcher.py."""
import dataclasses
import datetime
import time

import pytest
import trio

from raft.memory import MemoryStore
from raft.store import MAX_COMMAND, Op, pack_txn
from swarm.api import model, records, spec
from swarm.manager.dispatcher import Dispatcher
from swarm.manager.planner import node_infos
from raft.node import RaftUnavailable
from swarm.manager.reconciler import COMMITS_IN_FLIGHT, Reconciler, batches
from swarm.manager.membership import Manager
from swarm.manager.allocator import INGRESS_SUBNET, NETWORK, new_network
from swarm.api.errors import ApiError
from swarm.manager.controlapi.services import ServiceAPI, spec_from_params

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
NODES = ("n1", "n2", "n3")
pytestmark = pytest.mark.trio


async def cluster(images=("demo:1",)):
    store = MemoryStore()
    ops = [Op.create(model.CLUSTER, model.CLUSTER_ID, model.encode({"id": "c1", "heartbeat": 1.0}))]
    for i, nid in enumerate(NODES):
        node = dict(model.new_node(nid, f"h{i}", "worker", f"127.0.0.{i + 2}:2377", "", 1, NOW),
                    resources={"nano_cpus": 2_000_000_000, "memory_bytes": 1 << 34}, images=list(images))
        ops.append(Op.create(model.NODE, nid, model.encode(node)))
    ingress = new_network("ingress", INGRESS_SUBNET, 4096, ingress=True)
    ops.append(Op.create(NETWORK, ingress["id"], model.encode(ingress)))
    await store.commit(ops)
    manager = Manager(store, "n1", None, None)
    return store, manager, Reconciler(manager, seed=1), Dispatcher(manager), ServiceAPI(manager)


def tasks_of(store, name=None):
    out = [t for t, _ in records.decode_all(store.list(spec.TASK), spec.task_from_dict).values()]
    return [t for t in out if name is None or t.service_name == name]


async def create(api, name, **params):
    return await api.create({"name": name, "image": "demo:1", **params})


async def settle(reconciler, rounds=8):
    for _ in range(rounds):
        await reconciler.round()


async def report(dispatcher, store, state, name=None):
    """Play the agents: every assigned task of `name` reports `state`."""
    by_node = {}
    for t in tasks_of(store, name):
        if t.node_id and not spec.is_terminal(t.status.state):
            by_node.setdefault(t.node_id, []).append(
                {"id": t.id, "status": spec.to_dict(spec.TaskStatus(state, state, "", 1.0, None, t.id))})
    for nid, updates in by_node.items():
        await dispatcher.status(nid, {"updates": updates})


# -- validation at the boundary -------------------------------------------------------------------

async def test_a_bad_record_in_the_store_stops_no_one():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=2)
    await settle(reconciler)
    # A record written past validation (by an older version, say): the round must skip it.
    poisoned = dict(spec.to_dict(tasks_of(store, "web")[0]), id="bad", status={"state": "failed",
                                                                              "timestamp": "not-a-time"})
    await store.commit([Op.create(spec.TASK, "bad", model.encode(poisoned)),
                        Op.create(spec.TASK, "junk", b"\xc1not msgpack")])
    await create(api, "db", replicas=3)
    await settle(reconciler)
    assert sum(t.status.state == "assigned" for t in tasks_of(store, "db")) == 3
    assert len(await api.ps({"refs": ["web"]})) == 2   # ps of the poisoned service still answers
    assert await api.ls({})


async def test_a_bad_heartbeat_is_refused_and_the_scheduler_never_sees_it():
    store, manager, reconciler, dispatcher, api = await cluster()
    before = manager.nodes()["n2"]
    for params in ({"resources": {"nano_cpus": "lots"}}, {"resources": {"memory_bytes": -1}},
                   {"resources": "all"}, {"images": "demo:1"}, {"images": [7]}, {"images": ["x"] * 20_000}):
        with pytest.raises(ApiError) as err:
            await manager.heartbeat("n2", params)
        assert err.value.code == "bad_request"
    assert manager.nodes()["n2"] == before
    # A node record that is bad anyway (written past validation) costs that node only.
    await store.commit([Op.update(model.NODE, "n3", model.encode(dict(manager.nodes()["n3"],
                                                                       resources={"nano_cpus": "lots"})))])
    assert [n.id for n in node_infos(manager.nodes())] == ["n1", "n2"]
    await create(api, "web", replicas=4)
    await settle(reconciler)
    assert {t.node_id for t in tasks_of(store, "web")} == {"n1", "n2"}


async def test_service_names_are_checked_as_docker_does():
    for bad in ("ünï", ".", "..", "-rf", "_x", "a b", "a/b", "x" * 64, "", 5, None, "web\n"):
        with pytest.raises(ApiError, match="invalid service name"):
            spec_from_params({"name": bad, "image": "demo:1"})
    for good in ("web", "a.b-c_d", "9lives", "x" * 63):
        assert spec_from_params({"name": good, "image": "demo:1"}).name == good


async def test_service_parameters_of_the_wrong_type_are_refused_in_one_sentence():
    for params in ({"limit_cpu": "lots"}, {"replicas": "3"}, {"replicas": True}, {"env": "A=1"},
                   {"mounts": ["x"]}, {"labels": {"a": 1}}, {"ports": [{"target": "80"}]},
                   {"restart_delay": float("inf")}, {"command": [1]}, {"replicas": 10 ** 9}):
        with pytest.raises(ApiError) as err:
            spec_from_params({"name": "web", "image": "demo:1", **params})
        assert err.value.code == "bad_request" and "\n" not in err.value.message


# -- isolation --------------------------------------------------------------------------------------

async def test_a_published_port_clash_is_refused_at_create_and_update():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web", ports=[{"target": 80, "published": 8080}])
    with pytest.raises(ApiError, match="port '8080' is already in use by service 'web'"):
        await create(api, "other", ports=[{"target": 80, "published": 8080}])
    await create(api, "other", ports=[{"target": 80, "published": 8081}])
    with pytest.raises(ApiError, match="port '8080' is already in use by service 'web'"):
        await api.update({"ref": "other", "ports": [{"target": 80, "published": 8080}]})
    assert [s.spec.name for s in api.services().values() if s.spec.name == "other"]


async def test_a_service_that_cannot_be_allocated_gets_the_reason_and_the_others_converge():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web", ports=[{"target": 80, "published": 8080}])
    await settle(reconciler)
    # A clashing service that got past the API (an older version wrote it): the round
    # must keep going for everyone else, and say why on the clashing service's tasks.
    clash = spec.Service("clash0000000000000000000", spec_from_params(
        {"name": "clash", "image": "demo:1", "replicas": 2, "ports": [{"target": 80, "published": 8080}]}),
        1, 2.0e9, 2.0e9)
    await store.commit([Op.create(spec.SERVICE, clash.id, model.encode(spec.to_dict(clash)))])
    await create(api, "db", replicas=3)
    await settle(reconciler)
    assert sum(t.status.state == "assigned" for t in tasks_of(store, "db")) == 3
    assert sum(t.status.state == "assigned" for t in tasks_of(store, "web")) == 1
    clashing = tasks_of(store, "clash")
    assert len(clashing) == 2 and all(t.status.state == "pending" for t in clashing)
    assert all("8080" in t.status.err and "already published" in t.status.err for t in clashing)
    rows = await api.ps({"refs": ["clash"]})
    assert all("already published" in r["error"] for r in rows)


async def test_a_thousand_replicas_converge_scale_to_zero_and_are_removed():
    store, _, reconciler, dispatcher, api = await cluster()
    written = []
    commit = store.commit

    async def measured(ops, timeout=5.0):
        written.append(len(pack_txn(ops)))
        return await commit(ops, timeout)

    store.commit = measured
    await create(api, "big", replicas=1000)
    await create(api, "small", replicas=1)
    await settle(reconciler, 4)
    assert max(written) < MAX_COMMAND
    big = tasks_of(store, "big")
    assert len(big) == 1000 and all(t.status.state == "assigned" for t in big)
    assert {t.node_id for t in big} == set(NODES)
    assert tasks_of(store, "small")[0].status.state == "assigned"
    await report(dispatcher, store, "running", "big")
    await api.scale({"scales": {"big": 0}})
    await settle(reconciler, 3)
    assert all(t.desired_state == "shutdown" for t in tasks_of(store, "big"))
    await report(dispatcher, store, "shutdown", "big")
    await api.rm({"refs": ["big"]})
    await settle(reconciler, 3)
    assert tasks_of(store, "big") == [] and len(tasks_of(store, "small")) == 1
    assert max(written) < MAX_COMMAND


async def test_batches_split_by_bytes_and_count():
    ops = [Op.create("task", f"t{i}", b"x" * 1000) for i in range(100)]
    out = batches(ops, 10_000, 50)
    assert [op for b in out for op in b] == ops
    assert all(sum(len(o.data) for o in b) <= 10_000 and len(b) <= 50 for b in out)
    assert len(batches(ops, 10 ** 9, 30)) == 4
    huge = [Op.create("task", "big", b"x" * 50_000), Op.create("task", "t", b"x")]
    assert batches(huge, 10_000, 50) == [[huge[0]], [huge[1]]]


async def test_a_task_on_a_node_that_died_is_orphaned_shut_down_and_listed_under_its_replacement():
    store, manager, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=1, constraints=["node.hostname!=h0"])
    await settle(reconciler)
    first = tasks_of(store, "web")[0]
    await report(dispatcher, store, "running", "web")
    node = manager.nodes()[first.node_id]
    await store.commit([Op.update(model.NODE, first.node_id, model.encode(dict(node, status="down")))])
    await settle(reconciler)
    orphan = next(t for t in tasks_of(store, "web") if t.id == first.id)
    assert orphan.status.state == "orphaned" and orphan.desired_state == "shutdown"
    rows = await api.ps({"refs": ["web"]})
    assert len(rows) == 2 and rows[0]["id"] != first.id and rows[0]["desired_state"] == "running"
    assert rows[1]["id"] == first.id
    # still so when the node returns
    await store.commit([Op.update(model.NODE, first.node_id, model.encode(dict(node, status="ready")))])
    await settle(reconciler)
    rows = await api.ps({"refs": ["web"]})
    assert rows[0]["desired_state"] == "running" and rows[-1]["id"] == first.id


async def test_inspect_prints_rfc3339_times():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web")
    [view] = await api.inspect({"refs": ["web"]})
    assert view["created_at"].endswith("Z") and len(view["created_at"].split(".")[1]) == 10
    assert model.rfc3339(1714557600.5) == "2024-05-01T10:00:00.500000000Z"
    assert model.timestamp(NOW) == "2026-01-01T00:00:00.000000000Z"


async def test_ambiguous_service_names_are_an_error_not_the_first_match():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web")
    twin = dataclasses.replace(api.find("web"), id="twin00000000000000000000")
    await store.commit([Op.create(spec.SERVICE, twin.id, model.encode(spec.to_dict(twin)))])
    with pytest.raises(ApiError, match="ambiguous"):
        api.find("web")
    assert api.find(twin.id).id == twin.id



# -- when rounds run ---------------------------------------------------------------------------------

async def until(predicate, timeout=5.0):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def quiet(reconciler, period=0.6):
    """Wait until no round has run for `period` seconds (the loop has settled)."""
    while True:
        before = reconciler.rounds
        await trio.sleep(period)
        if reconciler.rounds == before:
            return


async def test_agents_reports_on_the_way_to_running_cost_no_round_but_a_failure_and_its_delay_do():
    store, _, reconciler, dispatcher, api = await cluster()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconciler.run)
        await create(api, "web", replicas=3, restart_delay=1.0)
        await until(lambda: sum(t.status.state == "assigned" for t in tasks_of(store, "web")) == 3)
        await quiet(reconciler)
        rounds = reconciler.rounds
        for state in ("accepted", "preparing", "starting", "running"):
            await report(dispatcher, store, state, "web")
        await trio.sleep(1.0)
        assert reconciler.rounds == rounds          # nothing to decide: no pass over the tasks
        assert all(t.status.state == "running" for t in tasks_of(store, "web"))

        # A task fails: that matters at once (a replacement, waiting out the restart delay)...
        victim = tasks_of(store, "web")[0]
        failed = spec.TaskStatus("failed", "exit 1", "task: non-zero exit (1)", time.time(), 1)
        await dispatcher.status(victim.node_id, {"updates": [{"id": victim.id, "status": spec.to_dict(failed)}]})
        await until(lambda: any(t.slot == victim.slot and t.status.state in ("new", "pending")
                                for t in tasks_of(store, "web")), timeout=1.0)
        # ...and the delay ends on the clock alone: no event, yet the replacement is placed.
        await until(lambda: sum(t.status.state == "assigned" for t in tasks_of(store, "web")) == 1, timeout=3.0)
        await report(dispatcher, store, "running", "web")
        await quiet(reconciler)
        rounds = reconciler.rounds
        await trio.sleep(1.0)
        assert reconciler.rounds == rounds
        nursery.cancel_scope.cancel()


async def test_a_manager_that_becomes_the_leader_runs_a_round_at_once():
    store, _, reconciler, dispatcher, api = await cluster()
    # Raft's lease makes a manager the acting leader some time after the event says it leads:
    # no event comes with that moment.
    acting = False
    store.is_leader = lambda: acting
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reconciler.run)
        await create(api, "web", replicas=2)   # written while another manager led (and fell silent)
        await trio.sleep(0.5)
        assert reconciler.rounds == 0 and tasks_of(store, "web") == []
        acting = True
        await until(lambda: sum(t.status.state == "assigned" for t in tasks_of(store, "web")) == 2, timeout=1.0)
        nursery.cancel_scope.cancel()


def threads_of(monkeypatch, name: str) -> list[bool]:
    """Where each call of the reconciler's `name` ran: True in the main (trio) thread."""
    import threading
    from swarm.manager import reconciler as reconciler_module
    where: list[bool] = []
    real = getattr(reconciler_module, name)

    def recorded(*args):
        where.append(threading.current_thread() is threading.main_thread())
        return real(*args)

    monkeypatch.setattr(reconciler_module, name, recorded)
    return where


async def test_a_large_round_plans_in_a_worker_thread_and_decides_as_one_planned_here(monkeypatch):
    from swarm.manager import reconciler as reconciler_module
    threads = threads_of(monkeypatch, "plan_round")
    plans = {}
    for threshold in (1, 1_000_000):      # every round in a thread; every round here
        monkeypatch.setattr(reconciler_module, "THREAD_PLAN_TASKS", threshold)
        store, _, reconciler, _, api = await cluster()
        await create(api, "web", replicas=6)
        await settle(reconciler)
        plans[threshold] = sorted((t.slot, t.node_id, t.status.state) for t in tasks_of(store, "web"))
    assert False in threads and True in threads     # both ways were taken...
    assert plans[1] == plans[1_000_000] and len(plans[1]) == 6   # ...to the same placement


async def test_a_new_service_s_replicas_count_towards_a_round_s_size(monkeypatch):
    # A create of 100,000 replicas has no task yet: its round is the largest of all, and plans
    # (and encodes its records) in the worker thread.
    from swarm.manager import planner, reconciler as reconciler_module
    where = threads_of(monkeypatch, "plan_ops")
    monkeypatch.setattr(reconciler_module, "THREAD_PLAN_TASKS", 6)
    store, _, reconciler, _, api = await cluster()
    await create(api, "web", replicas=6)
    snap = reconciler_module.read_snapshot(store)
    assert snap.tasks == {} and reconciler_module.round_size(snap) == 6
    await settle(reconciler)
    assert where[0] is False                  # the first round: in the thread
    assert len(tasks_of(store, "web")) == 6
    assert reconciler_module.round_size(planner.Snapshot(services=snap.services, tasks={}, nodes={"n": ({}, 1)})) == 6


def counting_commits(monkeypatch, store, fail_at=None):
    """store.commit, slowed down and counted: how many run at once at most, and how many began.
    `fail_at`: the call (from 1) that finds the leadership lost."""
    real = store.commit
    seen = {"now": 0, "most": 0, "began": 0}

    async def commit(ops, *args, **kwargs):
        seen["began"] += 1
        call = seen["began"]
        seen["now"] += 1
        seen["most"] = max(seen["most"], seen["now"])
        try:
            await trio.sleep(0.01 if call != fail_at else 0.001)
            if call == fail_at:
                raise RaftUnavailable("not the leader any more")
            return await real(ops, *args, **kwargs)
        finally:
            seen["now"] -= 1

    monkeypatch.setattr(store, "commit", commit)
    return seen


async def test_a_large_plan_s_transactions_are_in_raft_a_few_at_once(monkeypatch):
    store, _, reconciler, _, api = await cluster()
    await create(api, "web", replicas=600)
    seen = counting_commits(monkeypatch, store)
    await reconciler.round()
    assert seen["began"] > 2 * COMMITS_IN_FLIGHT   # the plan's transactions (by bytes: about 35 tasks each)
    assert seen["most"] == COMMITS_IN_FLIGHT > 1   # neither one after another nor all at once
    assert len(tasks_of(store, "web")) == 600


async def test_a_plan_s_writes_stop_at_a_lost_leadership_and_the_round_says_so(monkeypatch):
    store, _, reconciler, _, api = await cluster()
    await create(api, "web", replicas=600)
    seen = counting_commits(monkeypatch, store, fail_at=2)
    with pytest.raises(RaftUnavailable):      # itself, as the loop retries it: not in a group
        await reconciler.round()
    assert seen["began"] <= 2 + COMMITS_IN_FLIGHT   # the writes after the failure were not sent
    assert len(tasks_of(store, "web")) < 600
    monkeypatch.undo()
    await settle(reconciler, rounds=2)        # the next rounds write what is missing
    assert len(tasks_of(store, "web")) == 600

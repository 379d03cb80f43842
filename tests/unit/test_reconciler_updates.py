"""Rolling updates through the leader's round against the in-memory store: the
dispatcher records running_at, the planner merges the update supervisor's service
value with the endpoint allocation's, and the reconciler writes it with compare-and-set
(a user's write in between wins)."""
import dataclasses
import random
import time

import pytest

from swarm.api import spec
from swarm.manager.planner import plan_round
from swarm.manager.reconciler import read_snapshot
from tests.unit.test_planner import plan, service, snapshot
from tests.unit.test_reconciler import cluster, create, settle, tasks_of

pytestmark = pytest.mark.trio


async def report_all(dispatcher, store, name, state, **status):
    """The agents: every placed task of `name` still live reports `state` (shutdown: those told to stop)."""
    by_node: dict = {}
    for t in tasks_of(store, name):
        told_to_stop = t.desired_state != "running"
        if t.node_id and not spec.is_terminal(t.status.state) and (state == "shutdown") == told_to_stop:
            by_node.setdefault(t.node_id, []).append(
                {"id": t.id, "status": spec.to_dict(spec.TaskStatus(state, state, timestamp=time.time(), **status))})
    for nid, updates in by_node.items():
        await dispatcher.status(nid, {"updates": updates})


def service_of(api, name):
    return api.find(name)


async def test_the_first_running_report_sets_running_at_once():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=2)
    await settle(reconciler, 2)
    assert all(t.running_at == 0.0 for t in tasks_of(store, "web"))
    await report_all(dispatcher, store, "web", "starting")
    assert all(t.running_at == 0.0 for t in tasks_of(store, "web"))
    before = time.time()
    await report_all(dispatcher, store, "web", "running")
    first = {t.id: t.running_at for t in tasks_of(store, "web")}
    assert all(before <= at <= time.time() for at in first.values())
    await report_all(dispatcher, store, "web", "running")      # a repeated report changes nothing
    assert {t.id: t.running_at for t in tasks_of(store, "web")} == first


async def test_an_update_runs_to_completion_through_rounds_and_reports():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=2, update_config={"monitor": 0.0})
    await settle(reconciler, 2)
    await report_all(dispatcher, store, "web", "running")
    await api.update({"ref": "web", "env": ["V=2"]})
    for _ in range(12):
        await settle(reconciler, 2)
        await report_all(dispatcher, store, "web", "running")
        await report_all(dispatcher, store, "web", "shutdown")
        status = service_of(api, "web").update_status
        if status.state == "completed":
            break
    assert (status.state, status.message) == ("completed", "update completed") and status.completed_at > 0
    live = [t for t in tasks_of(store, "web") if t.desired_state == "running" and not spec.is_terminal(t.status.state)]
    assert sorted(t.slot for t in live) == [1, 2] and all(t.spec_version == 2 for t in live)


async def test_a_users_write_between_plan_and_apply_wins_and_the_next_round_decides_again():
    store, manager, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=1, update_config={"monitor": 0.0})
    await settle(reconciler, 2)
    await report_all(dispatcher, store, "web", "running")
    await api.update({"ref": "web", "env": ["V=2"]})
    await settle(reconciler, 1)
    await report_all(dispatcher, store, "web", "shutdown")
    await settle(reconciler, 1)
    await report_all(dispatcher, store, "web", "running")
    # the round that completes the update is decided; then the user updates again before it is written
    snap = read_snapshot(store)
    decided = plan_round(snap, time.time(), random.Random(1), lambda: "x" * 25)
    [completing] = decided.services
    assert completing.update_status.state == "completed"
    await api.update({"ref": "web", "env": ["V=3"]})
    await reconciler.apply(snap, decided)
    web = service_of(api, "web")
    assert (web.spec_version, web.update_status.state, web.spec.container.env) == (3, "updating", ("V=3",))


async def test_the_round_merges_the_update_status_with_the_endpoint_allocation():
    web = service("web0000000000000000000000", "web", replicas=1, ports=[{"target": 80}])
    web = dataclasses.replace(web, spec_version=2, last_spec_version=2)   # its task is of version 1: an update
    old = spec.Task("old000000000000000000000", web.id, "web", 1, "n1", "running", web.spec.container, 1,
                    spec.TaskStatus("running", "", "", 5.0), created_at=5.0)
    p = plan(snapshot([web], [old]))
    [written] = p.services
    assert written.ports and written.ports[0].published >= 30000        # the allocator's part
    assert written.update_status.state == "updating"                    # the update supervisor's part
    assert [t.id for t in p.update if t.desired_state == "shutdown"] == [old.id]

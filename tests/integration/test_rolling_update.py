"""Rolling updates on real daemons and runc containers: an automatic rollback, a pause
and its resumption, manual rollbacks, and a leader killed in the middle of an update.
Services are created and updated through the daemon API (the manager's control API);
a failing update runs a command that exits at once."""
import time

import pytest

from swarm.cli.common import LocalDaemon
from swarm.lab.localcluster import eventually
from swarm.rpc.messages import RPCError
from tests.integration.helpers import create_service as create

LIVE = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}
GOOD = ["sleep", "1000"]
BAD = ["sh", "-c", "exit 3"]


@pytest.fixture
def cluster(swarm, demo_tar):
    try:
        m1 = swarm.init("m1")
        w1 = swarm.join("w1", m1, "worker")
        for node in (m1, w1):
            swarm.run(node, "image", "import", demo_tar, "demo:1")
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 10, "nodes ready")
        yield swarm, LocalDaemon(m1.state_dir)
    finally:
        swarm.stop_all()          # daemons first, so none restarts a task while its container goes
        swarm.stop_containers()




def inspect(api, name):
    return api.call("service.inspect", {"refs": [name]})[0]


def status(api, name):
    return (inspect(api, name).get("update_status") or {}).get("state", "")


def live(api, name):
    return [t for t in api.call("service.ps", {"refs": [name]})
            if t["desired_state"] == "running" and t["state"] in LIVE]


def one_running_task_per_slot(api, name, replicas, version):
    rows = live(api, name)
    return (sorted(t["slot"] for t in rows) == list(range(1, replicas + 1))
            and all(t["state"] == "running" and t["spec_version"] == version for t in rows))


def test_a_failing_update_with_failure_action_rollback_rolls_back_by_itself(cluster):
    _, api = cluster
    create(api, {"name": "web", "image": "demo:1", "replicas": 3, "command": GOOD, "restart_delay": 0.2,
                 "update_config": {"failure_action": "rollback", "monitor": 2.0},
                 "rollback_config": {"parallelism": 0, "monitor": 0.5}})
    eventually(lambda: one_running_task_per_slot(api, "web", 3, 1), 60, "three running tasks")
    api.call("service.update", {"ref": "web", "command": BAD})
    eventually(lambda: status(api, "web") == "rollback_completed", 90, "the rollback to complete")
    view = inspect(api, "web")
    failed = [t for t in api.call("service.ps", {"refs": ["web"]}) if t["spec_version"] == 2 and t["state"] == "failed"]
    assert failed and view["update_status"]["message"] in {
        f"update rolled back due to failure or early termination of task {t['id']}" for t in failed}
    assert (view["spec"]["container"]["command"], view["spec_version"], view["previous_spec"]) == (GOOD, 1, None)
    eventually(lambda: one_running_task_per_slot(api, "web", 3, 1), 30, "every task on the old spec")


def test_pause_stops_after_the_first_batch_and_a_good_update_resumes(cluster):
    _, api = cluster
    create(api, {"name": "web", "image": "demo:1", "replicas": 3, "command": GOOD, "restart_delay": 0.2,
                 "update_config": {"monitor": 2.0}})
    eventually(lambda: one_running_task_per_slot(api, "web", 3, 1), 60, "three running tasks")
    api.call("service.update", {"ref": "web", "command": BAD})
    eventually(lambda: status(api, "web") == "paused", 60, "the update to pause")
    message = inspect(api, "web")["update_status"]["message"]
    rows = api.call("service.ps", {"refs": ["web"]})
    touched = {t["slot"] for t in rows if t["spec_version"] == 2}
    assert len(touched) == 1     # parallelism 1: the first batch only
    assert message in {f"update paused due to failure or early termination of task {t['id']}"
                       for t in rows if t["spec_version"] == 2 and t["state"] == "failed"}
    time.sleep(2)                # a few rounds: nothing more is replaced while paused
    assert {t["slot"] for t in api.call("service.ps", {"refs": ["web"]}) if t["spec_version"] == 2} == touched
    assert sorted(t["slot"] for t in live(api, "web") if t["spec_version"] == 1 and t["state"] == "running") == \
        sorted({1, 2, 3} - touched)
    api.call("service.update", {"ref": "web", "command": ["sleep", "2000"], "update_config": {"monitor": 0.5}})
    eventually(lambda: status(api, "web") == "completed", 90, "the resumed update to complete")
    eventually(lambda: one_running_task_per_slot(api, "web", 3, 3), 30, "every task on the good spec")
    assert inspect(api, "web")["update_status"]["message"] == "update completed"


def test_rollback_returns_to_the_previous_spec_and_a_second_rollback_swaps_back(cluster):
    _, api = cluster
    create(api, {"name": "web", "image": "demo:1", "replicas": 2, "command": GOOD,
                 "update_config": {"monitor": 0.2, "parallelism": 0}, "rollback_config": {"monitor": 0.2}})
    api.call("service.update", {"ref": "web", "env": ["V=2"]})
    eventually(lambda: status(api, "web") == "completed" and one_running_task_per_slot(api, "web", 2, 2), 60,
               "the update")
    assert api.call("service.rollback", {"ref": "web"})["name"] == "web"
    view = inspect(api, "web")
    assert (view["spec"]["container"]["env"], view["spec_version"], view["update_status"]["message"]) == (
        [], 1, "manually requested rollback")
    eventually(lambda: status(api, "web") == "rollback_completed" and one_running_task_per_slot(api, "web", 2, 1),
               60, "the rollback")
    api.call("service.update", {"ref": "web", "rollback": True})     # update --rollback: back to V=2
    eventually(lambda: status(api, "web") == "rollback_completed" and one_running_task_per_slot(api, "web", 2, 2),
               60, "the second rollback")
    assert inspect(api, "web")["spec"]["container"]["env"] == ["V=2"]


def test_rollback_without_a_previous_spec_is_one_sentence_and_changes_nothing(cluster):
    _, api = cluster
    created = create(api, {"name": "solo", "image": "demo:1", "command": GOOD})
    before = inspect(api, "solo")
    with pytest.raises(RPCError) as err:
        api.call("service.rollback", {"ref": "solo"})
    assert (err.value.code, err.value.message) == (
        "bad_request", f"service {created['id']} does not have a previous spec")
    assert inspect(api, "solo") == before


def test_a_new_leader_continues_an_update_after_the_leader_is_killed(swarm, demo_tar):
    try:
        m1 = swarm.init("m1")
        m2 = swarm.join("m2", m1, "manager")
        m3 = swarm.join("m3", m1, "manager")
        managers = (m1, m2, m3)
        for node in managers:
            swarm.run(node, "image", "import", demo_tar, "demo:1")
        eventually(lambda: sorted(r["manager_status"] for r in swarm.ls(m1).values()) ==
                   ["leader", "reachable", "reachable"], 20, "three managers")
        api = LocalDaemon(m1.state_dir)
        create(api, {"name": "web", "image": "demo:1", "replicas": 4, "command": GOOD,
                     "update_config": {"delay": 2.0, "monitor": 0.5}})
        eventually(lambda: one_running_task_per_slot(api, "web", 4, 1), 60, "four running tasks")
        api.call("service.update", {"ref": "web", "env": ["V=2"]})
        eventually(lambda: len({t["slot"] for t in live(api, "web") if t["spec_version"] == 2}) >= 1, 30,
                   "the update under way")
        leader_id = swarm.json(m1, "info")["leader"]
        leader = next(m for m in managers if swarm.json(m, "info")["node_id"] == leader_id)
        updated = {t["slot"] for t in live(api, "web") if t["spec_version"] == 2}
        assert len(updated) < 4, "the update finished before the leader could be killed"
        swarm.kill(leader)
        survivor = LocalDaemon(next(m for m in managers if m is not leader).state_dir)
        eventually(lambda: status(survivor, "web") == "completed", 120, "the new leader to complete the update")
        eventually(lambda: one_running_task_per_slot(survivor, "web", 4, 2), 60,
                   "exactly one running task per slot, on the new spec")
        time.sleep(1)                 # and it stays so: no slot gets a second task afterwards
        assert one_running_task_per_slot(survivor, "web", 4, 2)
    finally:
        swarm.stop_all()
        swarm.stop_containers()

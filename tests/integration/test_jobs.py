"""Jobs on real daemons and runc containers: a replicated job keeps to max-concurrent and
ends with every completion done; a global job completes once on every node. Services are
created through the daemon API (the manager's control API), sampled through service.ps."""
import time

import pytest

from swarm.cli.common import LocalDaemon
from swarm.lab.localcluster import eventually
from tests.integration.helpers import create_service as create

LIVE = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}


@pytest.fixture
def cluster(swarm, demo_tar):
    try:
        m1 = swarm.init("m1")
        w1 = swarm.join("w1", m1, "worker")
        for node in (m1, w1):
            swarm.run(node, "image", "import", demo_tar, "demo:1")
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 10, "nodes ready")
        yield swarm, m1, LocalDaemon(m1.state_dir)
    finally:
        swarm.stop_all()          # daemons first, so none restarts a task while its container goes
        swarm.stop_containers()




def ls_row(api, name):
    return next(r for r in api.call("service.ls", {}) if r["name"] == name)


def test_replicated_job_of_five_with_max_concurrent_two(cluster):
    _, _, api = cluster
    create(api, {"name": "batch", "image": "demo:1", "mode": "replicated-job", "replicas": 5,
                                "max_concurrent": 2, "command": ["sh", "-c", "sleep 1"]})
    peak_live = peak_running = 0
    deadline = time.monotonic() + 90
    while True:
        rows = api.call("service.ps", {"refs": ["batch"]})
        live = [t for t in rows if t["desired_state"] == "running" and t["state"] in LIVE]
        peak_live = max(peak_live, len(live))
        peak_running = max(peak_running, sum(t["state"] == "running" for t in live))
        assert len(live) <= 2, f"more than max-concurrent tasks at once: {live}"
        if sorted(t["slot"] for t in rows if t["state"] == "complete") == [1, 2, 3, 4, 5]:
            break
        assert time.monotonic() < deadline, f"the job did not complete: {rows}"
        time.sleep(0.05)
    assert peak_running == 2     # it does run two at once, not one after the other
    time.sleep(1.5)              # a few reconcile rounds: a completed job starts nothing more
    rows = api.call("service.ps", {"refs": ["batch"]})
    assert sorted((t["slot"], t["state"], t["exit_code"]) for t in rows) == [(s, "complete", 0) for s in range(1, 6)]
    assert ls_row(api, "batch")["replicas"] == "0/2 (5/5 completed)"


def test_global_job_completes_once_on_every_node(cluster):
    swarm, m1, api = cluster
    create(api, {"name": "once", "image": "demo:1", "mode": "global-job",
                                "command": ["sh", "-c", "echo ran on $HOSTNAME"]})
    eventually(lambda: len([t for t in api.call("service.ps", {"refs": ["once"]}) if t["state"] == "complete"]) == 2,
               60, "one completed task per node")
    time.sleep(1.5)
    rows = api.call("service.ps", {"refs": ["once"]})
    assert sorted((t["node"], t["state"]) for t in rows) == [("m1", "complete"), ("w1", "complete")]
    assert ls_row(api, "once")["replicas"] == "0/0 (2/2 completed)"


def test_the_cli_waits_for_a_job_and_an_update_runs_it_again(cluster):
    swarm, m1, api = cluster
    create(api, {"name": "warm", "image": "demo:1", "replicas": 0})   # waits out the image's first heartbeat
    out = swarm.run(m1, "service", "create", "--name", "job", "--mode", "replicated-job", "--replicas", "2",
                    "demo:1", "true").stdout
    assert "job complete" in out
    rows = api.call("service.ps", {"refs": ["job"]})
    assert sorted((t["slot"], t["state"], t["job_iteration"]) for t in rows) == [(1, "complete", 0), (2, "complete", 0)]
    table = swarm.run(m1, "service", "ps", "job").stdout
    assert "Complete" in table.splitlines()[1]       # Docker's desired state of a job's task
    assert "replicated job" in swarm.run(m1, "service", "ls").stdout
    out = swarm.run(m1, "service", "update", "--env-add", "RUN=2", "job").stdout
    assert "job complete" in out
    rows = api.call("service.ps", {"refs": ["job"]})
    done = sorted((t["slot"], t["job_iteration"]) for t in rows if t["state"] == "complete")
    assert done == [(1, 0), (1, 1), (2, 0), (2, 1)]   # the update ran every slot again
    # Scaling a job (Docker's `service scale` takes replicated jobs) runs it again with the new count.
    out = swarm.run(m1, "service", "scale", "job=3").stdout
    assert "job complete" in out
    rows = api.call("service.ps", {"refs": ["job"]})
    assert sorted(t["slot"] for t in rows if t["state"] == "complete" and t["job_iteration"] == 2) == [1, 2, 3]

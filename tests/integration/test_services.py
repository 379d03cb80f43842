"""Services on real runc containers across three nodes on one machine
(one manager, two workers; separate daemons), through the real CLI."""
import os
import signal
import time

import pytest

from swarm.lab.localcluster import eventually


@pytest.fixture
def cluster(three_nodes):
    return three_nodes


def tasks(swarm, m1, service):
    return swarm.json(m1, "service", "ps", service)


def running(swarm, m1, service):
    return [t for t in tasks(swarm, m1, service) if t["desired_state"] == "running"
            and t["current_state"].startswith("running")]


def replicas(swarm, m1, service):
    return {r["name"]: r["replicas"] for r in swarm.json(m1, "service", "ls")}[service]


def test_replicated_service_spreads_scales_and_logs(cluster):
    swarm, m1, workers = cluster
    out = swarm.run(m1, "service", "create", "--name", "web", "--replicas", "3", "demo:1",
                    "sh", "-c", "echo hello from $HOSTNAME; exec sleep 1000", timeout=90).stdout
    assert "converged" in out
    rows = running(swarm, m1, "web")
    assert len(rows) == 3 and len({r["node"] for r in rows}) == 3  # spread over the three nodes
    assert replicas(swarm, m1, "web") == "3/3"
    swarm.run(m1, "service", "scale", "web=5")
    eventually(lambda: replicas(swarm, m1, "web") == "5/5", 30, "scale up to 5")
    swarm.run(m1, "service", "scale", "web=2")
    eventually(lambda: replicas(swarm, m1, "web") == "2/2" and len(running(swarm, m1, "web")) == 2, 30,
               "scale down to 2")
    logs = swarm.run(m1, "service", "logs", "web").stdout
    assert "hello from" in logs


def test_global_service_runs_one_task_per_node_and_follows_drain(cluster):
    swarm, m1, (w1, w2) = cluster
    swarm.run(m1, "service", "create", "--name", "agent", "--mode", "global", "--detach", "demo:1",
              "sleep", "1000")
    eventually(lambda: len(running(swarm, m1, "agent")) == 3, 30, "one task per node")
    swarm.run(m1, "node", "update", "--availability", "drain", "w2")
    eventually(lambda: sorted(r["node"] for r in running(swarm, m1, "agent")) == ["m1", "w1"], 30,
               "the drained node's task to stop")


def test_restart_policy_replaces_a_failing_container(cluster):
    swarm, m1, _ = cluster
    swarm.run(m1, "service", "create", "--name", "flaky", "--detach", "--restart-delay", "200ms",
              "--restart-max-attempts", "2", "demo:1", "sh", "-c", "exit 3")
    eventually(lambda: len([t for t in tasks(swarm, m1, "flaky") if t["state"] == "failed"]) == 3, 40,
               "three failed attempts (the first plus two restarts)")
    time.sleep(1)
    rows = tasks(swarm, m1, "flaky")
    assert len(rows) == 3 and all("exit (3)" in r["error"] for r in rows)
    # none: no restart at all
    swarm.run(m1, "service", "create", "--name", "once", "--detach", "--restart-condition", "none",
              "demo:1", "sh", "-c", "exit 0")
    eventually(lambda: [t["state"] for t in tasks(swarm, m1, "once")] == ["complete"], 30, "a completed task")


def test_a_task_whose_command_does_not_exist_fails_with_the_runtime_error(cluster):
    swarm, m1, _ = cluster
    swarm.run(m1, "service", "create", "--name", "typo", "--detach", "--restart-condition", "none",
              "demo:1", "no-such-command")
    row = eventually(lambda: next((t for t in tasks(swarm, m1, "typo") if t["state"] in ("failed", "rejected")),
                                  None), 30, "the task to fail")
    assert row["error"]


def test_bad_service_input_is_one_sentence_and_creates_nothing(cluster):
    swarm, m1, _ = cluster
    for args, words in ((["--name", "x", "nope:1"], "not found"),
                        (["--name", "x", "--constraint", "node.color=red", "demo:1"], "constraint"),
                        (["--name", "x", "--limit-memory", "1m", "demo:1"], "memory")):
        proc = swarm.run(m1, "service", "create", "--detach", *args, check=False)
        assert proc.returncode != 0 and words in proc.stderr.lower() and "Traceback" not in proc.stderr
    swarm.run(m1, "service", "create", "--name", "dup", "--detach", "demo:1", "sleep", "100")
    proc = swarm.run(m1, "service", "create", "--name", "dup", "--detach", "demo:1", check=False)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert [r["name"] for r in swarm.json(m1, "service", "ls")] == ["dup"]


def test_killed_worker_daemon_tasks_come_back_within_five_seconds(cluster):
    swarm, m1, (w1, w2) = cluster
    swarm.run(m1, "service", "create", "--name", "web", "--replicas", "6", "demo:1", "sleep", "1000", timeout=90)
    victim = w2
    on_victim = [r for r in running(swarm, m1, "web") if r["node"] == "w2"]
    assert on_victim
    swarm.kill(victim)
    killed = time.monotonic()
    eventually(lambda: len([r for r in running(swarm, m1, "web") if r["node"] != "w2"]) == 6, 15,
               "six replicas on the surviving nodes")
    assert time.monotonic() - killed < 8.0  # 5 s target plus the CLI's own start-up per poll
    slots = [r["slot"] for r in running(swarm, m1, "web")]
    assert sorted(slots) == [1, 2, 3, 4, 5, 6]  # no slot running twice


def test_killed_container_is_replaced_and_agent_restart_re_adopts(cluster):
    swarm, m1, (w1, w2) = cluster
    swarm.run(m1, "service", "create", "--name", "web", "--replicas", "3", "--restart-delay", "100ms",
              "demo:1", "sleep", "1000", timeout=90)
    before = {r["id"] for r in running(swarm, m1, "web")}
    # restart w1's daemon: its containers keep running and are adopted, not duplicated
    swarm.kill(w1)
    swarm.restart(w1)
    time.sleep(3)
    after = {r["id"] for r in running(swarm, m1, "web")}
    assert after == before
    # kill -9 one container's process: the task fails and a replacement runs
    from swarm.runtime.images import ImageStore
    from swarm.runtime.runc import Runtime

    runtime = Runtime(os.path.join(w1.state_dir, "tasks"), ImageStore(os.path.join(w1.state_dir, "images")))
    task_id = runtime.list()[0]
    os.kill(runtime.state(task_id).pid, signal.SIGKILL)
    eventually(lambda: len(running(swarm, m1, "web")) == 3 and task_id not in {r["id"] for r in running(swarm, m1, "web")},
               20, "a replacement for the killed container")


def test_update_rolls_tasks_to_the_new_spec_and_constraints_place_tasks(cluster):
    swarm, m1, _ = cluster
    swarm.run(m1, "service", "create", "--name", "web", "--replicas", "3", "--stop-grace-period", "1s",
              "demo:1", "sleep", "1000", timeout=90)
    swarm.run(m1, "service", "update", "--env-add", "COLOR=blue", "--constraint-add", "node.hostname==w1", "web",
              timeout=120)
    rows = running(swarm, m1, "web")
    assert len(rows) == 3 and {r["node"] for r in rows} == {"w1"}
    assert all(r["spec_version"] == 2 for r in rows)
    old = [t for t in tasks(swarm, m1, "web") if t["spec_version"] == 1]
    assert len(old) == 3 and all(t["desired_state"] == "shutdown" and t["state"] == "shutdown" for t in old)
    spec = swarm.json(m1, "service", "inspect", "web")[0]["spec"]
    assert "COLOR=blue" in spec["container"]["env"]


def test_an_unschedulable_service_explains_why(cluster):
    swarm, m1, _ = cluster
    proc = swarm.run(m1, "service", "create", "--name", "huge", "--reserve-memory", "100000g", "--timeout", "4s",
                     "demo:1", "sleep", "100", check=False, timeout=60)
    assert proc.returncode == 1
    assert "no suitable node" in proc.stderr and "lack" in proc.stderr and "memory" in proc.stderr
    row = tasks(swarm, m1, "huge")[0]
    assert row["state"] == "pending" and "lack" in row["error"]

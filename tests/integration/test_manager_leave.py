"""`swarm leave` on a manager, with three real managers on loopback.

Docker's rule: a manager never leaves without --force. With --force it
either leaves completely (demoted by the leader, out of Raft, its daemon
stopped cleanly, its state cleared) or stays the manager it was."""
import os
import signal
import subprocess
import sys

import pytest

from swarm.lab.localcluster import ROOT, Swarm, eventually
from swarm.daemon.procs import wait_gone


def foreground_daemon(swarm: Swarm, node) -> subprocess.Popen:
    """Restart `node`'s daemon as a child of the test, so that its exit status
    can be read; its output goes to the state dir's daemon.log, as a detached one's."""
    pid = node.pid
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid, timeout=20)
    log = open(os.path.join(node.state_dir, "daemon.log"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "swarm", "daemon", "--state-dir", node.state_dir],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    log.close()
    swarm.pids.add(proc.pid)  # killed by PID at teardown, also when the test fails
    eventually(lambda: swarm.run(node, "info", check=False).returncode == 0, 20, f"{node.name}'s daemon")
    return proc


def three_managers(swarm: Swarm):
    m1 = swarm.init("m1")
    m2 = swarm.join("m2", m1, "manager")
    m3 = swarm.join("m3", m1, "manager")
    eventually(lambda: sorted(r["manager_status"] for r in swarm.ls(m1).values()) ==
               ["leader", "reachable", "reachable"], 15, "three managers")
    return m1, m2, m3


def leader_of(swarm: Swarm, managers):
    leader_id = swarm.json(managers[0], "info")["leader"]
    return next((m for m in managers if swarm.json(m, "info")["node_id"] == leader_id), None)


def test_a_manager_does_not_leave_without_force_and_nothing_changes(swarm):
    managers = three_managers(swarm)
    before = swarm.ls(managers[0])
    for node in (leader_of(swarm, managers), next(m for m in managers if m is not leader_of(swarm, managers))):
        proc = swarm.run(node, "leave", check=False)
        assert proc.returncode == 1, proc.stdout
        assert proc.stderr.startswith("Error: You are attempting to leave the swarm on a node that is "
                                      "participating as a manager.")
        assert "demote it first" in proc.stderr and "--force" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert os.path.exists(os.path.join(node.state_dir, "node.json")) and node.pid
    after = swarm.ls(managers[1])
    assert {h: (r["role"], r["status"]) for h, r in after.items()} == \
        {h: (r["role"], r["status"]) for h, r in before.items()}
    assert len(swarm.json(managers[2], "info")["raft"]["members"]) == 3
    swarm.run(managers[0], "node", "update", "--label-add", "still=writable", "m3")


@pytest.mark.parametrize("which", ["leader", "non-leader"])
def test_leave_force_on_a_manager_completes_and_the_rest_keeps_working(swarm, which):
    m1, m2, m3 = three_managers(swarm)
    # The leaving daemon must be a child of the test (its exit status is read). Restarting a
    # leader costs it the leadership, so restart all three, and only then pick who leaves.
    daemons = {}
    for node in (m1, m2, m3):
        daemons[node.name] = foreground_daemon(swarm, node)
        other = m2 if node is m1 else m1
        eventually(lambda: swarm.ls(other)[node.name]["status"] == "ready", 15, f"{node.name} back")
    leader = eventually(lambda: leader_of(swarm, (m1, m2, m3)), 15, "a leader")
    leaving = leader if which == "leader" else next(m for m in (m1, m2, m3) if m is not leader)
    daemon = daemons[leaving.name]
    leaving_id = swarm.json(leaving, "info")["node_id"]

    proc = swarm.run(leaving, "leave", "--force", check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Node left the swarm.\n"
    assert daemon.wait(timeout=30) == 0
    log = open(os.path.join(leaving.state_dir, "daemon.log")).read()
    assert "Traceback" not in log and "Nursery stack corrupted" not in log
    for name in ("node.json", "raft", "certs", "swarm.sock", "swarm.pid"):
        assert not os.path.exists(os.path.join(leaving.state_dir, name)), name

    rest = [m for m in (m1, m2, m3) if m is not leaving]
    for m in rest:
        eventually(lambda m=m: len(swarm.json(m, "info")["raft"]["members"]) == 2, 10, "Raft of 2 members")
        assert not any(name.startswith(leaving_id) for name in swarm.json(m, "info")["raft"]["members"])
        rows = swarm.ls(m)
        assert rows[leaving.name]["status"] == "down" and rows[leaving.name]["role"] == "worker"
        assert sorted(rows[r.name]["manager_status"] for r in rest) == ["leader", "reachable"]
        assert swarm.run(m, "service", "ls").returncode == 0
    # the two remaining managers still commit writes
    swarm.run(rest[0], "node", "update", "--label-add", "after=leave", rest[1].name)
    eventually(lambda: swarm.json(rest[1], "node", "inspect", rest[1].name)[0]["labels"] == {"after": "leave"},
               10, "the write on the other manager")


def test_a_manager_demotes_itself_through_the_leader(swarm):
    m1, m2, m3 = three_managers(swarm)
    follower = next(m for m in (m2, m3) if leader_of(swarm, (m1, m2, m3)) is not m)
    assert swarm.run(follower, "node", "demote", follower.name).stdout == f"Manager {follower.name} demoted in the swarm.\n"
    eventually(lambda: swarm.json(follower, "info")["role"] == "worker", 15, "the follower to run as a worker")
    rest = [m for m in (m1, m2, m3) if m is not follower]
    for m in rest:
        eventually(lambda m=m: len(swarm.json(m, "info")["raft"]["members"]) == 2, 10, "Raft of 2 members")
    assert swarm.ls(rest[0])[follower.name]["status"] == "ready"
    # and the leader demoting itself hands leadership over first
    leader = leader_of(swarm, rest)
    assert "demoted" in swarm.run(leader, "node", "demote", leader.name).stdout
    last = next(m for m in rest if m is not leader)
    eventually(lambda: swarm.json(last, "info")["raft"]["members"] == [
        f"{swarm.json(last, 'info')['node_id']}@{swarm.json(last, 'info')['raft']['members'][0].split('@')[1]}"],
        15, "the last manager alone in Raft")
    eventually(lambda: swarm.ls(last)[leader.name]["role"] == "worker", 10, "the old leader a worker")
    swarm.run(last, "node", "update", "--label-add", "alone=yes", last.name)

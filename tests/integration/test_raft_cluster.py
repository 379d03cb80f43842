"""A Raft group of real processes on loopback: commits, failover, fencing,
membership, apply errors, snapshots and recovery."""
import os
import signal
import threading
import time

import pytest

from swarm.lab.raftharness import ControlError, put


def commit(cluster, member, *ops, timeout=5.0):
    client = cluster.client(member, timeout=timeout + 5)
    try:
        return client.call("commit", ops=list(ops), timeout=timeout)
    finally:
        client.close()


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_commit_replicates_to_every_member_and_followers_forward(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(m for m in cluster.members if m is not leader)
    assert commit(cluster, leader, put("node", "a", b"1"))["ok"]
    assert commit(cluster, follower, put("node", "b", b"2"))["ok"]  # forwarded to the leader
    for m in cluster.members:
        c = cluster.client(m)
        wait_until(lambda: c.call("get", kind="node", key="b") is not None, 3, "replication")
        assert c.call("get", kind="node", key="a")[1] == b"1"
        c.close()


def test_compare_and_set_conflict_is_an_error_result_and_the_cluster_keeps_committing(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    first = commit(cluster, leader, put("svc", "web", b"v1"))
    version = first["versions"][0]
    assert commit(cluster, leader, put("svc", "web", b"v2", action="update", expect=version))["ok"]
    stale = commit(cluster, leader, put("svc", "web", b"v3", action="update", expect=version))
    assert not stale["ok"] and stale["error_code"] == "conflict"
    dup = commit(cluster, leader, put("svc", "web", b"again"))
    assert not dup["ok"] and "already exists" in dup["error"]
    assert commit(cluster, leader, put("svc", "db", b"v1"))["ok"]


def test_pipelined_load_never_truncates_an_acknowledged_entry(make_cluster):
    """pysyncobj deletes entries a follower already acknowledged when the
    leader re-sends an overlapping batch; the transport rewrites those
    batches. Count deletions of acknowledged entries: the only right number is 0."""
    cluster = make_cluster(3)
    leader = cluster.leader()
    client = cluster.client(leader, timeout=120)
    for concurrency in (1, 4, 32):
        result = client.call("bench", count=1500, concurrency=concurrency)
        assert result["count"] == 1500
    client.close()
    statuses = [cluster.status(m) for m in cluster.members]
    assert [s["acked_truncations"] for s in statuses] == [0, 0, 0]
    # The overlapping re-sends that trigger the bug did happen, and were rewritten.
    assert sum(s["append_rewrites"] for s in statuses) > 0


def test_leader_kill_new_leader_accepts_writes_within_a_second(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    assert commit(cluster, leader, put("k", "before", b"1"))["ok"]
    survivors = [m for m in cluster.members if m is not leader]
    cluster.kill(leader)
    killed_at = time.monotonic()
    while True:
        try:
            if commit(cluster, survivors[0], put("k", f"after-{time.monotonic()}", b"1"), timeout=0.5)["ok"]:
                break
        except ControlError:
            pass
        assert time.monotonic() - killed_at < 5, "no write committed within 5 s of the leader's death"
    failover = time.monotonic() - killed_at
    assert failover < 3.0, failover
    cluster.start(leader)  # the old leader restarts and catches up
    c = cluster.client(leader)
    wait_until(lambda: c.call("get", kind="k", key="before") is not None, 5, "catch-up")
    c.close()


def test_isolated_leader_stops_acting_within_the_election_timeout(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    followers = [m for m in cluster.members if m is not leader]
    for f in followers:
        os.kill(f.proc.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        wait_until(lambda: not cluster.status(leader)["acting_leader"], 2.0, "the leader to stop acting")
        assert time.monotonic() - stopped_at < 1.0
        wait_until(lambda: cluster.status(leader)["role"] != "leader", 2.0, "pysyncobj to step down")
        # Its watchers were told.
        log = cluster.client(leader).call("leadership")
        assert log[-1]["acting"] is False
        # Nothing can commit without a quorum; the caller is told the outcome is unknown.
        with pytest.raises(ControlError, match="unknown|no Raft leader|retry"):
            commit(cluster, leader, put("k", "lonely", b"1"), timeout=1.0)
    finally:
        for f in followers:
            os.kill(f.proc.pid, signal.SIGCONT)
    new_leader = cluster.leader()
    assert commit(cluster, new_leader, put("k", "healed", b"1"))["ok"]
    for m in cluster.members:
        c = cluster.client(m)
        wait_until(lambda: c.call("get", kind="k", key="healed") is not None, 5, "healing")
        c.close()


def test_frozen_leader_is_fenced_when_it_wakes(make_cluster):
    cluster = make_cluster(3)
    old = cluster.leader()
    old_term = cluster.status(old)["term"]
    os.kill(old.proc.pid, signal.SIGSTOP)
    try:
        others = [m for m in cluster.members if m is not old]
        new = cluster.leader(among=others, timeout=5)
        assert commit(cluster, new, put("k", "during-freeze", b"1"))["ok"]
    finally:
        os.kill(old.proc.pid, signal.SIGCONT)
    status = cluster.status(old)  # the very first answer after waking
    assert not status["acting_leader"]
    wait_until(lambda: cluster.status(old)["role"] == "follower", 2, "the stale leader to step down")
    assert cluster.status(old)["term"] > old_term
    c = cluster.client(old)
    wait_until(lambda: c.call("get", kind="k", key="during-freeze") is not None, 5, "catch-up")
    c.close()


def test_membership_add_and_remove_under_write_load(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    stop = threading.Event()
    acked = []

    def writer():
        c = cluster.client(leader, timeout=20)
        i = 0
        while not stop.is_set():
            try:
                if c.call("commit", ops=[put("load", str(i), b"x")])["ok"]:
                    acked.append(str(i))
            except ControlError:
                pass
            i += 1
        c.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        newcomers = [cluster.new_member("n1"), cluster.new_member("n2")]
        # Two concurrent change requests, one through a follower: they are serialized.
        follower = next(m for m in cluster.members if m is not leader)
        results = {}

        def add(via, member):
            c = cluster.client(via, timeout=30)
            try:
                results[member.node_id] = c.call("add", node_id=member.node_id, address=member.address, timeout=20)
            except ControlError as exc:
                results[member.node_id] = exc
            finally:
                c.close()

        adders = [threading.Thread(target=add, args=(leader, newcomers[0])),
                  threading.Thread(target=add, args=(follower, newcomers[1]))]
        for t in adders:
            t.start()
        for t in adders:
            t.join()
        assert all(isinstance(r, list) for r in results.values()), results
        everyone = cluster.members + newcomers
        for m in newcomers:
            cluster.start(m, peers=[p for p in everyone if p is not m])
        cluster.members.extend(newcomers)
        wait_until(lambda: all(len(cluster.status(m)["peers"]) == 4 for m in cluster.members), 10,
                   "every member to see five members")
        # Remove one of the original followers.
        gone = follower
        c = cluster.client(leader)
        members = c.call("remove", node_id=gone.node_id, timeout=10)
        c.close()
        assert gone.name not in members
    finally:
        stop.set()
        thread.join()
    assert acked
    last = acked[-1]
    for m in cluster.members:
        if m is gone:
            continue
        c = cluster.client(m)
        wait_until(lambda: c.call("get", kind="load", key=last) is not None, 5,
                   f"load replicated to {m.name}: {[cluster.status(x) for x in cluster.members]}")
        wait_until(lambda: len(cluster.status(m)["peers"]) == 3, 5, "removal applied")
        c.close()


def test_leader_cannot_remove_itself_but_transfers_first(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    c = cluster.client(leader)
    with pytest.raises(ControlError, match="cannot remove itself"):
        c.call("remove", node_id=leader.node_id)
    new_leader_id = c.call("transfer")
    c.close()
    assert new_leader_id != leader.node_id
    new = next(m for m in cluster.members if m.node_id == new_leader_id)
    c = cluster.client(new)
    members = c.call("remove", node_id=leader.node_id, timeout=10)
    c.close()
    assert leader.name not in members


def test_unloadable_snapshot_stops_the_member_with_a_clear_error(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    for i in range(50):
        commit(cluster, leader, put("k", str(i), b"x"))
    victim = next(m for m in cluster.members if m is not leader)
    c = cluster.client(victim)
    c.call("compact")
    c.close()
    snapshot = os.path.join(victim.data_dir, "snapshot")
    wait_until(lambda: os.path.exists(snapshot), 5, "a snapshot")
    cluster.kill(victim)
    with open(snapshot, "r+b") as f:
        f.seek(20)
        f.write(b"\xff\xff\xff\xff")
    cluster.start(victim, wait=False)
    assert victim.proc.wait(timeout=20) != 0
    assert "cannot be loaded" in cluster.log(victim)
    assert "refusing to start with empty state" in cluster.log(victim)


def test_force_new_cluster_keeps_a_survivors_records(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    for i in range(30):
        assert commit(cluster, leader, put("k", str(i), b"x"))["ok"]
    c = cluster.client(leader)
    c.call("compact")
    c.close()
    for i in range(30, 40):
        assert commit(cluster, leader, put("k", str(i), b"x"))["ok"]
    survivor = leader
    cluster.stop_all()  # the majority is gone for good
    cluster.extra_args = ["--force-new-cluster"]
    cluster.start(survivor, peers=[])
    cluster.extra_args = []
    assert cluster.leader(among=[survivor]) is survivor
    c = cluster.client(survivor)
    assert len(c.call("list", kind="k")) == 40
    assert c.call("commit", ops=[put("k", "new", b"y")])["ok"]
    assert cluster.status(survivor)["peers"] == []
    c.close()


def test_idle_links_stay_up_and_failover_after_idling_is_fast(make_cluster):
    """Keepalive pings: an idle follower-follower link is not torn down
    (pysyncobj drops a link after 3.5 s without reads), so the first
    RequestVote after a long quiet spell is not lost."""
    cluster = make_cluster(3)
    leader = cluster.leader()
    time.sleep(5)  # longer than the connection timeout, no client traffic
    for m in cluster.members:
        assert all(p["connected"] for p in cluster.status(m)["peers"])
    survivor = next(m for m in cluster.members if m is not leader)
    cluster.kill(leader)
    killed = time.monotonic()
    while True:
        try:
            if commit(cluster, survivor, put("k", "after-idle", b"1"), timeout=0.5)["ok"]:
                break
        except ControlError:
            pass
        assert time.monotonic() - killed < 5
    assert time.monotonic() - killed < 1.5


def raft_files(member) -> bytes:
    out = b""
    for name in sorted(os.listdir(member.data_dir)):
        path = os.path.join(member.data_dir, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out += f.read()
    return out


def test_an_encrypted_group_sends_a_snapshot_a_lagging_member_can_open(make_cluster, tmp_path):
    """Encryption at rest with the data key the members share: a follower that missed what the
    leader compacted away receives the leader's snapshot file, opens it, and holds every record;
    no member's files hold a value in the clear."""
    key = tmp_path / "data-key"
    key.write_text(os.urandom(32).hex())
    cluster = make_cluster(3, start=False)
    cluster.extra_args = ["--data-key-file", str(key)]
    cluster.start_all()
    marker = b"plaintext-marker-7f3a"
    leader = cluster.leader()
    for i in range(30):
        assert commit(cluster, leader, put("k", str(i), marker + str(i).encode()))["ok"]
    lagging = next(m for m in cluster.members if m is not leader)
    cluster.kill(lagging)
    for i in range(30, 60):
        assert commit(cluster, leader, put("k", str(i), marker + str(i).encode()))["ok"]
    for member in cluster.members:
        if member is not lagging:
            c = cluster.client(member)
            c.call("compact")
            c.close()
    wait_until(lambda: os.path.exists(os.path.join(leader.data_dir, "snapshot")), 5, "the leader's snapshot")
    cluster.start(lagging)
    c = cluster.client(lagging)
    try:
        wait_until(lambda: len(c.call("list", kind="k")) == 60, 20, "the lagging member to hold every record")
    finally:
        c.close()
    assert "snapshot" in os.listdir(lagging.data_dir)       # it came as a snapshot, not as entries
    for member in cluster.members:
        assert marker not in raft_files(member), member.name

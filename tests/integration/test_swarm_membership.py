"""Cluster membership end to end: separate daemon processes on loopback,
driven through the real CLI (`python -m swarm ...`)."""
import os
import socket
import ssl
import stat
import time

import pytest

from swarm.lab.localcluster import eventually
from swarm.rpc.client import call_unix_sync
from swarm.rpc.messages import RPCError


@pytest.fixture
def five(swarm):
    """3 managers + 2 workers."""
    m1 = swarm.init("m1")
    m2 = swarm.join("m2", m1, "manager")
    m3 = swarm.join("m3", m2, "manager")
    w1 = swarm.join("w1", m1, "worker")
    w2 = swarm.join("w2", m3, "worker")
    return swarm, (m1, m2, m3), (w1, w2)


def test_node_ls_agrees_on_every_manager_and_workers_read_through_a_manager(five):
    swarm, managers, workers = five

    def agreed():
        views = [swarm.ls(m) for m in managers + workers]
        statuses = [{h: (r["status"], r["role"]) for h, r in v.items()} for v in views]
        return all(s == statuses[0] for s in statuses) and all(r["status"] == "ready" for r in views[0].values())

    eventually(agreed, 10, "every node to report the same five ready nodes")
    rows = swarm.ls(managers[0])
    assert sorted(rows) == ["m1", "m2", "m3", "w1", "w2"]
    assert sorted(r["manager_status"] for r in rows.values()) == ["", "", "leader", "reachable", "reachable"]
    assert set(rows["m1"]) >= {"id", "hostname", "role", "status", "availability", "manager_status", "addr"}
    # -q prints IDs only
    ids = swarm.run(managers[1], "node", "ls", "-q").stdout.split()
    assert sorted(ids) == sorted(r["id"] for r in rows.values())
    # files of the contract
    sock = os.path.join(managers[0].state_dir, "swarm.sock")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert os.path.exists(os.path.join(managers[0].state_dir, "swarm.pid"))


def test_worker_refuses_manager_only_commands(five):
    swarm, managers, workers = five
    proc = swarm.run(workers[0], "node", "update", "--availability", "drain", "w1", check=False)
    assert proc.returncode == 1
    assert "not a swarm manager" in proc.stderr and "Traceback" not in proc.stderr
    proc = swarm.run(workers[0], "join-token", "worker", check=False)
    assert proc.returncode == 1 and "not a swarm manager" in proc.stderr


def test_leader_kill_write_through_another_manager_then_full_restart_keeps_labels(five):
    swarm, managers, workers = five
    leader_id = swarm.json(managers[0], "info")["leader"]
    leader = next(m for m in managers if swarm.json(m, "info")["node_id"] == leader_id)
    others = [m for m in managers if m is not leader]
    swarm.kill(leader)
    killed = time.monotonic()
    while True:
        proc = swarm.run(others[0], "node", "update", "--label-add", "zone=a", "w1", check=False)
        if proc.returncode == 0:
            break
        assert time.monotonic() - killed < 3.0, proc.stderr
    assert time.monotonic() - killed < 3.0
    swarm.restart(leader)  # the old leader comes back and catches up
    eventually(lambda: swarm.json(leader, "node", "inspect", "w1")[0]["labels"] == {"zone": "a"}, 10,
               "the old leader to catch up")
    swarm.run(others[1], "node", "update", "--label-add", "tier=front", "--label-add", "ssd", "w2")
    for m in managers:
        swarm.kill(m)
    for m in managers:
        swarm.restart(m)
    for m in managers:
        eventually(lambda m=m: swarm.json(m, "node", "inspect", "w2")[0]["labels"] == {"tier": "front", "ssd": ""},
                   15, "labels after a full restart")
        assert swarm.json(m, "node", "inspect", "w1")[0]["labels"] == {"zone": "a"}


def test_node_update_with_a_version_is_a_compare_and_set(five):
    swarm, managers, workers = five
    sock = [os.path.join(m.state_dir, "swarm.sock") for m in managers]
    before = call_unix_sync(sock[0], "node.inspect", {"refs": ["w1"]})[0]["version"]
    won = call_unix_sync(sock[1], "node.update",
                         {"ref": "w1", "label_add": {"r": "first"}, "version": before})
    assert won["labels"] == {"r": "first"} and won["version"] > before
    # A second writer that read the same version loses, and writes nothing.
    with pytest.raises(RPCError) as lost:
        call_unix_sync(sock[2], "node.update", {"ref": "w1", "label_add": {"r": "second"}, "version": before})
    assert lost.value.code == "conflict" and "out of sequence" in lost.value.message
    for sock_path in sock:
        eventually(lambda p=sock_path: call_unix_sync(p, "node.inspect", {"refs": ["w1"]})[0]["version"]
                   == won["version"], 5, "every manager to hold the winner's version")
        assert call_unix_sync(sock_path, "node.inspect", {"refs": ["w1"]})[0]["labels"] == {"r": "first"}
    # The version the winner got back is current: a CAS with it applies.
    again = call_unix_sync(sock[2], "node.update", {"ref": "w1", "label_add": {"r": "third"},
                                                            "version": won["version"]})
    assert again["labels"] == {"r": "third"}
    with pytest.raises(RPCError) as bad:
        call_unix_sync(sock[0], "node.update", {"ref": "w1", "version": "latest"})
    assert bad.value.code == "bad_request"


def test_a_dead_worker_is_down_within_the_grace_period(five):
    swarm, managers, workers = five
    eventually(lambda: swarm.ls(managers[0])["w2"]["status"] == "ready", 10, "w2 ready")
    swarm.kill(workers[1])
    killed = time.monotonic()
    eventually(lambda: swarm.ls(managers[0])["w2"]["status"] == "down", 10, "w2 down")
    assert time.monotonic() - killed < 5.0  # 3 heartbeat periods of 1 s, plus the CLI's own time
    swarm.restart(workers[1])
    eventually(lambda: swarm.ls(managers[1])["w2"]["status"] == "ready", 10, "w2 ready again")


def test_promote_demote_rm_and_leave(five):
    swarm, managers, workers = five
    w1, w2 = workers
    assert "promoted to a manager" in swarm.run(managers[0], "node", "promote", "w1").stdout
    eventually(lambda: swarm.json(w1, "info").get("raft") is not None, 15, "w1 to run Raft")
    eventually(lambda: swarm.ls(managers[2])["w1"]["manager_status"] == "reachable", 15, "w1 reachable")
    assert len(swarm.json(managers[1], "info")["raft"]["members"]) == 4
    assert "demoted" in swarm.run(managers[1], "node", "demote", "w1").stdout
    eventually(lambda: swarm.json(w1, "info")["role"] == "worker", 15, "w1 to be a worker again")
    eventually(lambda: len(swarm.json(managers[0], "info")["raft"]["members"]) == 3, 10, "Raft back to 3")
    assert not os.path.exists(os.path.join(w1.state_dir, "raft"))
    # node rm refuses a live node, then removes it once down; its certificate is refused afterwards.
    proc = swarm.run(managers[0], "node", "rm", "w2", check=False)
    assert proc.returncode == 1 and "not down" in proc.stderr
    swarm.kill(w2)
    eventually(lambda: swarm.ls(managers[0])["w2"]["status"] == "down", 10, "w2 down")
    w2_id = swarm.ls(managers[0])["w2"]["id"]
    assert swarm.run(managers[0], "node", "rm", "w2").stdout.split() == [w2_id]
    assert "w2" not in swarm.ls(managers[1])
    swarm.restart(w2)  # the removed node's certificate is refused: it never comes back
    time.sleep(3)
    assert "w2" not in swarm.ls(managers[2])
    assert "refused" in open(os.path.join(managers[0].state_dir, "daemon.log")).read() or \
        "removed" in open(os.path.join(w2.state_dir, "daemon.log")).read()
    # leave: a worker leaves and its state is gone
    assert "left the swarm" in swarm.run(w1, "leave").stdout.lower()
    eventually(lambda: not os.path.exists(os.path.join(w1.state_dir, "node.json")), 5, "w1 state cleared")
    eventually(lambda: swarm.ls(managers[0])["w1"]["status"] == "down", 10, "w1 down after leaving")


def test_manager_leave_that_would_lose_quorum_is_refused(swarm):
    m1 = swarm.init("m1")
    m2 = swarm.join("m2", m1, "manager")
    eventually(lambda: swarm.ls(m1)["m2"]["manager_status"] == "reachable", 10, "m2 reachable")
    swarm.kill(m2)
    proc = swarm.run(m1, "leave", check=False)
    assert proc.returncode == 1 and "quorum" in proc.stderr
    proc = swarm.run(m1, "node", "demote", "m2", check=False)
    assert proc.returncode == 1 and "quorum" in proc.stderr


def test_join_token_rotation_invalidates_the_old_token(swarm):
    m1 = swarm.init("m1")
    old = swarm.token(m1, "worker")
    out = swarm.run(m1, "join-token", "--rotate", "worker").stdout
    assert "Successfully rotated worker join token." in out
    new = swarm.token(m1, "worker")
    assert new != old and new.split("-")[2] == old.split("-")[2]  # same CA digest, new secret
    w1 = swarm.node("w1")
    proc = swarm.run(w1, "join", "--token", old, "--advertise-addr", w1.addr, m1.addr, check=False)
    assert proc.returncode == 1 and "token" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(w1.state_dir) or os.listdir(w1.state_dir) == []  # nothing half-created
    swarm.run(w1, "join", "--token", new, "--advertise-addr", w1.addr, "--hostname", "w1", m1.addr)
    eventually(lambda: swarm.ls(m1)["w1"]["status"] == "ready", 10, "w1 ready")


@pytest.mark.parametrize("case", ["malformed", "wrong-digest", "unreachable"])
def test_join_failures_are_one_sentence_and_leave_nothing_behind(swarm, case):
    m1 = swarm.init("m1")
    token = swarm.token(m1, "worker")
    target = m1.addr
    if case == "malformed":
        token = "SWMTKN-1-nope"
    elif case == "wrong-digest":
        parts = token.split("-")
        parts[2] = "0" * 50
        token = "-".join(parts)
    else:
        target = f"127.0.{swarm.octet}.250:2377"
    w = swarm.node("w")
    proc = swarm.run(w, "join", "--token", token, "--advertise-addr", w.addr, target, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("Error: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(w.state_dir) or os.listdir(w.state_dir) == []


def test_init_twice_is_a_clear_error(swarm):
    m1 = swarm.init("m1")
    proc = swarm.run(m1, "init", "--advertise-addr", m1.addr, check=False)
    assert proc.returncode == 1 and "already part of a swarm" in proc.stderr


def test_certificate_is_renewed_before_it_expires(swarm):
    m1 = swarm.init("m1", "--cert-expiry", "12s")
    w1 = swarm.join("w1", m1, "worker")
    first = swarm.json(w1, "info")["cert_expiry"]
    eventually(lambda: swarm.json(w1, "info")["cert_expiry"] != first, 20, "the worker's certificate renewal")
    eventually(lambda: swarm.json(m1, "info")["cert_expiry"] != swarm.json(m1, "info")["cert_expiry"] or
               swarm.ls(m1)["w1"]["status"] == "ready", 5, "w1 still ready")
    time.sleep(13)  # past the first certificate's expiry: still a working member
    assert swarm.ls(m1)["w1"]["status"] == "ready"
    assert swarm.ls(w1)["m1"]["status"] == "ready"


def _tls_probe(addr: str, context: ssl.SSLContext, payload: bytes) -> bytes:
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw) as s:
            s.sendall(payload)
            s.settimeout(5)
            try:
                return s.recv(65536)
            except (ssl.SSLError, ConnectionResetError, socket.timeout):
                return b""


def test_bad_bytes_and_anonymous_calls_on_the_node_port_are_refused(swarm):
    from raft import framing

    m1 = swarm.init("m1")
    anon = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anon.check_hostname = False
    anon.verify_mode = ssl.CERT_NONE
    # random bytes inside TLS, an oversized frame, and a manager-only call without a certificate
    _tls_probe(m1.addr, anon, os.urandom(2048))
    _tls_probe(m1.addr, anon, framing.HEADER.pack(1 << 30))
    answer = _tls_probe(m1.addr, anon, framing.encode_frame(
        {"id": 1, "method": "control.node.update", "params": {"ref": "m1", "availability": "drain"}}))
    reply = framing.FrameDecoder().feed(answer)[0]
    assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
    # plain TCP garbage
    host, port = m1.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(os.urandom(512))
    assert swarm.ls(m1)["m1"]["availability"] == "active"  # still serving, nothing changed


def _client_context(cert_dir: str) -> ssl.SSLContext:
    from swarm.ca import pki

    def read(name):
        with open(os.path.join(cert_dir, name), "rb") as f:
            return f.read()

    ctx = pki.client_ssl_context(read("node.pem"), read("node-key.pem"), read("ca.pem"))
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_worker_certificate_and_foreign_ca_are_refused_for_manager_only_methods(swarm, tmp_path):
    import datetime

    from raft import framing
    from swarm.ca import pki

    m1 = swarm.init("m1")
    w1 = swarm.join("w1", m1, "worker")
    request = framing.encode_frame({"id": 7, "method": "control.node.update",
                                    "params": {"ref": "w1", "availability": "drain"}})
    # a worker's own certificate: authenticated, but not allowed to write
    reply = framing.FrameDecoder().feed(_tls_probe(m1.addr, _client_context(os.path.join(w1.state_dir, "certs")),
                                                   request))[0]
    assert reply["error"]["code"] == "forbidden" and "worker" in reply["error"]["message"]
    # a manager certificate of another cluster's CA: refused at the handshake
    other = pki.ClusterCA.create(pki.new_id(), datetime.datetime.now(datetime.timezone.utc))
    key = pki.new_node_key()
    cert = other.issue(pki.make_csr(key, "intruder"), "intruder", "manager",
                       datetime.datetime.now(datetime.timezone.utc))
    ctx = pki.client_ssl_context(cert, pki.key_to_pem(key), other.cert_pem())
    ctx.verify_mode = ssl.CERT_NONE
    assert _tls_probe(m1.addr, ctx, request) == b""
    # truncated frames on the node port and on the local socket
    anon = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anon.check_hostname = False
    anon.verify_mode = ssl.CERT_NONE
    _tls_probe(m1.addr, anon, request[:9])
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(m1.state_dir, "swarm.sock"))
        s.sendall(request[:9])
    log = open(os.path.join(m1.state_dir, "daemon.log")).read()
    assert "refused" in log
    assert swarm.ls(m1)["w1"]["availability"] == "active"  # still serving; nothing changed


def test_force_new_cluster_recovers_a_lone_surviving_manager(swarm):
    m1 = swarm.init("m1")
    m2 = swarm.join("m2", m1, "manager")
    m3 = swarm.join("m3", m1, "manager")
    swarm.run(m1, "node", "update", "--label-add", "keep=me", "m1")
    eventually(lambda: swarm.json(m3, "node", "inspect", "m1")[0]["labels"] == {"keep": "me"}, 10, "replication")
    for m in (m2, m3, m1):
        swarm.kill(m)  # the majority is gone for good
    out = swarm.run(m1, "init", "--force-new-cluster").stdout
    assert "Swarm initialized" in out
    assert swarm.json(m1, "node", "inspect", "m1")[0]["labels"] == {"keep": "me"}
    info = swarm.json(m1, "info")
    assert len(info["raft"]["members"]) == 1 and info["leader"] == info["node_id"]
    swarm.run(m1, "node", "update", "--label-add", "after=recovery", "m1")

"""Hostile peers against a member's Raft port (real TLS, real processes):
every one is refused, nothing they send is executed, the group keeps serving."""
import datetime
import os
import pickle
import socket
import ssl
import struct
import zlib

import msgpack
import pytest

from raft import framing
from swarm.lab.raftharness import put
from swarm.ca import pki


class Exploit:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def client_context(cert_dir=None, ca_pem=None):
    if cert_dir is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    with open(os.path.join(cert_dir, "node.pem"), "rb") as f:
        cert = f.read()
    with open(os.path.join(cert_dir, "node-key.pem"), "rb") as f:
        key = f.read()
    ctx = pki.client_ssl_context(cert, key, ca_pem)
    ctx.verify_mode = ssl.CERT_NONE  # the attacker does not care who answers
    return ctx


def connect(member, ctx):
    host, port = member.address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    if ctx is None:
        return raw
    return ctx.wrap_socket(raw)


def closed_by_peer(sock, timeout=5.0):
    """True once the server has dropped the connection."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            # pings or handshake leftovers: keep reading until it closes
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


@pytest.fixture
def group(make_cluster, tmp_path):
    cluster = make_cluster(3)
    leader = cluster.leader()
    marker = str(tmp_path / "pwned")
    outsider_dir = str(tmp_path / "outsider")
    worker_dir = str(tmp_path / "worker")
    cluster.issue(pki.new_id(), outsider_dir, role="manager")
    cluster.issue(pki.new_id(), worker_dir, role="worker")
    other_ca = pki.ClusterCA.create(pki.new_id(), datetime.datetime.now(datetime.timezone.utc))
    foreign_dir = str(tmp_path / "foreign")
    cluster.issue(pki.new_id(), foreign_dir, role="manager", ca=other_ca)
    yield cluster, leader, marker, {"outsider": outsider_dir, "worker": worker_dir, "foreign": foreign_dir}
    assert not os.path.exists(marker), "a payload was unpickled"


def still_serving(cluster, leader, key):
    client = cluster.client(leader)
    try:
        assert client.call("commit", ops=[put("k", key, b"ok")])["ok"]
    finally:
        client.close()
    assert all(m.proc.poll() is None for m in cluster.members)


def security_events(cluster, member):
    return cluster.status(member)["security_events"]


def test_pysyncobj_pickle_frame_without_tls_is_refused(group):
    cluster, leader, marker, _ = group
    before = security_events(cluster, leader)
    payload = zlib.compress(pickle.dumps(Exploit(marker)), 3)
    sock = connect(leader, None)
    sock.sendall(struct.pack("i", len(payload)) + payload)
    assert closed_by_peer(sock)
    sock.close()
    assert security_events(cluster, leader) > before
    still_serving(cluster, leader, "after-pickle")


@pytest.mark.parametrize("who", ["none", "foreign", "worker"])
def test_peer_without_an_acceptable_certificate_is_refused(group, who):
    cluster, leader, marker, dirs = group
    before = security_events(cluster, leader)
    ctx = client_context(None if who == "none" else dirs[who], cluster.ca.cert_pem())
    try:
        sock = connect(leader, ctx)
        sock.sendall(framing.encode_frame(next(m for m in cluster.members if m is not leader).name))
        assert closed_by_peer(sock)
        sock.close()
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        pass  # refused during the handshake itself
    assert security_events(cluster, leader) > before
    still_serving(cluster, leader, f"after-{who}")


def named_connection(cluster, target, cert_dir, name):
    sock = connect(target, client_context(cert_dir, cluster.ca.cert_pem()))
    sock.sendall(framing.encode_frame(name))
    return sock


def test_manager_certificate_claiming_another_members_name_is_refused(group):
    cluster, leader, marker, dirs = group
    a, b = [m for m in cluster.members if m is not leader]
    for cert_dir, name in ((dirs["outsider"], b.name), (a.cert_dir, b.name)):
        before = security_events(cluster, leader)
        sock = named_connection(cluster, leader, cert_dir, name)
        assert closed_by_peer(sock)
        sock.close()
        assert security_events(cluster, leader) > before
    still_serving(cluster, leader, "after-impersonation")


@pytest.mark.parametrize("first", ["readonly", ["status"], ["add", "x@127.0.0.1:1"], ["transfer", None]])
def test_readonly_peers_and_utility_commands_are_refused(group, first):
    cluster, leader, marker, _ = group
    a = next(m for m in cluster.members if m is not leader)
    before = security_events(cluster, leader)
    sock = named_connection(cluster, leader, a.cert_dir, first)
    assert closed_by_peer(sock)
    sock.close()
    assert security_events(cluster, leader) > before
    assert len(cluster.status(leader)["peers"]) == 2
    still_serving(cluster, leader, f"after-{first}")


@pytest.mark.parametrize("attack", ["oversized", "random", "truncated-msgpack", "version-entry", "ext-type"])
def test_bad_frames_from_an_authenticated_member_close_only_that_connection(group, attack):
    cluster, leader, marker, _ = group
    a = next(m for m in cluster.members if m is not leader)
    before = security_events(cluster, leader)
    sock = named_connection(cluster, leader, a.cert_dir, a.name)
    if attack == "oversized":
        sock.sendall(struct.pack(">I", framing.DEFAULT_MAX_FRAME + 1))
    elif attack == "random":
        sock.sendall(os.urandom(4096))
    elif attack == "truncated-msgpack":
        sock.sendall(struct.pack(">I", 3) + b"\x93\x01\xc1")
    elif attack == "version-entry":
        # VERSION entries are unpickled by pysyncobj: never accepted.
        evil = bytes([3]) + pickle.dumps(Exploit(marker))
        sock.sendall(framing.encode_frame({"type": "append_entries", "term": 10**6, "commit_index": 0,
                                           "prevLogIdx": 1, "prevLogTerm": 0, "entries": [[evil, 2, 10**6]]}))
    elif attack == "ext-type":
        body = msgpack.packb({"type": msgpack.ExtType(5, b"abcd")})
        sock.sendall(framing.HEADER.pack(len(body)) + body)
    assert closed_by_peer(sock)
    sock.close()
    assert security_events(cluster, leader) > before
    still_serving(cluster, leader, f"after-{attack}")
    assert max(cluster.status(m)["term"] for m in cluster.members) < 10**6


def test_forwarded_command_holding_a_pickle_is_committed_as_bytes_and_never_unpickled(group):
    """A member may forward commands to the leader; even a committed entry whose
    payload is a pickle is decoded as our msgpack transaction format, fails as
    such, and the group keeps committing."""
    cluster, leader, marker, _ = group
    a = next(m for m in cluster.members if m is not leader)
    sock = named_connection(cluster, leader, a.cert_dir, a.name)
    evil = bytes([0]) + pickle.dumps(Exploit(marker))
    sock.sendall(framing.encode_frame({"type": "apply_command", "command": evil, "request_id": 1}))
    decoder = framing.FrameDecoder()
    sock.settimeout(5)
    answer = None
    while answer is None:
        for message in decoder.feed(sock.recv(65536)):
            if isinstance(message, dict) and message.get("type") == "apply_command_response":
                answer = message
    sock.close()
    assert "log_idx" in answer  # appended to the Raft log as plain bytes
    still_serving(cluster, leader, "after-forwarded-pickle")
    status = cluster.status(leader)
    assert status["applied_index"] >= answer["log_idx"]

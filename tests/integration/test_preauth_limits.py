"""What a peer without a certificate may cost a real daemon: bounded.

The node API accepts TLS without a client certificate (a joining node has
none). These tests attack a real daemon process (swarm.lab.localcluster) over
loopback, from many 127.x source addresses, and check that it keeps serving
its members and the CLI: half-frames are closed at the first-frame deadline,
large frames at their header, and a flood under a low descriptor limit never
takes the descriptors the Raft journal needs.
"""
from __future__ import annotations

import json
import os
import random
import socket
import ssl
import struct
import subprocess
import time

import trio

from swarm.ca import pki
from swarm.lab.localcluster import Node, eventually
from swarm.rpc.client import RPCClient
from swarm.rpc.limits import UNAUTHENTICATED


def host_port(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def raft_port(node: Node) -> tuple[str, int]:
    with open(os.path.join(node.state_dir, "node.json")) as f:
        return host_port(json.load(f)["raft_addr"])


def sources(count: int) -> list[str]:
    """`count` loopback source addresses of this test's own (random) block."""
    block = random.randint(100, 250)
    return [f"127.{block}.{i // 200}.{i % 200 + 1}" for i in range(count)]


def anonymous_context(node: Node) -> ssl.SSLContext:
    with open(os.path.join(node.state_dir, "certs", "ca.pem"), "rb") as f:
        return pki.pinning_client_context(f.read())


def member_context(node: Node) -> ssl.SSLContext:
    """The node's own certificate: a member's call, the one that must stay fast."""
    def read(name: str) -> bytes:
        with open(os.path.join(node.state_dir, "certs", name), "rb") as f:
            return f.read()

    return pki.client_ssl_context(read("node.pem"), read("node-key.pem"), read("ca.pem"))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def set_nofile(pid: int, soft: int) -> None:
    """Lower (or restore) the daemon's soft descriptor limit while it runs."""
    subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={soft}:"], check=True)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- (a) half-frames ----------------------------------------------------------------------


def test_half_frames_without_a_certificate_are_closed_at_the_first_frame_deadline(swarm):
    m1 = swarm.init("m1")
    host, port = host_port(m1.addr)
    ctx = anonymous_context(m1)
    held: list[ssl.SSLSocket] = []
    try:
        for source in sources(20):  # 20 addresses x 10: under the per-address cap
            for _ in range(10):
                raw = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
                tls = ctx.wrap_socket(raw)
                tls.sendall(struct.pack(">I", 1000) + b"\x81\xa1a")  # announced 1000 bytes, sent 4
                held.append(tls)
        started = time.monotonic()
        assert sorted(swarm.ls(m1)) == ["m1"]  # served while the 200 are held
        for tls in held:
            tls.settimeout(UNAUTHENTICATED.first_frame_timeout + 5)
            try:
                assert tls.recv(1) == b""
            except (ConnectionResetError, ssl.SSLError):
                pass
        assert time.monotonic() - started < UNAUTHENTICATED.first_frame_timeout + 3
        assert alive(m1.pid)
        assert sorted(swarm.ls(m1)) == ["m1"]
    finally:
        for tls in held:
            tls.close()


# -- (b) large frames ----------------------------------------------------------------------


async def _large_frames_while_probing(m1: Node) -> tuple[float, list[float]]:
    """Attack with 4 MiB headers and cap-sized frames of empty arrays; return the attack's
    worst close delay and the latencies of a member's calls made meanwhile."""
    host, port = host_port(m1.addr)
    anon = anonymous_context(m1)
    latencies: list[float] = []
    close_delays: list[float] = []

    async def attacker(source: str) -> None:
        for round_ in range(6):
            tcp = await trio.open_tcp_stream(host, port, local_address=source)
            stream = trio.SSLStream(tcp, anon, server_hostname=None, https_compatible=True)
            await stream.do_handshake()
            if round_ % 2 == 0:
                # a 4 MiB frame of empty arrays: 300 MB and 2 s of decoding before
                payload = b"\xdd" + struct.pack(">I", 4 * 1024 * 1024 - 5) + b"\x90" * (4 * 1024 * 1024 - 5)
            else:
                # the largest frame allowed, as expensive as it can be made
                size = UNAUTHENTICATED.max_frame
                payload = b"\xdd" + struct.pack(">I", size - 5) + b"\x90" * (size - 5)
            sent = trio.current_time()
            try:
                await stream.send_all(struct.pack(">I", len(payload)) + payload)
                while await stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            close_delays.append(trio.current_time() - sent)
            await trio.aclose_forcefully(stream)

    async with await RPCClient.connect_tls(host, port, member_context(m1)) as member:
        async with trio.open_nursery() as nursery:
            for source in sources(8):
                nursery.start_soon(attacker, source)
            for _ in range(40):
                started = trio.current_time()
                await member.call("control.node.ls", {}, timeout=5)
                latencies.append(trio.current_time() - started)
                await trio.sleep(0.05)
    return max(close_delays), latencies


def test_large_frames_without_a_certificate_are_refused_and_do_not_stall_the_daemon(swarm):
    m1 = swarm.init("m1")
    rss_before = peak_rss_kib(m1.pid)
    worst_close, latencies = trio.run(_large_frames_while_probing, m1)
    assert worst_close < 2.0
    assert max(latencies) < 0.5, latencies
    assert peak_rss_kib(m1.pid) - rss_before < 64 * 1024  # KiB; a 4 MiB frame used to add 300 MB
    assert alive(m1.pid) and sorted(swarm.ls(m1)) == ["m1"]


# -- (c) descriptor exhaustion ---------------------------------------------------------------


def flood(targets: list[tuple[str, int]], count: int) -> list[socket.socket]:
    """Open and hold `count` bare TCP connections to each target, from many addresses."""
    held = []
    for host, port in targets:
        for source in sources(count):
            sock = socket.socket()
            sock.settimeout(2)
            try:
                sock.bind((source, 0))
                sock.connect((host, port))
            except OSError:
                sock.close()  # the backlog is full: the daemon is not accepting right now
                continue
            held.append(sock)
    return held


def test_a_connection_flood_at_a_low_descriptor_limit_does_not_end_the_daemon(swarm):
    m1 = swarm.init("m1")
    pid = m1.pid
    set_nofile(pid, 256)
    held = flood([host_port(m1.addr), raft_port(m1)], 600)
    try:
        time.sleep(2)
        assert alive(pid)
        assert open_fds(pid) < 256 - 32  # the journal and the CLI socket still have room
        assert sorted(swarm.ls(m1)) == ["m1"]  # served during the flood
    finally:
        for sock in held:
            sock.close()
    assert alive(pid)
    eventually(lambda: open_fds(pid) < 64, 15, "the flood's connections to be closed")
    host, port = host_port(m1.addr)

    async def member_call() -> list:
        async with await RPCClient.connect_tls(host, port, member_context(m1)) as member:
            return await member.call("control.node.ls", {}, timeout=5)

    assert len(trio.run(member_call)) == 1
    assert sorted(swarm.ls(m1)) == ["m1"]
    set_nofile(pid, 1024)


def test_worker_out_of_descriptors_misses_heartbeats_and_recovers(swarm):
    m1 = swarm.init("m1")
    w1 = swarm.join("w1", m1, "worker")
    eventually(lambda: swarm.ls(m1)["w1"]["status"] == "ready", 15, "w1 to be ready")
    pid = w1.pid
    set_nofile(pid, 8)  # below what it holds: every open() fails with EMFILE
    time.sleep(3)
    set_nofile(pid, 1024)
    assert alive(pid)
    with open(os.path.join(w1.state_dir, "daemon.log")) as f:
        assert "heartbeat not sent" in f.read()
    eventually(lambda: swarm.ls(m1)["w1"]["status"] == "ready", 20, "w1 to be ready again")
    assert sorted(swarm.ls(w1)) == ["m1", "w1"]

"""The embedded DNS in real network namespaces: sockets at 127.0.0.11:53 inside two
namespaces this test creates, served by one trio loop; clients run inside them.

Traffic stays on loopback: the namespaces have only `lo`, and the upstreams
the server forwards to (from the test's own namespace) are sockets on 127.0.0.1.
"""
from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import threading
import uuid

import dns.message
import dns.query
import dns.rcode
import pytest
import trio

from overlay import dns as edns

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                 reason="needs root and iproute2 to create network namespaces"),
              pytest.mark.xdist_group("netns")]   # network namespaces: one worker (tests/conftest.py)

RECORDS = edns.Records({
    "front": edns.NetworkRecords(name="front", services=(
        edns.ServiceRecord("web", "vip", vip="10.0.1.2", task_ips=("10.0.1.3", "10.0.1.4")),)),
    "back": edns.NetworkRecords(name="back", services=(
        edns.ServiceRecord("db", "dnsrr", task_ips=("10.0.2.3", "10.0.2.4")),)),
})


def namespaces_of_all_threads():
    return {os.readlink(p) for p in glob.glob(f"/proc/{os.getpid()}/task/*/ns/net")}


def in_netns(path, fn, *args):
    """Run fn(*args) in a dedicated thread inside the namespace (the client's side)."""
    out = []

    def work():
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(path, os.O_RDONLY)
        try:
            edns.setns(target)
            try:
                out.append(("ok", fn(*args)))
            except BaseException as e:
                out.append(("err", e))
            finally:
                edns.setns(own)
        finally:
            os.close(own)
            os.close(target)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    kind, value = out[0]
    if kind == "err":
        raise value
    return value


@pytest.fixture
def namespaces():
    made = []
    try:
        for _ in range(2):
            name = f"swarm-dns-{uuid.uuid4().hex[:8]}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
        yield made
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def silent_upstream():
    """A UDP socket on loopback that takes queries and never answers (and nothing on TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()


def query(name, rdtype="A", tcp=False):
    q = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return q, send(q, edns.DNS_ADDRESS, timeout=3)


async def ask_in(ns, name, rdtype="A", tcp=False):
    return await trio.to_thread.run_sync(in_netns, f"/run/netns/{ns}", query, name, rdtype, tcp)


@pytest.mark.trio
async def test_one_loop_serves_two_namespaces(namespaces, silent_upstream):
    a, b = namespaces
    before = namespaces_of_all_threads()
    own = os.readlink("/proc/thread-self/ns/net")
    socks = {}
    for ns in namespaces:
        socks[ns] = await trio.to_thread.run_sync(edns.open_sockets_in_netns, ns)
    # the daemon's namespace is unchanged, in every thread
    assert os.readlink("/proc/thread-self/ns/net") == own
    assert namespaces_of_all_threads() == before == {own}
    inode = lambda s: os.readlink(f"/proc/self/fd/{s.fileno()}")  # noqa: E731
    assert socks[a][0].getsockname() == (edns.DNS_ADDRESS, 53)
    assert inode(socks[a][0]) != inode(socks[b][0])

    views = {a: RECORDS.view(["front"]), b: RECORDS.view(["back"])}
    async with trio.open_nursery() as nursery:
        for ns in namespaces:
            await nursery.start(lambda task_status, ns=ns: edns.serve(
                list(socks[ns]), lambda: views[ns], [silent_upstream], rng=random.Random(1),
                task_status=task_status))

        # busybox's resolver, run inside the task namespace
        result = await trio.run_process(["ip", "netns", "exec", a, "busybox", "nslookup", "web", "127.0.0.11"],
                                        capture_stdout=True, capture_stderr=True, check=False)
        out = result.stdout.decode()
        assert "10.0.1.2" in out, (out, result.stderr)

        # dnspython over UDP and TCP from inside each namespace; each sees only its networks
        for tcp in (False, True):
            q, r = await ask_in(a, "web", tcp=tcp)
            assert [rd.address for rs in r.answer for rd in rs] == ["10.0.1.2"]
            q, r = await ask_in(b, "db", tcp=tcp)
            assert sorted(rd.address for rs in r.answer for rd in rs) == ["10.0.2.3", "10.0.2.4"]
            q, r = await ask_in(b, "tasks.DB.", "AAAA", tcp=tcp)
            assert r.rcode() == dns.rcode.NOERROR and r.answer == []

        # a name that is not ours, upstream silent: SERVFAIL, well within 2 s, over UDP and TCP
        for ns, name, tcp in ((a, "db", False), (b, "web", True), (a, "nowhere.example", False)):
            start = trio.current_time()
            q, r = await ask_in(ns, name, tcp=tcp)
            assert r.rcode() == dns.rcode.SERVFAIL and q.is_response(r)
            assert trio.current_time() - start < 2.0
        assert namespaces_of_all_threads() == {own}
        nursery.cancel_scope.cancel()
    assert all(s.fileno() == -1 for pair in socks.values() for s in pair)   # serve() closed them


def test_opening_in_a_missing_namespace_fails_cleanly():
    own = os.readlink("/proc/thread-self/ns/net")
    with pytest.raises(edns.DatapathError, match="no-such-ns"):
        edns.open_sockets_in_netns("no-such-ns-xyz")
    assert namespaces_of_all_threads() == {own}


def test_loopback_is_brought_up_and_a_taken_port_is_reported(namespaces):
    a = namespaces[0]
    udp, tcp = edns.open_sockets_in_netns(a)
    try:
        link = subprocess.run(["ip", "-n", a, "-o", "link", "show", "lo"], capture_output=True, text=True).stdout
        assert "UP" in link
        with pytest.raises(edns.DatapathError, match="in use"):
            edns.open_sockets_in_netns(f"/run/netns/{a}")
    finally:
        udp.close()
        tcp.close()

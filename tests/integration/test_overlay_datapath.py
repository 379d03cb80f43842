"""The overlay datapath for real: fake hosts as namespaces on an underlay bridge.

Every address used here exists only inside namespaces these tests create;
nothing touches the machine's own routes, rules or sysctls. Each test gets a
unique name prefix, and its fixture removes everything (servers, sandboxes,
networks, hosts) in a `finally`, then checks that no namespace with the
prefix and no new link in the test runner's namespace is left behind.
"""

from __future__ import annotations

import collections
import errno
import secrets
import socket
import subprocess
import time
from typing import Any, Callable, Iterator

import pytest

from overlay import (
    Attachment,
    Backend,
    IngressSandbox,
    NetworkDatapath,
    Peer,
    PublishedPort,
    TaskSandbox,
    VipService,
    apply_ruleset,
    check_nftables,
    vip_ruleset,
)
from overlay import lb
from overlay import netns as ns
from overlay.sandbox import bridge_port_name
from overlay.testing import NameServer, Underlay, request

pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)

SUBNET = "10.10.0.0/24"
with open("/proc/sys/net/ipv4/ip_forward") as _f:
    ROOT_IP_FORWARD = _f.read().strip()  # read at import; the tests must not change it
VIP_RANGE = "10.10.200.0/24"


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip())


class Lab:
    """What one test built; `cleanup()` undoes it in reverse order."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.underlay = Underlay(prefix)
        self._undo: list[Callable[[], Any]] = [self.underlay.remove]

    def host(self, name: str, last_octet: int) -> tuple[str, str]:
        return self.underlay.add_host(name, last_octet)

    def network(self, host: tuple[str, str], name: str, vni: int, subnet: str = SUBNET) -> NetworkDatapath:
        net = NetworkDatapath(f"{host[0]}-{name}", vni, subnet, host[1], host_netns=host[0])
        self._undo.append(net.remove)
        net.create()
        return net

    def task(self, name: str, *attachments: Attachment) -> TaskSandbox:
        box = TaskSandbox(f"{self.prefix}{name}", attachments)
        self._undo.append(box.remove)
        box.create()
        return box

    def ingress(self, host: tuple[str, str], net: NetworkDatapath, address: str) -> IngressSandbox:
        box = IngressSandbox(f"{host[0]}-igsb", Attachment.on(net, address), host_netns=host[0])
        self._undo.append(box.remove)
        box.create()
        return box

    def server(self, netns: str, port: int, name: str, payload: bytes = b"") -> NameServer:
        srv = NameServer(netns, "0.0.0.0", port, name, payload)
        self._undo.append(srv.close)
        return srv

    def cleanup(self) -> list[BaseException]:
        errors: list[BaseException] = []
        while self._undo:
            try:
                self._undo.pop()()
            except BaseException as exc:  # keep cleaning; report at the end
                errors.append(exc)
        return errors


@pytest.fixture
def lab() -> Iterator[Lab]:
    prefix = f"ovt{secrets.token_hex(3)}"
    links_before = root_links()
    made: Lab | None = None
    try:
        made = Lab(prefix)
        yield made
    finally:
        errors = made.cleanup() if made is not None else []
        leftover = [n for n in ns.list_ns() if n.startswith(prefix)]
        for name in leftover:
            ns.remove(name)
        assert not errors, errors
        assert leftover == []
        assert root_links() == links_before


def ping(netns: str, ip: str, size: int = 56) -> bool:
    cmd = ["busybox", "ping", "-c", "2", "-W", "2", "-s", str(size), ip]
    return ns.exec_in(netns, cmd, check=False, timeout=15).returncode == 0


def name_at(netns: str, ip: str, port: int, timeout: float = 5.0) -> str:
    return request(netns, ip, port, timeout).split(b"\n", 1)[0].decode()


def full_mesh(nets: list[NetworkDatapath], endpoints: list[tuple[str, NetworkDatapath]]) -> None:
    """Program every network with every endpoint (set_peers skips the local ones)."""
    peers = [Peer.at(ip, net.vtep) for ip, net in endpoints]
    for net in nets:
        net.set_peers(peers)


def test_tasks_on_three_hosts_talk_over_vxlan(lab: Lab) -> None:
    hosts = [lab.host("a", 1), lab.host("b", 2), lab.host("c", 3)]
    nets = [lab.network(h, "ov", 4096) for h in hosts]
    ips = ["10.10.0.2", "10.10.0.3", "10.10.0.4"]
    tasks = [lab.task(f"t{i}", Attachment.on(net, ip)) for i, (net, ip) in enumerate(zip(nets, ips))]
    full_mesh(nets, list(zip(ips, nets)))
    for i, box in enumerate(tasks):
        lab.server(box.netns, 8080, f"t{i}", payload=b"z" * 1_000_000 if i == 1 else b"")

    assert ping(tasks[0].netns, ips[1])
    assert ping(tasks[2].netns, ips[0], size=1422)  # 1422 + 28 = 1450: the full overlay MTU
    for i, src in enumerate(tasks):
        for j, ip in enumerate(ips):
            assert name_at(src.netns, ip, 8080) == f"t{j}"
    # A megabyte over VXLAN: would stall if any hop kept a 1500-byte MTU.
    assert len(request(tasks[0].netns, ips[1], 8080)) == len(b"t1\n") + 1_000_000
    # No ARP crossed the underlay: vxlan0 answered from the permanent neighbours.
    assert nets[0].set_peers([Peer.at(ip, net.vtep) for ip, net in zip(ips, nets)]).empty


def test_two_networks_with_the_same_subnet_on_one_host(lab: Lab) -> None:
    a, b = lab.host("a", 1), lab.host("b", 2)
    red_a, red_b = lab.network(a, "red", 4096), lab.network(b, "red", 4096)
    blue_a, blue_b = lab.network(a, "blue", 4097), lab.network(b, "blue", 4097)
    red1 = lab.task("red1", Attachment.on(red_a, "10.10.0.2"))
    blue1 = lab.task("blue1", Attachment.on(blue_a, "10.10.0.2"))
    red2 = lab.task("red2", Attachment.on(red_b, "10.10.0.3"))
    blue2 = lab.task("blue2", Attachment.on(blue_b, "10.10.0.3"))
    full_mesh([red_a, red_b], [("10.10.0.2", red_a), ("10.10.0.3", red_b)])
    full_mesh([blue_a, blue_b], [("10.10.0.2", blue_a), ("10.10.0.3", blue_b)])
    for box in (red1, blue1, red2, blue2):
        lab.server(box.netns, 8080, box.netns[len(lab.prefix):])

    assert name_at(red1.netns, "10.10.0.3", 8080) == "red2"
    assert name_at(blue1.netns, "10.10.0.3", 8080) == "blue2"
    assert name_at(red2.netns, "10.10.0.2", 8080) == "red1"
    assert name_at(blue2.netns, "10.10.0.2", 8080) == "blue1"


def test_vip_spreads_connections_over_backends(lab: Lab) -> None:
    hosts = [lab.host("a", 1), lab.host("b", 2), lab.host("c", 3)]
    nets = [lab.network(h, "ov", 4096) for h in hosts]
    client = lab.task("cli", Attachment.on(nets[0], "10.10.0.2", vip_range=VIP_RANGE))
    backends = {"10.10.0.3": nets[1], "10.10.0.4": nets[2], "10.10.0.5": nets[0]}
    servers = {}
    for i, (ip, net) in enumerate(backends.items()):
        box = lab.task(f"be{i}", Attachment.on(net, ip))
        servers[ip] = lab.server(box.netns, 8080, f"be{i}")
    full_mesh(nets, [("10.10.0.2", nets[0]), *backends.items()])
    vip = "10.10.200.7"
    service = VipService("web", vip, tuple(backends))
    apply_ruleset(client.netns, vip_ruleset([service]))
    assert "numgen random mod 3" in lb.list_table(client.netns, lb.VIP_TABLE)

    # Any port of the VIP reaches the same port of a task: nothing was declared.
    counts = collections.Counter(name_at(client.netns, vip, 8080) for _ in range(200))
    assert set(counts) == {"be0", "be1", "be2"}
    assert min(counts.values()) >= 30, counts  # ~66 each; 30 is five standard deviations below
    for srv in servers.values():
        assert set(srv.peers) == {"10.10.0.2"}  # no SNAT on the overlay: backends see the client

    # An atomic swap to one backend: every new connection lands there.
    only = VipService("web", vip, ("10.10.0.4",))
    apply_ruleset(client.netns, vip_ruleset([only]))
    assert {name_at(client.netns, vip, 8080) for _ in range(20)} == {"be1"}

    # No backend at all: refused at once, not an ARP timeout on the VIP.
    apply_ruleset(client.netns, vip_ruleset([VipService("web", vip)]))
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        request(client.netns, vip, 8080, timeout=5)
    assert time.monotonic() - started < 2


def test_a_peer_removed_from_the_table_is_unreachable(lab: Lab) -> None:
    a, b = lab.host("a", 1), lab.host("b", 2)
    na, nb = lab.network(a, "ov", 4096), lab.network(b, "ov", 4096)
    ta = lab.task("ta", Attachment.on(na, "10.10.0.2"))
    tb = lab.task("tb", Attachment.on(nb, "10.10.0.3"))
    tc = lab.task("tc", Attachment.on(nb, "10.10.0.4"))
    for box in (tb, tc):
        lab.server(box.netns, 8080, box.netns[len(lab.prefix):])
    endpoints = [("10.10.0.2", na), ("10.10.0.3", nb), ("10.10.0.4", nb)]
    full_mesh([na, nb], endpoints)
    assert name_at(ta.netns, "10.10.0.3", 8080) == "tb"  # caches are warm now

    plan = na.set_peers([Peer.at("10.10.0.4", b[1])])
    assert plan.fdb_del == (("02:42:0a:0a:00:03", b[1]),)
    assert plan.neigh_del == (("10.10.0.3", "02:42:0a:0a:00:03"),)
    with pytest.raises(OSError) as failure:
        request(ta.netns, "10.10.0.3", 8080, timeout=2)
    assert isinstance(failure.value, (TimeoutError, socket.timeout)) or failure.value.errno in (
        errno.EHOSTUNREACH,
        errno.ETIMEDOUT,
    )
    assert name_at(ta.netns, "10.10.0.4", 8080) == "tc"  # the rest of the table still works

    na.set_peers([Peer.at(ip, net.vtep) for ip, net in endpoints])
    assert name_at(ta.netns, "10.10.0.3", 8080) == "tb"


def test_ingress_publishes_a_port_on_every_host(lab: Lab) -> None:
    a, b = lab.host("a", 1), lab.host("b", 2)
    client_ns, _ = lab.host("client", 9)
    ing_a, ing_b = lab.network(a, "ingress", 4100, "10.255.0.0/16"), lab.network(b, "ingress", 4100, "10.255.0.0/16")
    sbx_a, sbx_b = lab.ingress(a, ing_a, "10.255.0.2"), lab.ingress(b, ing_b, "10.255.0.3")
    web = lab.task("web", Attachment.on(ing_b, "10.255.0.5"))
    srv = lab.server(web.netns, 80, "web-b", payload=b"w" * 1_000_000)
    full_mesh([ing_a, ing_b], [("10.255.0.2", ing_a), ("10.255.0.3", ing_b), ("10.255.0.5", ing_b)])
    published = [PublishedPort(8080, "tcp", (Backend("10.255.0.5", 80),))]
    for sbx in (sbx_a, sbx_b):
        sbx.set_published(published)

    # Forwarding was switched on inside the lab host and the sandbox only.
    for where in (a[0], sbx_a.netns):
        assert ns.exec_in(where, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == ROOT_IP_FORWARD

    # A client on the underlay reaches the task (on B) through A's published port.
    assert name_at(client_ns, a[1], 8080) == "web-b"
    assert srv.peers[-1] == "10.255.0.2"  # SNAT to A's ingress sandbox: how replies find their way back
    assert name_at(client_ns, b[1], 8080) == "web-b"
    assert srv.peers[-1] == "10.255.0.3"
    # From host A itself (the output hook), and a megabyte through both NATs and VXLAN.
    assert name_at(a[0], a[1], 8080) == "web-b"
    assert len(request(client_ns, a[1], 8080)) == len(b"web-b\n") + 1_000_000
    # Unpublished: the port is closed again on A.
    sbx_a.set_published([])
    with pytest.raises(ConnectionRefusedError):
        request(client_ns, a[1], 8080, timeout=3)
    assert name_at(client_ns, b[1], 8080) == "web-b"


def test_create_is_idempotent_and_repairs(lab: Lab) -> None:
    a, b = lab.host("a", 1), lab.host("b", 2)
    na, nb = lab.network(a, "ov", 4096), lab.network(b, "ov", 4096)
    ta = lab.task("ta", Attachment.on(na, "10.10.0.2"))
    tb = lab.task("tb", Attachment.on(nb, "10.10.0.3"))
    lab.server(tb.netns, 8080, "tb")
    full_mesh([na, nb], [("10.10.0.2", na), ("10.10.0.3", nb)])

    na.create()
    ta.create()
    assert na.set_peers([Peer.at("10.10.0.3", b[1])]).empty
    # Lose vxlan0 and the task's veth; create() puts both back (peers are re-pushed).
    ns.exec_in(na.netns, ["ip", "link", "del", "vxlan0"])
    ns.exec_in(na.netns, ["ip", "link", "del", bridge_port_name(ta.netns, 0)])
    na.create()
    ta.create()
    assert not na.set_peers([Peer.at("10.10.0.3", b[1])]).empty
    assert name_at(ta.netns, "10.10.0.3", 8080) == "tb"


def test_a_process_joins_the_sandbox_by_path_and_survives_removal(lab: Lab) -> None:
    a = lab.host("a", 1)
    net = lab.network(a, "ov", 4096)
    box = lab.task("joined", Attachment.on(net, "10.10.0.2", vip_range=VIP_RANGE))
    # What runc does with {"type": "network", "path": "/run/netns/NAME"}: setns by path.
    proc = subprocess.Popen(["nsenter", f"--net={box.path}", "busybox", "sleep", "30"])
    try:
        shown = subprocess.run(
            ["nsenter", f"--net={box.path}", "busybox", "ip", "-o", "addr", "show", "eth0"],
            capture_output=True, text=True, check=True,
        ).stdout
        assert "10.10.0.2/24" in shown
        routes = ns.exec_in(box.netns, ["ip", "route"]).stdout
        assert "default via 10.10.0.1 dev eth0" in routes
        assert "10.10.200.0/24 dev eth0" in routes and "scope link" in routes
        links = ns.exec_in(box.netns, ["ip", "-o", "link", "show", "eth0"]).stdout
        assert "mtu 1450" in links and "02:42:0a:0a:00:02" in links
        port = ns.exec_in(net.netns, ["ip", "-o", "link", "show", bridge_port_name(box.netns, 0)]).stdout
        assert "mtu 1450" in port and "master br0" in port

        TaskSandbox(box.netns, []).remove()  # by name alone, while the "container" still runs inside
        assert not box.exists()
        assert bridge_port_name(box.netns, 0) not in ns.exec_in(net.netns, ["ip", "-o", "link"]).stdout
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(10)


def test_teardown_leaves_nothing_behind() -> None:
    prefix = f"ovt{secrets.token_hex(3)}"
    links_before, ns_before = root_links(), [n for n in ns.list_ns() if n.startswith(prefix)]
    built = Lab(prefix)
    removers: list[Callable[[], Any]] = []
    try:
        a = built.host("a", 1)
        net = built.network(a, "ov", 4096)
        task = built.task("t", Attachment.on(net, "10.10.0.2"))
        ingress = built.ingress(a, net, "10.10.0.9")
        ingress.set_published([PublishedPort(80, "tcp", (Backend("10.10.0.2", 80),))])
        removers = [task.remove, ingress.remove, net.remove, built.underlay.remove]
        host_links = ns.exec_in(a[0], ["ip", "-o", "link"]).stdout
        assert "ig" in host_links and "vxlan" not in host_links  # vxlan0 moved out of the host namespace
        assert lb.list_table(a[0], lb.INGRESS_TABLE)
    finally:
        errors = built.cleanup()
    assert errors == []
    assert [n for n in ns.list_ns() if n.startswith(prefix)] == ns_before == []
    assert root_links() == links_before
    for remove in removers:  # a second removal is harmless
        remove()


def test_nftables_is_usable() -> None:
    check_nftables()

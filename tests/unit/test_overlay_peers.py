"""Pure parts of network.py, sandbox.py, ingress.py and netns.py (no namespaces made)."""

from __future__ import annotations

import pytest

from overlay import netns as ns
from overlay.errors import InvalidRequest
from overlay.ingress import IngressSandbox, host_link_name
from overlay.network import NetworkDatapath, Peer, PeerPlan, plan_peers
from overlay.sandbox import Attachment, TaskSandbox, bridge_port_name

LOCAL = "198.18.0.1"
B = "198.18.0.2"
C = "198.18.0.3"


def test_an_empty_kernel_gets_every_remote_peer() -> None:
    plan = plan_peers([], {}, [Peer.at("10.0.0.3", B), Peer.at("10.0.0.2", LOCAL), Peer.at("10.0.0.4", C)], LOCAL)
    assert plan == PeerPlan(
        fdb_add=(("02:42:0a:00:00:03", B), ("02:42:0a:00:00:04", C)),
        neigh_add=(("10.0.0.3", "02:42:0a:00:00:03"), ("10.0.0.4", "02:42:0a:00:00:04")),
    )


def test_the_same_table_again_changes_nothing() -> None:
    fdb = [("02:42:0a:00:00:03", B)]
    neigh = {"10.0.0.3": "02:42:0a:00:00:03"}
    assert plan_peers(fdb, neigh, [Peer.at("10.0.0.3", B)], LOCAL).empty


def test_stale_entries_go_and_moved_endpoints_are_replaced() -> None:
    fdb = [("02:42:0a:00:00:03", B), ("02:42:0a:00:00:04", B), ("02:42:0a:00:00:05", C)]
    neigh = {"10.0.0.3": "02:42:0a:00:00:03", "10.0.0.4": "02:42:0a:00:00:04", "10.0.0.5": "02:42:0a:00:00:05"}
    desired = [Peer.at("10.0.0.4", C), Peer.at("10.0.0.5", C)]  # .3 gone, .4 moved from B to C
    plan = plan_peers(fdb, neigh, desired, LOCAL)
    assert plan.fdb_del == (("02:42:0a:00:00:03", B), ("02:42:0a:00:00:04", B))
    assert plan.fdb_add == (("02:42:0a:00:00:04", C),)
    assert plan.neigh_del == (("10.0.0.3", "02:42:0a:00:00:03"),)
    assert plan.neigh_add == ()


def test_a_changed_mac_replaces_the_neighbour() -> None:
    plan = plan_peers([], {"10.0.0.3": "02:42:aa:aa:aa:aa"}, [Peer("10.0.0.3", "02:42:0A:00:00:03", B)], LOCAL)
    assert plan.neigh_add == (("10.0.0.3", "02:42:0a:00:00:03"),)
    assert plan.neigh_del == ()


@pytest.mark.parametrize(
    "peers",
    [
        [Peer("10.0.0.3", "02:42:0a:00:00:03", B), Peer("10.0.0.3", "02:42:0a:00:00:09", B)],
        [Peer("10.0.0.3", "02:42:0a:00:00:03", B), Peer("10.0.0.4", "02:42:0a:00:00:03", C)],
        [Peer("10.0.0.3", "03:42:0a:00:00:03", B)],  # multicast MAC
        [Peer("10.0.0.3", "02:42:0a:00:00", B)],
        [Peer("10.0.0.300", "02:42:0a:00:00:03", B)],
        [Peer("10.0.0.3", "02:42:0a:00:00:03", "vtep-b")],
    ],
)
def test_conflicting_or_malformed_peers_are_refused(peers: list[Peer]) -> None:
    with pytest.raises(InvalidRequest):
        plan_peers([], {}, peers, LOCAL)


def test_network_datapath_validates_without_touching_the_kernel() -> None:
    net = NetworkDatapath("x-ov", 4096, "10.0.1.0/24", LOCAL)
    assert (net.gateway, net.prefixlen) == ("10.0.1.1", 24)
    with pytest.raises(InvalidRequest):
        NetworkDatapath("x-ov", 0, "10.0.1.0/24", LOCAL)
    with pytest.raises(InvalidRequest):
        NetworkDatapath("x-ov", 4096, "10.0.1.0/24", LOCAL, gateway="10.0.2.1")
    with pytest.raises(InvalidRequest):
        NetworkDatapath("x-ov", 4096, "10.0.1.0/33", LOCAL)


def test_attachments_and_sandboxes_validate() -> None:
    net = NetworkDatapath("x-ov", 4096, "10.0.1.0/24", LOCAL)
    att = Attachment.on(net, "10.0.1.7", vip_range="10.0.200.0/24")
    assert (att.network_netns, att.prefixlen, att.gateway, att.mac) == ("x-ov", 24, "10.0.1.1", "02:42:0a:00:01:07")
    TaskSandbox("x-t", [att])
    for bad in (
        Attachment("x-ov", "10.0.1.7", 24, "10.0.2.1"),
        Attachment("x-ov", "10.0.1.7", 24, "10.0.1.1", vip_range="10.0.1.128/25"),
        Attachment("x-ov", "10.0.1.777", 24, "10.0.1.1"),
    ):
        with pytest.raises(InvalidRequest):
            TaskSandbox("x-t", [bad])
    with pytest.raises(InvalidRequest):
        IngressSandbox("x-ig", att, link_subnet="10.0.0.1/32")


def test_derived_interface_names_are_short_stable_and_distinct() -> None:
    names = {bridge_port_name(f"lab-h{h}-tsk-{t:012x}", i) for h in range(3) for t in range(50) for i in range(3)}
    assert len(names) == 450
    assert all(len(n) <= 15 for n in names)
    assert bridge_port_name("a", 1) == bridge_port_name("a", 1) != bridge_port_name("a", 2)
    assert len(host_link_name("lab-h1-ingress-sbox")) <= 15


def test_namespace_names_and_sysctl_keys_are_checked() -> None:
    for bad in ("", "a/b", "..", "x" * 300):
        with pytest.raises(InvalidRequest):
            ns.ns_path(bad)
    assert ns.ns_path("lab1-h2") == "/run/netns/lab1-h2"
    for key in ("kernel.hostname", "net/../kernel/hostname", "vm.swappiness"):
        with pytest.raises(InvalidRequest):
            ns.get_sysctl(None, key)

"""overlay.lb ruleset generation, compared byte for byte (pure; nft is not run)."""

from __future__ import annotations

import subprocess

import pytest

from overlay import lb
from overlay.errors import InvalidRequest, NftablesUnavailable
from overlay.lb import Backend, PublishedPort, VipService

WEB = VipService("web", "10.0.9.2", ("10.0.1.3", "10.0.1.4"))
DNS = VipService("dns", "10.0.9.4", ("10.0.1.5",))
DB = VipService("db", "10.0.9.3")

VIP_EXPECTED = """\
table ip swarm_lb
delete table ip swarm_lb
table ip swarm_lb {
\tmap service-ips {
\t\ttype ipv4_addr : verdict
\t\telements = { 10.0.9.2 : goto svc-web,
\t\t\t     10.0.9.4 : goto svc-dns }
\t}
\tset no-endpoints {
\t\ttype ipv4_addr
\t\telements = { 10.0.9.3 }
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr vmap @service-ips
\t}
\tchain reject-no-endpoints {
\t\ttype filter hook output priority 0; policy accept;
\t\tip daddr @no-endpoints reject
\t}
\tchain svc-web {
\t\tnumgen random mod 2 vmap { 0 : goto ep-web-0, 1 : goto ep-web-1 }
\t}
\tchain ep-web-0 {
\t\tdnat to 10.0.1.3
\t}
\tchain ep-web-1 {
\t\tdnat to 10.0.1.4
\t}
\tchain svc-dns {
\t\tnumgen random mod 1 vmap { 0 : goto ep-dns-0 }
\t}
\tchain ep-dns-0 {
\t\tdnat to 10.0.1.5
\t}
}
"""

EMPTY_VIP_EXPECTED = """\
table ip swarm_lb
delete table ip swarm_lb
table ip swarm_lb {
\tmap service-ips {
\t\ttype ipv4_addr : verdict
\t}
\tset no-endpoints {
\t\ttype ipv4_addr
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr vmap @service-ips
\t}
\tchain reject-no-endpoints {
\t\ttype filter hook output priority 0; policy accept;
\t\tip daddr @no-endpoints reject
\t}
}
"""

HOST_EXPECTED = """\
table ip swarm_ingress
delete table ip swarm_ingress
table ip swarm_ingress {
\tchain prerouting {
\t\ttype nat hook prerouting priority -100; policy accept;
\t\tfib daddr type local tcp dport 8080 dnat to 172.31.255.254
\t\tfib daddr type local udp dport 53 dnat to 172.31.255.254
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat to 172.31.255.254
\t\tip daddr != 127.0.0.0/8 fib daddr type local udp dport 53 dnat to 172.31.255.254
\t}
}
"""

SANDBOX_EXPECTED = """\
table ip swarm_ingress
delete table ip swarm_ingress
table ip swarm_ingress {
\tmap published {
\t\ttype inet_proto . inet_service : verdict
\t\telements = { tcp . 8080 : goto svc-tcp-8080 }
\t}
\tchain prerouting {
\t\ttype nat hook prerouting priority -100; policy accept;
\t\tmeta l4proto . th dport vmap @published
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority 100; policy accept;
\t\tct status dnat snat to 10.255.0.2
\t}
\tchain svc-tcp-8080 {
\t\tnumgen random mod 3 vmap { 0 : goto ep-tcp-8080-0, 1 : goto ep-tcp-8080-1, 2 : goto ep-tcp-8080-2 }
\t}
\tchain ep-tcp-8080-0 {
\t\tmeta l4proto tcp dnat to 10.255.0.5:80
\t}
\tchain ep-tcp-8080-1 {
\t\tmeta l4proto tcp dnat to 10.255.0.6:80
\t}
\tchain ep-tcp-8080-2 {
\t\tmeta l4proto tcp dnat to 10.255.0.7:80
\t}
}
"""


def test_vip_ruleset_exact_text() -> None:
    assert lb.vip_ruleset([WEB, DNS, DB]) == VIP_EXPECTED


def test_vip_ruleset_is_ordered_by_vip() -> None:
    assert lb.vip_ruleset([DB, DNS, WEB]) == VIP_EXPECTED
    ten = VipService("a", "10.0.9.10", ("10.0.1.3",))
    nine = VipService("b", "10.0.9.9", ("10.0.1.3",))
    text = lb.vip_ruleset([ten, nine])
    assert text.index("10.0.9.9 :") < text.index("10.0.9.10 :")  # numeric, not string order


def test_vip_ruleset_without_services_still_replaces_the_table() -> None:
    assert lb.vip_ruleset([]) == EMPTY_VIP_EXPECTED


def test_ingress_host_ruleset_exact_text() -> None:
    ports = [PublishedPort(53, "udp"), PublishedPort(8080, "tcp", (Backend("10.255.0.5", 80),))]
    assert lb.ingress_host_ruleset(ports, "172.31.255.254") == HOST_EXPECTED


def test_ingress_sandbox_ruleset_exact_text() -> None:
    backends = tuple(Backend(f"10.255.0.{i}", 80) for i in (5, 6, 7))
    ports = [PublishedPort(8080, "tcp", backends), PublishedPort(9090, "tcp")]  # 9090 has no task yet
    assert lb.ingress_sandbox_ruleset(ports, "10.255.0.2") == SANDBOX_EXPECTED


def test_delete_table_script_tolerates_a_missing_table() -> None:
    assert lb.delete_table_script("swarm_lb") == "table ip swarm_lb\ndelete table ip swarm_lb\n"


@pytest.mark.parametrize(
    "service",
    [
        VipService("we b", "10.0.9.2"),
        VipService("web;flush ruleset", "10.0.9.2"),
        VipService("web", "10.0.9.256"),
        VipService("web", "10.0.9.2", ("10.0.1.3; flush ruleset",)),
        VipService("web", "10.0.9.2", ("not-an-ip",)),
    ],
)
def test_bad_input_is_refused_before_nft_sees_it(service: VipService) -> None:
    with pytest.raises(InvalidRequest):
        lb.vip_ruleset([service])


def test_duplicates_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        lb.vip_ruleset([WEB, VipService("other", "10.0.9.2")])
    with pytest.raises(InvalidRequest):
        lb.ingress_host_ruleset([PublishedPort(80), PublishedPort(80)], "172.31.255.254")
    with pytest.raises(InvalidRequest):
        lb.ingress_sandbox_ruleset([PublishedPort(80)], "10.255.0")


@pytest.mark.parametrize(
    "port",
    [PublishedPort(0), PublishedPort(70000), PublishedPort(80, "sctp"),
     PublishedPort(80, "tcp", (Backend("10.0.1.3", 0),)), PublishedPort(80, "tcp", (Backend("not-an-ip", 80),))],
)
def test_bad_published_ports_are_refused_before_nft_sees_them(port: PublishedPort) -> None:
    with pytest.raises(InvalidRequest):
        lb.ingress_sandbox_ruleset([port], "10.255.0.2")


def test_check_nftables_explains_a_missing_nft(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("nft")

    monkeypatch.setattr(subprocess, "run", missing)
    with pytest.raises(NftablesUnavailable, match="install nftables"):
        lb.check_nftables()


def test_check_nftables_explains_a_failing_nft(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(["nft"], 1, "", "Operation not permitted")

    monkeypatch.setattr(subprocess, "run", refused)
    with pytest.raises(NftablesUnavailable, match="Operation not permitted"):
        lb.check_nftables()

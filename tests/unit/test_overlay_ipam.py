"""overlay.ipam: pure, deterministic allocation."""

from __future__ import annotations

import ipaddress
import json
import random

import pytest

from overlay.errors import AlreadyAllocated, InvalidRequest, PoolExhausted
from overlay.ipam import PORT_MAX, PORT_MIN, VNI_MIN, Allocator, mac_for


def test_mac_for_is_02_42_and_the_address_bytes() -> None:
    assert mac_for("10.0.1.5") == "02:42:0a:00:01:05"
    assert mac_for("192.168.255.254") == "02:42:c0:a8:ff:fe"
    with pytest.raises(InvalidRequest):
        mac_for("10.0.1")


def test_addresses_skip_network_gateway_and_broadcast() -> None:
    alloc = Allocator()
    pool = alloc.add_pool("n1", "10.0.1.0/29")
    assert pool.gateway == "10.0.1.1"
    got = [alloc.allocate_address("n1") for _ in range(5)]
    assert got == ["10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5", "10.0.1.6"]
    with pytest.raises(PoolExhausted):
        alloc.allocate_address("n1")


def test_a_given_gateway_is_skipped_and_the_first_host_is_usable() -> None:
    alloc = Allocator()
    alloc.add_pool("n1", "10.0.1.0/30", gateway="10.0.1.2")
    assert alloc.allocate_address("n1") == "10.0.1.1"
    with pytest.raises(PoolExhausted):
        alloc.allocate_address("n1")


def test_free_makes_the_lowest_address_available_again() -> None:
    alloc = Allocator()
    alloc.add_pool("n1", "10.0.1.0/24")
    a, b, c = (alloc.allocate_address("n1") for _ in range(3))
    alloc.free_address("n1", b)
    alloc.free_address("n1", b)  # twice is a no-op
    assert alloc.allocate_address("n1") == b
    assert alloc.allocate_address("n1") == "10.0.1.5"
    assert (a, c) == ("10.0.1.2", "10.0.1.4")


def test_reserve_checks_range_and_conflicts() -> None:
    alloc = Allocator()
    alloc.add_pool("n1", "10.0.1.0/24")
    alloc.reserve_address("n1", "10.0.1.2")
    assert alloc.allocate_address("n1") == "10.0.1.3"
    with pytest.raises(AlreadyAllocated):
        alloc.reserve_address("n1", "10.0.1.2")
    for bad in ("10.0.1.0", "10.0.1.1", "10.0.1.255", "10.0.2.7", "nonsense"):
        with pytest.raises(InvalidRequest):
            alloc.reserve_address("n1", bad)


def test_vips_come_from_the_vip_range_when_there_is_one() -> None:
    alloc = Allocator()
    alloc.add_pool("plain", "10.0.1.0/24")
    alloc.add_pool("ranged", "10.0.2.0/24", vip_range="10.0.3.0/24")
    assert alloc.allocate_vip("plain") == "10.0.1.2"
    assert alloc.allocate_address("plain") == "10.0.1.3"
    assert alloc.allocate_vip("ranged") == "10.0.3.1"  # a VIP range has no gateway
    assert alloc.allocate_address("ranged") == "10.0.2.2"
    alloc.reserve_vip("ranged", "10.0.3.9")
    with pytest.raises(InvalidRequest):
        alloc.reserve_address("ranged", "10.0.3.10")  # not a task address
    with pytest.raises(InvalidRequest):
        alloc.add_pool("bad", "10.0.4.0/24", vip_range="10.0.4.128/25")


def test_pools_are_validated() -> None:
    alloc = Allocator()
    for subnet in ("10.0.1.0/31", "10.0.1.1/24", "fe80::/64", "x"):
        with pytest.raises(InvalidRequest):
            alloc.add_pool("n", subnet)
    with pytest.raises(InvalidRequest):
        alloc.add_pool("n", "10.0.1.0/24", gateway="10.0.2.1")
    alloc.add_pool("n", "10.0.1.0/24")
    with pytest.raises(AlreadyAllocated):
        alloc.add_pool("n", "10.0.9.0/24")
    with pytest.raises(InvalidRequest):
        alloc.allocate_address("missing")


def test_same_subnet_twice_is_allowed_per_network() -> None:
    alloc = Allocator()
    alloc.add_pool("red", "10.0.1.0/24")
    alloc.add_pool("blue", "10.0.1.0/24")
    assert alloc.allocate_address("red") == alloc.allocate_address("blue") == "10.0.1.2"


def test_subnets_default_to_the_lowest_free_slash24() -> None:
    alloc = Allocator()
    alloc.add_pool("ingress", "10.0.0.0/24")
    alloc.add_pool("big", "10.0.2.0/23")
    assert alloc.allocate_subnet() == "10.0.1.0/24"
    alloc.add_pool("n1", "10.0.1.0/24")
    assert alloc.allocate_subnet() == "10.0.4.0/24"
    assert alloc.allocate_subnet("192.168.0.0/16", 20) == "192.168.0.0/20"
    with pytest.raises(PoolExhausted):
        Allocator.from_state({"pools": {"all": {"subnet": "172.16.0.0/24"}}}).allocate_subnet("172.16.0.0/24", 26)


def test_vnis_start_at_4096() -> None:
    alloc = Allocator()
    assert [alloc.allocate_vni() for _ in range(3)] == [VNI_MIN, VNI_MIN + 1, VNI_MIN + 2]
    alloc.free_vni(VNI_MIN + 1)
    assert alloc.allocate_vni() == VNI_MIN + 1
    alloc.reserve_vni(5000)
    with pytest.raises(AlreadyAllocated):
        alloc.reserve_vni(5000)
    with pytest.raises(InvalidRequest):
        alloc.reserve_vni(100)


def test_ports_come_from_the_dynamic_range_per_protocol() -> None:
    alloc = Allocator()
    assert alloc.allocate_port() == PORT_MIN
    assert alloc.allocate_port("udp") == PORT_MIN
    alloc.reserve_port(8080)
    alloc.reserve_port(PORT_MIN + 1)
    assert alloc.allocate_port() == PORT_MIN + 2
    with pytest.raises(AlreadyAllocated):
        alloc.reserve_port(8080)
    alloc.reserve_port(8080, "udp")
    with pytest.raises(InvalidRequest):
        alloc.reserve_port(0)
    with pytest.raises(InvalidRequest):
        alloc.allocate_port("sctp")
    alloc.ports["tcp"].update(range(PORT_MIN, PORT_MAX + 1))
    with pytest.raises(PoolExhausted):
        alloc.allocate_port()
    alloc.free_port(PORT_MAX)
    assert alloc.allocate_port() == PORT_MAX


def test_state_is_plain_sorted_data_and_round_trips() -> None:
    alloc = Allocator()
    alloc.add_pool("n1", "10.0.1.0/24", vip_range="10.0.200.0/24")
    for _ in range(11):
        alloc.allocate_address("n1")
    alloc.allocate_vip("n1")
    alloc.allocate_vni()
    alloc.reserve_port(8080)
    state = alloc.to_state()
    assert json.loads(json.dumps(state)) == state
    assert state["pools"]["n1"]["taken"][:3] == ["10.0.1.2", "10.0.1.3", "10.0.1.4"]
    assert state["pools"]["n1"]["taken"][-2:] == ["10.0.1.12", "10.0.200.1"]  # numeric, not string order
    again = Allocator.from_state(state)
    assert again.to_state() == state
    assert again.allocate_address("n1") == alloc.allocate_address("n1")


def test_invariant_no_duplicates_and_replay_gives_the_same_state() -> None:
    """Invariant: whatever the seeded sequence of allocations and frees, no address
    is handed out twice, none is reserved (network, gateway, broadcast), a
    copy rebuilt from plain state answers like the original, and replaying
    the sequence rebuilds the identical state."""

    def run(seed: int) -> tuple[dict, list[str]]:
        rng = random.Random(seed)
        alloc = Allocator()
        alloc.add_pool("n", "10.0.0.0/26")
        live: list[str] = []
        handed: list[str] = []
        for _ in range(500):
            if live and (rng.random() < 0.4 or len(live) >= 61):
                alloc.free_address("n", live.pop(rng.randrange(len(live))))
            else:
                ip = alloc.allocate_address("n")
                assert ip not in live
                assert ip not in ("10.0.0.0", "10.0.0.1", "10.0.0.63")
                assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.0.0.0/26")
                live.append(ip)
                handed.append(ip)
            if len(live) < 61 and rng.random() < 0.1:
                # The search hint is not state: a fresh copy picks the same next address.
                fresh = Allocator.from_state(alloc.to_state())
                nxt = alloc.allocate_address("n")
                assert fresh.allocate_address("n") == nxt
                alloc.free_address("n", nxt)
        assert sorted(alloc.pools["n"].taken) == sorted(live)
        return alloc.to_state(), handed

    for seed in range(5):
        assert run(seed) == run(seed)

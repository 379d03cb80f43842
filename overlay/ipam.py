"""Address, VNI and port allocation (pure: no I/O, no clock, no randomness).

How this works: an `Allocator` holds plain sets of what is taken: per pool
(one pool per overlay network) the addresses in its subnet and its VIP range,
the cluster's VXLAN network identifiers, and the published ports per
protocol. Every `allocate_*` call returns the *lowest* free value, so the
same sequence of calls always gives the same answers (a replayed Raft log
rebuilds the same state); `reserve_*` claims a given value (a restored
object, a user-chosen port) and `free_*` gives it back. `to_state()` /
`from_state()` turn the allocator into plain data (dicts, lists, strings,
ints) for the store's codec.

Addresses follow Docker: in a subnet the network address, the broadcast
address and the gateway (default: the first host, `.1`) are never handed out.
VIPs come from the pool's `vip_range` when it has one (a separate CIDR, routed
link-scope in each task namespace), otherwise from the subnet itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterator

from overlay.errors import AlreadyAllocated, InvalidRequest, PoolExhausted

VNI_MIN = 4096
VNI_MAX = (1 << 24) - 1
PORT_MIN = 30000
PORT_MAX = 32767
PROTOCOLS = ("tcp", "udp")
DEFAULT_SUBNET_BASE = "10.0.0.0/8"
DEFAULT_SUBNET_PREFIX = 24


def mac_for(ip: str) -> str:
    """The MAC of an endpoint, derived from its IPv4 address like Docker: 02:42 + the 4 bytes."""
    try:
        packed = ipaddress.IPv4Address(ip).packed
    except ValueError as exc:
        raise InvalidRequest(f"{ip!r} is not an IPv4 address.") from exc
    return "02:42:" + ":".join(f"{b:02x}" for b in packed)


def _network(cidr: str, what: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as exc:
        raise InvalidRequest(f"The {what} {cidr!r} is not an IPv4 network in CIDR form (like 10.0.1.0/24).") from exc
    if net.prefixlen > 30:
        raise InvalidRequest(f"The {what} {cidr} is too small: use a /30 or larger.")
    return net


def _hosts(net: ipaddress.IPv4Network, start: int = 0) -> Iterator[ipaddress.IPv4Address]:
    """Usable host addresses from `start` on, lowest first, without materialising the list."""
    first = max(int(net.network_address) + 1, start)
    last = int(net.broadcast_address) - 1
    for value in range(first, last + 1):
        yield ipaddress.IPv4Address(value)


@dataclass
class Pool:
    """Addresses of one overlay network: its subnet, gateway and optional VIP range."""

    subnet: str
    gateway: str
    vip_range: str | None = None
    taken: set[str] = field(default_factory=set)
    # Per range: every usable address below this is taken (a search hint, not state).
    low_water: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def _usable(self, ip: str, *, vip: bool) -> None:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError as exc:
            raise InvalidRequest(f"{ip!r} is not an IPv4 address.") from exc
        ranges = [self.subnet] + ([self.vip_range] if vip and self.vip_range else [])
        for cidr in ranges:
            net = ipaddress.IPv4Network(cidr)
            if addr in net:
                if addr in (net.network_address, net.broadcast_address):
                    raise InvalidRequest(f"{ip} is the network or broadcast address of {cidr}.")
                if ip == self.gateway:
                    raise InvalidRequest(f"{ip} is the gateway of {self.subnet}.")
                return
        raise InvalidRequest(f"{ip} is outside {' and '.join(ranges)}.")


class Allocator:
    """All allocations of a cluster, as plain sets; see the module docstring."""

    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {}
        self.vnis: set[int] = set()
        self.ports: dict[str, set[int]] = {proto: set() for proto in PROTOCOLS}

    # -- pools (one per network) -------------------------------------------

    def add_pool(self, pool_id: str, subnet: str, gateway: str | None = None, vip_range: str | None = None) -> Pool:
        """Register a network's subnet; the gateway defaults to the first host address."""
        if pool_id in self.pools:
            raise AlreadyAllocated(f"The address pool {pool_id!r} already exists.")
        net = _network(subnet, "subnet")
        gw = gateway if gateway is not None else str(net.network_address + 1)
        try:
            gw_addr = ipaddress.IPv4Address(gw)
        except ValueError as exc:
            raise InvalidRequest(f"The gateway {gw!r} is not an IPv4 address.") from exc
        if gw_addr not in net or gw_addr in (net.network_address, net.broadcast_address):
            raise InvalidRequest(f"The gateway {gw} is not a host address of {subnet}.")
        if vip_range is not None:
            vnet = _network(vip_range, "VIP range")
            if vnet.overlaps(net):
                raise InvalidRequest(f"The VIP range {vip_range} overlaps the subnet {subnet}; leave it out to take VIPs from the subnet.")
        pool = Pool(subnet=str(net), gateway=gw, vip_range=vip_range)
        self.pools[pool_id] = pool
        return pool

    def remove_pool(self, pool_id: str) -> None:
        self.pools.pop(pool_id, None)

    def pool(self, pool_id: str) -> Pool:
        try:
            return self.pools[pool_id]
        except KeyError:
            raise InvalidRequest(f"There is no address pool {pool_id!r}.") from None

    def allocate_subnet(self, base: str = DEFAULT_SUBNET_BASE, prefixlen: int = DEFAULT_SUBNET_PREFIX) -> str:
        """The lowest subnet of `base` split at `prefixlen` that overlaps no pool (Docker's default pools)."""
        base_net = _network(base, "address base")
        if not base_net.prefixlen <= prefixlen <= 30:
            raise InvalidRequest(f"Cannot split {base} into /{prefixlen} subnets.")
        used = [ipaddress.IPv4Network(p.subnet) for p in self.pools.values()]
        used += [ipaddress.IPv4Network(p.vip_range) for p in self.pools.values() if p.vip_range]
        for candidate in base_net.subnets(new_prefix=prefixlen):
            if not any(candidate.overlaps(u) for u in used):
                return str(candidate)
        raise PoolExhausted(f"No free /{prefixlen} subnet is left in {base}.")

    # -- addresses and VIPs --------------------------------------------------

    def allocate_address(self, pool_id: str) -> str:
        """The lowest free host address of the pool's subnet."""
        pool = self.pool(pool_id)
        return self._take_lowest(pool, pool.subnet)

    def allocate_vip(self, pool_id: str) -> str:
        """A service VIP: from the VIP range if the pool has one, else from the subnet."""
        pool = self.pool(pool_id)
        return self._take_lowest(pool, pool.vip_range or pool.subnet)

    def reserve_address(self, pool_id: str, ip: str, *, vip: bool = False) -> None:
        """Claim a given address (e.g. a task restored from the store)."""
        pool = self.pool(pool_id)
        pool._usable(ip, vip=vip)
        if ip in pool.taken:
            raise AlreadyAllocated(f"{ip} is already allocated in {pool.subnet}.")
        pool.taken.add(ip)

    def reserve_vip(self, pool_id: str, ip: str) -> None:
        self.reserve_address(pool_id, ip, vip=True)

    def free_address(self, pool_id: str, ip: str) -> None:
        """Give an address (or VIP) back; freeing a free address is a no-op."""
        pool = self.pools.get(pool_id)
        if pool is not None and ip in pool.taken:
            pool.taken.remove(ip)
            value = int(ipaddress.IPv4Address(ip))
            for cidr, low in pool.low_water.items():
                if value < low and ipaddress.IPv4Address(value) in ipaddress.IPv4Network(cidr):
                    pool.low_water[cidr] = value

    free_vip = free_address

    def _take_lowest(self, pool: Pool, cidr: str) -> str:
        for addr in _hosts(ipaddress.IPv4Network(cidr), pool.low_water.get(cidr, 0)):
            ip = str(addr)
            if ip != pool.gateway and ip not in pool.taken:
                pool.taken.add(ip)
                pool.low_water[cidr] = int(addr) + 1
                return ip
        raise PoolExhausted(f"No free address is left in {cidr}.")

    # -- VXLAN network identifiers ------------------------------------------

    def allocate_vni(self) -> int:
        for vni in range(VNI_MIN, VNI_MAX + 1):
            if vni not in self.vnis:
                self.vnis.add(vni)
                return vni
        raise PoolExhausted("No free VXLAN network identifier is left.")

    def reserve_vni(self, vni: int) -> None:
        if not VNI_MIN <= vni <= VNI_MAX:
            raise InvalidRequest(f"VNI {vni} is outside {VNI_MIN}-{VNI_MAX}.")
        if vni in self.vnis:
            raise AlreadyAllocated(f"VNI {vni} is already allocated.")
        self.vnis.add(vni)

    def free_vni(self, vni: int) -> None:
        self.vnis.discard(vni)

    # -- published ports -----------------------------------------------------

    def allocate_port(self, protocol: str = "tcp") -> int:
        """The lowest free port of the dynamic range 30000-32767."""
        taken = self._ports(protocol)
        for port in range(PORT_MIN, PORT_MAX + 1):
            if port not in taken:
                taken.add(port)
                return port
        raise PoolExhausted(f"No free {protocol} port is left in {PORT_MIN}-{PORT_MAX}.")

    def reserve_port(self, port: int, protocol: str = "tcp") -> None:
        """Claim a user-chosen published port (any port 1-65535)."""
        taken = self._ports(protocol)
        if not 1 <= port <= 65535:
            raise InvalidRequest(f"Port {port} is outside 1-65535.")
        if port in taken:
            raise AlreadyAllocated(f"The {protocol} port {port} is already published.")
        taken.add(port)

    def free_port(self, port: int, protocol: str = "tcp") -> None:
        self._ports(protocol).discard(port)

    def _ports(self, protocol: str) -> set[int]:
        if protocol not in self.ports:
            raise InvalidRequest(f"Unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}.")
        return self.ports[protocol]

    # -- plain data ------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain, sorted data: equal allocators give equal states."""

        def ip_key(ip: str) -> int:
            return int(ipaddress.IPv4Address(ip))

        return {
            "pools": {
                pid: {
                    "subnet": p.subnet,
                    "gateway": p.gateway,
                    "vip_range": p.vip_range,
                    "taken": sorted(p.taken, key=ip_key),
                }
                for pid, p in sorted(self.pools.items())
            },
            "vnis": sorted(self.vnis),
            "ports": {proto: sorted(ports) for proto, ports in sorted(self.ports.items())},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Allocator:
        alloc = cls()
        for pid, p in state.get("pools", {}).items():
            pool = alloc.add_pool(pid, p["subnet"], p.get("gateway"), p.get("vip_range"))
            pool.taken.update(p.get("taken", ()))
        alloc.vnis = set(state.get("vnis", ()))
        for proto, ports in state.get("ports", {}).items():
            alloc._ports(proto).update(ports)
        return alloc

"""One overlay network on one host: a namespace with br0 and vxlan0.

How this works (Docker's overlay driver layout): each (host, network) pair
gets its own network namespace holding a bridge `br0` that carries the
network's gateway address and a VXLAN device `vxlan0` enslaved to it. Task
sandboxes plug a veth into br0 (see sandbox.py). Because each network has its
own namespace, two networks may reuse the same subnet on one host.

The VXLAN device is created in the HOST namespace (the one holding the
host's underlay address, in a lab itself a namespace) and then moved into
the network namespace: its UDP 4789 socket stays bound where it was created,
on the underlay. Created directly inside the network namespace it would
fail silently (no error, no packet flows). Learning is off and proxy is on:
remote endpoints are programmed statically from the peer table the
dispatcher pushes, an FDB entry (MAC -> remote VTEP) plus a permanent
neighbour entry (IP -> MAC) each, and with proxy on vxlan0 answers ARP from
that neighbour table, so no ARP and no flooding crosses the underlay.

br0 itself does not learn on its vxlan0 port either: every remote MAC gets
a static br0 entry pointing at vxlan0, from the same peer table. A learned
entry would outlive its endpoint: when an address (and so its MAC, derived
from it) moves from another host to a task on this one, br0 kept sending
that MAC into vxlan0 (which has no entry for a local MAC, so it dropped
the frames, also those arriving from other hosts) until the entry aged out
(300 s) or the new task sent a frame; a task that only answers sends one
only when a broadcast ARP reaches it, after its clients' neighbour entries
have failed (10-20 s), so the routing mesh timed out on every host. Local
ports still learn: their entries go with the port when a sandbox is removed.

`set_peers` is diff-based: it reads the current entries, computes a
`PeerPlan` with the pure `plan_peers`, deletes stale entries and adds or
replaces missing ones, so calling it again with the same table changes
nothing. MTU is 1450 everywhere on the overlay (VXLAN adds 50 bytes); a
1500-byte port would silently drop large packets.

A network namespace can also be read back (`read_datapath`: its VNI and the
sandboxes plugged into br0) and removed (`remove_datapath`) by its name
alone: a restarted node has no object for what its earlier run made.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import secrets
import socket
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from overlay import netns as ns
from overlay._rtnl import (building, delete_link, ensure_address, index_of, info_data, iproute, link_info,
                           netlink_error, require_index)
from overlay.errors import DatapathError, InvalidRequest
from overlay.ipam import mac_for

BRIDGE = "br0"
VXLAN = "vxlan0"
VXLAN_PORT = 4789
OVERLAY_MTU = 1450
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NTF_MASTER = 0x04
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class Peer:
    """A remote endpoint: its overlay address and MAC, and the VTEP (underlay IP) of its host."""

    ip: str
    mac: str
    vtep: str

    @classmethod
    def at(cls, ip: str, vtep: str) -> Peer:
        """A peer whose MAC is derived from its address (how every endpoint here gets its MAC)."""
        return cls(ip=ip, mac=mac_for(ip), vtep=vtep)


@dataclass(frozen=True)
class PeerPlan:
    """What `set_peers` changes: vxlan0's FDB entries (mac, vtep), neighbours (ip, mac)
    and br0's entries for vxlan0 (mac)."""

    fdb_del: tuple[tuple[str, str], ...] = ()
    fdb_add: tuple[tuple[str, str], ...] = ()
    neigh_del: tuple[tuple[str, str], ...] = ()
    neigh_add: tuple[tuple[str, str], ...] = ()
    bridge_del: tuple[str, ...] = ()
    bridge_add: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.fdb_del or self.fdb_add or self.neigh_del or self.neigh_add
                    or self.bridge_del or self.bridge_add)


def _valid_peer(peer: Peer) -> Peer:
    try:
        ip = str(ipaddress.IPv4Address(peer.ip))
        vtep = str(ipaddress.IPv4Address(peer.vtep))
    except ValueError as exc:
        raise InvalidRequest(f"Peer {peer}: {exc}.") from exc
    mac = peer.mac.lower()
    if not _MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise InvalidRequest(f"Peer {peer}: {peer.mac!r} is not a unicast MAC address.")
    return Peer(ip=ip, mac=mac, vtep=vtep)


def plan_peers(
    current_fdb: Iterable[tuple[str, str]],
    current_neigh: Mapping[str, str],
    desired: Iterable[Peer],
    local_vtep: str | None = None,
    current_bridge: Mapping[str, bool] | None = None,
) -> PeerPlan:
    """Diff the kernel's entries against the desired peer table (pure).

    Peers on `local_vtep` are skipped: local endpoints sit on br0 itself.
    Conflicting peers (one IP with two MACs, one MAC behind two VTEPs) are
    an input error. `current_bridge` maps each MAC br0 sends to vxlan0 to
    whether the entry is static (ours) or learned; every remote MAC wants a
    static one and nothing else may stay (a learned entry for a MAC that is
    local now black-holes it). None leaves br0's entries out of the plan.
    """
    want_fdb: dict[str, str] = {}
    want_neigh: dict[str, str] = {}
    for raw in desired:
        peer = _valid_peer(raw)
        if peer.vtep == local_vtep:
            continue
        if want_neigh.get(peer.ip, peer.mac) != peer.mac:
            raise InvalidRequest(f"Peer {peer.ip} is listed with two MAC addresses.")
        if want_fdb.get(peer.mac, peer.vtep) != peer.vtep:
            raise InvalidRequest(f"MAC {peer.mac} is listed behind two VTEPs.")
        want_neigh[peer.ip] = peer.mac
        want_fdb[peer.mac] = peer.vtep
    have_fdb = {(mac.lower(), vtep) for mac, vtep in current_fdb}
    have_neigh = {ip: mac.lower() for ip, mac in current_neigh.items()}
    fdb_del = sorted(pair for pair in have_fdb if want_fdb.get(pair[0]) != pair[1])
    fdb_add = sorted(pair for pair in want_fdb.items() if pair not in have_fdb)
    neigh_del = sorted((ip, mac) for ip, mac in have_neigh.items() if ip not in want_neigh)
    neigh_add = sorted((ip, mac) for ip, mac in want_neigh.items() if have_neigh.get(ip) != mac)
    bridge_del: list[str] = []
    bridge_add: list[str] = []
    if current_bridge is not None:
        have_bridge = {mac.lower(): static for mac, static in current_bridge.items()}
        bridge_del = sorted(mac for mac in have_bridge if mac not in want_fdb)
        bridge_add = sorted(mac for mac in want_fdb if not have_bridge.get(mac))
    return PeerPlan(tuple(fdb_del), tuple(fdb_add), tuple(neigh_del), tuple(neigh_add),
                    tuple(bridge_del), tuple(bridge_add))


@dataclass
class NetworkDatapath:
    """The datapath of one overlay network on one host; see the module docstring.

    `netns` is the full name of the network namespace (callers prefix it per
    host/lab, e.g. "lab1-h2-ov-0123456789ab"); `host_netns` is the namespace
    holding the underlay address `vtep` (None: the caller's own namespace).
    """

    netns: str
    vni: int
    subnet: str
    vtep: str
    gateway: str | None = None
    host_netns: str | None = None
    mtu: int = OVERLAY_MTU
    port: int = VXLAN_PORT           # the VXLAN UDP port (a cluster setting: swarm init --data-path-port)
    _net: ipaddress.IPv4Network = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._net = ipaddress.IPv4Network(self.subnet)
            ipaddress.IPv4Address(self.vtep)
        except ValueError as exc:
            raise InvalidRequest(f"Network {self.netns}: {exc}.") from exc
        if not 1 <= self.port <= 65535:
            raise InvalidRequest(f"VXLAN port {self.port} is outside 1-65535.")
        if not 1 <= self.vni < (1 << 24):
            raise InvalidRequest(f"VNI {self.vni} is outside 1-16777215.")
        if self.gateway is None:
            self.gateway = str(self._net.network_address + 1)
        elif ipaddress.IPv4Address(self.gateway) not in self._net:
            raise InvalidRequest(f"The gateway {self.gateway} is outside {self.subnet}.")

    @property
    def prefixlen(self) -> int:
        return self._net.prefixlen

    def create(self) -> None:
        """Build (or repair) the namespace, br0 and vxlan0; idempotent."""
        with building(self.netns, self.remove):
            with iproute(self.netns, "set up the bridge") as ipr:
                if index_of(ipr, BRIDGE) is None:
                    ipr.link("add", ifname=BRIDGE, kind="bridge", mtu=self.mtu)
                br = require_index(ipr, BRIDGE)
                ensure_address(ipr, br, self.gateway or "", self.prefixlen)
                ipr.link("set", index=br, mtu=self.mtu, state="up")
                vx = index_of(ipr, VXLAN)
                if vx is not None and not self._vxlan_matches(link_info(ipr, vx)):
                    ipr.link("del", index=vx)
                    vx = None
            if vx is None:
                self._create_vxlan()
            with iproute(self.netns, "attach vxlan0 to br0") as ipr:
                vx = require_index(ipr, VXLAN)
                ipr.link("set", index=vx, master=require_index(ipr, BRIDGE), mtu=self.mtu, state="up")
                # br0 gets static entries for remote MACs from set_peers; see the module docstring.
                ipr.brport("set", index=vx, learning=0)

    def _vxlan_matches(self, msg: object) -> bool:
        return (
            info_data(msg, "IFLA_VXLAN_ID") == self.vni
            and info_data(msg, "IFLA_VXLAN_LOCAL") == self.vtep
            and info_data(msg, "IFLA_VXLAN_PORT") in (self.port, socket.htons(self.port))
        )

    def _create_vxlan(self) -> None:
        # A temporary name: several networks may be created in one host namespace at once.
        tmp = f"vx{self.vni:x}{secrets.token_hex(3)}"[:15]
        with iproute(self.host_netns, f"create the VXLAN device for VNI {self.vni}") as host:
            host.link(
                "add",
                ifname=tmp,
                kind="vxlan",
                vxlan_id=self.vni,
                vxlan_local=self.vtep,
                vxlan_port=self.port,
                vxlan_learning=0,
                vxlan_proxy=1,
                mtu=self.mtu,
            )
            try:
                host.link("set", index=require_index(host, tmp), net_ns_fd=self.netns, ifname=VXLAN)
            except BaseException:
                delete_link(host, tmp)
                raise

    def current_peers(self) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """The programmed (mac, vtep) FDB entries and ip -> mac neighbour entries of vxlan0."""
        fdb, neigh, _ = self._current_entries()
        return fdb, neigh

    def _current_entries(self) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, bool]]:
        """vxlan0's own FDB entries, its neighbours, and br0's entries on the vxlan0 port
        (mac -> static?; the port's own address left out)."""
        with iproute(self.netns, "read the peer table") as ipr:
            vx = require_index(ipr, VXLAN)
            fdb: list[tuple[str, str]] = []
            bridge: dict[str, bool] = {}
            for m in ipr.fdb("dump", ifindex=vx):
                if m["ifindex"] != vx or not m.get_attr("NDA_LLADDR"):
                    continue
                if m.get_attr("NDA_DST") is not None:
                    fdb.append((m.get_attr("NDA_LLADDR"), m.get_attr("NDA_DST")))
                elif m.get_attr("NDA_MASTER") is not None and not m["state"] & NUD_PERMANENT:
                    bridge[m.get_attr("NDA_LLADDR")] = bool(m["state"] & NUD_NOARP)
            neigh = {
                m.get_attr("NDA_DST"): m.get_attr("NDA_LLADDR")
                for m in ipr.neigh("dump", ifindex=vx, family=socket.AF_INET)
                if m["ifindex"] == vx and m["state"] & NUD_PERMANENT and m.get_attr("NDA_LLADDR")
            }
        return fdb, neigh, bridge

    def set_peers(self, peers: Iterable[Peer]) -> PeerPlan:
        """Make vxlan0's FDB and neighbour entries, and br0's entries towards vxlan0,
        equal the remote part of `peers`."""
        fdb, neigh, bridge = self._current_entries()
        plan = plan_peers(fdb, neigh, peers, local_vtep=self.vtep, current_bridge=bridge)
        if plan.empty:
            return plan
        with iproute(self.netns, "program peers") as ipr:
            vx = require_index(ipr, VXLAN)
            for ip, mac in plan.neigh_del:
                ipr.neigh("del", dst=ip, lladdr=mac, ifindex=vx)
            for mac in plan.bridge_del:
                try:
                    ipr.fdb("del", ifindex=vx, lladdr=mac, flags=NTF_MASTER)
                except netlink_error() as exc:
                    if exc.code != errno.ENOENT:  # a learned entry may age out meanwhile
                        raise
            for mac, vtep in plan.fdb_del:
                ipr.fdb("del", ifindex=vx, lladdr=mac, dst=vtep)
            for mac, vtep in plan.fdb_add:
                ipr.fdb("replace", ifindex=vx, lladdr=mac, dst=vtep, state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
            for mac in plan.bridge_add:
                ipr.fdb("replace", ifindex=vx, lladdr=mac, state=NUD_NOARP, flags=NTF_MASTER)
            for ip, mac in plan.neigh_add:
                ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=vx, state=NUD_PERMANENT)
        return plan

    def exists(self) -> bool:
        return ns.ns_exists(self.netns)

    def remove(self) -> None:
        """Delete the namespace and everything in it; idempotent."""
        remove_datapath(self.netns)


def remove_datapath(netns: str) -> None:
    """Delete a network namespace made by `NetworkDatapath.create` and everything in it;
    idempotent. Works from the name alone (a leftover of an earlier run has no object).

    vxlan0 is deleted first so its UDP socket in the host namespace is
    released now, not when the kernel gets round to the dead namespace
    (a re-created network with the same VNI would otherwise clash).
    """
    if ns.ns_exists(netns):
        try:
            with iproute(netns, "delete vxlan0") as ipr:
                delete_link(ipr, VXLAN)
                delete_link(ipr, BRIDGE)
        except DatapathError:
            pass  # the namespace goes anyway
    ns.remove(netns)


@dataclass(frozen=True)
class Found:
    """A network namespace as read back from the kernel: its vxlan0's VNI (None: it has
    none) and the ports on its br0 besides vxlan0 (the task sandboxes plugged into it)."""

    netns: str
    vni: int | None
    ports: tuple[str, ...]


def read_datapath(netns: str) -> Found:
    """What a network namespace made by `NetworkDatapath.create` holds now (for one that
    no object describes any more: a leftover of an earlier run)."""
    with iproute(netns, "read the network's devices") as ipr:
        links = ipr.get_links()
    by_name = {link.get_attr("IFLA_IFNAME"): link for link in links}
    vxlan, bridge = by_name.get(VXLAN), by_name.get(BRIDGE)
    vni = info_data(vxlan, "IFLA_VXLAN_ID") if vxlan is not None else None
    ports = () if bridge is None else tuple(sorted(
        name for name, link in by_name.items()
        if name != VXLAN and link.get_attr("IFLA_MASTER") == bridge["index"]))
    return Found(netns, vni, ports)

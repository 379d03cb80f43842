"""A task's network sandbox: a namespace with one veth per attached network.

How this works: the task namespace (a caller-given name such as
"lab1-h2-tsk-0123456789ab", bind-mounted at /run/netns/NAME so runc can join
it by path) gets, for network i, an interface `eth<i>` carrying the task's
address and a MAC derived from it (02:42 + the address bytes, so peers can
compute it). Its veth peer sits in that network's namespace as a port of
br0. Both ends and the port have MTU 1450, like the VXLAN device behind the
bridge: a 1500-byte hop would drop large packets silently.

The pair is created in the network namespace, then one end is moved into the
task namespace and renamed eth<i> in the same request. The bridge-side name
is derived from the task namespace name and the index, so `remove()` (and a
restarted agent) can find it again without any saved state.

Routes: the connected route of each eth<i>, a default route via the first
network's gateway (optional: the ingress sandbox routes through its host
link instead), and for a network whose VIPs live in a separate range, a
link-scope route for that range via its eth<i> -- without it connect() to a
VIP fails with "Network is unreachable" before nftables can DNAT it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Sequence

from overlay import netns as ns
from overlay._rtnl import building, delete_link, ensure_address, index_of, iproute, kind_of, require_index
from overlay.errors import DatapathError, InvalidRequest
from overlay.ipam import mac_for
from overlay.network import BRIDGE, OVERLAY_MTU, NetworkDatapath

RT_SCOPE_LINK = 253


@dataclass(frozen=True)
class Attachment:
    """The task's endpoint on one network: which network namespace, its address and routes."""

    network_netns: str
    address: str
    prefixlen: int
    gateway: str
    vip_range: str | None = None

    @classmethod
    def on(cls, network: NetworkDatapath, address: str, vip_range: str | None = None) -> Attachment:
        return cls(network.netns, address, network.prefixlen, network.gateway or "", vip_range)

    @property
    def mac(self) -> str:
        return mac_for(self.address)

    def validate(self) -> None:
        try:
            iface = ipaddress.IPv4Interface(f"{self.address}/{self.prefixlen}")
            gateway = ipaddress.IPv4Address(self.gateway)
            vips = ipaddress.IPv4Network(self.vip_range) if self.vip_range else None
        except ValueError as exc:
            raise InvalidRequest(f"Attachment to {self.network_netns}: {exc}.") from exc
        if gateway not in iface.network:
            raise InvalidRequest(f"The gateway {self.gateway} is outside {iface.network}.")
        if vips is not None and vips.overlaps(iface.network):
            raise InvalidRequest(f"The VIP range {self.vip_range} overlaps {iface.network}.")


def bridge_port_name(task_netns: str, index: int) -> str:
    """The name of the bridge-side veth of `task_netns`'s interface eth<index> (15 chars max)."""
    digest = hashlib.sha1(task_netns.encode()).hexdigest()[:10]
    return f"v{digest}{index:02x}"


class TaskSandbox:
    """The network namespace of one task; see the module docstring."""

    def __init__(
        self,
        netns: str,
        attachments: Sequence[Attachment],
        *,
        default_route: bool = True,
        mtu: int = OVERLAY_MTU,
    ) -> None:
        if len(attachments) > 64:
            raise InvalidRequest("A task can attach to at most 64 networks.")
        for att in attachments:
            att.validate()
        self.netns = netns
        self.attachments = tuple(attachments)
        self.default_route = default_route
        self.mtu = mtu

    @property
    def path(self) -> str:
        """What runc's config.json names as the network namespace path."""
        return ns.ns_path(self.netns)

    def interface(self, index: int) -> str:
        return f"eth{index}"

    def create(self) -> None:
        """Build (or repair) the namespace, its interfaces and routes; idempotent."""
        with building(self.netns, self.remove):
            for i, att in enumerate(self.attachments):
                self._plug(i, att)
            self._routes()

    def _plug(self, i: int, att: Attachment) -> None:
        eth = self.interface(i)
        port = bridge_port_name(self.netns, i)
        with iproute(att.network_netns, f"plug {eth} into {BRIDGE}") as net:
            bridge = index_of(net, BRIDGE)
            if bridge is None:
                raise DatapathError(f"The network namespace {att.network_netns} has no {BRIDGE}; create the network first.")
            with iproute(self.netns, f"look up {eth}") as task:
                if index_of(task, eth) is not None and index_of(net, port) is None:
                    delete_link(task, eth)  # not our pair any more: rebuild it
                present = index_of(task, eth) is not None
            if not present:
                delete_link(net, port)
                tmp = "t" + port[1:]
                net.link("add", ifname=port, kind="veth", peer=tmp)
                net.link("set", index=require_index(net, tmp), mtu=self.mtu)
                net.link("set", index=require_index(net, tmp), net_ns_fd=self.netns, ifname=eth)
            idx = require_index(net, port)
            net.link("set", index=idx, mtu=self.mtu, master=bridge, state="up")
        with iproute(self.netns, f"configure {eth}") as task:
            idx = require_index(task, eth)
            task.link("set", index=idx, address=att.mac, mtu=self.mtu)
            ensure_address(task, idx, att.address, att.prefixlen)
            task.link("set", index=idx, state="up")

    def _routes(self) -> None:
        with iproute(self.netns, "set routes") as ipr:
            for i, att in enumerate(self.attachments):
                if att.vip_range:
                    idx = require_index(ipr, self.interface(i))
                    ipr.route("replace", dst=att.vip_range, oif=idx, scope=RT_SCOPE_LINK)
            if self.default_route and self.attachments:
                first = self.attachments[0]
                ipr.route("replace", dst="0.0.0.0/0", gateway=first.gateway, oif=require_index(ipr, "eth0"))

    def exists(self) -> bool:
        return ns.ns_exists(self.netns)

    def remove(self) -> None:
        """Delete the task's veth pairs and the namespace; idempotent.

        Works without knowing the attachments (`TaskSandbox(name, [])`): every
        veth inside goes, and with it its bridge-side end. A container still
        running inside keeps the (now nameless) namespace alive, but its
        interfaces are gone.
        """
        if ns.ns_exists(self.netns):
            try:
                with iproute(self.netns, "delete the task's veths") as task:
                    for link in task.get_links():
                        if kind_of(link) == "veth":
                            delete_link(task, link.get_attr("IFLA_IFNAME"))
            except DatapathError:
                pass  # the namespace goes anyway
        for i, att in enumerate(self.attachments):  # half pairs a crash may have left
            if ns.ns_exists(att.network_netns):
                try:
                    with iproute(att.network_netns, "unplug the task") as net:
                        delete_link(net, bridge_port_name(self.netns, i))
                except DatapathError:
                    pass  # the network is going away too
        ns.remove(self.netns)

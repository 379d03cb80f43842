"""The ingress routing mesh of one node: ingress sandbox + host link + rules.

How this works (Docker's ingress, with a veth instead of docker_gwbridge):

    client --> host namespace --(veth "host link")--> ingress sandbox --(eth0, ingress overlay)--> task
               DNAT to sandbox                        DNAT to a task, SNAT to eth0's address

The ingress sandbox is a `TaskSandbox` attached to the `ingress` overlay
network (eth0) with no default route of its own; a veth pair joins it to the
host namespace (eth1 inside, address `sandbox_ip`; the host end carries
`host_ip`), and its default route points back to the host so replies reach
clients anywhere on the underlay. Both namespaces forward (ip_forward=1),
set here inside those namespaces only. `set_published` loads the two
rulesets from lb.py, each in one nft transaction, the sandbox's first (so a
newly published port never points at a sandbox that does not know it yet).
No TCP MSS clamp is needed: the sandbox's eth0 (MTU 1450) answers oversized
packets with "fragmentation needed", conntrack maps the ICMP back to the
client, and path MTU discovery does the rest (tested with 1 MB transfers).
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Iterable

from overlay import lb
from overlay import netns as ns
from overlay._rtnl import delete_link, ensure_address, index_of, iproute, require_index
from overlay.errors import DatapathError, InvalidRequest
from overlay.sandbox import Attachment, TaskSandbox

DEFAULT_LINK_SUBNET = "172.31.255.252/30"


def host_link_name(sandbox_netns: str) -> str:
    """Host-side name of the sandbox's host link (derived, so a restart finds it)."""
    return "ig" + hashlib.sha1(sandbox_netns.encode()).hexdigest()[:10]


class IngressSandbox:
    """One node's ingress sandbox; see the module docstring.

    `host_netns` is the node's namespace (a lab host), None for the caller's
    own; changing the machine's initial namespace needs `allow_initial=True`.
    """

    def __init__(
        self,
        netns: str,
        attachment: Attachment,
        *,
        host_netns: str | None = None,
        link_subnet: str = DEFAULT_LINK_SUBNET,
        allow_initial: bool = False,
    ) -> None:
        try:
            link = ipaddress.IPv4Network(link_subnet)
        except ValueError as exc:
            raise InvalidRequest(f"The host link subnet {link_subnet!r} is not a network: {exc}.") from exc
        hosts = list(link.hosts())[:2]
        if len(hosts) < 2:
            raise InvalidRequest(f"The host link subnet {link_subnet} needs two host addresses.")
        self.netns = netns
        self.attachment = attachment
        self.host_netns = host_netns
        self.prefixlen = link.prefixlen
        self.host_ip, self.sandbox_ip = str(hosts[0]), str(hosts[1])
        self.allow_initial = allow_initial
        self.sandbox = TaskSandbox(netns, [attachment], default_route=False)

    @property
    def overlay_ip(self) -> str:
        """The sandbox's address on the ingress overlay (the SNAT source)."""
        return self.attachment.address

    def create(self) -> None:
        """Build (or repair) the sandbox, the host link and forwarding; idempotent."""
        ns.guard_initial(self.host_netns, "set up the ingress host link", self.allow_initial)
        created = not ns.ns_exists(self.netns)
        self.sandbox.create()
        try:
            self._host_link()
            ns.set_sysctl(self.netns, "net.ipv4.ip_forward", 1)
            ns.set_sysctl(self.host_netns, "net.ipv4.ip_forward", 1, allow_initial=self.allow_initial)
        except BaseException:
            if created:
                self.remove()
            raise

    def _host_link(self) -> None:
        host_end = host_link_name(self.netns)
        inner = "eth1"
        with iproute(self.netns, f"look up {inner}") as sb:
            present = index_of(sb, inner) is not None
        with iproute(self.host_netns, "create the ingress host link") as host:
            if not present or index_of(host, host_end) is None:
                delete_link(host, host_end)
                tmp = "t" + host_end[1:]
                host.link("add", ifname=host_end, kind="veth", peer=tmp)
                host.link("set", index=require_index(host, tmp), net_ns_fd=self.netns, ifname=inner)
            idx = require_index(host, host_end)
            ensure_address(host, idx, self.host_ip, self.prefixlen)
            host.link("set", index=idx, state="up")
        with iproute(self.netns, f"configure {inner}") as sb:
            idx = require_index(sb, inner)
            ensure_address(sb, idx, self.sandbox_ip, self.prefixlen)
            sb.link("set", index=idx, state="up")
            sb.route("replace", dst="0.0.0.0/0", gateway=self.host_ip, oif=idx)

    def set_published(self, ports: Iterable[lb.PublishedPort]) -> None:
        """Publish exactly `ports` on this node (an empty list unpublishes everything)."""
        ports = list(ports)
        host_rules = lb.ingress_host_ruleset(ports, self.sandbox_ip)
        sandbox_rules = lb.ingress_sandbox_ruleset(ports, self.overlay_ip)
        lb.apply_ruleset(self.netns, sandbox_rules)
        lb.apply_ruleset(self.host_netns, host_rules, allow_initial=self.allow_initial)

    def remove(self) -> None:
        """Remove the host rules, the host link and the sandbox; idempotent."""
        errors: list[str] = []
        host_there = self.host_netns is None or ns.ns_exists(self.host_netns)
        if host_there and (self.allow_initial or not ns.is_initial_ns(self.host_netns)):
            try:
                lb.apply_ruleset(self.host_netns, lb.delete_table_script(lb.INGRESS_TABLE), allow_initial=self.allow_initial)
                with iproute(self.host_netns, "delete the ingress host link") as host:
                    delete_link(host, host_link_name(self.netns))
            except DatapathError as exc:
                errors.append(exc.message)
        self.sandbox.remove()
        if errors:
            raise DatapathError("; ".join(errors))

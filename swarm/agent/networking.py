"""The agent's networking: overlay datapaths, task sandboxes, embedded DNS,
VIP load balancing and the ingress routing mesh on one node.

How this works. The managers' answer to `tasks.assigned` carries a network
view for this node (`swarm.api.netview.NetworkView`, built by the
dispatcher): the networks its tasks use, the peers on them (other nodes' task
addresses and VTEPs), each network's service table, and the published ports.
`update(view)` decodes it (a view that does not decode is refused whole and
the last good one stays) and makes the node match it: one `overlay.network.NetworkDatapath` per network (VXLAN + bridge in its
own namespace, static FDB/neighbour entries from the peer table), the DNS
records every task's resolver reads, the nftables VIP map of every task
namespace, and the ingress sandbox with its published ports. `sandbox(task)`
builds a task's namespace (veth per network) and starts its DNS server on
127.0.0.11:53 inside it; `remove(task_id)` undoes both. A network's datapath
goes once it has left the view and no task here uses it any more (or at once,
when a new network comes with its VNI), so a removed network leaves nothing.

Which datapaths this node holds is kept in memory, and a restarted daemon
starts with none, while the namespaces of its previous life are still there
(its tasks' containers outlive it, and may be re-adopted). So the kernel is
the record: an overlay namespace with this node's prefix that no network held
here or named by the view accounts for is a leftover (`stale_networks`), and
it goes (`leftover_goes`) once no task sandbox is plugged into it, or at once
when a network being created needs its VNI (its network was removed: the
managers gave the VNI out again). Otherwise a network removed while the
daemon was down, or while only a task from before the restart used it here,
would keep its namespace and its vxlan0 forever, and every later network
with that VNI would fail here with "File exists".

Every namespace is named `<prefix>-<kind>-<id>` with a per-node prefix, so
several nodes on one machine (a lab) never collide, and so `lab down` and
`swarm leave` can find what a node made. Kernel work runs in worker threads
(pyroute2 and nft are blocking).
"""
from __future__ import annotations

import ipaddress
import logging
import random
import re
from typing import Any, Iterable

import trio

from overlay import dns, lb
from overlay.errors import DatapathError, InvalidRequest
from overlay import netns as ns
from overlay.ingress import IngressSandbox
from overlay.network import Found, NetworkDatapath, Peer, read_datapath, remove_datapath
from overlay.sandbox import Attachment, TaskSandbox
from swarm.api import netview
from swarm.api import records as records_log
from swarm.api import spec

log = logging.getLogger(__name__)


def prefix_for(node_id: str) -> str:
    return "sw" + node_id[:6]


def stale_networks(namespaces: Iterable[str], prefix: str, keep: set[str]) -> list[str]:
    """The overlay namespaces of the node with `prefix` that are not in `keep` (the namespaces
    of the networks it holds or needs now): leftovers of an earlier run. Another node's, a
    task's or the ingress sandbox's namespaces are never among them."""
    return sorted(name for name in namespaces if name.startswith(f"{prefix}-ov-") and name not in keep)


def leftover_goes(found: Found, needed_vni: int | None = None) -> bool:
    """Whether a leftover network namespace is removed now: when no task sandbox is plugged
    into it any more, or when it holds the VNI a network being created needs (one VNI is one
    vxlan0 per node; the managers gave it out again, so its network is gone)."""
    return not found.ports or (needed_vni is not None and found.vni == needed_vni)


def dns_records(view: netview.NetworkView) -> dns.Records:
    """The embedded DNS's records of a network view: per network, its service table (each
    service's aliases on that network included), under the network's name."""
    names = {net_id: net.name for net_id, net in view.networks.items()}
    return dns.Records({
        net_id: dns.NetworkRecords(tuple(
            dns.ServiceRecord(s.name, s.mode, s.vip or None, s.tasks, s.aliases) for s in services), {},
            names.get(net_id, ""))
        for net_id, services in view.services.items()})


class NodeNetworking:
    def __init__(self, node_id: str, vtep: str, nursery: trio.Nursery) -> None:
        self.node_id = node_id
        self.prefix = prefix_for(node_id)
        self.vtep = vtep
        self.nursery = nursery
        self.datapaths: dict[str, NetworkDatapath] = {}
        self.peers: dict[str, list[Peer]] = {}  # per network: the peer table programmed last
        self.sandboxes: dict[str, TaskSandbox] = {}
        self.task_networks: dict[str, list[str]] = {}
        self.dns_scopes: dict[str, trio.CancelScope] = {}
        self.records = dns.Records()
        self.views: dict[frozenset[str], dns.ResolverView] = {}
        self.view = netview.NetworkView()
        self.ingress: IngressSandbox | None = None
        self.rng = random.Random()
        self.upstreams = dns.host_upstreams()
        self._lock = trio.Lock()
        self.closed = False

    def name(self, kind: str, ident: str) -> str:
        return f"{self.prefix}-{kind}-{ident[:10]}"

    # -- the network view ----------------------------------------------------------------
    async def update(self, data: Any) -> None:
        """Make this node match a network view (plain data from `tasks.assigned`)."""
        try:
            view = data if isinstance(data, netview.NetworkView) else netview.decode(data)
        except netview.InvalidView as exc:
            records_log.warn_once(f"view {exc}", f"network view refused, keeping the last one: {exc}")
            return
        async with self._lock:
            if self.closed:
                return
            self.view = view
            # Peers are added before and removed after the load balancers change: a backend
            # leaves every LB here while its address still leads somewhere.
            leaving: dict[str, list[Peer]] = {}
            for net_id, net in view.networks.items():
                await self._ensure_network(net)
                peers = [Peer.at(p.ip, p.vtep) for p in view.peers.get(net_id, ())]
                dp = self.datapaths[net_id]
                merged = {p.ip: p for p in self.peers.get(net_id, [])} | {p.ip: p for p in peers}
                if len(merged) > len(peers):
                    leaving[net_id] = peers
                await trio.to_thread.run_sync(dp.set_peers, list(merged.values()))
                self.peers[net_id] = list(merged.values())
            records = dns_records(view)
            # Compiling a view costs ~0.1 ms per task address (dnspython records): do it in a
            # thread, for every set of networks a task uses now, then swap records and views at once.
            in_use = {frozenset(nets) for task_id, nets in self.task_networks.items() if task_id in self.dns_scopes}
            try:
                views = await trio.to_thread.run_sync(lambda: {nets: records.view(nets) for nets in in_use})
                for problem in sorted({p for v in views.values() for p in v.rejected}):
                    records_log.warn_once(f"dns {problem}", f"DNS record left out: {problem}")
            except InvalidRequest as exc:        # a record the view refuses: keep serving the old one
                log.warning("could not compile the DNS records: %s", exc)
            else:
                self.records, self.views = records, views
            for task_id in list(self.sandboxes):
                await self._apply_lb(task_id)
            await self._update_ingress(view)
            for net_id, peers in leaving.items():
                await trio.to_thread.run_sync(self.datapaths[net_id].set_peers, peers)
                self.peers[net_id] = peers
            await self._drop_unused_networks()

    async def _ensure_network(self, net: netview.Network) -> NetworkDatapath:
        dp = self.datapaths.get(net.id)
        if dp is None:
            # A network removed while its tasks here are still stopping may hold the VNI the
            # managers have just given to this one (`stack rm` then `stack deploy`): one VNI is
            # one vxlan0 per node, so the removed network goes now, its stopping tasks with it.
            for old_id, old in list(self.datapaths.items()):
                if old.vni == net.vni and old_id not in self.view.networks:
                    del self.datapaths[old_id]
                    self.peers.pop(old_id, None)
                    await trio.to_thread.run_sync(old.remove)
            await self._remove_leftovers(net.vni)
            dp = NetworkDatapath(self.name("ov", net.id), net.vni, net.subnet, self.vtep, gateway=net.gateway,
                                 port=self.view.data_path_port)
            await trio.to_thread.run_sync(dp.create)
            self.datapaths[net.id] = dp
        return dp

    async def _drop_unused_networks(self) -> None:
        """Remove the datapath of every network that has left the view and that no sandbox here
        still uses (a task being stopped keeps its networks until it is removed): a removed
        network leaves no namespace behind, and its VNI, which the managers give to the next
        network, is free for that network's vxlan0 (two with one VNI cannot coexist). Call with
        the lock held."""
        in_use = {net_id for nets in self.task_networks.values() for net_id in nets}
        ingress = self.ingress.attachment.network_netns if self.ingress is not None else None
        for net_id, dp in list(self.datapaths.items()):
            if net_id in self.view.networks or net_id in in_use or dp.netns == ingress:
                continue
            del self.datapaths[net_id]
            self.peers.pop(net_id, None)
            try:
                await trio.to_thread.run_sync(dp.remove)
            except Exception as exc:    # the next view (or swarm leave) tries again
                self.datapaths[net_id] = dp
                log.warning("could not remove the datapath of network %s: %s", net_id, exc)
        await self._remove_leftovers()

    async def _remove_leftovers(self, needed_vni: int | None = None) -> None:
        """Remove the leftover network namespaces of an earlier run that may go now (see the
        module docstring); `needed_vni`: the VNI of a network about to be created here. Call
        with the lock held."""
        keep = {dp.netns for dp in self.datapaths.values()} | {self.name("ov", n) for n in self.view.networks}
        for name in stale_networks(ns.list_ns(), self.prefix, keep):
            try:
                found = await trio.to_thread.run_sync(read_datapath, name)
                if leftover_goes(found, needed_vni):
                    await trio.to_thread.run_sync(remove_datapath, name)
                    log.info("removed %s, the namespace of a network this node no longer has (VNI %s)",
                             name, found.vni)
            except DatapathError as exc:  # gone meanwhile, or the next view tries again
                log.warning("could not remove the leftover network namespace %s: %s", name, exc)

    def _lb_services(self, net_ids: list[str]) -> list[lb.VipService]:
        out = []
        for net_id in net_ids:
            for s in self.view.services.get(net_id, ()):
                if s.mode != "vip" or not s.vip:
                    continue
                # The chain name must be plain ASCII whatever the service's name (names
                # are validated at create, but one odd record must not break the rest).
                key = re.sub(r"[^A-Za-z0-9_]", "_", s.name)[:40] + f"_{net_id[:6]}_{len(out)}"
                out.append(lb.VipService(key, s.vip, s.tasks))
        return out

    async def _apply_lb(self, task_id: str) -> None:
        sandbox = self.sandboxes.get(task_id)
        if sandbox is None:
            return
        try:
            script = lb.vip_ruleset(self._lb_services(self.task_networks.get(task_id, [])))
            await trio.to_thread.run_sync(lb.apply_ruleset, sandbox.netns, script)
        except Exception as exc:
            log.warning("could not program the load balancer of task %s: %s", task_id, exc)

    async def _update_ingress(self, view: netview.NetworkView) -> None:
        published, ingress_ip, ingress_net = view.published, view.ingress_ip, view.ingress_network()
        if not published or not ingress_ip or ingress_net is None:
            return
        if self.ingress is None:
            if ns.is_initial_ns(None):
                # The routing mesh rewrites the node's own namespace (nftables, a veth):
                # never the machine's. Such a node serves everything but published ports.
                records_log.warn_once(f"ingress {self.node_id}", "published ports are not served here: this "
                                      "node runs in the machine's own network namespace")
                return
            dp = await self._ensure_network(ingress_net)
            sandbox = IngressSandbox(self.name("in", "gress"), Attachment.on(dp, ingress_ip))
            try:
                await trio.to_thread.run_sync(sandbox.create)
            except Exception as exc:  # e.g. a node in the machine's own namespace: no mesh, the rest works
                records_log.warn_once(f"ingress {self.node_id}", f"published ports are not served here: {exc}")
                return
            self.ingress = sandbox
        ports = [lb.PublishedPort(p.published, p.protocol, tuple(lb.Backend(ip, p.target) for ip in p.tasks))
                 for p in published]
        try:
            await trio.to_thread.run_sync(self.ingress.set_published, ports)
        except Exception as exc:
            log.warning("could not program the ingress routing mesh: %s", exc)

    # -- task sandboxes ----------------------------------------------------------------------
    async def sandbox(self, task: spec.Task) -> str:
        """Build the task's namespace and start its DNS server; returns the namespace path."""
        async with self._lock:
            atts = []
            for att in task.networks:
                net = self.view.networks.get(att.network_id)
                if net is None:
                    raise RuntimeError(f"network {att.network_id} is not known on this node yet")
                dp = await self._ensure_network(net)
                atts.append(Attachment.on(dp, att.address.split("/")[0]))
            box = TaskSandbox(self.name("t", task.id), atts)
            await trio.to_thread.run_sync(box.create)
            self.sandboxes[task.id] = box
            self.task_networks[task.id] = [a.network_id for a in task.networks]
            await self._apply_lb(task.id)
        await self._start_dns(task.id, box, task_upstreams(task.spec.dns.nameservers) or self.upstreams)
        return box.path

    async def _start_dns(self, task_id: str, box: TaskSandbox, upstreams: list[dns.Upstream]) -> None:
        """The task's embedded DNS server: its networks' records, else `upstreams` (the task's --dns
        servers, else the node's)."""
        if task_id in self.dns_scopes:
            return
        udp, tcp = await trio.to_thread.run_sync(dns.open_sockets_in_netns, box.netns)
        networks = frozenset(self.task_networks[task_id])

        def resolver() -> dns.ResolverView:
            view = self.views.get(networks)
            if view is None:
                view = self.views[networks] = self.records.view(networks)
            return view

        scope = trio.CancelScope()
        self.dns_scopes[task_id] = scope

        async def run() -> None:
            with scope:
                await dns.serve([udp, tcp], resolver, upstreams)

        self.nursery.start_soon(run)

    async def remove(self, task_id: str) -> None:
        """Remove the task's namespace and DNS server, and the networks only it kept here."""
        await self._remove_sandbox(task_id)
        async with self._lock:
            if not self.closed:
                await self._drop_unused_networks()

    async def _remove_sandbox(self, task_id: str) -> None:
        scope = self.dns_scopes.pop(task_id, None)
        if scope is not None:
            scope.cancel()
        box = self.sandboxes.pop(task_id, None)
        self.task_networks.pop(task_id, None)
        name = box.netns if box is not None else self.name("t", task_id)
        if box is not None or ns.ns_exists(name):
            await trio.to_thread.run_sync((box or TaskSandbox(name, [])).remove)

    async def teardown(self) -> None:
        """Remove everything this node made (swarm leave)."""
        self.closed = True  # no view applied after this
        async with self._lock:
            for task_id in list(self.sandboxes):
                await self._remove_sandbox(task_id)
            if self.ingress is not None:
                await trio.to_thread.run_sync(self.ingress.remove)
                self.ingress = None
            script = lb.delete_table_script(lb.INGRESS_TABLE)
            try:  # also when the sandbox object was lost: the host's rules go by name
                await trio.to_thread.run_sync(lb.apply_ruleset, None, script)
            except Exception:
                pass
        for dp in self.datapaths.values():
            await trio.to_thread.run_sync(dp.remove)
        for name in ns.list_ns():
            if name.startswith(self.prefix + "-"):
                await trio.to_thread.run_sync(ns.remove, name)


def task_upstreams(nameservers: tuple[str, ...]) -> list[dns.Upstream]:
    """A task's --dns servers as the embedded DNS forwards to them (port 53; not addresses are skipped,
    the control API refuses them before they get here)."""
    out: list[dns.Upstream] = []
    for server in nameservers:
        try:
            out.append((str(ipaddress.ip_address(server)), 53))
        except ValueError:
            log.warning("--dns %r is not an IP address: left out", server)
    return out


def interface_address(address: str) -> str:
    return str(ipaddress.ip_interface(address).ip)

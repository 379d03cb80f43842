"""Overlay networks: records, the control API, and the allocator's decisions.

A network record (kind "network") holds its subnet, gateway and VNI. The
`ingress` network exists from `swarm init`. Addresses are never stored in a
separate allocator record: `allocation_state` rebuilds the allocator from
what the store already holds (network subnets and VNIs, service VIPs and
published ports, task addresses of non-terminal tasks), so the leader's
allocations survive restarts and leader changes without extra state. Only
the acting leader allocates (one writer), in its reconcile round.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import time
from typing import Any

from overlay.errors import OverlayError
from overlay.ipam import Allocator
from raft.store import Op
from swarm.api import model, records, spec
from swarm.ca import pki
from swarm.api.errors import ApiError

NETWORK = "network"
INGRESS_SUBNET = "10.0.0.0/24"


def new_network(name: str, subnet: str, vni: int, *, ingress: bool = False, attachable: bool = False) -> dict:
    net = ipaddress.ip_network(subnet)
    return {"id": pki.new_id(), "name": name, "driver": "overlay", "scope": "swarm", "subnet": str(net),
            "gateway": str(next(net.hosts())), "vni": vni, "ingress": ingress, "attachable": attachable,
            "created_at": time.time()}


REUSE_DELAY = 30.0  # seconds a stopped task's address stays reserved (peers and sandboxes catch up)


def allocation_state(networks: dict[str, dict], services: dict[str, spec.Service],
                     tasks: list[spec.Task], nodes: dict[str, dict] | None = None,
                     now: float = 0.0) -> Allocator:
    """The allocator as the store's records fill it. A reservation that clashes
    (two records claiming one address or port) keeps the first claim, in the
    order services were created, and goes on: a clash is the clashing
    service's problem (its allocation fails), never everyone's."""
    alloc = Allocator()
    for net in networks.values():
        if _held(alloc.add_pool, net["id"], net["subnet"], net["gateway"]):
            _held(alloc.reserve_vni, int(net["vni"]))
    for service in sorted(services.values(), key=lambda s: (s.created_at, s.id)):
        for net_id, vip in service.vips.items():
            if net_id in networks:
                _held(alloc.reserve_vip, net_id, vip.split("/")[0])
        for port in service.ports:
            if port.mode == "ingress" and port.published:
                _held(alloc.reserve_port, port.published, port.protocol)
    ingress = next((n["id"] for n in networks.values() if n.get("ingress")), None)
    for node in (nodes or {}).values():
        if ingress and node.get("ingress_ip"):
            _held(alloc.reserve_address, ingress, node["ingress_ip"])
    for task in tasks:
        if spec.is_terminal(task.status.state) and now - task.status.timestamp > REUSE_DELAY:
            continue
        for att in task.networks:
            if att.network_id in networks:
                # already held by a replacement reusing it: keep going
                _held(alloc.reserve_address, att.network_id, att.address.split("/")[0])
    return alloc


def _held(reserve: Any, *args: Any) -> bool:
    try:
        reserve(*args)
    except OverlayError:
        return False
    return True


def service_networks(service: spec.Service, networks: dict[str, dict]) -> list[str]:
    """The networks a service's tasks attach to: its own, plus ingress when it publishes ports
    (host-mode ports too: the node reaches its own tasks through its ingress sandbox)."""
    ids = [n for n in service.spec.networks if n in networks]
    if service.spec.ports:
        ingress = next((n["id"] for n in networks.values() if n["ingress"]), None)
        if ingress and ingress not in ids:
            ids.append(ingress)
    return ids


def allocate_service(service: spec.Service, networks: dict[str, dict], alloc: Allocator) -> spec.Service | None:
    """The service with VIPs and published ports allocated, or None if nothing was missing."""
    wanted = service_networks(service, networks)
    vips = {k: v for k, v in service.vips.items() if k in wanted}
    if service.spec.endpoint_mode == "vip":
        for net_id in wanted:
            if net_id not in vips:
                prefix = ipaddress.ip_network(networks[net_id]["subnet"]).prefixlen
                vips[net_id] = f"{alloc.allocate_vip(net_id)}/{prefix}"
    ports = []
    for want in service.spec.ports:
        have = next((p for p in service.ports if p.target == want.target and p.protocol == want.protocol
                     and p.mode == want.mode and (not want.published or p.published == want.published)), None)
        if have is not None:
            ports.append(have)
        elif want.mode == "ingress" and not want.published:
            ports.append(dataclasses.replace(want, published=alloc.allocate_port(want.protocol)))
        else:
            if want.mode == "ingress":
                alloc.reserve_port(want.published, want.protocol)
            ports.append(want)
    updated = dataclasses.replace(service, vips=vips, ports=tuple(ports))
    return None if updated == service else updated


def allocate_task(task: spec.Task, service: spec.Service | None, networks: dict[str, dict],
                  alloc: Allocator) -> spec.Task:
    if service is None or task.networks:
        return task
    atts = []
    for net_id in service_networks(service, networks):
        prefix = ipaddress.ip_network(networks[net_id]["subnet"]).prefixlen
        atts.append(spec.Attachment(net_id, f"{alloc.allocate_address(net_id)}/{prefix}"))
    return dataclasses.replace(task, networks=tuple(atts))


class NetworkAPI:
    def __init__(self, manager: Any) -> None:
        self.m = manager

    def networks(self) -> dict[str, dict]:
        return {k: model.decode(r.data) for k, r in self.m.raft.list(NETWORK).items()}

    def find(self, ref: str) -> dict:
        nets = self.networks()
        if ref in nets:
            return nets[ref]
        named = [n for n in nets.values() if n["name"] == ref]
        if len(named) > 1:
            raise ApiError("bad_request", f"network name {ref} is ambiguous ({len(named)} networks): use an ID")
        if named:
            return named[0]
        prefixed = [n for n in nets.values() if n["id"].startswith(ref)] if ref else []
        if len(prefixed) == 1:
            return prefixed[0]
        raise ApiError("not_found", f"network {ref} not found")

    async def handle(self, method: str, params: dict) -> Any:
        handler = {"network.create": self.create, "network.ls": self.ls, "network.inspect": self.inspect,
                   "network.rm": self.rm}.get(method)
        if handler is None:
            raise ApiError("unknown_method", f"unknown network method {method}")
        return await handler(params)

    async def create(self, params: dict) -> dict:
        try:
            name = spec.check_name("network", params.get("name"))
        except spec.InvalidRecord as exc:
            raise ApiError("bad_request", str(exc)) from None
        if params.get("driver", "overlay") != "overlay":
            raise ApiError("bad_request", "only the overlay driver is supported in swarm scope")
        nets = self.networks()
        if any(n["name"] == name for n in nets.values()):
            raise ApiError("conflict", f"a network named {name} already exists")
        alloc = allocation_state(nets, {}, [])
        subnet = params.get("subnet")
        if subnet is not None and not isinstance(subnet, str):
            raise ApiError("bad_request", f"invalid subnet {subnet!r}: expected CIDR text like 10.0.9.0/24")
        if subnet:
            try:
                net = ipaddress.ip_network(subnet, strict=True)
            except ValueError as exc:
                raise ApiError("bad_request", f"invalid subnet {subnet!r}: {exc}") from None
            if net.version != 4 or net.prefixlen > 29:
                raise ApiError("bad_request", "the subnet must be IPv4 with room for hosts (/29 or larger)")
            subnet = str(net)
        else:
            subnet = alloc.allocate_subnet()
        record = new_network(name, subnet, alloc.allocate_vni(), attachable=bool(params.get("attachable")))
        await self.m.commit([Op.create(NETWORK, record["id"], model.encode(record))])
        return {"id": record["id"], "name": name}

    async def ls(self, params: dict) -> list[dict]:
        return sorted(({"id": n["id"], "name": n["name"], "driver": n["driver"], "scope": n["scope"],
                        "subnet": n["subnet"]} for n in self.networks().values()), key=lambda r: r["name"])

    async def inspect(self, params: dict) -> list[dict]:
        return [dict(net, created_at=model.rfc3339(net.get("created_at") or 0.0))
                for net in (self.find(r) for r in _refs(params))]

    async def rm(self, params: dict) -> list[str]:
        removed = []
        services = [s for s, _ in records.decode_all(self.m.raft.list(spec.SERVICE), spec.service_from_dict).values()]
        for ref in _refs(params):
            net = self.find(ref)
            if net["ingress"]:
                raise ApiError("conflict", "the ingress network cannot be removed")
            users = sorted(s.spec.name for s in services if net["id"] in s.spec.networks)
            if users:
                raise ApiError("conflict", f"network {net['name']} is in use by service(s) {', '.join(users)}")
            await self.m.commit([Op.delete(NETWORK, net["id"])])
            removed.append(net["name"])
        return removed


def _refs(params: dict) -> list[str]:
    refs = params.get("refs") or []
    if not isinstance(refs, list) or len(refs) > 1000 or not all(isinstance(r, str) and len(r) <= 256 for r in refs):
        raise ApiError("bad_request", "refs must be a list of network names or IDs")
    return refs

"""Overlay networks: records and the allocator's decisions (the control API for
networks is `swarm.manager.controlapi.networks`).

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

from overlay.errors import OverlayError, PoolExhausted
from overlay.ipam import Allocator
from swarm.api import spec
from swarm.ca import pki

NETWORK = "network"
INGRESS_SUBNET = "10.0.0.0/24"


def new_network(name: str, subnet: str, vni: int, *, ingress: bool = False, attachable: bool = False) -> dict:
    net = ipaddress.ip_network(subnet)
    return {"id": pki.new_id(), "name": name, "driver": "overlay", "scope": "swarm", "subnet": str(net),
            "gateway": str(next(net.hosts())), "vni": vni, "ingress": ingress, "attachable": attachable,
            "created_at": time.time()}


def pool_subnet(alloc: Allocator, pools: list[str], mask: int) -> str:
    """A new network's subnet: the lowest /mask no network holds, from the cluster's
    default address pools in their order (`swarm init --default-addr-pool`)."""
    for pool in pools:
        try:
            return alloc.allocate_subnet(pool, mask)
        except PoolExhausted:
            continue
    raise PoolExhausted(f"No free /{mask} subnet is left in the default address pools ({', '.join(pools)}).")


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
    return spec.replace(task, networks=tuple(atts))

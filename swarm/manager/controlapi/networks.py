"""The control API for overlay networks: `swarm network create|ls|inspect|rm`.

Any manager answers: reads come from its local copy of the store; a create
takes a subnet and a VNI no record holds (`allocator.allocation_state`).
"""
from __future__ import annotations

import ipaddress
from typing import Any

from raft.store import Op
from swarm.api import filters, model, records, spec
from swarm.api.errors import ApiError
from swarm.api.refs import resolve_ref
from overlay.errors import OverlayError
from swarm.manager.allocator import NETWORK, allocation_state, new_network, pool_subnet
from swarm.manager.membership import Manager


class NetworkAPI:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    def networks(self) -> dict[str, dict]:
        return {k: model.decode(r.data) for k, r in self.m.raft.list(NETWORK).items()}

    def find(self, ref: str) -> dict:
        return resolve_ref("network", self.networks(), ref, lambda n: n["name"])

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
            settings = model.cluster_settings(self.m.cluster())
            try:
                subnet = pool_subnet(alloc, settings["default_addr_pools"], settings["default_addr_pool_mask_length"])
            except OverlayError as exc:
                raise ApiError("conflict", str(exc)) from None
        labels = params.get("labels") or {}
        if (not isinstance(labels, dict) or len(labels) > 1000
                or not all(isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 1024 and len(v) <= 65536
                           for k, v in labels.items())):
            raise ApiError("bad_request", "invalid labels: a map of at most 1000 non-empty names to strings")
        record = new_network(name, subnet, alloc.allocate_vni(), attachable=bool(params.get("attachable")))
        if labels:     # `stack deploy` marks its networks (com.docker.stack.namespace)
            record["labels"] = dict(labels)
        await self.m.commit([Op.create(NETWORK, record["id"], model.encode(record))])
        return {"id": record["id"], "name": name}

    async def ls(self, params: dict) -> list[dict]:
        wanted = filters.from_params(params, filters.NETWORK_FILTERS)
        # All our networks are user-defined ("custom"); bridge, host and none are Docker's builtin ones.
        return sorted(({"id": n["id"], "name": n["name"], "driver": n["driver"], "scope": n["scope"],
                        "subnet": n["subnet"], "labels": n.get("labels") or {}} for n in self.networks().values()
                       if filters.matches(wanted, filters.NETWORK_FILTERS, {
                           "id": n["id"], "name": n["name"], "driver": n["driver"], "scope": n["scope"],
                           "label": n.get("labels") or {}, "type": "custom"})), key=lambda r: r["name"])

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

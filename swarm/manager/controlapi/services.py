"""The control API for services: create, ls, ps, inspect, update, scale, rm.

Handlers validate the user's input completely before writing anything (a
service is created whole or not at all), then write the Service record; the
leader's reconcile loop (`swarm.manager.reconciler`) turns it into tasks. Any manager
answers: reads come from its local copy of the store.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from raft.store import Op
from swarm.api import model, records, spec
from swarm.ca import pki
from swarm.manager.controlapi.networks import NetworkAPI
from swarm.manager.membership import Manager
from swarm.api.errors import ApiError
from swarm.api.refs import resolve_ref
from swarm.manager.scheduler import ConstraintError, parse_constraints

MIN_MEMORY = 6 * 1024 * 1024  # below this runc cannot start a container
MAX_REPLICAS = 100_000


def _bad(message: str) -> ApiError:
    return ApiError("bad_request", message)


MAX_LIST = 1000          # env entries, mounts, constraints, ports, networks, labels, command words
MAX_TEXT = 64 * 1024     # one string of a spec


def _number(p: dict, key: str, default: float, kind: type = int) -> Any:
    value = p.get(key)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise _bad(f"invalid {key.replace('_', ' ')} {value!r}: expected a {'whole ' if kind is int else ''}number")
    if value != value or value in (float("inf"), float("-inf")) or abs(value) > 1 << 62:
        raise _bad(f"invalid {key.replace('_', ' ')} {value!r}: out of range")
    return kind(value)


def _strings(p: dict, key: str) -> tuple[str, ...]:
    value = p.get(key, ())
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST:
        raise _bad(f"invalid {key}: expected a list of at most {MAX_LIST} strings")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_TEXT:
            raise _bad(f"invalid {key}: every item must be a string of at most {MAX_TEXT} characters")
    return tuple(value)


def _maps(p: dict, key: str) -> list[dict]:
    value = p.get(key, ())
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST or not all(isinstance(m, dict) for m in value):
        raise _bad(f"invalid {key}: expected a list of at most {MAX_LIST} maps")
    return list(value)


def spec_from_params(p: dict) -> spec.ServiceSpec:
    """Build and validate a ServiceSpec from the CLI's parameters (anything a client
    sends: every field's type, range and size is checked here, before any write)."""
    try:
        name = spec.check_name("service", p.get("name"))
    except spec.InvalidRecord as exc:
        raise _bad(str(exc)) from None
    image = p.get("image") or ""
    if not isinstance(image, str) or not image:
        raise _bad("an image is required")
    if len(image) > 512 or not image.isprintable() or " " in image:
        raise _bad(f"invalid image reference {image[:80]!r}")
    mode = p.get("mode", "replicated")
    if mode not in ("replicated", "global"):
        raise _bad(f"invalid mode {mode!r}: use replicated or global")
    replicas = p.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= MAX_REPLICAS:
        raise _bad(f"invalid replicas {replicas!r}: a number of replicas is from 0 to {MAX_REPLICAS}")
    if mode == "global" and p.get("replicas") not in (None, 1):
        raise _bad("--replicas applies to replicated services only")
    env = _strings(p, "env")
    for e in env:
        if "=" not in e or e.startswith("="):
            raise _bad(f"invalid environment variable {e!r}: expected KEY=VALUE")
    mounts = []
    for m in _maps(p, "mounts"):
        if not all(isinstance(m.get(k, ""), str) for k in ("type", "target", "source")):
            raise _bad(f"invalid mount {m!r}: type, source and target are strings")
        if m.get("type") not in ("bind", "volume", "tmpfs") or not str(m.get("target", "")).startswith("/"):
            raise _bad(f"invalid mount {m!r}: type is bind, volume or tmpfs and target an absolute path")
        if m["type"] != "tmpfs" and not m.get("source"):
            raise _bad(f"a {m['type']} mount needs a source")
        mounts.append(spec.Mount(m["type"], m["target"], str(m.get("source", "")), bool(m.get("readonly"))))
    constraints = _strings(p, "constraints")
    try:
        parse_constraints(list(constraints))
    except ConstraintError as exc:
        raise _bad(str(exc)) from None
    limits = spec.Resources(_number(p, "limit_cpu", 0), _number(p, "limit_memory", 0))
    reservations = spec.Resources(_number(p, "reserve_cpu", 0), _number(p, "reserve_memory", 0))
    for what, res in (("limit", limits), ("reservation", reservations)):
        if res.nano_cpus < 0 or res.memory_bytes < 0:
            raise _bad(f"a {what} cannot be negative")
    if 0 < limits.memory_bytes < MIN_MEMORY:
        raise _bad(f"the memory limit {limits.memory_bytes} bytes is below the runtime minimum of 6MiB")
    condition = p.get("restart_condition", "any")
    if condition not in ("none", "on-failure", "any"):
        raise _bad(f"invalid restart condition {condition!r}: use none, on-failure or any")
    restart = spec.RestartPolicy(condition, _number(p, "restart_delay", 5.0, float),
                                 _number(p, "restart_max_attempts", 0), _number(p, "restart_window", 0.0, float))
    if restart.delay < 0 or restart.max_attempts < 0:
        raise _bad("restart delay and max attempts cannot be negative")
    grace = _number(p, "stop_grace_period", 10.0, float)
    if grace < 0:
        raise _bad("the stop grace period cannot be negative")
    container = spec.ContainerSpec(image, _strings(p, "command"), env, tuple(mounts), grace,
                                   limits)
    endpoint_mode = p.get("endpoint_mode", "vip")
    if endpoint_mode not in ("vip", "dnsrr"):
        raise _bad(f"invalid endpoint mode {endpoint_mode!r}: use vip or dnsrr")
    ports = []
    for port in _maps(p, "ports"):
        try:
            pc = spec.PortConfig(_number(port, "target", 0), _number(port, "published", 0),
                                 str(port.get("protocol", "tcp")), str(port.get("mode", "ingress")))
        except ApiError:
            raise _bad(f"invalid published port {port!r}") from None
        if not 0 < pc.target < 65536 or not 0 <= pc.published < 65536:
            raise _bad(f"invalid port {port!r}: ports are 1-65535")
        if pc.protocol not in ("tcp", "udp") or pc.mode not in ("ingress", "host"):
            raise _bad(f"invalid port {port!r}: protocol is tcp or udp, mode ingress or host")
        if pc.mode == "host" and not pc.published:
            raise _bad("a port published in host mode needs its published port")
        if pc.mode == "ingress" and endpoint_mode == "dnsrr":
            raise _bad("a port published in ingress mode can't be used with dnsrr mode")
        if pc.published and any(q.published == pc.published and q.protocol == pc.protocol for q in ports):
            raise _bad(f"published port {pc.published}/{pc.protocol} is given twice")
        ports.append(pc)
    networks = _strings(p, "networks")
    labels = p.get("labels", {})
    if (not isinstance(labels, dict) or len(labels) > MAX_LIST
            or not all(isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 1024 and len(v) <= MAX_TEXT
                       for k, v in labels.items())):
        raise _bad("invalid labels: a map of at most 1000 non-empty names to strings")
    return spec.ServiceSpec(name, container, mode, replicas if mode == "replicated" else 0, constraints,
                            reservations, limits, restart, dict(labels), networks, endpoint_mode, tuple(ports))


def apply_update(old: spec.ServiceSpec, p: dict) -> spec.ServiceSpec:
    """The spec with only the given flags changed (docker service update)."""
    c = old.container
    env = list(p["env"]) if "env" in p else list(c.env)
    env = [e for e in env if e.split("=", 1)[0] not in set(p.get("env_rm", ()))]
    for e in p.get("env_add", ()):
        env = [x for x in env if x.split("=", 1)[0] != e.split("=", 1)[0]] + [e]
    constraints = list(p["constraints"]) if "constraints" in p else list(old.constraints)
    constraints = [x for x in constraints if x not in set(p.get("constraint_rm", ()))]
    constraints += [x for x in p.get("constraint_add", ()) if x not in constraints]
    merged = {
        "name": old.name, "image": p.get("image", c.image), "mode": old.mode,
        "replicas": p.get("replicas", old.replicas) if old.mode == "replicated" else None,
        "env": env, "mounts": p.get("mounts", [dataclasses.asdict(m) for m in c.mounts]), "constraints": constraints,
        "command": p.get("command", list(c.command)),
        "limit_cpu": p.get("limit_cpu", old.limits.nano_cpus), "limit_memory": p.get("limit_memory", old.limits.memory_bytes),
        "reserve_cpu": p.get("reserve_cpu", old.reservations.nano_cpus),
        "reserve_memory": p.get("reserve_memory", old.reservations.memory_bytes),
        "restart_condition": p.get("restart_condition", old.restart.condition),
        "restart_delay": p.get("restart_delay", old.restart.delay),
        "restart_max_attempts": p.get("restart_max_attempts", old.restart.max_attempts),
        "restart_window": p.get("restart_window", old.restart.window),
        "stop_grace_period": p.get("stop_grace_period", c.stop_grace_period), "labels": old.labels,
        "networks": p.get("networks", list(old.networks)), "endpoint_mode": p.get("endpoint_mode", old.endpoint_mode),
        "ports": p.get("ports", [dataclasses.asdict(x) for x in old.ports]),
    }
    if merged["mode"] == "global":
        merged.pop("replicas")
    return spec_from_params(merged)


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{seconds} second{'s' if seconds != 1 else ''} ago"


class ServiceAPI:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    def services(self) -> dict[str, spec.Service]:
        return {k: s for k, (s, _) in records.decode_all(self.m.raft.list(spec.SERVICE), spec.service_from_dict).items()}

    def tasks(self) -> list[spec.Task]:
        return [t for t, _ in records.decode_all(self.m.raft.list(spec.TASK), spec.task_from_dict).values()]

    def find(self, ref: str) -> spec.Service:
        return resolve_ref("service", self.services(), ref, lambda s: s.spec.name)

    async def handle(self, method: str, params: dict) -> Any:
        handler = {
            "service.create": self.create, "service.ls": self.ls, "service.ps": self.ps,
            "service.inspect": self.inspect, "service.update": self.update, "service.scale": self.scale,
            "service.rm": self.rm,
        }.get(method)
        if handler is None:
            raise ApiError("unknown_method", f"unknown service method {method}")
        return await handler(params)

    def _resolve_networks(self, params: dict) -> dict:
        if "networks" not in params:
            return params
        api = NetworkAPI(self.m)
        ids = []
        for ref in params["networks"]:
            try:
                net = api.find(str(ref))
            except ApiError:
                raise _bad(f"network {ref} not found") from None
            if net["ingress"]:
                raise _bad("the ingress network is attached by publishing a port, not with --network")
            ids.append(net["id"])
        return dict(params, networks=ids)

    async def create(self, params: dict) -> dict:
        s = spec_from_params(self._resolve_networks(params))
        if any(x.spec.name == s.name for x in self.services().values()):
            raise ApiError("conflict", f"a service named {s.name} already exists")
        images = set()
        for node in self.m.nodes().values():
            images.update(node.get("images", []))
        if not _image_known(s.container.image, images):
            raise _bad(f"image {s.container.image} not found on any node (import it with swarm image import)")
        self._check_ports_free(s, None)
        now = time.time()
        service = spec.Service(pki.new_id(), s, 1, now, now)
        try:
            await self.m.commit([Op.create(spec.SERVICE, service.id, model.encode(spec.to_dict(service)))])
        except ApiError as exc:
            if exc.code == "conflict":
                raise ApiError("conflict", f"a service named {s.name} already exists") from None
            raise
        return {"id": service.id, "name": s.name}

    def _running(self, service_id: str) -> int:
        return sum(1 for t in self.tasks() if t.service_id == service_id and t.status.state == "running"
                   and t.desired_state == "running")

    async def ls(self, params: dict) -> list[dict]:
        rows = []
        for s in sorted(self.services().values(), key=lambda x: x.spec.name):
            if s.spec.mode == "replicated":
                desired = s.spec.replicas
            else:
                desired = sum(1 for t in self.tasks() if t.service_id == s.id and t.desired_state == "running")
            ports = ", ".join(f"*:{p.published}->{p.target}/{p.protocol}" for p in s.ports)
            rows.append({"id": s.id, "name": s.spec.name, "mode": s.spec.mode,
                         "replicas": f"{self._running(s.id)}/{desired}", "image": s.spec.container.image,
                         "ports": ports})
        return rows

    async def ps(self, params: dict) -> list[dict]:
        refs = _refs(params)
        wanted = {self.find(r).id for r in refs} if refs else None
        nodes = self.m.nodes()
        now = time.time()
        rows = []
        # A slot (global: a node) together; its current task first, then its history newest first.
        def order(t: spec.Task) -> tuple:
            return (t.service_name, t.service_id, t.slot, "" if t.slot else t.node_id, t.desired_state != "running",
                    -t.created_at)

        for t in sorted(self.tasks(), key=order):
            if wanted is not None and t.service_id not in wanted:
                continue
            rows.append({
                "id": t.id, "name": t.name, "image": t.spec.image,
                "node": nodes.get(t.node_id, {}).get("hostname", t.node_id),
                "desired_state": t.desired_state,
                "current_state": f"{t.status.state} {age(now - t.status.timestamp)}" if t.status.timestamp
                else t.status.state,
                "error": t.status.err, "service_id": t.service_id, "slot": t.slot, "node_id": t.node_id,
                "state": t.status.state, "exit_code": t.status.exit_code, "spec_version": t.spec_version,
            })
        return rows

    async def inspect(self, params: dict) -> list[dict]:
        out = []
        for ref in _refs(params):
            view = spec.to_dict(self.find(ref))
            view["created_at"] = model.rfc3339(view["created_at"])
            view["updated_at"] = model.rfc3339(view["updated_at"])
            out.append(view)
        return out

    def _check_ports_free(self, new: spec.ServiceSpec, service_id: str | None) -> None:
        """Refuse a published port another service holds, as Docker does at create and update."""
        for other in self.services().values():
            if other.id == service_id:
                continue
            # SwarmKit's rule: an ingress port is the cluster's; host-mode ports may repeat
            # (the scheduler keeps them apart per node) but never clash with an ingress one.
            held = {(p.published, p.protocol): p.mode for p in (*other.spec.ports, *other.ports) if p.published}
            for port in new.ports:
                mode = held.get((port.published, port.protocol))
                if port.published and mode is not None and "ingress" in (mode, port.mode):
                    raise ApiError("conflict", f"port '{port.published}' is already in use by service "
                                               f"'{other.spec.name}' ({other.id}) as an {mode} port")

    async def _respec(self, service_id: str, respec: Callable[[spec.Service], spec.ServiceSpec]) -> dict:
        """Write the spec `respec` makes of the service as stored, with compare-and-set:
        a write in between (the allocator's, another update) is read again and
        `respec` applied to it."""
        def change(service: spec.Service) -> spec.Service:
            new_spec = respec(service)
            # Only a change that affects the tasks themselves rolls them; scaling does not.
            rolls = dataclasses.replace(new_spec, replicas=0) != dataclasses.replace(service.spec, replicas=0)
            return dataclasses.replace(service, spec=new_spec, spec_version=service.spec_version + (1 if rolls else 0),
                                       updated_at=time.time())

        service, _ = await self.m.compare_and_set(spec.SERVICE, service_id, change, what=f"service {service_id}",
                                                  decode=_decode_service, encode=_encode_service)
        return {"id": service.id, "name": service.spec.name}

    async def update(self, params: dict) -> dict:
        service = self.find(str(params.get("ref", "")))
        params = self._resolve_networks(params)

        def respec(current: spec.Service) -> spec.ServiceSpec:
            new_spec = apply_update(current.spec, params)
            self._check_ports_free(new_spec, current.id)
            if "image" in params and not _image_known(new_spec.container.image,
                                                      {i for n in self.m.nodes().values() for i in n.get("images", [])}):
                raise _bad(f"image {new_spec.container.image} not found on any node")
            return new_spec

        return await self._respec(service.id, respec)

    async def scale(self, params: dict) -> list[dict]:
        out = []
        scales = params.get("scales") or {}
        if not isinstance(scales, dict) or len(scales) > MAX_LIST:
            raise _bad("scales must be a map of services to replica counts")
        for ref, replicas in scales.items():
            service = self.find(ref)
            if service.spec.mode != "replicated":
                raise _bad(f"{service.spec.name}: scale can only be used with replicated mode")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= MAX_REPLICAS:
                raise _bad(f"invalid replicas value for {ref}: {replicas!r}")
            out.append(await self._respec(service.id, lambda s, n=replicas: dataclasses.replace(s.spec, replicas=n)))
        return out

    async def rm(self, params: dict) -> list[str]:
        removed = []
        for ref in _refs(params):
            service = self.find(ref)
            await self.m.commit([Op.delete(spec.SERVICE, service.id)])
            removed.append(service.spec.name)
        return removed


def _refs(params: dict) -> list[str]:
    refs = params.get("refs") or []
    if not isinstance(refs, list) or len(refs) > MAX_LIST or not all(isinstance(r, str) and len(r) <= 256 for r in refs):
        raise _bad("refs must be a list of service names or IDs")
    return refs


def _decode_service(data: bytes) -> spec.Service:
    return spec.service_from_dict(model.decode(data))


def _encode_service(service: spec.Service) -> bytes:
    return model.encode(spec.to_dict(service))


def _image_known(ref: str, images: set[str]) -> bool:
    candidates = {ref, ref if ":" in ref.rsplit("/", 1)[-1] else ref + ":latest"}
    return bool(candidates & images) or any(i.startswith(ref) for i in images if ref.startswith("sha256:"))

"""`stack deploy`, `ls`, `ps`, `services` and `rm` against the swarm, through the daemon.

How this works: `read_current` asks the daemon what the stack has now (its
services by the label com.docker.stack.namespace, every network, secret and
config by name). `plan` (pure) compares the converted stack with it and returns
the steps, or refuses the whole deploy with one sentence before anything is
written (an external network, secret or config that does not exist, a name
taken by an object outside the stack, a service whose mode would change).
A service that exists is compared with its current spec (`current_params`,
the params that would make that spec, against `desired_params`, the new ones
with the daemon's defaults filled in): only a service that differs is updated,
with every field given (so a key removed from the file goes back to its
default), and the daemon rolls its tasks with its update config; an unchanged
service is left alone, so re-deploying the same file changes nothing. With
--prune, the stack's services not in the file are removed. `apply` then makes
the calls in docker's order (networks, secrets, configs, services) and prints
docker's lines. The daemon is any object with `call(method, params)`.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from swarm.api import spec
from swarm.stack.convert import LABEL_IMAGE, LABEL_NAMESPACE, FileObject, Stack
from swarm.stack.errors import ComposeError

RESOLVE_ALWAYS, RESOLVE_CHANGED, RESOLVE_NEVER = "always", "changed", "never"
RESOLVE_CHOICES = (RESOLVE_ALWAYS, RESOLVE_CHANGED, RESOLVE_NEVER)


class Daemon(Protocol):
    def call(self, method: str, params: dict | None = None, timeout: float = ...) -> Any: ...


def stack_filter(namespace: str) -> dict[str, list[str]]:
    return {"label": [f"{LABEL_NAMESPACE}={namespace}"]}


@dataclass
class Current:
    """What the swarm holds that a deploy of `namespace` looks at."""
    services: dict[str, dict[str, Any]] = field(default_factory=dict)   # full name -> service.inspect view
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)   # name -> network.ls row
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)    # name -> secret.ls row
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def network_names(self) -> dict[str, str]:
        return {row["id"]: name for name, row in self.networks.items()}


def stack_services(daemon: Daemon, namespace: str) -> list[dict[str, Any]]:
    """The service.inspect views of the stack's services, by name."""
    rows = daemon.call("service.ls", {"filters": stack_filter(namespace)})
    if not rows:
        return []
    views = daemon.call("service.inspect", {"refs": [row["id"] for row in rows]})
    return sorted(views, key=lambda v: v["spec"]["name"])


def read_current(daemon: Daemon, namespace: str, *, files: bool = True) -> Current:
    current = Current()
    current.services = {v["spec"]["name"]: v for v in stack_services(daemon, namespace)}
    current.networks = {row["name"]: row for row in daemon.call("network.ls", {})}
    if files:
        current.secrets = {row["name"]: row for row in daemon.call("secret.ls", {})}
        current.configs = {row["name"]: row for row in daemon.call("config.ls", {})}
    return current


def read_data(objects: Sequence[FileObject], environ: Mapping[str, str], kind: str) -> dict[str, bytes]:
    """The value of each secret or config to create: its file, variable or content."""
    out = {}
    for obj in objects:
        if obj.file:
            try:
                with open(obj.file, "rb") as f:
                    out[obj.name] = f.read()
            except OSError as exc:
                raise ComposeError(f"cannot read the file of {kind} {obj.name}: {obj.file}: {exc.strerror}") from None
        elif obj.environment:
            if obj.environment not in environ:
                raise ComposeError(f"{kind} {obj.name} takes its value from the variable {obj.environment}, "
                                   "which is not set")
            out[obj.name] = environ[obj.environment].encode()
        else:
            out[obj.name] = (obj.content or "").encode()
    return out


# -- comparing a service with its current spec ---------------------------------------------------

_MOUNT_DEFAULTS = dataclasses.asdict(spec.Mount("volume", "/"))
_UPDATE_DEFAULTS = dataclasses.asdict(spec.UpdateConfig())


def _mount(m: Mapping[str, Any]) -> dict[str, Any]:
    return {**_MOUNT_DEFAULTS, **m}


def _refs(refs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({"source": r.get("source") or r.get("name"), "target": r.get("target"),
                    "uid": str(r.get("uid", "0")), "gid": str(r.get("gid", "0")), "mode": int(r.get("mode", 0o444))}
                   for r in refs), key=lambda r: (r["source"], r["target"]))


def _ports(ports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({"target": int(p["target"]), "published": int(p.get("published") or 0),
                    "protocol": p.get("protocol") or "tcp", "mode": p.get("mode") or "ingress"} for p in ports),
                  key=lambda x: (x["protocol"], x["target"], x["published"], x["mode"]))


def _health(h: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if h is None:
        return None
    out = {**dataclasses.asdict(spec.HealthConfig()), **h}
    return {**out, "test": list(out["test"]), **{k: float(out[k]) for k in ("interval", "timeout", "start_period",
                                                                            "start_interval")}}


def current_params(s: Mapping[str, Any], network_names: Mapping[str, str]) -> dict[str, Any]:
    """The params that would make the spec `s` (a service.inspect "spec"), networks by name."""
    c = s["container"]
    aliases = s.get("network_aliases") or {}
    out = {
        "image": c["image"], "command": list(c.get("command") or ()), "entrypoint": list(c.get("entrypoint") or ()),
        "env": list(c.get("env") or ()), "mounts": [_mount(m) for m in c.get("mounts") or ()],
        "stop_grace_period": float(c.get("stop_grace_period", 10.0)), "hostname": c.get("hostname", ""),
        "user": c.get("user", ""), "groups": list(c.get("groups") or ()), "workdir": c.get("workdir", ""),
        "init": c.get("init"), "tty": bool(c.get("tty")), "stop_signal": c.get("stop_signal", ""),
        "read_only": bool(c.get("read_only")), "cap_add": sorted(c.get("cap_add") or ()),
        "cap_drop": sorted(c.get("cap_drop") or ()), "sysctls": dict(c.get("sysctls") or {}),
        "ulimits": sorted((dict(u) for u in c.get("ulimits") or ()), key=lambda u: u["name"]),
        "limit_pids": int(c.get("pids_limit") or 0), "oom_score_adj": int(c.get("oom_score_adj") or 0),
        "dns": list((c.get("dns") or {}).get("nameservers") or ()),
        "dns_search": list((c.get("dns") or {}).get("search") or ()),
        "dns_options": list((c.get("dns") or {}).get("options") or ()), "hosts": list(c.get("hosts") or ()),
        "container_labels": dict(c.get("labels") or {}),
        "log_driver": (c.get("log_driver") or {}).get("name", "json-file"),
        "log_opts": dict((c.get("log_driver") or {}).get("options") or {}),
        "healthcheck": _health(c.get("healthcheck")),
        "secrets": _refs(c.get("secrets") or ()), "configs": _refs(c.get("configs") or ()),
        "constraints": list(s.get("constraints") or ()),
        "limit_cpu": int((s.get("limits") or {}).get("nano_cpus", 0)),
        "limit_memory": int((s.get("limits") or {}).get("memory_bytes", 0)),
        "reserve_cpu": int((s.get("reservations") or {}).get("nano_cpus", 0)),
        "reserve_memory": int((s.get("reservations") or {}).get("memory_bytes", 0)),
        "restart_condition": (s.get("restart") or {}).get("condition", "any"),
        "restart_delay": float((s.get("restart") or {}).get("delay", 5.0)),
        "restart_max_attempts": int((s.get("restart") or {}).get("max_attempts", 0)),
        "restart_window": float((s.get("restart") or {}).get("window", 0.0)),
        "labels": dict(s.get("labels") or {}),
        "networks": sorted(({"target": network_names.get(n, n), "aliases": list(aliases.get(n) or ())}
                            for n in s.get("networks") or ()), key=lambda n: n["target"]),
        "endpoint_mode": s.get("endpoint_mode", "vip"), "ports": _ports(s.get("ports") or ()),
        "placement_prefs": list(s.get("placement_prefs") or ()),
        "max_replicas_per_node": int(s.get("max_replicas_per_node") or 0),
        "max_concurrent": int(s.get("max_concurrent") or 0),
        "update_config": {**_UPDATE_DEFAULTS, **(s.get("update_config") or {})},
        "rollback_config": {**_UPDATE_DEFAULTS, **(s.get("rollback_config") or {})},
    }
    if s.get("mode", "replicated") in ("replicated", "replicated-job"):
        out["replicas"] = int(s.get("replicas", 1))
    return out


_DEFAULTS: dict[str, Any] = {
    "command": [], "entrypoint": [], "env": [], "mounts": [], "stop_grace_period": 10.0, "hostname": "", "user": "",
    "groups": [], "workdir": "", "init": None, "tty": False, "stop_signal": "", "read_only": False, "cap_add": [],
    "cap_drop": [], "sysctls": {}, "ulimits": [], "limit_pids": 0, "oom_score_adj": 0, "dns": [], "dns_search": [],
    "dns_options": [], "hosts": [], "container_labels": {}, "log_driver": "json-file", "log_opts": {},
    "healthcheck": None, "secrets": [], "configs": [], "constraints": [], "limit_cpu": 0, "limit_memory": 0,
    "reserve_cpu": 0, "reserve_memory": 0, "restart_condition": "any", "restart_delay": 5.0,
    "restart_max_attempts": 0, "restart_window": 0.0, "labels": {}, "networks": [], "endpoint_mode": "vip",
    "ports": [], "placement_prefs": [], "max_replicas_per_node": 0, "max_concurrent": 0,
    "update_config": _UPDATE_DEFAULTS, "rollback_config": _UPDATE_DEFAULTS,
}


def desired_params(p: Mapping[str, Any]) -> dict[str, Any]:
    """The converter's params with the daemon's default for every field not given, in
    current_params' shape (the name and mode left out: an update cannot change them)."""
    out = {**_DEFAULTS, **{k: v for k, v in p.items() if k not in ("name", "mode")}}
    out["mounts"] = [_mount(m) for m in out["mounts"]]
    out["healthcheck"] = _health(out["healthcheck"])
    out["secrets"], out["configs"] = _refs(out["secrets"]), _refs(out["configs"])
    out["ports"] = _ports(out["ports"])
    out["networks"] = sorted(({"target": n["target"], "aliases": list(n.get("aliases") or ())}
                              for n in out["networks"]), key=lambda n: n["target"])
    out["update_config"] = {**_UPDATE_DEFAULTS, **out["update_config"]}
    out["rollback_config"] = {**_UPDATE_DEFAULTS, **out["rollback_config"]}
    for key in ("stop_grace_period", "restart_delay", "restart_window"):
        out[key] = float(out[key])
    if p.get("mode", "replicated") not in ("replicated", "replicated-job"):
        out.pop("replicas", None)
    return out


def update_params(service_id: str, desired: Mapping[str, Any]) -> dict[str, Any]:
    """A service.update that sets every field: the capability lists start from RESET (the
    daemon merges cap_add/cap_drop otherwise), the rest replace the stored values."""
    params = {"ref": service_id, **desired}
    params["cap_add"] = ["RESET", *desired["cap_add"]]
    params["cap_drop"] = ["RESET", *desired["cap_drop"]]
    return params


# -- the plan ------------------------------------------------------------------------------------


@dataclass
class Step:
    method: str
    params: dict[str, Any]
    message: str          # docker's line ("Creating service vote_db")


def plan(stack: Stack, current: Current, data: Mapping[str, Mapping[str, bytes]], *, prune: bool = False,
         resolve_image: str = RESOLVE_ALWAYS, registry_auth: Callable[[str], str] | None = None) -> list[Step]:
    """The calls that make the swarm hold `stack` (ComposeError, before any call, when it cannot)."""
    steps: list[Step] = []
    ns = stack.namespace
    if prune:
        for name, view in sorted(current.services.items()):
            if name.removeprefix(f"{ns}_") not in stack.services:
                steps.append(Step("service.rm", {"refs": [view["id"]]}, f"Removing service {name}"))
    for name in stack.external_networks:
        if name not in current.networks:
            raise ComposeError(f'network "{name}" is declared as external, but could not be found. You need to create '
                               "a swarm-scoped network before the stack is deployed")
    for kind, names, existing in (("secret", stack.external_secrets, current.secrets),
                                  ("config", stack.external_configs, current.configs)):
        for name in names:
            if name not in existing:
                raise ComposeError(f"{kind} not found: {name} (it is declared as external: create it first)")
    for name, params in sorted(stack.networks.items()):
        row = current.networks.get(name)
        if row is None:
            steps.append(Step("network.create", dict(params), f"Creating network {name}"))
        elif (row.get("labels") or {}).get(LABEL_NAMESPACE) != ns:
            raise ComposeError(f"network {name} already exists and is not part of stack {ns} (remove it, or declare "
                               "it external)")
    for kind, objects, existing in (("secret", stack.secrets, current.secrets),
                                    ("config", stack.configs, current.configs)):
        for obj in objects:
            if obj.name in existing:
                continue       # SwarmKit lets only the labels of a secret or config change
            steps.append(Step(f"{kind}.create", {"name": obj.name, "labels": obj.labels,
                                                 "data": data[kind][obj.name]}, f"Creating {kind} {obj.name}"))
    names = current.network_names()
    for short, params in sorted(stack.services.items()):
        name = params["name"]
        view = current.services.get(name)
        auth = {"registry_auth": registry_auth(params["image"])} if registry_auth is not None else {}
        if view is None:
            create = {**params, **auth}
            if resolve_image == RESOLVE_NEVER:
                create["no_resolve_image"] = True
            steps.append(Step("service.create", create, f"Creating service {name}"))
            continue
        s = view["spec"]
        if s.get("mode", "replicated") != params["mode"]:
            raise ComposeError(f"service {name} cannot change its mode from {s.get('mode')} to {params['mode']} "
                               f"(service mode change is not allowed): remove it first (swarm service rm {name})")
        have = current_params(s, names)
        want = desired_params(params)
        same_image = s.get("labels", {}).get(LABEL_IMAGE) == params["image"]
        if same_image:
            want["image"] = have["image"]     # as pinned to its digest by the last deploy
        if want != have:
            update = {**update_params(view["id"], want), **auth}
            if resolve_image == RESOLVE_NEVER or (resolve_image == RESOLVE_CHANGED and same_image):
                update["no_resolve_image"] = True
            if not same_image or resolve_image == RESOLVE_ALWAYS:
                update["image"] = params["image"]
            steps.append(Step("service.update", update, f"Updating service {name} (id: {view['id']})"))
        elif resolve_image == RESOLVE_ALWAYS and same_image:
            # docker's "always": ask the registry again; the spec changes only if the tag moved
            steps.append(Step("service.update", {"ref": view["id"], "image": params["image"], **auth},
                              f"Updating service {name} (id: {view['id']})"))
    return steps


def apply(steps: Sequence[Step], daemon: Daemon, echo: Callable[[str], None],
          warn: Callable[[str], None]) -> list[str]:
    """Make the calls in order, printing docker's lines; the ids of the services created or updated."""
    ids = []
    for step in steps:
        echo(step.message)
        result = daemon.call(step.method, step.params, timeout=30.0)
        if step.method in ("service.create", "service.update"):
            for warning in result.get("warnings") or ():
                warn(warning)
            ids.append(result["id"])
    return ids


# -- ls, rm --------------------------------------------------------------------------------------


def stacks(daemon: Daemon) -> list[tuple[str, int]]:
    """(stack name, number of services), from the namespace label of every service that has one."""
    rows = daemon.call("service.ls", {"filters": {"label": [LABEL_NAMESPACE]}})
    if not rows:
        return []
    counts: dict[str, int] = {}
    for view in daemon.call("service.inspect", {"refs": [row["id"] for row in rows]}):
        name = (view["spec"].get("labels") or {}).get(LABEL_NAMESPACE)
        if name is not None:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts.items(), key=lambda item: _natural(item[0]))


def _natural(text: str) -> list[Any]:
    """docker's sortorder.NaturalLess: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def remove(daemon: Daemon, namespace: str, echo: Callable[[str], None], warn: Callable[[str], None]) -> bool:
    """docker's `stack rm` of one stack: its services, secrets, configs, then networks. False when
    something could not be removed (each failure said on stderr); nothing found is said too."""
    services = daemon.call("service.ls", {"filters": stack_filter(namespace)})
    networks = daemon.call("network.ls", {"filters": stack_filter(namespace)})
    secrets = daemon.call("secret.ls", {"filters": stack_filter(namespace)})
    configs = daemon.call("config.ls", {"filters": stack_filter(namespace)})
    if not (services or networks or secrets or configs):
        warn(f"Nothing found in stack: {namespace}")
        return True
    ok = True
    for kind, method, rows in (("service", "service.rm", sorted(services, key=lambda r: r["name"])),
                               ("secret", "secret.rm", secrets), ("config", "config.rm", configs),
                               ("network", "network.rm", networks)):
        for row in rows:
            echo(f"Removing {kind} {row['name']}")
            try:
                daemon.call(method, {"refs": [row["id"]]}, timeout=30.0)
            except Exception as exc:       # docker goes on with the others and says which failed
                ok = False
                warn(f"Failed to remove {kind} {row['id']}: {getattr(exc, 'message', exc)}")
    return ok

"""A merged compose file -> the control API's params, as docker/cli's cli/compose/convert.

How this works: `convert(compose_data, namespace, where)` returns a Stack value:
the networks to create (NAME_net, or the network's `name:`; NAME_default when a
service names none), the external networks to check, the secrets and configs
to create from their files (`external:` ones are only referenced), and one
`service.create` params dict per service (named NAME_svc). Every object gets
the label com.docker.stack.namespace=NAME; a service also gets
com.docker.stack.image (the image as written, to tell a changed image from a
re-pinned one) and its short name as an alias on every network it joins.
Durations are Go's ("1m30s"), sizes docker's ("64M"). Keys swarm does not use
are returned in `unsupported` for docker's "Ignoring unsupported options"
sentence; docker's forbidden keys (extends, mem_limit...) fail. Any value the
converter cannot use is a ComposeError naming the file, line and key. Pure.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from swarm.api import options, spec
from swarm.api.units import parse_memory
from swarm.stack.errors import ComposeError, Path, Where, error_at

LABEL_NAMESPACE = "com.docker.stack.namespace"
LABEL_IMAGE = "com.docker.stack.image"
DEFAULT_NETWORK = "default"

# docker/cli's types.UnsupportedProperties, DeprecatedProperties and ForbiddenProperties.
DOCKER_UNSUPPORTED = ("build", "cgroupns_mode", "cgroup_parent", "devices", "domainname", "external_links", "ipc",
                      "links", "mac_address", "network_mode", "pid", "privileged", "restart", "security_opt",
                      "shm_size", "userns_mode")
DEPRECATED = {"container_name": "Setting the container name is not supported.",
              "expose": "Exposing ports is unnecessary - services on the same network can access each other's "
                        "containers on any port."}
FORBIDDEN = {"extends": "Support for `extends` is not implemented yet.",
             "volume_driver": "Instead of setting the volume driver on the service, define a volume using the "
                              "top-level `volumes` option and specify the driver there.",
             "volumes_from": "To share a volume between services, define it using the top-level `volumes` option "
                             "and reference it from each service that shares it using the service-level `volumes` "
                             "option.",
             "cpu_quota": "Set resource limits using deploy.resources",
             "cpu_shares": "Set resource limits using deploy.resources",
             "cpuset": "Set resource limits using deploy.resources",
             "mem_limit": "Set resource limits using deploy.resources",
             "memswap_limit": "Set resource limits using deploy.resources"}
# The service keys the converter uses; any other one the schema allows is reported as ignored.
SUPPORTED = frozenset({
    "image", "command", "entrypoint", "environment", "env_file", "healthcheck", "hostname", "user", "working_dir",
    "read_only", "cap_add", "cap_drop", "sysctls", "ulimits", "logging", "stop_signal", "stop_grace_period", "ports",
    "extra_hosts", "dns", "dns_search", "dns_opt", "init", "tmpfs", "tty", "labels", "group_add", "oom_score_adj",
    "pids_limit", "networks", "volumes", "secrets", "configs", "deploy", "restart",
}) | {k for k in DEPRECATED} | {k for k in FORBIDDEN}
DEPLOY_SUPPORTED = frozenset({"mode", "replicas", "labels", "update_config", "rollback_config", "resources",
                              "restart_policy", "placement", "endpoint_mode"})
TOP_LEVEL_SUPPORTED = frozenset({"version", "name", "services", "networks", "volumes", "secrets", "configs"})


@dataclass
class FileObject:
    """A secret or config to create: its full name, labels and where its data is."""
    name: str
    labels: dict[str, str]
    file: str = ""                   # an absolute path
    environment: str = ""            # or the name of a variable (compose's `environment:`)
    content: str | None = None       # or inline text (a config's `content:`)


@dataclass
class Stack:
    namespace: str
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)     # full name -> network.create params
    external_networks: list[str] = field(default_factory=list)
    secrets: list[FileObject] = field(default_factory=list)
    configs: list[FileObject] = field(default_factory=list)
    external_secrets: list[str] = field(default_factory=list)
    external_configs: list[str] = field(default_factory=list)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)     # short name -> service.create params
    unsupported: list[str] = field(default_factory=list)                  # "Ignoring unsupported options: ..."
    deprecated: dict[str, str] = field(default_factory=dict)              # "Ignoring deprecated options: ..."


def scope(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def with_namespace(namespace: str, labels: Mapping[str, Any] | None) -> dict[str, str]:
    return {**{k: "" if v is None else str(v) for k, v in (labels or {}).items()}, LABEL_NAMESPACE: namespace}


# -- values --------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Go's time.ParseDuration ("1m30s", "500ms"; a bare number: seconds) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"is not a duration ({text!r}: use a number and a unit, like 10s, 1m30s or 500ms)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_cpus(value: Any) -> int:
    try:
        cpus = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"is not a number of CPUs ({value!r}: use a decimal, like 0.5 or 2)") from None
    if not cpus.is_finite() or cpus < 0:
        raise ValueError(f"is not a number of CPUs ({value!r}: use a decimal of 0 or more)")
    return int(cpus * 10**9)


def parse_bytes(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return parse_memory(str(value))
    except ValueError:
        raise ValueError(f"is not a size ({value!r}: use a number and a unit, like 64M or 1G)") from None


def _int(value: Any, what: str = "an integer") -> int:
    if isinstance(value, bool):
        raise ValueError(f"must be {what}, not {value!r}")
    try:
        return int(str(value).strip(), 10) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"must be {what}, not {value!r}") from None


# -- the stack -----------------------------------------------------------------------------


class _Converter:
    def __init__(self, data: Mapping[str, Any], namespace: str, where: Where) -> None:
        self.data = data
        self.ns = namespace
        self.where = where

    def bad(self, path: Sequence[object], message: str) -> ComposeError:
        return error_at(self.where, path, message)

    def value(self, path: Path, parse: Any, raw: Any) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            raise self.bad(path, str(exc)) from None

    def section(self, name: str) -> dict[str, dict[str, Any]]:
        return {k: dict(v or {}) for k, v in (self.data.get(name) or {}).items()}


def convert(data: Mapping[str, Any], namespace: str, where: Where | None = None) -> Stack:
    """The stack's objects and services, named and labelled as docker's `stack deploy` makes them."""
    c = _Converter(data, namespace, where or {})
    stack = Stack(namespace)
    services = data.get("services") or {}
    if not services:
        raise c.bad((), "the compose file has no services")
    _report(c, stack, services)
    _networks(c, stack, services)
    for kind, created, external in (("secrets", stack.secrets, stack.external_secrets),
                                    ("configs", stack.configs, stack.external_configs)):
        for name, obj in sorted(c.section(kind).items()):
            _file_object(c, kind, name, obj, created, external)
    for name in sorted(services):
        stack.services[name] = service_params(c, name, dict(services[name] or {}))
    return stack


def _report(c: _Converter, stack: Stack, services: Mapping[str, Any]) -> None:
    forbidden = sorted({k for s in services.values() for k in (s or {}) if k in FORBIDDEN})
    if forbidden:
        key = forbidden[0]
        path = next(("services", n, key) for n, s in sorted(services.items()) if key in (s or {}))
        raise c.bad(path, f"is not supported by swarm stacks: {FORBIDDEN[key]}")
    ignored = {k for s in services.values() for k in (s or {}) if k not in SUPPORTED and not k.startswith("x-")}
    ignored |= {k for s in services.values() for k in (s or {}) if k in DOCKER_UNSUPPORTED}
    ignored |= {f"deploy.{k}" for s in services.values() for k in ((s or {}).get("deploy") or {})
                if k not in DEPLOY_SUPPORTED and not k.startswith("x-")}
    ignored |= {k for k in c.data if k not in TOP_LEVEL_SUPPORTED and not k.startswith("x-")}
    stack.unsupported = sorted(ignored)
    stack.deprecated = {k: DEPRECATED[k] for s in services.values() for k in (s or {}) if k in DEPRECATED}


def _networks(c: _Converter, stack: Stack, services: Mapping[str, Any]) -> None:
    """docker's convert.Networks over the networks the services use (NAME_default if one names none)."""
    declared = c.section("networks")
    used = set()
    for name, s in services.items():
        nets = (s or {}).get("networks") or {}
        used |= set(nets) if nets else {DEFAULT_NETWORK}
        for net in nets:
            if net not in declared and net != DEFAULT_NETWORK:
                raise c.bad(("services", name, "networks", net), f"names the undefined network {net!r} (declare it "
                                                                   "under the top-level networks:)")
    for name in sorted(used):
        net = declared.get(name, {})
        path = ("networks", name)
        if net.get("external"):
            stack.external_networks.append(str(net.get("name") or name))
            continue
        driver = net.get("driver") or "overlay"
        if driver != "overlay":
            raise c.bad((*path, "driver"), f"is {driver!r}: only the overlay driver is supported in swarm scope")
        params: dict[str, Any] = {"name": str(net.get("name") or scope(c.ns, name)), "driver": "overlay",
                                  "attachable": bool(net.get("attachable")),
                                  "labels": with_namespace(c.ns, net.get("labels"))}
        subnets = [p.get("subnet") for p in ((net.get("ipam") or {}).get("config") or ()) if p.get("subnet")]
        if len(subnets) > 1:
            raise c.bad((*path, "ipam", "config"), "gives several subnets: a swarm network here has one")
        if subnets:
            try:
                params["subnet"] = str(ipaddress.ip_network(str(subnets[0]), strict=True))
            except ValueError as exc:
                raise c.bad((*path, "ipam", "config", 0, "subnet"), f"is not a subnet in CIDR form ({exc})") from None
        for key in ("internal", "enable_ipv6", "driver_opts"):
            if net.get(key):
                stack.unsupported.append(f"networks.{name}.{key}")
        stack.networks[params["name"]] = params


def _file_object(c: _Converter, kind: str, name: str, obj: Mapping[str, Any], created: list[FileObject],
                 external: list[str]) -> None:
    path = (kind, name)
    full = str(obj.get("name") or scope(c.ns, name))
    if obj.get("external"):
        external.append(full)
        return
    for key in ("driver", "template_driver"):
        if obj.get(key):
            raise c.bad((*path, key), f"is not supported: {kind} are created from a file here")
    labels = with_namespace(c.ns, obj.get("labels"))
    if obj.get("file"):
        # the path only: deploy reads the file, before anything is created
        created.append(FileObject(full, labels, file=os.path.abspath(str(obj["file"]))))
    elif obj.get("environment"):
        created.append(FileObject(full, labels, environment=str(obj["environment"])))
    elif kind == "configs" and obj.get("content") is not None:
        created.append(FileObject(full, labels, content=str(obj["content"])))
    else:
        raise c.bad(path, "needs file: (or external: true) to say where its data is")


def _object_name(c: _Converter, kind: str, key: str) -> str | None:
    obj = c.section(kind).get(key)
    if obj is None:
        return None
    return str(obj.get("name") or scope(c.ns, key))


# -- a service -----------------------------------------------------------------------------


def service_params(c: _Converter, name: str, s: Mapping[str, Any]) -> dict[str, Any]:
    """docker's convert.Service, as the params of `service.create`."""
    path: Path = ("services", name)
    deploy = dict(s.get("deploy") or {})
    image = s.get("image")
    if not image:
        raise c.bad(path, f"has no image (invalid image reference for service {name}: no image specified)")
    p: dict[str, Any] = {"name": scope(c.ns, name), "image": str(image)}
    p["labels"] = {**with_namespace(c.ns, deploy.get("labels")), LABEL_IMAGE: str(image)}
    _mode(c, path, deploy, p)
    for key, param in (("command", "command"), ("entrypoint", "entrypoint")):
        if s.get(key) is not None:
            p[param] = list(s[key])
    env = s.get("environment") or {}
    p["env"] = sorted(f"{k}={v}" for k, v in env.items() if v is not None)
    for key, param in (("hostname", "hostname"), ("user", "user"), ("working_dir", "workdir"),
                       ("stop_signal", "stop_signal")):
        if s.get(key):
            p[param] = str(s[key])
    for key in ("read_only", "tty"):
        if s.get(key) is not None:
            p[key] = bool(s[key])
    if s.get("init") is not None:
        p["init"] = bool(s["init"])
    if s.get("stop_grace_period") is not None:
        p["stop_grace_period"] = c.value((*path, "stop_grace_period"), parse_duration, s["stop_grace_period"])
    if s.get("oom_score_adj") is not None:
        p["oom_score_adj"] = c.value((*path, "oom_score_adj"), _int, s["oom_score_adj"])
    if s.get("pids_limit") is not None:
        p["limit_pids"] = max(0, c.value((*path, "pids_limit"), _int, s["pids_limit"]))
    _capabilities(c, path, s, p)
    if s.get("sysctls"):
        p["sysctls"] = {k: str(v) for k, v in s["sysctls"].items()}
    if s.get("ulimits"):
        p["ulimits"] = [{"name": n, "soft": c.value((*path, "ulimits", n), _int, u.get("soft")),
                         "hard": c.value((*path, "ulimits", n), _int, u.get("hard"))}
                        for n, u in sorted(s["ulimits"].items())]
    if s.get("labels"):
        p["container_labels"] = with_namespace(c.ns, s["labels"])
    else:
        p["container_labels"] = with_namespace(c.ns, {})
    if s.get("group_add"):
        p["groups"] = [str(g) for g in s["group_add"]]
    _dns(c, path, s, p)
    if s.get("extra_hosts"):
        # docker's convertExtraHosts: HOST:IP -> "IP HOST" (SwarmKit's notation), in order
        p["hosts"] = [f"{ip} {host}" for host, _, ip in (h.partition(":") for h in s["extra_hosts"])]
    logging = s.get("logging")
    if logging:
        if logging.get("driver"):
            p["log_driver"] = str(logging["driver"])
        if logging.get("options"):
            p["log_opts"] = {k: str(v) for k, v in logging["options"].items()}
    if s.get("healthcheck") is not None:
        p["healthcheck"] = _healthcheck(c, (*path, "healthcheck"), s["healthcheck"])
    _resources(c, (*path, "deploy", "resources"), deploy.get("resources") or {}, p)
    _restart(c, path, s.get("restart"), deploy.get("restart_policy"), p)
    placement = deploy.get("placement") or {}
    if placement.get("constraints"):
        p["constraints"] = [str(x) for x in placement["constraints"]]
    if placement.get("preferences"):
        p["placement_prefs"] = [f"spread={pref.get('spread', '')}" for pref in placement["preferences"]]
    if placement.get("max_replicas_per_node"):
        p["max_replicas_per_node"] = c.value((*path, "deploy", "placement", "max_replicas_per_node"), _int,
                                             placement["max_replicas_per_node"])
    for key in ("update_config", "rollback_config"):
        if deploy.get(key) is not None:
            p[key] = _update_config(c, (*path, "deploy", key), deploy[key])
    if deploy.get("endpoint_mode"):
        p["endpoint_mode"] = str(deploy["endpoint_mode"]).lower()
    p["ports"] = sorted(({"target": port["target"], "published": port["published"], "protocol": port["protocol"],
                          "mode": port["mode"]} for port in s.get("ports") or ()),
                        key=lambda x: (x["protocol"], x["target"], x["published"], x["mode"]))
    p["mounts"] = _mounts(c, path, s)
    p["networks"] = _service_networks(c, path, name, s.get("networks") or {})
    for kind in ("secrets", "configs"):
        p[kind] = _file_refs(c, path, kind, s.get(kind) or ())
    return p


def _mode(c: _Converter, path: Path, deploy: Mapping[str, Any], p: dict[str, Any]) -> None:
    mode = str(deploy.get("mode") or "replicated")
    if mode not in ("replicated", "global", "replicated-job", "global-job"):
        raise c.bad((*path, "deploy", "mode"), f"is {mode!r}: use replicated, global, replicated-job or global-job")
    p["mode"] = mode
    if deploy.get("replicas") is not None:
        if mode in ("global", "global-job"):
            raise c.bad((*path, "deploy", "replicas"), "can only be used with replicated or replicated-job mode")
        replicas = c.value((*path, "deploy", "replicas"), lambda v: _int(v, "a number of replicas"),
                           deploy["replicas"])
        if replicas < 0:
            raise c.bad((*path, "deploy", "replicas"), f"must be 0 or more, not {replicas}")
        p["replicas"] = replicas
    elif mode in ("replicated", "replicated-job"):
        p["replicas"] = 1


def _capabilities(c: _Converter, path: Path, s: Mapping[str, Any], p: dict[str, Any]) -> None:
    """docker's EffectiveCapAddCapDrop: normalized, sorted, ALL alone; one both added and dropped is added."""
    lists = {}
    for key in ("cap_add", "cap_drop"):
        caps = set()
        for i, name in enumerate(s.get(key) or ()):
            caps.add(c.value((*path, key, i), options.normalize_capability, str(name)))
        lists[key] = {options.ALL} if options.ALL in caps else caps
    if lists["cap_add"]:
        p["cap_add"] = sorted(lists["cap_add"])
    if lists["cap_drop"] - lists["cap_add"]:
        p["cap_drop"] = sorted(lists["cap_drop"] - lists["cap_add"])


def _dns(c: _Converter, path: Path, s: Mapping[str, Any], p: dict[str, Any]) -> None:
    nameservers = []
    for i, ip in enumerate(s.get("dns") or ()):
        try:
            nameservers.append(str(ipaddress.ip_address(str(ip))))
        except ValueError:
            raise c.bad((*path, "dns", i), f"is not an IP address ({ip!r})") from None
    for key, param, values in (("dns", "dns", nameservers), ("dns_search", "dns_search", s.get("dns_search")),
                               ("dns_opt", "dns_options", s.get("dns_opt"))):
        if values:
            p[param] = [str(v) for v in values]


def _healthcheck(c: _Converter, path: Path, h: Mapping[str, Any]) -> dict[str, Any]:
    if h.get("disable"):
        if h.get("test"):
            raise c.bad(path, "sets both test and disable (test and disable can't be set at the same time)")
        return {"test": ["NONE"]}
    out: dict[str, Any] = {"test": [str(w) for w in h.get("test") or ()]}
    for key in ("interval", "timeout", "start_period", "start_interval"):
        out[key] = c.value((*path, key), parse_duration, h[key]) if h.get(key) is not None else 0.0
    out["retries"] = c.value((*path, "retries"), _int, h["retries"]) if h.get("retries") is not None else 0
    return out


def _resources(c: _Converter, path: Path, r: Mapping[str, Any], p: dict[str, Any]) -> None:
    for kind, prefix in (("limits", "limit"), ("reservations", "reserve")):
        values = r.get(kind) or {}
        p[f"{prefix}_cpu"] = c.value((*path, kind, "cpus"), parse_cpus, values["cpus"]) if values.get("cpus") else 0
        p[f"{prefix}_memory"] = (c.value((*path, kind, "memory"), parse_bytes, values["memory"])
                                 if values.get("memory") else 0)
    pids = (r.get("limits") or {}).get("pids")
    if pids:
        p["limit_pids"] = c.value((*path, "limits", "pids"), _int, pids)


def _restart(c: _Converter, path: Path, restart: Any, policy: Mapping[str, Any] | None, p: dict[str, Any]) -> None:
    """deploy.restart_policy, else the legacy `restart:` (docker's convertRestartPolicy)."""
    if policy is not None:
        where = (*path, "deploy", "restart_policy")
        condition = str(policy.get("condition") or "any")
        if condition not in ("none", "on-failure", "any"):
            raise c.bad((*where, "condition"), f"is {condition!r}: use none, on-failure or any")
        p["restart_condition"] = condition
        p["restart_delay"] = (c.value((*where, "delay"), parse_duration, policy["delay"])
                              if policy.get("delay") is not None else 5.0)
        p["restart_max_attempts"] = (c.value((*where, "max_attempts"), _int, policy["max_attempts"])
                                     if policy.get("max_attempts") is not None else 0)
        p["restart_window"] = (c.value((*where, "window"), parse_duration, policy["window"])
                               if policy.get("window") is not None else 0.0)
        return
    if not restart:
        return
    name, _, count = str(restart).partition(":")
    if name == "no":
        return
    attempts = c.value((*path, "restart"), _int, count) if count else 0
    if name in ("always", "unless-stopped"):
        p["restart_condition"] = "any"
    elif name == "on-failure":
        p["restart_condition"] = "on-failure"
    else:
        raise c.bad((*path, "restart"), f"is {restart!r}: use no, always, on-failure or unless-stopped")
    p["restart_max_attempts"] = max(0, attempts)


def _update_config(c: _Converter, path: Path, u: Mapping[str, Any]) -> dict[str, Any]:
    """docker's convertUpdateConfig (parallelism 1 when not given), with the daemon's defaults for the rest."""
    out = dataclasses.asdict(spec.UpdateConfig())
    if u.get("parallelism") is not None:
        out["parallelism"] = c.value((*path, "parallelism"), _int, u["parallelism"])
    for key in ("delay", "monitor"):
        if u.get(key) is not None:
            out[key] = c.value((*path, key), parse_duration, u[key])
    if u.get("failure_action"):
        out["failure_action"] = str(u["failure_action"])
    if u.get("max_failure_ratio") is not None:
        out["max_failure_ratio"] = float(u["max_failure_ratio"])
    if u.get("order"):
        out["order"] = str(u["order"])
    return out


def _mounts(c: _Converter, path: Path, s: Mapping[str, Any]) -> list[dict[str, Any]]:
    """docker's convert.Volumes (volume, bind and tmpfs mounts), then `tmpfs:` paths as tmpfs mounts."""
    volumes = c.section("volumes")
    mounts = []
    for i, v in enumerate(s.get("volumes") or ()):
        where = (*path, "volumes", i)
        kind = v.get("type", "volume")
        mount: dict[str, Any] = {"type": kind, "target": str(v["target"]), "source": str(v.get("source") or ""),
                                 "readonly": bool(v.get("read_only"))}
        for other in ("bind", "volume", "tmpfs"):
            if other != kind and v.get(other):
                raise c.bad(where, f"has {other} options, which are incompatible with type {kind}")
        if kind == "volume":
            if mount["source"]:
                declared = volumes.get(mount["source"])
                if declared is None:
                    raise c.bad(where, f"names the undefined volume {mount['source']!r} (declare it under the "
                                       "top-level volumes:)")
                name = declared.get("name") or scope(c.ns, mount["source"])
                if not declared.get("external"):
                    mount["volume_labels"] = with_namespace(c.ns, declared.get("labels"))
                    if (declared.get("driver") or "local") != "local":
                        raise c.bad(("volumes", mount["source"], "driver"), "is not local: only the local volume "
                                                                            "driver is supported")
                    if declared.get("driver_opts"):
                        mount["volume_opts"] = {k: str(x) for k, x in declared["driver_opts"].items()}
                mount["source"] = str(name)
            if (v.get("volume") or {}).get("nocopy"):
                mount["volume_nocopy"] = True
        elif kind == "bind":
            propagation = (v.get("bind") or {}).get("propagation")
            if propagation:
                mount["bind_propagation"] = str(propagation)
        elif kind == "tmpfs":
            if mount["source"]:
                raise c.bad(where, "is a tmpfs mount with a source (a tmpfs has none)")
            t = v.get("tmpfs") or {}
            if t.get("size"):
                mount["tmpfs_size"] = c.value((*where, "tmpfs", "size"), parse_bytes, t["size"])
            if t.get("mode"):
                mount["tmpfs_mode"] = c.value((*where, "tmpfs", "mode"), lambda m: int(str(m), 8) if isinstance(m, str)
                                              else int(m), t["mode"])
        else:
            raise c.bad((*where, "type"), f"is {kind!r}: use volume, bind or tmpfs")
        mounts.append(mount)
    for i, item in enumerate(s.get("tmpfs") or ()):
        target, _, opts = str(item).partition(":")
        mount = {"type": "tmpfs", "target": target, "source": "", "readonly": False}
        for opt in filter(None, opts.split(",")):
            key, _, value = opt.partition("=")
            if key == "size":
                mount["tmpfs_size"] = c.value((*path, "tmpfs", i), parse_bytes, value)
            elif key == "mode":
                mount["tmpfs_mode"] = c.value((*path, "tmpfs", i), lambda m: int(m, 8), value)
        mounts.append(mount)
    return mounts


def _service_networks(c: _Converter, path: Path, name: str, nets: Mapping[str, Any]) -> list[dict[str, Any]]:
    """docker's convertServiceNetworks: each network by its full name, with the aliases given and the
    service's short name (so that `db` resolves on every network of the stack), sorted by target."""
    declared = c.section("networks")
    out = []
    for net, config in (nets or {DEFAULT_NETWORK: None}).items():
        d = declared.get(net, {})
        target = str(d.get("name") or scope(c.ns, net))
        aliases = [str(a) for a in ((config or {}).get("aliases") or ())]
        out.append({"target": target, "aliases": aliases + ([name] if name not in aliases else [])})
    return sorted(out, key=lambda n: n["target"])


def _file_refs(c: _Converter, path: Path, kind: str, refs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """docker's convertFileObject: the full name, target (default: the key), uid and gid "0", mode 0444;
    sorted by name."""
    out = []
    for i, ref in enumerate(refs):
        key = str(ref.get("source") or "")
        name = _object_name(c, kind, key)
        if name is None:
            raise c.bad((*path, kind, i), f"names the undefined {kind[:-1]} {key!r} (declare it under the top-level "
                                          f"{kind}:)")
        target = str(ref.get("target") or key)     # a relative target: under /run/secrets, or / for a config
        mode = ref.get("mode")
        out.append({"source": name, "target": target, "uid": str(ref.get("uid") or "0"),
                    "gid": str(ref.get("gid") or "0"),
                    "mode": 0o444 if mode is None else c.value((*path, kind, i, "mode"), _int, mode)})
    return sorted(out, key=lambda r: r["source"])

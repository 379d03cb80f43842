"""Service specs from the params of `service.create` (and, through specupdate, `service.update`).

How this works: `spec_from_params` decodes a create's params into a
ServiceSpec, checking every field before anything is written (its type, its
range, its size, and Docker's rules: capabilities, namespaced sysctls,
ulimits, signals, templates, mounts, DNS, modes, the update and rollback
configs, the healthcheck). A bad one raises ApiError bad_request with one
sentence naming the flag. The field checks are in specchecks, the container's
parts with rules of their own in specparts, networks, secrets and configs in
specrefs, the update/rollback configs and the healthcheck in specconfigs;
`apply_update` (specupdate) merges an update into the stored spec's params and
checks the result here. Secrets and configs: the control API first calls
`specrefs.resolve_files` with the names in the store, which turns the names a
client gives into references by id. Pure: no store, no clock.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping

from swarm.api import options, servicetemplate, spec
from swarm.api.errors import ApiError
from swarm.manager.controlapi.specchecks import bad, boolean, maps, number, string_map, strings, text
from swarm.manager.controlapi.specconfigs import parse_healthcheck, parse_update_config
from swarm.manager.controlapi.specparts import (parse_capabilities, parse_dns, parse_hosts, parse_log_driver,
                                                parse_mount, parse_ulimits, parse_user)
from swarm.manager.controlapi.specrefs import parse_file_refs, parse_networks
from swarm.manager.scheduler import ConstraintError, PreferenceError, parse_constraints, parse_preferences

MIN_MEMORY = 6 * 1024 * 1024  # below this runc cannot start a container
MAX_REPLICAS = 100_000
MODES = ("replicated", "global", "replicated-job", "global-job")
REPLICATED_MODES = ("replicated", "replicated-job")
HOST_NAME_MAX = 64                        # the kernel's limit of a hostname


def _container(p: Mapping, image: str, limits: spec.Resources, labels: Mapping[str, str]) -> spec.ContainerSpec:
    env = strings(p, "env")
    for e in env:
        if "=" not in e or e.startswith("="):
            raise bad(f"invalid environment variable {e!r}: expected KEY=VALUE")
    mounts = tuple(parse_mount(m) for m in maps(p, "mounts"))
    targets = [m.target for m in mounts]
    if len(set(targets)) != len(targets):
        raise bad(f"invalid --mount: duplicate mount point {next(t for t in targets if targets.count(t) > 1)}")
    grace = number(p, "stop_grace_period", 10.0, float)
    if grace < 0:
        raise bad("the stop grace period cannot be negative")
    hostname = text(p, "hostname", "--hostname", 1024)
    outside = re.sub(r"\{\{.*?\}\}", "", hostname)       # a template may hold spaces; the name may not
    if any(c.isspace() or not c.isprintable() for c in outside) or (
            "{{" not in hostname and len(hostname) > HOST_NAME_MAX):
        raise bad(f"invalid --hostname {hostname[:80]!r}: a hostname has no spaces and at most "
                  f"{HOST_NAME_MAX} characters")
    user, groups = parse_user(p)
    workdir = text(p, "workdir", "--workdir")
    if workdir and not workdir.startswith("/"):
        raise bad(f"invalid --workdir: {workdir!r} is not an absolute path")
    init = p.get("init")
    if init is not None and not isinstance(init, bool):
        raise bad("invalid --init: expected true or false")
    stop_signal = text(p, "stop_signal", "--stop-signal", 32)
    if stop_signal:
        try:
            options.parse_signal(stop_signal)
        except ValueError as exc:
            raise bad(f"invalid --stop-signal: {exc}") from None
    cap_add, cap_drop = parse_capabilities(p)
    sysctls = string_map(p, "sysctls", "--sysctl")
    for key, value in sysctls.items():
        try:
            options.check_sysctl(key, value)
        except ValueError as exc:
            raise bad(f"invalid --sysctl: {exc}") from None
    pids = number(p, "limit_pids", 0)
    if pids < 0:
        raise bad(f"invalid --limit-pids {pids}: use 0 for no limit")
    oom = number(p, "oom_score_adj", 0)
    if not -1000 <= oom <= 1000:
        raise bad(f"invalid --oom-score-adj {oom}: it is from -1000 to 1000")
    force_update = number(p, "force_update", 0)
    if force_update < 0:
        raise bad(f"invalid force_update {force_update}: a counter of 0 or more")
    container = spec.ContainerSpec(
        image, strings(p, "command"), env, mounts, grace, limits,
        entrypoint=strings(p, "entrypoint"), hostname=hostname, user=user, groups=groups, workdir=workdir,
        init=init, tty=boolean(p, "tty", "--tty"), stop_signal=stop_signal,
        read_only=boolean(p, "read_only", "--read-only"), cap_add=cap_add, cap_drop=cap_drop, sysctls=sysctls,
        ulimits=parse_ulimits(p), pids_limit=pids, oom_score_adj=oom, dns=parse_dns(p), hosts=parse_hosts(p),
        labels=string_map(p, "container_labels", "--container-label"), log_driver=parse_log_driver(p),
        healthcheck=parse_healthcheck(p), force_update=force_update, secrets=parse_file_refs(p, "secrets"),
        configs=parse_file_refs(p, "configs"))
    try:
        servicetemplate.check_container(container, labels)
    except servicetemplate.TemplateError as exc:
        raise bad(str(exc)) from None
    return container


def _mode(p: Mapping) -> tuple[str, int, int, int]:
    """mode, replicas, max_concurrent, max_replicas_per_node, with docker's rules between them."""
    mode = p.get("mode", "replicated")
    if mode not in MODES:
        raise bad(f"invalid mode {mode!r}: use replicated, global, replicated-job or global-job")
    replicas = p.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= MAX_REPLICAS:
        raise bad(f"invalid replicas {replicas!r}: a number of replicas is from 0 to {MAX_REPLICAS}")
    if mode not in REPLICATED_MODES and p.get("replicas") not in (None, 1):
        raise bad("--replicas can only be used with replicated or replicated-job mode")
    concurrent = number(p, "max_concurrent", 0)
    if not 0 <= concurrent <= MAX_REPLICAS:
        raise bad(f"invalid --max-concurrent {concurrent}: from 0 (as many as --replicas) to {MAX_REPLICAS}")
    if concurrent and mode != "replicated-job":
        raise bad("--max-concurrent can only be used with replicated-job mode")
    per_node = number(p, "max_replicas_per_node", 0)
    if not 0 <= per_node <= MAX_REPLICAS:
        raise bad(f"invalid --replicas-max-per-node {per_node}: 0 (no limit) or more")
    if per_node and mode not in REPLICATED_MODES:
        raise bad("--replicas-max-per-node can only be used with replicated or replicated-job mode")
    return mode, replicas if mode in REPLICATED_MODES else 0, concurrent, per_node


def _ports(p: Mapping, endpoint_mode: str) -> tuple[spec.PortConfig, ...]:
    ports: list[spec.PortConfig] = []
    for port in maps(p, "ports"):
        try:
            pc = spec.PortConfig(number(port, "target", 0), number(port, "published", 0),
                                 str(port.get("protocol", "tcp")), str(port.get("mode", "ingress")))
        except ApiError:
            raise bad(f"invalid published port {port!r}") from None
        if not 0 < pc.target < 65536 or not 0 <= pc.published < 65536:
            raise bad(f"invalid port {port!r}: ports are 1-65535")
        if pc.protocol not in ("tcp", "udp") or pc.mode not in ("ingress", "host"):
            raise bad(f"invalid port {port!r}: protocol is tcp or udp, mode ingress or host")
        if pc.mode == "host" and not pc.published:
            raise bad("a port published in host mode needs its published port")
        if pc.mode == "ingress" and endpoint_mode == "dnsrr":
            raise bad("a port published in ingress mode can't be used with dnsrr mode")
        if pc.published and any(q.published == pc.published and q.protocol == pc.protocol for q in ports):
            raise bad(f"published port {pc.published}/{pc.protocol} is given twice")
        ports.append(pc)
    return tuple(ports)


def spec_from_params(p: dict) -> spec.ServiceSpec:
    """Build and validate a ServiceSpec from the CLI's parameters (anything a client
    sends: every field's type, range and size is checked here, before any write)."""
    try:
        name = spec.check_name("service", p.get("name"))
    except spec.InvalidRecord as exc:
        raise bad(str(exc)) from None
    image = p.get("image") or ""
    if not isinstance(image, str) or not image:
        raise bad("an image is required")
    if len(image) > 512 or not image.isprintable() or " " in image:
        raise bad(f"invalid image reference {image[:80]!r}")
    mode, replicas, concurrent, per_node = _mode(p)
    constraints = strings(p, "constraints")
    try:
        parse_constraints(list(constraints))
    except ConstraintError as exc:
        raise bad(str(exc)) from None
    prefs = strings(p, "placement_prefs")
    try:
        parse_preferences(prefs)
    except PreferenceError as exc:
        raise bad(f"--placement-pref: {exc}") from None
    limits = spec.Resources(number(p, "limit_cpu", 0), number(p, "limit_memory", 0))
    reservations = spec.Resources(number(p, "reserve_cpu", 0), number(p, "reserve_memory", 0))
    for what, res in (("limit", limits), ("reservation", reservations)):
        if res.nano_cpus < 0 or res.memory_bytes < 0:
            raise bad(f"a {what} cannot be negative")
    if 0 < limits.memory_bytes < MIN_MEMORY:
        raise bad(f"the memory limit {limits.memory_bytes} bytes is below the runtime minimum of 6MiB")
    condition = p.get("restart_condition", "any")
    if condition not in ("none", "on-failure", "any"):
        raise bad(f"invalid restart condition {condition!r}: use none, on-failure or any")
    restart = spec.RestartPolicy(condition, number(p, "restart_delay", 5.0, float),
                                 number(p, "restart_max_attempts", 0), number(p, "restart_window", 0.0, float))
    if restart.delay < 0 or restart.max_attempts < 0:
        raise bad("restart delay and max attempts cannot be negative")
    labels = string_map(p, "labels", "labels")
    container = _container(p, image, limits, labels)
    endpoint_mode = p.get("endpoint_mode", "vip")
    if endpoint_mode not in ("vip", "dnsrr"):
        raise bad(f"invalid endpoint mode {endpoint_mode!r}: use vip or dnsrr")
    ports = _ports(p, endpoint_mode)
    update_config, rollback_config = parse_update_config(p, "update_config"), parse_update_config(p, "rollback_config")
    if mode in spec.JOB_MODES and (update_config, rollback_config) != (spec.UpdateConfig(), spec.UpdateConfig()):
        raise bad("update and rollback configuration is not supported for jobs")
    networks, aliases = parse_networks(p)
    return spec.ServiceSpec(name, container, mode, replicas, constraints, reservations, limits, restart, labels,
                            networks, endpoint_mode, ports, prefs, per_node, concurrent,
                            update_config, rollback_config, aliases, _platforms(p))


MAX_PLATFORMS = 64
_PLATFORM = re.compile(r"[a-z0-9_.-]{0,32}/[a-z0-9_.-]{0,32}(/[a-z0-9_.-]{1,32})?")


def _platforms(p: dict) -> tuple[str, ...]:
    """Placement.Platforms as docker/cli copies them from the image's index: "os/arch[/variant]"."""
    platforms = strings(p, "platforms")
    if len(platforms) > MAX_PLATFORMS:
        raise bad(f"a service names at most {MAX_PLATFORMS} platforms")
    for platform in platforms:
        if not _PLATFORM.fullmatch(platform):
            raise bad(f"invalid platform {platform[:80]!r}: expected OS/ARCHITECTURE, like linux/amd64")
    return tuple(platforms)


# -- registry options (not part of the spec) ----------------------------------------------------


MAX_REGISTRY_AUTH = 16 * 1024    # an encoded auth config: a user name, a password or token, a server


def registry_options(p: Mapping) -> tuple[str | None, bool]:
    """(registry_auth, no_resolve_image) of a create's or update's params: the encoded auth
    config `--with-registry-auth` sent (None when not given; "" for none, as a CLI without
    credentials sends), checked to be Docker's (base64url of a JSON object of strings) and
    bounded; and whether `--no-resolve-image` asked to keep the image reference as given."""
    no_resolve = boolean(p, "no_resolve_image", "--no-resolve-image")
    if "registry_auth" not in p:
        return None, no_resolve
    auth = p["registry_auth"]
    if not isinstance(auth, str) or len(auth) > MAX_REGISTRY_AUTH:
        raise bad(f"invalid --with-registry-auth: expected an encoded auth config of at most "
                  f"{MAX_REGISTRY_AUTH} characters")
    if auth and not _is_encoded_auth(auth):
        raise bad("invalid --with-registry-auth: not an encoded auth config (base64url of a JSON object)")
    return auth, no_resolve


def _is_encoded_auth(auth: str) -> bool:
    try:
        doc = json.loads(base64.urlsafe_b64decode(auth + "=" * (-len(auth) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(doc, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items())

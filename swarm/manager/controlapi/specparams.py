"""Service specs from the params of `service.create` and `service.update`.

How this works: `spec_from_params` decodes a create's params into a
ServiceSpec, checking every field before anything is written (its type, its
range, its size, and Docker's rules: capabilities, namespaced sysctls,
ulimits, signals, templates, mounts, DNS, modes, the update and rollback
configs, the healthcheck). A bad one raises ApiError bad_request with one
sentence naming the flag. `apply_update` turns the stored spec back into
params (`params_of`), lets the fields given replace theirs, merges the
X_add/X_rm pairs as docker/cli's update.go does (labels, mounts by target,
sysctls, ulimits by name, DNS, hosts, groups, placement preferences,
capabilities) and the fields of "update_config", "rollback_config" and
"healthcheck" into the stored ones, then checks the result with
`spec_from_params`: an update is checked exactly as a create. ("force" and
"rollback" are the control API's business.) Secrets and configs: the control
API first calls `resolve_files` with the names in the store, which turns
the names a client gives into references by id; --secret-rm/--config-rm
remove by name. Pure: no store, no clock.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from swarm.api import logdriver, options, secrets, servicetemplate, spec
from swarm.api.errors import ApiError
from swarm.manager.scheduler import ConstraintError, PreferenceError, parse_constraints, parse_preferences

MIN_MEMORY = 6 * 1024 * 1024  # below this runc cannot start a container
MAX_REPLICAS = 100_000
MAX_LIST = 1000          # env entries, mounts, constraints, ports, networks, labels, command words
MAX_TEXT = 64 * 1024     # one string of a spec
MODES = ("replicated", "global", "replicated-job", "global-job")
REPLICATED_MODES = ("replicated", "replicated-job")
BIND_PROPAGATIONS = ("", "private", "rprivate", "shared", "rshared", "slave", "rslave")
BIND_RECURSIVE = ("enabled", "disabled", "writable", "readonly")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")   # docker's volume names
_DOMAIN = re.compile(r"(?=.*[a-zA-Z])(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
                     r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*\.?")
_NAME = re.compile(r"[^:\s]+")            # a user or group name or id
HOST_NAME_MAX = 64                        # the kernel's limit of a hostname
MAX_ALIASES = 100                         # DNS aliases of a service on one network
_ALIAS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_ALIAS = re.compile(rf"{_ALIAS_LABEL}(?:\.{_ALIAS_LABEL})*")   # a DNS name the embedded DNS can serve


def _bad(message: str) -> ApiError:
    return ApiError("bad_request", message)


def _number(p: Mapping, key: str, default: float, kind: type = int) -> Any:
    value = p.get(key)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise _bad(f"invalid {key.replace('_', ' ')} {value!r}: expected a {'whole ' if kind is int else ''}number")
    if value != value or value in (float("inf"), float("-inf")) or abs(value) > 1 << 62:
        raise _bad(f"invalid {key.replace('_', ' ')} {value!r}: out of range")
    return kind(value)


def _strings(p: Mapping, key: str) -> tuple[str, ...]:
    value = p.get(key, ())
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST:
        raise _bad(f"invalid {key}: expected a list of at most {MAX_LIST} strings")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_TEXT:
            raise _bad(f"invalid {key}: every item must be a string of at most {MAX_TEXT} characters")
    return tuple(value)


def network_attachments(p: Mapping) -> list[tuple[str, tuple[str, ...]]]:
    """The "networks" param as (network name or ID, its aliases) pairs. Each item is a
    network's name or ID, or {"target": name or ID, "aliases": [alias, ...]} (Docker's
    NetworkAttachmentConfig): the aliases resolve, as the service's name does, on that
    network only."""
    value = p.get("networks", ())
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST:
        raise _bad(f"invalid networks: expected a list of at most {MAX_LIST} networks")
    attachments = []
    for item in value:
        if isinstance(item, str):
            item = {"target": item}
        if not isinstance(item, dict) or not set(item) <= {"target", "aliases"}:
            raise _bad('invalid networks: every item must be a network name or ID, '
                       'or {"target": NETWORK, "aliases": [ALIAS, ...]}')
        target = item.get("target")
        if not isinstance(target, str) or not target.strip() or len(target) > MAX_TEXT:
            raise _bad("invalid networks: a network name or ID is required")
        aliases = _strings(item, "aliases")
        if len(aliases) > MAX_ALIASES:
            raise _bad(f"invalid network aliases: at most {MAX_ALIASES} per network")
        for alias in aliases:
            if len(alias) > 253 or not _ALIAS.fullmatch(alias):
                raise _bad(f"invalid network alias {alias[:80]!r}: use a DNS name (letters, digits, '-' and '_', "
                           "labels separated by dots)")
        attachments.append((target, tuple(dict.fromkeys(aliases))))
    return attachments


def _networks(p: Mapping) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """(network IDs, network ID -> aliases) of the resolved "networks" param."""
    attachments = network_attachments(p)
    seen: set[str] = set()
    for target, _ in attachments:
        if target in seen:
            raise _bad(f"network {target} is given twice")
        seen.add(target)
    return tuple(t for t, _ in attachments), {t: aliases for t, aliases in attachments if aliases}


def _maps(p: Mapping, key: str) -> list[dict]:
    value = p.get(key, ())
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST or not all(isinstance(m, dict) for m in value):
        raise _bad(f"invalid {key}: expected a list of at most {MAX_LIST} maps")
    return list(value)


def _text(p: Mapping, key: str, flag: str, limit: int = 4096) -> str:
    value = p.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise _bad(f"invalid {flag}: expected a string of at most {limit} characters")
    return value


def _bool(p: Mapping, key: str, flag: str) -> bool:
    value = p.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"invalid {flag}: expected true or false")
    return value


def _string_map(p: Mapping, key: str, what: str) -> dict[str, str]:
    value = p.get(key, {})
    if (not isinstance(value, dict) or len(value) > MAX_LIST
            or not all(isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 1024 and len(v) <= MAX_TEXT
                       for k, v in value.items())):
        raise _bad(f"invalid {what}: a map of at most {MAX_LIST} non-empty names to strings")
    return dict(value)


def _decode(cls: type, data: Any, flag: str) -> Any:
    """A nested record (a mount, a ulimit) decoded with every field's type checked."""
    try:
        return msgspec.convert(data, cls)
    except (msgspec.ValidationError, TypeError) as exc:
        raise _bad(f"invalid {flag}: {exc}") from None


def _ip(text: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _bad(f"invalid {flag}: {text!r} is not an IP address") from None


# -- parts of the container spec -------------------------------------------------------------


def _mount(m: dict) -> spec.Mount:
    """One --mount, checked as docker's validateMountOptions and the daemon's mount checks do."""
    mount = _decode(spec.Mount, m, "--mount")
    if mount.type not in ("bind", "volume", "tmpfs"):
        raise _bad(f"invalid --mount: type {mount.type!r} is not bind, volume or tmpfs")
    if not mount.target.startswith("/"):
        raise _bad(f"invalid --mount: the target {mount.target!r} is not an absolute path")
    defaults = spec.Mount(mount.type, mount.target)
    for field, owner in (("bind_propagation", "bind"), ("bind_recursive", "bind"), ("volume_nocopy", "volume"),
                         ("volume_labels", "volume"), ("volume_driver", "volume"), ("volume_opts", "volume"),
                         ("tmpfs_size", "tmpfs"), ("tmpfs_mode", "tmpfs")):
        if owner != mount.type and getattr(mount, field) != getattr(defaults, field):
            raise _bad(f"invalid --mount: cannot mix '{owner}-*' options with mount type '{mount.type}'")
    if mount.type == "bind" and not mount.source.startswith("/"):
        raise _bad(f"invalid --mount: the bind source {mount.source!r} is not an absolute path")
    if mount.type == "tmpfs" and mount.source:
        raise _bad("invalid --mount: a tmpfs mount has no source")
    if mount.type == "volume" and mount.source and "{{" not in mount.source and not _VOLUME_NAME.fullmatch(
            mount.source):
        raise _bad(f"invalid --mount: {mount.source!r} is not a volume name (letters, digits, '_', '.', '-', "
                   "at least 2 characters)")
    if mount.bind_propagation not in BIND_PROPAGATIONS:
        raise _bad(f"invalid --mount: bind-propagation {mount.bind_propagation!r} is not one of "
                   f"{', '.join(BIND_PROPAGATIONS[1:])}")
    if mount.bind_recursive not in BIND_RECURSIVE:
        raise _bad(f"invalid --mount: bind-recursive {mount.bind_recursive!r} is not enabled, disabled, "
                   "writable or readonly")
    if mount.bind_recursive in ("writable", "readonly") and not mount.readonly:
        raise _bad(f"invalid --mount: bind-recursive={mount.bind_recursive} requires readonly")
    if mount.bind_recursive == "readonly" and mount.bind_propagation not in ("", "rprivate"):
        raise _bad("invalid --mount: bind-recursive=readonly requires bind-propagation=rprivate")
    if mount.volume_driver != "local":
        raise _bad(f"invalid --mount: volume driver {mount.volume_driver!r} is not supported (only local)")
    if len(mount.volume_labels) > MAX_LIST or len(mount.volume_opts) > MAX_LIST:
        raise _bad("invalid --mount: too many volume labels or options")
    if mount.tmpfs_size < 0 or not 0 <= mount.tmpfs_mode <= 0o7777:
        raise _bad("invalid --mount: tmpfs-size is a size of 0 or more and tmpfs-mode permission bits")
    return mount


def _capabilities(p: Mapping) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """cap_add and cap_drop as docker's EffectiveCapAddCapDrop leaves them: normalized, sorted,
    ALL alone when given, a capability both added and dropped only added."""
    lists = {}
    for key in ("cap_add", "cap_drop"):
        caps = set()
        for name in _strings(p, key):
            if name.strip().upper() == "RESET":
                continue                # update's "start from nothing"; meaningless in a spec
            try:
                caps.add(options.normalize_capability(name))
            except ValueError as exc:
                raise _bad(f"invalid --{key.replace('_', '-')}: {exc}") from None
        lists[key] = {options.ALL} if options.ALL in caps else caps
    add, drop = lists["cap_add"], lists["cap_drop"] - lists["cap_add"]
    return tuple(sorted(add)), tuple(sorted(drop))


def _ulimits(p: Mapping) -> tuple[spec.Ulimit, ...]:
    by_name: dict[str, spec.Ulimit] = {}
    for item in _maps(p, "ulimits"):
        try:
            ulimit = options.check_ulimit(_decode(spec.Ulimit, item, "--ulimit"))
        except ValueError as exc:
            raise _bad(f"invalid --ulimit: {exc}") from None
        by_name[ulimit.name] = ulimit
    return tuple(by_name[n] for n in sorted(by_name))


def _dns(p: Mapping) -> spec.DNSConfig:
    nameservers = tuple(_ip(s, "--dns") for s in _strings(p, "dns"))
    search = _strings(p, "dns_search")
    for domain in search:
        if domain != "." and (not _DOMAIN.fullmatch(domain) or len(domain) >= 255):
            raise _bad(f"invalid --dns-search: {domain} is not a valid domain")
    dns_options = _strings(p, "dns_options")
    for option in dns_options:
        if not option or any(c.isspace() for c in option):
            raise _bad(f"invalid --dns-option: {option!r} is not a resolver option (like ndots:2)")
    return spec.DNSConfig(nameservers, search, dns_options)


def _hosts(p: Mapping) -> tuple[str, ...]:
    """"IP HOSTNAME..." lines (docker's --host HOST:IP, as the spec keeps them)."""
    hosts = _strings(p, "hosts")
    for line in hosts:
        parts = line.split()
        if len(parts) < 2 or "\n" in line:
            raise _bad(f"invalid --host: {line!r} is not an 'IP HOSTNAME' line")
        _ip(parts[0], "--host")
    return hosts


def _user(p: Mapping) -> tuple[str, tuple[str, ...]]:
    user = _text(p, "user", "--user", 256)
    if user and not re.fullmatch(r"[^:\s]+(:[^:\s]+)?", user):
        raise _bad(f"invalid --user: {user!r} is not <name|uid>[:<group|gid>]")
    groups = _strings(p, "groups")
    for group in groups:
        if not _NAME.fullmatch(group):
            raise _bad(f"invalid --group: {group!r} is not a group name or id")
    return user, groups


def _log_driver(p: Mapping) -> spec.LogDriver:
    name = p.get("log_driver") or "json-file"
    if not isinstance(name, str):
        raise _bad("invalid --log-driver: expected a driver name")
    driver = spec.LogDriver(name, _string_map(p, "log_opts", "--log-opt"))
    try:
        logdriver.check_log_driver(driver)
    except ValueError as exc:
        raise _bad(f"invalid {'--log-driver' if name not in logdriver.DRIVERS else '--log-opt'}: {exc}") from None
    return driver


# -- secrets and configs (--secret, --config) ---------------------------------------------------

_FILE_KINDS = {"secrets": secrets.SECRET, "configs": secrets.CONFIG}
_FILE_FIELDS = frozenset({"source", "target", "uid", "gid", "mode"})


def _file_ref(item: Any, kind: str, names: Mapping[str, str], ids: set[str]) -> dict[str, Any]:
    """One reference as a client gives it ({"source": NAME, "target", "uid", "gid", "mode"}:
    the name resolved to its id, "secret not found: NAME" as docker/cli's ParseSecrets) or as
    a stored spec holds it ({"id", "name", ...}: the object must still exist)."""
    flag = f"--{kind}"
    if not isinstance(item, dict):
        raise _bad(f"invalid {flag}: expected a map of source, target, uid, gid and mode")
    if "source" in item:
        if not set(item) <= _FILE_FIELDS:
            raise _bad(f"invalid {flag}: unknown field {sorted(set(item) - _FILE_FIELDS)[0]!r}")
        name = item["source"]
        if not isinstance(name, str) or not name:
            raise _bad(f"invalid {flag}: source is required")
        if name not in names:
            raise _bad(f"{kind} not found: {name}")
        ref = {"id": names[name], "name": name, "target": item.get("target") or secrets.default_target(name)}
        for key in ("uid", "gid", "mode"):
            if key in item:
                ref[key] = item[key]
        return ref
    if item.get("id") not in ids:
        raise _bad(f"{kind} not found: {item.get('name') or item.get('id')}")
    return item


def resolve_files(p: dict, known: Mapping[str, Mapping[str, str]]) -> dict:
    """The params with their "secrets", "configs", "secrets_add" and "configs_add" references
    resolved: `known` is kind -> name -> id of the objects in the store. (The control API calls
    it before spec_from_params or apply_update: this module reads no store.)"""
    out = dict(p)
    for key, kind in _FILE_KINDS.items():
        names = known.get(kind, {})
        ids = set(names.values())
        for param in (key, f"{key}_add"):
            if param in p:
                out[param] = [_file_ref(item, kind, names, ids) for item in _maps(p, param)]
    return out


def _file_refs(p: Mapping, key: str) -> tuple[spec.FileReference, ...]:
    """The resolved references of "secrets" or "configs", checked as SwarmKit's
    validateSecretRefsSpec: uid and gid are numbers (the runtime chowns the file), a mode is
    permission bits, and no two files share a target."""
    kind = _FILE_KINDS[key]
    refs: list[spec.FileReference] = []
    targets: dict[str, str] = {}
    for item in _maps(p, key):
        ref = _decode(spec.FileReference, item, f"--{kind}")
        if not ref.id or not ref.name:
            raise _bad(f"malformed {kind} reference")
        try:
            secrets.check_target(kind, ref.target)
        except secrets.InvalidObject as exc:
            raise _bad(str(exc)) from None
        for what, value in (("uid", ref.uid), ("gid", ref.gid)):
            if not value.isdigit() or int(value) >= 1 << 32:
                raise _bad(f"invalid --{kind} {ref.name}: {what} {value!r} is not a number")
        if not 0 <= ref.mode <= 0o7777:
            raise _bad(f"invalid --{kind} {ref.name}: mode {ref.mode:o} is not permission bits")
        path = secrets.target_path(kind, ref.target)
        if path in targets:     # SwarmKit's sentence
            raise _bad(f"{kind} references '{targets[path]}' and '{ref.name}' have a conflicting target: "
                       f"'{ref.target}'")
        targets[path] = ref.name
        refs.append(ref)
    return tuple(refs)


def _container(p: Mapping, image: str, limits: spec.Resources, labels: Mapping[str, str]) -> spec.ContainerSpec:
    env = _strings(p, "env")
    for e in env:
        if "=" not in e or e.startswith("="):
            raise _bad(f"invalid environment variable {e!r}: expected KEY=VALUE")
    mounts = tuple(_mount(m) for m in _maps(p, "mounts"))
    targets = [m.target for m in mounts]
    if len(set(targets)) != len(targets):
        raise _bad(f"invalid --mount: duplicate mount point {next(t for t in targets if targets.count(t) > 1)}")
    grace = _number(p, "stop_grace_period", 10.0, float)
    if grace < 0:
        raise _bad("the stop grace period cannot be negative")
    hostname = _text(p, "hostname", "--hostname", 1024)
    outside = re.sub(r"\{\{.*?\}\}", "", hostname)       # a template may hold spaces; the name may not
    if any(c.isspace() or not c.isprintable() for c in outside) or (
            "{{" not in hostname and len(hostname) > HOST_NAME_MAX):
        raise _bad(f"invalid --hostname {hostname[:80]!r}: a hostname has no spaces and at most "
                   f"{HOST_NAME_MAX} characters")
    user, groups = _user(p)
    workdir = _text(p, "workdir", "--workdir")
    if workdir and not workdir.startswith("/"):
        raise _bad(f"invalid --workdir: {workdir!r} is not an absolute path")
    init = p.get("init")
    if init is not None and not isinstance(init, bool):
        raise _bad("invalid --init: expected true or false")
    stop_signal = _text(p, "stop_signal", "--stop-signal", 32)
    if stop_signal:
        try:
            options.parse_signal(stop_signal)
        except ValueError as exc:
            raise _bad(f"invalid --stop-signal: {exc}") from None
    cap_add, cap_drop = _capabilities(p)
    sysctls = _string_map(p, "sysctls", "--sysctl")
    for key, value in sysctls.items():
        try:
            options.check_sysctl(key, value)
        except ValueError as exc:
            raise _bad(f"invalid --sysctl: {exc}") from None
    pids = _number(p, "limit_pids", 0)
    if pids < 0:
        raise _bad(f"invalid --limit-pids {pids}: use 0 for no limit")
    oom = _number(p, "oom_score_adj", 0)
    if not -1000 <= oom <= 1000:
        raise _bad(f"invalid --oom-score-adj {oom}: it is from -1000 to 1000")
    force_update = _number(p, "force_update", 0)
    if force_update < 0:
        raise _bad(f"invalid force_update {force_update}: a counter of 0 or more")
    container = spec.ContainerSpec(
        image, _strings(p, "command"), env, mounts, grace, limits,
        entrypoint=_strings(p, "entrypoint"), hostname=hostname, user=user, groups=groups, workdir=workdir,
        init=init, tty=_bool(p, "tty", "--tty"), stop_signal=stop_signal,
        read_only=_bool(p, "read_only", "--read-only"), cap_add=cap_add, cap_drop=cap_drop, sysctls=sysctls,
        ulimits=_ulimits(p), pids_limit=pids, oom_score_adj=oom, dns=_dns(p), hosts=_hosts(p),
        labels=_string_map(p, "container_labels", "--container-label"), log_driver=_log_driver(p),
        healthcheck=_healthcheck(p), force_update=force_update, secrets=_file_refs(p, "secrets"),
        configs=_file_refs(p, "configs"))
    try:
        servicetemplate.check_container(container, labels)
    except servicetemplate.TemplateError as exc:
        raise _bad(str(exc)) from None
    return container


# -- rolling updates and healthchecks --------------------------------------------------------

FAILURE_ACTIONS = ("pause", "continue", "rollback")
ROLLBACK_FAILURE_ACTIONS = ("pause", "continue")    # a rollback that fails cannot roll back
UPDATE_ORDERS = ("stop-first", "start-first")
MAX_DURATION = (1 << 63) / 1e9           # Go's longest time.Duration, in seconds (about 292 years)
MIN_HEALTH_DURATION = 0.001              # docker's: a healthcheck duration is 0 (the default) or 1ms or more
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(spec.UpdateConfig))
_HEALTH_FIELDS = tuple(f.name for f in dataclasses.fields(spec.HealthConfig))
_HEALTH_FLAGS = {"test": "--health-cmd", "interval": "--health-interval", "timeout": "--health-timeout",
                 "start_period": "--health-start-period", "start_interval": "--health-start-interval",
                 "retries": "--health-retries"}


def _fields_map(value: Any, key: str, fields: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise _bad(f"invalid {key}: expected a map of {', '.join(fields)}")
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        raise _bad(f"invalid {key}: unknown field {unknown[0][:40]!r} (the fields are {', '.join(fields)})")
    return value


def _duration(value: Any, flag: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _bad(f"invalid {flag} {value!r}: expected a duration in seconds")
    if value < 0:
        raise _bad(f"invalid {flag}: a duration cannot be negative ({value:g}s)")
    if value > MAX_DURATION:
        raise _bad(f"invalid {flag}: {value:g}s is longer than the longest duration (about 292 years)")
    return float(value)


def _update_config(p: Mapping, key: str) -> spec.UpdateConfig:
    """update_config or rollback_config: the fields given, docker's defaults for the rest;
    each bad value named by its flag (--update-delay, --rollback-order...)."""
    value = p.get(key)
    if value is None:
        return spec.UpdateConfig()
    kind = key.partition("_")[0]
    config = _fields_map(value, key, _CONFIG_FIELDS)
    out: dict[str, Any] = {}
    for field, v in config.items():
        flag = f"--{kind}-{field.replace('_', '-')}"
        if field == "parallelism":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
                raise _bad(f"invalid {flag} {v!r}: a number of tasks of 0 (all at once) or more")
            out[field] = v
        elif field in ("delay", "monitor"):
            out[field] = _duration(v, flag)
        elif field == "max_failure_ratio":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise _bad(f"invalid {flag} {v!r}: a failure ratio is from 0 to 1")
            out[field] = float(v)
        elif field == "failure_action":
            actions = FAILURE_ACTIONS if kind == "update" else ROLLBACK_FAILURE_ACTIONS
            if v not in actions:
                raise _bad(f"invalid {flag} {str(v)[:40]!r}: use {', '.join(actions[:-1])} or {actions[-1]}")
            out[field] = v
        elif v not in UPDATE_ORDERS:
            raise _bad(f"invalid {flag} {str(v)[:40]!r}: use stop-first or start-first")
        else:
            out[field] = v
    return spec.UpdateConfig(**out)


def _healthcheck(p: Mapping) -> spec.HealthConfig | None:
    """The spec's healthcheck (None: the image's), as docker's HealthConfig and its checks."""
    value = p.get("healthcheck")
    if value is None:
        return None
    health = _fields_map(value, "healthcheck", _HEALTH_FIELDS)
    test = health.get("test") or ()
    if (not isinstance(test, (list, tuple)) or len(test) > MAX_LIST
            or not all(isinstance(word, str) and len(word) <= MAX_TEXT for word in test)):
        raise _bad("invalid --health-cmd: a test is a list of strings")
    test = tuple(test)
    if not (not test or test == ("NONE",) or (test[0] == "CMD" and len(test) > 1)
            or (test[0] == "CMD-SHELL" and len(test) == 2 and test[1])):
        raise _bad(f"invalid --health-cmd {list(test)[:3]!r}: a test is [] (the image's), [\"NONE\"], "
                   "[\"CMD\", ARG...] or [\"CMD-SHELL\", COMMAND]")
    durations = {}
    for field in ("interval", "timeout", "start_period", "start_interval"):
        durations[field] = _duration(health.get(field, 0.0), _HEALTH_FLAGS[field])
        if 0 < durations[field] < MIN_HEALTH_DURATION:
            raise _bad(f"invalid {_HEALTH_FLAGS[field]}: it cannot be less than 1ms (0: the default)")
    retries = health.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries < 1 << 31:
        raise _bad(f"invalid --health-retries {retries!r}: a number of consecutive failures, 0 or more")
    config = spec.HealthConfig(test, retries=retries, **durations)
    if test == ("NONE",) and config != spec.HealthConfig(test):
        raise _bad("--no-healthcheck conflicts with --health-* options")
    return config


# -- the service spec ------------------------------------------------------------------------


def _mode(p: Mapping) -> tuple[str, int, int, int]:
    """mode, replicas, max_concurrent, max_replicas_per_node, with docker's rules between them."""
    mode = p.get("mode", "replicated")
    if mode not in MODES:
        raise _bad(f"invalid mode {mode!r}: use replicated, global, replicated-job or global-job")
    replicas = p.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= MAX_REPLICAS:
        raise _bad(f"invalid replicas {replicas!r}: a number of replicas is from 0 to {MAX_REPLICAS}")
    if mode not in REPLICATED_MODES and p.get("replicas") not in (None, 1):
        raise _bad("--replicas can only be used with replicated or replicated-job mode")
    concurrent = _number(p, "max_concurrent", 0)
    if not 0 <= concurrent <= MAX_REPLICAS:
        raise _bad(f"invalid --max-concurrent {concurrent}: from 0 (as many as --replicas) to {MAX_REPLICAS}")
    if concurrent and mode != "replicated-job":
        raise _bad("--max-concurrent can only be used with replicated-job mode")
    per_node = _number(p, "max_replicas_per_node", 0)
    if not 0 <= per_node <= MAX_REPLICAS:
        raise _bad(f"invalid --replicas-max-per-node {per_node}: 0 (no limit) or more")
    if per_node and mode not in REPLICATED_MODES:
        raise _bad("--replicas-max-per-node can only be used with replicated or replicated-job mode")
    return mode, replicas if mode in REPLICATED_MODES else 0, concurrent, per_node


def _ports(p: Mapping, endpoint_mode: str) -> tuple[spec.PortConfig, ...]:
    ports: list[spec.PortConfig] = []
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
    return tuple(ports)


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
    mode, replicas, concurrent, per_node = _mode(p)
    constraints = _strings(p, "constraints")
    try:
        parse_constraints(list(constraints))
    except ConstraintError as exc:
        raise _bad(str(exc)) from None
    prefs = _strings(p, "placement_prefs")
    try:
        parse_preferences(prefs)
    except PreferenceError as exc:
        raise _bad(f"--placement-pref: {exc}") from None
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
    labels = _string_map(p, "labels", "labels")
    container = _container(p, image, limits, labels)
    endpoint_mode = p.get("endpoint_mode", "vip")
    if endpoint_mode not in ("vip", "dnsrr"):
        raise _bad(f"invalid endpoint mode {endpoint_mode!r}: use vip or dnsrr")
    ports = _ports(p, endpoint_mode)
    update_config, rollback_config = _update_config(p, "update_config"), _update_config(p, "rollback_config")
    if mode in spec.JOB_MODES and (update_config, rollback_config) != (spec.UpdateConfig(), spec.UpdateConfig()):
        raise _bad("update and rollback configuration is not supported for jobs")
    networks, aliases = _networks(p)
    return spec.ServiceSpec(name, container, mode, replicas, constraints, reservations, limits, restart, labels,
                            networks, endpoint_mode, ports, prefs, per_node, concurrent,
                            update_config, rollback_config, aliases)


# -- update ----------------------------------------------------------------------------------


def params_of(s: spec.ServiceSpec) -> dict[str, Any]:
    """The params that make `s` again (spec_from_params(params_of(s)) == s)."""
    c = s.container
    params: dict[str, Any] = {
        "name": s.name, "image": c.image, "mode": s.mode, "command": list(c.command), "env": list(c.env),
        "mounts": [dataclasses.asdict(m) for m in c.mounts], "constraints": list(s.constraints),
        "limit_cpu": s.limits.nano_cpus, "limit_memory": s.limits.memory_bytes,
        "reserve_cpu": s.reservations.nano_cpus, "reserve_memory": s.reservations.memory_bytes,
        "restart_condition": s.restart.condition, "restart_delay": s.restart.delay,
        "restart_max_attempts": s.restart.max_attempts, "restart_window": s.restart.window,
        "stop_grace_period": c.stop_grace_period, "labels": dict(s.labels),
        "networks": [{"target": n, "aliases": list(s.network_aliases[n])} if s.network_aliases.get(n) else n
                     for n in s.networks],
        "endpoint_mode": s.endpoint_mode, "ports": [dataclasses.asdict(x) for x in s.ports],
        "entrypoint": list(c.entrypoint), "hostname": c.hostname, "user": c.user, "groups": list(c.groups),
        "workdir": c.workdir, "init": c.init, "tty": c.tty, "stop_signal": c.stop_signal, "read_only": c.read_only,
        "cap_add": list(c.cap_add), "cap_drop": list(c.cap_drop), "sysctls": dict(c.sysctls),
        "ulimits": [dataclasses.asdict(u) for u in c.ulimits], "limit_pids": c.pids_limit,
        "oom_score_adj": c.oom_score_adj, "dns": list(c.dns.nameservers), "dns_search": list(c.dns.search),
        "dns_options": list(c.dns.options), "hosts": list(c.hosts), "container_labels": dict(c.labels),
        "log_driver": c.log_driver.name, "log_opts": dict(c.log_driver.options),
        "placement_prefs": list(s.placement_prefs), "max_replicas_per_node": s.max_replicas_per_node,
        "max_concurrent": s.max_concurrent, "update_config": dataclasses.asdict(s.update_config),
        "rollback_config": dataclasses.asdict(s.rollback_config), "force_update": c.force_update,
        "healthcheck": None if c.healthcheck is None else {**dataclasses.asdict(c.healthcheck),
                                                           "test": list(c.healthcheck.test)},
        "secrets": [dataclasses.asdict(r) for r in c.secrets], "configs": [dataclasses.asdict(r) for r in c.configs],
    }
    if s.mode in REPLICATED_MODES:
        params["replicas"] = s.replicas
    return params


# What update may replace as a whole (the rest: name and mode, which docker cannot change).
REPLACEABLE = frozenset(params_of(spec.ServiceSpec("x", spec.ContainerSpec("x"))).keys()) - {"name", "mode"}


def _without(items: Iterable[str], remove: Iterable[str]) -> list[str]:
    gone = set(remove)
    return [x for x in items if x not in gone]


def _added(items: Iterable[str], add: Iterable[str]) -> list[str]:
    """items then add, each once, first order kept."""
    return list(dict.fromkeys([*items, *add]))


def _merge_map(current: Mapping[str, str], p: Mapping, key: str, flag: str) -> dict[str, str]:
    merged = {k: v for k, v in current.items() if k not in set(_strings(p, f"{key}_rm"))}
    merged.update(_string_map(p, f"{key}_add", f"{flag}-add"))
    return merged


def _merge_mounts(current: list[dict], p: Mapping) -> list[dict]:
    """docker's updateMounts: a mount added replaces the one at its target; then removal by target."""
    add = _maps(p, "mounts_add")
    targets = [m.get("target") for m in add]
    if len(set(targets)) != len(targets):
        raise _bad("invalid --mount-add: duplicate mount target")
    by_target = {str(m.get("target")): m for m in add}
    merged = [by_target.pop(str(m.get("target")), m) for m in current] + list(by_target.values())
    gone = set(_strings(p, "mounts_rm"))
    return [m for m in merged if str(m.get("target")) not in gone]


def _merge_hosts(current: list[str], p: Mapping) -> list[str]:
    """docker's updateHosts: --host-rm HOST[:IP] takes HOST off the lines (of that IP), --host-add appends."""
    removals = [(entry.partition(":")[0], entry.partition(":")[2]) for entry in _strings(p, "hosts_rm")]
    lines = []
    for line in current:
        if not line.split():
            continue
        ip, *names = line.split()
        names = [n for n in names if not any(n == host and (not rm_ip or rm_ip == ip) for host, rm_ip in removals)]
        if names:
            lines.append(" ".join([ip, *names]))
    return _added(lines, _strings(p, "hosts_add"))


def _merge_capabilities(cap_add: list[str], cap_drop: list[str], p: Mapping) -> tuple[list[str], list[str]]:
    """docker's updateCapabilities: RESET empties a list; adding what was dropped un-drops it, and
    dropping what was added un-adds it."""
    def normalized(key: str) -> set[str]:
        out = set()
        for name in _strings(p, key):
            if name.strip().upper() == "RESET":
                out.add("RESET")
                continue
            try:
                out.add(options.normalize_capability(name))
            except ValueError as exc:
                raise _bad(f"invalid --{key.replace('_', '-')}: {exc}") from None
        return out

    add, drop = set(cap_add), set(cap_drop)
    to_add, to_drop = normalized("cap_add"), normalized("cap_drop")
    if "RESET" in to_add:
        add, to_add = set(), to_add - {"RESET"}
    if "RESET" in to_drop:
        drop, to_drop = set(), to_drop - {"RESET"}
    for cap in to_drop - to_add:
        if cap in add:
            add.discard(cap)
        else:
            drop.add(cap)
    for cap in to_add:
        if cap in drop:
            drop.discard(cap)
        else:
            add.add(cap)
    def caps_list(caps: set[str]) -> list[str]:
        return [options.ALL] if options.ALL in caps else sorted(caps)
    return caps_list(add), caps_list(drop)


def _merge_healthcheck(current: dict | None, given: Any) -> dict | None:
    """docker's updateHealthcheck: --no-healthcheck replaces the whole; the --health-* flags given
    replace their fields, and a test of NONE gives way to the image's when other fields are set."""
    if given is None:
        return None                      # back to the image's
    given = _fields_map(given, "healthcheck", _HEALTH_FIELDS)
    if list(given.get("test") or ()) == ["NONE"]:
        return dict(given)
    base = dict(current or {})
    if list(base.get("test") or ()) == ["NONE"]:
        base["test"] = []
    return {**base, **given}


# Merged with the stored values rather than replaced: the fields given change, the others stay.
MERGED = frozenset({"cap_add", "cap_drop", "update_config", "rollback_config", "healthcheck"})


def apply_update(old: spec.ServiceSpec, p: dict) -> spec.ServiceSpec:
    """The spec with only the given flags changed (docker service update), checked as a create.
    ("force" and "rollback" are the control API's: they ask for a new task template or the previous spec.)"""
    merged = params_of(old)
    for key in REPLACEABLE - MERGED:
        if key in p:
            merged[key] = p[key]
    for key in ("update_config", "rollback_config"):
        if key in p:
            merged[key] = {**merged[key], **_fields_map(p[key], key, _CONFIG_FIELDS)}
    if "healthcheck" in p:
        merged["healthcheck"] = _merge_healthcheck(merged["healthcheck"], p["healthcheck"])
    if "replicas" in p and old.mode not in REPLICATED_MODES:
        raise _bad("--replicas can only be used with replicated or replicated-job mode")
    if "log_driver" in p and "log_opts" not in p and p["log_driver"] != old.container.log_driver.name:
        merged["log_opts"] = {}       # another driver: the old one's options do not carry over
    env = [e for e in _strings(merged, "env") if e.split("=", 1)[0] not in set(_strings(p, "env_rm"))]
    for e in _strings(p, "env_add"):
        env = [x for x in env if x.split("=", 1)[0] != e.split("=", 1)[0]] + [e]
    merged["env"] = env
    merged["constraints"] = _added(_without(_strings(merged, "constraints"), _strings(p, "constraint_rm")),
                                   _strings(p, "constraint_add"))
    merged["labels"] = _merge_map(_string_map(merged, "labels", "labels"), p, "labels", "--label")
    merged["container_labels"] = _merge_map(_string_map(merged, "container_labels", "--container-label"), p,
                                            "container_labels", "--container-label")
    merged["sysctls"] = _merge_map(_string_map(merged, "sysctls", "--sysctl"), p, "sysctls", "--sysctl")
    if "groups_add" in p or "groups_rm" in p:     # docker sorts them then
        merged["groups"] = sorted(_without(_added(_strings(merged, "groups"), _strings(p, "groups_add")),
                                           _strings(p, "groups_rm")))
    for key in ("dns", "dns_search", "dns_options"):
        merged[key] = _without(_added(_strings(merged, key), _strings(p, f"{key}_add")), _strings(p, f"{key}_rm"))
    merged["hosts"] = _merge_hosts(list(_strings(merged, "hosts")), p)
    merged["mounts"] = _merge_mounts(_maps(merged, "mounts"), p)
    removed = set(_strings(p, "ulimits_rm"))
    ulimits = {str(u.get("name")): u for u in _maps(merged, "ulimits") if u.get("name") not in removed}
    ulimits.update({str(u.get("name")): u for u in _maps(p, "ulimits_add")})
    merged["ulimits"] = list(ulimits.values())
    gone = {x.partition("=")[2] for x in _strings(p, "placement_prefs_rm")}     # by descriptor, as docker
    prefs = [x for x in _strings(merged, "placement_prefs") if x.partition("=")[2] not in gone]
    merged["placement_prefs"] = prefs + list(_strings(p, "placement_prefs_add"))
    if "cap_add" in p or "cap_drop" in p:
        merged["cap_add"], merged["cap_drop"] = _merge_capabilities(list(old.container.cap_add),
                                                                    list(old.container.cap_drop), p)
    for key in _FILE_KINDS:     # docker's getUpdatedSecrets/Configs: removed by name, then the added appended
        gone = set(_strings(p, f"{key}_rm"))
        merged[key] = [r for r in _maps(merged, key) if r.get("name") not in gone] + _maps(p, f"{key}_add")
    return spec_from_params(merged)


# -- registry options (not part of the spec) ----------------------------------------------------

MAX_REGISTRY_AUTH = 16 * 1024    # an encoded auth config: a user name, a password or token, a server


def registry_options(p: Mapping) -> tuple[str | None, bool]:
    """(registry_auth, no_resolve_image) of a create's or update's params: the encoded auth
    config `--with-registry-auth` sent (None when not given; "" for none, as a CLI without
    credentials sends), checked to be Docker's (base64url of a JSON object of strings) and
    bounded; and whether `--no-resolve-image` asked to keep the image reference as given."""
    no_resolve = _bool(p, "no_resolve_image", "--no-resolve-image")
    if "registry_auth" not in p:
        return None, no_resolve
    auth = p["registry_auth"]
    if not isinstance(auth, str) or len(auth) > MAX_REGISTRY_AUTH:
        raise _bad(f"invalid --with-registry-auth: expected an encoded auth config of at most "
                   f"{MAX_REGISTRY_AUTH} characters")
    if auth and not _is_encoded_auth(auth):
        raise _bad("invalid --with-registry-auth: not an encoded auth config (base64url of a JSON object)")
    return auth, no_resolve


def _is_encoded_auth(text: str) -> bool:
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(doc, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items())

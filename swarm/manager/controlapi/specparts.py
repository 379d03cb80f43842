"""The parts of a service's container spec that have rules of their own: a --mount (docker's
validateMountOptions), the capabilities (docker's EffectiveCapAddCapDrop), ulimits, the DNS
config, the extra hosts lines, the user and groups, the log driver. Each takes the params
and returns the spec's value, or raises ApiError bad_request naming the flag. Pure.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from swarm.api import logdriver, options, spec
from swarm.manager.controlapi.specchecks import MAX_LIST, bad, decode, ip, maps, string_map, strings, text

BIND_PROPAGATIONS = ("", "private", "rprivate", "shared", "rshared", "slave", "rslave")
BIND_RECURSIVE = ("enabled", "disabled", "writable", "readonly")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")   # docker's volume names
_DOMAIN = re.compile(r"(?=.*[a-zA-Z])(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
                     r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*\.?")
_NAME = re.compile(r"[^:\s]+")            # a user or group name or id


def parse_mount(m: dict) -> spec.Mount:
    """One --mount, checked as docker's validateMountOptions and the daemon's mount checks do."""
    mount = decode(spec.Mount, m, "--mount")
    if mount.type not in ("bind", "volume", "tmpfs"):
        raise bad(f"invalid --mount: type {mount.type!r} is not bind, volume or tmpfs")
    if not mount.target.startswith("/"):
        raise bad(f"invalid --mount: the target {mount.target!r} is not an absolute path")
    defaults = spec.Mount(mount.type, mount.target)
    for field, owner in (("bind_propagation", "bind"), ("bind_recursive", "bind"), ("volume_nocopy", "volume"),
                         ("volume_labels", "volume"), ("volume_driver", "volume"), ("volume_opts", "volume"),
                         ("tmpfs_size", "tmpfs"), ("tmpfs_mode", "tmpfs")):
        if owner != mount.type and getattr(mount, field) != getattr(defaults, field):
            raise bad(f"invalid --mount: cannot mix '{owner}-*' options with mount type '{mount.type}'")
    if mount.type == "bind" and not mount.source.startswith("/"):
        raise bad(f"invalid --mount: the bind source {mount.source!r} is not an absolute path")
    if mount.type == "tmpfs" and mount.source:
        raise bad("invalid --mount: a tmpfs mount has no source")
    if mount.type == "volume" and mount.source and "{{" not in mount.source and not _VOLUME_NAME.fullmatch(
            mount.source):
        raise bad(f"invalid --mount: {mount.source!r} is not a volume name (letters, digits, '_', '.', '-', "
                  "at least 2 characters)")
    if mount.bind_propagation not in BIND_PROPAGATIONS:
        raise bad(f"invalid --mount: bind-propagation {mount.bind_propagation!r} is not one of "
                  f"{', '.join(BIND_PROPAGATIONS[1:])}")
    if mount.bind_recursive not in BIND_RECURSIVE:
        raise bad(f"invalid --mount: bind-recursive {mount.bind_recursive!r} is not enabled, disabled, "
                  "writable or readonly")
    if mount.bind_recursive in ("writable", "readonly") and not mount.readonly:
        raise bad(f"invalid --mount: bind-recursive={mount.bind_recursive} requires readonly")
    if mount.bind_recursive == "readonly" and mount.bind_propagation not in ("", "rprivate"):
        raise bad("invalid --mount: bind-recursive=readonly requires bind-propagation=rprivate")
    if mount.volume_driver != "local":
        raise bad(f"invalid --mount: volume driver {mount.volume_driver!r} is not supported (only local)")
    if len(mount.volume_labels) > MAX_LIST or len(mount.volume_opts) > MAX_LIST:
        raise bad("invalid --mount: too many volume labels or options")
    if mount.tmpfs_size < 0 or not 0 <= mount.tmpfs_mode <= 0o7777:
        raise bad("invalid --mount: tmpfs-size is a size of 0 or more and tmpfs-mode permission bits")
    return mount


def parse_capabilities(p: Mapping) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """cap_add and cap_drop as docker's EffectiveCapAddCapDrop leaves them: normalized, sorted,
    ALL alone when given, a capability both added and dropped only added."""
    lists = {}
    for key in ("cap_add", "cap_drop"):
        caps = set()
        for name in strings(p, key):
            if name.strip().upper() == "RESET":
                continue                # update's "start from nothing"; meaningless in a spec
            try:
                caps.add(options.normalize_capability(name))
            except ValueError as exc:
                raise bad(f"invalid --{key.replace('_', '-')}: {exc}") from None
        lists[key] = {options.ALL} if options.ALL in caps else caps
    add, drop = lists["cap_add"], lists["cap_drop"] - lists["cap_add"]
    return tuple(sorted(add)), tuple(sorted(drop))


def parse_ulimits(p: Mapping) -> tuple[spec.Ulimit, ...]:
    by_name: dict[str, spec.Ulimit] = {}
    for item in maps(p, "ulimits"):
        try:
            ulimit = options.check_ulimit(decode(spec.Ulimit, item, "--ulimit"))
        except ValueError as exc:
            raise bad(f"invalid --ulimit: {exc}") from None
        by_name[ulimit.name] = ulimit
    return tuple(by_name[n] for n in sorted(by_name))


def parse_dns(p: Mapping) -> spec.DNSConfig:
    nameservers = tuple(ip(s, "--dns") for s in strings(p, "dns"))
    search = strings(p, "dns_search")
    for domain in search:
        if domain != "." and (not _DOMAIN.fullmatch(domain) or len(domain) >= 255):
            raise bad(f"invalid --dns-search: {domain} is not a valid domain")
    dns_options = strings(p, "dns_options")
    for option in dns_options:
        if not option or any(c.isspace() for c in option):
            raise bad(f"invalid --dns-option: {option!r} is not a resolver option (like ndots:2)")
    return spec.DNSConfig(nameservers, search, dns_options)


def parse_hosts(p: Mapping) -> tuple[str, ...]:
    """"IP HOSTNAME..." lines (docker's --host HOST:IP, as the spec keeps them)."""
    hosts = strings(p, "hosts")
    for line in hosts:
        parts = line.split()
        if len(parts) < 2 or "\n" in line:
            raise bad(f"invalid --host: {line!r} is not an 'IP HOSTNAME' line")
        ip(parts[0], "--host")
    return hosts


def parse_user(p: Mapping) -> tuple[str, tuple[str, ...]]:
    user = text(p, "user", "--user", 256)
    if user and not re.fullmatch(r"[^:\s]+(:[^:\s]+)?", user):
        raise bad(f"invalid --user: {user!r} is not <name|uid>[:<group|gid>]")
    groups = strings(p, "groups")
    for group in groups:
        if not _NAME.fullmatch(group):
            raise bad(f"invalid --group: {group!r} is not a group name or id")
    return user, groups


def parse_log_driver(p: Mapping) -> spec.LogDriver:
    name = p.get("log_driver") or "json-file"
    if not isinstance(name, str):
        raise bad("invalid --log-driver: expected a driver name")
    driver = spec.LogDriver(name, string_map(p, "log_opts", "--log-opt"))
    try:
        logdriver.check_log_driver(driver)
    except ValueError as exc:
        raise bad(f"invalid {'--log-driver' if name not in logdriver.DRIVERS else '--log-opt'}: {exc}") from None
    return driver

"""The values of `swarm service create` and `update` flags: each parser turns
docker's text form into the daemon's value or raises ValueError with a
sentence, which `Parsed` turns into a click usage error naming the option
(exit 2, nothing sent). The flags themselves are declared in
swarm/cli/service_spec.py.

The syntaxes are docker/cli's: opts/mount.go (--mount), opts/swarmopts/port.go
and go-connections' nat.ParsePortSpec (--publish), pkg/kvfile (--env-file),
opts.ValidateExtraHost (--host), opts.ValidateDNSSearch (--dns-search),
placementPrefOpts (--placement-pref); durations of 0 or more and a failure ratio
from 0 to 1 for the --update-*/--rollback-*/--health-* flags."""
from __future__ import annotations

import csv
import functools
import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from swarm.api import logdriver, options
from swarm.api.units import parse_memory
from swarm.cli.common import Duration, parse_duration

DEFAULT_WAIT = "2m0s"         # --timeout of create/update/scale


def parse_cpus(text: str) -> int:
    """A decimal number of CPUs ("0.5", "2") -> nano CPUs, as docker's NanoCPUs."""
    try:
        cpus = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number of CPUs (use a decimal, like 0.5 or 2)") from None
    if not cpus.is_finite() or cpus < 0:
        raise ValueError(f"{text!r} is not a number of CPUs (use a decimal of 0 or more, like 0.5 or 2)")
    nano = cpus * 10**9
    if nano != nano.to_integral_value():
        raise ValueError(f"{text!r} is too precise (at most 9 decimals)")
    return int(nano)


# -- --mount -------------------------------------------------------------------

MOUNT_TYPES = ("bind", "volume", "tmpfs")
BIND_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
BIND_RECURSIVE = ("enabled", "disabled", "writable", "readonly")
_MOUNT_KEYS = {"type": "type", "source": "source", "src": "source", "target": "target", "destination": "target",
               "dst": "target", "readonly": "readonly", "ro": "readonly", "consistency": "consistency",
               "bind-propagation": "bind_propagation", "bind-recursive": "bind_recursive",
               "bind-nonrecursive": "bind_nonrecursive", "volume-nocopy": "volume_nocopy",
               "volume-label": "volume_labels", "volume-driver": "volume_driver", "volume-opt": "volume_opts",
               "tmpfs-size": "tmpfs_size", "tmpfs-mode": "tmpfs_mode"}
_BARE_MOUNT_KEYS = {"readonly", "volume_nocopy", "bind_nonrecursive"}   # may be given without =VALUE


def _bool(key: str, value: str | None) -> bool:
    if value is None or value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise ValueError(f"invalid value for {key}: {value!r} (use true or false)")


def _mount_field(mount: dict[str, Any], key: str, name: str, value: str | None) -> None:
    """One KEY[=VALUE] of --mount into the mount dict (the keys the daemon's Mount has)."""
    if key == "readonly":
        mount["readonly"] = _bool(name, value)
    elif key == "volume_nocopy":
        mount["volume_nocopy"] = _bool(name, value)
    elif key == "bind_nonrecursive":
        # Docker's deprecated spelling of bind-recursive=disabled.
        mount["bind_recursive"] = "disabled" if _bool(name, value) else "enabled"
    elif key == "consistency":
        pass                            # macOS only: accepted and ignored, as docker on Linux does
    elif key == "type":
        mount["type"] = str(value).lower()
    elif key == "bind_propagation":
        if str(value).lower() not in BIND_PROPAGATIONS:
            raise ValueError(f"invalid bind-propagation {value!r} (use {', '.join(BIND_PROPAGATIONS)})")
        mount["bind_propagation"] = str(value).lower()
    elif key == "bind_recursive":
        if value not in BIND_RECURSIVE:
            raise ValueError(f"invalid bind-recursive {value!r} (use enabled, disabled, writable or readonly)")
        mount["bind_recursive"] = value
    elif key in ("volume_labels", "volume_opts"):
        k, _, v = str(value).partition("=")
        if k:
            mount.setdefault(key, {})[k] = v
    elif key == "volume_driver":
        if value != "local":
            raise ValueError(f"volume driver {value!r} is not supported (only the local driver exists)")
        mount["volume_driver"] = value
    elif key == "tmpfs_size":
        try:
            mount["tmpfs_size"] = parse_memory(str(value))
        except ValueError:
            raise ValueError(f"invalid tmpfs-size {value!r} (use a size, like 64m)") from None
    elif key == "tmpfs_mode":
        if not re.fullmatch(r"[0-7]{1,11}", str(value)) or int(str(value), 8) > 0o7777:
            raise ValueError(f"invalid tmpfs-mode {value!r} (use octal permission bits, like 1777 or 0700)")
        mount["tmpfs_mode"] = int(str(value), 8)
    else:
        mount[key] = value


def parse_mount(text: str) -> dict[str, Any]:
    """Docker's --mount CSV (type=bind,source=/a,target=/b,readonly, and the bind-*, volume-* and
    tmpfs-* options) -> the daemon's mount dict: type, source, target, readonly, plus the options given."""
    if not text.strip():
        raise ValueError("the mount is empty")
    try:
        fields = next(csv.reader([text.strip()]))
    except (csv.Error, StopIteration):
        raise ValueError(f"{text!r} is not a list of KEY=VALUE fields separated by commas") from None
    mount: dict[str, Any] = {"type": "volume", "source": "", "target": "", "readonly": False}
    for field in fields:
        name, sep, value = field.partition("=")
        if name.strip() != name:
            raise ValueError(f"invalid option {name.strip()!r} in {field!r}: option should not have whitespace")
        key = _MOUNT_KEYS.get(name.lower(), "")
        if not key:
            raise ValueError(f"unexpected key {name!r} in {field!r} (use type, source, target, readonly, "
                             "bind-propagation, bind-recursive, volume-nocopy, volume-label, volume-driver, "
                             "volume-opt, tmpfs-size or tmpfs-mode)")
        if not sep and key not in _BARE_MOUNT_KEYS:
            raise ValueError(f"invalid field {field!r}: must be a KEY=VALUE pair")
        if sep and not value.strip():
            raise ValueError(f"invalid value for {name!r}: value is empty")
        _mount_field(mount, key, name, value if sep else None)
    check_mount(mount)
    if mount["type"] == "bind" and mount["source"].startswith("."):
        mount["source"] = os.path.abspath(mount["source"])   # as docker does with ./dir
    if mount["type"] == "bind" and not mount["source"].startswith("/"):
        raise ValueError("a bind mount needs a source that is an absolute path (source=/PATH)")
    return mount


_OPTION_TYPE = {"bind_propagation": "bind", "bind_recursive": "bind", "volume_nocopy": "volume",
                "volume_labels": "volume", "volume_driver": "volume", "volume_opts": "volume",
                "tmpfs_size": "tmpfs", "tmpfs_mode": "tmpfs"}


def check_mount(mount: Mapping[str, Any]) -> None:
    """The rules between a mount's fields (docker's validateMountOptions)."""
    kind = mount["type"]
    if kind not in MOUNT_TYPES:
        raise ValueError(f"invalid mount type {kind!r} (use bind, volume or tmpfs)")
    if not mount["target"]:
        raise ValueError("the mount has no target (add target=/PATH)")
    if not mount["target"].startswith("/"):
        raise ValueError(f"the target {mount['target']!r} is not an absolute path")
    for key, owner in _OPTION_TYPE.items():
        if key in mount and owner != kind:
            raise ValueError(f"cannot mix '{owner}-*' options with mount type '{kind}'")
    if kind == "tmpfs" and mount["source"]:
        raise ValueError("a tmpfs mount has no source")
    recursive = mount.get("bind_recursive", "enabled")
    if recursive in ("writable", "readonly") and not mount["readonly"]:
        raise ValueError(f"option 'bind-recursive={recursive}' requires 'readonly' to be specified in conjunction")
    if recursive == "readonly" and mount.get("bind_propagation", "rprivate") != "rprivate":
        raise ValueError("option 'bind-recursive=readonly' requires 'bind-propagation=rprivate'")


# -- environment ---------------------------------------------------------------


def parse_env(item: str) -> str:
    """KEY=VALUE, or KEY alone for KEY's value in this environment (as docker does)."""
    key, sep, _ = item.partition("=")
    if not key.strip() or any(c.isspace() for c in key):
        raise ValueError(f"{item!r} is not KEY=VALUE")
    if not sep:
        if key not in os.environ:
            raise ValueError(f"{item!r} has no value and is not set in this environment (use KEY=VALUE)")
        return f"{key}={os.environ[key]}"
    return item


def parse_env_lines(lines: Sequence[str], lookup: Callable[[str], str | None]) -> list[str]:
    """An env file's lines as docker's kvfile reads them: KEY=VALUE kept as written,
    blank lines and # comments skipped, a bare KEY takes `lookup(KEY)` (dropped when unset)."""
    out = []
    for number, raw in enumerate(lines, 1):
        line = raw.lstrip().rstrip("\r\n")
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not key:
            raise ValueError(f"no variable name on line {number} ({line!r})")
        if " " in key or "\t" in key:
            raise ValueError(f"variable {key!r} on line {number} contains whitespace")
        if sep:
            out.append(line)
        elif (value := lookup(key)) is not None:
            out.append(f"{key}={value}")
    return out


def read_env_file(path: str) -> list[str]:
    """--env-file PATH: the variables of the file (docker's format, see parse_env_lines)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_env_lines(lines, os.environ.get)
    except ValueError as exc:
        raise ValueError(f"invalid env file {path}: {exc}") from None


def parse_env_key(item: str) -> str:
    if not item.strip() or "=" in item:
        raise ValueError(f"{item!r} is not a variable name")
    return item


# -- placement -----------------------------------------------------------------


def parse_constraint(item: str) -> str:
    ops = re.findall(r"==|!=", item)
    if len(ops) == 1:
        left, right = item.split(ops[0])
        if left.strip() and right.strip():
            return item
    raise ValueError(f"{item!r} is not a constraint (use KEY==VALUE or KEY!=VALUE, like node.role==manager)")


def parse_placement_pref(item: str) -> str:
    """spread=DESCRIPTOR (the only strategy docker knows), like spread=node.labels.zone."""
    strategy, sep, descriptor = item.partition("=")
    if not sep or not strategy:
        raise ValueError('placement preference must be of the format "<strategy>=<arg>"')
    if strategy != "spread":
        raise ValueError(f"unsupported placement preference {strategy} (only spread is supported)")
    if not descriptor.strip():
        raise ValueError(f"{item!r} spreads over nothing (use spread=node.labels.LABEL)")
    return item


# -- ports ---------------------------------------------------------------------

PROTOCOLS = ("tcp", "udp")
PUBLISH_MODES = ("ingress", "host")
ENDPOINT_MODES = ("vip", "dnsrr")


def _port_number(text: str, what: str, item: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"invalid {what} port {text!r} in {item!r} (use 1-65535)")
    return int(text)


def _port_range(text: str, what: str, item: str) -> tuple[int, int]:
    """"80" -> (80, 80); "8080-8081" -> (8080, 8081)."""
    start, sep, end = text.partition("-")
    first = _port_number(start, what, item)
    last = _port_number(end, what, item) if sep else first
    if last < first:
        raise ValueError(f"invalid {what} port range {text!r} in {item!r}: the end is below the start")
    return first, last


def _protocol(text: str, item: str) -> str:
    protocol = text.strip().lower()
    if protocol not in PROTOCOLS:
        raise ValueError(f"invalid protocol {text!r} in {item!r} (use tcp or udp)")
    return protocol


def parse_publish(item: str) -> list[dict[str, Any]]:
    """Docker's --publish -> the daemon's port dicts (a range gives one per port): short syntax
    [PUBLISHED[-END]:]TARGET[-END][/PROTOCOL] (ranges of the same size, or one target for a
    range of published ports, as nat.ParsePortSpec), or long CSV
    published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]. No published port = 0: the
    daemon allocates one (ingress mode)."""
    if "=" in item:
        return [_parse_publish_long(item)]
    port, sep, proto = item.partition("/")
    protocol = _protocol(proto, item) if sep else "tcp"
    parts = port.split(":")
    if len(parts) > 2:
        raise ValueError(f"{item!r}: publishing on a specific IP address is not supported "
                         "(use [PUBLISHED:]TARGET[/PROTOCOL], like 8080:80 or 53/udp)")
    targets = _port_range(parts[-1], "target", item)
    published = _port_range(parts[0], "published", item) if len(parts) == 2 and parts[0].strip() else None
    if published is None:
        return [{"target": t, "published": 0, "protocol": protocol, "mode": "ingress"}
                for t in range(targets[0], targets[1] + 1)]
    if targets[0] == targets[1]:
        return [{"target": targets[0], "published": p, "protocol": protocol, "mode": "ingress"}
                for p in range(published[0], published[1] + 1)]
    if published[1] - published[0] != targets[1] - targets[0]:
        raise ValueError(f"{item!r}: the published and target port ranges are not of the same size")
    return [{"target": t, "published": published[0] + i, "protocol": protocol, "mode": "ingress"}
            for i, t in enumerate(range(targets[0], targets[1] + 1))]


def _parse_publish_long(item: str) -> dict[str, Any]:
    try:
        fields = next(csv.reader([item]))
    except (csv.Error, StopIteration):
        raise ValueError(f"{item!r} is not a list of KEY=VALUE fields separated by commas") from None
    port: dict[str, Any] = {"target": None, "published": 0, "protocol": "tcp", "mode": "ingress"}
    for field in fields:
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"invalid field {field!r} in {item!r}: must be a KEY=VALUE pair")
        if key in ("target", "published"):
            port[key] = _port_number(value, key, item)
        elif key == "protocol":
            port["protocol"] = _protocol(value, item)
        elif key == "mode":
            if value.strip().lower() not in PUBLISH_MODES:
                raise ValueError(f"invalid mode {value!r} in {item!r} (use ingress or host)")
            port["mode"] = value.strip().lower()
        else:
            raise ValueError(f"unexpected key {field.partition('=')[0]!r} in {item!r} "
                             "(use published, target, protocol and mode)")
    if port["target"] is None:
        raise ValueError(f"{item!r} has no target port (add target=PORT)")
    if port["mode"] == "host" and not port["published"]:
        raise ValueError(f"{item!r}: a port published in host mode needs its published port (add published=PORT)")
    return port


def parse_publish_rm(item: str) -> dict[str, Any]:
    """--publish-rm TARGET[/PROTOCOL]: which published port to remove (by its target port)."""
    port, sep, proto = item.partition("/")
    if ":" in port or "=" in item:
        raise ValueError(f"invalid port {item!r}: use TARGET[/PROTOCOL] (like 80, 80/tcp or 53/udp)")
    return {"target": _port_number(port, "target", item), "protocol": _protocol(proto, item) if sep else "tcp"}


def check_publish(ctx: click.Context, param: click.Parameter, values: Sequence[Any]) -> tuple:
    """The ports of all the option's values, in order; no published port twice for one protocol."""
    ports = [p for value in values for p in (value if isinstance(value, list) else [value])]
    seen: set[tuple[int, str]] = set()
    for port in ports:
        key = (port["published"], port["protocol"])
        if port["published"] and key in seen:
            raise click.BadParameter(f"published port {key[0]}/{key[1]} is given twice", ctx, param)
        seen.add(key)
    return tuple(ports)


# docker/cli's NetworkOpt: a value with KEY=VALUE in it is the CSV form, else a network's name or ID.
_NETWORK_LONG = re.compile(r"\w+=\w+(,\w+=\w+)*", re.ASCII)   # docker matches it anywhere
NETWORK_IGNORED = ("driver-opt", "ip", "ip6")          # accepted as docker does; nothing here uses them


def parse_network_ref(item: str) -> str:
    """A network's name or ID (--network-rm, and --network's short form)."""
    if not item.strip() or any(c.isspace() or c in "=," for c in item):
        raise ValueError(f"{item!r} is not a network name or ID")
    return item


def parse_network_option(item: str) -> tuple[str | dict[str, Any], list[str]]:
    """--network/--network-add: NETWORK or name=NETWORK[,alias=A...][,driver-opt=K=V...] as
    docker's NetworkOpt; (the wire value: the name, or {"target", "aliases"}; the keys given
    that are ignored). The value is the "networks" item of docs/daemon-api.md."""
    if not _NETWORK_LONG.search(item):
        return parse_network_ref(item), []
    try:
        fields = next(csv.reader([item]))
    except (csv.Error, StopIteration):
        raise ValueError(f"{item!r} is not a network: use NETWORK or name=NETWORK,alias=ALIAS") from None
    target, aliases, ignored = "", [], []
    for field in fields:
        key, sep, value = field.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"invalid field {field!r} in {item!r}: use KEY=VALUE")
        if key == "name":
            target = parse_network_ref(value)
        elif key == "alias":
            if not value:
                raise ValueError(f"an alias is empty in {item!r}")
            aliases.append(value)
        elif key in NETWORK_IGNORED:
            if key == "driver-opt" and not (value.partition("=")[0].strip() and "=" in value):
                raise ValueError(f"invalid driver option {value!r} in {item!r}: use driver-opt=KEY=VALUE")
            if key not in ignored:
                ignored.append(key)
        else:
            raise ValueError(f"invalid field key {key!r} in {item!r}: use name, alias or driver-opt")
    if not target:
        raise ValueError(f"no network in {item!r}: name=NETWORK is required")
    return ({"target": target, "aliases": aliases} if aliases else target), ignored


class NetworkParam(click.ParamType):
    """--network/--network-add: warns on stderr of the keys it ignores (driver-opt: our overlay
    driver takes no options per service), as it reads them."""
    name = "network"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            network, ignored = parse_network_option(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        for key in ignored:
            click.echo(f"Warning: {key} is ignored in --network {value}: swarm's overlay networks take no "
                       "per-service driver options or fixed addresses", err=True)
        return network


# -- process -------------------------------------------------------------------


def parse_command(text: str) -> list[str]:
    """--entrypoint and --args: one string split as a shell does ("" = none: back to the image's)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


def parse_user(text: str) -> str:
    """USER[:GROUP], names or ids, as `docker service create -u`."""
    if not re.fullmatch(r"[^:\s]+(:[^:\s]+)?", text):
        raise ValueError(f"{text!r} is not a user (use <name|uid>[:<group|gid>])")
    return text


def parse_group(text: str) -> str:
    if not re.fullmatch(r"[^:\s]+", text):
        raise ValueError(f"{text!r} is not a group name or id")
    return text


def parse_hostname(text: str) -> str:
    """A hostname, which may hold templates ({{.Service.Name}}-{{.Task.Slot}}); "" = the default."""
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{text!r} is not a hostname (no spaces)")
    return text


def parse_workdir(text: str) -> str:
    if text and not text.startswith("/"):
        raise ValueError(f"the working directory {text!r} is not an absolute path")
    return text


def parse_capability(text: str) -> str:
    """A capability as docker accepts it (net_admin, CAP_NET_ADMIN, ALL; RESET for update)."""
    if text.strip().upper() == "RESET":
        return "RESET"
    return options.normalize_capability(text)


def parse_signal(text: str) -> str:
    """--stop-signal: a signal name or number, kept as written once it is known."""
    options.parse_signal(text)
    return text.strip()


def parse_sysctl(text: str) -> tuple[str, str]:
    """KEY=VALUE of a sysctl the container's namespaces own (net.*, kernel.shm*, ...)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    options.check_sysctl(key, value)
    return key, value


def parse_ulimit(text: str) -> dict[str, Any]:
    """NAME=SOFT[:HARD], like nofile=1024:2048 -> {"name", "soft", "hard"}."""
    ulimit = options.parse_ulimit(text)
    return {"name": ulimit.name, "soft": ulimit.soft, "hard": ulimit.hard}


def parse_sysctl_key(text: str) -> str:
    """--sysctl-rm KEY (KEY=VALUE is taken as KEY, as docker does)."""
    key = text.partition("=")[0]
    if not key.strip():
        raise ValueError(f"{text!r} is not a sysctl name")
    return key


# -- identity and DNS ----------------------------------------------------------

_DOMAIN = re.compile(r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
                     r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*\.?")


def parse_ip(text: str) -> str:
    """An IPv4 or IPv6 address (--dns), written as Go writes it."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"IP address is not correctly formatted: {text}") from None


def parse_dns_search(text: str) -> str:
    """A search domain (docker's ValidateDNSSearch; "." = none)."""
    text = text.strip(" ")
    if text == "." or (re.search("[a-zA-Z]", text) and _DOMAIN.fullmatch(text) and len(text) < 255):
        return text
    raise ValueError(f"{text} is not a valid domain")


def parse_dns_option(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not a resolver option (like ndots:2 or timeout:3)")
    return text


def parse_host(text: str) -> str:
    """--host HOST:IP (or HOST=IP), as docker's ValidateExtraHost -> "IP HOST", the /etc/hosts line
    the spec keeps."""
    host, sep, ip = text.partition("=")
    if not sep:
        host, sep, ip = text.partition(":")
    if not sep or not host or ":" in host or any(c.isspace() for c in host):
        raise ValueError(f"bad format for add-host: {text!r} (use HOST:IP)")
    if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
        ip = ip[1:-1]
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise ValueError(f"invalid IP address in add-host: {ip!r}") from None
    return f"{ip} {host}"


def parse_host_rm(text: str) -> str:
    """--host-rm HOST or HOST:IP (the mapping to remove)."""
    host = text.partition(":")[0]
    if not host or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not HOST or HOST:IP")
    return text


def parse_label(text: str) -> tuple[str, str]:
    """KEY[=VALUE] (no value: an empty one), as docker's ValidateLabel."""
    key, _, value = text.partition("=")
    key = key.lstrip(" \t")
    if not key:
        raise ValueError(f"invalid label {text!r}: empty name")
    if any(c in " \t" for c in key):
        raise ValueError(f"label {key!r} contains whitespaces")
    return key, value


def parse_label_key(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not a label key")
    return text


# -- logs ----------------------------------------------------------------------

LOG_DRIVERS = ("json-file", "local", "none")


LOG_OPT_KEYS = frozenset(k for keys in logdriver.KNOWN_OPTIONS.values() for k in keys)


def parse_log_opt(text: str) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE as docker takes it, or several joined by commas (max-size=10m,max-file=3):
    a comma starts a new option only before a known option's KEY=, so a value that is a
    list (labels=com.a,com.b) stays whole."""
    pairs: list[list[str]] = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not pairs or (sep and key.strip() in LOG_OPT_KEYS):
            pairs.append([key, value] if sep else [part, ""])
            if not sep or not key.strip():
                raise ValueError(f"{text!r} is not KEY=VALUE (like max-size=10m)")
        else:
            pairs[-1][1] += "," + part
    return tuple((key, value) for key, value in pairs)


def flatten_log_opts(ctx: click.Context, param: click.Parameter, groups: Sequence[Sequence[tuple[str, str]]]) -> tuple:
    return tuple(pair for group in groups for pair in group)


# -- other commands ------------------------------------------------------------


# -- --secret and --config -----------------------------------------------------


def parse_file_ref(kind: str, text: str) -> dict[str, Any]:
    """--secret/--config (and -add): NAME, or the CSV source=NAME,target=PATH,uid=,gid=,mode=
    (docker/cli's SecretOpt and ConfigOpt: src for source, mode in Go's base-0 syntax, so 0400
    is octal) -> the wire reference {"source", "target", "uid", "gid", "mode"}, with docker's
    defaults: target the name, uid and gid "0", mode 0444."""
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise ValueError(f"{text!r} is not a {kind} reference") from None
    ref: dict[str, Any] = {"source": "", "target": "", "uid": "0", "gid": "0", "mode": 0o444}
    if len(fields) == 1 and "=" not in fields[0]:
        ref["source"] = fields[0]
    else:
        for field in fields:
            key, sep, value = field.partition("=")
            if not sep or not key:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
            key = key.lower()
            if key in ("source", "src"):
                ref["source"] = value
            elif key in ("target", "uid", "gid"):
                ref[key] = value
            elif key == "mode":
                ref["mode"] = _go_uint(value)
            else:
                raise ValueError(f"invalid field in {kind} request: {key}")
    if not ref["source"]:
        raise ValueError("source is required")
    ref["target"] = ref["target"] or ref["source"]
    return ref


def _go_uint(text: str) -> int:
    """Go's strconv.ParseUint(text, 0, 32): 0x.., 0o.., 0b.., a leading 0 for octal, else decimal."""
    try:
        value = int(text, 8) if re.fullmatch(r"0[0-7]+", text) else int(text, 0)
    except ValueError:
        raise ValueError(f"invalid mode specified: {text!r} is not a number (like 0400)") from None
    if not 0 <= value < 1 << 32:
        raise ValueError(f"invalid mode specified: {text!r} is out of range")
    return value


def parse_file_name(text: str) -> str:
    """--secret-rm/--config-rm: the name the service was given it by."""
    if not text.strip() or "," in text or "=" in text:
        raise ValueError(f"{text!r} is not a name (remove a secret or config by its name)")
    return text


def parse_scale(item: str) -> tuple[str, int]:
    name, sep, count = item.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"invalid scale specifier {item!r}: must be of the form SERVICE=REPLICAS")
    if not count.isdigit():
        raise ValueError(f"invalid replicas value {count!r} in {item!r}: a number of 0 or more")
    return name, int(count)


def parse_tail(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number of lines (or all)")
    return int(text)


# -- rolling updates and healthchecks ------------------------------------------

FAILURE_ACTIONS = ("pause", "continue", "rollback")
ROLLBACK_FAILURE_ACTIONS = ("pause", "continue")     # a rollback that fails cannot roll back (docker's choices)
UPDATE_ORDERS = ("stop-first", "start-first")


def parse_duration0(text: str) -> float:
    """A duration of 0 or more (--update-delay, --health-interval...): Go's syntax; a
    negative one is named as such (docker's PositiveDurationOpt: "duration cannot be negative")."""
    if text.strip().startswith("-"):
        raise ValueError(f"{text!r} is negative: use a duration of 0 or more, like 10s")
    return parse_duration(text, allow_zero=True)


def parse_ratio(text: str) -> float:
    """--update-max-failure-ratio: a fraction of the tasks, from 0 to 1."""
    try:
        ratio = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (use a fraction from 0 to 1, like 0.2)") from None
    if not 0 <= ratio <= 1:             # NaN fails too
        raise ValueError(f"{text!r} is not from 0 to 1 (a fraction of the tasks, like 0.2)")
    return ratio


class Parsed(click.ParamType):
    """A click type from a parse function raising ValueError (-> usage error naming the option)."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self.parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


MEMORY = Parsed("bytes", parse_memory)
CPUS = Parsed("decimal", parse_cpus)
MOUNT = Parsed("mount", parse_mount)
ENV = Parsed("KEY=VALUE", parse_env)
ENV_KEY = Parsed("KEY", parse_env_key)
CONSTRAINT = Parsed("expr", parse_constraint)
PLACEMENT_PREF = Parsed("pref", parse_placement_pref)
SCALE = Parsed("SERVICE=REPLICAS", parse_scale)
TAIL = Parsed("N|all", parse_tail)
SECRET = Parsed("secret", functools.partial(parse_file_ref, "secret"))
CONFIG = Parsed("config", functools.partial(parse_file_ref, "config"))
FILE_NAME = Parsed("NAME", parse_file_name)
PUBLISH = Parsed("[PUBLISHED:]TARGET[/PROTO]", parse_publish)
PUBLISH_RM = Parsed("TARGET[/PROTO]", parse_publish_rm)
NETWORK = NetworkParam()
NETWORK_REF = Parsed("NETWORK", parse_network_ref)
COMMAND = Parsed("command", parse_command)
USER = Parsed("<name|uid>[:<group|gid>]", parse_user)
GROUP = Parsed("GROUP", parse_group)
WORKDIR = Parsed("PATH", parse_workdir)
HOSTNAME = Parsed("NAME", parse_hostname)
CAPABILITY = Parsed("CAPABILITY", parse_capability)
SIGNAL = Parsed("SIGNAL", parse_signal)
SYSCTL = Parsed("KEY=VALUE", parse_sysctl)
SYSCTL_KEY = Parsed("KEY", parse_sysctl_key)
ULIMIT = Parsed("NAME=SOFT[:HARD]", parse_ulimit)
ULIMIT_NAME = Parsed("NAME", parse_env_key)
IP = Parsed("IP", parse_ip)
DNS_SEARCH = Parsed("DOMAIN", parse_dns_search)
DNS_OPTION = Parsed("OPTION", parse_dns_option)
HOST = Parsed("HOST:IP", parse_host)
HOST_RM = Parsed("HOST[:IP]", parse_host_rm)
LABEL = Parsed("KEY[=VALUE]", parse_label)
LABEL_KEY = Parsed("KEY", parse_label_key)
LOG_OPT = Parsed("KEY=VALUE", parse_log_opt)
DURATION0 = Duration(allow_zero=True)
NONNEGATIVE_DURATION = Parsed("duration", parse_duration0)
RATIO = Parsed("float", parse_ratio)
RESTART_CONDITIONS = ("none", "on-failure", "any")

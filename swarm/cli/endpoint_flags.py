"""The values of the `swarm service create/update` flags of a service's endpoint and name
resolution: --publish/--publish-rm (docker/cli's opts/swarmopts/port.go and go-connections'
nat.ParsePortSpec), --network (docker's NetworkOpt: a name, or name=,alias=,driver-opt=),
--dns, --dns-search (ValidateDNSSearch), --dns-option and --host (ValidateExtraHost).
A bad value raises ValueError with one sentence (NetworkParam and check_publish: a click
usage error)."""
from __future__ import annotations

import csv
import ipaddress
import re
from collections.abc import Sequence
from typing import Any

import click


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


# -- networks ------------------------------------------------------------------


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


# -- DNS and hosts -------------------------------------------------------------

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

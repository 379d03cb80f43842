"""The flags of `swarm service create` and `update` (one shared set) and the
parsers of their values: each parser turns docker's text form into the
daemon's value or raises ValueError with a sentence, which `Parsed` turns into
a click usage error naming the option (exit 2, nothing sent)."""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from swarm.api.units import parse_memory
from swarm.cli.common import Duration

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


_MOUNT_KEYS = {"type": "type", "source": "source", "src": "source", "target": "target", "destination": "target",
               "dst": "target", "readonly": "readonly", "ro": "readonly"}
MOUNT_TYPES = ("bind", "volume", "tmpfs")


def parse_mount(text: str) -> dict[str, Any]:
    """Docker's --mount CSV: type=bind,source=/a,target=/b,readonly -> the daemon's mount dict."""
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise ValueError(f"{text!r} is not a list of KEY=VALUE fields separated by commas") from None
    mount: dict[str, Any] = {"type": "volume", "source": "", "target": "", "readonly": False}
    for field in fields:
        key, sep, value = field.partition("=")
        key = _MOUNT_KEYS.get(key.strip().lower(), "")
        if not key:
            raise ValueError(f"unexpected key {field.partition('=')[0]!r} in {field!r} "
                             "(use type, source, target and readonly)")
        if key == "readonly":
            if not sep or value.lower() in ("1", "true"):
                mount["readonly"] = True
            elif value.lower() in ("0", "false"):
                mount["readonly"] = False
            else:
                raise ValueError(f"invalid value for {field.partition('=')[0]}: {value!r} (use true or false)")
            continue
        if not sep:
            raise ValueError(f"invalid field {field!r}: must be a KEY=VALUE pair")
        mount[key] = value
    if mount["type"] not in MOUNT_TYPES:
        raise ValueError(f"invalid mount type {mount['type']!r} (use bind, volume or tmpfs)")
    if not mount["target"]:
        raise ValueError(f"{text!r} has no target (add target=/PATH)")
    if not mount["target"].startswith("/"):
        raise ValueError(f"the target {mount['target']!r} is not an absolute path")
    if mount["type"] == "tmpfs" and mount["source"]:
        raise ValueError("a tmpfs mount has no source")
    if mount["type"] == "bind" and not mount["source"].startswith("/"):
        raise ValueError("a bind mount needs a source that is an absolute path (source=/PATH)")
    return mount


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


def parse_constraint(item: str) -> str:
    ops = re.findall(r"==|!=", item)
    if len(ops) == 1:
        left, right = item.split(ops[0])
        if left.strip() and right.strip():
            return item
    raise ValueError(f"{item!r} is not a constraint (use KEY==VALUE or KEY!=VALUE, like node.role==manager)")


def parse_env_key(item: str) -> str:
    if not item.strip() or "=" in item:
        raise ValueError(f"{item!r} is not a variable name")
    return item


PROTOCOLS = ("tcp", "udp")
PUBLISH_MODES = ("ingress", "host")
ENDPOINT_MODES = ("vip", "dnsrr")


def _port_number(text: str, what: str, item: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"invalid {what} port {text!r} in {item!r} (use 1-65535)")
    return int(text)


def _protocol(text: str, item: str) -> str:
    protocol = text.strip().lower()
    if protocol not in PROTOCOLS:
        raise ValueError(f"invalid protocol {text!r} in {item!r} (use tcp or udp)")
    return protocol


def parse_publish(item: str) -> dict[str, Any]:
    """Docker's --publish, short ([PUBLISHED:]TARGET[/PROTOCOL]) or long CSV
    (published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]) -> the daemon's port dict.
    No published port = 0: the daemon allocates one (ingress mode)."""
    if "=" in item:
        return _parse_publish_long(item)
    port, sep, proto = item.partition("/")
    protocol = _protocol(proto, item) if sep else "tcp"
    parts = port.split(":")
    if len(parts) > 2:
        raise ValueError(f"{item!r}: publishing on a specific IP address is not supported "
                         "(use [PUBLISHED:]TARGET[/PROTOCOL], like 8080:80 or 53/udp)")
    if "-" in port:
        raise ValueError(f"{item!r}: port ranges are not supported (publish each port)")
    published = _port_number(parts[0], "published", item) if len(parts) == 2 and parts[0].strip() else 0
    target = _port_number(parts[-1], "target", item)
    return {"target": target, "published": published, "protocol": protocol, "mode": "ingress"}


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


def parse_network(item: str) -> str:
    if not item.strip() or any(c.isspace() or c in "=," for c in item):
        raise ValueError(f"{item!r} is not a network name or ID")
    return item


def check_publish(ctx: click.Context, param: click.Parameter, ports: Sequence[Mapping[str, Any]]) -> tuple:
    """No published port twice for one protocol (among the ports of one option)."""
    seen: set[tuple[int, str]] = set()
    for port in ports:
        key = (port["published"], port["protocol"])
        if port["published"] and key in seen:
            raise click.BadParameter(f"published port {key[0]}/{key[1]} is given twice", ctx, param)
        seen.add(key)
    return tuple(ports)


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
SCALE = Parsed("SERVICE=REPLICAS", parse_scale)
TAIL = Parsed("N|all", parse_tail)
PUBLISH = Parsed("[PUBLISHED:]TARGET[/PROTO]", parse_publish)
PUBLISH_RM = Parsed("TARGET[/PROTO]", parse_publish_rm)
NETWORK = Parsed("NETWORK", parse_network)
DURATION0 = Duration(allow_zero=True)
RESTART_CONDITIONS = ("none", "on-failure", "any")

# option name -> the daemon's spec param (create sends them all, update the given ones)
SPEC_PARAMS = {
    "replicas": "replicas", "env": "env", "mounts": "mounts", "constraints": "constraints",
    "reserve_cpu": "reserve_cpu", "reserve_memory": "reserve_memory", "limit_cpu": "limit_cpu",
    "limit_memory": "limit_memory", "restart_condition": "restart_condition", "restart_delay": "restart_delay",
    "restart_max_attempts": "restart_max_attempts", "restart_window": "restart_window",
    "stop_grace_period": "stop_grace_period", "endpoint_mode": "endpoint_mode",
}


detach_option = click.option("--detach", "-d", is_flag=True,
                             help="Exit immediately instead of waiting for the service to converge.")
timeout_option = click.option("--timeout", "wait_timeout", type=Duration(), default=DEFAULT_WAIT, show_default=True,
                              help="How long to wait for the service to converge; then exit 1 (the service stays).")


def spec_options(update: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The flags create and update share; create's defaults are docker's, update's are "not given"."""
    def default(value: Any) -> Any:
        return None if update else value

    options = [
        click.option("--replicas", type=click.IntRange(min=0), help="Number of tasks (replicated mode)."),
        click.option("--env", "-e", "env", multiple=True, type=ENV, metavar="KEY=VALUE",
                     help="Set an environment variable (repeatable)" + ("; replaces them all." if update else ".")),
        click.option("--mount", "mounts", multiple=True, type=MOUNT, metavar="type=..,source=..,target=..",
                     help="Attach a bind, volume or tmpfs mount (repeatable)"
                     + ("; replaces them all." if update else ".")),
        click.option("--constraint", "constraints", multiple=True, type=CONSTRAINT, metavar="EXPR",
                     help="Placement constraint, like node.role==manager (repeatable)"
                     + ("; replaces them all." if update else ".")),
        click.option("--reserve-cpu", type=CPUS, help="Reserve CPUs (0.5 = half a CPU)."),
        click.option("--reserve-memory", type=MEMORY, help="Reserve memory (64m, 1g, 512MiB)."),
        click.option("--limit-cpu", type=CPUS, help="Limit CPUs."),
        click.option("--limit-memory", type=MEMORY, help="Limit memory."),
        click.option("--restart-condition", type=click.Choice(RESTART_CONDITIONS), default=default("any"),
                     show_default=not update, help="When to restart a task's container."),
        click.option("--restart-delay", type=DURATION0, default=default("5s"), show_default=not update,
                     help="Delay between restart attempts."),
        click.option("--restart-max-attempts", type=click.IntRange(min=0),
                     help="Maximum number of restarts before giving up (0: no limit)."),
        click.option("--restart-window", type=DURATION0, help="Window in which restarts are counted."),
        click.option("--stop-grace-period", type=DURATION0, default=default("10s"), show_default=not update,
                     help="Time to wait before force killing a container."),
        click.option("--endpoint-mode", type=click.Choice(ENDPOINT_MODES),
                     help="How clients reach the tasks: a virtual IP (vip, the default) or DNS round robin (dnsrr)."),
        detach_option,
        click.option("--quiet", "-q", is_flag=True, help="Suppress progress output."),
        timeout_option,
    ]

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply

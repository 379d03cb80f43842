"""`swarm service ...`: create, ls, ps, inspect, scale, update, rm, logs.

How this works: like the rest of the CLI (`swarm.cli.main`), each command checks
its input locally (click usage error, exit 2), makes one call to the node's
daemon (methods `service.*` of docs/daemon-api.md) and prints docker's output.
`create`, `update` and `scale` then follow the service until it converges,
unless `--detach`: they poll `service.ps` every POLL_INTERVAL and draw one
line per slot (per node for a global service) the way docker does, redrawn in
place on a terminal, one line per change otherwise; a task's failure is
printed (each distinct error once, with how long the command still waits) and
waited through (the orchestrator replaces it), and if the service is still
not running when `--timeout` ends the command fails with the last error seen.
`logs` calls `service.logs` with the cursors of the previous answer until it is
done (with -f: for ever, each call waiting for new lines), see swarm/daemon/logs.py.
`update --network-add/-rm` and `--publish-add/-rm` first read the current spec
(`service.inspect`) and send the whole new "networks"/"ports" lists: the
daemon replaces the lists it is given.
This module adds itself to `swarm.cli.main.swarm` when `swarm.cli.main` imports it.
"""
from __future__ import annotations

import csv
import datetime
import os
import random
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

import click
from click.core import ParameterSource

from swarm.cli.common import (Duration, LocalDaemon, _title, fail, format_duration, kv, print_json, print_table,
                               with_daemon)
from swarm.cli.root import swarm
from swarm.rpc.core import RPCError
from swarm.api.units import parse_memory

POLL_INTERVAL = 0.25          # seconds between two service.ps while waiting for convergence
LOGS_WAIT = 2.0               # seconds a service.logs call with --follow waits for new lines
LOGS_CALL_TIMEOUT = 45.0      # one service.logs call (a worker's goes through a manager to the nodes)
PENDING_ERROR_POLLS = 3       # a pending task's error is shown once it lasts this many polls
UNCHANGED_GRACE_POLLS = 6     # update: polls before tasks the update did not replace count as updated
DEFAULT_WAIT = "2m0s"         # --timeout of create/update/scale
ID_LEN = 12                   # IDs in tables, as docker truncates them
MAX_ERR_LEN = 30              # `service ps` ERROR column, as docker truncates it
MAX_PROGRESS_ERR = 75         # a task's error on its progress line, as docker truncates it
CONTEXT = {"allow_interspersed_args": False}  # what follows IMAGE is the container's

# The progress bar of a task in each state (docker's numbering: running = full bar).
STATE_PROGRESS = {"new": 1, "allocated": 2, "pending": 3, "assigned": 4, "accepted": 5, "preparing": 6,
                  "ready": 7, "starting": 8, "running": 9}
MAX_PROGRESS = 9
LONGEST_STATE = max(len(s) for s in STATE_PROGRESS)
TERMINAL_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
FAILED_STATES = frozenset({"failed", "rejected"})


def _sleep(seconds: float) -> None:  # one place for tests to replace
    time.sleep(seconds)


# -- input ---------------------------------------------------------------------

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


# -- swarm service -------------------------------------------------------------


@swarm.group()
def service() -> None:
    """Manage services (on a manager)."""


services_argument = click.argument("refs", metavar="SERVICE...", nargs=-1, required=True)


@service.command("create", context_settings=CONTEXT)
@click.option("--name", help="Service name (default: a random one).")
@click.option("--mode", type=click.Choice(["replicated", "global"]), default="replicated", show_default=True,
              help="Replicated (--replicas tasks) or global (one task per node).")
@spec_options(update=False)
@click.option("--network", "networks", multiple=True, type=NETWORK, help="Attach the service to a network (repeatable).")
@click.option("--publish", "-p", "ports", multiple=True, type=PUBLISH, callback=check_publish,
              help="Publish a port: [PUBLISHED:]TARGET[/PROTO] or published=P,target=T[,protocol=..][,mode=..] "
              "(repeatable).")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@with_daemon
def service_create(daemon: LocalDaemon, name: str | None, mode: str, image: str, command: tuple[str, ...],
                   detach: bool, quiet: bool, wait_timeout: float, **spec: Any) -> None:
    """Create a service running IMAGE [COMMAND [ARG...]]."""
    if mode == "global" and spec["replicas"] is not None:
        raise click.BadParameter("--replicas can only be used with replicated mode", param_hint="'--replicas'")
    if not image.strip():
        raise click.BadParameter("the image is empty", param_hint="'IMAGE'")
    defaults = {"replicas": 1, "reserve_cpu": 0, "reserve_memory": 0, "limit_cpu": 0, "limit_memory": 0,
                "restart_max_attempts": 0, "restart_window": 0.0}
    params: dict[str, Any] = {"name": name or random_name(), "image": image, "command": list(command),
                              "mode": mode}
    for option, key in SPEC_PARAMS.items():
        value = spec[option]
        if option == "replicas" and mode == "global":
            continue
        if value is None:
            if option not in defaults:
                continue  # the daemon's default (endpoint mode: vip)
            value = defaults[option]
        params[key] = list(value) if isinstance(value, tuple) else value
    for key in ("networks", "ports"):
        if spec[key]:
            params[key] = list(spec[key])
    result = daemon.call("service.create", params)
    click.echo(result["id"])
    if not detach:
        expected = params.get("replicas") if mode == "replicated" else None
        Waiter(daemon, result["id"], result["name"], mode, expected, None, quiet, wait_timeout).run()


@service.command("update")
@click.option("--image", help="The image of the service's tasks.")
@click.option("--args", "args", help="The command and its arguments (replaces them; shell-quoted string).")
@spec_options(update=True)
@click.option("--env-add", multiple=True, type=ENV, metavar="KEY=VALUE", help="Add or change a variable.")
@click.option("--env-rm", multiple=True, type=ENV_KEY, metavar="KEY", help="Remove a variable.")
@click.option("--constraint-add", multiple=True, type=CONSTRAINT, metavar="EXPR", help="Add a constraint.")
@click.option("--constraint-rm", multiple=True, metavar="EXPR", help="Remove a constraint.")
@click.option("--network-add", multiple=True, type=NETWORK, help="Attach the service to a network.")
@click.option("--network-rm", multiple=True, type=NETWORK, help="Detach the service from a network.")
@click.option("--publish-add", multiple=True, type=PUBLISH, callback=check_publish,
              help="Publish a port: [PUBLISHED:]TARGET[/PROTO] or published=P,target=T[,protocol=..][,mode=..].")
@click.option("--publish-rm", multiple=True, type=PUBLISH_RM, help="Remove a published port by its target port.")
@click.argument("ref", metavar="SERVICE")
@with_daemon
def service_update(daemon: LocalDaemon, ref: str, image: str | None, args: str | None, detach: bool, quiet: bool,
                   wait_timeout: float, env_add: tuple[str, ...], env_rm: tuple[str, ...],
                   constraint_add: tuple[str, ...], constraint_rm: tuple[str, ...], network_add: tuple[str, ...],
                   network_rm: tuple[str, ...], publish_add: tuple[dict, ...], publish_rm: tuple[dict, ...],
                   **spec: Any) -> None:
    """Change a service; only the flags given change."""
    ctx = click.get_current_context()
    given = {**spec, "image": image, "args": args, "env_add": env_add, "env_rm": env_rm,
             "constraint_add": constraint_add, "constraint_rm": constraint_rm}
    keys = {**SPEC_PARAMS, "image": "image", "args": "command", "env_add": "env_add", "env_rm": "env_rm",
            "constraint_add": "constraint_add", "constraint_rm": "constraint_rm"}
    params: dict[str, Any] = {"ref": ref}
    for option, key in keys.items():
        if ctx.get_parameter_source(option) in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None):
            continue
        value = given[option]
        if option == "args":
            try:
                value = shlex.split(value)
            except ValueError as exc:
                raise click.BadParameter(f"{value!r}: {exc}", param_hint="'--args'") from None
        if option == "image" and not value.strip():
            raise click.BadParameter("the image is empty", param_hint="'--image'")
        params[key] = list(value) if isinstance(value, tuple) else value
    if network_add or network_rm or publish_add or publish_rm:
        # The daemon replaces the lists it is given: send the whole new lists, made from the current spec.
        current = daemon.call("service.inspect", {"refs": [ref]})[0].get("spec") or {}
        if network_add or network_rm:
            params["networks"] = updated_networks(daemon, current.get("networks") or [], network_add, network_rm)
        if publish_add or publish_rm:
            params["ports"] = updated_ports(current.get("ports") or [], publish_add, publish_rm)
    before = [] if detach else daemon.call("service.ps", {"refs": [ref]})
    result = daemon.call("service.update", params)
    click.echo(ref)
    if not detach:
        spec_now = daemon.call("service.inspect", {"refs": [result["id"]]})[0].get("spec", {})
        mode = spec_now.get("mode", "replicated")
        expected = spec_now.get("replicas") if mode == "replicated" else None
        image_now = (spec_now.get("container") or {}).get("image")
        Waiter(daemon, result["id"], result["name"], mode, expected, image_now, quiet, wait_timeout,
               before=before).run()


def updated_networks(daemon: LocalDaemon, current: Sequence[str], add: Sequence[str],
                     remove: Sequence[str]) -> list[str]:
    """The service's network IDs without `remove`, then with `add` (docker's updateNetworks)."""
    refs = list(dict.fromkeys([*remove, *add]))
    ids = {ref: net["id"] for ref, net in zip(refs, daemon.call("network.inspect", {"refs": refs}))}
    gone = {ids[ref] for ref in remove}
    networks = [n for n in current if n not in gone]
    for ref in add:
        if ids[ref] in networks:
            fail(f"service is already attached to network {ref}")
        networks.append(ids[ref])
    return networks


def updated_ports(current: Sequence[Mapping[str, Any]], add: Sequence[Mapping[str, Any]],
                  remove: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The spec's ports without those whose target/protocol is in `remove`, then `add` (docker's updatePorts)."""
    ports = [{"target": int(p["target"]), "published": int(p.get("published") or 0),
              "protocol": p.get("protocol") or "tcp", "mode": p.get("mode") or "ingress"} for p in current]
    ports = [p for p in ports if not any(p["target"] == r["target"] and p["protocol"] == r["protocol"]
                                         for r in remove)]
    for port in add:
        if dict(port) not in ports:
            ports.append(dict(port))
    return ports


@service.command("scale")
@detach_option
@timeout_option
@click.argument("scales", metavar="SERVICE=REPLICAS...", nargs=-1, required=True, type=SCALE)
@with_daemon
def service_scale(daemon: LocalDaemon, detach: bool, wait_timeout: float,
                  scales: tuple[tuple[str, int], ...]) -> None:
    """Set the number of tasks of replicated services, then follow them until they converge."""
    wanted = dict(scales)
    scaled = daemon.call("service.scale", {"scales": wanted})  # one {id, name} per service, in order
    for name, count in wanted.items():
        click.echo(f"{name} scaled to {count}")
    if detach:
        return
    # As docker does: wait for each service in turn; one deadline for all of them.
    deadline = time.monotonic() + wait_timeout
    failures = [failure for count, result in zip(wanted.values(), scaled)
                if (failure := Waiter(daemon, result["id"], result["name"], "replicated", count, None, False,
                                      wait_timeout).wait(deadline))]
    for failure in failures[:-1]:
        click.echo(f"Error: {failure}", err=True)
    if failures:
        fail(failures[-1])


@service.command("rm")
@services_argument
@with_daemon
def service_rm(daemon: LocalDaemon, refs: tuple[str, ...]) -> None:
    """Remove services (their tasks stop)."""
    for name in daemon.call("service.rm", {"refs": list(refs)}):
        click.echo(name)


SERVICE_COLUMNS = ("ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS")
TASK_COLUMNS = ("ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR")


@service.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Only print IDs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@with_daemon
def service_ls(daemon: LocalDaemon, quiet: bool, fmt: str) -> None:
    """List the services."""
    rows = sorted(daemon.call("service.ls"), key=lambda r: (r["name"], r["id"]))
    if fmt == "json":
        print_json(rows)
    elif quiet:
        for row in rows:
            click.echo(row["id"])
    else:
        print_table([[row["id"][:ID_LEN], row["name"], row["mode"], row["replicas"], row["image"],
                      row.get("ports") or ""] for row in rows], SERVICE_COLUMNS)


@service.command("ps")
@click.option("--quiet", "-q", is_flag=True, help="Only print task IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate IDs, images and errors.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@services_argument
@with_daemon
def service_ps(daemon: LocalDaemon, quiet: bool, no_trunc: bool, fmt: str, refs: tuple[str, ...]) -> None:
    """List the tasks of services (the current ones and their history)."""
    rows = daemon.call("service.ps", {"refs": list(refs)})
    if fmt == "json":
        print_json(rows)
    elif quiet:
        for row in rows:
            click.echo(row["id"])
    else:
        print_table(task_table(rows, trunc=not no_trunc), TASK_COLUMNS)


def task_table(rows: Sequence[Mapping[str, Any]], trunc: bool) -> list[list[str]]:
    """Docker's ps table: a slot's current task first, its older tasks under it as " \\_ NAME"."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["name"], []).append(row)
    table = []
    for name, tasks in groups.items():
        tasks = sorted(tasks, key=lambda t: t["desired_state"] != "running")  # stable: keeps the daemon's order
        for i, t in enumerate(tasks):
            image = t["image"].split("@", 1)[0] if trunc else t["image"]
            error = t.get("error") or ""
            if trunc and len(error) > MAX_ERR_LEN:
                error = error[:MAX_ERR_LEN - 1] + "…"
            table.append([t["id"][:ID_LEN] if trunc else t["id"], name if i == 0 else f" \\_ {name}", image,
                          t.get("node") or "", _title(t["desired_state"]), _title(t["current_state"]),
                          f'"{error}"' if error else ""])
    return table


@service.command("inspect")
@click.option("--format", "fmt", type=click.Choice(["json", "pretty"]), default="json", show_default=True)
@services_argument
@with_daemon
def service_inspect(daemon: LocalDaemon, fmt: str, refs: tuple[str, ...]) -> None:
    """Show services in detail (SERVICE: ID, ID prefix or name)."""
    services = daemon.call("service.inspect", {"refs": list(refs)})
    if fmt == "json":
        print_json(services)
    else:
        click.echo("\n\n".join("\n".join(pretty_service(s)) for s in services))


def pretty_service(s: Mapping[str, Any]) -> list[str]:
    """docker service inspect --pretty, for our service objects."""
    spec = s.get("spec") or {}
    container = spec.get("container") or {}
    lines = [kv("ID", s["id"]), kv("Name", spec.get("name", ""))]
    if spec.get("labels"):
        lines += ["Labels:"] + [f" {k}={v}" if v else f" {k}" for k, v in sorted(spec["labels"].items())]
    if spec.get("mode") == "global":
        lines.append(kv("Service Mode", "Global"))
    else:
        lines += [kv("Service Mode", "Replicated"), kv("Replicas", spec.get("replicas", 0), 1)]
    for label, key in (("Created at", "created_at"), ("Updated at", "updated_at")):
        if s.get(key):
            lines.append(kv(label, timestamp(s[key])))
    lines.append("Placement:")
    if spec.get("constraints"):
        lines.append(kv("Constraints", "[" + " ".join(spec["constraints"]) + "]", 1))
    restart = spec.get("restart") or {}
    if restart:
        lines += ["Restart Policy:", kv("Condition", restart.get("condition", ""), 1),
                  kv("Delay", format_duration(float(restart.get("delay", 0))), 1),
                  kv("Max Attempts", restart.get("max_attempts", 0), 1),
                  kv("Window", format_duration(float(restart.get("window", 0))), 1)]
    lines += ["ContainerSpec:", kv("Image", container.get("image", ""), 1)]
    if container.get("command"):
        lines.append(kv("Args", " ".join(shlex.quote(a) for a in container["command"]), 1))
    if container.get("env"):
        lines.append(kv("Env", " ".join(container["env"]), 1))
    if container.get("stop_grace_period") is not None:
        lines.append(kv("StopGracePeriod", format_duration(float(container["stop_grace_period"])), 1))
    if container.get("mounts"):
        lines.append("Mounts:")
        for m in container["mounts"]:
            lines += [kv("Target", m.get("target", ""), 1), kv("Source", m.get("source", ""), 2),
                      kv("ReadOnly", str(bool(m.get("readonly"))).lower(), 2), kv("Type", m.get("type", ""), 2)]
    resources = [("Reservations", spec.get("reservations") or {}), ("Limits", spec.get("limits") or {})]
    if any(r.get("nano_cpus") or r.get("memory_bytes") for _, r in resources):
        lines.append("Resources:")
        for label, r in resources:
            if r.get("nano_cpus") or r.get("memory_bytes"):
                lines.append(f" {label}:")
                if r.get("nano_cpus"):
                    lines.append(kv("CPU", f"{r['nano_cpus'] / 1e9:g}", 2))
                if r.get("memory_bytes"):
                    lines.append(kv("Memory", binary_size(r["memory_bytes"]), 2))
    return lines


def binary_size(size: float) -> str:
    """Docker's BytesSize: 64MiB, 1.5GiB."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.4g}{units[i]}"


def timestamp(value: Any) -> str:
    """Seconds since the epoch (or a string already) -> RFC 3339 with nanoseconds, UTC."""
    if isinstance(value, (int, float)):
        when = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
        return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return str(value)


# -- logs ----------------------------------------------------------------------


@service.command("logs")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (until Ctrl-C).")
@click.option("--tail", type=TAIL, default="all", show_default=True, help="Lines to show from the end.")
@click.option("--timestamps", "-t", is_flag=True, help="Show each line's time.")
@click.argument("ref", metavar="SERVICE")
@with_daemon
def service_logs(daemon: LocalDaemon, follow: bool, tail: int | None, timestamps: bool, ref: str) -> None:
    """Print the output of a service's tasks, as TASK@NODE    | LINE."""
    # Chunk by chunk: each answer carries the cursors to pass back; without --follow the
    # daemon says when all is read, with it each call waits up to LOGS_WAIT for new lines.
    cursors: dict | None = None
    warned: set[str] = set()
    try:
        while True:
            answer = daemon.call("service.logs", {"ref": ref, "tail": tail, "follow": follow, "cursors": cursors,
                                                  "wait": LOGS_WAIT if follow else 0.0}, timeout=LOGS_CALL_TIMEOUT)
            if not (isinstance(answer, dict) and isinstance(answer.get("lines"), list)
                    and isinstance(answer.get("cursors"), dict)):
                fail("the daemon's answer to service.logs is not a chunk of logs (is it an older version?)")
            for warning in answer.get("warnings") or ():
                if warning not in warned:
                    warned.add(warning)
                    click.echo(f"Warning: {warning}", err=True)
            for entry in answer["lines"]:
                print_log(entry, timestamps)
            cursors = answer["cursors"]
            if answer.get("done") and not follow:
                return
    except KeyboardInterrupt:
        return


def print_log(entry: Mapping[str, Any], timestamps: bool) -> None:
    line = str(entry.get("line", ""))
    line = line[:-1] if line.endswith("\n") else line
    text = f"{entry.get('task', '')}@{entry.get('node', '')}    | {line}"
    if timestamps:
        text = f"{timestamp(entry.get('time'))} {text}"
    click.echo(text, err=entry.get("stream") == "stderr")


# -- waiting for convergence ---------------------------------------------------


def progress_bar(state: str) -> str:
    done = min(50, int(STATE_PROGRESS.get(state, 0) / MAX_PROGRESS * 100) // 2)
    return f"[{'=' * done}>{' ' * (50 - done)}]"


def trunc_error(message: str) -> str:
    message = message.replace("\n", " ")
    return message[:MAX_PROGRESS_ERR - 1] + "…" if len(message) > MAX_PROGRESS_ERR else message


class Progress:
    """Lines keyed by slot: redrawn in place on a terminal, printed when they change otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out, self.tty = out, tty
        self.drawn: list[str] = []          # terminal: the block now on screen
        self.last: dict[str, str] = {}      # not a terminal: the last line printed per key

    def show(self, events: Iterable[str], frame: Sequence[tuple[str, str]]) -> None:
        events = list(events)
        if self.tty:
            lines = [text for _, text in frame]
            if not events and lines == self.drawn:
                return
            if self.drawn:
                self.out.write(f"\x1b[{len(self.drawn)}A\r\x1b[J")
            self.out.write("".join(f"{e}\n" for e in events) + "".join(f"{line}\n" for line in lines))
            self.drawn = lines
        else:
            for event in events:
                self.out.write(f"{event}\n")
            for key, text in frame:
                if self.last.get(key) != text:
                    self.out.write(f"{text}\n")
                    self.last[key] = text
        self.out.flush()

    def line(self, text: str) -> None:
        """A line under the block, which stays."""
        self.out.write(f"{text}\n")
        self.out.flush()
        self.drawn = []


class Waiter:
    """Follow a created, updated or scaled service until its tasks all run (docker's WaitOnService).

    A task that cannot start (no node fits, a command that fails at once) is
    replaced again and again with the same error: each reason is shown once,
    with a line saying how long the command goes on waiting (--timeout)."""

    def __init__(self, daemon: LocalDaemon, service_id: str, name: str, mode: str, replicas: int | None,
                 image: str | None, quiet: bool, timeout: float, before: Sequence[Mapping[str, Any]] = ()) -> None:
        self.daemon, self.service_id, self.name = daemon, service_id, name
        self.mode, self.replicas, self.image = mode, replicas, image
        self.timeout = timeout
        self.progress = None if quiet else Progress(sys.stdout, sys.stdout.isatty())
        # update: the tasks there were before; the running ones may be replaced (or may not need to be)
        self.old_ids = {t["id"] for t in before}
        self.old_running = {t["id"]: t["name"] for t in before if t["desired_state"] == "running"}
        self.replacing = False
        self.polls = 0
        self.reported: set[str] = set()
        self.reasons: set[str] = set()      # the errors shown so far, each without its task's ID
        self.pending_errors: dict[str, tuple[str, int]] = {}
        self.last_error = ""
        self.status = ""  # the state of things, for a timeout without an error: "1 of 2 tasks running"

    def run(self) -> None:
        """Wait up to --timeout; fail if the service has not converged by then."""
        failure = self.wait()
        if failure:
            fail(failure)

    def wait(self, deadline: float | None = None) -> str | None:
        """None once the service converged, else the sentence saying why it did not by the deadline."""
        deadline = time.monotonic() + self.timeout if deadline is None else deadline
        try:
            while True:
                try:
                    rows = self.daemon.call("service.ps", {"refs": [self.service_id]})
                except RPCError as exc:
                    if exc.code not in ("unavailable", "deadline"):
                        raise
                    self.status = exc.message  # no leader for a moment: keep waiting
                else:
                    if self.poll(rows):
                        if self.progress:
                            self.progress.line("verify: Service converged")
                        return None
                if time.monotonic() >= deadline:
                    return (f"service {self.name} did not converge in {format_duration(self.timeout)}: "
                            f"{self.last_error or self.status}")
                _sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            click.echo(f"Operation continuing in background.\nUse `swarm service ps {self.name}` to check progress.",
                       err=True)
            raise click.exceptions.Exit(130) from None

    def _label(self, task: Mapping[str, Any], index: int | None = None) -> str:
        if self.mode == "global":
            return str(task.get("node_id") or task.get("node") or "")[:ID_LEN]
        return f"{index if index is not None else task.get('slot', 0)}/{self.replicas}"

    def _new_reason(self, task: Mapping[str, Any], error: str) -> bool:
        """Is this error one not shown yet? Each replacement of a task names
        itself in the same error, so the task's ID does not count."""
        reason = error.replace(task["id"], "")
        if reason in self.reasons:
            return False
        self.reasons.add(reason)
        return True

    def _current(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Per slot (node), the task meant to run: the least advanced live one, as docker picks."""
        current: dict[Any, Mapping[str, Any]] = {}
        for t in rows:
            if t["desired_state"] in TERMINAL_STATES or t["state"] in TERMINAL_STATES:
                continue
            key = t.get("node_id") if self.mode == "global" else t.get("slot")
            if key not in current or STATE_PROGRESS.get(t["state"], 0) < STATE_PROGRESS.get(current[key]["state"], 0):
                current[key] = t
        return sorted(current.values(), key=lambda t: (t.get("slot", 0), t.get("node_id", "")))

    def _up_to_date(self, task: Mapping[str, Any]) -> bool:
        if self.image is not None and task.get("image") not in (None, self.image):
            return False
        if task["id"] not in self.old_running:
            return True
        return not self.replacing and self.polls >= UNCHANGED_GRACE_POLLS

    def poll(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Take one service.ps answer; draw it; True once the service runs as specified."""
        self.polls += 1
        old_names = set(self.old_running.values())
        if any(t["id"] not in self.old_ids and t["name"] in old_names for t in rows):
            self.replacing = True  # the update replaces tasks: wait for all of them
        events = []
        for t in rows:
            if t["id"] in self.old_ids or t["id"] in self.reported or t["state"] not in FAILED_STATES:
                continue
            self.reported.add(t["id"])
            error = t.get("error") or (f"task: non-zero exit ({t['exit_code']})" if t.get("exit_code")
                                       else f"task {t['state']}")
            self.last_error = error
            if self._new_reason(t, error):
                # whole: this line is printed once and stays (only the redrawn lines must fit one row)
                events.append(f"{self._label(t)}: {' '.join(error.splitlines())}")
        current = self._current(rows)
        desired = self.replicas if self.mode == "replicated" else len(current)
        frame = []
        running = 0
        pending_error = ""  # one seen in this poll only: named at the deadline, not drawn before it lasts
        for index, t in enumerate(current, 1):
            extra = self.mode == "replicated" and index > (desired or 0)  # scaled down: on its way out
            running += not extra and t["state"] == "running" and self._up_to_date(t)
            label = self._label(t, index)
            error = t.get("error") or ""
            count = 0
            if error and t["state"] == "pending":
                pending_error = error
                seen, count = self.pending_errors.get(t["id"], ("", 0))
                count = count + 1 if seen == error else 1
                self.pending_errors[t["id"]] = (error, count)
                if count >= PENDING_ERROR_POLLS:
                    self.last_error = error
                    self._new_reason(t, error)
            if extra:
                continue
            if count >= PENDING_ERROR_POLLS:
                frame.append((label, f"{label}: {trunc_error(error)}"))
            else:
                frame.append((label, f"{label}: {t['state']:<{LONGEST_STATE}} {progress_bar(t['state'])}"))
        frame.insert(0, ("overall", f"overall progress: {running} out of {desired} tasks"))
        if self.reasons:
            frame.append(("wait", waiting_note(self.timeout)))
        self.status = pending_error or f"{running} of {desired} tasks running"
        if self.progress:
            self.progress.show(events, frame)
        if self.mode == "global" and not current:
            return self.polls >= UNCHANGED_GRACE_POLLS  # no node to run on (or no task yet)
        return running == desired and len(current) == desired


def waiting_note(timeout: float) -> str:
    # short enough for one row of a terminal: the block it ends is redrawn by counting rows
    return f"waiting up to {format_duration(timeout)} (--timeout); Ctrl-C stops waiting, not the service"


_ADJECTIVES = ("agile", "bold", "brave", "calm", "clever", "eager", "fervent", "gentle", "happy", "keen",
               "lucid", "nifty", "quiet", "sharp", "stoic", "tender", "vibrant", "wizardly", "zealous")
_NAMES = ("babbage", "curie", "dijkstra", "einstein", "hopper", "kepler", "knuth", "lamport", "liskov",
          "lovelace", "noether", "pike", "ritchie", "shannon", "thompson", "turing", "wozniak")


def random_name() -> str:
    """A docker-style name for a service created without --name."""
    return f"{random.choice(_ADJECTIVES)}_{random.choice(_NAMES)}"

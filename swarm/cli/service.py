"""`swarm service ...`: create, ls, ps, inspect, scale, update, rm, logs.

How this works: like the rest of the CLI (`swarm.cli.main`), each command checks
its input locally (click usage error, exit 2), makes one call to the node's
daemon (methods `service.*` of docs/daemon-api.md) and prints docker's output.
`create`, `update` and `scale` then follow the service until it converges,
unless `--detach` (swarm/cli/progress.py); create and update share one flag
set (swarm/cli/service_flags.py).
`logs` calls `service.logs` with the cursors of the previous answer until it is
done (with -f: for ever, each call waiting for new lines), see swarm/daemon/logs.py.
`update --network-add/-rm` and `--publish-add/-rm` first read the current spec
(`service.inspect`) and send the whole new "networks"/"ports" lists: the
daemon replaces the lists it is given.
This module adds itself to `swarm.cli.main.swarm` when `swarm.cli.main` imports it.
"""
from __future__ import annotations

import datetime
import random
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click
from click.core import ParameterSource

from swarm.cli.common import (LocalDaemon, _title, fail, format_duration, kv, print_json, print_table, show_inspect,
                               show_list, with_daemon)
from swarm.cli.progress import ID_LEN, Waiter
from swarm.cli.root import swarm
from swarm.cli.service_flags import (CONSTRAINT, ENV, ENV_KEY, NETWORK, PUBLISH, PUBLISH_RM, SCALE, SPEC_PARAMS, TAIL,
                                     check_publish, detach_option, spec_options, timeout_option)

LOGS_WAIT = 2.0               # seconds a service.logs call with --follow waits for new lines
LOGS_CALL_TIMEOUT = 45.0      # one service.logs call (a worker's goes through a manager to the nodes)
MAX_ERR_LEN = 30              # `service ps` ERROR column, as docker truncates it
CONTEXT = {"allow_interspersed_args": False}  # what follows IMAGE is the container's


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
    show_list(rows, fmt, quiet, lambda: [[row["id"][:ID_LEN], row["name"], row["mode"], row["replicas"],
                                          row["image"], row.get("ports") or ""] for row in rows], SERVICE_COLUMNS)


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
    show_inspect(daemon.call("service.inspect", {"refs": list(refs)}), fmt, pretty_service)


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


_ADJECTIVES = ("agile", "bold", "brave", "calm", "clever", "eager", "fervent", "gentle", "happy", "keen",
               "lucid", "nifty", "quiet", "sharp", "stoic", "tender", "vibrant", "wizardly", "zealous")
_NAMES = ("babbage", "curie", "dijkstra", "einstein", "hopper", "kepler", "knuth", "lamport", "liskov",
          "lovelace", "noether", "pike", "ritchie", "shannon", "thompson", "turing", "wozniak")


def random_name() -> str:
    """A docker-style name for a service created without --name."""
    return f"{random.choice(_ADJECTIVES)}_{random.choice(_NAMES)}"

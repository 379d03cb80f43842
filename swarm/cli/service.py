"""`swarm service ...`: create, ls, ps, inspect, scale, update, rollback, rm, logs.

How this works: like the rest of the CLI (`swarm.cli.main`), each command checks
its input locally (click usage error, exit 2), makes one call to the node's
daemon (methods `service.*` of docs/daemon-api.md) and prints docker's output.
`create`, `update`, `rollback` and `scale` then follow the service until it
converges, unless `--detach` (swarm/cli/progress.py; an update or rollback also
by its UpdateStatus, which fails the command when the update pauses or rolls
back); create and update share one flag set (swarm/cli/service_spec.py; their
values' parsers in swarm/cli/service_flags.py and the modules it names).
`logs` calls `service.logs` with the cursors of the previous answer until it is
done (with -f: for ever, each call waiting for new lines), see swarm/daemon/logs.py.
`update --network-add/-rm` and `--publish-add/-rm` first read the current spec
(`service.inspect`) and send the whole new "networks"/"ports" lists: the
daemon replaces the lists it is given.
This module adds itself to the root group when the root loads it
(swarm.cli.root.COMMANDS).
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

from swarm.cli.common import (FORMAT_HELP, INSPECT_FORMAT, INSPECT_FORMAT_HELP, LIST_FORMAT, LocalDaemon, _title, fail,
                               filter_option, format_duration, human_duration, is_table, kv, self_node,
                               show_inspect, show_list, with_daemon)
from swarm.cli.progress import ID_LEN, UpdateFollow, Waiter
from swarm.cli.root import swarm
from swarm.cli.service_flags import SCALE, TAIL
from swarm.cli.service_spec import (ServiceCommand, check_rollback_alone, create_options, create_params,
                                    detach_option, registry_auth, timeout_option, update_options, update_params)

LOGS_WAIT = 2.0               # seconds a service.logs call with --follow waits for new lines
LOGS_CALL_TIMEOUT = 45.0      # one service.logs call (a worker's goes through a manager to the nodes)
MAX_ERR_LEN = 30              # `service ps` ERROR column, as docker truncates it
CONTEXT = {"allow_interspersed_args": False}  # what follows IMAGE is the container's


# -- swarm service -------------------------------------------------------------


@swarm.group()
def service() -> None:
    """Manage services (on a manager)."""


services_argument = click.argument("refs", metavar="SERVICE...", nargs=-1, required=True)


@service.command("create", cls=ServiceCommand, context_settings=CONTEXT)
@create_options()
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@with_daemon
def service_create(daemon: LocalDaemon, name: str | None, image: str, command: tuple[str, ...], detach: bool,
                   quiet: bool, wait_timeout: float, **values: Any) -> None:
    """Create a service running IMAGE [COMMAND [ARG...]]."""
    if not image.strip():
        raise click.BadParameter("the image is empty", param_hint="'IMAGE'")
    params = create_params(values, name or random_name(), image, command)
    if values["with_registry_auth"]:
        params["registry_auth"] = registry_auth(daemon.state_dir, image)
    result = daemon.call("service.create", params)
    for warning in result.get("warnings") or ():
        click.echo(warning, err=True)
    click.echo(result["id"])
    mode = params["mode"]
    if not detach:   # a service until its tasks run; a job until it completes
        expected = params.get("replicas") if mode in ("replicated", "replicated-job") else None
        Waiter(daemon, result["id"], result["name"], mode, expected, None, quiet, wait_timeout).run()


@service.command("update", cls=ServiceCommand)
@update_options()
@click.argument("ref", metavar="SERVICE")
@with_daemon
def service_update(daemon: LocalDaemon, ref: str, detach: bool, quiet: bool, wait_timeout: float,
                   network_add: tuple[str | dict, ...], network_rm: tuple[str, ...], publish_add: tuple[dict, ...],
                   publish_rm: tuple[dict, ...], **values: Any) -> None:
    """Change a service; only the flags given change (--rollback: back to its previous spec)."""
    ctx = click.get_current_context()

    def given(option: str) -> bool:
        return ctx.get_parameter_source(option) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)

    check_rollback_alone(ctx.params, given)
    params: dict[str, Any] = {"ref": ref, **update_params(values, given)}
    if values["with_registry_auth"]:     # the credentials for the new image, else the service's own
        image = params.get("image") or daemon.call("service.inspect", {"refs": [ref]})[0]["spec"]["container"]["image"]
        params["registry_auth"] = registry_auth(daemon.state_dir, image)
    view: Mapping[str, Any] = {}
    if network_add or network_rm or publish_add or publish_rm:
        # The daemon replaces the lists it is given: send the whole new lists, made from the current spec.
        view = daemon.call("service.inspect", {"refs": [ref]})[0]
        current = view.get("spec") or {}
        if network_add or network_rm:
            params["networks"] = updated_networks(daemon, current, network_add, network_rm)
        if publish_add or publish_rm:
            params["ports"] = updated_ports(current.get("ports") or [], publish_add, publish_rm)
    before: list[dict] = []
    if not detach:
        view = view or daemon.call("service.inspect", {"refs": [ref]})[0]
        before = daemon.call("service.ps", {"refs": [ref]})
    result = daemon.call("service.update", params)
    for warning in result.get("warnings") or ():
        click.echo(warning, err=True)
    click.echo(ref)
    if not detach:
        follow_update(daemon, result, quiet, wait_timeout, before, view.get("update_status"),
                      rollback=bool(params.get("rollback")))


@service.command("rollback")
@detach_option
@click.option("--quiet", "-q", is_flag=True, help="Suppress progress output.")
@timeout_option
@click.argument("ref", metavar="SERVICE")
@with_daemon
def service_rollback(daemon: LocalDaemon, ref: str, detach: bool, quiet: bool, wait_timeout: float) -> None:
    """Revert changes to a service's configuration (back to its previous spec)."""
    view: Mapping[str, Any] = {}
    before: list[dict] = []
    if not detach:
        view = daemon.call("service.inspect", {"refs": [ref]})[0]
        before = daemon.call("service.ps", {"refs": [ref]})
    result = daemon.call("service.rollback", {"ref": ref})
    click.echo(ref)
    if not detach:
        follow_update(daemon, result, quiet, wait_timeout, before, view.get("update_status"), rollback=True)


def follow_update(daemon: LocalDaemon, result: Mapping[str, Any], quiet: bool, wait_timeout: float,
                  before: Sequence[Mapping[str, Any]], status_before: Mapping[str, Any] | None,
                  rollback: bool) -> None:
    """Follow an update (or rollback) as docker's WaitOnService: the tasks, and the service's
    UpdateStatus, which fails the command when the update pauses or rolls back."""
    spec_now = daemon.call("service.inspect", {"refs": [result["id"]]})[0].get("spec", {})
    mode = spec_now.get("mode", "replicated")
    expected = spec_now.get("replicas") if mode in ("replicated", "replicated-job") else None
    image_now = (spec_now.get("container") or {}).get("image")
    Waiter(daemon, result["id"], result["name"], mode, expected, image_now, quiet, wait_timeout,
           before=before, update=UpdateFollow(status_before, rollback)).run()


def updated_networks(daemon: LocalDaemon, current: Mapping[str, Any], add: Sequence[str | Mapping[str, Any]],
                     remove: Sequence[str]) -> list[str | dict[str, Any]]:
    """The spec's networks (with their aliases) without `remove`, then `add` (docker's
    updateNetworks): the "networks" param, a network's ID or {"target": ID, "aliases": [...]}."""
    def target(item: str | Mapping[str, Any]) -> str:
        return item if isinstance(item, str) else item["target"]

    refs = list(dict.fromkeys([*remove, *map(target, add)]))
    ids = {ref: net["id"] for ref, net in zip(refs, daemon.call("network.inspect", {"refs": refs}))}
    gone = {ids[ref] for ref in remove}
    aliases = current.get("network_aliases") or {}
    networks: list[str | dict[str, Any]] = [
        {"target": n, "aliases": list(aliases[n])} if aliases.get(n) else n
        for n in current.get("networks") or [] if n not in gone]
    for item in add:
        net_id = ids[target(item)]
        if net_id in map(target, networks):
            fail(f"service is already attached to network {target(item)}")
        networks.append(net_id if isinstance(item, str) else {**item, "target": net_id})
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
                if (failure := Waiter(daemon, result["id"], result["name"], result.get("mode", "replicated"), count,
                                      None, False, wait_timeout).wait(deadline))]
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
# --format templates: docker's field names, and the column titles of "table TEMPLATE".
SERVICE_HEADERS = {"ID": "ID", "Name": "NAME", "Mode": "MODE", "Replicas": "REPLICAS", "Image": "IMAGE",
                   "Ports": "PORTS"}
TASK_HEADERS = {"ID": "ID", "Name": "NAME", "Image": "IMAGE", "Node": "NODE", "DesiredState": "DESIRED STATE",
                "CurrentState": "CURRENT STATE", "Error": "ERROR", "Ports": "PORTS"}


@service.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Only print IDs.")
@filter_option
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True, help=FORMAT_HELP)
@with_daemon
def service_ls(daemon: LocalDaemon, quiet: bool, filters: dict[str, list[str]] | None, fmt: str) -> None:
    """List the services (filters: id, name, label, mode)."""
    rows = sorted(daemon.call("service.ls", {"filters": filters} if filters else {}),
                  key=lambda r: (r["name"], r["id"]))

    def fields(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [dict(zip(SERVICE_HEADERS, cells)) for cells in table()]

    def table() -> list[list[str]]:
        # Docker's MODE column says "replicated job", "global job"
        return [[row["id"][:ID_LEN], row["name"], row["mode"].replace("-", " "), row["replicas"], row["image"], row.get("ports") or ""]
                for row in rows]

    show_list(rows, fmt, quiet, table, SERVICE_COLUMNS, fields=fields, headers=SERVICE_HEADERS)


@service.command("ps")
@click.option("--quiet", "-q", is_flag=True, help="Only print task IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate IDs, images and errors.")
@filter_option
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True, help=FORMAT_HELP)
@services_argument
@with_daemon
def service_ps(daemon: LocalDaemon, quiet: bool, no_trunc: bool, filters: dict[str, list[str]] | None, fmt: str,
               refs: tuple[str, ...]) -> None:
    """List the tasks of services, the current ones and their history
    (filters: id, name, node, desired-state, label)."""
    params: dict[str, Any] = {"refs": list(refs)}
    if filters:
        params["filters"] = self_node(daemon, filters)
    show_tasks(daemon.call("service.ps", params), fmt, quiet, trunc=not no_trunc)


def show_tasks(rows: Sequence[Mapping[str, Any]], fmt: str, quiet: bool, trunc: bool) -> None:
    """`service ps` and `node ps`: JSON, -q, docker's table or a --format template."""
    show_list(rows, fmt, quiet, lambda: task_table(rows, trunc), TASK_COLUMNS,
              fields=lambda rows: task_fields(rows, trunc, indent=is_table(fmt)), headers=TASK_HEADERS)


def task_fields(rows: Sequence[Mapping[str, Any]], trunc: bool, indent: bool) -> list[dict[str, str]]:
    """Tasks as docker's task formatter shows them: a slot's current task first, its older
    tasks under it (named " \\_ NAME" in a table, as docker indents them)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["name"], []).append(row)
    out = []
    for name, tasks in groups.items():
        tasks = sorted(tasks, key=lambda t: t["desired_state"] != "running")  # stable: keeps the daemon's order
        for i, t in enumerate(tasks):
            error = t.get("error") or ""
            if trunc and len(error) > MAX_ERR_LEN:
                error = error[:MAX_ERR_LEN - 1] + "…"
            out.append({"ID": t["id"][:ID_LEN] if trunc else t["id"],
                        "Name": f" \\_ {name}" if i and indent else name,
                        "Image": t["image"].split("@", 1)[0] if trunc else t["image"],
                        "Node": t.get("node") or "", "DesiredState": _title(desired_shown(t)),
                        "CurrentState": _title(t["current_state"]), "Error": f'"{error}"' if error else "",
                        "Ports": t.get("ports") or ""})
    return out


def task_table(rows: Sequence[Mapping[str, Any]], trunc: bool) -> list[list[str]]:
    """Docker's ps table (without its PORTS column: tasks publish no host ports here)."""
    return [[f[key] for key in TASK_HEADERS if key != "Ports"] for f in task_fields(rows, trunc, indent=True)]


@service.command("inspect")
@click.option("--format", "-f", "fmt", type=INSPECT_FORMAT, default="json", show_default=True,
              help=INSPECT_FORMAT_HELP)
@click.option("--pretty", is_flag=True, help="Print docker's human-friendly text (as --format pretty).")
@services_argument
@with_daemon
def service_inspect(daemon: LocalDaemon, fmt: str, pretty: bool, refs: tuple[str, ...]) -> None:
    """Show services in detail (SERVICE: ID, ID prefix or name)."""
    if pretty and fmt not in ("json", "pretty"):
        fail("--format is incompatible with human friendly format")
    services = daemon.call("service.inspect", {"refs": list(refs)})
    fmt = "pretty" if pretty else fmt
    names: dict[str, str] = {}
    if fmt == "pretty" and any((s.get("spec") or {}).get("networks") for s in services):
        names = {n["id"]: n["name"] for n in daemon.call("network.ls")}
    show_inspect(services, fmt, lambda s: pretty_service(s, names))


def pretty_service(s: Mapping[str, Any], network_names: Mapping[str, str] | None = None) -> list[str]:
    """docker service inspect --pretty (cli/command/service/formatter.go), for our service
    objects: its sections in its order, each option shown when it is set."""
    spec = s.get("spec") or {}
    container = spec.get("container") or {}
    lines = [kv("ID", s["id"]), kv("Name", spec.get("name", ""))]
    if spec.get("labels"):
        lines += ["Labels:"] + [f" {k}={v}" if v else f" {k}" for k, v in sorted(spec["labels"].items())]
    mode = spec.get("mode", "replicated")
    if mode == "global":
        lines.append(kv("Service Mode", "Global"))
    elif mode == "replicated":
        lines += [kv("Service Mode", "Replicated"), kv("Replicas", spec.get("replicas", 0), 1)]
    else:
        lines.append(kv("Service Mode", mode.replace("-job", " job").capitalize()))
        if mode == "replicated-job":
            lines.append(kv("Total Completions", spec.get("replicas", 0), 1))
        if spec.get("max_concurrent"):
            lines.append(kv("Max Concurrent", spec["max_concurrent"], 1))
    for label, key in (("Created at", "created_at"), ("Updated at", "updated_at")):
        if s.get(key):
            lines.append(kv(label, timestamp(s[key])))
    lines += _pretty_update_status(s.get("update_status") or {}, time.time())
    lines.append("Placement:")
    if spec.get("constraints"):
        lines.append(kv("Constraints", "[" + " ".join(spec["constraints"]) + "]", 1))
    if spec.get("placement_prefs"):
        lines.append(kv("Preferences", "[" + " ".join(spec["placement_prefs"]) + "]", 1))
    if spec.get("max_replicas_per_node"):
        lines.append(kv("Max Replicas Per Node", spec["max_replicas_per_node"], 1))
    if mode not in ("replicated-job", "global-job"):    # docker: jobs have no update or rollback config
        for title, key, order in (("UpdateConfig", "update_config", "Update order"),
                                  ("RollbackConfig", "rollback_config", "Rollback order")):
            if spec.get(key):
                lines += _pretty_update_config(title, spec[key], order)
    restart = spec.get("restart") or {}
    if restart:
        lines += ["Restart Policy:", kv("Condition", restart.get("condition", ""), 1),
                  kv("Delay", format_duration(float(restart.get("delay", 0))), 1),
                  kv("Max Attempts", restart.get("max_attempts", 0), 1),
                  kv("Window", format_duration(float(restart.get("window", 0))), 1)]
    lines += ["ContainerSpec:", kv("Image", container.get("image", ""), 1)]
    lines += _pretty_container(container)
    lines += _pretty_mounts(container.get("mounts") or ())
    for title, key in (("Configs", "configs"), ("Secrets", "secrets")):   # docker's order
        if container.get(key):
            lines.append(f"{title}:")
            for ref in container[key]:
                lines += [kv("Target", ref.get("target", ""), 1), kv("Source", ref.get("name", ""), 2)]
    log_driver = container.get("log_driver") or {}
    if log_driver and (log_driver.get("name", "json-file") != "json-file" or log_driver.get("options")):
        lines += ["Log Driver:", kv("Name", log_driver.get("name", ""), 1)]
        if log_driver.get("options"):
            lines += [" LogOpts:"] + [kv(k, v, 2) for k, v in sorted(log_driver["options"].items())]
    lines += _pretty_resources(spec, container)
    if spec.get("networks"):
        names = network_names or {}
        lines.append("Networks:" + "".join(f" {names.get(n, n)}" for n in spec["networks"]))
    if "endpoint_mode" in spec:
        lines.append(kv("Endpoint Mode", spec["endpoint_mode"]))
    ports = s.get("ports") or spec.get("ports") or ()
    if ports:
        lines.append("Ports:")
        for p in ports:
            lines += [f" PublishedPort = {p.get('published', 0)}", f"  Protocol = {p.get('protocol', 'tcp')}",
                      f"  TargetPort = {p.get('target', 0)}", f"  PublishMode = {p.get('mode', 'ingress')}"]
    if container.get("healthcheck"):
        lines += _pretty_healthcheck(container["healthcheck"])
    return lines


def _epoch(value: Any) -> float:
    """A time of the record: seconds since the epoch, or RFC 3339 text (0: none)."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        when = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return when.replace(tzinfo=when.tzinfo or datetime.timezone.utc).timestamp()


def _pretty_update_status(status: Mapping[str, Any], now: float) -> list[str]:
    """docker's UpdateStatus block: the state, since when, and its message."""
    if not status.get("state"):
        return []
    lines = ["UpdateStatus:", kv("State", status["state"], 1)]
    started, completed = _epoch(status.get("started_at") or 0), _epoch(status.get("completed_at") or 0)
    if started:
        lines.append(kv("Started", f"{human_duration(max(0.0, now - started))} ago", 1))
    if status["state"] == "completed" and completed:     # docker shows it for a completed update only
        lines.append(kv("Completed", f"{human_duration(max(0.0, now - completed))} ago", 1))
    return lines + [kv("Message", status.get("message", ""), 1)]


def _pretty_update_config(title: str, config: Mapping[str, Any], order_label: str) -> list[str]:
    """docker's UpdateConfig / RollbackConfig block (a delay or monitor of 0 is not shown)."""
    lines = [f"{title}:", kv("Parallelism", config.get("parallelism", 1), 1)]
    if config.get("delay"):
        lines.append(kv("Delay", format_duration(float(config["delay"])), 1))
    lines.append(kv("On failure", config.get("failure_action", "pause"), 1))
    if config.get("monitor"):
        lines.append(kv("Monitoring Period", format_duration(float(config["monitor"])), 1))
    return lines + [kv("Max failure ratio", f"{float(config.get('max_failure_ratio') or 0):g}", 1),
                    kv(order_label, config.get("order", "stop-first"), 1)]


def _pretty_healthcheck(health: Mapping[str, Any]) -> list[str]:
    """docker's Healthcheck block (its durations of 0 mean the image's value, else docker's default)."""
    lines = [" Healthcheck:", f"  Interval = {format_duration(float(health.get('interval') or 0))}",
             f"  Retries = {health.get('retries') or 0}",
             f"  StartPeriod = {format_duration(float(health.get('start_period') or 0))}",
             f"  Timeout = {format_duration(float(health.get('timeout') or 0))}"]
    if health.get("start_interval"):
        lines.append(f"  StartInterval = {format_duration(float(health['start_interval']))}")
    if health.get("test"):
        lines += ["  Tests:"] + [f"   Test = {test}" for test in health["test"]]
    return lines


def _pretty_container(c: Mapping[str, Any]) -> list[str]:
    lines = []
    if c.get("entrypoint"):
        lines.append(kv("Command", " ".join(shlex.quote(a) for a in c["entrypoint"]), 1))
    if c.get("command"):
        lines.append(kv("Args", " ".join(shlex.quote(a) for a in c["command"]), 1))
    if c.get("env"):
        lines.append(kv("Env", " ".join(c["env"]), 1))
    simple = (("Dir", "workdir"), ("User", "user"), ("Hostname", "hostname"), ("Stop Signal", "stop_signal"))
    lines += [kv(label, c[key], 1) for label, key in simple if c.get(key)]
    if c.get("groups"):
        lines.append(kv("Groups", " ".join(c["groups"]), 1))
    if c.get("init") is not None:
        lines.append(kv("Init", str(bool(c["init"])).lower(), 1))
    lines += [kv(label, "true", 1) for label, key in (("TTY", "tty"), ("Read Only", "read_only")) if c.get(key)]
    if c.get("oom_score_adj"):
        lines.append(kv("OOM Score Adj", c["oom_score_adj"], 1))
    if c.get("stop_grace_period") is not None:
        lines.append(kv("StopGracePeriod", format_duration(float(c["stop_grace_period"])), 1))
    if c.get("labels"):
        lines += [" Labels:"] + [f"  {k}={v}" if v else f"  {k}" for k, v in sorted(c["labels"].items())]
    dns = c.get("dns") or {}
    for label, key in (("DNS", "nameservers"), ("DNS Search", "search"), ("DNS Options", "options")):
        if dns.get(key):
            lines.append(kv(label, " ".join(dns[key]), 1))
    if c.get("hosts"):
        lines += [" Hosts:"] + [f"  {line}" for line in c["hosts"]]
    if c.get("cap_add") or c.get("cap_drop"):
        lines.append("Capabilities:")
        lines += [kv(label, ", ".join(c[key]), 1) for label, key in (("Add", "cap_add"), ("Drop", "cap_drop"))
                  if c.get(key)]
    if c.get("sysctls"):
        lines += ["SysCtls:"] + [f" {k}: {v}" if v else f" {k}" for k, v in sorted(c["sysctls"].items())]
    if c.get("ulimits"):
        lines += ["Ulimits:"] + [f" {u['name']}: {u['soft']}:{u['hard']}"
                                 for u in sorted(c["ulimits"], key=lambda u: u["name"])]
    return lines


# Mount options: the key in our record, its label, and its default (not shown).
_MOUNT_OPTIONS = (("bind_propagation", "Propagation", ""), ("bind_recursive", "Recursive", "enabled"),
                  ("volume_nocopy", "NoCopy", False), ("volume_driver", "Driver", "local"),
                  ("volume_labels", "Labels", {}), ("volume_opts", "Options", {}), ("tmpfs_size", "Size", 0),
                  ("tmpfs_mode", "Mode", 0))


def _pretty_mounts(mounts: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["Mounts:"] if mounts else []
    for m in mounts:
        lines += [kv("Target", m.get("target", ""), 1), kv("Source", m.get("source", ""), 2),
                  kv("ReadOnly", str(bool(m.get("readonly"))).lower(), 2), kv("Type", m.get("type", ""), 2)]
        for key, label, default in _MOUNT_OPTIONS:
            value = m.get(key, default)
            if value == default:
                continue
            if isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
            elif key == "tmpfs_size":
                value = binary_size(value)
            elif key == "tmpfs_mode":
                value = f"{value:o}"
            elif isinstance(value, bool):
                value = str(value).lower()
            lines.append(kv(label, value, 2))
    return lines


def _pretty_resources(spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    resources = [("Reservations", spec.get("reservations") or {}), ("Limits", spec.get("limits") or {})]
    pids = container.get("pids_limit") or 0
    if not (pids or any(r.get("nano_cpus") or r.get("memory_bytes") for _, r in resources)):
        return []
    lines = ["Resources:"]
    for label, r in resources:
        extra = pids if label == "Limits" else 0
        if r.get("nano_cpus") or r.get("memory_bytes") or extra:
            lines.append(f" {label}:")
            if r.get("nano_cpus"):
                lines.append(kv("CPU", f"{r['nano_cpus'] / 1e9:g}", 2))
            if r.get("memory_bytes"):
                lines.append(kv("Memory", binary_size(r["memory_bytes"]), 2))
            if extra:
                lines.append(kv("PIDs", extra, 2))
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


def log_time(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--since/--until in Docker's syntax (a time, Unix seconds, or a duration back from now)
    as the RFC 3339 UTC time the daemon compares lines with."""
    if value is None:
        return None
    from swarm.api import logview  # `service logs` alone needs it: the other commands start without
    try:
        return logview.get_timestamp(value, time.time(), datetime.datetime.now().astimezone().tzinfo)
    except logview.BadTime as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@service.command("logs")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (until Ctrl-C).")
@click.option("--tail", "-n", type=TAIL, default="all", show_default=True, help="Lines to show from the end.")
@click.option("--since", callback=log_time, metavar="TIME",
              help='Show lines since a time (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m").')
@click.option("--until", callback=log_time, metavar="TIME",
              help='Show lines before a time (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m").')
@click.option("--timestamps", "-t", is_flag=True, help="Show each line's time.")
@click.option("--no-task-ids", is_flag=True, help="Do not include task IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate task IDs.")
@click.option("--no-resolve", is_flag=True, help="Print service and node IDs instead of names.")
@click.option("--raw", is_flag=True, help="Print the lines only, without the task and node.")
@click.option("--details", is_flag=True, help="Show the details the log options ask for (labels, env).")
@click.argument("ref", metavar="SERVICE|TASK")
@with_daemon
def service_logs(daemon: LocalDaemon, follow: bool, tail: int | None, since: str | None, until: str | None,
                 timestamps: bool, no_task_ids: bool, no_trunc: bool, no_resolve: bool, raw: bool, details: bool,
                 ref: str) -> None:
    """Print the output of a service's tasks (or one task's), as NAME.SLOT.TASKID@NODE    | LINE."""
    # Chunk by chunk: each answer carries the cursors to pass back; without --follow the
    # daemon says when all is read, with it each call waits up to LOGS_WAIT for new lines.
    cursors: dict | None = None
    warned: set[str] = set()
    shape = {"timestamps": timestamps, "raw": raw, "details": details, "task_ids": not no_task_ids,
             "trunc": not no_trunc, "resolve": not no_resolve}
    params = {"ref": ref, "tail": tail, "follow": follow, "wait": LOGS_WAIT if follow else 0.0}
    params.update({k: v for k, v in (("since", since), ("until", until), ("details", details or None)) if v})
    try:
        while True:
            answer = daemon.call("service.logs", dict(params, cursors=cursors), timeout=LOGS_CALL_TIMEOUT)
            if not (isinstance(answer, dict) and isinstance(answer.get("lines"), list)
                    and isinstance(answer.get("cursors"), dict)):
                fail("the daemon's answer to service.logs is not a chunk of logs (is it an older version?)")
            for warning in answer.get("warnings") or ():
                if warning not in warned:
                    warned.add(warning)
                    click.echo(f"Warning: {warning}", err=True)
            for entry in answer["lines"]:
                print_log(entry, width=int(answer.get("width") or 1), **shape)
            cursors = answer["cursors"]
            if answer.get("done"):
                return
    except KeyboardInterrupt:
        return


def print_log(entry: Mapping[str, Any], **shape: Any) -> None:
    """One line as docker prints it (swarm/api/logview.py), on stdout or stderr as the task wrote it."""
    from swarm.api import logview
    click.echo(logview.format_line(entry, **shape), err=entry.get("stream") == "stderr")


_ADJECTIVES = ("agile", "bold", "brave", "calm", "clever", "eager", "fervent", "gentle", "happy", "keen",
               "lucid", "nifty", "quiet", "sharp", "stoic", "tender", "vibrant", "wizardly", "zealous")
_NAMES = ("babbage", "curie", "dijkstra", "einstein", "hopper", "kepler", "knuth", "lamport", "liskov",
          "lovelace", "noether", "pike", "ritchie", "shannon", "thompson", "turing", "wozniak")


def random_name() -> str:
    """A docker-style name for a service created without --name."""
    return f"{random.choice(_ADJECTIVES)}_{random.choice(_NAMES)}"


def desired_shown(task: Mapping[str, Any]) -> str:
    """A job's tasks are meant to complete: Docker shows their desired state as Complete."""
    if task.get("job") and task["desired_state"] == "running":
        return "complete"
    return task["desired_state"]

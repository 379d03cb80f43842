"""`swarm stack ...`: deploy, ls, ps, services, rm, config (docker's `docker stack`).

How this works: the compose files are read, interpolated, validated, merged and
converted by swarm/stack (pure but for reading the files); this module adds the
daemon: `deploy` reads what the stack has now, lets swarm.stack.deploy.plan
decide the calls (everything that can fail on the input fails before the first
one), then makes them with docker's lines ("Creating network vote_default",
"Creating service vote_db", "Updating service vote_web (id: ...)"). Keys swarm
ignores are said as docker says them ("Ignoring unsupported options: build,
restart"). `ls`, `ps`, `services` and `rm` find the stack's objects by their
label com.docker.stack.namespace. This module adds itself to
the root group when the root loads it
(swarm.cli.root.COMMANDS).
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from swarm.cli.common import (FORMAT_HELP, LIST_FORMAT, LocalDaemon, fail, filter_option, parse_duration, self_node,
                               show_list, with_daemon)
from swarm.cli.progress import ID_LEN, Waiter
from swarm.cli.root import swarm
from swarm.cli.service import SERVICE_COLUMNS, SERVICE_HEADERS, show_tasks
from swarm.cli.service_flags import DEFAULT_WAIT
from swarm.cli.service_spec import registry_auth
from swarm.stack import deploy as stack_deploy
from swarm.stack.deploy import RESOLVE_CHOICES, stack_filter

if TYPE_CHECKING:
    from swarm.stack.convert import Stack

# The compose loader (yaml, jsonschema) is imported by the two commands that read
# compose files, deploy and config: ls, ps, services and rm start without it.

STACK_HEADERS = {"Name": "NAME", "Services": "SERVICES"}
COMPOSE_FILE_HELP = 'Path to a Compose file, or "-" to read from stdin (repeatable: later files override).'


def check_stack_name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """docker's validateStackName: a name that is not empty once quotes and spaces are trimmed."""
    for name in (value if isinstance(value, tuple) else (value,)):
        if not name.strip().strip("\"'").strip():
            raise click.BadParameter(f"invalid stack name: {name!r}", ctx, param)
    return value


def compose_files(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> list[str]:
    """-c FILE (repeatable, or comma-separated as docker's StringSlice)."""
    files = [f for value in values for f in value.split(",") if f]
    if not files:
        raise click.UsageError("specify a compose file (with --compose-file)", ctx)
    return files


@swarm.group()
def stack() -> None:
    """Manage stacks: applications from compose files (on a manager)."""


def load_stack(files: Sequence[str], name: str) -> tuple[Stack, dict[str, str]]:
    """The files as a converted stack (ComposeError: one sentence), its notices said on stderr,
    and the variables it was interpolated with."""
    from swarm.stack import loader
    from swarm.stack.convert import convert
    compose = loader.load(files, os.environ)
    result = convert(compose.data, name, compose.where)
    if result.unsupported:
        click.echo(f"Ignoring unsupported options: {', '.join(result.unsupported)}\n", err=True)
    if result.deprecated:
        text = "\n\n".join(f"{key}: {why}" for key, why in sorted(result.deprecated.items()))
        click.echo(f"Ignoring deprecated options:\n\n{text}\n", err=True)
    return result, compose.environ


@stack.command("deploy")
@click.option("--compose-file", "-c", "files", multiple=True, callback=compose_files, metavar="FILE",
              help=COMPOSE_FILE_HELP)
@click.option("--prune", is_flag=True, help="Prune services that are no longer referenced.")
@click.option("--resolve-image", type=click.Choice(RESOLVE_CHOICES), default="always", show_default=True,
              help="Query the registry to resolve image digests (always, changed or never).")
@click.option("--with-registry-auth", is_flag=True, help="Send registry authentication details to the nodes.")
@click.option("--detach", "-d", type=click.BOOL, is_flag=False, flag_value=True, default=True, show_default=True,
              help="Exit at once instead of waiting for the stack's services to converge (--detach=false waits).")
@click.option("--quiet", "-q", is_flag=True, help="Suppress progress output.")
@click.argument("name", metavar="STACK", callback=check_stack_name)
@with_daemon
def stack_deploy_cmd(daemon: LocalDaemon, files: list[str], prune: bool, resolve_image: str,
                     with_registry_auth: bool, detach: bool, quiet: bool, name: str) -> None:
    """Deploy a new stack or update an existing one."""
    wanted, environ = load_stack(files, name)
    data = {"secret": stack_deploy.read_data(wanted.secrets, environ, "secret"),
            "config": stack_deploy.read_data(wanted.configs, environ, "config")}
    current = stack_deploy.read_current(daemon, name)
    auth = (lambda image: registry_auth(daemon.state_dir, image)) if with_registry_auth else None
    steps = stack_deploy.plan(wanted, current, data, prune=prune, resolve_image=resolve_image, registry_auth=auth)
    ids = stack_deploy.apply(steps, daemon, click.echo, lambda text: click.echo(text, err=True))
    if detach:
        return
    deadline = time.monotonic() + parse_duration(DEFAULT_WAIT)
    views = {v["id"]: v for v in stack_deploy.stack_services(daemon, name)}
    for service_id in ids:
        s = views.get(service_id, {}).get("spec") or {}
        mode = s.get("mode", "replicated")
        expected = s.get("replicas") if mode in ("replicated", "replicated-job") else None
        failure = Waiter(daemon, service_id, s.get("name", service_id), mode, expected, None, quiet,
                         max(0.0, deadline - time.monotonic())).wait(deadline)
        if failure:
            fail(f"{s.get('name', service_id)}: {failure}")


@stack.command("config")
@click.option("--compose-file", "-c", "files", multiple=True, callback=compose_files, metavar="FILE",
              help=COMPOSE_FILE_HELP)
@click.option("--skip-interpolation", is_flag=True, help="Skip interpolation and output only the merged config.")
def stack_config(files: list[str], skip_interpolation: bool) -> None:
    """Print the final compose file, after merging and interpolation."""
    import yaml

    from swarm.stack import loader
    compose = loader.load(files, os.environ, interpolate_variables=not skip_interpolation)
    click.echo(yaml.safe_dump(compose.data, sort_keys=False, default_flow_style=False, allow_unicode=True), nl=False)


@stack.command("ls")
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True, help=FORMAT_HELP)
@with_daemon
def stack_ls(daemon: LocalDaemon, fmt: str) -> None:
    """List the stacks (the namespaces of the services that have one)."""
    rows = [{"name": name, "services": count} for name, count in stack_deploy.stacks(daemon)]
    show_list(rows, fmt, False, lambda: [[r["name"], str(r["services"])] for r in rows], ("NAME", "SERVICES"),
              ident=lambda r: r["name"], fields=lambda rows: [{"Name": r["name"], "Services": str(r["services"])}
                                                             for r in rows],
              headers=STACK_HEADERS)


@stack.command("ps")
@click.option("--quiet", "-q", is_flag=True, help="Only print task IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@filter_option
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True, help=FORMAT_HELP)
@click.argument("name", metavar="STACK", callback=check_stack_name)
@with_daemon
def stack_ps(daemon: LocalDaemon, quiet: bool, no_trunc: bool, filters: dict[str, list[str]] | None, fmt: str,
             name: str) -> None:
    """List the tasks of the stack."""
    wanted = self_node(daemon, filters or {})
    wanted["label"] = [*wanted.get("label", []), *stack_filter(name)["label"]]
    rows = daemon.call("service.ps", {"refs": [], "filters": wanted})
    if not rows:
        fail(f"nothing found in stack: {name}")
    show_tasks(rows, fmt, quiet, trunc=not no_trunc)


@stack.command("services")
@click.option("--quiet", "-q", is_flag=True, help="Only print IDs.")
@filter_option
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True, help=FORMAT_HELP)
@click.argument("name", metavar="STACK", callback=check_stack_name)
@with_daemon
def stack_services(daemon: LocalDaemon, quiet: bool, filters: dict[str, list[str]] | None, fmt: str,
                   name: str) -> None:
    """List the services of the stack."""
    wanted = dict(filters or {})
    wanted["label"] = [*wanted.get("label", []), *stack_filter(name)["label"]]
    rows = sorted(daemon.call("service.ls", {"filters": wanted}), key=lambda r: stack_deploy._natural(r["name"]))
    if not rows:
        click.echo(f"Nothing found in stack: {name}", err=True)
        return

    def table() -> list[list[str]]:
        return [[r["id"][:ID_LEN], r["name"], r["mode"].replace("-", " "), r["replicas"], r["image"],
                 r.get("ports") or ""] for r in rows]

    def fields(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [dict(zip(SERVICE_HEADERS, cells)) for cells in table()]

    show_list(rows, fmt, quiet, table, SERVICE_COLUMNS, fields=fields, headers=SERVICE_HEADERS)


@stack.command("rm")
@click.argument("names", metavar="STACK...", nargs=-1, required=True, callback=check_stack_name)
@with_daemon
def stack_rm(daemon: LocalDaemon, names: tuple[str, ...]) -> None:
    """Remove stacks: their services, secrets, configs and networks."""
    failed = [name for name in names
              if not stack_deploy.remove(daemon, name, click.echo, lambda text: click.echo(text, err=True))]
    if failed:
        fail("; ".join(f"failed to remove some resources from stack: {name}" for name in failed))

"""`swarm volume ...`: ls, inspect, rm, prune (the volumes of this node).

Volumes belong to a node, as with Docker's local driver: the commands act on
the node the CLI talks to (its --state-dir), through the local API's
volume.* calls (swarm/daemon/volumes.py). Output mirrors docker's: `ls` prints
DRIVER and VOLUME NAME, `inspect` a JSON list, `rm` each removed name, `prune`
the deleted names and the space reclaimed. `--format` takes table, json (one
JSON document) or a Go template over docker's field names ({{.Name}},
{{.Driver}}, ...; a `table` prefix adds the header row). This module adds
itself to the root group when the root loads it
(swarm.cli.root.COMMANDS).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click

from swarm.cli.common import LocalDaemon, fail, print_json, print_table, with_daemon
from swarm.cli.root import swarm

LS_COLUMNS = ("DRIVER", "VOLUME NAME")
# docker's volume formatter: field -> header of a `table` template
HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
           "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE", "CreatedAt": "CREATED AT"}
INSPECT_FIELDS = ("CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope")
PRUNE_WARNING = {False: "WARNING! This will remove anonymous local volumes not used by at least one container.",
                 True: "WARNING! This will remove all local volumes not used by at least one container."}


@swarm.group()
def volume() -> None:
    """Manage this node's volumes."""


def ls_row(info: Mapping[str, Any]) -> dict[str, str]:
    """A volume as docker's `volume ls` formats it (every value a string)."""
    labels = info.get("Labels") or {}
    return {"Driver": info["Driver"], "Name": info["Name"], "Scope": info.get("Scope", "local"),
            "Mountpoint": info.get("Mountpoint", ""), "CreatedAt": info.get("CreatedAt", ""),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())), "Links": "N/A", "Size": "N/A"}


def render_template(fmt: str, rows: Sequence[Mapping[str, Any]], headers: Mapping[str, str] | None = None) -> None:
    """docker's --format TEMPLATE: one line per row; `table TEMPLATE` adds headers and aligns columns."""
    from swarm.api.gotemplate import TemplateError, compile_template  # only for --format TEMPLATE
    table = fmt.startswith("table")
    text = fmt[len("table"):].lstrip() if table else fmt
    try:
        template = compile_template(text)
        lines = [template.render(row) for row in rows]
        if table:
            head = compile_template(text, missing_key="zero").render(dict(headers or {}))
    except TemplateError as exc:
        fail(f"template: {exc}")
    if table:
        cells = [line.split("\t") for line in [head, *lines]]
        width = max(len(c) for c in cells)
        print_table([c + [""] * (width - len(c)) for c in cells[1:]], cells[0] + [""] * (width - len(cells[0])))
        return
    for line in lines:
        click.echo(line)


@volume.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Only display volume names.")
@click.option("--format", "fmt", default="table", metavar="FORMAT",
              help="table, json, or a Go template over docker's fields ({{.Name}}, {{.Driver}}, ...).")
@click.option("--filter", "-f", "filters", multiple=True, metavar="FILTER",
              help="Filter output: dangling=true|false, driver=NAME, label=KEY[=VALUE], name=NAME.")
@with_daemon
def volume_ls(daemon: LocalDaemon, quiet: bool, fmt: str, filters: tuple[str, ...]) -> None:
    """List the volumes of this node."""
    found = sorted(daemon.call("volume.ls", {"filters": list(filters)}), key=lambda v: v["Name"])
    rows = [ls_row(v) for v in found]
    if quiet:
        for row in rows:
            click.echo(row["Name"])
    elif fmt == "json":
        print_json(rows)
    elif fmt == "table":
        print_table([[r["Driver"], r["Name"]] for r in rows], LS_COLUMNS)
    else:
        render_template(fmt, rows, HEADERS)


@volume.command("inspect")
@click.argument("names", metavar="VOLUME...", nargs=-1, required=True)
@click.option("--format", "-f", "fmt", default="", metavar="FORMAT", help="json (default) or a Go template.")
@with_daemon
def volume_inspect(daemon: LocalDaemon, names: tuple[str, ...], fmt: str) -> None:
    """Display detailed information on one or more volumes."""
    answer = daemon.call("volume.inspect", {"names": list(names)})
    found = [{k: v.get(k) for k in INSPECT_FIELDS} for v in answer["volumes"]]
    if fmt in ("", "json"):
        print_json(found)
    else:
        render_template(fmt, found)
    for error in answer["errors"]:
        click.echo(f"Error: {error}", err=True)
    if answer["errors"]:
        raise click.exceptions.Exit(1)


@volume.command("rm")
@click.argument("names", metavar="VOLUME...", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Do not fail on volumes that do not exist.")
@with_daemon
def volume_rm(daemon: LocalDaemon, names: tuple[str, ...], force: bool) -> None:
    """Remove one or more volumes (a volume that tasks use is refused)."""
    answer = daemon.call("volume.rm", {"names": list(names), "force": force})
    for name in answer["removed"]:
        click.echo(name)
    for error in answer["errors"]:
        click.echo(f"Error: {error}", err=True)
    if answer["errors"]:
        raise click.exceptions.Exit(1)


@volume.command("prune")
@click.option("--all", "-a", "all_volumes", is_flag=True, help="Remove all unused volumes, not just anonymous ones.")
@click.option("--filter", "filters", multiple=True, metavar="FILTER", help="Provide filter values (e.g. label=KEY).")
@click.option("--force", "-f", is_flag=True, help="Do not prompt for confirmation.")
@with_daemon
def volume_prune(daemon: LocalDaemon, all_volumes: bool, filters: tuple[str, ...], force: bool) -> None:
    """Remove unused local volumes (anonymous ones; every unused one with --all)."""
    if not force and not _confirm(PRUNE_WARNING[all_volumes]):
        return
    answer = daemon.call("volume.prune", {"all": all_volumes, "filters": list(filters)})
    if answer["removed"]:
        click.echo("Deleted Volumes:\n" + "".join(f"{name}\n" for name in answer["removed"]))
    click.echo(f"Total reclaimed space: {human_size(answer['reclaimed'])}")


def _confirm(warning: str) -> bool:
    """docker's prompt: anything but y/Y (or no answer at all) keeps the volumes."""
    click.echo(warning)
    click.echo("Are you sure you want to continue? [y/N] ", nl=False)
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        click.echo()
    return answer.strip().lower() == "y"


def human_size(size: float) -> str:
    """go-units' HumanSize: decimal units, 4 significant digits (0B, 1.5kB, 12.35MB)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{float(f'{size:.4g}'):g}{units[i]}"

"""`swarm secret ...` and `swarm config ...`: create, ls, inspect, rm (on a manager).

Like the rest of the CLI (`swarm.cli.main`): input is checked locally (click
usage error, exit 2), then one call to the node's daemon (`secret.create`,
`secret.ls`, `secret.inspect`, `secret.rm`; the same for `config.`) and
docker's output. The two groups are docker's twins, made by one function
(`_add_group`): a secret's value is never shown (inspect has no Data, as
Docker's), a config's is (`config inspect --pretty` prints it as docker does).
`ls --format json` prints the rows with the keys id, name, (secrets: driver,)
created_at, updated_at (RFC 3339) and labels. Values are read from FILE or
stdin ("-"), at most twice Docker's limit (the daemon says when a value is too
big); secret drivers and template drivers are refused with one sentence. This
module adds itself to the root group when the root loads it
(swarm.cli.root.COMMANDS).
"""
from __future__ import annotations

import base64
import datetime
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import click

from swarm.cli.common import (FILTER_HELP, INSPECT_FORMAT_HELP, LIST_FORMAT, LocalDaemon, OutputFormat, fail,
                               filter_option, human_duration, kv, show_inspect, show_list, with_daemon)
from swarm.cli.root import swarm
from swarm.cli.service_flags import LABEL

# Docker's limits (the daemon checks them); the CLI reads at most twice as much, as docker/cli does.
MAX_SIZE = {"secret": 500 * 1024, "config": 1000 * 1024}
COLUMNS = {"secret": ("ID", "NAME", "DRIVER", "CREATED", "UPDATED"), "config": ("ID", "NAME", "CREATED", "UPDATED")}
HEADERS = {"ID": "ID", "Name": "NAME", "Driver": "DRIVER", "CreatedAt": "CREATED", "UpdatedAt": "UPDATED",
           "Labels": "LABELS"}
PRETTY_FORMAT = OutputFormat("json", "pretty")


def read_value(kind: str, source: str | None, stdin: BinaryIO) -> bytes:
    """The value of `secret|config create NAME FILE|-`, docker/cli's readSecretData (its sentences)."""
    limit = 2 * MAX_SIZE[kind]
    if source is None or source == "":
        raise click.UsageError(f"{kind} file is required")
    if source == "-":
        try:
            data = stdin.read(limit)
        except OSError as exc:
            fail(f"error reading from STDIN: {exc.strerror or exc}")
        if not data:
            fail("error reading from STDIN: data is empty")
        return data
    try:
        with open(source, "rb") as f:
            data = f.read(limit)
    except OSError as exc:
        fail(f"error reading from {source}: {exc.strerror or exc}")
    if not data:
        fail(f"error reading from {source}: data is empty")
    return data


def _epoch(value: Any) -> float:
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def ago(value: Any, now: float) -> str:
    """docker's CreatedAt/UpdatedAt columns: "2 hours ago"."""
    when = _epoch(value)
    return f"{human_duration(now - when)} ago" if when else ""


def go_time(value: Any) -> str:
    """Go's time.Time.String() as docker's formatter.PrettyPrint shows it (first letter
    capitalised): "2016-11-09 19:10:42.285146012 +0000 utc"."""
    text = str(value or "")
    if not text.endswith("Z") or "T" not in text:
        return text
    day, _, clock = text[:-1].partition("T")
    return f"{day} {clock.rstrip('0').rstrip('.')} +0000 utc"


def pretty(kind: str, doc: Mapping[str, Any]) -> list[str]:
    """docker's secretInspectPrettyTemplate / configInspectPrettyTemplate."""
    spec = doc.get("spec") or {}
    lines = [kv("ID", doc.get("id", "")), kv("Name", spec.get("name", ""))]
    if spec.get("labels"):
        lines += ["Labels:"] + [f" - {k}={v}" if v else f" - {k}" for k, v in sorted(spec["labels"].items())]
    if kind == "secret":
        lines.append(kv("Driver", ""))
    lines += [kv("Created at", go_time(doc.get("created_at"))), kv("Updated at", go_time(doc.get("updated_at")))]
    if kind == "config":
        lines += ["Data:", base64.b64decode(spec.get("data") or "").decode("utf-8", "replace")]
    return lines


def _labels(values: Sequence[tuple[str, str]]) -> dict[str, str]:
    return dict(values)


def _add_group(kind: str) -> click.Group:
    plural = f"{kind}s"

    @swarm.group(kind, help=f"Manage swarm {plural} (on a manager).")
    def group() -> None:
        pass

    refs_argument = click.argument("refs", metavar=f"{kind.upper()}...", nargs=-1, required=True)

    def refuse(what: str) -> Any:
        def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
            if value:
                raise click.BadParameter(f"{what} are not supported: give the value itself (FILE or -)", ctx, param)
            return value
        return callback

    driver_options = [click.option("--template-driver", expose_value=False, callback=refuse("template drivers"),
                                   help="Template driver (not supported).")]
    if kind == "secret":
        driver_options.append(click.option("--driver", "-d", expose_value=False, callback=refuse("secret drivers"),
                                           help="Secret driver (not supported)."))

    @group.command("create")
    @click.option("--label", "-l", "labels", multiple=True, type=LABEL, metavar="KEY[=VALUE]",
                  help=f"{kind.capitalize()} labels (repeatable).")
    @click.argument("name")
    @click.argument("source", metavar="FILE|-" if kind == "config" else "[FILE|-]", required=kind == "config")
    @with_daemon
    def create(daemon: LocalDaemon, labels: tuple[tuple[str, str], ...], name: str, source: str | None) -> None:
        value = read_value(kind, source, sys.stdin.buffer)
        params: dict[str, Any] = {"name": name, "data": value}
        if labels:
            params["labels"] = _labels(labels)
        click.echo(daemon.call(f"{kind}.create", params)["id"])

    for option in driver_options:
        create = option(create)
    create.help = f"Create a {kind} from a file or STDIN (-) as content; prints its ID."

    @group.command("ls")
    @click.option("--quiet", "-q", is_flag=True, help="Only display IDs.")
    @filter_option
    @click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True,
                  help='table, json, "table TEMPLATE" or a Go template ({{.Name}}).')
    @with_daemon
    def ls(daemon: LocalDaemon, quiet: bool, filters: dict[str, list[str]] | None, fmt: str) -> None:
        rows = daemon.call(f"{kind}.ls", {"filters": filters} if filters else {})
        now = time.time()

        def fields(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
            return [{"ID": r["id"], "Name": r["name"], "Driver": r.get("driver", ""),
                     "CreatedAt": ago(r.get("created_at"), now), "UpdatedAt": ago(r.get("updated_at"), now),
                     "Labels": ",".join(f"{k}={v}" for k, v in sorted((r.get("labels") or {}).items()))}
                    for r in rows]

        def table() -> list[list[str]]:
            return [[f[h] for h in ("ID", "Name", "Driver", "CreatedAt", "UpdatedAt")
                     if kind == "secret" or h != "Driver"] for f in fields(rows)]

        keys = ("id", "name", "driver", "created_at", "updated_at", "labels") if kind == "secret" else (
            "id", "name", "created_at", "updated_at", "labels")
        show_list(rows, fmt, quiet, table, COLUMNS[kind],
                  as_json=lambda rows: [{k: r.get(k, "") for k in keys} for r in rows],
                  fields=fields, headers=HEADERS)

    ls.help = f"List {plural} (filters: id, name, names, label). {FILTER_HELP}"

    @group.command("inspect")
    @click.option("--format", "-f", "fmt", type=PRETTY_FORMAT, default="json", help=INSPECT_FORMAT_HELP)
    @click.option("--pretty", "pretty_flag", is_flag=True, help="Print the information in a human friendly format.")
    @refs_argument
    @with_daemon
    def inspect(daemon: LocalDaemon, fmt: str, pretty_flag: bool, refs: tuple[str, ...]) -> None:
        if pretty_flag:
            if fmt not in ("json", "pretty"):
                raise click.UsageError("cannot supply extra formatting options to the pretty template")
            fmt = "pretty"
        docs = daemon.call(f"{kind}.inspect", {"refs": list(refs)})
        show_inspect(docs, fmt, lambda doc: pretty(kind, doc))

    inspect.help = f"Display detailed information on one or more {plural}" + (
        " (never the value)." if kind == "secret" else ".")

    @group.command("rm")
    @refs_argument
    @with_daemon
    def rm(daemon: LocalDaemon, refs: tuple[str, ...]) -> None:
        # As docker's: each one removed is printed, each refusal too, and any refusal fails the command.
        from swarm.rpc.messages import RPCError  # with the daemon's client, not at the CLI's start
        errors = []
        for ref in refs:
            try:
                daemon.call(f"{kind}.rm", {"refs": [ref]})
            except RPCError as exc:
                errors.append(exc.message)
                continue
            click.echo(ref)
        for message in errors[:-1]:
            click.echo(f"Error: {message}", err=True)
        if errors:
            fail(errors[-1])

    rm.help = f"Remove one or more {plural} (none a service uses)."
    return group


secret = _add_group("secret")
config = _add_group("config")

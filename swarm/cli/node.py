"""`swarm node ...`: list, inspect, ps, update, promote, demote and remove nodes.

`node ps` lists the tasks on nodes through the manager's `service.ps` with a
`node` filter (self by default, as docker's), so it is a manager's read too.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import click

from swarm.cli.common import (AVAILABILITIES, FORMAT_HELP, INSPECT_FORMAT, INSPECT_FORMAT_HELP, LIST_FORMAT,
                               SLOW_CALL_TIMEOUT, LocalDaemon, _title, fail, filter_option, kv, parse_label_add,
                               parse_label_rm, self_node, show_inspect, show_list, with_daemon)
from swarm.cli.root import swarm
from swarm.cli.service import show_tasks

log = logging.getLogger(__name__)
# -- swarm node ----------------------------------------------------------------

NODE_COLUMNS = ("ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ADDR")
# --format templates: docker's field names (Self: this node) and the titles of "table TEMPLATE".
NODE_HEADERS = {"ID": "ID", "Self": "", "Hostname": "HOSTNAME", "Status": "STATUS", "Availability": "AVAILABILITY",
                "ManagerStatus": "MANAGER STATUS", "Addr": "ADDR"}
refs_argument = click.argument("refs", metavar="NODE...", nargs=-1, required=True)


@swarm.group()
def node() -> None:
    """Manage the swarm's nodes (on a manager)."""


@node.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Only print IDs.")
@filter_option
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True, help=FORMAT_HELP)
@with_daemon
def node_ls(daemon: LocalDaemon, quiet: bool, filters: dict[str, list[str]] | None, fmt: str) -> None:
    """List the nodes (filters: id, name, role, membership, label, node.label)."""
    rows = sorted(daemon.call("node.ls", {"filters": filters} if filters else {}),
                  key=lambda r: (r["hostname"], r["id"]))

    def table() -> list[list[str]]:
        self_id = daemon.call("ping").get("node_id")
        return [node_row(row, row["id"] == self_id) for row in rows]

    def fields(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        self_id = daemon.call("ping").get("node_id")
        return [{"ID": row["id"], "Self": row["id"] == self_id, "Hostname": row["hostname"],
                 "Status": _title(row["status"]), "Availability": _title(row["availability"]),
                 "ManagerStatus": _title(row["manager_status"]), "Addr": row["addr"]} for row in rows]

    show_list(rows, fmt, quiet, table, NODE_COLUMNS, fields=fields, headers=NODE_HEADERS)


def node_row(row: Mapping[str, Any], is_self: bool) -> list[str]:
    return [row["id"] + (" *" if is_self else ""), row["hostname"], _title(row["status"]),
            _title(row["availability"]), _title(row["manager_status"]), row["addr"]]


@node.command("inspect")
@click.option("--format", "-f", "fmt", type=INSPECT_FORMAT, default="json", show_default=True,
              help=INSPECT_FORMAT_HELP)
@click.option("--pretty", is_flag=True, help="Print docker's human-friendly text (as --format pretty).")
@refs_argument
@with_daemon
def node_inspect(daemon: LocalDaemon, fmt: str, pretty: bool, refs: tuple[str, ...]) -> None:
    """Show one or more nodes in detail (NODE: ID, ID prefix or hostname)."""
    if pretty and fmt not in ("json", "pretty"):
        fail("--format is incompatible with human friendly format")
    show_inspect(daemon.call("node.inspect", {"refs": list(refs)}), "pretty" if pretty else fmt, pretty_node)


@node.command("ps")
@click.option("--quiet", "-q", is_flag=True, help="Only print task IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate IDs, images and errors.")
@filter_option
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True, help=FORMAT_HELP)
@click.argument("refs", metavar="[NODE...]", nargs=-1)
@with_daemon
def node_ps(daemon: LocalDaemon, quiet: bool, no_trunc: bool, filters: dict[str, list[str]] | None, fmt: str,
            refs: tuple[str, ...]) -> None:
    """List the tasks on nodes, this one by default (NODE: ID, ID prefix, hostname or
    self; filters: id, name, desired-state, label, service)."""
    wanted = dict(filters or {})
    wanted["node"] = [*wanted.get("node", ()), *(refs or ("self",))]
    rows = daemon.call("service.ps", {"refs": [], "filters": self_node(daemon, wanted)})
    show_tasks(rows, fmt, quiet, trunc=not no_trunc)


def pretty_node(n: Mapping[str, Any]) -> list[str]:
    lines = [kv("ID", n["id"]), kv("Hostname", n["hostname"]), kv("Joined at", n.get("created_at", "")),
             kv("Updated at", n.get("updated_at", "")), "Status:", kv("State", _title(n["status"]), 1)]
    if n.get("status_message"):
        lines.append(kv("Message", n["status_message"], 1))
    lines += [kv("Availability", _title(n["availability"]), 1), kv("Address", n["addr"], 1)]
    if n.get("role") == "manager":
        lines += ["Manager Status:", kv("Address", n.get("raft_addr") or "", 1),
                  kv("Raft Status", _title(n.get("manager_status")), 1),
                  kv("Leader", "Yes" if n.get("manager_status") == "leader" else "No", 1)]
    labels = n.get("labels") or {}
    if labels:
        lines += ["Labels:"] + [f" - {k}={v}" for k, v in sorted(labels.items())]
    if n.get("cert_serial"):
        lines.append(kv("Certificate serial", n["cert_serial"]))
    return lines


@node.command("update")
@click.option("--availability", type=click.Choice(AVAILABILITIES, case_sensitive=False),
              help="Whether the node takes tasks.")
@click.option("--label-add", "label_add", multiple=True, callback=parse_label_add, metavar="KEY[=VALUE]",
              help="Add or change a node label (repeatable).")
@click.option("--label-rm", "label_rm", multiple=True, callback=parse_label_rm, metavar="KEY",
              help="Remove a node label (repeatable).")
@click.argument("ref", metavar="NODE")
@with_daemon
def node_update(daemon: LocalDaemon, availability: str | None, label_add: dict[str, str] | None,
                label_rm: list[str] | None, ref: str) -> None:
    """Change a node's availability or labels; only the flags given change."""
    params: dict[str, Any] = {"ref": ref}
    given = {"availability": availability, "label_add": label_add, "label_rm": label_rm}
    params.update({key: value for key, value in given.items() if value is not None})
    click.echo(daemon.call("node.update", params)["id"])


@node.command("promote")
@refs_argument
@with_daemon
def node_promote(daemon: LocalDaemon, refs: tuple[str, ...]) -> None:
    """Make nodes managers."""
    for result in daemon.call("node.promote", {"refs": list(refs)}, timeout=SLOW_CALL_TIMEOUT):
        click.echo(result["message"])


@node.command("demote")
@refs_argument
@with_daemon
def node_demote(daemon: LocalDaemon, refs: tuple[str, ...]) -> None:
    """Make managers workers."""
    for result in daemon.call("node.demote", {"refs": list(refs)}, timeout=SLOW_CALL_TIMEOUT):
        click.echo(result["message"])


@node.command("rm")
@click.option("--force", "-f", is_flag=True, help="Remove a node even if it is not down.")
@refs_argument
@with_daemon
def node_rm(daemon: LocalDaemon, force: bool, refs: tuple[str, ...]) -> None:
    """Remove nodes from the swarm."""
    for node_id in daemon.call("node.rm", {"refs": list(refs), "force": force}, timeout=SLOW_CALL_TIMEOUT):
        click.echo(node_id)

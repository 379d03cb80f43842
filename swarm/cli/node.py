"""`swarm node ...`: list, inspect, update, promote, demote and remove nodes."""
from __future__ import annotations

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import click

from swarm.cli.common import (AVAILABILITIES, SLOW_CALL_TIMEOUT, LocalDaemon, _title, kv, parse_label_add,
                               parse_label_rm, show_inspect, show_list, with_daemon)
from swarm.cli.root import swarm

log = logging.getLogger(__name__)
# -- swarm node ----------------------------------------------------------------

NODE_COLUMNS = ("ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ADDR")
refs_argument = click.argument("refs", metavar="NODE...", nargs=-1, required=True)


@swarm.group()
def node() -> None:
    """Manage the swarm's nodes (on a manager)."""


@node.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Only print IDs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@with_daemon
def node_ls(daemon: LocalDaemon, quiet: bool, fmt: str) -> None:
    """List the nodes."""
    rows = sorted(daemon.call("node.ls"), key=lambda r: (r["hostname"], r["id"]))

    def table() -> list[list[str]]:
        self_id = daemon.call("ping").get("node_id")
        return [node_row(row, row["id"] == self_id) for row in rows]

    show_list(rows, fmt, quiet, table, NODE_COLUMNS)


def node_row(row: Mapping[str, Any], is_self: bool) -> list[str]:
    return [row["id"] + (" *" if is_self else ""), row["hostname"], _title(row["status"]),
            _title(row["availability"]), _title(row["manager_status"]), row["addr"]]


@node.command("inspect")
@click.option("--format", "fmt", type=click.Choice(["json", "pretty"]), default="json", show_default=True)
@refs_argument
@with_daemon
def node_inspect(daemon: LocalDaemon, fmt: str, refs: tuple[str, ...]) -> None:
    """Show one or more nodes in detail (NODE: ID, ID prefix or hostname)."""
    show_inspect(daemon.call("node.inspect", {"refs": list(refs)}), fmt, pretty_node)




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

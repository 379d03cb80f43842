"""`swarm network ...`: create, ls, inspect, rm (overlay networks, on a manager).

Like the rest of the CLI (`swarm.cli.main`): input is checked locally (click usage
error, exit 2), then one call to the node's daemon (`network.create`,
`network.ls`, `network.inspect`, `network.rm`) and docker's output.
`network ls --format json` prints the rows with the keys of DESIGN.md §11
(id, name, driver, scope, subnet); `ls` also takes filters and Go templates. This module adds itself to
the root group when the root loads it
(swarm.cli.root.COMMANDS).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import click

from swarm.cli.common import (FORMAT_HELP, LIST_FORMAT, LocalDaemon, OutputFormat, filter_option, show_inspect,
                               show_list, with_daemon)
from swarm.cli.root import swarm

ID_LEN = 12  # IDs in tables (and -q), as docker truncates them
DRIVERS = ("overlay",)
NETWORK_COLUMNS = ("NETWORK ID", "NAME", "DRIVER", "SCOPE")
# --format templates: docker's field names and the titles of "table TEMPLATE".
NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Subnet": "SUBNET",
                   "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS"}
JSON_KEYS = ("id", "name", "driver", "scope", "subnet")


def check_name(ctx: click.Context, param: click.Parameter, name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise click.BadParameter(f"invalid network name {name!r}: use letters, digits, '-', '_' or '.'", ctx, param)
    return name


def check_subnet(ctx: click.Context, param: click.Parameter, subnet: str | None) -> str | None:
    if subnet is None:
        return None
    try:
        net = ipaddress.ip_network(subnet.strip(), strict=True)
    except ValueError as exc:
        raise click.BadParameter(f"{subnet!r} is not a subnet in CIDR form (like 10.0.9.0/24): {exc}",
                                 ctx, param) from None
    if net.version != 4 or net.prefixlen > 29:
        raise click.BadParameter(f"{subnet!r}: the subnet must be IPv4 with room for hosts (/29 or larger)",
                                 ctx, param)
    return str(net)


@swarm.group()
def network() -> None:
    """Manage overlay networks (on a manager)."""


networks_argument = click.argument("refs", metavar="NETWORK...", nargs=-1, required=True)


@network.command("create")
@click.option("--driver", "-d", type=click.Choice(DRIVERS), default="overlay", show_default=True,
              help="Network driver.")
@click.option("--subnet", callback=check_subnet, metavar="CIDR", help="Subnet (default: one is allocated).")
@click.option("--attachable", is_flag=True, help="Let standalone containers attach to the network.")
@click.argument("name", callback=check_name)
@with_daemon
def network_create(daemon: LocalDaemon, driver: str, subnet: str | None, attachable: bool, name: str) -> None:
    """Create a network; prints its ID."""
    params: dict[str, Any] = {"name": name, "driver": driver, "attachable": attachable}
    if subnet is not None:
        params["subnet"] = subnet
    click.echo(daemon.call("network.create", params)["id"])


@network.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Only print IDs.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate IDs.")
@filter_option
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", show_default=True, help=FORMAT_HELP)
@with_daemon
def network_ls(daemon: LocalDaemon, quiet: bool, no_trunc: bool, filters: dict[str, list[str]] | None,
               fmt: str) -> None:
    """List the networks (filters: id, name, driver, scope, label, type)."""
    rows = sorted(daemon.call("network.ls", {"filters": filters} if filters else {}),
                  key=lambda r: (r["name"], r["id"]))

    def short(net_id: str) -> str:
        return net_id if no_trunc else net_id[:ID_LEN]

    def fields(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [{"ID": short(row["id"]), "Name": row["name"], "Driver": row["driver"], "Scope": row["scope"],
                 "Subnet": row.get("subnet", ""), "IPv6": False, "Internal": False,
                 "Labels": ",".join(f"{k}={v}" for k, v in sorted((row.get("labels") or {}).items()))}
                for row in rows]

    show_list(rows, fmt, quiet, lambda: [[short(row["id"]), row["name"], row["driver"], row["scope"]] for row in rows],
              NETWORK_COLUMNS, ident=lambda row: short(row["id"]),
              as_json=lambda rows: [{key: row.get(key, "") for key in JSON_KEYS} for row in rows],
              fields=fields, headers=NETWORK_HEADERS)


@network.command("inspect")
@click.option("--format", "-f", "fmt", type=OutputFormat("json"), default="json", show_default=True,
              help="json or a Go template ({{.name}}: the keys of the JSON document).")
@networks_argument
@with_daemon
def network_inspect(daemon: LocalDaemon, fmt: str, refs: tuple[str, ...]) -> None:
    """Show networks in detail (NETWORK: ID, ID prefix or name), as a JSON list."""
    show_inspect(daemon.call("network.inspect", {"refs": list(refs)}), fmt)


@network.command("rm")
@networks_argument
@with_daemon
def network_rm(daemon: LocalDaemon, refs: tuple[str, ...]) -> None:
    """Remove networks (no service may use them)."""
    for name in daemon.call("network.rm", {"refs": list(refs)}):
        click.echo(name)

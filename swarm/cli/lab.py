"""`swarm lab ...`: up, exec, ls, down (a multi-host cluster on this machine).

How this works: the commands are thin wrappers of swarm/lab/lab.py, which builds
the hosts (network namespaces on an underlay bridge), runs one daemon per
host through the ordinary `swarm init`/`swarm join`, and removes it all
again. `exec` replaces itself with `nsenter --net=... CMD`, so the command's
exit code, signals and terminal pass through unchanged. This module adds
itself to the root group when the root loads it
(swarm.cli.root.COMMANDS).
"""
from __future__ import annotations

import os
import time

import click

from swarm.lab import lab as labmod
from swarm.cli.common import print_json, print_table
from swarm.cli.root import swarm

LAB_COLUMNS = ("LAB", "HOST", "ADDR", "ROLE", "NETNS", "STATE DIR")
name_option = click.option("--name", default="lab", show_default=True, help="The lab's name.")


@swarm.group()
def lab() -> None:
    """Run a multi-host swarm on this machine (each host a network namespace)."""


@lab.command("up")
@click.option("--nodes", "-n", type=click.IntRange(1, labmod.MAX_NODES), default=3, show_default=True,
              help="Number of hosts.")
@click.option("--managers", "-m", type=click.IntRange(1, labmod.MAX_NODES), default=1, show_default=True,
              help="How many of them are managers (an odd number keeps a quorum).")
@name_option
@click.option("--state-root", type=click.Path(file_okay=False), default=labmod.STATE_ROOT, show_default=True,
              help="Where the nodes' state directories go (STATE_ROOT/LAB/h<i>).")
def lab_up(nodes: int, managers: int, name: str, state_root: str) -> None:
    """Create the hosts, start a daemon on each and form the swarm."""
    if managers > nodes:
        raise click.BadParameter(f"{managers} managers but only {nodes} nodes", param_hint="'--managers'")
    started = time.monotonic()
    rec = labmod.up(name, nodes, managers, state_root, say=click.echo)
    click.echo(f"\nLab {name} is up in {time.monotonic() - started:.1f} s, subnet {rec['subnet']}, "
               f"leader {rec['leader']}:\n")
    print_table([[h["name"], f"{h['addr']}:{labmod.PORT}", h["role"], h["netns"], h["state_dir"]]
                 for h in rec["hosts"]], ("HOST", "ADDR", "ROLE", "NETNS", "STATE DIR"))
    flag = "" if name == "lab" else f" --name {name}"
    click.echo(f"\nRun commands on a host:  swarm lab exec{flag} h1 -- swarm node ls")
    click.echo(f"Remove everything:       swarm lab down{flag}")


@lab.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@name_option
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_exec(name: str, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on HOST (as its node: SWARM_STATE_DIR is set); its exit code is passed through.

    Example: swarm lab exec h1 -- swarm node ls
    """
    if command[:1] == ("--",):
        command = command[1:]
    if not command:
        raise click.UsageError("Missing the command to run (swarm lab exec HOST -- CMD...).")
    rec = labmod.require(name)
    argv, env = labmod.host_command(rec, labmod.find_host(rec, host), command)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise labmod.LabError(f"cannot run {argv[0]}: {exc.strerror}") from None


@lab.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Only print lab names.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def lab_ls(quiet: bool, fmt: str) -> None:
    """List the labs and their hosts."""
    labs = labmod.labs()
    if fmt == "json":
        print_json(labs)
    elif quiet:
        for item in labs:
            click.echo(item["name"])
    else:
        print_table([[item["name"], h["name"], h["addr"], h["role"], h["netns"], h["state_dir"]]
                     for item in labs for h in item["hosts"]], LAB_COLUMNS)


@lab.command("down")
@name_option
@click.option("--state-root", type=click.Path(file_okay=False), default=None,
              help="The --state-root given to `lab up` (default: the one in the lab's record).")
def lab_down(name: str, state_root: str | None) -> None:
    """Stop every daemon and container of the lab and remove its namespaces and state."""
    removed = labmod.down(name, state_root)
    for item in removed:
        click.echo(f"removed {item}")
    click.echo(f"Lab {name} is down." if removed else f"Nothing of lab {name} was left.")

"""The CLI imports only what a command needs (issue 16: `swarm --help` and
`service ls` answer in under 150 ms): each command is run in a fresh
interpreter and the modules it imported are checked; and
the root's table of lazily loaded commands (swarm.cli.root.COMMANDS) is
checked against the commands the modules really define."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import click
import pytest

from swarm.cli import root
from tests.unit.test_cli_service import SERVICES, ServiceFake

# What no command may import before it needs it: the daemon's runtime (trio),
# the registry client (httpx), the compose loader (yaml, jsonschema), the
# lab's netlink (pyroute2), the object model (msgspec) and the CA (cryptography).
HEAVY = ("trio", "httpx", "cryptography", "yaml", "jsonschema", "pyroute2", "msgspec")


# `swarm ARGS` in a fresh interpreter, then the names of every module it imported.
# (sys.modules, not -X importtime: that one does not list what importlib.import_module loads.)
RUN_AND_LIST = """
import sys
from swarm.cli.main import main
try:
    main(sys.argv[1:])
finally:
    print("MODULES", *sorted(sys.modules), file=sys.stderr)
"""


def imported(*args: str, state_dir: str = "/nonexistent") -> set[str]:
    env = dict(os.environ, SWARM_STATE_DIR=state_dir)
    proc = subprocess.run([sys.executable, "-c", RUN_AND_LIST, *args], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stderr.rpartition("MODULES ")[2].split())


def heavy(modules: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY and m.split(".")[0] not in allowed)


@pytest.mark.parametrize("args", [["--help"], ["service", "ls", "--help"], ["service", "create", "--help"],
                                  ["node", "ls", "--help"], ["secret", "ls", "--help"], ["image", "ls", "--help"]])
def test_help_imports_nothing_heavy(args):
    modules = imported(*args)
    assert "swarm.cli.main" in modules           # the list is read right
    assert heavy(modules) == []


@pytest.mark.parametrize("args", [["stack", "--help"], ["stack", "deploy", "--help"], ["stack", "ls", "--help"]])
def test_stack_commands_load_no_compose_parser_before_reading_a_file(args):
    # The stack commands work on the object model (msgspec), not on yaml until a file is read.
    assert heavy(imported(*args), allowed=("msgspec",)) == []


def test_root_help_loads_no_command_module():
    modules = imported("--help")
    assert sorted(m for m in modules if m.startswith("swarm.cli.")) == [
        "swarm.cli.common", "swarm.cli.main", "swarm.cli.root"]


def test_a_command_loads_its_own_module_only():
    modules = imported("volume", "ls", "--help")
    assert "swarm.cli.volume" in modules
    assert not {"swarm.cli.service", "swarm.cli.stack", "swarm.cli.lab", "swarm.cli.chaos"} & modules


def test_service_ls_against_a_daemon_imports_nothing_heavy(state_dir):
    fake = ServiceFake(state_dir)
    fake.answers["service.ls"] = SERVICES
    fake.start()
    try:
        modules = imported("service", "ls", state_dir=state_dir)
    finally:
        fake.stop()
    assert fake.calls and fake.calls[-1][0] == "service.ls"
    assert "swarm.rpc.blocking" in modules
    assert heavy(modules) == [] and "pysyncobj" not in modules


def all_commands() -> dict[str, click.Command]:
    """Every command of the root once every command module is imported."""
    for module in {module for module, _ in root.COMMANDS.values()}:
        importlib.import_module(module)
    return dict(root.swarm.commands)


def test_the_command_table_names_every_command_and_its_module():
    commands = all_commands()
    missing = sorted(commands.keys() - root.COMMANDS.keys())
    assert not missing, f"add these commands to swarm.cli.root.COMMANDS: {missing}"
    assert sorted(root.COMMANDS.keys() - commands.keys()) == []
    assert {name: cmd.callback.__module__ for name, cmd in commands.items()} == {
        name: module for name, (module, _) in root.COMMANDS.items()}


@pytest.mark.parametrize("limit", [20, 45, 60, 64, 70, 80, 120])
def test_the_command_table_gives_the_short_help_click_would(limit):
    for name, cmd in all_commands().items():
        summary = click.Command(name, help=root.COMMANDS[name][1])
        assert summary.get_short_help_str(limit) == cmd.get_short_help_str(limit), name


def test_a_command_missing_from_the_table_still_runs():
    # What a command added to a module but not to COMMANDS gets: every module is loaded.
    code = ("import sys; from swarm.cli import root; del root.COMMANDS['volume']; "
            "from swarm.cli.main import main; main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, "volume", "ls", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: volume ls [OPTIONS]") or "volume ls [OPTIONS]" in proc.stdout


def test_a_mistyped_command_is_matched_against_every_command():
    proc = subprocess.run([sys.executable, "-m", "swarm", "servce"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "No such command 'servce'. (Did you mean one of: 'secret', 'service'?)" in proc.stderr

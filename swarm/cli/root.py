"""The root `swarm` group: every failure of a command becomes one line on stderr,
and a command or option Docker has but this CLI lacks says so (instead of
click's close-match guess). Its --state-dir selects the node for the command
that follows (`swarm --state-dir DIR node ls`, as `docker -H`); a command's own
--state-dir wins.

The command modules add themselves to `swarm` when they are imported, and the
root imports one only when its command is asked for (click's lazy-group
pattern): `swarm service ls` loads swarm/cli/service.py and what it needs,
never the compose loader, the lab or trio, so every command starts quickly.
`swarm --help` lists the commands from COMMANDS without importing any of them;
tests/unit/test_cli_imports.py checks that table against the real commands."""
from __future__ import annotations

import importlib
from typing import Any

import click

from swarm.cli.common import STATE_DIR_HELP, Options, fail, internal_error

# Each command of the root: the module that defines it and the first paragraph
# of its help (what `swarm --help` shows, shortened as click shortens it). A
# command added to a module must be added here too (test_cli_imports.py says which).
COMMANDS: dict[str, tuple[str, str]] = {
    "chaos": ("swarm.cli.chaos",
              "Break a lab cluster on purpose (kill, partition, pause) and check nothing acknowledged is lost."),
    "config": ("swarm.cli.secret", "Manage swarm configs (on a manager)."),
    "daemon": ("swarm.cli.cluster", "(Re)start the daemon of a node, or start one outside any swarm (registry "
                                    "and --docker-api flags given replace the node's settings)."),
    "image": ("swarm.cli.image", "Manage this node's images."),
    "info": ("swarm.cli.cluster", "Show this node's view of the swarm."),
    "init": ("swarm.cli.cluster", "Initialize a swarm: this node becomes its first manager."),
    "join": ("swarm.cli.cluster", "Join a swarm as a worker or a manager (the token decides)."),
    "join-token": ("swarm.cli.cluster", "Print (or rotate) the token to join as a worker or a manager."),
    "lab": ("swarm.cli.lab", "Run a multi-host swarm on this machine (each host a network namespace)."),
    "leave": ("swarm.cli.cluster", "Leave the swarm; the daemon stops and the node's state is cleared."),
    "login": ("swarm.cli.cluster",
              "Log in to a registry (Docker Hub by default); this node keeps the credentials."),
    "logout": ("swarm.cli.cluster",
               "Log out from a registry (Docker Hub by default): this node forgets the credentials."),
    "network": ("swarm.cli.network", "Manage overlay networks (on a manager)."),
    "node": ("swarm.cli.node", "Manage the swarm's nodes (on a manager)."),
    "secret": ("swarm.cli.secret", "Manage swarm secrets (on a manager)."),
    "service": ("swarm.cli.service", "Manage services (on a manager)."),
    "stack": ("swarm.cli.stack", "Manage stacks: applications from compose files (on a manager)."),
    "unlock": ("swarm.cli.cluster", "Unlock a locked manager (autolock) with the swarm's unlock key."),
    "unlock-key": ("swarm.cli.cluster", "Print (or rotate) the key that unlocks a restarted manager (autolock)."),
    "update": ("swarm.cli.cluster", "Update the swarm's settings (only those given change)."),
    "volume": ("swarm.cli.volume", "Manage this node's volumes."),
}

# What Docker has and this CLI has not (yet), by command path: click would
# suggest a near name instead ("secret" -> "Did you mean 'service'?", --hostname
# -> --name), which sends a Docker user the wrong way. Stale entries are
# harmless: they are only read when click finds no such command or option.
DOCKER_ONLY_COMMANDS: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({"ca"}),
    ("volume",): frozenset({"create"}),
    ("image",): frozenset({"build", "history"}),
    ("network",): frozenset({"connect", "disconnect", "prune"}),
}
DOCKER_ONLY_OPTIONS: dict[tuple[str, ...], frozenset[str]] = {key: frozenset(flags.split()) for key, flags in {
    ("init",): "--data-path-addr --external-ca --max-snapshots --snapshot-interval",
    ("update",): "--external-ca --max-snapshots --snapshot-interval",
    ("join",): "--availability --data-path-addr",
    ("info",): "-f",
    ("node", "update"): "--role",
    ("service", "create"): "--config --secret",
    ("service", "update"): "--config-add --config-rm --secret-add --secret-rm",
    ("service", "ps"): "--no-resolve",
    ("image", "import"): "--change --message --platform -c -m",
    ("image", "load"): "--platform --quiet -q",
    ("image", "ls"): "--tree",
    ("image", "rm"): "--no-prune --platform",
    ("image", "pull"): "--all-tags --disable-content-trust --platform -a",
    ("image", "push"): "--all-tags --disable-content-trust --platform -a",
    ("image", "inspect"): "--platform",
    ("image", "save"): "--platform",
    ("image", "prune"): "--filter",
    ("network", "create"): "--aux-address --config-from --config-only --gateway --ingress --internal --ip-range "
                           "--ipam-driver --ipam-opt --ipv4 --ipv6 --label --opt --scope -o",
    ("network", "inspect"): "--verbose -v",
    ("network", "rm"): "--force -f",
}.items()}
# Docker flags whose job another flag does here.
DOCKER_FLAG_INSTEAD: dict[str, str] = {}


def _command_path(ctx: click.Context | None) -> tuple[str, ...]:
    """The subcommand names leading to ctx, without the program's own name."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return tuple(reversed(names))


def docker_only(exc: click.UsageError) -> click.UsageError:
    """A usage error for a command or option Docker has and we lack says so,
    instead of click's close-match guess; any other error is returned as it is."""
    path = _command_path(exc.ctx)
    if isinstance(exc, click.NoSuchOption) and exc.option_name in DOCKER_ONLY_OPTIONS.get(path, ()):
        instead = DOCKER_FLAG_INSTEAD.get(exc.option_name, "not supported yet")
        return click.NoSuchOption(exc.option_name, f"no such option: {exc.option_name} ({instead})", ctx=exc.ctx)
    if isinstance(exc, click.exceptions.NoSuchCommand) and exc.command_name in DOCKER_ONLY_COMMANDS.get(path, ()):
        name = " ".join((*path, exc.command_name))
        return click.exceptions.NoSuchCommand(exc.command_name, f"'{name}' is not supported yet", ctx=exc.ctx)
    return exc


class SwarmGroup(click.Group):
    """The root group: loads a command's module when the command is asked for, and
    turns every failure of a command into one line on stderr."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS.keys() | self.commands.keys())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            # A name not in COMMANDS loads every module: a command missing from the
            # table still runs, and click's "did you mean" sees every name.
            entry = COMMANDS.get(cmd_name)
            for module in [entry[0]] if entry else sorted({module for module, _ in COMMANDS.values()}):
                importlib.import_module(module)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The listing from COMMANDS, as click would print the loaded commands, without loading them.
        rows = [(name, self.commands.get(name) or click.Command(name, help=COMMANDS[name][1]))
                for name in self.list_commands(ctx)]
        rows = [(name, cmd) for name, cmd in rows if not cmd.hidden]
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.NoSuchOption, click.exceptions.NoSuchCommand) as exc:
            raise docker_only(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            reader_went_away()
        except Exception as exc:
            # Imported here: the RPC messages pull in the frame codec, which a
            # command that never calls the daemon (--help) does not need.
            from swarm.api.errors import SwarmError
            from swarm.rpc.messages import RPCError
            if isinstance(exc, (SwarmError, RPCError)):
                fail(exc.message)
            internal_error(exc)


def reader_went_away() -> None:
    """stdout's reader closed it (`swarm service ps | head`): end as docker's CLI (a Go program)
    does, killed by SIGPIPE, without a message; the output it wanted was printed."""
    import os
    import signal

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)           # the interpreter's final flush of stdout must not fail again
    finally:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)


@click.group(cls=SwarmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state-dir", type=click.Path(file_okay=False), metavar="DIR",
              help=f"{STATE_DIR_HELP[:-1]}, for the command that follows; its own --state-dir wins.")
@click.pass_context
def swarm(ctx: click.Context, state_dir: str | None) -> None:
    """Run a cluster of nodes, the way `docker swarm` does."""
    ctx.obj = Options(state_dir=state_dir)

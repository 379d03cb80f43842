"""The root `swarm` group: every failure of a command becomes one line on stderr,
and a command or option Docker has but this CLI lacks says so (instead of
click's close-match guess). Its --state-dir selects the node for the command
that follows (`swarm --state-dir DIR node ls`, as `docker -H`); a command's own
--state-dir wins. The command groups add themselves to `swarm`."""
from __future__ import annotations

from typing import Any

import click

from swarm.api.errors import SwarmError
from swarm.cli.common import STATE_DIR_HELP, Options, fail, internal_error
from swarm.rpc.messages import RPCError

# What Docker has and this CLI has not (yet), by command path: click would
# suggest a near name instead ("secret" -> "Did you mean 'service'?", --hostname
# -> --name), which sends a Docker user the wrong way. Stale entries are
# harmless: they are only read when click finds no such command or option.
DOCKER_ONLY_COMMANDS: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({"ca", "unlock", "unlock-key"}),
    ("volume",): frozenset({"create"}),
    ("image",): frozenset({"build", "history"}),
    ("network",): frozenset({"connect", "disconnect", "prune"}),
}
DOCKER_ONLY_OPTIONS: dict[tuple[str, ...], frozenset[str]] = {key: frozenset(flags.split()) for key, flags in {
    ("init",): "--autolock --data-path-addr --external-ca --max-snapshots --snapshot-interval",
    ("update",): "--autolock --external-ca --max-snapshots --snapshot-interval",
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
    """The root group: turns every failure of a command into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.NoSuchOption, click.exceptions.NoSuchCommand) as exc:
            raise docker_only(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except SwarmError as exc:
            fail(exc.message)
        except RPCError as exc:
            fail(exc.message)
        except Exception as exc:
            internal_error(exc)


@click.group(cls=SwarmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state-dir", type=click.Path(file_okay=False), metavar="DIR",
              help=f"{STATE_DIR_HELP[:-1]}, for the command that follows; its own --state-dir wins.")
@click.pass_context
def swarm(ctx: click.Context, state_dir: str | None) -> None:
    """Run a cluster of nodes, the way `docker swarm` does."""
    ctx.obj = Options(state_dir=state_dir)

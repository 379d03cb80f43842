"""The `swarm` command line: a thin client of the node's local daemon.

How this works: every command resolves `--state-dir` (env SWARM_STATE_DIR)
to a node and talks to that node's daemon over STATE_DIR/swarm.sock with one
blocking RPC per request (`swarm.rpc.core.call_unix_sync`); the daemon does the
work and the CLI only validates input, builds params and prints. `init`,
`join` and `daemon` are the exceptions: they prepare the node's state and
start its daemon through `swarm.daemon.bootstrap` (imported when used). Input is
checked locally first (click usage error, exit 2); a failure reported by the
daemon or the bootstrap is printed as "Error: <sentence>" on stderr with exit
1; any other exception is an internal error, printed on one line, exit 1.
Output mirrors docker's; `--format json` prints exactly one JSON document.
`swarm service ...` and `swarm image ...` live in swarm/cli/service.py and
swarm/cli/image.py, which use the helpers here and add their groups to `swarm`.
"""
from __future__ import annotations

import functools
import importlib
import ipaddress
import json
import logging
import os
import re
import socket
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, NoReturn

import click

from swarm.api.errors import SwarmError
from swarm.rpc.core import RPCError, call_unix_sync

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/swarm"
DEFAULT_PORT = 2377
SOCKET_NAME = "swarm.sock"
NODE_FILE = "node.json"
CALL_TIMEOUT = 10.0
SLOW_CALL_TIMEOUT = 30.0  # membership changes: leave, promote, demote, rm
ROLES = ("worker", "manager")
AVAILABILITIES = ("active", "pause", "drain")


# -- the local daemon ----------------------------------------------------------


class LocalDaemon:
    """The node selected by --state-dir, reached over its unix socket."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.socket = os.path.join(self.state_dir, SOCKET_NAME)

    def call(self, method: str, params: dict | None = None, timeout: float = CALL_TIMEOUT) -> Any:
        try:
            return call_unix_sync(self.socket, method, params or {}, timeout)
        except RPCError as exc:
            # "No socket" alone does not tell a new user what is wrong: say whether
            # there is a node here at all. The code stays "unavailable" (callers
            # such as `leave` and the convergence wait decide on it).
            if exc.code != "unavailable" or self._listening():
                raise
            if not os.path.exists(os.path.join(self.state_dir, NODE_FILE)):
                raise RPCError("unavailable", not_in_swarm(self.state_dir)) from None
            raise RPCError("unavailable", f"the swarm daemon of the node in {self.state_dir} is not running; "
                                          'start it with "swarm daemon --detach"') from None

    def _listening(self) -> bool:
        """Does anything accept connections on the socket (a daemon that failed mid-call, say)?"""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.socket)
            except OSError:
                return False
        return True


def not_in_swarm(state_dir: str) -> str:
    return (f'this node is not part of a swarm (no node in {state_dir}): run "swarm init" or "swarm join", '
            "or point --state-dir (or SWARM_STATE_DIR) at a node's state directory")


def with_daemon(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --state-dir to a command and hand it a LocalDaemon as `daemon`."""
    @click.option("--state-dir", envvar="SWARM_STATE_DIR", default=DEFAULT_STATE_DIR, show_default=True,
                  type=click.Path(file_okay=False), help="The node's state directory (env SWARM_STATE_DIR).")
    @functools.wraps(fn)
    def wrapper(state_dir: str, **kwargs: Any) -> Any:
        return fn(daemon=LocalDaemon(state_dir), **kwargs)
    return wrapper


def bootstrap() -> ModuleType:
    # import_module reads sys.modules, so tests can put a fake module there.
    return importlib.import_module("swarm.daemon.bootstrap")


# -- input types ---------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def parse_duration(text: str, allow_zero: bool = False) -> float:
    """Go's time.ParseDuration ("90s", "1h30m", "500ms"), in seconds; must be > 0
    (or >= 0 with allow_zero, where a bare "0" is also accepted, as Go does)."""
    text = text.strip()
    if allow_zero and text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration (use a number and a unit, like 90s, 5m or 2160h)")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{text!r} must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as Go prints a time.Duration: 1s, 1m30s, 2160h0m0s, 500ms."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1e6), ("µs", 1e3), ("ns", 1)):
            if ns >= size:
                return f"{_trim(ns / size)}{unit}"
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    secs = f"{_trim(rest / 1e9)}s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def parse_addr(text: str, default_port: int = DEFAULT_PORT) -> str:
    """HOST[:PORT] (IPv6 as [ADDR]:PORT) -> "HOST:PORT", port 1-65535."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not HOST[:PORT] (write IPv6 as [ADDR]:PORT)")
        _check_ipv6(host)
        return f"[{host}]:{_port(rest[1:], text) if rest else default_port}"
    if text.count(":") > 1:  # a bare IPv6 address, no port
        _check_ipv6(text)
        return f"[{text}]:{default_port}"
    host, sep, port = text.partition(":")
    if not _HOSTNAME.match(host):
        raise ValueError(f"{text!r} is not HOST[:PORT]: {host!r} is not a host name or IP address")
    if re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv4 address") from None
    return f"{host}:{_port(port, text) if sep else default_port}"


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not a valid IPv6 address") from None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r} has an invalid port {text!r} (use 1-65535)")
    return int(text)


class Duration(click.ParamType):
    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value, self.allow_zero)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Address(click.ParamType):
    name = "host[:port]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return parse_addr(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
ADDRESS = Address()


def parse_label_add(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str] | None:
    """--label-add k=v (or just k: empty value, as docker does) -> {k: v}."""
    if not values:
        return None
    labels: dict[str, str] = {}
    for item in values:
        key, _, value = item.partition("=")
        if not key.strip():
            raise click.BadParameter(f"{item!r} has no key (use KEY=VALUE or KEY)", ctx, param)
        labels[key] = value
    return labels


def parse_label_rm(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> list[str] | None:
    if not values:
        return None
    for key in values:
        if not key.strip() or "=" in key:
            raise click.BadParameter(f"{key!r} is not a label key", ctx, param)
    return list(values)


# -- output --------------------------------------------------------------------


def print_table(rows: Sequence[Sequence[str]], columns: Sequence[str]) -> None:
    """Columns padded like docker's tabwriter (min width 10, 3 spaces between)."""
    table = [list(columns)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(10, max(len(r[i]) for r in table) + 3) for i in range(len(columns) - 1)]
    for row in table:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)] + row[len(widths):]
        click.echo("".join(cells).rstrip())


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=4, ensure_ascii=False))


def _title(value: Any) -> str:
    return str(value or "").capitalize()


# -- errors --------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(1)


def one_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # name the real failure, not trio's wrapper
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def internal_error(exc: Exception) -> NoReturn:
    # The details go where an operator looks, never to a user's terminal: the
    # log of a daemon running in this process (`swarm daemon`), or stderr
    # when SWARM_DEBUG is set.
    if logging.getLogger().handlers:
        log.error("internal error", exc_info=exc)
    elif os.environ.get("SWARM_DEBUG"):
        traceback.print_exception(exc)
    fail(f"internal error: {one_line(exc)}")


# What Docker has and this CLI has not (yet), by command path: click would
# suggest a near name instead ("secret" -> "Did you mean 'service'?", --hostname
# -> --name), which sends a Docker user the wrong way. Stale entries are
# harmless: they are only read when click finds no such command or option.
DOCKER_ONLY_COMMANDS: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({"secret", "config", "stack", "ca", "unlock", "unlock-key", "update"}),
    ("node",): frozenset({"ps"}),
    ("service",): frozenset({"rollback"}),
    ("image",): frozenset({"build", "history", "inspect", "prune", "pull", "push", "save", "tag"}),
    ("network",): frozenset({"connect", "disconnect", "prune"}),
}
_SERVICE_FLAGS = ("--cap-add --cap-drop --credential-spec --entrypoint --health-cmd --health-interval "
                  "--health-retries --health-start-interval --health-start-period --health-timeout --hostname "
                  "--init --isolation --limit-pids --log-driver --log-opt --max-concurrent --no-healthcheck "
                  "--no-resolve-image --oom-score-adj --read-only --replicas-max-per-node --rollback-delay "
                  "--rollback-failure-action --rollback-max-failure-ratio --rollback-monitor --rollback-order "
                  "--rollback-parallelism --stop-signal --tty --update-delay --update-failure-action "
                  "--update-max-failure-ratio --update-monitor --update-order --update-parallelism --user "
                  "--with-registry-auth --workdir -t -u -w")
DOCKER_ONLY_OPTIONS: dict[tuple[str, ...], frozenset[str]] = {key: frozenset(flags.split()) for key, flags in {
    ("init",): "--autolock --availability --data-path-addr --data-path-port --default-addr-pool "
               "--default-addr-pool-mask-length --external-ca --max-snapshots --snapshot-interval "
               "--task-history-limit",
    ("join",): "--availability --data-path-addr",
    ("info",): "-f",
    ("node", "ls"): "--filter -f",
    ("node", "inspect"): "--pretty -f",
    ("node", "update"): "--role",
    ("service", "create"): _SERVICE_FLAGS + " --config --container-label --dns --dns-option --dns-search "
                           "--env-file --generic-resource --group --host --label --placement-pref --secret "
                           "--sysctl --ulimit -l",
    ("service", "update"): _SERVICE_FLAGS + " --config-add --config-rm --container-label-add "
                           "--container-label-rm --dns-add --dns-option-add --dns-option-rm --dns-rm "
                           "--dns-search-add --dns-search-rm --force --generic-resource-add --generic-resource-rm "
                           "--group-add --group-rm --host-add --host-rm --label-add --label-rm --mount-add "
                           "--mount-rm --placement-pref-add --placement-pref-rm --rollback --secret-add "
                           "--secret-rm --sysctl-add --sysctl-rm --ulimit-add --ulimit-rm",
    ("service", "ls"): "--filter -f",
    ("service", "ps"): "--filter --no-resolve -f",
    ("service", "inspect"): "--pretty -f",
    ("service", "logs"): "--details --no-resolve --no-task-ids --no-trunc --raw --since -n",
    ("image", "import"): "--change --message --platform -c -m",
    ("image", "load"): "--platform --quiet -q",
    ("image", "ls"): "--all --digests --filter --no-trunc --tree -a -f",
    ("image", "rm"): "--force --no-prune --platform -f",
    ("network", "create"): "--aux-address --config-from --config-only --gateway --ingress --internal --ip-range "
                           "--ipam-driver --ipam-opt --ipv4 --ipv6 --label --opt --scope -o",
    ("network", "inspect"): "--format --verbose -f -v",
    ("network", "ls"): "--filter -f",
    ("network", "rm"): "--force -f",
}.items()}
# Docker flags whose job another flag does here.
DOCKER_FLAG_INSTEAD = {"--pretty": "use --format pretty"}


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
def swarm() -> None:
    """Run a cluster of nodes, the way `docker swarm` does."""


# -- swarm init / join / daemon ------------------------------------------------


def join_command_text(role: str, token: str, addr: str) -> str:
    return (f"To add a {role} to this swarm, run the following command:\n\n"
            f"    swarm join --token {token} {addr}\n")


def say_defaults(addr: str | None, hostname: str | None) -> None:
    """Name what the node chose by itself (a wrong guess is hard to see later), on
    stderr: scripts read stdout."""
    chosen = ([addr] if addr else []) + ([f"hostname {hostname}"] if hostname else [])
    flags = (["--advertise-addr"] if addr else []) + (["--hostname"] if hostname else [])
    if chosen:
        click.echo(f"advertising {' and '.join(chosen)}; use {'/'.join(flags)} to choose", err=True)


@swarm.command()
@click.option("--advertise-addr", type=ADDRESS, help=f"Address other nodes reach this one at (port {DEFAULT_PORT}).")
@click.option("--listen-addr", type=ADDRESS, help="Address to listen on (default: the advertise address).")
@click.option("--hostname", help="This node's name (default: the machine's hostname).")
@click.option("--cert-expiry", type=DURATION, default="2160h0m0s", show_default=True,
              help="Validity of node certificates.")
@click.option("--dispatcher-heartbeat", type=DURATION, default="1s", show_default=True,
              help="Heartbeat period of the nodes.")
@click.option("--force-new-cluster", is_flag=True, help="Make a new one-manager cluster from this node's state.")
@click.option("--foreground", is_flag=True, help="Run the daemon in the foreground (for systemd).")
@with_daemon
def init(daemon: LocalDaemon, advertise_addr: str | None, listen_addr: str | None, hostname: str | None,
         cert_expiry: float, dispatcher_heartbeat: float, force_new_cluster: bool, foreground: bool) -> None:
    """Initialize a swarm: this node becomes its first manager."""
    if advertise_addr is None and not force_new_cluster:
        raise click.UsageError("Missing option '--advertise-addr'.")
    # Chosen here rather than in the bootstrap, so that it can be named (a forced new cluster keeps its name).
    default_hostname = socket.gethostname() if hostname is None and not force_new_cluster else None
    boot = bootstrap()
    state = boot.init_state(state_dir=daemon.state_dir, advertise_addr=advertise_addr or "",
                            listen_addr=listen_addr, hostname=hostname or default_hostname, cert_expiry=cert_expiry,
                            heartbeat=dispatcher_heartbeat, force_new_cluster=force_new_cluster)
    say_defaults(None, default_hostname)
    click.echo(f"Swarm initialized: current node ({state['node_id']}) is now a manager.\n")
    if foreground:
        boot.start_daemon(daemon.state_dir, detach=False)
        return
    boot.start_daemon(daemon.state_dir, detach=True)
    token = daemon.call("join_token", {"role": "worker", "rotate": False})
    click.echo(join_command_text("worker", token["token"], token["addr"]))
    click.echo("To add a manager to this swarm, run 'swarm join-token manager' and follow the instructions.\n")


@swarm.command()
@click.option("--token", required=True, help="The worker or manager join token.")
@click.option("--advertise-addr", type=ADDRESS,
              help="Address other nodes reach this one at (default: this host's address on the way to the manager, "
                   f"port {DEFAULT_PORT}).")
@click.option("--listen-addr", type=ADDRESS, help="Address to listen on (default: the advertise address).")
@click.option("--hostname", help="This node's name (default: the machine's hostname).")
@click.option("--foreground", is_flag=True, help="Run the daemon in the foreground (for systemd).")
@click.argument("remote_addr", metavar="HOST:PORT", type=ADDRESS)
@with_daemon
def join(daemon: LocalDaemon, token: str, advertise_addr: str | None, listen_addr: str | None,
         hostname: str | None, foreground: bool, remote_addr: str) -> None:
    """Join a swarm as a worker or a manager (the token decides)."""
    if not token.strip():
        raise click.BadParameter("the token is empty", param_hint="'--token'")
    boot = bootstrap()
    joined = boot.join_state(state_dir=daemon.state_dir, token=token, remote_addr=remote_addr,
                             advertise_addr=advertise_addr, listen_addr=listen_addr, hostname=hostname)
    say_defaults(joined["addr"] if advertise_addr is None else None, joined["hostname"] if hostname is None else None)
    if foreground:
        click.echo(f"This node joined a swarm as a {joined['role']}.")
        boot.start_daemon(daemon.state_dir, detach=False)
        return
    boot.start_daemon(daemon.state_dir, detach=True)
    click.echo(f"This node joined a swarm as a {joined['role']}.")


@swarm.command("daemon")
@click.option("--detach", "-d", is_flag=True, help="Start in the background; return once it is ready.")
@click.option("--unsafe-memory-journal", is_flag=True,
              help="UNSAFE, for throwaway labs: keep new Raft log entries in memory only. A restart of "
                   "every manager then loses acknowledged writes.")
@with_daemon
def daemon_cmd(daemon: LocalDaemon, detach: bool, unsafe_memory_journal: bool) -> None:
    """(Re)start the daemon of a node that already has its state."""
    bootstrap().start_daemon(daemon.state_dir, detach=detach, memory_journal=unsafe_memory_journal)


# -- swarm join-token / leave / info -------------------------------------------


@swarm.command("join-token")
@click.option("--quiet", "-q", is_flag=True, help="Only print the token.")
@click.option("--rotate", is_flag=True, help="Replace the token with a new one.")
@click.argument("role", type=click.Choice(ROLES))
@with_daemon
def join_token(daemon: LocalDaemon, quiet: bool, rotate: bool, role: str) -> None:
    """Print (or rotate) the token to join as a worker or a manager."""
    result = daemon.call("join_token", {"role": role, "rotate": rotate})
    if rotate and not quiet:
        click.echo(f"Successfully rotated {role} join token.\n")
    if quiet:
        click.echo(result["token"])
    else:
        click.echo(join_command_text(role, result["token"], result["addr"]))


@swarm.command()
@click.option("--force", "-f", is_flag=True,
              help="Force this node to leave the swarm, ignoring warnings (a manager always needs it).")
@with_daemon
def leave(daemon: LocalDaemon, force: bool) -> None:
    """Leave the swarm; the daemon stops and the node's state is cleared."""
    try:
        daemon.call("leave", {"force": force}, timeout=SLOW_CALL_TIMEOUT)
    except RPCError as exc:
        # The daemon stops as it leaves; if the answer was lost on the way but
        # the node's state is gone, the node did leave.
        if exc.code != "unavailable" or os.path.exists(os.path.join(daemon.state_dir, NODE_FILE)):
            raise
    click.echo("Node left the swarm.")


@swarm.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@with_daemon
def info(daemon: LocalDaemon, fmt: str) -> None:
    """Show this node's view of the swarm."""
    result = daemon.call("info")
    if fmt == "json":
        print_json(result)
    else:
        click.echo("\n".join(info_lines(result)))


def info_lines(info: Mapping[str, Any]) -> list[str]:
    """The Swarm section of `docker info`, for our info object."""
    def line(indent: int, label: str, key: str, show: Callable[[Any], str] = str) -> list[str]:
        return [f"{' ' * indent}{label}: {show(info[key])}"] if info.get(key) is not None else []

    lines = ["Swarm: active"] + line(1, "NodeID", "node_id") + line(1, "Hostname", "hostname")
    lines.append(f" Is Manager: {str(info.get('role') == 'manager').lower()}")
    lines += line(1, "ClusterID", "cluster_id") + line(1, "Managers", "managers") + line(1, "Nodes", "nodes")
    lines += line(1, "Leader", "leader")
    raft = info.get("raft")
    if isinstance(raft, Mapping):
        lines.append(" Raft:")
        for label, key in (("Term", "term"), ("Commit Index", "commit_index"), ("Applied Index", "applied_index"),
                           ("Journal", "journal")):
            if raft.get(key) is not None:
                lines.append(f"  {label}: {raft[key]}")
        if raft.get("members"):
            lines.append("  Members:")
            lines += [f"   {member}" for member in raft["members"]]
    if info.get("heartbeat_period") is not None:
        lines += [" Dispatcher:", f"  Heartbeat Period: {format_duration(float(info['heartbeat_period']))}"]
    lines += line(1, "Certificate Expiry", "cert_expiry") + line(1, "Node Address", "addr")
    if info.get("manager_addrs"):
        lines.append(" Manager Addresses:")
        lines += [f"  {addr}" for addr in info["manager_addrs"]]
    lines += line(1, "State Dir", "state_dir")
    return lines


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
    if fmt == "json":
        print_json(rows)
    elif quiet:
        for row in rows:
            click.echo(row["id"])
    else:
        self_id = daemon.call("ping").get("node_id")
        print_table([node_row(row, row["id"] == self_id) for row in rows], NODE_COLUMNS)


def node_row(row: Mapping[str, Any], is_self: bool) -> list[str]:
    return [row["id"] + (" *" if is_self else ""), row["hostname"], _title(row["status"]),
            _title(row["availability"]), _title(row["manager_status"]), row["addr"]]


@node.command("inspect")
@click.option("--format", "fmt", type=click.Choice(["json", "pretty"]), default="json", show_default=True)
@refs_argument
@with_daemon
def node_inspect(daemon: LocalDaemon, fmt: str, refs: tuple[str, ...]) -> None:
    """Show one or more nodes in detail (NODE: ID, ID prefix or hostname)."""
    nodes = daemon.call("node.inspect", {"refs": list(refs)})
    if fmt == "json":
        print_json(nodes)
    else:
        click.echo("\n\n".join("\n".join(pretty_node(n)) for n in nodes))


def kv(label: str, value: Any, indent: int = 0) -> str:
    """One `Label:  value` line of a --pretty block, labels aligned."""
    return f"{' ' * indent}{label + ':':<{22 - indent}}{value}"


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


# -- swarm service / swarm image (their own modules; importing them adds the groups) --

from swarm.cli import image as cli_image, service as cli_service  # noqa: E402,F401  (circular on purpose: they use the helpers above)
from swarm.cli import lab as cli_lab  # noqa: E402,F401  (swarm lab ...)
from swarm.cli import network as cli_network  # noqa: E402,F401  (swarm network ...)
from swarm.cli import chaos as cli_chaos  # noqa: E402,F401  (swarm chaos ...)


# -- entry point ---------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """`swarm` and `python -m swarm`: no traceback ever reaches the user."""
    try:
        swarm.main(args=list(argv) if argv is not None else None, prog_name="swarm")
    except SystemExit:
        raise
    except Exception as exc:  # raised outside a command (while parsing, say)
        try:
            internal_error(exc)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)

"""`swarm init`, `join`, `daemon`, `join-token`, `leave`, `update` and `info`: the swarm itself."""
from __future__ import annotations

import functools
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import click

from swarm.api import model
from swarm.daemon.config import BadSetting as BadRegistrySetting
from swarm.daemon.config import check_insecure_registry, check_mirror, save_registry_settings
from swarm.daemon.config import NodeConfig, save_docker_api_settings
from swarm.engineapi.tls import BadApiSetting, TcpApi, insecure_warning, server_context, tcp_api
from swarm.rpc.messages import RPCError
from swarm.cli.common import (ADDRESS, AVAILABILITIES, DEFAULT_PORT, DURATION, NODE_FILE, ROLES, SLOW_CALL_TIMEOUT,
                               LocalDaemon, bootstrap, fail, format_duration, print_json, with_daemon)
from swarm.cli.root import swarm

log = logging.getLogger(__name__)


class AddrPool(click.ParamType):
    """--default-addr-pool: IPv4 CIDRs, comma-separated or repeated (Docker's ipNetSlice)."""
    name = "cidr"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        out = []
        for text in str(value).split(","):
            try:
                out.append(str(ipaddress.IPv4Network(text.strip(), strict=True)))
            except ValueError as exc:
                self.fail(f"{text.strip()!r} is not an IPv4 network in CIDR form (like 10.20.0.0/16): {exc}",
                          param, ctx)
        return tuple(out)


ADDR_POOL = AddrPool()


def check_setting(check: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback running one of the model's setting checks (a usage error naming the flag)."""
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except model.BadSetting as exc:
            raise click.UsageError(str(exc), ctx) from None
    return callback


def registry_setting(check: Callable[[str], str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback checking each value of a repeatable registry flag (dockerd's rules)."""
    def callback(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
        try:
            return [check(v) for v in values]
        except BadRegistrySetting as exc:
            raise click.BadParameter(exc.message, ctx, param) from None
    return callback


def registry_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--insecure-registry and --registry-mirror (repeatable), as dockerd's."""
    fn = click.option("--registry-mirror", "registry_mirrors", multiple=True, metavar="URL",
                      callback=registry_setting(check_mirror),
                      help="A docker.io mirror tried first for pulls (repeatable).")(fn)
    return click.option("--insecure-registry", "insecure_registries", multiple=True, metavar="HOST[:PORT]|CIDR",
                        callback=registry_setting(check_insecure_registry),
                        help="A registry reached without verified TLS (repeatable; 127.0.0.0/8 always is).")(fn)


def keep_registry_settings(state_dir: str, insecure: list[str], mirrors: list[str]) -> None:
    """The node's registry settings go into its config, read by the daemon when it starts;
    a flag not given leaves its list as it was."""
    if insecure or mirrors:
        save_registry_settings(state_dir, insecure or None, mirrors or None)


def docker_api_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--docker-api tcp://ADDR[:PORT] and its TLS files, as dockerd's -H with --tlsverify; checked
    together (the files loaded) before the command writes anything, and handed to it as one
    `docker_api` setting (None: not given)."""
    @functools.wraps(fn)
    def wrapper(*, docker_api: str | None, docker_api_tlscacert: str | None, docker_api_tlscert: str | None,
                docker_api_tlskey: str | None, docker_api_insecure: bool, **kwargs: Any) -> Any:
        setting = tcp_api(docker_api, docker_api_tlscacert, docker_api_tlscert, docker_api_tlskey, docker_api_insecure)
        return fn(docker_api=setting, **kwargs)

    wrapper = click.option("--docker-api-insecure", is_flag=True,
                           help="Serve --docker-api over plain TCP (INSECURE: whoever reaches it controls this "
                                "node).")(wrapper)
    wrapper = click.option("--docker-api-tlskey", metavar="FILE", help="The key of --docker-api-tlscert.")(wrapper)
    wrapper = click.option("--docker-api-tlscert", metavar="FILE",
                           help="This node's TLS certificate on --docker-api.")(wrapper)
    wrapper = click.option("--docker-api-tlscacert", metavar="FILE",
                           help="The CA that signs the clients' certificates on --docker-api.")(wrapper)
    return click.option("--docker-api", metavar="tcp://ADDR[:PORT]",
                        help="Also serve the Docker Engine API here, with mutual TLS (port 2376 by default; "
                             "kept by the node).")(wrapper)


def keep_docker_api(state_dir: str, setting: TcpApi | None) -> None:
    """The Engine API over TCP goes into the node's config, read by the daemon when it starts
    (given again, it replaces the old one). Before each start, on stderr: plain TCP is warned
    about, as dockerd does, and kept TLS files that no longer load are named (the daemon then
    starts without the TCP listener: the node is needed by its swarm all the same)."""
    if not os.path.exists(os.path.join(state_dir, NODE_FILE)):
        if setting is not None:      # `swarm daemon` outside a swarm: nowhere to keep it yet
            raise BadApiSetting(f"--docker-api {setting.addr} is kept by the node: give it to swarm init or "
                                "swarm join, or to swarm daemon once this node is part of a swarm")
        return
    if setting is not None:
        save_docker_api_settings(state_dir, setting)
    kept = NodeConfig.load(state_dir).docker_api_setting()
    if kept is not None and kept.insecure:
        click.echo(insecure_warning(kept), err=True)
    elif kept is not None and setting is None:
        try:
            server_context(kept)
        except BadApiSetting as exc:
            click.echo(f"WARNING: the Engine API will not be served on {kept.addr}: {exc.message}", err=True)


def docker_api_param(setting: TcpApi | None) -> dict | None:
    """The --docker-api setting as swarm.init/swarm.join params carry it (the daemon keeps it
    with the node's state, before it starts the node)."""
    if setting is None:
        return None
    return {"addr": setting.addr, "tlscacert": setting.tlscacert, "tlscert": setting.tlscert,
            "tlskey": setting.tlskey, "insecure": setting.insecure}


# -- swarm init / join / daemon ------------------------------------------------


def running_inactive(daemon: LocalDaemon) -> bool:
    """Does a daemon started without a node's state (`swarm daemon`) serve this state directory?"""
    try:
        return daemon.call("ping", timeout=2.0).get("state") == "inactive"
    except RPCError:
        return False


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
@click.option("--availability", type=click.Choice(AVAILABILITIES), default="active", show_default=True,
              help="Availability of this node.")
@click.option("--default-addr-pool", "addr_pools", multiple=True, type=ADDR_POOL, metavar="CIDR",
              help="Address pool the subnets of overlay networks are taken from (repeatable; default 10.0.0.0/8).")
@click.option("--default-addr-pool-mask-length", "pool_mask", type=click.IntRange(1, 32), default=24,
              show_default=True, help="Size (prefix length) of the subnets taken from the pools.")
@click.option("--data-path-port", type=int, default=0, callback=check_setting(model.check_data_path_port),
              help="UDP port of the VXLAN data path (1024-49151; 0: the default 4789).")
@click.option("--task-history-limit", type=int, default=5, show_default=True,
              callback=check_setting(model.check_task_history), help="Ended tasks kept per slot (-1: all).")
@click.option("--autolock", is_flag=True,
              help="Lock the managers: a restarted manager needs the unlock key (swarm unlock) to start.")
@click.option("--force-new-cluster", is_flag=True, help="Make a new one-manager cluster from this node's state.")
@click.option("--foreground", is_flag=True, help="Run the daemon in the foreground (for systemd).")
@registry_options
@docker_api_options
@with_daemon
def init(daemon: LocalDaemon, advertise_addr: str | None, listen_addr: str | None, hostname: str | None,
         cert_expiry: float, dispatcher_heartbeat: float, availability: str, addr_pools: tuple[tuple[str, ...], ...],
         pool_mask: int, data_path_port: int, task_history_limit: int, autolock: bool, force_new_cluster: bool,
         foreground: bool, insecure_registries: list[str], registry_mirrors: list[str],
         docker_api: TcpApi | None) -> None:
    """Initialize a swarm: this node becomes its first manager."""
    if advertise_addr is None and not force_new_cluster:
        raise click.UsageError("Missing option '--advertise-addr'.")
    # Chosen here rather than in the bootstrap, so that it can be named (a forced new cluster keeps its name).
    default_hostname = socket.gethostname() if hostname is None and not force_new_cluster else None
    settings = {"default_addr_pools": [cidr for group in addr_pools for cidr in group],
                "default_addr_pool_mask_length": pool_mask, "data_path_port": data_path_port,
                "task_history_limit": task_history_limit, "autolock": autolock}
    boot = bootstrap()
    # A daemon started without a node (`swarm daemon`) makes the node itself and serves on.
    running = not force_new_cluster and running_inactive(daemon)
    if running and foreground:
        fail("this node's daemon is already running: run swarm init without --foreground")
    # A locked manager's data key is needed to rewrite its Raft files.
    forced_key = read_unlock_key() if force_new_cluster and boot.is_locked(daemon.state_dir) else None
    if running:
        state = daemon.call("swarm.init", {
            "advertise_addr": advertise_addr, "listen_addr": listen_addr, "hostname": hostname or default_hostname,
            "cert_expiry": cert_expiry, "heartbeat": dispatcher_heartbeat, "availability": availability,
            "settings": settings, "insecure_registries": insecure_registries, "registry_mirrors": registry_mirrors,
            "docker_api": docker_api_param(docker_api)}, timeout=SLOW_CALL_TIMEOUT)
    else:
        state = boot.init_state(state_dir=daemon.state_dir, advertise_addr=advertise_addr or "",
                                listen_addr=listen_addr, hostname=hostname or default_hostname,
                                cert_expiry=cert_expiry, heartbeat=dispatcher_heartbeat,
                                force_new_cluster=force_new_cluster, availability=availability, settings=settings,
                                unlock_key=forced_key)
        keep_registry_settings(daemon.state_dir, insecure_registries, registry_mirrors)
    keep_docker_api(daemon.state_dir, None if running else docker_api)   # the running daemon kept it
    say_defaults(None, default_hostname)
    click.echo(f"Swarm initialized: current node ({state['node_id']}) is now a manager.\n")
    unlock_key = state.get("unlock_key") or forced_key
    if foreground:
        if state.get("unlock_key"):
            click.echo(unlock_command_text(state["unlock_key"]))
        boot.start_daemon(daemon.state_dir, detach=False, unlock_key=unlock_key)
        return
    started = boot.wait_ready(daemon.state_dir) if running else boot.start_daemon(daemon.state_dir, detach=True)
    if started.get("locked"):          # the data key is wrapped from the start: init holds the key
        unlock_and_wait(daemon, unlock_key or "")
    token = daemon.call("join_token", {"role": "worker", "rotate": False})
    click.echo(join_command_text("worker", token["token"], token["addr"]))
    click.echo("To add a manager to this swarm, run 'swarm join-token manager' and follow the instructions.\n")
    if state.get("unlock_key"):
        click.echo(unlock_command_text(state["unlock_key"]))


@swarm.command()
@click.option("--token", required=True, help="The worker or manager join token.")
@click.option("--advertise-addr", type=ADDRESS,
              help="Address other nodes reach this one at (default: this host's address on the way to the manager, "
                   f"port {DEFAULT_PORT}).")
@click.option("--listen-addr", type=ADDRESS, help="Address to listen on (default: the advertise address).")
@click.option("--hostname", help="This node's name (default: the machine's hostname).")
@click.option("--foreground", is_flag=True, help="Run the daemon in the foreground (for systemd).")
@click.argument("remote_addr", metavar="HOST:PORT", type=ADDRESS)
@registry_options
@docker_api_options
@with_daemon
def join(daemon: LocalDaemon, token: str, advertise_addr: str | None, listen_addr: str | None,
         hostname: str | None, foreground: bool, remote_addr: str, insecure_registries: list[str],
         registry_mirrors: list[str], docker_api: TcpApi | None) -> None:
    """Join a swarm as a worker or a manager (the token decides)."""
    if not token.strip():
        raise click.BadParameter("the token is empty", param_hint="'--token'")
    boot = bootstrap()
    # A daemon started without a node (`swarm daemon`) joins itself and serves on.
    running = running_inactive(daemon)
    if running and foreground:
        fail("this node's daemon is already running: run swarm join without --foreground")
    if running:
        joined = daemon.call("swarm.join", {
            "token": token, "remote_addr": remote_addr, "advertise_addr": advertise_addr,
            "listen_addr": listen_addr, "hostname": hostname, "insecure_registries": insecure_registries,
            "registry_mirrors": registry_mirrors, "docker_api": docker_api_param(docker_api)},
            timeout=SLOW_CALL_TIMEOUT)
    else:
        joined = boot.join_state(state_dir=daemon.state_dir, token=token, remote_addr=remote_addr,
                                 advertise_addr=advertise_addr, listen_addr=listen_addr, hostname=hostname)
        keep_registry_settings(daemon.state_dir, insecure_registries, registry_mirrors)
    keep_docker_api(daemon.state_dir, None if running else docker_api)   # the running daemon kept it
    say_defaults(joined["addr"] if advertise_addr is None else None, joined["hostname"] if hostname is None else None)
    if foreground:
        click.echo(f"This node joined a swarm as a {joined['role']}.")
        if joined.get("unlock_key"):
            boot.start_daemon(daemon.state_dir, detach=False, unlock_key=joined["unlock_key"])
        else:
            boot.start_daemon(daemon.state_dir, detach=False)
        return
    started = boot.wait_ready(daemon.state_dir) if running else boot.start_daemon(daemon.state_dir, detach=True)
    if started.get("locked"):        # a manager of a cluster with autolock: join holds the key
        unlock_and_wait(daemon, joined.get("unlock_key") or "")
    click.echo(f"This node joined a swarm as a {joined['role']}.")


@swarm.command("daemon")
@click.option("--detach", "-d", is_flag=True, help="Start in the background; return once it is ready.")
@click.option("--unsafe-memory-journal", is_flag=True,
              help="UNSAFE, for throwaway labs: keep new Raft log entries in memory only. A restart of "
                   "every manager then loses acknowledged writes.")
@registry_options
@docker_api_options
@with_daemon
def daemon_cmd(daemon: LocalDaemon, detach: bool, unsafe_memory_journal: bool, insecure_registries: list[str],
               registry_mirrors: list[str], docker_api: TcpApi | None) -> None:
    """(Re)start the daemon of a node, or start one outside any swarm (registry and --docker-api
    flags given replace the node's settings).

    In a directory without a node's state the daemon starts outside any swarm, as dockerd: `swarm
    init/join` (or `docker swarm init/join` on its docker.sock) then make it a node."""
    if (insecure_registries or registry_mirrors) and os.path.exists(os.path.join(daemon.state_dir, NODE_FILE)):
        keep_registry_settings(daemon.state_dir, insecure_registries, registry_mirrors)
    keep_docker_api(daemon.state_dir, docker_api)
    started = bootstrap().start_daemon(daemon.state_dir, detach=detach, memory_journal=unsafe_memory_journal)
    if started.get("locked"):
        click.echo(f"{LOCKED_NOTE}", err=True)


# -- swarm unlock / unlock-key (autolock) ----------------------------------------------------------
LOCKED_NOTE = "This manager is locked (autolock): run `swarm unlock` and give the unlock key to start it."
MAX_KEY_INPUT = 4096
UNLOCK_READY_TIMEOUT = 30.0


def unlock_command_text(key: str) -> str:
    """docker/cli's printUnlockCommand, for our command name."""
    return ("To unlock a swarm manager after it restarts, run the `swarm unlock`\n"
            f"command and provide the following key:\n\n    {key}\n\n"
            "Please remember to store this key in a password manager, since without it you\n"
            "will not be able to restart the manager.\n")


def read_unlock_key() -> str:
    """The unlock key from the terminal (not echoed) or from stdin, as `docker swarm unlock` reads it."""
    stdin = click.get_text_stream("stdin")
    if stdin.isatty():
        key = click.prompt("Please enter unlock key", hide_input=True, default="", show_default=False)
    else:
        key = stdin.read(MAX_KEY_INPUT + 1)
        if len(key) > MAX_KEY_INPUT:
            fail("the unlock key on stdin is longer than 4 KiB")
    key = key.strip()
    if not key:
        fail("no unlock key given")
    return key


def unlock_and_wait(daemon: LocalDaemon, key: str) -> None:
    """Give a locked daemon its key, then wait until it serves (it restarts its local API)."""
    daemon.call("unlock", {"key": key})
    deadline = time.monotonic() + UNLOCK_READY_TIMEOUT
    while True:
        try:
            if daemon.call("ping", timeout=1.0).get("ready"):
                return
        except RPCError:
            pass
        if time.monotonic() > deadline:
            fail(f"the manager was unlocked but did not become ready within {UNLOCK_READY_TIMEOUT:g} s")
        time.sleep(0.05)


@swarm.command()
@with_daemon
def unlock(daemon: LocalDaemon) -> None:
    """Unlock a locked manager (autolock) with the swarm's unlock key."""
    if not daemon.call("ping").get("locked"):
        fail("swarm is not locked")
    unlock_and_wait(daemon, read_unlock_key())


@swarm.command("unlock-key")
@click.option("--quiet", "-q", is_flag=True, help="Only print the unlock key.")
@click.option("--rotate", is_flag=True, help="Replace the unlock key with a new one.")
@with_daemon
def unlock_key(daemon: LocalDaemon, quiet: bool, rotate: bool) -> None:
    """Print (or rotate) the key that unlocks a restarted manager (autolock)."""
    key = daemon.call("unlock_key", {"rotate": rotate})["unlock_key"]
    if rotate and not quiet:
        click.echo("Successfully rotated manager unlock key.\n")
    click.echo(key if quiet else unlock_command_text(key))


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


@swarm.command("update")
@click.option("--task-history-limit", type=int, callback=check_setting(model.check_task_history),
              help="Ended tasks kept per slot (-1: all).")
@click.option("--dispatcher-heartbeat", type=DURATION, callback=check_setting(model.check_heartbeat),
              help="Heartbeat period of the nodes.")
@click.option("--cert-expiry", type=DURATION, callback=check_setting(model.check_cert_expiry),
              help="Validity of node certificates issued from now on.")
@click.option("--autolock", type=click.BOOL, default=None, is_flag=False, flag_value=True, metavar="[true|false]",
              help="Lock the managers: a restarted manager needs the unlock key (swarm unlock) to start.")
@with_daemon
def update(daemon: LocalDaemon, task_history_limit: int | None, dispatcher_heartbeat: float | None,
           cert_expiry: float | None, autolock: bool | None) -> None:
    """Update the swarm's settings (only those given change)."""
    changes = {"task_history_limit": task_history_limit, "heartbeat": dispatcher_heartbeat,
               "cert_expiry": cert_expiry, "autolock": autolock}
    daemon.call("cluster.update", {k: v for k, v in changes.items() if v is not None})
    click.echo("Swarm updated.")
    if autolock:
        click.echo(unlock_command_text(daemon.call("unlock_key", {"rotate": False})["unlock_key"]))


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

    if info.get("state") == "inactive":            # a daemon started without a node (`swarm daemon`)
        return ["Swarm: inactive"] + line(1, "State Dir", "state_dir")
    lines = ["Swarm: active"] + line(1, "NodeID", "node_id") + line(1, "Hostname", "hostname")
    lines.append(f" Is Manager: {str(info.get('role') == 'manager').lower()}")
    lines += line(1, "ClusterID", "cluster_id") + line(1, "Managers", "managers") + line(1, "Nodes", "nodes")
    lines += line(1, "Leader", "leader")
    if info.get("task_history_limit") is not None:
        lines += [" Orchestration:", f"  Task History Retention Limit: {info['task_history_limit']}"]
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
    if info.get("cert_expiry_period") is not None:
        lines += [" CA Configuration:", f"  Expiry Duration: {format_duration(float(info['cert_expiry_period']))}"]
    lines += line(1, "Certificate Expiry", "cert_expiry") + line(1, "Node Address", "addr")
    if info.get("default_addr_pools"):
        lines.append(f" Default Address Pool: {' '.join(info['default_addr_pools'])}")
    lines += line(1, "SubnetSize", "default_addr_pool_mask_length") + line(1, "Data Path Port", "data_path_port")
    if info.get("manager_addrs"):
        lines.append(" Manager Addresses:")
        lines += [f"  {addr}" for addr in info["manager_addrs"]]
    lines += line(1, "State Dir", "state_dir")
    return lines


# -- swarm login / logout (credentials for registries, kept by the node) --------------------------
LOGIN_TIMEOUT = 60.0     # the registry (and its token server) are asked, maybe over HTTPS then HTTP
MAX_STDIN_PASSWORD = 64 << 10


@swarm.command()
@click.option("--username", "-u", default="", help="Username.")
@click.option("--password", "-p", default="", help="Password.")
@click.option("--password-stdin", is_flag=True, help="Take the password from stdin.")
@click.argument("server", metavar="[SERVER]", default="")
@with_daemon
def login(daemon: LocalDaemon, username: str, password: str, password_stdin: bool, server: str) -> None:
    """Log in to a registry (Docker Hub by default); this node keeps the credentials."""
    if password:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True)
        if password_stdin:
            fail("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            fail("Must provide --username with --password-stdin")
        password = click.get_binary_stream("stdin").read(MAX_STDIN_PASSWORD + 1).decode(errors="replace")
        if len(password) > MAX_STDIN_PASSWORD:
            fail("the password on stdin is longer than 64 KiB")
        password = password.removesuffix("\n").removesuffix("\r")
    if not username or not password:
        username, password = _prompt_login(username, password)
    answer = daemon.call("login", {"server": server, "username": username, "password": password},
                         timeout=LOGIN_TIMEOUT)
    click.echo(f"WARNING! Your password will be stored unencrypted in "
               f"{os.path.join(daemon.state_dir, 'config.json')}.", err=True)
    click.echo(answer["status"])


def _prompt_login(username: str, password: str) -> tuple[str, str]:
    """docker's interactive login: a terminal is needed, an empty answer is refused."""
    if not click.get_text_stream("stdin").isatty():
        fail("Cannot perform an interactive login from a non TTY device")
    if not username:
        username = click.prompt("Username", default="", show_default=False).strip()
        if not username:
            fail("Non-null Username Required")
    if not password:
        password = click.prompt("Password", default="", show_default=False, hide_input=True)
        if not password:
            fail("Password Required")
    return username, password


@swarm.command()
@click.argument("server", metavar="[SERVER]", default="")
@with_daemon
def logout(daemon: LocalDaemon, server: str) -> None:
    """Log out from a registry (Docker Hub by default): this node forgets the credentials."""
    answer = daemon.call("logout", {"server": server})
    if answer["removed"]:
        click.echo(f"Removing login credentials for {answer['server']}")
    else:
        click.echo(f"Not logged in to {answer['server']}")

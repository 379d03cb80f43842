"""The daemon process: the Engine API for its whole life, the node's Daemon while it is in a swarm.

How this works. dockerd runs before any swarm exists, and `docker swarm init/join/leave` change
that while it keeps serving. The Host is that process. It owns what lives as long as the
process: the pid file, the signals, and the Engine API on STATE_DIR/docker.sock, whose app asks
the Host for the local API and the role of the moment (`call`, `role`). Its loop runs one mode
at a time:

- inactive (no node.json): the local API on swarm.sock is a small router (`ping`, `info` with
  state "inactive", `swarm.init`, `swarm.join`; the rest refused with one sentence), until a
  node's state is made;
- in a swarm: the node's Daemon (daemon.py) runs, serving swarm.sock and the node API itself,
  until it stops. A signal ends the process; so does `swarm leave` on swarm.sock (the CLI's
  documented behaviour); a leave through the Engine API (`docker swarm leave`) takes the Host
  back to inactive, as dockerd.

`swarm.init` and `swarm.join` write the state as `swarm init/join` do (bootstrap.py: the files
in a worker thread), then ask the loop to change mode. Through the Engine API the request waits
until the Daemon serves (docker/cli asks for the join token and the node right after); on
swarm.sock it is answered first (the Daemon binds that socket anew) and the CLI waits for the
Daemon's ping. A Daemon that fails to start on a state just made clears it: the node is
inactive again and the caller gets the reason.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

import trio

from swarm.api import model
from swarm.api.errors import SwarmError
from swarm.daemon import bootstrap, interpreter
from swarm.daemon.config import NodeConfig, Paths, save_docker_api_settings, save_registry_settings
from swarm.daemon.daemon import Daemon, clear_state
from swarm.daemon.keys import REPLY_GRACE
from swarm.engineapi import swarmops
from swarm.engineapi.server import serve_router, serve_tcp
from swarm.engineapi.tls import TcpApi, tcp_api
from swarm.rpc.client import RPCClient
from swarm.rpc.messages import LOCAL_PEER, Peer, RPCError
from swarm.rpc.router import Router
from swarm.rpc.server import serve_unix

log = logging.getLogger(__name__)

START_TIMEOUT = 45.0     # seconds a node made through the Engine API has to start serving
LEAVE_TIMEOUT = 50.0     # seconds a leave through the Engine API waits for the node to stop (< app.CALL_TIMEOUT)
# The local API's answer, outside any swarm, to what needs one (the Engine API's is dockerd's).
NOT_IN_SWARM = ('this node is not part of a swarm: run "swarm init" or "swarm join" (its daemon is running '
                "and waits for one of them)")
SETTINGS = ("default_addr_pools", "default_addr_pool_mask_length", "data_path_port", "task_history_limit", "autolock")


@dataclass
class _Change:
    """A node's state just made by swarm.init or swarm.join, for the loop to start."""
    unlock_key: str | None
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


class InactiveRouter(Router):
    """The local API outside any swarm: a method it does not route is refused with `refusal`."""

    def __init__(self, refusal: str) -> None:
        super().__init__()
        self._refusal = refusal

    async def dispatch(self, peer: Peer, method: str, params: dict) -> Any:
        if method not in self.methods:
            raise RPCError("not_manager", self._refusal)
        return await super().dispatch(peer, method, params)


class _EngineRouter:
    """What the Engine API's server calls (`dispatch`): the Host's local API of the moment."""

    def __init__(self, host: Host) -> None:
        self._host = host

    async def dispatch(self, peer: Peer, method: str, params: dict) -> Any:
        return await self._host.call(method, params)


class Host:
    def __init__(self, state_dir: str, *, memory_journal: bool = False, unlock_key: str | None = None) -> None:
        self.paths = Paths(state_dir)
        self.memory_journal = memory_journal
        self.daemon: Daemon | None = None
        self._start_unlock_key = unlock_key        # for the Daemon of the node's state at start
        self._stopping = False
        self._wake = trio.Event()                  # ends the inactive mode: a change, or a stop
        self._inactive = trio.Event()              # set when the inactive mode serves
        self._change: _Change | None = None
        self._changing = trio.Lock()               # one init, join or leave at a time
        self._leave_then = "exit"                  # after a leave: "exit", or "inactive" (the Engine API's)
        self._local = self._inactive_router(NOT_IN_SWARM, engine=False)
        self._engine = self._inactive_router(swarmops.NO_SWARM, engine=True)

    # -- what the Engine API sees ------------------------------------------------------------
    def role(self) -> str:
        """The node's state for /_ping's Swarm header: "inactive", "locked", "manager" or "worker"."""
        d = self.daemon
        if d is None:
            return "inactive"
        if d.waiting_for_unlock:
            return "locked"
        return "manager" if d.manager is not None else "worker"

    async def call(self, method: str, params: dict) -> Any:
        """The Engine API's local call: the Daemon's local API, or the inactive one."""
        if method in ("swarm.init", "swarm.join"):
            return await self._engine.dispatch(LOCAL_PEER, method, params)
        d = self.daemon
        if d is None:
            return await self._engine.dispatch(LOCAL_PEER, method, params)
        if d.local_api is None:
            if d.waiting_for_unlock:
                return await self._while_locked(d, method, params)
            raise RPCError("unavailable", "this node's daemon is starting; retry")
        if method == "leave":
            return await self._leave_to_inactive(d, params)
        return await d.local_api.dispatch(LOCAL_PEER, method, params)

    async def _while_locked(self, d: Daemon, method: str, params: dict) -> Any:
        """A locked manager (autolock): /info says so, `docker swarm unlock` goes to the locked
        local API on swarm.sock (keys.wait_for_unlock), the rest is dockerd's refusal."""
        if method == "info":
            return {"state": "locked", "node_id": d.config.node_id, "hostname": d.config.hostname,
                    "state_dir": self.paths.root}
        if method != "unlock":
            raise RPCError("unavailable", swarmops.LOCKED)
        async with await RPCClient.connect_unix(self.paths.socket) as client:
            return await client.call("unlock", params)

    # -- the inactive local API ----------------------------------------------------------------
    def _inactive_router(self, refusal: str, *, engine: bool) -> InactiveRouter:
        router = InactiveRouter(refusal)

        async def ping(peer: Peer, params: dict) -> dict:
            return {"node_id": "", "ready": True, "state": "inactive"}

        async def info(peer: Peer, params: dict) -> dict:
            return {"state": "inactive", "hostname": socket.gethostname(), "state_dir": self.paths.root}

        async def leave(peer: Peer, params: dict) -> dict:
            raise RPCError("unavailable", swarmops.NOT_PART)

        router.route("ping", ping)
        router.route("info", info)
        router.route("leave", leave)
        router.route("swarm.init", functools.partial(self._swarm_init, wait=engine))
        router.route("swarm.join", functools.partial(self._swarm_join, wait=engine))
        return router

    def _refuse_if_in_swarm(self) -> None:
        if self.daemon is not None or os.path.exists(self.paths.node) or self._stopping:
            raise RPCError("unavailable", swarmops.SWARM_EXISTS)

    async def _swarm_init(self, peer: Peer, params: dict, *, wait: bool) -> dict:
        """Local API `swarm.init`: `swarm init` on this running daemon (docs/daemon-api.md)."""
        kwargs = init_kwargs(params)
        registries = registry_params(params)
        async with self._changing:
            self._refuse_if_in_swarm()
            tcp = await self._in_thread(docker_api_param, params)
            state = await self._in_thread(self._write_init, kwargs, registries, tcp)
            await self._start_node(state.get("unlock_key") or None, wait)
        return {"node_id": state["node_id"], "cluster_id": state["cluster_id"], "addr": state["addr"],
                "unlock_key": state.get("unlock_key") or ""}

    def _write_init(self, kwargs: dict, registries: dict, tcp: TcpApi | None) -> dict:
        state = bootstrap.init_state(self.paths.root, **kwargs)
        self._keep_settings(registries, tcp)
        return state

    def _keep_settings(self, registries: dict, tcp: TcpApi | None) -> None:
        """The node's registry and Engine API settings, kept with its state before it starts."""
        if registries:
            save_registry_settings(self.paths.root, registries.get("insecure"), registries.get("mirrors"))
        if tcp is not None:
            save_docker_api_settings(self.paths.root, tcp)

    async def _swarm_join(self, peer: Peer, params: dict, *, wait: bool) -> dict:
        """Local API `swarm.join`: `swarm join` on this running daemon (docs/daemon-api.md)."""
        args = join_args(params)
        registries = registry_params(params)
        async with self._changing:
            self._refuse_if_in_swarm()
            tcp = await self._in_thread(docker_api_param, params)
            try:
                joined = await bootstrap.join_node(self.paths.root, *args)
            except bootstrap.JoinError as exc:
                # a wrong token is the caller's input (dockerd: InvalidArgument); no manager answering is not
                raise RPCError("unavailable" if exc.code == "unavailable" else "bad_request", exc.message) from None
            except SwarmError as exc:
                raise RPCError("bad_request", exc.message) from None
            await trio.to_thread.run_sync(self._keep_settings, registries, tcp)
            await self._start_node(joined.get("unlock_key"), wait)
        return {"node_id": joined["node_id"], "role": joined["role"], "addr": joined["addr"],
                "hostname": joined["hostname"]}

    @staticmethod
    async def _in_thread(fn: Any, *args: Any) -> Any:
        """A bootstrap step (it writes files) in a worker thread; its refusal as the caller's error."""
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except SwarmError as exc:
            raise RPCError("bad_request", exc.message) from None

    async def _start_node(self, unlock_key: str | None, wait: bool) -> None:
        """Have the loop start the Daemon of the state just made; with `wait`, until it serves."""
        change = _Change(unlock_key)
        self._change = change
        self._wake.set()
        if not wait:
            return
        with trio.move_on_after(START_TIMEOUT):
            await change.done.wait()
        if change.error is not None:
            raise RPCError("internal", change.error)
        if not change.done.is_set():
            raise RPCError("unavailable", f"this node did not start serving within {START_TIMEOUT:g} s: "
                                          f"see {self.paths.log}")

    async def _leave_to_inactive(self, d: Daemon, params: dict) -> Any:
        """A leave through the Engine API: the node leaves and the process serves on, inactive
        (dockerd's `docker swarm leave`); the answer once the node is inactive."""
        async with self._changing:
            inactive = self._inactive          # set by the next inactive mode
            self._leave_then = "inactive"
            try:
                answer = await d.local_api.dispatch(LOCAL_PEER, "leave", params)
            except BaseException:
                self._leave_then = "exit"
                raise
            with trio.move_on_after(LEAVE_TIMEOUT):
                await inactive.wait()
        return answer

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        with open(self.paths.pid, "w") as f:
            f.write(str(os.getpid()))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals)
                # The TCP listener's setting is the node's (node.json), as it was at start.
                tcp = self._tcp_setting()
                await nursery.start(functools.partial(serve_router, tcp=tcp), _EngineRouter(self),
                                    self.paths.docker_socket, self.role)
                while not self._stopping:
                    if os.path.exists(self.paths.node):
                        async with trio.open_nursery() as node_scope:
                            if tcp is None and (given := self._tcp_setting()) is not None:
                                # given to init/join of this running daemon: served while the node is
                                await node_scope.start(serve_tcp, _EngineRouter(self), self.role, given)
                            await self._run_node()
                            node_scope.cancel_scope.cancel()
                    else:
                        await self._run_inactive()
                nursery.cancel_scope.cancel()
        finally:
            if os.path.exists(self.paths.pid):
                os.unlink(self.paths.pid)

    def _tcp_setting(self) -> Any:
        """The Engine API's TCP setting kept in node.json (None outside a swarm or if none)."""
        if not os.path.exists(self.paths.node):
            return None
        try:
            return NodeConfig.load(self.paths.root).docker_api_setting()
        except (OSError, ValueError, TypeError, KeyError):
            return None        # a node.json that does not load: the Daemon says why when it starts

    async def _run_inactive(self) -> None:
        log.info("this node is not part of a swarm: waiting for swarm init or swarm join")
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_unix, self._local, self.paths.socket)
            self._inactive.set()
            await self._wake.wait()
            await trio.sleep(REPLY_GRACE)      # a swarm.init on swarm.sock gets its answer before the socket goes
            nursery.cancel_scope.cancel()
        self._wake = trio.Event()
        self._inactive = trio.Event()

    async def _run_node(self) -> None:
        change, self._change = self._change, None
        unlock_key = change.unlock_key if change is not None else self._start_unlock_key
        self._start_unlock_key = None
        self._leave_then = "exit"
        if change is None:
            daemon = Daemon(self.paths.root, memory_journal=self.memory_journal, unlock_key=unlock_key)
            self.daemon = daemon
            try:
                await daemon.run()
            finally:
                self.daemon = None
        else:
            daemon = await self._run_new_node(change, unlock_key)
            if daemon is None:
                return                              # it could not start: inactive again
        if not (daemon.left and self._leave_then == "inactive"):
            self._stopping = True

    async def _run_new_node(self, change: _Change, unlock_key: str | None) -> Daemon | None:
        """Run the Daemon of a state just made; if it fails before serving, clear the state
        and tell the caller why (None). A failure once it serves ends the process, as for any node."""
        failed: Exception | None = None
        try:
            daemon = Daemon(self.paths.root, memory_journal=self.memory_journal, unlock_key=unlock_key)
        except Exception as exc:
            failed = exc
        else:
            self.daemon = daemon
            try:
                async with trio.open_nursery() as nursery:
                    try:
                        await nursery.start(daemon.run)
                    except Exception as exc:       # before it served: nothing else runs in this nursery
                        failed = exc
                    else:
                        change.done.set()
            finally:
                self.daemon = None
        if failed is None:
            return daemon
        log.error("the node just made could not start (%s); this node is not part of a swarm again", failed,
                  exc_info=failed)
        change.error = f"the node could not start: {failed}"
        await trio.to_thread.run_sync(clear_state, self.paths)
        change.done.set()
        return None

    def stop(self) -> None:
        self._stopping = True
        if self.daemon is not None:
            self.daemon.stop()
        self._wake.set()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self.stop()
                return


def _text(params: dict, key: str, *, required: bool = False) -> str | None:
    value = params.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RPCError("bad_request", f"{key} must be a non-empty string")
    return value.strip()


def _number(params: dict, key: str, default: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RPCError("bad_request", f"{key} must be a number of seconds")
    return float(value)


def init_kwargs(params: dict) -> dict:
    """bootstrap.init_state's arguments from `swarm.init` params, their types checked (the
    values are checked by init_state, as for `swarm init`)."""
    settings = params.get("settings") or {}
    if not isinstance(settings, dict) or any(k not in SETTINGS for k in settings):
        raise RPCError("bad_request", f"settings must be a map of {', '.join(SETTINGS)}")
    availability = params.get("availability") or "active"
    if availability not in model.AVAILABILITIES:
        raise RPCError("bad_request", f"availability must be active, pause or drain, not {availability!r}")
    return {"advertise_addr": _text(params, "advertise_addr", required=True),
            "listen_addr": _text(params, "listen_addr"), "hostname": _text(params, "hostname"),
            "cert_expiry": _number(params, "cert_expiry", model.DEFAULT_CERT_EXPIRY),
            "heartbeat": _number(params, "heartbeat", model.DEFAULT_HEARTBEAT), "force_new_cluster": False,
            "availability": availability, "settings": settings}


def join_args(params: dict) -> tuple:
    """bootstrap.join_node's arguments (after the state dir) from `swarm.join` params."""
    return (_text(params, "token", required=True), _text(params, "remote_addr", required=True),
            _text(params, "advertise_addr"), _text(params, "listen_addr"), _text(params, "hostname"))


def registry_params(params: dict) -> dict:
    """The registry settings given with swarm.init/join (checked by the CLI that sends them)."""
    out = {}
    for key, name in (("insecure_registries", "insecure"), ("registry_mirrors", "mirrors")):
        value = params.get(key)
        if value:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RPCError("bad_request", f"{key} must be a list of strings")
            out[name] = value
    return out


def docker_api_param(params: dict) -> TcpApi | None:
    """The Engine API's TCP setting given with swarm.init/join, checked as the CLI's flags are
    (its files loaded: it runs in a worker thread)."""
    given = params.get("docker_api")
    if given is None:
        return None
    if not isinstance(given, dict) or not isinstance(given.get("addr"), str) or not all(
            isinstance(given.get(k, ""), str) for k in ("tlscacert", "tlscert", "tlskey")):
        raise RPCError("bad_request", "docker_api must be a map of addr, tlscacert, tlscert, tlskey and insecure")
    return tcp_api(given["addr"], given.get("tlscacert") or None, given.get("tlscert") or None,
                   given.get("tlskey") or None, bool(given.get("insecure")))    # BadApiSetting: Host._in_thread


def main(state_dir: str, *, memory_journal: bool = False, unlock_key: str | None = None) -> int:
    logging.basicConfig(level=os.environ.get("SWARM_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from overlay.lb import check_nftables
    interpreter.tune()   # before the first allocation that matters

    try:
        check_nftables()  # the VIP and ingress load balancers are nftables rules
    except Exception as exc:
        raise SwarmError(f"nftables is required by the swarm daemon and is not usable here: {exc}") from None
    trio.run(Host(state_dir, memory_journal=memory_journal, unlock_key=unlock_key).run)
    return 0

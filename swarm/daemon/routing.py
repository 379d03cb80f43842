"""The daemon's two routers, as tables: which method goes where, and who may call it.

How this works. The local API (the CLI, over the unix socket) and the node
API (other nodes, over mutual TLS) send most methods to this manager's APIs
(control, services, networks, service logs) through one helper, `forward`:
on a manager the call goes to the API. On a node that is not (or no longer)
a manager, a local read the docs allow a worker goes on to a manager, any
other local call is refused with Docker's sentence (NOT_MANAGER), and a node
API call is answered "unavailable" (its caller tries another manager).

The node API's role matrix (docs/daemon-api.md, "Roles") is checked against
the caller's current role (`current_peer`), not only the one its certificate
was issued with. The manager's APIs raise ApiError; ApiRouter turns it into
an RPC error with the same code and sentence (the manager knows no wire).
"""
from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from swarm.api import model
from swarm.api.errors import ApiError
from swarm.daemon import distribution
from swarm.daemon.events import EventFeed
from swarm.daemon.transfers import registry_handlers
from swarm.manager.controlapi.nodes import READ_METHODS, WRITE_METHODS
from swarm.rpc.messages import Peer, RPCError
from swarm.rpc.router import Handler, Router

if TYPE_CHECKING:
    from swarm.daemon.daemon import Daemon

ANONYMOUS = "anonymous"
REMOVED = "removed"  # the role of a caller whose node record is gone: allowed nothing
LOGS_TIMEOUT = 30.0   # a worker's service.logs through a manager: a follow call waits up to logs.MAX_WAIT
# Docker's answer on a worker to any command that reads or changes cluster state.
NOT_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
               "Please run this command on a manager node or promote the current node to a manager.")
NO_LONGER_MANAGER = "this node is no longer a manager"
NOT_LOCKED = "swarm is not locked"

NETWORK_READS = ("network.ls", "network.inspect")
NETWORK_WRITES = ("network.create", "network.rm")
SERVICE_READS = ("service.ls", "service.ps", "service.inspect")
SERVICE_WRITES = ("service.create", "service.update", "service.rollback", "service.scale", "service.rm")
# secret.* and config.*: a manager's only (as services), never forwarded from a worker.
FILE_OBJECT_METHODS = {kind: tuple(f"{kind}.{verb}" for verb in ("create", "ls", "inspect", "rm", "update"))
                       for kind in ("secret", "config")}

Call = Callable[[dict], Awaitable[Any]]
Target = Callable[["Daemon"], "Call | None"]  # this manager's API for one method; None while not a manager


class ApiRouter(Router):
    """A Router whose handlers may raise the control API's own errors: they leave
    as RPC errors with the same code and sentence (the manager knows no wire)."""

    async def dispatch(self, peer: Peer, method: str, params: dict) -> Any:
        try:
            return await super().dispatch(peer, method, params)
        except ApiError as exc:
            raise RPCError(exc.code, exc.message) from None


class NodeRouter(ApiRouter):
    """A Router that checks each call against the caller's current role
    (`current`, which may also refuse with an RPCError), not only the one
    its certificate was issued with."""

    def __init__(self, current: Callable[[Peer], Peer]) -> None:
        super().__init__()
        self._current = current

    async def dispatch(self, peer: Peer, method: str, params: dict) -> Any:
        return await super().dispatch(self._current(peer), method, params)


def api(attr: str, method: str) -> Target:
    """`method` of the daemon's `attr` API (control, services, networks, secrets or configs)."""
    def target(d: Daemon) -> Call | None:
        found = getattr(d, attr)
        return None if found is None else functools.partial(found.handle, method)
    return target


def service_logs(d: Daemon) -> Call | None:
    return None if d.services is None else d.service_logs


def forward(d: Daemon, target: Target, *, node_api: bool = False, via: str | None = None,
            timeout: float = 5.0) -> Handler:
    """A handler: this manager's API if it is a manager; else, for the node API,
    "unavailable"; else the same read on a manager (`via`, the node API's
    method) if there is one; else NOT_MANAGER."""
    async def handler(peer: Peer, params: dict) -> Any:
        call = target(d)
        if call is not None:
            return await call(params)
        if node_api:
            raise RPCError("unavailable", NO_LONGER_MANAGER)
        if via is not None:
            return await d.call_any_manager(via, params, timeout=timeout)
        raise RPCError("not_manager", NOT_MANAGER)
    return handler


def local_router(d: Daemon) -> Router:
    """The local API (docs/daemon-api.md): what the CLI calls on its own node."""
    async def info(peer: Peer, params: dict) -> dict:
        return await d.info()

    router = ApiRouter()
    router.route("ping", d.ping)
    router.route("leave", d.leave)

    async def not_locked(peer: Peer, params: dict) -> dict:
        raise RPCError("bad_request", NOT_LOCKED)       # a locked manager answers with keys.LockedRouter
    router.route("unlock", not_locked)
    router.route("info", info)
    feed = EventFeed(lambda: d.manager)      # `docker events`: the store's changes, on a manager

    async def events(peer: Peer, params: dict) -> dict:
        return await feed.poll(params)
    router.route("events", events)
    for method in READ_METHODS + WRITE_METHODS:
        if method != "info":
            via = f"control.{method}" if method in READ_METHODS else None
            router.route(method, forward(d, api("control", method), via=via))
    for method in SERVICE_READS + SERVICE_WRITES:
        # Services (their specs carry environment) are a manager's to show, not a worker's.
        router.route(method, forward(d, api("services", method)))
    router.route("service.logs", forward(d, service_logs, via="control.service.logs", timeout=LOGS_TIMEOUT))
    for method in NETWORK_READS + NETWORK_WRITES:
        router.route(method, forward(d, api("networks", method)))
    for kind, methods in FILE_OBJECT_METHODS.items():
        for method in methods:
            router.route(method, forward(d, api(f"{kind}s", method)))
    for method, handler in d.image_handlers.items():
        router.route(method, handler)
    for method, handler in registry_handlers(d.registry).items():   # image.pull/push, login, logout
        router.route(method, handler)
    router.route("image.distribution", distribution.handler(distribution.client_for(d.registry)))
    for method, handler in d.volume_handlers.items():     # a node's own volumes: never forwarded
        router.route(method, handler)
    return router


def node_router(d: Daemon) -> Router:
    """The node API and who may call what (docs/daemon-api.md, "Roles").

    A worker gets what a worker node needs, as Docker's: its own membership
    (heartbeat, cert.renew, control.left), its dispatcher calls
    (tasks.assigned, tasks.status) and the reads the docs allow (info,
    node.ls, node.inspect); never services (their specs carry environment),
    their logs, networks, writes or Raft."""
    router = NodeRouter(functools.partial(current_peer, d))
    anyone = {ANONYMOUS, "manager", "worker"}
    members = {"manager", "worker"}
    managers = {"manager"}
    ms = d.membership
    router.route("ca.bundle", ms.ca_bundle, roles=anyone)
    router.route("join", ms.join, roles=anyone)
    router.route("heartbeat", ms.heartbeat, roles=members)
    router.route("cert.renew", ms.cert_renew, roles=members)
    router.route("raft.join", ms.raft_join, roles=managers)
    router.route("raft.remove", ms.raft_remove, roles=managers)
    router.route("control.left", ms.node_left, roles=members)
    for method in READ_METHODS:
        router.route(f"control.{method}", forward(d, api("control", method), node_api=True), roles=members)
    for method in WRITE_METHODS:
        router.route(f"control.{method}", forward(d, api("control", method), node_api=True), roles=managers)
    for method in SERVICE_READS:
        router.route(f"control.{method}", forward(d, api("services", method), node_api=True), roles=managers)
    router.route("control.service.logs", forward(d, service_logs, node_api=True), roles=managers)
    for method in NETWORK_READS:
        router.route(f"control.{method}", forward(d, api("networks", method), node_api=True), roles=managers)
    for method, handler in d.dispatcher_routes().items():
        router.route(method, handler, roles=members)
    router.route("task.logs", d.task_logs, roles=managers)
    router.route("node.check_spec", d.check_spec, roles=managers)
    return router


def current_peer(d: Daemon, peer: Peer) -> Peer:
    """The caller with the role its node record gives it now.

    A certificate's OU is the role at issue time: a demoted manager keeps a
    valid manager certificate until it renews (and could keep a copy). So
    on a manager a caller is a manager only if both its certificate and
    its record say so, a worker if it has a record, and nothing without
    one (a removed node). A worker daemon holds no records: it trusts the
    certificate for the manager-only calls it serves (task.logs)."""
    m = d.manager
    if peer.role == ANONYMOUS or m is None:
        return peer
    if m.raft.get(model.CLUSTER, model.CLUSTER_ID) is None:
        raise RPCError("unavailable", "this manager has not received the cluster's state yet; retry")
    rec = m.raft.get(model.NODE, peer.node_id)
    if rec is None:
        return Peer(peer.node_id, REMOVED, peer.cluster_id)
    stored = model.decode(rec.data).get("role")
    role = "manager" if peer.role == "manager" and stored == "manager" else "worker"
    return Peer(peer.node_id, role, peer.cluster_id)

"""The node daemon: one process per node, a trio main loop.

How this works. The daemon always serves the local API on STATE_DIR/swarm.sock
and runs the agent loop (heartbeats to the leader, certificate renewal, role
changes). A manager additionally runs, inside one cancel scope it can drop
on demotion: its RaftNode, the node API over mutual TLS on its listen
address, and the dispatcher. A worker answers read commands by asking a
manager and refuses the rest with one sentence.

Role changes follow the node record: when a heartbeat answer says the node's
role changed, the agent first gets a certificate for the new role, then (to
manager) asks to join Raft and starts the manager scope, or (to worker)
stops it and deletes its Raft data.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import signal
import ssl
import time
from typing import Any, Callable

import trio

from raft.node import RaftConfig, RaftNode
from raft.store import Op
from raft.transport import TlsSettings
from swarm.api import model
from swarm.ca import pki
from swarm.daemon import logs
from swarm.api.errors import ApiError, SwarmError
from swarm.daemon.config import NodeConfig, Paths, load_cert_into, split_addr
from swarm.agent.agent import Agent
from swarm.manager.controlapi.nodes import HAND_OVER_TIME, READ_METHODS, WRITE_METHODS, ControlAPI, leave_refusal
from swarm.manager.reconciler import Reconciler
from swarm.runtime.images import MAX_IMPORT_BYTES, ImageStore, run_cancellable
from swarm.runtime.runc import Runtime
from swarm.manager.controlapi.services import ServiceAPI
from swarm.manager.allocator import INGRESS_SUBNET, NETWORK, NetworkAPI, new_network
from swarm.manager.membership import Manager, utcnow
from swarm.rpc.core import ClientPool, RPCClient, RPCError, Router, Peer, serve_tls, serve_unix

log = logging.getLogger(__name__)
ANONYMOUS = "anonymous"
LOGS_TIMEOUT = 30.0   # a worker's service.logs through a manager: a follow call waits up to logs.MAX_WAIT
REMOVED = "removed"  # the role of a caller whose node record is gone: allowed nothing
# Docker's answer on a worker to any command that reads or changes cluster state.
NOT_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
               "Please run this command on a manager node or promote the current node to a manager.")


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


class Daemon:
    def __init__(self, state_dir: str, *, memory_journal: bool = False) -> None:
        self.paths = Paths(state_dir)
        self.memory_journal = memory_journal       # UNSAFE: see swarm daemon --unsafe-memory-journal
        self.config = NodeConfig.load(state_dir)
        ca, cert, key = (self.paths.read(p) for p in (self.paths.ca, self.paths.cert, self.paths.key))
        self.ca_pem = ca
        self.cluster_id = self.config.cluster_id
        self.client_ctx = pki.client_ssl_context(cert, key, ca)
        self.server_ctx = pki.server_ssl_context(cert, key, ca)
        self.server_ctx.verify_mode = ssl.CERT_OPTIONAL  # a joining node has no certificate yet
        self.raft_server_ctx = pki.server_ssl_context(cert, key, ca)
        self.raft_client_ctx = pki.client_ssl_context(cert, key, ca)
        self.cert_identity = pki.identity_from_cert(cert)
        self.manager: Manager | None = None
        self.control: ControlAPI | None = None
        self.services: ServiceAPI | None = None
        self.networks: NetworkAPI | None = None
        self.reconciler: Reconciler | None = None
        self.images = ImageStore(os.path.join(self.paths.root, "images"), max_import_bytes=max_import_size())
        self.runtime = Runtime(os.path.join(self.paths.root, "tasks"), self.images)
        self.agent = Agent(self.config.node_id, self.runtime, self._agent_call,
                           vtep=split_addr(self.config.addr)[0])
        self._manager_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._pool: ClientPool | None = None   # connections to managers, kept while the daemon runs
        self._ready = False
        self._stop = trio.Event()
        self._leaving = False
        self._handing_over = False  # a manager's `leave --force` is under way
        self._beat_lock = trio.Lock()  # orders heartbeats before the `control.left` of a leave
        self._leader_addr: str | None = None

    # -- identity checks -------------------------------------------------------------
    def _revoked(self, serial: int) -> bool:
        m = self.manager
        return m is not None and m.raft.get(model.REVOKED, format(serial, "x")) is not None

    def identify_rpc(self, ssl_stream: Any) -> Peer:
        if ssl_stream.getpeercert(binary_form=True) is None:
            return Peer("", ANONYMOUS, "")
        ident = pki.peer_identity(ssl_stream)
        if ident.cluster_id != self.cluster_id:
            raise PermissionError("certificate of another cluster")
        if self._revoked(ident.serial):
            raise PermissionError(f"certificate of removed node {ident.node_id}")
        return Peer(ident.node_id, ident.role, ident.cluster_id)

    def identify_raft(self, ssl_object: Any) -> str:
        ident = pki.peer_identity(ssl_object)
        if ident.cluster_id != self.cluster_id:
            raise PermissionError(f"certificate of {ident.node_id} belongs to another cluster")
        if ident.role != "manager":
            raise PermissionError(f"{ident.node_id} presents a {ident.role} certificate; Raft needs a manager")
        if self._revoked(ident.serial):
            raise PermissionError(f"certificate of removed node {ident.node_id}")
        return ident.node_id

    # -- calling other nodes ------------------------------------------------------------
    async def call_manager(self, addr: str, method: str, params: dict | None = None, timeout: float = 5.0) -> Any:
        host, port = split_addr(addr)
        if self._pool is None:  # before the daemon runs (tests call nodes directly)
            async with await RPCClient.connect_tls(host, port, self.client_ctx, timeout=timeout) as client:
                return await client.call(method, params or {}, timeout=timeout)
        return await self._pool.call(host, port, method, params, timeout)

    async def _call_manager_api(self, addr: str, method: str, params: dict | None = None,
                                timeout: float = 5.0) -> Any:
        """call_manager for the manager's own code: wire errors become ApiErrors."""
        try:
            return await self.call_manager(addr, method, params, timeout)
        except RPCError as exc:
            raise ApiError(exc.code, exc.message) from None

    async def call_any_manager(self, method: str, params: dict | None = None, timeout: float = 5.0) -> Any:
        addrs = list(self.config.managers) or []
        if self._leader_addr and self._leader_addr not in addrs:
            addrs.insert(0, self._leader_addr)
        random.shuffle(addrs)
        last: RPCError | None = None
        for addr in addrs:
            try:
                return await self.call_manager(addr, method, params, timeout)
            except RPCError as exc:
                if exc.code == "forbidden" and method.startswith("control."):
                    # The managers refuse this node's role a control method (the
                    # node API's role matrix): say so as Docker does.
                    raise RPCError("not_manager", NOT_MANAGER) from None
                if exc.code not in ("unavailable", "deadline"):
                    raise
                last = exc
        raise last or RPCError("unavailable", "no manager of this swarm is known to this node")

    # -- local API ------------------------------------------------------------------------
    def local_router(self) -> Router:
        router = ApiRouter()
        router.route("ping", self._ping)
        router.route("leave", self._leave)
        for method in READ_METHODS + WRITE_METHODS:
            router.route(method, self._local_control(method))
        for method in SERVICE_READS + SERVICE_WRITES:
            router.route(method, self._local_service(method))
        router.route("service.logs", self._local_logs)
        for method in NETWORK_READS + NETWORK_WRITES:
            router.route(method, self._local_network(method))
        for method in ("image.import", "image.load", "image.ls", "image.rm"):
            router.route(method, self._image(method))
        return router

    def _local_service(self, method: str):
        async def handler(peer: Peer, params: dict) -> Any:
            if self.services is not None:
                return await self.services.handle(method, params)
            # Services (their specs carry environment) are a manager's to show, not a worker's.
            raise RPCError("not_manager", NOT_MANAGER)
        return handler

    def _local_network(self, method: str):
        async def handler(peer: Peer, params: dict) -> Any:
            if self.networks is not None:
                return await self.networks.handle(method, params)
            raise RPCError("not_manager", NOT_MANAGER)
        return handler

    async def _local_logs(self, peer: Peer, params: dict) -> Any:
        if self.services is None:
            return await self.call_any_manager("control.service.logs", params, timeout=LOGS_TIMEOUT)
        return await self._service_logs(params)

    async def _service_logs(self, params: dict) -> dict:
        """One bounded step of `service logs` (swarm/daemon/logs.py): fan out to the nodes, merge by time."""
        services, manager = self.services, self.manager

        async def tasks_of(ref: str) -> list[dict]:
            return await services.ps({"refs": [ref]})

        async def read_node(node_id: str, request: dict) -> dict:
            if node_id == self.config.node_id:
                return await logs.read_tasks(self.runtime, request)
            addr = manager.nodes().get(node_id, {}).get("addr", "")
            return await self.call_manager(addr, "task.logs", request, timeout=logs.NODE_TIMEOUT)

        return await logs.service_logs(logs.LogsSource(tasks_of, manager.nodes, read_node), params)

    async def _task_logs(self, peer: Peer, params: dict) -> dict:
        return await logs.read_tasks(self.runtime, params)

    def _image(self, method: str):
        async def handler(peer: Peer, params: dict) -> Any:
            try:
                if method == "image.import":
                    image_id = await run_cancellable(self.images.import_rootfs, params["path"], params["ref"])
                    return {"id": image_id, "ref": params["ref"]}
                if method == "image.load":
                    return {"refs": await run_cancellable(self.images.load_archive, params["path"])}
                if method == "image.ls":
                    return self.images.list()
                removed = []
                for ref in params.get("refs", []):
                    self.images.remove(ref)
                    removed.append(ref)
                return removed
            except (OSError, ValueError) as exc:
                raise RPCError("bad_request", str(exc)) from None
            except Exception as exc:
                if type(exc).__name__ == "ImageError":
                    raise RPCError("bad_request", str(exc)) from None
                raise
        return handler

    async def _ping(self, peer: Peer, params: dict) -> dict:
        return {"node_id": self.config.node_id, "ready": self._ready}

    def _local_control(self, method: str):
        async def handler(peer: Peer, params: dict) -> Any:
            if method == "info":
                return await self._info()
            if self.control is not None:
                return await self.control.handle(method, params)
            if method in READ_METHODS:
                return await self.call_any_manager(f"control.{method}", params)
            raise RPCError("not_manager", NOT_MANAGER)
        return handler

    async def _info(self) -> dict:
        info = {
            "node_id": self.config.node_id, "hostname": self.config.hostname, "role": self.config.role,
            "cluster_id": self.cluster_id, "addr": self.config.addr, "state_dir": self.paths.root,
            "cert_expiry": model.timestamp(self.cert_identity.not_after),
            "heartbeat_period": self.config.heartbeat, "manager_addrs": list(self.config.managers),
        }
        try:
            cluster = await (self.control.info({}) if self.control else self.call_any_manager("control.info"))
        except (RPCError, ApiError) as exc:
            info["error"] = exc.message
        else:
            info.update({k: cluster[k] for k in ("leader", "managers", "nodes", "manager_addrs")})
            if self.control is not None:
                info["raft"] = cluster["raft"]
        return info

    async def _leave(self, peer: Peer, params: dict) -> dict:
        """Leave the swarm. A manager must be forced (Docker's rule) and then
        either leaves completely (demoted by the leader, out of Raft, state
        cleared) or stays the manager it was, with one sentence of why."""
        force = bool(params.get("force"))
        if self._leaving or self._handing_over:
            raise RPCError("conflict", "this node is already leaving the swarm")
        told: str | None = None  # the manager to tell that this node left
        if self.manager is not None:
            m = self.manager
            managers = [n for n in m.nodes().values() if n["role"] == "manager"]
            reachable = m.reachable() & {n["id"] for n in managers}
            if not force:
                raise RPCError("conflict", leave_refusal(len(managers), len(reachable | {self.config.node_id})))
            if len(managers) > 1:
                # The agent must not act on the role change this causes (renew,
                # stop Raft) while the node leaves; it resumes if the leave fails.
                self._handing_over = True
                try:
                    told = await m.hand_over(trio.current_time() + HAND_OVER_TIME)
                except (RPCError, ApiError) as exc:
                    self._handing_over = False
                    raise RPCError(exc.code, f"this node did not leave the swarm and is still a manager: "
                                             f"{exc.message}") from None
        self._leaving = True
        try:
            # After any heartbeat in flight: its "ready" must not land after "left".
            async with self._beat_lock:
                if told is not None:
                    await self.call_manager(told, "control.left", {}, timeout=2)
                elif self.manager is None:
                    await self.call_any_manager("control.left", {}, timeout=2)
        except RPCError:
            pass  # the managers notice the missing heartbeats
        self._nursery.start_soon(self._stop_after_answer)
        return {"left": True}

    async def _stop_after_answer(self) -> None:
        await trio.sleep(0.2)  # let the answer to `leave` reach the CLI first
        self._stop.set()

    # -- node API (TLS) ---------------------------------------------------------------------
    def node_router(self) -> Router:
        """The node API and who may call what (docs/daemon-api.md, "Roles").

        A worker gets what a worker node needs, as Docker's: its own membership
        (heartbeat, cert.renew, control.left), its dispatcher calls
        (tasks.assigned, tasks.status) and the reads the docs allow (info,
        node.ls, node.inspect); never services (their specs carry environment),
        their logs, networks, writes or Raft."""
        router = NodeRouter(self._current_peer)
        anyone = {ANONYMOUS, "manager", "worker"}
        members = {"manager", "worker"}
        managers = {"manager"}
        router.route("ca.bundle", self._ca_bundle, roles=anyone)
        router.route("join", self._join, roles=anyone)
        router.route("heartbeat", self._heartbeat, roles=members)
        router.route("cert.renew", self._cert_renew, roles=members)
        router.route("raft.join", self._raft_join, roles=managers)
        router.route("raft.remove", self._raft_remove, roles=managers)
        router.route("control.left", self._node_left, roles=members)
        for method in READ_METHODS:
            router.route(f"control.{method}", self._remote_control(method), roles=members)
        for method in WRITE_METHODS:
            router.route(f"control.{method}", self._remote_control(method), roles=managers)
        for method in SERVICE_READS:
            router.route(f"control.{method}", self._remote_service(method), roles=managers)
        router.route("control.service.logs", self._remote_logs, roles=managers)
        for method in NETWORK_READS:
            router.route(f"control.{method}", self._remote_network(method), roles=managers)
        router.route("tasks.assigned", self._tasks_assigned, roles=members)
        router.route("tasks.status", self._tasks_status, roles=members)
        router.route("task.logs", self._task_logs, roles=managers)
        return router

    def _current_peer(self, peer: Peer) -> Peer:
        """The caller with the role its node record gives it now.

        A certificate's OU is the role at issue time: a demoted manager keeps a
        valid manager certificate until it renews (and could keep a copy). So
        on a manager a caller is a manager only if both its certificate and
        its record say so, a worker if it has a record, and nothing without
        one (a removed node). A worker daemon holds no records: it trusts the
        certificate for the manager-only calls it serves (task.logs)."""
        m = self.manager
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

    def _remote_service(self, method: str):
        async def handler(peer: Peer, params: dict) -> Any:
            if self.services is None:
                raise RPCError("unavailable", "this node is no longer a manager")
            return await self.services.handle(method, params)
        return handler

    def _remote_network(self, method: str):
        async def handler(peer: Peer, params: dict) -> Any:
            if self.networks is None:
                raise RPCError("unavailable", "this node is no longer a manager")
            return await self.networks.handle(method, params)
        return handler

    async def _remote_logs(self, peer: Peer, params: dict) -> Any:
        if self.services is None:
            raise RPCError("unavailable", "this node is no longer a manager")
        return await self._service_logs(params)

    async def _tasks_assigned(self, peer: Peer, params: dict) -> dict:
        if self.reconciler is None:
            raise RPCError("unavailable", "this node is no longer a manager")
        return await self.reconciler.assigned(peer.node_id, params)

    async def _tasks_status(self, peer: Peer, params: dict) -> dict:
        if self.reconciler is None:
            raise RPCError("unavailable", "this node is no longer a manager")
        return await self.reconciler.status(peer.node_id, params)

    async def _agent_call(self, method: str, params: dict, timeout: float) -> Any:
        if self._leader_addr:
            try:
                return await self.call_manager(self._leader_addr, method, params, timeout)
            except RPCError as exc:
                if exc.code not in ("unavailable", "deadline"):
                    raise
        return await self.call_any_manager(method, params, timeout)

    def _need_manager(self) -> Manager:
        if self.manager is None:
            raise RPCError("unavailable", "this node is no longer a manager")
        return self.manager

    async def _ca_bundle(self, peer: Peer, params: dict) -> dict:
        return {"ca_pem": self.ca_pem}

    async def _join(self, peer: Peer, params: dict) -> dict:
        try:
            return await self._need_manager().join(params)
        except KeyError as exc:
            raise RPCError("bad_request", f"join request lacks {exc}") from None

    async def _heartbeat(self, peer: Peer, params: dict) -> dict:
        return await self._need_manager().heartbeat(peer.node_id, params)

    def _node_facts(self) -> dict:
        """What the scheduler needs to know about this node."""
        return {"resources": node_resources(), "images": sorted(i["ref"] for i in self.images.list())}

    async def _node_left(self, peer: Peer, params: dict) -> dict:
        m = self._need_manager()
        await m.set_status(peer.node_id, "down", "left the swarm")
        return {}

    async def _cert_renew(self, peer: Peer, params: dict) -> dict:
        m = self._need_manager()
        if not isinstance(params.get("csr_pem"), bytes):
            raise RPCError("bad_request", "cert.renew needs a certificate signing request (csr_pem, PEM bytes)")
        node = m.nodes().get(peer.node_id)
        if node is None:
            raise RPCError("forbidden", "this node has been removed from the swarm")
        cert = m.issue(params["csr_pem"], peer.node_id, node["role"])
        serial = format(pki.identity_from_cert(cert).serial, "x")
        await m.modify_node(peer.node_id, lambda n: dict(
            n, cert_serial=serial, old_serials=([n["cert_serial"]] + n.get("old_serials", []))[:8]))
        return {"cert_pem": cert}

    async def _raft_join(self, peer: Peer, params: dict) -> dict:
        m = self._need_manager()
        node = m.nodes().get(peer.node_id)
        if node is None or node["role"] != "manager":
            raise RPCError("forbidden", "only a node promoted to manager may join Raft")
        raft_addr = str(params["raft_addr"])
        await m.modify_node(peer.node_id, lambda n: None if n.get("raft_addr") == raft_addr
                            else dict(n, raft_addr=raft_addr))
        return {"raft_members": await m.add_raft_member(peer.node_id, raft_addr)}

    async def _raft_remove(self, peer: Peer, params: dict) -> dict:
        return {"raft_members": await self._need_manager().remove_raft_member(str(params["node_id"]))}

    def _remote_control(self, method: str):
        async def handler(peer: Peer, params: dict) -> Any:
            if self.control is None:
                raise RPCError("unavailable", "this node is no longer a manager")
            return await self.control.handle(method, params)
        return handler

    # -- manager scope ----------------------------------------------------------------------
    def _raft_config(self, peers: list[str]) -> RaftConfig:
        return RaftConfig(
            node_id=self.config.node_id, address=self.config.raft_addr, data_dir=self.paths.raft,
            tls=TlsSettings(self.raft_server_ctx, self.raft_client_ctx, self.identify_raft), peers=peers,
            memory_journal=self.memory_journal,
        )

    async def _run_manager(self, peers: list[str], *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._manager_scope = scope
            async with trio.open_nursery() as nursery:
                raft = RaftNode(self._raft_config(peers))
                await nursery.start(raft.run)
                self.manager = Manager(raft, self.config.node_id, self._call_manager_api, nursery)
                await self._bootstrap_cluster()
                with trio.move_on_after(10):
                    # Answer commands once this manager holds the cluster's state
                    # (loaded from its snapshot or received from the leader).
                    while raft.get(model.CLUSTER, model.CLUSTER_ID) is None:
                        await trio.sleep(0.02)
                self.control = ControlAPI(self.manager)
                self.services = ServiceAPI(self.manager)
                self.networks = NetworkAPI(self.manager)
                self.reconciler = Reconciler(self.manager)
                nursery.start_soon(self.manager.run_dispatcher)
                nursery.start_soon(self.reconciler.run)
                task_status.started()
        self.manager = None
        self.control = None
        self.services = None
        self.networks = None
        self.reconciler = None

    async def _bootstrap_cluster(self) -> None:
        """First start of `swarm init`: commit the cluster and this node's record."""
        if not os.path.exists(self.paths.bootstrap):
            return
        with open(self.paths.bootstrap) as f:
            boot = json.load(f)
        raft = self.manager.raft
        with trio.fail_after(15):
            while not raft.is_leader():
                await trio.sleep(0.02)
        if raft.get(model.CLUSTER, model.CLUSTER_ID) is None:
            cluster = dict(boot["cluster"], ca_cert_pem=boot["cluster"]["ca_cert_pem"].encode(),
                           ca_key_pem=boot["cluster"]["ca_key_pem"].encode())
            node = model.new_node(self.config.node_id, self.config.hostname, "manager", self.config.addr,
                                  self.config.raft_addr, self.cert_identity.serial, utcnow())
            ingress = new_network("ingress", INGRESS_SUBNET, 4096, ingress=True)
            result = await raft.commit([Op.create(model.CLUSTER, model.CLUSTER_ID, model.encode(cluster)),
                                        Op.create(model.NODE, self.config.node_id, model.encode(node)),
                                        Op.create(NETWORK, ingress["id"], model.encode(ingress))])
            if not result.ok:
                raise RuntimeError(f"could not create the cluster: {result.error}")
        os.unlink(self.paths.bootstrap)

    async def _become_manager(self, peers: list[str]) -> None:
        await self._nursery.start(self._run_manager, peers)

    async def _become_worker(self) -> None:
        if self._manager_scope is not None:
            self._manager_scope.cancel()
            self._manager_scope = None
        with trio.fail_after(10):
            while self.manager is not None:
                await trio.sleep(0.02)
        shutil.rmtree(self.paths.raft, ignore_errors=True)

    # -- agent ----------------------------------------------------------------------------
    async def _renew_certificate(self) -> None:
        key = pki.new_node_key()
        result = await self.call_any_manager("cert.renew", {"csr_pem": pki.make_csr(key, self.config.node_id)})
        cert, key_pem = result["cert_pem"], pki.key_to_pem(key)
        pki.write_private(self.paths.key, key_pem)
        pki.write_public(self.paths.cert, cert)
        for ctx in (self.client_ctx, self.server_ctx, self.raft_server_ctx, self.raft_client_ctx):
            load_cert_into(ctx, cert, key_pem)
        if self._pool is not None:
            await self._pool.reset()  # kept connections still present the old certificate
        self.cert_identity = pki.identity_from_cert(cert)
        log.info("renewed this node's certificate (%s, expires %s)", self.cert_identity.role,
                 self.cert_identity.not_after)

    def _renewal_due(self, rng: random.Random) -> float:
        now = utcnow()
        delay = pki.renewal_delay(self.cert_identity.not_before, self.cert_identity.not_after, now, rng)
        return time.monotonic() + delay

    async def _change_role(self, role: str) -> None:
        log.info("this node's role changed to %s", role)
        await self._renew_certificate()
        if role == "manager":
            result = await self.call_any_manager("raft.join", {"raft_addr": self.config.raft_addr}, timeout=20)
            self.config.role = "manager"
            self.config.save(self.paths.root)
            await self._become_manager([m for m in result["raft_members"]
                                        if not m.startswith(self.config.node_id + "@")])
        else:
            self.config.role = "worker"
            self.config.save(self.paths.root)
            await self._become_worker()

    async def run_agent(self) -> None:
        rng = random.Random()
        renew_at = self._renewal_due(rng)
        while True:
            period = self.config.heartbeat
            try:
                async with self._beat_lock:
                    if self._leaving:
                        return  # told the managers it left: a beat now would mark it ready again
                    target = self._leader_addr or None
                    facts = self._node_facts()
                    if target is None:
                        answer = await self.call_any_manager("heartbeat", facts, timeout=max(1.0, period))
                    else:
                        answer = await self.call_manager(target, "heartbeat", facts, timeout=max(1.0, period))
            except RPCError as exc:
                if exc.code == "not_leader":
                    self._leader_addr = exc.message or None
                    await trio.sleep(0.05 if exc.message else period / 2)
                    continue
                if exc.code == "forbidden":
                    log.error("the swarm refused this node: %s", exc.message)
                else:
                    log.info("heartbeat failed: %s", exc.message)
                self._leader_addr = None
                await trio.sleep(period / 2)
                continue
            except OSError as exc:
                # Out of descriptors (EMFILE) while reading this node's facts: a
                # passing shortage must cost one heartbeat, not the daemon.
                log.warning("heartbeat not sent: %s", exc)
                await trio.sleep(period / 2)
                continue
            if target is None:
                self._leader_addr = None
            if answer["managers"] != self.config.managers or answer["period"] != self.config.heartbeat:
                self.config.managers = answer["managers"]
                self.config.heartbeat = answer["period"]
                self.config.save(self.paths.root)
            if answer["role"] != self.config.role and not (self._handing_over or self._leaving):
                try:
                    await self._change_role(answer["role"])
                except RPCError as exc:
                    log.warning("role change to %s failed, will retry: %s", answer["role"], exc.message)
            if time.monotonic() >= renew_at:
                try:
                    await self._renew_certificate()
                    renew_at = self._renewal_due(rng)
                except RPCError as exc:
                    log.warning("certificate renewal failed, will retry: %s", exc.message)
            await trio.sleep(period)

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with open(self.paths.pid, "w") as f:
            f.write(str(os.getpid()))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._pool = ClientPool(self.client_ctx, nursery)
                if self.config.role == "manager":
                    await self._become_manager(self._initial_peers())
                host, port = split_addr(self.config.listen_addr)
                await nursery.start(serve_tls, self.node_router(), host, port, self.server_ctx, self.identify_rpc)
                # local calls may import large images: allow them more than the node API's cap
                await nursery.start(functools.partial(serve_unix, self.local_router(), self.paths.socket,
                                                      max_deadline=900.0))
                nursery.start_soon(self.run_agent)
                nursery.start_soon(self.agent.run)
                nursery.start_soon(self._watch_signals)
                self._ready = True
                task_status.started()
                await self._stop.wait()
                if self._leaving:
                    await self._remove_everything()
                nursery.cancel_scope.cancel()
        finally:
            if os.path.exists(self.paths.pid):
                os.unlink(self.paths.pid)
            if self._leaving:
                clear_state(self.paths)

    async def _remove_everything(self) -> None:
        """Leaving: stop this node's containers and remove its networking."""
        with trio.move_on_after(60):
            for task_id in await trio.to_thread.run_sync(self.runtime.list):
                try:
                    await self.runtime.stop_async(task_id, 2.0)
                    await trio.to_thread.run_sync(self.runtime.remove, task_id)
                except Exception as exc:
                    log.warning("could not remove container %s: %s", task_id, exc)
            if self.agent.net is not None:
                try:
                    await self.agent.net.teardown()
                except Exception as exc:
                    log.warning("could not remove this node's networking: %s", exc)

    def _initial_peers(self) -> list[str]:
        return [m for m in read_members(self.paths.raft) if not m.startswith(self.config.node_id + "@")]

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self._stop.set()
                return


NETWORK_READS = ("network.ls", "network.inspect")
NETWORK_WRITES = ("network.create", "network.rm")
SERVICE_READS = ("service.ls", "service.ps", "service.inspect")
SERVICE_WRITES = ("service.create", "service.update", "service.scale", "service.rm")


def max_import_size() -> int:
    """SWARM_MAX_IMPORT_SIZE (a size like 20g or 512m): what one image import may expand to."""
    text = os.environ.get("SWARM_MAX_IMPORT_SIZE", "")
    if not text:
        return MAX_IMPORT_BYTES
    from swarm.api.units import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        raise SwarmError(f"SWARM_MAX_IMPORT_SIZE: {exc}") from None


def node_resources() -> dict:
    memory = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"nano_cpus": (os.cpu_count() or 1) * 1_000_000_000, "memory_bytes": memory}


def read_members(raft_dir: str) -> list[str]:
    import msgpack

    try:
        with open(os.path.join(raft_dir, "members"), "rb") as f:
            return [str(m) for m in msgpack.unpackb(f.read(), raw=False)]
    except FileNotFoundError:
        return []


def clear_state(paths: Paths) -> None:
    """What `swarm leave` leaves behind: nothing of the swarm."""
    for path in (paths.raft, paths.certs):
        shutil.rmtree(path, ignore_errors=True)
    for path in (paths.node, paths.bootstrap, paths.socket):
        if os.path.exists(path):
            os.unlink(path)


def main(state_dir: str, *, memory_journal: bool = False) -> int:
    logging.basicConfig(level=os.environ.get("SWARM_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from overlay.lb import check_nftables

    try:
        check_nftables()  # the VIP and ingress load balancers are nftables rules
    except Exception as exc:
        raise SwarmError(f"nftables is required by the swarm daemon and is not usable here: {exc}") from None
    daemon = Daemon(state_dir, memory_journal=memory_journal)
    trio.run(daemon.run)
    return 0

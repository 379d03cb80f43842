"""The node daemon: what a node in a swarm runs, in the daemon process (host.py, which owns
the process, its signals and the Engine API on docker.sock, and runs a Daemon while the node
is in a swarm).

How this works. The daemon always serves the local API on STATE_DIR/swarm.sock
and runs the agent loop (heartbeats to the leader, certificate renewal, role
changes: swarm/daemon/nodeloop.py). A manager additionally runs, inside one
cancel scope it can drop on demotion: its RaftNode, the node API over mutual
TLS on its listen address, and the dispatcher. A worker answers read commands
by asking a manager and refuses the rest with one sentence (the routers:
swarm/daemon/routing.py).

Role changes follow the node record: when a heartbeat answer says the node's
role changed, the agent first gets a certificate for the new role, then (to
manager) asks to join Raft and starts the manager scope, or (to worker)
stops it and deletes its Raft data.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import ssl
from typing import Any

import trio

from raft.cipher import DataCipher
from raft.node import RaftConfig, RaftNode
from raft.store import Op
from raft.transport import TlsSettings
from swarm.api import logdriver, logview, model
from swarm.api.refs import resolve_ref
from swarm.ca import keyring, pki
from swarm.daemon import keys, logs, routing, speccheck
from swarm.api.errors import ApiError
from swarm.daemon.config import NodeConfig, Paths, split_addr
from swarm.daemon.images import image_handlers, max_import_size, task_image_ids
from swarm.daemon.members import MembershipRPC
from swarm.daemon.registry import NodeRegistry, registry_config
from swarm.daemon.nodeloop import NodeLoop
from swarm.daemon.routing import ANONYMOUS
from swarm.daemon.volumes import volume_handlers
from swarm.agent.agent import Agent
from swarm.manager.controlapi.nodes import ControlAPI
from swarm.manager.dispatcher import Dispatcher
from swarm.manager.reconciler import Reconciler
from swarm.runtime.errors import ImageError
from swarm.runtime.images import ImageStore
from swarm.runtime.runc import Runtime
from swarm.manager.controlapi.services import ServiceAPI
from swarm.manager.scheduler import NodeInfo
from swarm.daemon.usercheck import image_user_checker
from overlay.ipam import Allocator
from swarm.manager.allocator import NETWORK, new_network, pool_subnet
from swarm.manager.controlapi.networks import NetworkAPI
from swarm.manager.controlapi.secrets import FileObjectAPI
from swarm.manager.membership import Manager, utcnow
from swarm.rpc.client import ClientPool
from swarm.rpc.messages import Peer, RPCError
from swarm.rpc.router import Handler, Router
from swarm.rpc.server import serve_tls, serve_unix

log = logging.getLogger(__name__)
# Local calls that change the image store: the managers hear of the change at once (report_facts).
STORE_WRITES = frozenset({"image.import", "image.load", "image.tag", "image.rm", "image.prune"})
FACTS_TIMEOUT = 3.0
CLUSTER_SETTINGS = ("heartbeat_period", "cert_expiry_period", "task_history_limit", "default_addr_pools",
                    "default_addr_pool_mask_length", "data_path_port")


class Daemon(NodeLoop):
    def __init__(self, state_dir: str, *, memory_journal: bool = False, unlock_key: str | None = None) -> None:
        self.paths = Paths(state_dir)
        # A manager's Raft data key (swarm/daemon/keys.py), and the unlock key its file is
        # wrapped with (None: in the clear). `unlock_key` opens a locked key file at start.
        self.data_key: bytes | None = None
        self.wrapped_with: str | None = None
        self._start_unlock_key = unlock_key
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
        self.secrets: FileObjectAPI | None = None
        self.configs: FileObjectAPI | None = None
        self.reconciler: Reconciler | None = None
        self.dispatcher: Dispatcher | None = None
        self.membership = MembershipRPC(lambda: self.manager, self.ca_pem, lambda: self.data_key)
        self.images = ImageStore(os.path.join(self.paths.root, "images"), max_import_bytes=max_import_size(),
                                 in_use=functools.partial(task_image_ids, os.path.join(self.paths.root, "tasks")))
        self.user_checker = image_user_checker(self.images)   # --user/--group in this node's copy of an image
        self.image_handlers = {method: self._reporting_facts(handler) if method in STORE_WRITES else handler
                               for method, handler in image_handlers(self.images).items()}
        self.registry = NodeRegistry(self.images, registry_config(self.config.insecure_registries,
                                                                  self.config.registry_mirrors, self.paths.root),
                                     self.paths.credentials)
        self.runtime = Runtime(os.path.join(self.paths.root, "tasks"), self.images)
        self.volume_handlers = volume_handlers(self.runtime.volumes)
        self.agent = Agent(self.config.node_id, self.runtime, self._agent_call,
                           vtep=split_addr(self.config.addr)[0], hostname=self.config.hostname,
                           has_image=self._has_image, pull_image=self.registry.pull)
        self._manager_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._pool: ClientPool | None = None   # connections to managers, kept while the daemon runs
        self._ready = False
        self._stop = trio.Event()
        self.local_api: Router | None = None      # the local API while the node serves
        self.waiting_for_unlock = False             # a locked manager (autolock) waiting for its key
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

    # -- the two APIs (tables in swarm/daemon/routing.py) -------------------------------------
    def local_router(self) -> Router:
        return routing.local_router(self)

    def node_router(self) -> Router:
        return routing.node_router(self)

    async def ping(self, peer: Peer, params: dict) -> dict:
        return {"node_id": self.config.node_id, "ready": self._ready}

    async def info(self) -> dict:
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
            # The cluster's settings as the store has them now (a node's own heartbeat period
            # catches up at its next beat).
            info.update({k: cluster[k] for k in CLUSTER_SETTINGS if k in cluster})
            if self.control is not None:
                info["raft"] = cluster["raft"]
        return info

    async def service_logs(self, params: dict) -> dict:
        """One bounded step of `service logs` (swarm/daemon/logs.py): fan out to the nodes, merge by time."""
        services, manager = self.services, self.manager

        async def tasks_of(ref: str) -> list[dict]:
            return log_rows(services, ref)

        async def read_node(node_id: str, request: dict) -> dict:
            if node_id == self.config.node_id:
                return await logs.read_tasks(self.runtime, request)
            addr = manager.nodes().get(node_id, {}).get("addr", "")
            return await self.call_manager(addr, "task.logs", request, timeout=logs.NODE_TIMEOUT)

        return await logs.service_logs(logs.LogsSource(tasks_of, manager.nodes, read_node), params)

    async def task_logs(self, peer: Peer, params: dict) -> dict:
        return await logs.read_tasks(self.runtime, params)

    async def check_spec(self, peer: Peer, params: dict) -> list[dict]:
        """node.check_spec: what this node sees wrong in a service spec (swarm/daemon/speccheck.py)."""
        return await trio.to_thread.run_sync(speccheck.check_here, self.user_checker, params)

    async def _ask_check_spec(self, node: NodeInfo, params: dict) -> list[dict]:
        if node.id == self.config.node_id:
            return await self.check_spec(Peer(node.id, "manager", ""), params)
        addr = self.manager.nodes().get(node.id, {}).get("addr", "") if self.manager else ""
        return await self.call_manager(addr, "node.check_spec", params, timeout=speccheck.CHECK_TIMEOUT)

    def _has_image(self, ref: str) -> bool:
        """Does this node's store hold `ref` (as the runtime will look it up)? Blocking."""
        try:
            self.images.resolve(ref)
        except ImageError:
            return False
        return True

    def _reporting_facts(self, handler: Handler) -> Handler:
        """`handler` (a change to the image store), then a heartbeat at once (`report_facts`)."""
        async def handle(peer: Peer, params: dict) -> Any:
            answer = await handler(peer, params)
            await self.report_facts()
            return answer
        return handle

    async def report_facts(self) -> None:
        """Tell the leader this node's facts now rather than at the next heartbeat: after an
        `image import` the managers know the image before the command returns, so the
        `service create` that follows finds it. A failure costs nothing: the next beat tells."""
        with trio.move_on_after(FACTS_TIMEOUT):
            try:
                async with self._beat_lock:
                    if self._leaving:
                        return
                    facts = self._node_facts()
                    try:
                        if self._leader_addr:
                            await self.call_manager(self._leader_addr, "heartbeat", facts, timeout=FACTS_TIMEOUT)
                        else:
                            await self.call_any_manager("heartbeat", facts, timeout=FACTS_TIMEOUT)
                    except RPCError as exc:
                        if exc.code != "not_leader" or not exc.message:
                            raise
                        await self.call_manager(exc.message, "heartbeat", facts, timeout=FACTS_TIMEOUT)
            except (RPCError, OSError) as exc:
                log.info("could not report this node's images at once (the next heartbeat will): %s", exc)

    def dispatcher_routes(self) -> dict[str, Handler]:
        """The dispatcher's calls on the node API (a member's agent asks for its tasks and reports them)."""
        return {"tasks.assigned": self._tasks_assigned, "tasks.status": self._tasks_status}

    async def _tasks_assigned(self, peer: Peer, params: dict) -> dict:
        if self.dispatcher is None:
            raise RPCError("unavailable", "this node is no longer a manager")
        return await self.dispatcher.assigned(peer.node_id, params)

    async def _tasks_status(self, peer: Peer, params: dict) -> dict:
        if self.dispatcher is None:
            raise RPCError("unavailable", "this node is no longer a manager")
        return await self.dispatcher.status(peer.node_id, params)

    # -- manager scope ----------------------------------------------------------------------
    def _raft_config(self, peers: list[str]) -> RaftConfig:
        return RaftConfig(
            node_id=self.config.node_id, address=self.config.raft_addr, data_dir=self.paths.raft,
            tls=TlsSettings(self.raft_server_ctx, self.raft_client_ctx, self.identify_raft), peers=peers,
            memory_journal=self.memory_journal, cipher=DataCipher(self.data_key),
        )

    async def _run_manager(self, peers: list[str], *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self.data_key is None:       # a manager from before encryption at rest
            log.warning("this manager has no Raft data key: making one; its Raft files are rewritten encrypted")
            self.data_key = keyring.make(self.paths.data_key, None)
        with trio.CancelScope() as scope:
            self._manager_scope = scope
            async with trio.open_nursery() as nursery:
                raft = RaftNode(self._raft_config(peers))
                await nursery.start(raft.run)
                nursery.start_soon(keys.keep_key_file, raft, self.paths.data_key, self.data_key, self.wrapped_with)
                self.manager = Manager(raft, self.config.node_id, self._call_manager_api, nursery)
                await self._bootstrap_cluster()
                with trio.move_on_after(10):
                    # Answer commands once this manager holds the cluster's state
                    # (loaded from its snapshot or received from the leader).
                    while raft.get(model.CLUSTER, model.CLUSTER_ID) is None:
                        await trio.sleep(0.02)
                    # The only member (a forced new cluster, a one-manager swarm restarted):
                    # ready once it leads, so that the command that follows can write.
                    while len(raft.members()) == 1 and not raft.is_leader():
                        await trio.sleep(0.02)
                self.control = ControlAPI(self.manager)
                self.services = ServiceAPI(self.manager, check_on_nodes=functools.partial(
                    speccheck.check_on_nodes, ask=self._ask_check_spec), resolve_image=self.registry.resolve)
                self.networks = NetworkAPI(self.manager)
                self.secrets = FileObjectAPI(self.manager, "secret")
                self.configs = FileObjectAPI(self.manager, "config")
                self.reconciler = Reconciler(self.manager)
                self.dispatcher = Dispatcher(self.manager)
                nursery.start_soon(self.manager.run_dispatcher)
                nursery.start_soon(self.reconciler.run)
                nursery.start_soon(self.dispatcher.run)
                task_status.started()
        self.manager = None
        self.control = None
        self.services = None
        self.networks = None
        self.secrets = None
        self.configs = None
        self.reconciler = None
        self.dispatcher = None

    async def _bootstrap_cluster(self) -> None:
        """First start of `swarm init`: commit the cluster and this node's record."""
        if not os.path.exists(self.paths.bootstrap):
            return
        boot = keys.open_bootstrap(self.paths.bootstrap, self.data_key)
        raft = self.manager.raft
        with trio.fail_after(15):
            while not raft.is_leader():
                await trio.sleep(0.02)
        if raft.get(model.CLUSTER, model.CLUSTER_ID) is None:
            cluster = dict(boot["cluster"], ca_cert_pem=boot["cluster"]["ca_cert_pem"].encode(),
                           ca_key_pem=boot["cluster"]["ca_key_pem"].encode())
            node = model.new_node(self.config.node_id, self.config.hostname, "manager", self.config.addr,
                                  self.config.raft_addr, self.cert_identity.serial, utcnow())
            node["availability"] = boot.get("availability", "active")      # swarm init --availability
            # Ingress takes the first subnet of the address pools, as Docker's does (10.0.0.0/24 by default).
            settings = model.cluster_settings(cluster)
            ingress = new_network("ingress", pool_subnet(Allocator(), settings["default_addr_pools"],
                                                         settings["default_addr_pool_mask_length"]), 4096, ingress=True)
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
        keys.remove_key_file(self.paths.data_key)
        self.data_key = self.wrapped_with = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def left(self) -> bool:
        """Did this node leave its swarm (its state is cleared as `run` returns)?"""
        return self._leaving

    def stop(self) -> None:
        """Ask `run` to return (the process's signal handler: swarm/daemon/host.py)."""
        self._stop.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve as this node until `stop()` or a leave; the process around it (pid file,
        signals, the Engine API on docker.sock) is the Host's (swarm/daemon/host.py)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._pool = ClientPool(self.client_ctx, nursery)
                if self.config.role == "manager":
                    if not await self._open_data_key():
                        return                             # stopped while locked
                await nursery.start(self.registry.run)    # the CLI's pulls and pushes outlive their calls
                if self.config.role == "manager":
                    await self._become_manager(self._initial_peers())
                host, port = split_addr(self.config.listen_addr)
                await nursery.start(serve_tls, self.node_router(), host, port, self.server_ctx, self.identify_rpc)
                # local calls may import large images: allow them more than the node API's cap
                local_api = self.local_router()
                await nursery.start(functools.partial(serve_unix, local_api, self.paths.socket, max_deadline=900.0))
                self.local_api = local_api        # the Engine API's too (the Host's, on docker.sock)
                nursery.start_soon(self.run_agent)
                nursery.start_soon(self.agent.run)
                self._ready = True
                task_status.started()
                await self._stop.wait()
                if self._leaving:
                    await self._remove_everything()
                nursery.cancel_scope.cancel()
        finally:
            self.local_api = None
            if self._leaving:
                clear_state(self.paths)

    async def _open_data_key(self) -> bool:
        """Open this manager's Raft data key; a locked one (autolock) waits for `swarm unlock`.
        False if the daemon was asked to stop while it waited."""
        key_file = keyring.load(self.paths.data_key)
        if key_file is None:
            return True                          # made in _run_manager (a manager from before encryption)
        if not key_file.locked:
            self.data_key = key_file.data_key
            return True
        if self._start_unlock_key:               # `swarm init --autolock --foreground`: the key is in memory
            self.data_key, self.wrapped_with = key_file.unlock(self._start_unlock_key), self._start_unlock_key
            return True
        self.waiting_for_unlock = True
        try:
            with trio.CancelScope() as waiting:
                async with trio.open_nursery() as nursery:
                    async def stop_waiting() -> None:
                        await self._stop.wait()
                        waiting.cancel()
                    nursery.start_soon(stop_waiting)
                    self.data_key, self.wrapped_with = await keys.wait_for_unlock(
                        key_file, self.config.node_id, self.paths.socket)
                    nursery.cancel_scope.cancel()
        finally:
            self.waiting_for_unlock = False
        return self.data_key is not None

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


def log_rows(services: ServiceAPI, ref: str) -> list[dict]:
    """The tasks `service logs REF` reads: a service's (by ID, name or prefix) or, as Docker's,
    one task's (by ID or unique prefix); each row with what a log line names (service, slot,
    the details its log options ask for) and the width of the service's slot numbers."""
    tasks = {t.id: t for t in services.tasks()}
    try:
        service = services.find(ref)
        chosen = [t for t in tasks.values() if t.service_id == service.id]
    except ApiError as exc:
        if exc.code != "not_found":
            raise
        try:
            task = resolve_ref("task", tasks, ref, lambda t: "")
        except ApiError:
            raise ApiError("not_found", f"no such task or service: {ref}") from None
        service, chosen = None, [task]
    driver = service.spec.container.log_driver if service is not None else chosen[0].spec.log_driver
    if not logdriver.keeps_logs(driver):
        raise ApiError("bad_request", logdriver.NO_READ)      # Docker's answer for the none driver
    # docker/cli pads the slot to the digits of a replicated service's replica count (a task: its own slot).
    if service is not None and service.spec.mode == "replicated":
        width = len(str(service.spec.replicas))
    else:
        width = len(str(chosen[0].slot)) if chosen else 1
    return [{"id": t.id, "name": t.name, "node_id": t.node_id, "service": t.service_name, "service_id": t.service_id,
             "slot": t.slot, "width": width,
             "details": logview.log_details(t.spec.labels, t.spec.env, t.spec.log_driver.options)}
            for t in sorted(chosen, key=lambda t: (t.slot, t.node_id, t.created_at))]

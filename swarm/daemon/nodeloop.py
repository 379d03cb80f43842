"""This node's side of membership: calls to the managers, the heartbeat
loop, role changes, certificate renewal and `leave`.

How this works. Every heartbeat period the node tells the leader (or any
manager, when it knows no leader) its facts; the answer carries the managers'
addresses, the period and the role the node's record gives it. When that
role changed, the node first gets a certificate for the new role, then (to
manager) asks to join Raft and starts its manager scope, or (to worker)
stops it and deletes its Raft data. The certificate is renewed at a random
point of its life (ca.pki.renewal_delay). `leave` takes the beat lock, so
that no heartbeat in flight marks the node ready after it said it left.

NodeLoop is a part of the Daemon (swarm/daemon/daemon.py), which it extends:
the attributes declared below are the Daemon's.
"""
from __future__ import annotations

import logging
import os
import platform
import random
import time
from typing import TYPE_CHECKING, Any

import trio

from swarm.api.errors import ApiError
from swarm.ca import keyring, pki
from swarm.daemon import keys
from swarm.daemon.config import load_cert_into, split_addr
from swarm.daemon.routing import NOT_MANAGER
from swarm.manager.controlapi.nodes import HAND_OVER_TIME, leave_refusal
from swarm.manager.membership import utcnow
from swarm.rpc.client import RPCClient
from swarm.rpc.messages import Peer, RPCError

if TYPE_CHECKING:
    import ssl

    from swarm.daemon.config import NodeConfig, Paths
    from swarm.manager.membership import Manager
    from swarm.rpc.client import ClientPool
    from swarm.runtime.images import ImageStore

log = logging.getLogger(__name__)


class NodeLoop:
    config: NodeConfig
    paths: Paths
    images: ImageStore
    manager: Manager | None
    cert_identity: Any
    client_ctx: ssl.SSLContext
    server_ctx: ssl.SSLContext
    raft_server_ctx: ssl.SSLContext
    raft_client_ctx: ssl.SSLContext
    _pool: ClientPool | None
    _nursery: trio.Nursery | None
    _stop: trio.Event
    _leaving: bool
    _handing_over: bool
    _beat_lock: trio.Lock
    _leader_addr: str | None
    data_key: bytes | None
    wrapped_with: str | None

    async def _become_manager(self, peers: list[str]) -> None: ...
    async def _become_worker(self) -> None: ...

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

    async def _agent_call(self, method: str, params: dict, timeout: float) -> Any:
        if self._leader_addr:
            try:
                return await self.call_manager(self._leader_addr, method, params, timeout)
            except RPCError as exc:
                if exc.code not in ("unavailable", "deadline"):
                    raise
        return await self.call_any_manager(method, params, timeout)

    # -- heartbeats, role changes, renewal ------------------------------------------------
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
            self.data_key = keys.check_received_key(result.get("data_key"))
            self.wrapped_with = keys.check_received_unlock_key(result.get("unlock_key"))
            await trio.to_thread.run_sync(keyring.save, self.paths.data_key, self.data_key, self.wrapped_with)
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

    def _node_facts(self) -> dict:
        """What the scheduler needs to know about this node."""
        return {"resources": node_resources(), "images": sorted(i["ref"] for i in self.images.list()),
                "platform": node_platform()}

    # -- leave ------------------------------------------------------------------------------
    async def leave(self, peer: Peer, params: dict) -> dict:
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


def node_platform() -> dict:
    """The node's OS and architecture as Docker reports them (node.platform.os/arch): the
    kernel's names, "linux" and uname's machine ("x86_64", "aarch64")."""
    return {"os": platform.system().lower(), "architecture": platform.machine()}


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

"""The manager role: the cluster's records in Raft, the CA, the control API
and the dispatcher's node-liveness tracking.

How this works. Every manager runs a RaftNode and answers the control API
from its local copy of the records; writes are compare-and-set transactions
that any manager can commit (pysyncobj forwards them to the leader), retried
on conflict. Only the acting leader (RaftNode.is_leader, which is fenced by
a quorum lease) runs the dispatcher: nodes send heartbeats to it, and it
marks a node down when its last heartbeat is older than the grace period
(3 heartbeat periods), and ready again when it hears from it. A node asks a
non-leader manager for a heartbeat and is told where the leader is.
"""
from __future__ import annotations

import datetime
import logging
import random
import time
from typing import Any, Awaitable, Callable

import trio

from raft.node import RaftNode, RaftUnavailable
from raft.store import Op, TxnError, TxnResult
from swarm.api import model
from swarm.ca import pki
from swarm.api.errors import ApiError

log = logging.getLogger(__name__)
GRACE_PERIODS = 3
WRITE_RETRIES = 20


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Manager:
    def __init__(self, raft: RaftNode, node_id: str, call_manager: Callable[..., Awaitable[Any]],
                 nursery: trio.Nursery) -> None:
        self.raft = raft
        self.nursery = nursery  # for changes that finish after the call returns
        self.node_id = node_id
        self.call_manager = call_manager  # (addr, method, params) -> result, over mTLS
        self.last_seen: dict[str, float] = {}
        self._was_leader = False

    # -- reading -------------------------------------------------------------------
    def cluster(self) -> dict:
        rec = self.raft.get(model.CLUSTER, model.CLUSTER_ID)
        if rec is None:
            raise ApiError("unavailable", "this manager has not received the cluster's state yet; retry")
        return model.decode(rec.data)

    def nodes(self) -> dict[str, dict]:
        return {k: model.decode(r.data) for k, r in self.raft.list(model.NODE).items()}

    def node_version(self, node_id: str) -> int:
        """The version of a node record in the local copy (0 if there is none)."""
        rec = self.raft.get(model.NODE, node_id)
        return rec.version if rec else 0

    def revoked(self) -> set[str]:
        return set(self.raft.list(model.REVOKED))

    def ca(self) -> pki.ClusterCA:
        c = self.cluster()
        return pki.ClusterCA.from_pem(c["ca_cert_pem"], c["ca_key_pem"])

    def leader_id(self) -> str | None:
        return self.raft.leader_id

    def reachable(self) -> set[str]:
        """Managers this one can see: itself plus Raft peers it is connected to."""
        seen = {self.node_id}
        for name, connected in self.raft.peer_links().items():
            if connected:
                seen.add(name.split("@", 1)[0])
        return seen

    def find(self, ref: str) -> dict:
        try:
            return model.resolve(self.nodes(), ref)
        except model.RefError as exc:
            raise ApiError("not_found", str(exc)) from None

    # -- writing ---------------------------------------------------------------------
    async def commit(self, ops: list[Op]) -> TxnResult:
        try:
            result = await self.raft.commit(ops)
        except RaftUnavailable as exc:
            raise ApiError("unavailable", str(exc)) from None
        except TxnError as exc:
            raise ApiError("bad_request", str(exc)) from None
        if not result.ok:
            raise ApiError(result.error_code or "conflict", result.error)
        return result

    async def modify_node(self, node_id: str, change: Callable[[dict], dict | None]) -> dict:
        """Read-modify-write a node record with compare-and-set, retried on conflict."""
        return (await self.modify_node_at(node_id, change))[0]

    async def modify_node_at(self, node_id: str, change: Callable[[dict], dict | None],
                             version: int | None = None) -> tuple[dict, int]:
        """modify_node, returning the record's new version too. Given `version`
        (what the caller read), a compare-and-set for the caller: the change
        applies only to the record at that version, is never retried, and a
        record that moved on gives a "conflict" error: nothing was written
        (Docker's "update out of sequence")."""
        for _ in range(WRITE_RETRIES if version is None else 1):
            rec = self.raft.get(model.NODE, node_id)
            if rec is None:
                raise ApiError("not_found", f"node {node_id} not found")
            if version is not None and rec.version != version:
                raise ApiError("conflict", f"update out of sequence: node {node_id} is at version "
                                           f"{rec.version}, not {version}")
            new = change(model.decode(rec.data))
            if new is None:
                return model.decode(rec.data), rec.version
            try:
                result = await self.commit([Op.update(model.NODE, node_id, model.encode(new), expect=rec.version)])
                return new, result.versions[0]
            except ApiError as exc:
                if exc.code == "conflict" and version is not None:
                    # This copy was behind: the record moved on before the commit.
                    raise ApiError("conflict", f"update out of sequence: node {node_id} changed after "
                                               f"version {version}") from None
                if exc.code != "conflict":
                    raise
            await trio.sleep(random.uniform(0.005, 0.05))
        raise ApiError("unavailable", f"node {node_id} kept changing under this update; retry")

    async def modify_cluster(self, change: Callable[[dict], dict]) -> dict:
        for _ in range(WRITE_RETRIES):
            rec = self.raft.get(model.CLUSTER, model.CLUSTER_ID)
            new = change(model.decode(rec.data))
            try:
                await self.commit([Op.update(model.CLUSTER, model.CLUSTER_ID, model.encode(new), expect=rec.version)])
                return new
            except ApiError as exc:
                if exc.code != "conflict":
                    raise
            await trio.sleep(random.uniform(0.005, 0.05))
        raise ApiError("unavailable", "the cluster record kept changing under this update; retry")

    # -- CA ----------------------------------------------------------------------------
    def issue(self, csr_pem: bytes, node_id: str, role: str) -> bytes:
        lifetime = datetime.timedelta(seconds=self.cluster()["cert_expiry"])
        try:
            return self.ca().issue(csr_pem, node_id, role, utcnow(), lifetime)
        except pki.PKIError as exc:
            raise ApiError("bad_request", str(exc)) from None

    async def join(self, params: dict) -> dict:
        cluster = self.cluster()
        secret = str(params.get("secret", ""))
        if pki.token_matches(pki.JoinToken("", cluster["tokens"]["manager"]), secret):
            role = "manager"
        elif pki.token_matches(pki.JoinToken("", cluster["tokens"]["worker"]), secret):
            role = "worker"
        else:
            raise ApiError("forbidden", "the join token is not valid for this swarm (wrong or rotated secret)")
        try:
            hostname = model.check_hostname(params.get("hostname"))
            addr = model.check_address("the node's address", params.get("addr"))
            raft_addr = model.check_address("the Raft address", params.get("raft_addr", ""), optional=role == "worker")
        except model.BadFacts as exc:
            raise ApiError("bad_request", f"join refused: {exc}") from None
        if not isinstance(params.get("csr_pem"), bytes) or len(params["csr_pem"]) > 16384:
            raise ApiError("bad_request", "join refused: a certificate signing request (PEM) is required")
        node_id = pki.new_id()
        cert_pem = self.issue(params["csr_pem"], node_id, role)
        serial = pki.identity_from_cert(cert_pem).serial
        record = model.new_node(node_id, hostname, role, addr, raft_addr, serial, utcnow())
        await self.commit([Op.create(model.NODE, node_id, model.encode(record))])
        self.last_seen[node_id] = time.monotonic()
        members: list[str] = self.raft.members()
        if role == "manager":
            members = await self.add_raft_member(node_id, raft_addr)
        return {"node_id": node_id, "cluster_id": cluster["id"], "role": role, "cert_pem": cert_pem,
                "ca_pem": cluster["ca_cert_pem"], "managers": self.manager_addrs(), "raft_members": members}

    async def add_raft_member(self, node_id: str, raft_addr: str) -> list[str]:
        """Add a manager to Raft; returns the member list once the change is appended.

        Not once it is committed: growing a one-manager group to two needs the
        newcomer's vote to commit anything, and the newcomer can only start
        once it knows the members. The commit completes in the background."""
        name = f"{node_id}@{raft_addr}"
        failed: list[str] = []

        async def add() -> None:
            try:
                await self.raft.add_member(node_id, raft_addr, timeout=60)
            except (RaftUnavailable, ApiError) as exc:
                failed.append(str(exc))
                log.warning("adding manager %s to Raft failed: %s", node_id, exc)

        self.nursery.start_soon(add)
        with trio.move_on_after(15):
            while name not in self.raft.members() and not failed:
                await trio.sleep(0.02)
        if name not in self.raft.members():
            raise ApiError("unavailable", "could not add the manager to Raft: " + (failed[0] if failed else "timed out"))
        return self.raft.members()

    async def remove_raft_member(self, node_id: str) -> list[str]:
        """Remove another manager from Raft (a member cannot remove itself: see hand_over)."""
        if node_id == self.node_id:
            raise ApiError("conflict", "a manager cannot remove itself from Raft; another manager must demote it")
        try:
            await self.raft.remove_member(node_id, timeout=15)
        except RaftUnavailable as exc:
            raise ApiError("unavailable", f"could not remove the manager from Raft: {exc}") from None
        return self.raft.members()

    async def hand_over(self, deadline: float) -> str:
        """Stop being a manager: have the leader demote this node; returns the leader's address.

        This node cannot do it itself: a Raft member cannot remove itself, and
        once its record says worker its certificate no longer carries manager
        rights (the node API follows the record). So a leader first hands
        leadership over, then the node asks the leader to demote it, which
        rewrites the record and removes the node from Raft in one call.
        Leadership moves and lost leaders are retried until `deadline`
        (trio clock); a refusal (the quorum would be lost) is raised at once.
        """
        last = "no other manager became the leader"
        while trio.current_time() < deadline:
            remaining = deadline - trio.current_time()
            addr = ""
            try:
                if self.raft.is_leader() or self.leader_id() == self.node_id:
                    await self.raft.transfer_leadership(timeout=min(5.0, remaining))
                    continue
                addr = self.nodes().get(self.leader_id() or "", {}).get("addr")
                if not addr:
                    last = "no Raft leader is known"
                else:
                    await self.call_manager(addr, "control.node.demote", {"refs": [self.node_id]},
                                            timeout=max(1.0, min(20.0, remaining)))
                    return addr
            except RaftUnavailable as exc:  # leadership moved under the transfer: look again
                last = str(exc)
            except ApiError as exc:
                if exc.code == "forbidden" and addr and await self._demoted_by(addr):
                    return addr  # an earlier attempt completed but its answer was lost
                if exc.code not in ("unavailable", "deadline", "not_leader"):
                    raise
                last = exc.message
            await trio.sleep(0.1)
        raise ApiError("unavailable", f"this manager could not hand over its role in time ({last})")

    async def _demoted_by(self, addr: str) -> bool:
        """Whether the manager at `addr` already sees this node demoted and out of Raft."""
        try:
            info = await self.call_manager(addr, "control.info", {}, timeout=5.0)
        except ApiError:
            return False
        return not any(m.startswith(self.node_id + "@") for m in info["raft"]["members"])

    def manager_addrs(self) -> list[str]:
        return sorted(n["addr"] for n in self.nodes().values() if n["role"] == "manager")

    # -- dispatcher ----------------------------------------------------------------------
    async def heartbeat(self, caller: str, params: dict | None = None) -> dict:
        if not self.raft.is_leader():
            leader = self.nodes().get(self.leader_id() or "", {})
            raise ApiError("not_leader", leader.get("addr", ""))
        node = self.nodes().get(caller)
        if node is None:
            raise ApiError("forbidden", "this node has been removed from the swarm")
        # What the node reports about itself (resources, images) is checked before it
        # counts as a beat, and written only when it changes.
        try:
            facts = model.node_facts(params or {})
        except model.BadFacts as exc:
            raise ApiError("bad_request", f"heartbeat refused: {exc}") from None
        self.last_seen[caller] = time.monotonic()

        def change(n: dict) -> dict | None:
            if n["status"] == "ready" and all(n.get(k) == v for k, v in facts.items()):
                return None
            return dict(n, status="ready", status_message="", updated_at=model.timestamp(utcnow()), **facts)

        if change(node) is not None:
            try:
                await self.modify_node(caller, change)
            except ApiError as exc:
                log.warning("could not record node %s's heartbeat: %s", caller, exc.message)
        cluster = self.cluster()
        return {"period": cluster["heartbeat"], "role": node["role"], "managers": self.manager_addrs(),
                "raft_members": self.raft.members()}

    async def set_status(self, node_id: str, status: str, message: str) -> None:
        def change(node: dict) -> dict | None:
            if node["status"] == status:
                return None
            return dict(node, status=status, status_message=message, updated_at=model.timestamp(utcnow()))
        try:
            await self.modify_node(node_id, change)
        except ApiError as exc:
            log.warning("could not mark node %s %s: %s", node_id, status, exc.message)

    async def run_dispatcher(self) -> None:
        """Leader-only: mark nodes down when they miss the grace period."""
        while True:
            leader = self.raft.is_leader()
            now = time.monotonic()
            # Raft's view of who leads, not the acting lease: the lease can lapse
            # for a moment under load, and restarting every grace period on each
            # lapse would never let a dead node be marked down.
            leading = self.raft.leader_id == self.node_id
            if leading and not self._was_leader:
                # A new leader has seen no heartbeats yet: give everyone a full grace period.
                self.last_seen = {nid: now for nid in self.nodes()}
            self._was_leader = leading
            try:
                period = self.cluster()["heartbeat"]
            except ApiError:
                period = 1.0
            if leader:
                for node_id in model.stale_nodes(self.nodes(), self.last_seen, now, period * GRACE_PERIODS):
                    log.info("node %s missed its heartbeats: marking it down", node_id)
                    await self.set_status(node_id, "down", "heartbeat failure")
            await trio.sleep(min(0.25, period / 4))


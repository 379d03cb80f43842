"""The manager role: the cluster's records in Raft, the CA, the control API
and the dispatcher's node-liveness tracking.

How this works. Every manager runs a RaftNode and answers the control API
from its local copy of the records; writes are compare-and-set transactions
that any manager can commit (pysyncobj forwards them to the leader), retried
on conflict (`compare_and_set` is the one read-modify-write loop). Only the
acting leader (RaftNode.is_leader, which is fenced by a quorum lease) runs the
dispatcher: nodes send heartbeats to it, and a node asking a non-leader
manager is told where the leader is. The dispatcher keeps one deadline per
node (`Deadlines`, a cancel scope per node), moved a grace period (3
heartbeat periods) ahead by each beat; a node is marked down when its
deadline passes, and ready again when it is heard from. No task scans the
nodes, and a beat writes to the store only when something about the node
changed. A new leadership (a new Raft term) gives every node a full grace
period, since the new leader has heard nobody yet. What every beat's answer
carries (the managers' addresses) and what a non-leader tells the caller
(the leader's address) come from a `Roster` kept from node events by the same
task, so a beat costs its own node, whatever the number of nodes.
"""
from __future__ import annotations

import datetime
import logging
import math
import random
from typing import Any, Awaitable, Callable, Mapping

import trio

from raft.node import RaftNode, RaftUnavailable
from raft.store import Op, TxnError, TxnResult
from raft.watch import LeadershipChanged, Resync
from swarm.api import model
from swarm.ca import pki
from swarm.api.errors import ApiError

log = logging.getLogger(__name__)
GRACE_PERIODS = 3
WATCH_BUFFER = 65_536   # node events: a few per node of a thousand-node cluster (past it: a Resync)
LEASE_RECHECK = 0.25   # seconds between looks at a lapsed lease, for a node whose deadline passed
STALL = 0.5            # seconds: a deadline seen this late means the loop could not read the beats
LAG_PROBE = 0.25       # seconds between two looks at how late the loop runs
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
        self.rng = random.Random()  # the pause between compare-and-set retries
        self._deadlines: Deadlines | None = None  # while run_dispatcher runs
        self._leading = False  # the deadlines are armed, for the leadership of Raft term _term
        self._term: int | None = None
        self._overdue: set[str] = set()  # deadlines that passed while the lease had lapsed
        self._lag_total = 0.0             # seconds this loop has run late in all (the lag probe's account)
        self._probed_at = math.inf        # trio time the lag probe last ran (run_dispatcher starts it)
        self._lag_at_beat: dict[str, float] = {}   # node id -> _lag_now() at its last beat (or leadership)
        self._manager_addrs: tuple[int, list[str]] | None = None   # (changed_at(NODE), the addresses)
        self._roster: Roster | None = None  # the managers' addresses, kept from node events by run_dispatcher

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
        return model.resolve(self.nodes(), ref)

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

    async def confirm_current(self, timeout: float = 5.0) -> None:
        """Wait until this manager's store holds every write committed so far (an empty
        transaction through the log): a follower's store may lag the leader's. ApiError
        "unavailable" when no quorum answers (the caller retries)."""
        try:
            await self.raft.linearizable_read(timeout=timeout)
        except RaftUnavailable as exc:
            raise ApiError("unavailable", f"cannot confirm this manager's store is current: {exc}") from None

    async def compare_and_set(self, kind: str, id: str, change: Callable[[Any], Any | None], *,
                              version: int | None = None, what: str = "",
                              decode: Callable[[bytes], Any] = model.decode,
                              encode: Callable[[Any], bytes] = model.encode,
                              also: Callable[[Any, Any], list[Op]] | None = None) -> tuple[Any, int]:
        """Read-modify-write one record with compare-and-set; returns the record as
        it now is and its version.

        `change` gets the record as read (through `decode`) and returns the new
        one, or None to write nothing. Someone writing first is retried: read
        again, change again, after a random pause, up to WRITE_RETRIES times.
        Given `version` (what the caller read), the change applies only to the
        record at that version and is never retried: a record that moved on
        is a "conflict" and nothing is written (Docker's "update out of
        sequence"). `also(current, new)`: more operations committed in the same
        transaction (their conflicts are retried as the record's own)."""
        what = what or f"{kind} {id}"
        for _ in range(WRITE_RETRIES if version is None else 1):
            rec = self.raft.get(kind, id)
            if rec is None:
                raise ApiError("not_found", f"{what} not found")
            if version is not None and rec.version != version:
                raise ApiError("conflict", f"update out of sequence: {what} is at version {rec.version}, "
                                           f"not {version}")
            current = decode(rec.data)
            new = change(current)
            if new is None:
                return current, rec.version
            try:
                result = await self.commit([Op.update(kind, id, encode(new), expect=rec.version),
                                            *(also(current, new) if also is not None else ())])
                return new, result.versions[0]
            except ApiError as exc:
                if exc.code != "conflict":
                    raise
                if version is not None:
                    # This copy was behind: the record moved on before the commit.
                    raise ApiError("conflict", f"update out of sequence: {what} changed after "
                                               f"version {version}") from None
            await trio.sleep(self.rng.uniform(0.005, 0.05))
        raise ApiError("unavailable", f"{what} kept changing under this update; retry")

    async def modify_node(self, node_id: str, change: Callable[[dict], dict | None]) -> dict:
        """Read-modify-write a node record with compare-and-set, retried on conflict."""
        return (await self.compare_and_set(model.NODE, node_id, change))[0]

    async def modify_node_at(self, node_id: str, change: Callable[[dict], dict | None],
                             version: int | None = None) -> tuple[dict, int]:
        """modify_node, returning the record's new version too; given `version`,
        a compare-and-set for the caller (see compare_and_set)."""
        return await self.compare_and_set(model.NODE, node_id, change, version=version)

    async def modify_cluster(self, change: Callable[[dict], dict | None]) -> dict:
        return (await self.compare_and_set(model.CLUSTER, model.CLUSTER_ID, change, what="the cluster record"))[0]

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
        if self._roster is not None:
            self._roster.apply(node_id, record)   # the answer below names it before its event arrives
        self._beat(node_id)
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
        """Every heartbeat's answer carries them: kept from node events while run_dispatcher
        runs (else recomputed when a node record changed), never by decoding every node on
        every beat (N nodes beating: N x N decodes a period)."""
        if self._roster is not None:
            return self._roster.addrs()
        changed = self.raft.changed_at(model.NODE)
        if self._manager_addrs is None or self._manager_addrs[0] != changed:
            self._manager_addrs = (changed, sorted(n["addr"] for n in self.nodes().values()
                                                   if n["role"] == "manager"))
        return list(self._manager_addrs[1])

    # -- dispatcher ----------------------------------------------------------------------
    def _period(self) -> float:
        try:
            return self.cluster()["heartbeat"]
        except ApiError:
            return 1.0

    def _grace(self) -> float:
        return self._period() * GRACE_PERIODS

    def _beat(self, node_id: str, grace: float | None = None) -> None:
        """A sign of life from a node: its deadline moves a grace period ahead."""
        if self._deadlines is not None and self._leading:
            self._overdue.discard(node_id)
            self._lag_at_beat[node_id] = self._lag_now()
            self._deadlines.reset(node_id, self._grace() if grace is None else grace)

    def leader_addr(self) -> str:
        """The acting leader's address as this manager knows it ("" if unknown)."""
        leader_id = self.leader_id() or ""
        if self._roster is not None:
            return self._roster.addr_of(leader_id)
        leader = self.raft.get(model.NODE, leader_id)
        return model.decode(leader.data).get("addr", "") if leader else ""

    async def heartbeat(self, caller: str, params: dict | None = None) -> dict:
        if not self.raft.is_leader():
            raise ApiError("not_leader", self.leader_addr())
        rec = self.raft.get(model.NODE, caller)
        if rec is None:
            raise ApiError("forbidden", "this node has been removed from the swarm")
        node = model.decode(rec.data)
        # What the node reports about itself (resources, images) is checked before it
        # counts as a beat, and written only when it changes.
        try:
            facts = model.node_facts(params or {})
        except model.BadFacts as exc:
            raise ApiError("bad_request", f"heartbeat refused: {exc}") from None
        cluster = self.cluster()
        self._beat(caller, cluster["heartbeat"] * GRACE_PERIODS)

        def change(n: dict) -> dict | None:
            if n["status"] == "ready" and all(n.get(k) == v for k, v in facts.items()):
                return None
            return dict(n, status="ready", status_message="", updated_at=model.timestamp(utcnow()), **facts)

        if change(node) is not None:
            try:
                await self.modify_node(caller, change)
            except ApiError as exc:
                log.warning("could not record node %s's heartbeat: %s", caller, exc.message)
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
        """Mark nodes down when they miss their deadline, while this manager leads.

        Deadlines belong to one leadership (one Raft term): the lease lapsing
        for a moment under load leaves them running (a node whose deadline
        passed meanwhile is marked down when the lease is back), a new term
        gives every node a full grace period again."""
        with self.raft.watch(kinds=(model.NODE,), maxlen=WATCH_BUFFER) as changes:
            async with trio.open_nursery() as nursery:
                self._deadlines = Deadlines(nursery, self._deadline_passed)
                self._roster = Roster(self.nodes())
                self._probed_at = trio.current_time()
                nursery.start_soon(self._watch_lag)
                try:
                    if self.raft.is_leader():
                        self._lead()
                    async for change in changes:
                        if isinstance(change, LeadershipChanged):
                            self._leadership_changed(change, nursery)
                        elif isinstance(change, Resync):   # a snapshot installed, or this watch fell behind
                            self._roster = Roster(self.nodes())
                            # What the watch dropped may have been a change of leadership: as it is now.
                            self._leadership_changed(LeadershipChanged(self.raft.is_leader(), self.raft.term),
                                                     nursery)
                        else:   # one node record: decode that one (the record as it now is)
                            rec = self.raft.get(model.NODE, change.id)
                            self._roster.apply(change.id, model.decode(rec.data) if rec is not None else None)
                finally:
                    self._unlead()
                    self._deadlines = None
                    self._roster = None
                    nursery.cancel_scope.cancel()

    def _leadership_changed(self, change: LeadershipChanged, nursery: trio.Nursery) -> None:
        if self._leading and self._term is not None and change.term != self._term:
            self._unlead()  # the deadlines were set in an earlier leadership
        if change.acting and not self._leading:
            self._lead()
        if self._leading:
            self._term = change.term  # a dispatcher started while leading learns its term here
        if change.acting:
            overdue, self._overdue = sorted(self._overdue), set()
            for node_id in overdue:
                nursery.start_soon(self._mark_down, node_id)

    def _lead(self) -> None:
        """A new leader has heard no heartbeats yet: everyone gets a full grace period."""
        assert self._deadlines is not None
        self._leading, self._term = True, self.raft.term
        self._overdue.clear()
        grace, lag = self._grace(), self._lag_now()
        for node_id in self.raft.list(model.NODE):
            self._lag_at_beat[node_id] = lag
            self._deadlines.reset(node_id, grace)

    def _unlead(self) -> None:
        self._leading, self._term = False, None
        self._overdue.clear()
        self._lag_at_beat.clear()
        if self._deadlines is not None:
            self._deadlines.clear()

    async def _watch_lag(self) -> None:
        """Keep the account of how late this loop runs: while it is late (a pass over its
        runnable tasks taking long: a large plan, a thousand nodes' calls), beats wait unread."""
        while True:
            self._probed_at = asked = trio.current_time()
            await trio.sleep(LAG_PROBE)
            self._lag_total += max(0.0, trio.current_time() - asked - LAG_PROBE)

    def _lag_now(self) -> float:
        """Seconds this loop has run late in all, with a stall still under way (the probe waits too)."""
        return self._lag_total + max(0.0, trio.current_time() - self._probed_at - LAG_PROBE)

    async def _deadline_passed(self, node_id: str, late: float = 0.0) -> None:
        """Mark the node down, when the lease allows. A lease that lapsed for a moment under
        load comes back with no event (the tick thread may not even have seen it lapse), so
        the node waits here, overdue, until it beats again, this leadership ends, or the lease
        is back.

        A node's grace period counts the time this loop could read its beats: the seconds the
        loop ran late since the node's last beat (or since this leadership began), when more
        than STALL, are given to the node again (heartbeats wait unread on their connections
        meanwhile; a node marked down has its tasks replaced elsewhere, which would load the
        cluster more). So a stall before a node's last beat delays nothing, and a node that
        is really gone is marked down a grace period plus the loop's stalls after its last beat."""
        lag = self._lag_now()
        owed = max(late, lag - self._lag_at_beat.get(node_id, lag))   # every deadline is set with its mark
        if owed > STALL and self._deadlines is not None:
            log.info("node %s's heartbeat deadline passed after this manager ran %.1f s late since its last "
                     "beat: that long again to be heard", node_id, owed)
            self._lag_at_beat[node_id] = lag
            self._deadlines.reset(node_id, owed)
            return
        term = self.raft.term
        self._overdue.add(node_id)
        while not self.raft.is_leader():
            await trio.sleep(LEASE_RECHECK)
            if node_id not in self._overdue:   # it beat again, or the leadership ended
                return
        # A new term (its event perhaps not handled yet) gives every node a full grace period.
        if node_id in self._overdue and self.raft.term == term:
            self._overdue.discard(node_id)
            await self._mark_down(node_id)

    async def _mark_down(self, node_id: str) -> None:
        rec = self.raft.get(model.NODE, node_id)
        if rec is None or model.decode(rec.data)["status"] != "ready":
            return
        log.info("node %s missed its heartbeats: marking it down", node_id)

        def change(node: dict) -> dict | None:
            if node["status"] != "ready" or (self._deadlines is not None and node_id in self._deadlines):
                return None  # it is down already, or it beat again meanwhile
            return dict(node, status="down", status_message="heartbeat failure",
                        updated_at=model.timestamp(utcnow()))
        try:
            await self.modify_node(node_id, change)
        except ApiError as exc:
            log.warning("could not mark node %s down: %s", node_id, exc.message)


class Roster:
    """The managers' addresses by node id, kept one node record at a time: what a heartbeat's
    answer carries costs O(1) per beat (the sorted list is rebuilt only when a manager's
    role or address changed, not when a worker's status did)."""

    def __init__(self, nodes: Mapping[str, dict]) -> None:
        self._addr = {nid: n["addr"] for nid, n in nodes.items() if n.get("role") == "manager"}
        self._sorted: list[str] | None = None

    def apply(self, node_id: str, node: dict | None) -> None:
        """Node `node_id`'s record is now `node` (None: removed)."""
        addr = node.get("addr", "") if node is not None and node.get("role") == "manager" else None
        if self._addr.get(node_id) == addr:
            return
        if addr is None:
            del self._addr[node_id]
        else:
            self._addr[node_id] = addr
        self._sorted = None

    def addrs(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self._addr.values())
        return list(self._sorted)

    def addr_of(self, node_id: str) -> str:
        return self._addr.get(node_id, "")


class Deadlines:
    """One timer per node: a cancel scope whose deadline each heartbeat moves
    (trio keeps deadlines ordered), held by a task that sleeps until it
    passes. Nothing looks at the nodes that are on time."""

    def __init__(self, nursery: trio.Nursery, passed: Callable[[str, float], Awaitable[None]]) -> None:
        self._nursery = nursery
        self._passed = passed
        self._scopes: dict[str, trio.CancelScope] = {}

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._scopes

    def __len__(self) -> int:
        return len(self._scopes)

    def reset(self, node_id: str, after: float) -> None:
        """`node_id`'s deadline is now `after` seconds from now."""
        deadline = trio.current_time() + after
        scope = self._scopes.get(node_id)
        if scope is not None:
            scope.deadline = deadline
            return
        scope = self._scopes[node_id] = trio.CancelScope(deadline=deadline)
        self._nursery.start_soon(self._wait, node_id, scope)

    def clear(self) -> None:
        scopes, self._scopes = self._scopes, {}
        for scope in scopes.values():
            scope.cancel()

    async def _wait(self, node_id: str, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_forever()
        if self._scopes.get(node_id) is scope:  # the deadline passed (it was not cleared)
            del self._scopes[node_id]
            # how much later than its deadline this runs: the loop was busy that long
            await self._passed(node_id, max(0.0, trio.current_time() - scope.deadline))

"""A Raft member of the replicated record store, bridged into trio.

How it works. `RaftNode` owns a pysyncobj `SyncObj` subclass (`_Engine`) that
runs in pysyncobj's own tick thread, with
- the durable journal (`raft.journal`), selected by `raft.engine_hooks`;
- the TLS transport (`raft.transport`);
- our snapshot serializer (msgpack + CRC + fsync, no fork) and a
  deserializer that refuses to run with a snapshot it cannot load;
- an apply function that decodes our transactions itself (pysyncobj's
  pickle-based @replicated methods are not used, so no log entry is ever
  unpickled) and never raises.

The trio side submits transactions with `_applyCommand` (thread-safe, wakes
the tick thread through its pipe) and waits on a trio.Event that the tick
thread sets through `TrioToken.run_sync_soon`; applied events and leadership
changes reach the `WatchHub` the same way, in order. Nothing polls.

Leadership is fenced twice: pysyncobj steps down when it has not heard from a
quorum within `leader_fallback` (we set it to the maximum election timeout,
not its 30 s default), and `is_leader()` also requires a lease: a quorum
answered within the minimum election timeout, measured on the monotonic
clock (`quorum_lease`: pysyncobj's clock is another one), so a leader that was frozen (SIGSTOP) is not acting the moment it
wakes, even before its tick thread has run.
"""
from __future__ import annotations

import functools
import logging
import os
import queue
import struct
import sys
import time
import zlib
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Sequence

import msgpack
import trio
import raft.inet_fix  # noqa: F401  (before pysyncobj: see there)
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.config import FAIL_REASON
from pysyncobj.monotonic import monotonic as engine_clock
from pysyncobj.node import TCPNode

from raft import engine_hooks
from raft.fsutil import atomic_write, fsync_dir
from raft.cipher import DataCipher, DecryptError
from raft.journal import DurableJournal
from raft.store import MAX_BATCH, MAX_COMMAND, Op, RecordStore, TxnError, TxnResult, decode_batch, pack_txn
from raft.transport import MEMBERSHIP, REGULAR, TlsSettings, TlsTransport, node_id_of
from raft.watch import LeadershipChanged, Watch, WatchHub

log = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"SWRAFTS1"
SEALED_SNAPSHOT_MAGIC = b"SWRAFTS2"
SNAPSHOT_PURPOSE = b"swarm raft snapshot"
_RAFT_LEADER = 2


class RaftError(Exception):
    """Base of this package's errors."""


class RaftUnavailable(RaftError):
    """No quorum or no leader now; the caller may retry."""


class SnapshotError(RaftError):
    """A snapshot exists but cannot be loaded: the node must not start empty."""


class Peer(TCPNode):
    """A Raft member named `node_id@host:port` (the node ID is its certificate CN).

    A TCPNode subclass because pysyncobj's transport treats other Node
    classes as readonly peers (dropNode, _shouldConnect)."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        node_id, _, addr = name.partition("@")
        host, _, port = addr.rpartition(":")
        if not node_id or not host or not port.isdigit():
            raise ValueError(f"bad Raft member name {name!r}: expected node_id@host:port")
        super().__init__(name, **kwargs)
        self._peer_host = host
        self._peer_port = int(port)

    @property
    def host(self) -> str:
        return self._peer_host

    @property
    def ip(self) -> str:
        return self._peer_host

    @property
    def port(self) -> int:
        return self._peer_port


def member_name(node_id: str, address: str) -> str:
    return f"{node_id}@{address}"


# -- snapshots ------------------------------------------------------------------------
# A snapshot file: magic | crc32 of the body | body. The body is msgpack, sealed with the
# cluster's data key (raft/cipher.py) under SEALED_SNAPSHOT_MAGIC. Every manager holds the same
# key, so a snapshot the leader sends (the bytes of its file) opens on the follower.
def quorum_lease(heard_at: Sequence[float], engine_now: float, local_now: float, timeout: float) -> float:
    """Until when, on `time.monotonic()`, a leader may act: `timeout` after the latest time
    by which a quorum had answered (`heard_at`: the other members' last answers; our own
    vote counts). pysyncobj stamps answers on its own clock, CLOCK_MONOTONIC_RAW, which NTP
    does not slew: it drifts from `time.monotonic()` (0.35 s in the first half hour of one
    machine of this kind), so an answer's age is taken on its clock and the lease set on ours."""
    needed = (len(heard_at) + 1) // 2  # answers needed besides our own vote
    if not needed:
        return local_now + timeout
    heard = sorted(heard_at, reverse=True)[needed - 1]
    return local_now + timeout - (engine_now - heard)


def encode_snapshot(last: Sequence[Any], prev: Sequence[Any], members: list[str], state: dict,
                    cipher: DataCipher | None = None) -> bytes:
    body = msgpack.packb({"v": 1, "last": list(last), "prev": list(prev), "members": members, "state": state},
                         use_bin_type=True)
    magic = SNAPSHOT_MAGIC
    if cipher is not None:
        body, magic = cipher.seal(body, SNAPSHOT_PURPOSE), SEALED_SNAPSHOT_MAGIC
    return magic + struct.pack(">I", zlib.crc32(body)) + body


def decode_snapshot(data: bytes, cipher: DataCipher | None = None) -> dict:
    magic = data[:len(SNAPSHOT_MAGIC)]
    if magic not in (SNAPSHOT_MAGIC, SEALED_SNAPSHOT_MAGIC) or len(data) < len(SNAPSHOT_MAGIC) + 4:
        raise SnapshotError("not a swarm Raft snapshot")
    (crc,) = struct.unpack_from(">I", data, len(SNAPSHOT_MAGIC))
    body = data[len(SNAPSHOT_MAGIC) + 4:]
    if zlib.crc32(body) != crc:
        raise SnapshotError("checksum mismatch")
    if magic == SEALED_SNAPSHOT_MAGIC:
        if cipher is None:
            raise SnapshotError("it is encrypted and no data key was given")
        try:
            body = cipher.open(body, SNAPSHOT_PURPOSE)
        except DecryptError as exc:
            raise SnapshotError(str(exc)) from None
    try:
        snap = msgpack.unpackb(body, raw=False)
        snap["last"] = (bytes(snap["last"][0]), int(snap["last"][1]), int(snap["last"][2]))
        snap["prev"] = (bytes(snap["prev"][0]), int(snap["prev"][1]), int(snap["prev"][2]))
        snap["members"] = [str(m) for m in snap["members"]]
        snap["state"]["records"]  # noqa: B018 - shape check
    except Exception as exc:
        raise SnapshotError(f"undecodable snapshot: {exc}") from None
    return snap


def read_snapshot(path: str, cipher: DataCipher | None = None) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        return decode_snapshot(data, cipher)
    except SnapshotError as exc:
        raise SnapshotError(f"the Raft snapshot {path} cannot be loaded ({exc}); refusing to start with empty state") from None


@dataclass
class RaftConfig:
    node_id: str
    address: str                       # host:port this member listens on for Raft
    data_dir: str                      # STATE_DIR/raft
    tls: TlsSettings
    peers: list[str] = field(default_factory=list)   # other members' names, for a first start
    bind_address: str | None = None
    election_timeout: tuple[float, float] = (1.0, 2.0)
    append_period: float = 0.09
    compaction_entries: int = 20_000
    compaction_min_time: float = 600.0
    on_fatal: Callable[[str], None] | None = None
    # UNSAFE, for throwaway labs: new log entries are kept in memory only (raft/journal.py)
    memory_journal: bool = False
    # The cluster's data key: journal and snapshots encrypted at rest (raft/cipher.py); None: in the clear.
    cipher: DataCipher | None = None

    @property
    def name(self) -> str:
        return member_name(self.node_id, self.address)


class _Engine(SyncObj):
    """SyncObj with our apply, membership encoding and change serialization."""

    def __init__(self, owner: "RaftNode", self_name: str, others: list[str], conf: SyncObjConf,
                 transport_factory: Callable[..., TlsTransport]) -> None:
        self._owner = owner
        self._tick_calls: queue.SimpleQueue = queue.SimpleQueue()
        super().__init__(self_name, others, conf=conf, nodeClass=Peer, transportClass=transport_factory)

    # Apply: called by pysyncobj for each committed entry, in order. Never raises.
    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        index = self.raftLastApplied + 1
        try:
            kind = command[0]
            if kind == REGULAR:
                return self._owner._apply_entry(command[1:], index)
            if kind == MEMBERSHIP:
                request = self._SyncObj__parseChangeClusterRequest(command)
                if request is not None:
                    self._SyncObj__doChangeCluster(request)
            self._owner.state.advance(index)
            return None
        except Exception as exc:  # a poison entry must not wedge the cluster
            log.exception("apply of log entry %d failed", index)
            self._owner.state.advance(index)
            return TxnResult(False, index, (), "internal", f"apply failed: {exc}").to_wire()

    def _SyncObj__parseChangeClusterRequest(self, command: bytes) -> list | None:
        if not command or command[0] != MEMBERSHIP:
            return None
        try:
            action, name = msgpack.unpackb(command[1:], raw=False)
            Peer(name)
        except Exception:
            log.error("ignoring a malformed membership entry")
            return None
        if action not in ("add", "rem"):
            return None
        return [action, name]

    def _SyncObj__doChangeCluster(self, request: list, reverse: bool = False) -> bool:
        changed = SyncObj._SyncObj__doChangeCluster(self, request, reverse)
        log.info("membership change %s %s%s: %s", request[0], request[1], " (rolled back)" if reverse else "",
                 "applied" if changed else "no-op")
        if changed:
            self._owner._persist_members(self)
        return changed

    def _SyncObj__changeCluster(self, request: list) -> bool:
        # pysyncobj never records the pending change (its guard is dead code):
        # allow one membership change in flight at a time.
        noop = self._SyncObj__noopIDx
        if noop is None or self.raftLastApplied < noop:
            return False
        pending = self._SyncObj__changeClusterIDx
        if pending is not None and self.raftLastApplied >= pending:
            pending = None
        if pending is not None:
            return False
        changed = self._SyncObj__doChangeCluster(request)
        self._SyncObj__changeClusterIDx = self._SyncObj__getCurrentLogIndex() + 1 if changed else None
        return changed

    def change_membership(self, action: str, name: str, callback: Callable) -> None:
        self._applyCommand(msgpack.packb([action, name], use_bin_type=True), callback, MEMBERSHIP)

    def run_in_tick(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the tick thread (pysyncobj's state is not thread-safe)."""
        self._tick_calls.put(fn)
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()

    def drain_tick_calls(self) -> None:
        while True:
            try:
                fn = self._tick_calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:
                log.exception("tick-thread call failed")


def _array_header(n: int) -> bytes:
    """msgpack array header for n elements (so packed elements can be joined)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class _Slot:
    __slots__ = ("packed", "done", "result", "error")

    def __init__(self, packed: bytes) -> None:
        self.packed = packed
        self.done = trio.Event()
        self.result: Any = None
        self.error: int = -1


class RaftNode:
    """One manager's member of the Raft group, used from trio.

    Run it in a nursery (`await nursery.start(node.run)`) or with
    `async with open_raft_node(config) as node:`."""

    def __init__(self, config: RaftConfig) -> None:
        engine_hooks.install()
        self.config = config
        self.state = RecordStore()
        self.hub = WatchHub()
        self.security_events: list[str] = []
        self.fatal_error: str | None = None
        self._engine: _Engine | None = None
        self._journal: DurableJournal | None = None
        self._transport: TlsTransport | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._acting = False
        self._lease_until = 0.0
        self._tick_seen: tuple = (False, 0, None, 0.0)
        self._tick_links: dict[str, bool] = {}
        self._peer_links: dict[str, bool] = {}
        self._leader_name: str | None = None
        self._term = 0
        self._membership_lock = trio.Lock()
        self._pending: deque[_Slot] = deque()
        self._have_pending = trio.Event()
        self.snapshot_path = os.path.join(config.data_dir, "snapshot")
        self.members_path = os.path.join(config.data_dir, "members")

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Open the journal and snapshot and start the tick thread (call from trio)."""
        os.makedirs(self.config.data_dir, mode=0o700, exist_ok=True)
        self._token = trio.lowlevel.current_trio_token()
        snapshot = read_snapshot(self.snapshot_path, self.config.cipher)  # raises SnapshotError: never start empty
        if self.config.memory_journal:
            log.warning("UNSAFE: the Raft journal in %s keeps new entries in memory only; a restart of "
                        "every manager loses acknowledged writes", self.config.data_dir)
        if snapshot is not None and self.config.cipher is not None:
            self._seal_snapshot_in_place(snapshot)
        self._journal = DurableJournal(self.config.data_dir, volatile=self.config.memory_journal,
                                       on_io_error=self._fatal, cipher=self.config.cipher)
        others = self._initial_members(snapshot)
        atomic_write(self.members_path, msgpack.packb(sorted(others + [self.config.name])))
        lo, hi = self.config.election_timeout
        conf = SyncObjConf(
            journalFile=engine_hooks.JournalSpec(self._journal),
            fullDumpFile=self.snapshot_path,
            serializer=self._serialize,
            deserializer=self._deserialize,
            dynamicMembershipChange=True,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=self.config.append_period,
            raftMinTimeout=lo,
            raftMaxTimeout=hi,
            leaderFallbackTimeout=hi,
            connectionTimeout=max(3.0, hi * 3),
            connectionRetryTime=0.2,
            logCompactionMinEntries=self.config.compaction_entries,
            logCompactionMinTime=self.config.compaction_min_time,
            bindAddress=self.config.bind_address,
            commandsWaitLeader=True,
            tcp_keepalive=None,
        )

        def transport_factory(sync_obj: Any, self_node: Any, other_nodes: Any) -> TlsTransport:
            self._transport = TlsTransport(sync_obj, self_node, other_nodes, settings=self.config.tls,
                                           journal=self._journal, on_security_event=self._on_security_event)
            return self._transport

        self._engine = _Engine(self, self.config.name, others, conf, transport_factory)
        self._engine.addOnTickCallback(self._on_tick)

    def _seal_snapshot_in_place(self, snapshot: dict) -> None:
        """A snapshot written in the clear (before encryption at rest) is rewritten sealed."""
        with open(self.snapshot_path, "rb") as f:
            if f.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
                return
        log.warning("snapshot %s was written in the clear; rewriting it encrypted", self.snapshot_path)
        atomic_write(self.snapshot_path, encode_snapshot(snapshot["last"], snapshot["prev"], snapshot["members"],
                                                         snapshot["state"], self.config.cipher))

    def _initial_members(self, snapshot: dict | None) -> list[str]:
        try:
            with open(self.members_path, "rb") as f:
                members = [str(m) for m in msgpack.unpackb(f.read(), raw=False)]
        except FileNotFoundError:
            members = list(snapshot["members"]) if snapshot else list(self.config.peers)
        return [m for m in members if m != self.config.name]

    def _persist_members(self, engine: SyncObj) -> None:
        names = sorted([n.id for n in engine.otherNodes] + [self.config.name])
        atomic_write(self.members_path, msgpack.packb(names))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the node, report it started, and serve until cancelled."""
        self.start()
        try:
            task_status.started(self)
            await self._submit_loop()
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await trio.to_thread.run_sync(engine.destroy_synchronous)
        self.hub.close()

    # -- tick-thread side ------------------------------------------------------------------
    def _to_trio(self, fn: Callable, *args: Any) -> None:
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    def _apply_entry(self, payload: bytes, index: int) -> list[dict]:
        try:
            txns = decode_batch(payload)
        except TxnError as exc:
            self.state.advance(index)
            return [TxnResult(False, index, (), exc.code, str(exc)).to_wire()]
        results, events = self.state.apply_batch(txns, index)
        if events:
            self._to_trio(self.hub.publish, events)
        return [r.to_wire() for r in results]

    def _serialize(self, path: str, data: tuple) -> None:
        last, prev, cluster = data
        dumped = self.state.dump()
        if dumped["index"] != last[1]:
            raise RaftError(f"state at {dumped['index']} does not match snapshot point {last[1]}")
        blob = encode_snapshot(last, prev, sorted(n.id for n in cluster), dumped, self.config.cipher)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _deserialize(self, path: str) -> tuple:
        try:
            with open(path, "rb") as f:
                data = f.read()
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # a snapshot received from the leader arrives unsynced
            finally:
                os.close(fd)
            fsync_dir(os.path.dirname(path))
            snap = decode_snapshot(data, self.config.cipher)
            self.state.load(snap["state"])
            # A store replaced whole sends no per-record events: watchers re-read it.
            self._to_trio(self.hub.publish_resync, int(snap["state"].get("index", 0)))
        except Exception as exc:
            self._fatal(f"the Raft snapshot {path} cannot be loaded ({exc}); stopping rather than running with empty state")
            raise
        last, prev = snap["last"], snap["prev"]
        atomic_write(self.members_path, msgpack.packb(sorted(snap["members"])))
        journal = self._journal
        if journal.term_at(prev[1]) == prev[2] and journal.term_at(last[1]) == last[2]:
            if journal[0][1] < prev[1]:
                log.warning("finishing a log compaction cut short by a crash (journal from %d, snapshot at %d)",
                            journal[0][1], prev[1])
            journal.drop_before(prev[1])  # finish a compaction cut short by a crash
        # Peer objects, not names: pysyncobj filters itself out by Node equality.
        return last, prev, [Peer(name) for name in snap["members"]]

    def _fatal(self, message: str) -> None:
        self.fatal_error = message
        log.critical(message)
        if self.config.on_fatal is not None:
            self.config.on_fatal(message)
        else:
            print(f"swarm: {message}", file=sys.stderr, flush=True)
            os._exit(70)

    def _on_security_event(self, message: str) -> None:
        log.warning(message)
        self.security_events.append(message)
        del self.security_events[:-100]

    def _on_tick(self) -> None:
        engine = self._engine
        if engine is None:
            return
        engine.drain_tick_calls()
        is_leader = engine._isLeader()
        lease_until = 0.0
        if is_leader:
            noop = engine._SyncObj__noopIDx
            others = engine.otherNodes
            if noop is not None and engine.raftLastApplied >= noop:
                lease_until = quorum_lease([engine._SyncObj__lastResponseTime.get(n, 0.0) for n in others],
                                           engine_clock(), time.monotonic(), self.config.election_timeout[0])
        leader = engine._getLeader()
        leader_name = leader.id if leader else None
        term = engine.raftCurrentTerm
        links = {n.id: engine.isNodeConnected(n) for n in engine.otherNodes}
        if links != self._tick_links:
            self._tick_links = links
            self._to_trio(setattr, self, "_peer_links", links)
        acting = lease_until > time.monotonic()
        seen_acting, seen_term, seen_leader, seen_lease = self._tick_seen
        # Tell trio when anything changes, and when the lease moved by 20 ms:
        # not on every tick, which can run thousands of times a second.
        if (acting, term, leader_name) != (seen_acting, seen_term, seen_leader) or \
                abs(lease_until - seen_lease) > 0.02:
            self._tick_seen = (acting, term, leader_name, lease_until)
            self._to_trio(self._set_leadership, acting, lease_until, term, leader_name)

    def _set_leadership(self, acting: bool, lease_until: float, term: int, leader: str | None) -> None:
        changed = acting != self._acting
        self._acting, self._lease_until, self._term, self._leader_name = acting, lease_until, term, leader
        if changed:
            self.hub.publish_leadership(LeadershipChanged(acting, term), self.state.index)

    # -- trio API: reads --------------------------------------------------------------------
    def get(self, kind: str, id: str):
        return self.state.get(kind, id)

    def list(self, kind: str):
        return self.state.list(kind)

    def changed_at(self, kind: str) -> int:
        """The log index at which a record of `kind` last changed here (a cache key)."""
        return self.state.changed_at(kind)

    @property
    def index(self) -> int:
        return self.state.index

    def watch(self, kinds: Sequence[str] | None = None, maxlen: int = 4096) -> Watch:
        return self.hub.subscribe(kinds, maxlen)

    def peer_links(self) -> dict[str, bool]:
        """Other members' names -> whether this member is connected to them."""
        return dict(self._peer_links)

    def is_leader(self) -> bool:
        """Acting leader: Raft leader with a quorum heard within the election timeout."""
        return self._acting and time.monotonic() < self._lease_until

    @property
    def term(self) -> int:
        """The Raft term as the trio side last heard of it."""
        return self._term

    @property
    def leader_id(self) -> str | None:
        return node_id_of(self._leader_name) if self._leader_name else None

    @property
    def leader_name(self) -> str | None:
        return self._leader_name

    async def linearizable_read(self, timeout: float = 5.0) -> int:
        """Confirm with a quorum round (an empty transaction through the log) that
        local state is current; returns the index reads now reflect."""
        result = await self.commit([], timeout=timeout)
        return result.index

    # -- trio API: writes -------------------------------------------------------------------
    async def _submit(self, submit: Callable[[Callable], None], timeout: float) -> Any:
        done = trio.Event()
        box: dict[str, Any] = {}

        def finish(res: Any, err: int) -> None:
            box["res"], box["err"] = res, err
            done.set()

        def callback(res: Any, err: int) -> None:  # tick thread
            self._to_trio(finish, res, err)

        if self._engine is None:
            raise RaftUnavailable("the Raft node is not running")
        submit(callback)
        with trio.move_on_after(timeout):
            await done.wait()
        if not done.is_set():
            raise RaftUnavailable(f"no commit within {timeout:g} s (no quorum?); the outcome is unknown")
        err = box["err"]
        if err != FAIL_REASON.SUCCESS:
            raise RaftUnavailable(_FAIL_TEXT.get(err, f"Raft refused the command (reason {err})"))
        return box["res"]

    async def commit(self, ops: Sequence[Op], timeout: float = 5.0) -> TxnResult:
        """Replicate a transaction; returns its result once committed and applied here.

        Transactions submitted while the submitter is busy share one log
        entry (group commit); each still succeeds or fails on its own."""
        packed = pack_txn(ops)
        if self._engine is None:
            raise RaftUnavailable("the Raft node is not running")
        slot = _Slot(packed)
        self._pending.append(slot)
        self._have_pending.set()
        with trio.move_on_after(timeout):
            await slot.done.wait()
        if not slot.done.is_set():
            raise RaftUnavailable(f"no commit within {timeout:g} s (no quorum?); the outcome is unknown")
        if slot.error != FAIL_REASON.SUCCESS:
            raise RaftUnavailable(_FAIL_TEXT.get(slot.error, f"Raft refused the command (reason {slot.error})"))
        return TxnResult.from_wire(slot.result)

    async def _submit_loop(self) -> None:
        """Hand pending transactions to pysyncobj, as many per log entry as fit."""
        while True:
            await self._have_pending.wait()
            self._have_pending = trio.Event()
            while self._pending:
                slots: list[_Slot] = []
                size = 0
                while self._pending and len(slots) < MAX_BATCH:
                    if slots and size + len(self._pending[0].packed) > MAX_COMMAND - 16:
                        break
                    slot = self._pending.popleft()
                    slots.append(slot)
                    size += len(slot.packed)
                payload = bytes([REGULAR]) + _array_header(len(slots)) + b"".join(s.packed for s in slots)
                self._engine._applyCommand(payload, functools.partial(self._on_batch_done_threaded, slots))

    def _on_batch_done_threaded(self, slots: list["_Slot"], res: Any, err: int) -> None:
        self._to_trio(self._on_batch_done, slots, res, err)

    @staticmethod
    def _on_batch_done(slots: list["_Slot"], res: Any, err: int) -> None:
        for i, slot in enumerate(slots):
            slot.error = err
            if err == FAIL_REASON.SUCCESS:
                slot.result = res[i] if isinstance(res, list) and i < len(res) else \
                    (res if isinstance(res, dict) else TxnResult(False, 0, (), "internal", "no result").to_wire())
            slot.done.set()

    # -- membership -------------------------------------------------------------------------
    def members(self) -> list[str]:
        engine = self._engine
        names = [n.id for n in engine.otherNodes] if engine else []
        return sorted(names + [self.config.name])

    async def _change(self, action: str, name: str, timeout: float) -> None:
        deadline = trio.current_time() + timeout
        delay = 0.05
        while True:
            engine = self._engine
            try:
                await self._submit(lambda cb: engine.change_membership(action, name, cb),
                                   max(0.1, deadline - trio.current_time()))
                return
            except RaftUnavailable:
                if trio.current_time() + delay >= deadline:
                    raise
            await trio.sleep(delay)  # another change is in flight: changes go one at a time
            delay = min(delay * 2, 0.5)

    async def add_member(self, node_id: str, address: str, timeout: float = 10.0) -> None:
        """Add a manager; returns once the change is committed."""
        name = member_name(node_id, address)
        Peer(name)
        async with self._membership_lock:
            if name in self.members():
                return
            await self._change("add", name, timeout)

    async def remove_member(self, node_id: str, timeout: float = 10.0) -> None:
        """Remove a manager (by node ID); a leader hands leadership over first."""
        async with self._membership_lock:
            names = [m for m in self.members() if node_id_of(m) == node_id]
            if not names:
                return
            if names[0] == self.config.name:
                raise RaftError("a member cannot remove itself; ask another manager (leadership is transferred first)")
            await self._change("rem", names[0], timeout)

    async def transfer_leadership(self, target_id: str | None = None, timeout: float = 5.0) -> str:
        """Hand leadership to `target_id` (or the most caught-up member); returns the new leader's ID."""
        engine = self._engine
        target = None
        if target_id is not None:
            matches = [m for m in self.members() if node_id_of(m) == target_id]
            if not matches:
                raise RaftError(f"{target_id} is not a member of the Raft group")
            target = matches[0]
        with trio.move_on_after(timeout):
            while True:
                await self._submit(lambda cb: engine.run_in_tick(lambda: engine.transferLeadership(target, cb)),
                                   timeout)
                with trio.move_on_after(max(self.config.election_timeout) * 3):
                    while self.leader_name in (None, self.config.name):
                        await trio.sleep(0.02)
                    return node_id_of(self.leader_name)
        raise RaftUnavailable("leadership transfer did not complete in time")

    async def status(self) -> dict[str, Any]:
        engine = self._engine
        done = trio.Event()
        box: dict[str, Any] = {}

        def read() -> None:
            st = engine.getStatus()
            st["members"] = sorted([n.id for n in engine.otherNodes] + [self.config.name])
            self._to_trio(lambda: (box.update(st), done.set()))

        engine.run_in_tick(read)
        with trio.fail_after(5):
            await done.wait()
        role = {0: "follower", 1: "candidate", 2: "leader"}[box["state"]]
        peers = []
        for name in box["members"]:
            if name == self.config.name:
                continue
            peers.append({
                "name": name,
                "node_id": node_id_of(name),
                "connected": box.get("partner_node_status_server_" + name, 0) == 2,
                "match_index": box.get("match_idx_server_" + name),
                "next_index": box.get("next_node_idx_server_" + name),
            })
        leader = box["leader"]
        return {
            "node_id": self.config.node_id,
            "name": self.config.name,
            "role": role,
            "acting_leader": self.is_leader(),
            "leader": node_id_of(leader.id) if leader is not None else None,
            "leader_name": leader.id if leader is not None else None,
            "term": box["raft_term"],
            "commit_index": box["commit_idx"],
            "applied_index": box["last_applied"],
            "store_index": self.state.index,
            "log_length": box["log_len"],
            "has_quorum": box["has_quorum"],
            "peers": peers,
            "acked_truncations": self._journal.acked_truncations if self._journal else 0,
            "append_rewrites": self._transport.append_rewrites if self._transport else 0,
            "security_events": len(self.security_events),
            "journal": "memory (unsafe)" if self.config.memory_journal else "disk",
        }


_FAIL_TEXT = {
    FAIL_REASON.QUEUE_FULL: "the Raft command queue is full; retry",
    FAIL_REASON.MISSING_LEADER: "there is no Raft leader (no quorum?); retry",
    FAIL_REASON.DISCARDED: "the command was discarded by a leader change; retry",
    FAIL_REASON.NOT_LEADER: "the node asked is no longer the leader; retry",
    FAIL_REASON.LEADER_CHANGED: "the leader changed before the command committed; the outcome is unknown",
    FAIL_REASON.REQUEST_DENIED: "Raft denied the request (another membership change is in flight?)",
    FAIL_REASON.UNKNOWN_OUTCOME: "the outcome of the command is unknown; retry",
}


@asynccontextmanager
async def open_raft_node(config: RaftConfig) -> AsyncIterator[RaftNode]:
    """Run a RaftNode for the duration of the block."""
    node = RaftNode(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()

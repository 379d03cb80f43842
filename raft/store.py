"""The versioned record store that Raft replicates.

How it works. State is `kind -> id -> Record(version, data)`, where data is
opaque bytes (the layers above put msgpack there). A transaction is a list of
create/update/delete operations applied all or nothing: every operation's
expectation is checked first (create: the record must not exist; update and
delete: the record must exist and, when `expect` is given, have exactly that
version), then all are applied. A record's version is the log index of the
transaction that last wrote it, so versions only grow and the store's global
version (`index`) is the applied log index. One log entry may carry a batch
of transactions (group commit); the n-th transaction of the entry at index i
writes version `i << 16 | n`, so every write has its own version and a
compare-and-set never mistakes one write for another.

`RecordStore.apply` is deterministic and never raises: a bad transaction
becomes an error result. That is what lets it run inside pysyncobj's apply
loop, where an exception would wedge the whole cluster.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import msgpack

ACTIONS = ("create", "update", "delete")
MAX_TXN_OPS = 10_000


@dataclass(frozen=True)
class Op:
    action: str
    kind: str
    id: str
    data: bytes | None = None
    expect: int | None = None

    @staticmethod
    def create(kind: str, id: str, data: bytes) -> "Op":
        return Op("create", kind, id, data)

    @staticmethod
    def update(kind: str, id: str, data: bytes, expect: int | None = None) -> "Op":
        return Op("update", kind, id, data, expect)

    @staticmethod
    def delete(kind: str, id: str, expect: int | None = None) -> "Op":
        return Op("delete", kind, id, None, expect)


@dataclass(frozen=True)
class Record:
    version: int
    data: bytes


@dataclass(frozen=True)
class Event:
    index: int
    kind: str
    id: str
    action: str


@dataclass(frozen=True)
class TxnResult:
    ok: bool
    index: int
    versions: tuple[int, ...] = ()
    error_code: str = ""
    error: str = ""

    def to_wire(self) -> dict:
        return {"ok": self.ok, "index": self.index, "versions": list(self.versions),
                "error_code": self.error_code, "error": self.error}

    @staticmethod
    def from_wire(d: dict) -> "TxnResult":
        return TxnResult(d["ok"], d["index"], tuple(d["versions"]), d["error_code"], d["error"])


class TxnError(Exception):
    """A transaction that cannot apply; `code` is conflict|invalid."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


VERSION_SHIFT = 16
MAX_BATCH = (1 << VERSION_SHIFT) - 1


def version_of(index: int, seq: int) -> int:
    return index << VERSION_SHIFT | seq


def txn_to_wire(ops: Sequence[Op]) -> list:
    return [[o.action, o.kind, o.id, o.expect, o.data] for o in ops]


# One transaction must fit one log entry below pysyncobj's chunking threshold
# (chunked entries are refused): every store, in-memory ones too, enforces it.
MAX_COMMAND = 48 * 1024


def pack_txn(ops: Sequence[Op]) -> bytes:
    """A transaction's wire bytes; TxnError if it is too big for one log entry."""
    packed = msgpack.packb(txn_to_wire(ops), use_bin_type=True)
    if len(packed) > MAX_COMMAND - 16:
        raise TxnError("invalid", f"transaction of {len(packed)} bytes exceeds the {MAX_COMMAND}-byte limit")
    return packed


def encode_batch(txns: Sequence[list]) -> bytes:
    """One log entry's payload: a list of transactions in wire form."""
    return msgpack.packb(list(txns), use_bin_type=True)


def decode_batch(payload: bytes) -> list["list[Op] | TxnError"]:
    """Parse a log entry; a malformed transaction becomes a TxnError in its slot."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:
        raise TxnError("invalid", "undecodable log entry") from None
    if not isinstance(raw, list) or len(raw) > MAX_BATCH:
        raise TxnError("invalid", "a log entry is a list of transactions")
    txns: list[list[Op] | TxnError] = []
    for item in raw:
        try:
            txns.append(txn_from_wire(item))
        except TxnError as exc:
            txns.append(exc)
    return txns


def txn_from_wire(raw: Any) -> list[Op]:
    """Parse a transaction, refusing anything that is not exactly our shape."""
    if not isinstance(raw, list) or len(raw) > MAX_TXN_OPS:
        raise TxnError("invalid", "a transaction is a list of at most %d operations" % MAX_TXN_OPS)
    ops = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 5):
            raise TxnError("invalid", "malformed operation")
        action, kind, rid, expect, data = item
        if action not in ACTIONS or not isinstance(kind, str) or not isinstance(rid, str) or not kind or not rid:
            raise TxnError("invalid", f"malformed operation {action!r} on {kind!r}/{rid!r}")
        if expect is not None and (not isinstance(expect, int) or isinstance(expect, bool)):
            raise TxnError("invalid", "expected version must be an integer")
        if action == "delete":
            data = None
        elif not isinstance(data, bytes):
            raise TxnError("invalid", f"{action} of {kind}/{rid} needs bytes data")
        ops.append(Op(action, kind, rid, data, expect))
    return ops


@dataclass
class RecordStore:
    """The state machine. Thread-safe: Raft applies in its thread, trio reads."""

    index: int = 0
    records: dict[str, dict[str, Record]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # kind -> the log index at which a record of that kind last changed (readers cache what
    # they derive from a kind, and recompute only when this moves; a snapshot load moves all)
    changed: dict[str, int] = field(default_factory=dict)

    def check(self, ops: Sequence[Op]) -> None:
        """Raise TxnError if `ops` would not apply now (as a whole)."""
        seen: dict[tuple[str, str], Record | None] = {}
        for op in ops:
            key = (op.kind, op.id)
            current = seen[key] if key in seen else self.records.get(op.kind, {}).get(op.id)
            if op.action == "create":
                if current is not None:
                    raise TxnError("conflict", f"{op.kind} {op.id} already exists")
                seen[key] = Record(0, b"")
            else:
                if current is None:
                    raise TxnError("conflict", f"{op.kind} {op.id} does not exist")
                if op.expect is not None and current.version != op.expect:
                    raise TxnError(
                        "conflict",
                        f"{op.kind} {op.id} is at version {current.version}, not {op.expect}",
                    )
                seen[key] = None if op.action == "delete" else Record(-1, b"")

    def apply(self, ops: Sequence[Op], index: int) -> tuple[TxnResult, list[Event]]:
        """Apply one transaction at log index `index`. Never raises."""
        results, events = self.apply_batch([list(ops)], index)
        return results[0], events

    def apply_batch(self, txns: Sequence["list[Op] | TxnError"], index: int) -> tuple[list[TxnResult], list[Event]]:
        """Apply the transactions of the log entry at `index`, in order. Never raises."""
        with self.lock:
            if index <= self.index:
                # Replayed below what a snapshot already holds: nothing to do.
                stale = TxnResult(False, self.index, (), "stale", "already applied")
                return [stale for _ in txns], []
            results: list[TxnResult] = []
            events: list[Event] = []
            for seq, ops in enumerate(txns):
                if isinstance(ops, TxnError):
                    results.append(TxnResult(False, index, (), ops.code, str(ops)))
                    continue
                try:
                    self.check(ops)
                except TxnError as exc:
                    results.append(TxnResult(False, index, (), exc.code, str(exc)))
                    continue
                version = version_of(index, seq)
                for op in ops:
                    self.changed[op.kind] = index
                    bucket = self.records.setdefault(op.kind, {})
                    if op.action == "delete":
                        del bucket[op.id]
                    else:
                        bucket[op.id] = Record(version, op.data or b"")
                    events.append(Event(index, op.kind, op.id, op.action))
                results.append(TxnResult(True, index, tuple(version for _ in ops)))
            self.index = index
            return results, events

    def advance(self, index: int) -> None:
        """Move the applied index past a log entry that holds no transaction."""
        with self.lock:
            if index > self.index:
                self.index = index

    def changed_at(self, kind: str) -> int:
        """The log index at which a record of `kind` last changed (0: never here)."""
        return self.changed.get(kind, 0)

    def get(self, kind: str, id: str) -> Record | None:
        with self.lock:
            return self.records.get(kind, {}).get(id)

    def list(self, kind: str) -> dict[str, Record]:
        with self.lock:
            return dict(self.records.get(kind, {}))

    def kinds(self) -> list[str]:
        with self.lock:
            return sorted(k for k, v in self.records.items() if v)

    def dump(self) -> dict[str, Any]:
        with self.lock:
            return {
                "index": self.index,
                "records": {
                    kind: {rid: [rec.version, rec.data] for rid, rec in bucket.items()}
                    for kind, bucket in self.records.items()
                },
            }

    def load(self, dumped: dict[str, Any]) -> None:
        records = {
            kind: {rid: Record(int(v), bytes(d)) for rid, (v, d) in bucket.items()}
            for kind, bucket in dumped["records"].items()
        }
        with self.lock:
            self.index = int(dumped["index"])
            self.records = records
            self.changed = {kind: self.index for kind in records}


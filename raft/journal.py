"""The durable Raft journal: pysyncobj's Journal interface, made crash-safe.

How it works. Entries live in memory (pysyncobj indexes them by position) and
in an append-only file of records:

    record = length (4 bytes, big-endian) | crc32 (4 bytes) | payload
    payload = msgpack([command, idx, term]), sealed with the cluster's data key
              (raft/cipher.py) when the journal has one

The checksum covers the stored payload, so a torn tail is found without the
key; a record whose checksum is right but which the key cannot open is a
wrong key or tampering, and stops the node instead of being cut off.

`add()` appends a record with one write(2) but does not sync; `flush()`
fdatasyncs everything appended so far. The transport calls `flush()` before
any byte that acknowledges an entry leaves the node (a follower's
`next_node_idx`, a leader's `append_entries`) and once per tick, before the
leader's next commit computation counts its own log. That is group commit:
one fdatasync per outgoing batch, and no entry is ever counted or
acknowledged before it is on disk.

Term, vote and the commit index live in a small meta file replaced
atomically (temp file, fsync, rename, fsync of the directory). Term and vote
are written before pysyncobj acts on them (it sends votes after
`setCurrentTerm` returns).

Truncating the tail (`deleteEntriesFrom`) is an ftruncate at a record
boundary plus fsync. Dropping the head after a snapshot (`deleteEntriesTo`)
and `clear()` rewrite the file atomically. On open, a torn or corrupt tail
(short record, bad checksum, undecodable payload) is cut off at the last good
record, with a log line saying how much was dropped.

A failed write is the end of this node's run, never something to retry or
skip: a full disk or an I/O error in any method that changes the journal or
the meta file calls `on_io_error` (the node stops the process, loudly) and
raises, and the journal refuses every later change. Otherwise pysyncobj
would log the error, carry on, and could acknowledge an entry that is not
on disk.

`volatile=True` is the unsafe option for throwaway labs (`swarm daemon
--unsafe-memory-journal`): the journal loads what the file holds when the
node starts and from then on keeps new entries in memory only (term and vote
stay durable). A restart rolls the node back to where it started, so a
restart of every manager loses acknowledged writes. The chaos suite uses it
to prove that its lost-write invariant fires.

A journal opened with a data key whose file was written without one (a node
from before encryption at rest) is rewritten sealed when it is opened.
"""
from __future__ import annotations

import functools
import logging
import os
import struct
import zlib
from typing import Any, Callable, TypeVar

import msgpack
import raft.inet_fix  # noqa: F401  (before pysyncobj: see there)
from pysyncobj.journal import Journal

from raft.cipher import DataCipher, DecryptError
from raft.fsutil import atomic_write, fsync_dir

log = logging.getLogger(__name__)

RECORD_HEADER = struct.Struct(">II")
MAGIC = b"SWRAFTJ1"             # records in the clear
SEALED_MAGIC = b"SWRAFTJ2"      # records sealed with the data key
JOURNAL_PURPOSE = b"swarm raft journal"
META_VERSION = 1


F = TypeVar("F", bound=Callable[..., Any])


class JournalIOError(OSError):
    """The journal could not be written; the node must stop."""


def _stop_on_io_error(method: F) -> F:
    """Turn an OSError in a journal change into a stop of the node (see the module docstring)."""

    @functools.wraps(method)
    def guarded(self: "DurableJournal", *args: Any) -> Any:
        if self.broken:
            raise JournalIOError(self.broken)
        try:
            return method(self, *args)
        except OSError as exc:
            self.broken = (f"the Raft journal in {self.directory} cannot be written ({exc}); stopping, "
                           "because an entry that is not on disk must never be acknowledged")
            log.critical(self.broken)
            if self.on_io_error is not None:
                self.on_io_error(self.broken)
            raise JournalIOError(self.broken) from exc

    return guarded  # type: ignore[return-value]


def encode_record(command: bytes, idx: int, term: int, cipher: DataCipher | None = None) -> bytes:
    payload = msgpack.packb([command, idx, term], use_bin_type=True)
    if cipher is not None:
        payload = cipher.seal(payload, JOURNAL_PURPOSE)
    return RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class JournalKeyError(RuntimeError):
    """The journal's records cannot be opened with the data key given (or none was given)."""


def decode_records(data: bytes, start: int = 0,
                   cipher: DataCipher | None = None) -> tuple[list[tuple[bytes, int, int]], list[int], int, str]:
    """Parse records from `data[start:]`, opening each with `cipher` if given.

    Returns (entries, offsets of each record, offset of the end of the last
    good record, reason the scan stopped early or ""). A whole record that
    `cipher` cannot open raises JournalKeyError: it is not a torn tail.
    """
    entries: list[tuple[bytes, int, int]] = []
    offsets: list[int] = []
    pos = start
    end = len(data)
    while pos < end:
        if end - pos < RECORD_HEADER.size:
            return entries, offsets, pos, "short record header"
        length, crc = RECORD_HEADER.unpack_from(data, pos)
        body_start = pos + RECORD_HEADER.size
        if end - body_start < length:
            return entries, offsets, pos, "short record body"
        payload = data[body_start : body_start + length]
        if zlib.crc32(payload) != crc:
            return entries, offsets, pos, "checksum mismatch"
        if cipher is not None:
            try:
                payload = cipher.open(payload, JOURNAL_PURPOSE)
            except DecryptError as exc:
                raise JournalKeyError(f"the Raft journal record at byte {pos} {exc}") from None
        try:
            command, idx, term = msgpack.unpackb(payload, raw=False)
            entry = (bytes(command), int(idx), int(term))
        except Exception:
            return entries, offsets, pos, "undecodable record"
        if entries and entry[1] != entries[-1][1] + 1:
            return entries, offsets, pos, "index gap"
        entries.append(entry)
        offsets.append(pos)
        pos = body_start + length
    return entries, offsets, pos, ""


class DurableJournal(Journal):
    """Crash-safe journal in `directory` (files `journal` and `meta`); see the module docstring."""

    def __init__(self, directory: str, *, volatile: bool = False,
                 on_io_error: Callable[[str], None] | None = None, cipher: DataCipher | None = None) -> None:
        self.directory = directory
        self.cipher = cipher
        self.volatile = volatile
        self.on_io_error = on_io_error
        self.broken = ""            # why the journal stopped accepting changes ("" while healthy)
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "journal")
        self.meta_path = os.path.join(directory, "meta")
        self._fd: int | None = None
        self._size = 0
        self._entries: list[tuple[bytes, int, int]] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._dirty = False
        self._term = 0
        self._voted_for: str | None = None
        self._commit_index = 0
        self._persisted_commit = 0
        # Test and status hooks: entries this node acknowledged to the leader
        # of term `acked_term`, and how often such an entry was deleted.
        self.acked_index = 0
        self.acked_term = -1
        self.acked_truncations = 0
        self.on_delete_from: Callable[[int], None] | None = None
        self._load_meta()
        self._load()

    # -- loading -----------------------------------------------------------
    def _load_meta(self) -> None:
        try:
            with open(self.meta_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return
        if len(raw) < 4 or zlib.crc32(raw[4:]) != struct.unpack(">I", raw[:4])[0]:
            raise RuntimeError(f"the Raft meta file {self.meta_path} is corrupt; refusing to start")
        meta = msgpack.unpackb(raw[4:], raw=False)
        self._term = int(meta["term"])
        self._voted_for = meta["voted_for"]
        self._commit_index = self._persisted_commit = int(meta["commit"])

    def _load(self) -> None:
        if not os.path.exists(self.path):
            self._rewrite([])
            return
        with open(self.path, "rb") as f:
            data = f.read()
        magic = data[:len(MAGIC)]
        if magic not in (MAGIC, SEALED_MAGIC):
            if len(data) < len(MAGIC):
                log.warning("journal %s has a torn header; starting it afresh", self.path)
                self._rewrite([])
                return
            raise RuntimeError(f"{self.path} is not a swarm Raft journal; refusing to start")
        if magic == SEALED_MAGIC and self.cipher is None:
            raise JournalKeyError(f"the Raft journal {self.path} is encrypted and no data key was given")
        cipher = self.cipher if magic == SEALED_MAGIC else None
        entries, offsets, good_end, reason = decode_records(data, len(MAGIC), cipher)
        if magic == MAGIC and self.cipher is not None and not self.volatile:
            log.warning("journal %s was written in the clear; rewriting its %d entries encrypted",
                        self.path, len(entries))
            self._rewrite(entries)
            return
        if reason:
            log.warning(
                "journal %s: %s at byte %d; truncating %d bytes of torn or corrupt tail (kept %d entries)",
                self.path, reason, good_end, len(data) - good_end, len(entries),
            )
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
        self._entries = entries
        self._offsets = offsets
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = good_end

    def _rewrite(self, entries: list[tuple[bytes, int, int]]) -> None:
        """Atomically replace the journal file with exactly `entries`."""
        magic = MAGIC if self.cipher is None else SEALED_MAGIC
        chunks = [magic]
        offsets = []
        pos = len(magic)
        for entry in entries:
            rec = encode_record(*entry, self.cipher)
            offsets.append(pos)
            chunks.append(rec)
            pos += len(rec)
        if not self.volatile:
            if getattr(self, "_fd", None) is not None:
                os.close(self._fd)
                self._fd = None
            atomic_write(self.path, b"".join(chunks))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._entries = list(entries)
        self._offsets = offsets
        self._size = pos
        self._dirty = False

    # -- pysyncobj Journal interface ------------------------------------------
    @_stop_on_io_error
    def add(self, command: bytes, idx: int, term: int) -> None:
        rec = encode_record(command, idx, term, self.cipher)
        if not self.volatile:
            view = memoryview(rec)
            while view:                       # a full disk may take part of a record, then refuse
                view = view[os.write(self._fd, view):]
        self._offsets.append(self._size)
        self._size += len(rec)
        self._entries.append((command, idx, term))
        self._dirty = True

    @_stop_on_io_error
    def flush(self) -> None:
        """Make every added entry durable (group commit point)."""
        if self._dirty:
            if not self.volatile:
                os.fdatasync(self._fd)
            self._dirty = False

    @property
    def dirty(self) -> bool:
        return self._dirty

    @_stop_on_io_error
    def clear(self) -> None:
        self._rewrite([])

    @_stop_on_io_error
    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        first_idx = self._entries[entryFrom][1]
        if first_idx <= self.acked_index and self.acked_term == self._term:
            self.acked_truncations += 1
            log.critical(
                "deleting entries from %d that this node acknowledged (acked through %d in term %d)",
                first_idx, self.acked_index, self._term,
            )
        if self.on_delete_from is not None:
            self.on_delete_from(first_idx)
        cut = self._offsets[entryFrom]
        if not self.volatile:
            os.ftruncate(self._fd, cut)
            os.fsync(self._fd)
        self._size = cut
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._dirty = False
        if self._commit_index > (self._entries[-1][1] if self._entries else 0):
            self._commit_index = self._entries[-1][1] if self._entries else 0

    @_stop_on_io_error
    def deleteEntriesTo(self, entryTo: int) -> None:
        # The snapshot that makes these entries redundant was renamed into
        # place by pysyncobj without a directory fsync: make the rename
        # durable before the entries it replaces disappear.
        fsync_dir(self.directory)
        self.flush()
        self._rewrite(self._entries[entryTo:])

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self.broken:               # nothing more can be written; just let go of the file
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            return
        self.flush()
        self._persist_meta()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # The commit index is a hint for restart (Raft does not need it
        # durable); it is written with the meta file, never fsynced alone.
        self._commit_index = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        last = self._entries[-1][1] if self._entries else 0
        return min(self._commit_index, last)

    @_stop_on_io_error
    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        voted = None if votedForNodeId is None else str(votedForNodeId)
        if term == self._term and voted == self._voted_for:
            return
        self._term = term
        self._voted_for = voted
        self._persist_meta()

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> Any:
        return self._voted_for

    @_stop_on_io_error
    def onOneSecondTimer(self) -> None:
        if self._commit_index != self._persisted_commit:
            self.flush()
            self._persist_meta()

    def _persist_meta(self) -> None:
        self.flush()  # the commit hint must never point past the durable log
        commit = min(self._commit_index, self.last_index())
        body = msgpack.packb(
            {"v": META_VERSION, "term": self._term, "voted_for": self._voted_for, "commit": commit},
            use_bin_type=True,
        )
        atomic_write(self.meta_path, struct.pack(">I", zlib.crc32(body)) + body)
        self._persisted_commit = self._commit_index

    # -- helpers for the transport and recovery ---------------------------------
    def last_index(self) -> int:
        return self._entries[-1][1] if self._entries else 0

    def term_at(self, idx: int) -> int | None:
        """Term of the entry with log index `idx`, or None if not held."""
        if not self._entries:
            return None
        pos = idx - self._entries[0][1]
        if 0 <= pos < len(self._entries):
            return self._entries[pos][2]
        return None

    def drop_before(self, idx: int) -> None:
        """Finish an interrupted compaction: keep entries from index `idx` on."""
        if self._entries and self._entries[0][1] < idx:
            pos = idx - self._entries[0][1]
            self.deleteEntriesTo(min(pos, len(self._entries)))

"""Reading a container's log files (CRI format, written by conmon, rotated by `rotate`).

Each line: `<RFC 3339 nano> <stdout|stderr> <F|P> <content>`. Partial (P)
entries are joined with the following entries of the same stream; the joined
line carries the timestamp of its first part. conmon writes the time with a
zone offset (it runs with TZ=UTC: "...123456789+00:00"), the log shim of
earlier versions wrote "...123456789Z": lines are read in either form and
always given out in the second (`parse_line`); comparisons use only the
fixed-width part both share (TS_CMP characters, to the nanosecond).

How this works. conmon appends to container.log; the runtime rotates it
(runcmon.py decides when) with `rotate`: under an exclusive flock of the
bundle directory, container.log.(N-2) -> .(N-1), ..., container.log -> .1,
then it asks the writer to reopen and waits until a new container.log is
there before letting readers in again, so a rotated file that a reader can
see never grows again. A reader names a place
with a `Cursor`: the file's identity (inode, plus the file's first bytes so
that a reused inode is not taken for the deleted file) and a byte offset.
`read_chunk` holds a shared flock only while it opens the files, then reads
at most about `budget` bytes from the cursor in BLOCK steps, and moves on to
the next newer file once a rotated one is read to its end: nothing is lost or
repeated across a rotation, unless the reader falls max-file rotations behind
(then it goes on with the oldest file still there, as Docker's reader does).

A chunk only ends where no partial line is pending (a "cut"), so a cursor
never has to carry half a line; every line says whether a cut follows it
(`cut` = (file index, offset)), which lets the manager stop a chunk early
when it merges several tasks by time. A joined line longer than MAX_JOINED
is given out in pieces, so a line without a newline cannot grow a chunk
without bound. A cursor may carry `until` (the end of the files when the
read began): `service logs` without --follow stops there even if the task
writes faster than it is read. `start_cursor` places the first cursor,
reading backwards from the end in BLOCK steps for --tail, and for --since
seeking the first line at or after that time: lines are appended in time
order, so the newest file that starts before it holds it, and a binary
search over line starts finds it in that file (about log2(size/BLOCK) reads).
`read_chunk` then drops the lines before `since` that the seek leaves (at
most about one BLOCK) and stops at the first line after `until_time`.
Times are compared as text: the files and the bounds carry the same fixed
RFC 3339 UTC format with nanoseconds.

Everything here is synchronous file I/O: call it in a worker thread.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from swarm.runtime.base import LogEntry

LOG_NAME = "container.log"
BLOCK = 64 * 1024            # one read
HEAD = 40                    # bytes that identify a file: its first entry's timestamp and stream
MAX_JOINED = 64 * 1024       # a longer line (joined P entries) is given out in pieces
CHUNK_BYTES = 1024 * 1024    # default budget of one read_chunk
TS_LEN = len("2006-01-02T15:04:05.000000000Z")   # a line's timestamp as given out
TS_CMP = TS_LEN - 1          # the part of a timestamp compared: both forms agree to the nanosecond
UTC_OFFSET = b"+00:00"       # conmon's zone suffix (TZ=UTC), given out as "Z"


class CursorError(ValueError):
    """A cursor from the wire that is not one of ours."""


@dataclass(frozen=True)
class FileId:
    ino: int
    head: bytes              # the file's first bytes (fewer if it was shorter then)

    def matches(self, ino: int, head: bytes) -> bool:
        return self.ino == ino and head.startswith(self.head)


@dataclass(frozen=True)
class Cursor:
    file: FileId | None = None       # None: the start of the oldest file there is
    offset: int = 0
    until: tuple[FileId, int] | None = None   # stop at (file, size); None: read on as the task writes
    nothing: bool = False            # a snapshot of a task that had no log yet: nothing to read

    def to_wire(self) -> dict:
        out: dict[str, Any] = {"off": self.offset}
        if self.file is not None:
            out["ino"], out["head"] = self.file.ino, self.file.head
        if self.until is not None:
            out["until"] = [self.until[0].ino, self.until[0].head, self.until[1]]
        if self.nothing:
            out["nothing"] = True
        return out

    @classmethod
    def from_wire(cls, data: Any) -> Cursor:
        """A cursor a client sent back; raises CursorError naming what is wrong."""
        if not isinstance(data, dict):
            raise CursorError("a log cursor must be a map")
        off = data.get("off", 0)
        if not _is_int(off) or off < 0:
            raise CursorError("a log cursor's offset must be a non-negative integer")
        file = None
        if "ino" in data:
            file = _file_id(data.get("ino"), data.get("head"))
        until = None
        if data.get("until") is not None:
            u = data["until"]
            if not (isinstance(u, list) and len(u) == 3 and _is_int(u[2]) and u[2] >= 0):
                raise CursorError("a log cursor's until must be [inode, head, size]")
            until = (_file_id(u[0], u[1]), u[2])
        return cls(file, off, until, bool(data.get("nothing")))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _file_id(ino: Any, head: Any) -> FileId:
    if not _is_int(ino) or ino < 0 or not isinstance(head, bytes) or len(head) > HEAD:
        raise CursorError("a log cursor names its file by an inode and at most 40 bytes")
    return FileId(ino, head)


@dataclass
class Chunk:
    """Lines read from one task's log files, and where to go on."""
    lines: list[tuple[str, str, str, tuple[int, int] | None]] = field(default_factory=list)
    files: list[FileId] = field(default_factory=list)   # what the cuts' file indexes name
    cursor: Cursor = Cursor()        # where the next read goes on
    start: Cursor = Cursor()         # where this one began
    eof: bool = True                 # nothing more to read now (or ever, with until)
    lost: bool = False               # the cursor's file had been rotated away: lines were lost

    def to_wire(self, task_id: str) -> dict:
        return {"task_id": task_id, "lines": [list(line) for line in self.lines],
                "files": [[f.ino, f.head] for f in self.files], "start": self.start.to_wire(),
                "cursor": self.cursor.to_wire(), "eof": self.eof, "lost": self.lost}


# -- parsing --------------------------------------------------------------------------


def parse_line(raw: bytes) -> tuple[str, str, str, bytes] | None:
    """(timestamp, stream, tag, content) of one log file line (without its newline)."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return None
    if parts[0].endswith(UTC_OFFSET):
        parts[0] = parts[0][:-len(UTC_OFFSET)] + b"Z"
    ts, stream, tag = (p.decode("ascii", "replace") for p in parts[:3])
    return ts, stream, tag, parts[3] if len(parts) == 4 else b""


class Joiner:
    """Turns raw log file lines into LogEntry values, joining partial entries
    (a joined line of MAX_JOINED bytes or more is given out as it stands)."""

    def __init__(self, max_joined: int = MAX_JOINED) -> None:
        self.partial: dict[str, tuple[str, list[bytes], int]] = {}
        self.max_joined = max_joined

    def feed(self, lines: Iterable[bytes]) -> Iterator[LogEntry]:
        for raw in lines:
            entry = self.feed_one(raw)
            if entry is not None:
                yield entry

    def feed_one(self, raw: bytes) -> LogEntry | None:
        parsed = parse_line(raw)
        if parsed is None:
            return None
        ts, stream, tag, content = parsed
        if tag == "P":
            first_ts, parts, size = self.partial.get(stream, (ts, [], 0))
            parts.append(content)
            if size + len(content) < self.max_joined:
                self.partial[stream] = (first_ts, parts, size + len(content))
                return None
            self.partial.pop(stream, None)
            return LogEntry(first_ts, stream, b"".join(parts).decode("utf-8", "replace"))
        if stream in self.partial:
            first_ts, parts, _ = self.partial.pop(stream)
            ts, content = first_ts, b"".join(parts) + content
        return LogEntry(ts, stream, content.decode("utf-8", "replace"))

    @property
    def pending(self) -> bool:
        return bool(self.partial)

    def flush(self) -> list[LogEntry]:
        """The pending partial lines as they stand (at the end of a snapshot)."""
        out = [LogEntry(ts, stream, b"".join(parts).decode("utf-8", "replace"))
               for stream, (ts, parts, _) in self.partial.items()]
        self.partial.clear()
        return sorted(out)


# -- the files ------------------------------------------------------------------------


@dataclass
class _File:
    f: Any                           # an open binary file
    id: FileId
    size: int


@contextlib.contextmanager
def _open_chain(bundle: str) -> Iterator[list[_File]]:
    """container.log, .1, .2, ... opened, newest first, as one consistent set:
    the shim does not rotate while we hold the shared lock."""
    files: list[_File] = []
    try:
        dir_fd = os.open(bundle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield files
        return
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_SH)
        try:
            index = 0
            while True:
                name = LOG_NAME if index == 0 else f"{LOG_NAME}.{index}"
                try:
                    f = open(os.path.join(bundle, name), "rb")
                except FileNotFoundError:
                    break
                st = os.fstat(f.fileno())
                files.append(_File(f, FileId(st.st_ino, os.pread(f.fileno(), HEAD, 0)), st.st_size))
                index += 1
        finally:
            fcntl.flock(dir_fd, fcntl.LOCK_UN)
    finally:
        os.close(dir_fd)
    try:
        yield files
    finally:
        for entry in files:
            entry.f.close()


def _find(chain: list[_File], fid: FileId) -> int | None:
    for i, entry in enumerate(chain):
        if fid.matches(entry.id.ino, entry.id.head):
            return i
    return None


def start_cursor(bundle: str, tail: int | None, follow: bool, since: str | None = None,
                 final: bool = False) -> Cursor:
    """Where a read of this task starts: the oldest line, or `tail` lines from the end,
    or (given `since`) at the latest where its lines begin; without follow, also where
    it ends (the end of what is written now). `final`: as for read_chunk (a last P entry
    counts as a line for --tail)."""
    with _open_chain(bundle) as chain:
        if not chain:
            return Cursor(nothing=not follow)
        newest = chain[0]
        until = None if follow else (newest.id, newest.size)
        index, offset = _tail_position(chain, tail, final)
        if since is not None:
            # Docker takes the last `tail` lines, then drops those before `since`: start at the later
            # place (a newer file has a lower index).
            at_since = _seek_since(chain, since)
            if (at_since[0], -at_since[1]) < (index, -offset):
                index, offset = at_since
        return Cursor(chain[index].id, offset, until)


def _tail_position(chain: list[_File], tail: int | None, final: bool = False) -> tuple[int, int]:
    """(chain index, offset) where the last `tail` lines begin (None: the oldest line)."""
    if tail is None:
        return len(chain) - 1, 0
    if tail <= 0:
        return 0, _complete_end(chain[0])
    want = tail + 1              # start just after the (tail+1)-th last full line
    if final and _ends_partial(chain[0]):
        want -= 1                # the writer is gone: its last P entry ends a line of its own
    for index, entry in enumerate(chain):
        found, want = _scan_back(entry, _complete_end(entry), want)
        if found is not None:
            return index, found
    return len(chain) - 1, 0


def _seek_since(chain: list[_File], since: str) -> tuple[int, int]:
    """(chain index, offset) of a place a reader can start at, at most about a BLOCK before
    the first line at or after `since` (the reader drops what comes before it)."""
    bound = since.encode()[:TS_CMP]
    index = next((i for i, entry in enumerate(chain) if entry.size and entry.id.head[:TS_CMP] < bound), None)
    if index is None:
        return len(chain) - 1, 0                  # every file starts at or after since: all of it
    entry = chain[index]
    fd = entry.f.fileno()
    lo, hi = 0, _complete_end(entry)
    while hi - lo > BLOCK:                        # lo: 0 or a line before since; the first line after is < hi
        mid = (lo + hi) // 2
        found = _line_at(fd, mid, hi)
        if found is None:
            hi = mid
        elif found[1] < bound:
            lo = found[0]
        else:
            hi = found[0]
    if lo == 0:
        return index, 0
    cut, _ = _scan_back(entry, lo, 1)             # back to just after a full line: never half a joined one
    return index, cut or 0


def _line_at(fd: int, pos: int, end: int) -> tuple[int, bytes] | None:
    """The first line starting at or after pos and before end: (its offset, its timestamp)."""
    data = os.pread(fd, BLOCK, pos - 1)
    nl = data.find(b"\n")
    if nl < 0:
        return None
    start = pos + nl
    if start >= end:
        return None
    return start, os.pread(fd, TS_CMP, start)


def _complete_end(entry: _File) -> int:
    """The end of the file's last complete line (a write may be under way)."""
    if entry.size == 0:
        return 0
    pos = entry.size
    while pos > 0:
        step = min(BLOCK, pos)
        data = os.pread(entry.f.fileno(), step, pos - step)
        nl = data.rfind(b"\n")
        if nl >= 0:
            return pos - step + nl + 1
        pos -= step
    return 0


def _ends_partial(entry: _File) -> bool:
    """Whether the file's last complete entry is a P entry."""
    end = _complete_end(entry)
    if end == 0:
        return False
    data = os.pread(entry.f.fileno(), min(BLOCK, end), end - min(BLOCK, end))
    last = data[data.rfind(b"\n", 0, len(data) - 1) + 1:]
    fields = last.split(b" ", 3)
    return len(fields) >= 3 and fields[2] == b"P"


def _scan_back(entry: _File, end: int, want: int) -> tuple[int | None, int]:
    """The offset just after the want-th last full (F) entry before `end`, or None
    and how many are still wanted. Reads BLOCK by BLOCK; keeps at most one entry."""
    pos, carry = end, b""
    while pos > 0:
        step = min(BLOCK, pos)
        pos -= step
        buf = os.pread(entry.f.fileno(), step, pos) + carry
        stop = len(buf)                       # buf[:stop] ends at an entry boundary
        while True:
            nl = buf.rfind(b"\n", 0, stop - 1)
            if nl < 0 and pos > 0:
                break                         # this entry starts in an earlier block
            start = nl + 1
            fields = buf[start:stop].split(b" ", 3)
            if len(fields) >= 3 and fields[2] == b"F":
                want -= 1
                if want == 0:
                    return pos + stop, 0
            stop = start
            if stop == 0:
                break
        carry = buf[:stop]
    return None, want


def read_chunk(bundle: str, cursor: Cursor, budget: int = CHUNK_BYTES, *, since: str | None = None,
               until_time: str | None = None, final: bool = False) -> Chunk:
    """About `budget` bytes of lines from `cursor` (never more than budget + 2*MAX_JOINED + BLOCK
    read), ending at a cut; `eof` when nothing more is there now (or before `until`).
    Lines before `since` are left out; the first line after `until_time` ends the read
    for good (`eof`, the cursor before that line). `final`: the writer is gone, so a
    partial line at the end of the newest file is complete as it stands (conmon ends
    a last line without a newline with a P entry and no F)."""
    if cursor.nothing:
        return Chunk(cursor=cursor, start=cursor)
    with _open_chain(bundle) as chain:
        return _Reader(chain, cursor, budget, since, until_time, final).run()


class _Reader:
    """One read_chunk: entries from the cursor on, across rotated files, up to the budget."""

    def __init__(self, chain: list[_File], cursor: Cursor, budget: int, since: str | None = None,
                 until_time: str | None = None, final: bool = False) -> None:
        self.chain, self.cursor, self.budget, self.final = chain, cursor, budget, final
        self.since, self.until_time = since, until_time
        self.chunk = Chunk(cursor=cursor, start=cursor, eof=False)
        self.joiner = Joiner()
        self.used = 0
        self.cut: tuple[int, int, int] = (0, 0, 0)    # (lines before it, file index in chunk, offset)

    def run(self) -> Chunk:
        chain, cursor, chunk = self.chain, self.cursor, self.chunk
        until_index = None
        if cursor.until is not None:
            until_index = _find(chain, cursor.until[0])
        if not chain or (cursor.until is not None and until_index is None):
            chunk.eof = True                  # no log, or the snapshot's end was rotated away (all left is newer)
            return chunk
        index, offset = len(chain) - 1, 0
        if cursor.file is not None:
            found = _find(chain, cursor.file)
            if found is None:
                chunk.lost = True             # the reader fell max-file rotations behind
            else:
                index, offset = found, cursor.offset
        if until_index is not None and index < until_index:
            chunk.eof = True
            return chunk
        self.cut = (0, 0, offset)             # a cursor always stands at a cut
        while True:
            entry = chain[index]
            chunk.files.append(entry.id)
            fi = len(chunk.files) - 1
            at_until = until_index == index
            limit = cursor.until[1] if at_until and cursor.until is not None else entry.size
            offset, full = self._read_file(entry, fi, offset, limit)
            if full:
                break
            if at_until or index == 0:
                chunk.eof = True              # the end of the snapshot, or of what is written so far
                if (at_until or self.final) and self.joiner.pending:
                    for line in self.joiner.flush():     # the snapshot ends inside a line
                        chunk.lines.append((*line, (fi, offset)))
                    self.cut = (len(chunk.lines), fi, offset)
                break
            index -= 1                        # a rotated file never grows: go on with the next newer
            offset = 0
        count, fi, off = self.cut
        del chunk.lines[count:]               # what follows the last cut is read again next time
        chunk.cursor = Cursor(chunk.files[fi], off, cursor.until)
        return chunk

    def _read_file(self, entry: _File, fi: int, offset: int, limit: int) -> tuple[int, bool]:
        """Entries of one file from offset up to limit; (new offset, whether the budget is used up)."""
        lines, joiner = self.chunk.lines, self.joiner
        hard = self.budget + 2 * MAX_JOINED
        fd = entry.f.fileno()
        if not joiner.pending:
            self.cut = (len(lines), fi, offset)
        while offset < limit:
            data = os.pread(fd, min(BLOCK, limit - offset), offset)
            end = data.rfind(b"\n") + 1
            if end == 0:
                break                         # a write still under way (entries are far shorter than BLOCK)
            for raw in data[:end - 1].split(b"\n"):
                offset += len(raw) + 1
                self.used += len(raw) + 1
                line = joiner.feed_one(raw)
                if line is not None:
                    if self.until_time is not None and line.timestamp > self.until_time:
                        self.chunk.eof = True         # past --until: this task has nothing more to give
                        return offset, True
                    if self.since is None or line.timestamp >= self.since:
                        lines.append((line.timestamp, line.stream, line.line, None))
                if joiner.pending and self.used >= hard:
                    for forced in joiner.flush():     # no cut for too long: give out what is pending
                        if self.since is None or forced[0] >= self.since:
                            lines.append((*forced, None))
                if not joiner.pending:
                    if lines:
                        lines[-1] = (*lines[-1][:3], (fi, offset))
                    self.cut = (len(lines), fi, offset)
                    if self.used >= self.budget:
                        return offset, True
        return offset, False


# -- rotation -------------------------------------------------------------------------


def rotate(bundle: str, max_file: int, reopen: Callable[[], None] | None, timeout: float = 2.0) -> bool:
    """Rotate the bundle's log files (the oldest past `max_file` dropped) and have the writer
    start a new container.log: `reopen` asks it to (the writer makes the new file), and the
    readers stay out until it is there, so no file they can see grows after a newer one
    exists (`reopen` None: there is no writer any more, an empty container.log is made here).
    False when the writer did not reopen within `timeout` seconds (gone, or stuck: what it
    writes meanwhile lands in the rotated file, nothing is lost)."""
    path = os.path.join(bundle, LOG_NAME)
    dir_fd = os.open(bundle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)    # readers see the files before or after, never halfway
        try:
            if max_file > 1:
                for i in range(max_file - 1, 0, -1):   # the oldest is replaced, so it goes
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(path if i == 1 else f"{path}.{i - 1}", f"{path}.{i}")
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            if reopen is None:
                timeout = 0.0
            else:
                reopen()
            deadline = time.monotonic() + timeout
            while not os.path.exists(path):
                if time.monotonic() >= deadline:
                    # Readers find the rotated files from container.log on: an empty one stands in
                    # (a writer that comes back renames its own new file over it).
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640))
                    return reopen is None
                time.sleep(0.001)
            return True
        finally:
            fcntl.flock(dir_fd, fcntl.LOCK_UN)
    finally:
        os.close(dir_fd)

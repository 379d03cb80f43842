"""Log rotation (logfile.rotate, driven by a stand-in for conmon: tests/unit/crilog.py) and
the chunked reader (runtime/logfile.py), on real files in a temporary bundle directory."""
from __future__ import annotations

import os
import random

import pytest

from swarm.runtime import logfile
from swarm.runtime.logfile import Cursor, CursorError, read_chunk, start_cursor
from tests.unit.crilog import LogWriter


def numbered(writer: LogWriter, start: int, count: int, stream: str = "stdout") -> int:
    writer.feed(stream, b"".join(b"line %d\n" % i for i in range(start, start + count)))
    return start + count


def read_all(bundle: str, cursor: Cursor, budget: int = 4096) -> tuple[list[str], Cursor]:
    """Every line from cursor to eof, chunk by chunk; checks each chunk's size bound."""
    out: list[str] = []
    while True:
        chunk = read_chunk(bundle, cursor, budget)
        assert not chunk.lost
        assert sum(len(line) + 40 for _, _, line, _ in chunk.lines) <= budget + 2 * logfile.MAX_JOINED + 4096
        out.extend(line for _, _, line, _ in chunk.lines)
        cursor = chunk.cursor
        if chunk.eof:
            return out, cursor


def files(bundle: str) -> dict[str, int]:
    return {name: os.path.getsize(os.path.join(bundle, name)) for name in os.listdir(bundle)
            if name.startswith("container.log")}


def test_rotation_keeps_at_most_max_size_times_max_file(tmp_path):
    bundle = str(tmp_path)
    writer = LogWriter(os.path.join(bundle, "container.log"), max_size=64 * 1024, max_file=3)
    n = 0
    for _ in range(200):                       # ~2.5 MB through a 192 KiB budget
        n = numbered(writer, n, 1000)
    on_disk = files(bundle)
    assert sorted(on_disk) == ["container.log", "container.log.1", "container.log.2"]
    assert all(size <= 64 * 1024 for size in on_disk.values())
    lines, _ = read_all(bundle, start_cursor(bundle, None, follow=False))
    # What is left is the newest lines, whole and in order, ending with the last one written.
    first = int(lines[0].split()[1])
    assert lines == [f"line {i}" for i in range(first, n)]


def test_max_file_one_truncates_instead_of_keeping_a_copy(tmp_path):
    writer = LogWriter(os.path.join(tmp_path, "container.log"), max_size=4096, max_file=1)
    numbered(writer, 0, 5000)
    assert list(files(str(tmp_path))) == ["container.log"] and files(str(tmp_path))["container.log"] <= 4096


def test_a_follower_neither_loses_nor_repeats_lines_across_rotations(tmp_path):
    # Invariant: a reader that keeps up within max-file rotations sees every line exactly once,
    # in order, whatever the interleaving of writes, rotations and reads (seeded).
    rng = random.Random(7)
    bundle = str(tmp_path)
    writer = LogWriter(os.path.join(bundle, "container.log"), max_size=8 * 1024, max_file=20)
    cursor = start_cursor(bundle, None, follow=True)
    seen: list[str] = []
    n = 0
    for _ in range(300):
        n = numbered(writer, n, rng.randint(0, 150))
        for _ in range(rng.choice([0, 0, 1, 3])):
            chunk = read_chunk(bundle, cursor, rng.choice([300, 5000, 20000]))
            assert not chunk.lost
            seen.extend(line for _, _, line, _ in chunk.lines)
            cursor = chunk.cursor
    assert len(files(bundle)) == 20
    rest, _ = read_all(bundle, cursor)
    seen.extend(rest)
    assert seen == [f"line {i}" for i in range(n)]


def test_a_reader_that_fell_behind_goes_on_with_the_oldest_file(tmp_path):
    bundle = str(tmp_path)
    writer = LogWriter(os.path.join(bundle, "container.log"), max_size=1024, max_file=2)
    numbered(writer, 0, 10)
    cursor = read_chunk(bundle, start_cursor(bundle, None, follow=True)).cursor
    numbered(writer, 10, 500)                  # many rotations: the cursor's file is gone
    chunk = read_chunk(bundle, cursor)
    assert chunk.lost and chunk.lines[-1][2] == "line 509"


def test_tail_reads_backwards_across_rotated_files(tmp_path):
    bundle = str(tmp_path)
    writer = LogWriter(os.path.join(bundle, "container.log"), max_size=2048, max_file=50)
    numbered(writer, 0, 1000)
    assert len(files(bundle)) > 3
    for tail, want in ((5, range(995, 1000)), (300, range(700, 1000)), (0, range(0)), (5000, range(1000))):
        lines, _ = read_all(bundle, start_cursor(bundle, tail, follow=False))
        assert lines == [f"line {i}" for i in want], tail


def test_a_snapshot_stops_at_what_was_written_when_it_began(tmp_path):
    bundle = str(tmp_path)
    writer = LogWriter(os.path.join(bundle, "container.log"), max_size=4096, max_file=10)
    numbered(writer, 0, 100)
    cursor = start_cursor(bundle, None, follow=False)
    chunk = read_chunk(bundle, cursor, 500)
    numbered(writer, 100, 300)                 # written during the read, across rotations
    lines, _ = read_all(bundle, chunk.cursor)
    assert [line for _, _, line, _ in chunk.lines] + lines == [f"line {i}" for i in range(100)]
    # A task that had written nothing yet has nothing to show.
    empty = str(tmp_path / "empty")
    os.mkdir(empty)
    assert read_chunk(empty, start_cursor(empty, None, follow=False)).lines == []


def test_long_lines_are_joined_and_chunks_never_end_inside_one(tmp_path):
    bundle = str(tmp_path)
    writer = LogWriter(os.path.join(bundle, "container.log"), max_size=1 << 30, max_file=2)
    long_line = "x" * 40_000                  # three P entries and an F
    for i in range(5):
        writer.feed("stdout", long_line.encode() + b"\n")
        writer.feed("stderr", b"err %d\n" % i)
    writer.feed("stdout", b"y" * 200_000)      # longer than MAX_JOINED: given out in pieces
    writer.close_stream("stdout")
    lines, _ = read_all(bundle, start_cursor(bundle, None, follow=False), budget=1000)
    assert lines[:10] == [long_line, "err 0", long_line, "err 1", long_line, "err 2", long_line, "err 3",
                          long_line, "err 4"]
    assert "".join(lines[10:]) == "y" * 200_000
    assert all(len(line) <= logfile.MAX_JOINED + 16 * 1024 for line in lines[10:])


def test_a_line_still_being_written_is_read_once_it_is_complete(tmp_path):
    bundle = str(tmp_path)
    path = os.path.join(bundle, "container.log")
    writer = LogWriter(path, max_size=1 << 30, max_file=2)
    writer.feed("stdout", b"a" * 20_000)       # one P entry on disk, the rest still in the shim
    writer.feed("stderr", b"meanwhile\n")
    chunk = read_chunk(bundle, start_cursor(bundle, None, follow=True))
    assert chunk.eof and chunk.lines == []     # nothing cut in half, and "meanwhile" waits for its turn
    writer.feed("stdout", b"\n")
    lines, _ = read_all(bundle, chunk.cursor)
    assert lines == ["meanwhile", "a" * 20_000]


@pytest.mark.parametrize("wire", [None, [], {"off": -1}, {"off": "3"}, {"ino": "x", "head": b""},
                                  {"ino": 1, "head": b"x" * 100}, {"until": [1, b"", -5]}])
def test_a_cursor_that_is_not_ours_is_refused(wire):
    with pytest.raises(CursorError):
        Cursor.from_wire(wire)


def test_cursors_survive_the_wire(tmp_path):
    bundle = str(tmp_path)
    writer = LogWriter(os.path.join(bundle, "container.log"), max_size=1024, max_file=9)
    numbered(writer, 0, 100)
    cursor = start_cursor(bundle, 10, follow=False)
    assert Cursor.from_wire(cursor.to_wire()) == cursor
    lines, _ = read_all(bundle, Cursor.from_wire(cursor.to_wire()))
    assert lines == [f"line {i}" for i in range(90, 100)]


# -- --since / --until: seek on the node, filter exactly ------------------------------

BASE_NS = 1_700_000_000 * 10**9


def timed(writer: LogWriter, start: int, count: int, step_ns: int = 10**6) -> None:
    """Lines `line I` at BASE + I * step (times under the test's control, not the clock)."""
    from swarm.api.logview import rfc3339_ns
    writer.write_entries([b"%s stdout F line %d\n" % (rfc3339_ns(BASE_NS + i * step_ns).encode(), i)
                          for i in range(start, start + count)])


def at(i: int, step_ns: int = 10**6) -> str:
    from swarm.api.logview import rfc3339_ns
    return rfc3339_ns(BASE_NS + i * step_ns)


def read_bounded(bundle: str, cursor: Cursor, since=None, until_time=None) -> tuple[list[str], int]:
    out, chunks = [], 0
    while True:
        chunk = read_chunk(bundle, cursor, 4096, since=since, until_time=until_time)
        chunks += 1
        out.extend(line for _, _, line, _ in chunk.lines)
        cursor = chunk.cursor
        if chunk.eof:
            return out, chunks


def test_since_seeks_into_the_right_rotated_file_and_reads_no_line_before_it(tmp_path):
    bundle = str(tmp_path)
    w = LogWriter(os.path.join(bundle, "container.log"), 200_000, 5)
    timed(w, 0, 30_000)                                   # ~ 5 files of 200 kB
    assert len(files(bundle)) == 5
    everything = read_bounded(bundle, start_cursor(bundle, None, False))[0]
    oldest = int(everything[0].split()[1])                # the first lines were rotated away
    assert oldest > 0 and everything == [f"line {i}" for i in range(oldest, 30_000)]
    for first in (oldest, oldest + 1, 20_000, 24_444, 29_999):
        cursor = start_cursor(bundle, None, False, since=at(first))
        # Exactly the lines from there on, in small chunks, whichever file holds the first.
        assert read_bounded(bundle, cursor, since=at(first))[0] == everything[first - oldest:]
        # The seek is within about a block of the first line wanted.
        assert read_chunk(bundle, cursor, 2 * logfile.BLOCK, since=at(first)).lines[0][2] == f"line {first}"
    # A time past every line: nothing; a time before them all: everything still there.
    assert read_bounded(bundle, start_cursor(bundle, None, False, since=at(40_000)), since=at(40_000))[0] == []
    assert read_bounded(bundle, start_cursor(bundle, None, False, since=at(-5)), since=at(-5))[0] == everything


def test_since_seek_reads_a_few_blocks_not_the_file(tmp_path, monkeypatch):
    bundle = str(tmp_path)
    w = LogWriter(os.path.join(bundle, "container.log"), 1 << 30, 2)
    timed(w, 0, 200_000)                                  # one ~9 MB file
    reads = []
    real = os.pread
    monkeypatch.setattr(logfile.os, "pread", lambda fd, n, off: reads.append(n) or real(fd, n, off))
    cursor = start_cursor(bundle, None, False, since=at(150_000))
    assert sum(reads) < 40 * logfile.BLOCK                # a binary search, not a scan of 9 MB
    monkeypatch.setattr(logfile.os, "pread", real)
    assert read_chunk(bundle, cursor, 2 * logfile.BLOCK, since=at(150_000)).lines[0][2] == "line 150000"


def test_tail_and_since_together_start_at_the_later_place(tmp_path):
    bundle = str(tmp_path)
    w = LogWriter(os.path.join(bundle, "container.log"), 1 << 30, 2)
    timed(w, 0, 1000)
    # Docker takes the last N lines, then drops those before --since.
    assert read_bounded(bundle, start_cursor(bundle, 5, False, since=at(10)), since=at(10))[0] == \
        [f"line {i}" for i in range(995, 1000)]
    assert read_bounded(bundle, start_cursor(bundle, 500, False, since=at(998)), since=at(998))[0] == \
        ["line 998", "line 999"]


def test_until_stops_at_the_first_later_line_for_good(tmp_path):
    bundle = str(tmp_path)
    w = LogWriter(os.path.join(bundle, "container.log"), 50_000, 5)
    timed(w, 0, 3000)
    cursor = start_cursor(bundle, None, True, since=at(100))
    lines, chunks = read_bounded(bundle, cursor, since=at(100), until_time=at(2000))
    assert lines == [f"line {i}" for i in range(100, 2001)] and chunks > 1   # both ends included, as Docker's
    # Following: lines written later are past --until too: a read from the end gives nothing, at eof.
    end = read_chunk(bundle, read_chunk(bundle, cursor, 1 << 20, until_time=at(2000)).cursor,
                     until_time=at(2000))
    assert end.lines == [] and end.eof

"""Reading a container's log file (CRI format, written by the shim; see shim.py).

Each line: `<RFC 3339 nano UTC> <stdout|stderr> <F|P> <content>`. Partial (P)
entries are joined with the following entries of the same stream; the joined
line carries the timestamp of its first part.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

from swarm.runtime.base import LogEntry


def parse_line(raw: bytes) -> tuple[str, str, str, bytes] | None:
    """(timestamp, stream, tag, content) of one log file line (without its newline)."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tag = (p.decode("ascii", "replace") for p in parts[:3])
    return ts, stream, tag, parts[3] if len(parts) == 4 else b""


class Joiner:
    """Turns raw log file lines into LogEntry values, joining partial entries."""

    def __init__(self) -> None:
        self.partial: dict[str, tuple[str, bytes]] = {}

    def feed(self, lines: Iterable[bytes]) -> Iterator[LogEntry]:
        for raw in lines:
            parsed = parse_line(raw)
            if parsed is None:
                continue
            ts, stream, tag, content = parsed
            if stream in self.partial:
                first_ts, head = self.partial.pop(stream)
                ts, content = first_ts, head + content
            if tag == "P":
                self.partial[stream] = (ts, content)
                continue
            yield LogEntry(ts, stream, content.decode("utf-8", "replace"))


def read_tail(path: str, count: int, block: int = 64 * 1024) -> tuple[list[bytes], int]:
    """The last `count` complete lines of `path` and the offset just past them."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= count:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    complete_end = data.rfind(b"\n") + 1      # ignore a line still being written
    lines = data[:complete_end].split(b"\n")[:-1]
    if pos > 0:
        lines = lines[1:]                     # the first one may be cut
    return lines[-count:] if count else [], pos + complete_end

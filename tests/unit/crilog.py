"""A stand-in for conmon's log writing, for the reader's tests: entries in conmon's form
("...123456789+00:00 stdout F line", a read that ends without a newline written as a P entry)
and rotation through the runtime's own logfile.rotate, with the reopen conmon does (a new
file renamed over the path). It rotates before an entry would pass max-size, so the tests
can count files exactly; the runtime rotates from outside, by size (runcmon.rotation_step)."""
from __future__ import annotations

import os
import time

from swarm.runtime import logfile

READ = 8192          # conmon's STDIO_BUF_SIZE: what one read of the container's pipe gives


def timestamp(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}+00:00"


class LogWriter:
    def __init__(self, path: str, max_size: int, max_file: int) -> None:
        self.path, self.max_size, self.max_file = path, max_size, max_file
        self.bundle = os.path.dirname(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size

    def feed(self, stream: str, data: bytes) -> None:
        for pos in range(0, len(data), READ):
            self._read(stream, data[pos:pos + READ])

    def _read(self, stream: str, data: bytes) -> None:
        ts = timestamp(time.time_ns()).encode()
        entries = []
        for line in data.splitlines(keepends=True):
            if line.endswith(b"\n"):
                entries.append(b"%s %s F %s" % (ts, stream.encode(), line))
            else:
                entries.append(b"%s %s P %s\n" % (ts, stream.encode(), line))
        self.write_entries(entries)

    def close_stream(self, stream: str) -> None:
        pass         # conmon leaves a last piece of a line as the P entry it wrote

    def write_entries(self, entries: list[bytes]) -> None:
        for entry in entries:
            if self.size + len(entry) > self.max_size and self.size > 0:
                assert logfile.rotate(self.bundle, self.max_file, self._reopen)
            os.write(self.fd, entry)
            self.size += len(entry)

    def _reopen(self) -> None:
        os.close(self.fd)
        tmp = self.path + ".tmp"
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        os.rename(tmp, self.path)
        self.size = 0

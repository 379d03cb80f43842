"""The content-addressed blob store of a node (STATE_DIR/images/blobs).

How this works. A blob is the file `sha256/HEX` whose content hashes to HEX:
a compressed layer as a registry serves it, an image configuration, a
manifest, or the uncompressed tar of an imported layer. A `BlobWriter`
streams into `.tmp/PID-RANDOM` while hashing and counting; `commit` compares
the digest (and the size, when one was announced) and only then renames the
file into place. So a reader never sees a partial blob, a blob's name always
is its content's digest, and a failed write (a digest mismatch, a full disk,
a cancelled pull) removes its temporary file and leaves the store as it was.

Blobs are removed only by `collect(keep)`, which the image store calls with
what its images reach. Blobs written but not registered yet (a pull between
its downloads and `add_pulled`) are protected: a download is ingested fresh
(until `settle` or for FRESH_SECONDS, a pull that died keeps nothing for
ever), and a caller may hold a lease; `collect` removes neither. Both live in
this process: only the daemon writes the store of its node (the CLI goes
through the daemon).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from swarm.runtime.errors import ImageError

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
FRESH_SECONDS = 3600.0     # how long a downloaded blob waits for its image before GC may take it


class DigestMismatch(ImageError):
    """The bytes written do not hash to the digest they were announced with; `actual` is what
    they hash to (None when they were refused for their size before the end)."""

    def __init__(self, message: str, actual: str | None = None) -> None:
        super().__init__(message)
        self.actual = actual


def check_digest(digest: str) -> str:
    """The hex part of a 'sha256:HEX' digest; any other algorithm or form is refused."""
    m = _DIGEST.match(digest) if isinstance(digest, str) else None
    if m is None:
        raise ImageError(f"{digest!r} is not a sha256 digest (sha256: and 64 hexadecimal digits).")
    return m.group(1)


def short(digest: str) -> str:
    return digest[:19]


class BlobStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.dir = os.path.join(self.root, "sha256")
        self.tmp_dir = os.path.join(self.root, ".tmp")
        for d in (self.root, self.dir, self.tmp_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self._leases: Counter[str] = Counter()
        self._leases_lock = threading.Lock()
        self._fresh: dict[str, float] = {}     # digest -> when ingest wrote it (time.monotonic)
        self._clean_stale_tmp()

    # -- reading -------------------------------------------------------------------------
    def path(self, digest: str) -> str:
        return os.path.join(self.dir, check_digest(digest))

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise ImageError(f"The blob {short(digest)} is not in this node's image store.") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise ImageError(f"The blob {short(digest)} is not in this node's image store.") from None

    def read(self, digest: str, limit: int) -> bytes:
        """A small blob (a manifest, a configuration) read whole; larger than `limit` is refused."""
        with self.open(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageError(f"The blob {short(digest)} is too large to be image metadata.")
        return data

    def list(self) -> list[str]:
        """The digests of every blob stored (temporary files never count)."""
        return sorted(f"sha256:{n}" for n in os.listdir(self.dir) if _HEX64.match(n))

    # -- writing -------------------------------------------------------------------------
    def writer(self, digest: str | None = None, size: int | None = None) -> "BlobWriter":
        """A writer for one blob; `digest` None: the digest is whatever was written (an import)."""
        if digest is not None:
            check_digest(digest)
        return BlobWriter(self, digest, size)

    def ingest(self, digest: str, chunks: Iterable[bytes], size: int | None = None, *, fresh: bool = False) -> str:
        """Store the blob made of `chunks`, verifying it hashes to `digest`; returns the digest.
        A blob already present is not written again (its chunks are not read). `fresh`: a
        download that no image reaches yet (see the module doc)."""
        check_digest(digest)
        if fresh:
            with self._leases_lock:
                self._fresh[digest] = time.monotonic()
        if self.has(digest):
            return digest
        with self.writer(digest, size) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def settle(self, digests: Iterable[str]) -> None:
        """These blobs are now reached by an image (or never will be): no longer fresh."""
        with self._leases_lock:
            for digest in digests:
                self._fresh.pop(digest, None)

    def put(self, data: bytes) -> str:
        """Store `data` (a configuration, a manifest); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return self.ingest(digest, [data], len(data))

    # -- leases and garbage collection ---------------------------------------------------
    @contextlib.contextmanager
    def lease(self) -> Iterator["Lease"]:
        """Digests added to the lease survive `collect` until the block ends."""
        lease = Lease(self)
        try:
            yield lease
        finally:
            lease.release()

    def leased(self, now: float | None = None) -> set[str]:
        """Digests leased, or ingested less than FRESH_SECONDS before `now` (time.monotonic)."""
        now = time.monotonic() if now is None else now
        with self._leases_lock:
            for digest in [d for d, t in self._fresh.items() if now - t > FRESH_SECONDS]:
                del self._fresh[digest]
            return {d for d, n in self._leases.items() if n > 0} | set(self._fresh)

    def collect(self, keep: set[str], now: float | None = None) -> list[tuple[str, int]]:
        """Remove every blob neither in `keep` nor leased nor fresh; returns (digest, size) of each
        removed. The caller holds the image store's lock, so no image is registered meanwhile."""
        spared = keep | self.leased(now)
        removed = []
        for digest in self.list():
            if digest in spared:
                continue
            path = self.path(digest)
            with contextlib.suppress(FileNotFoundError):
                size = os.stat(path).st_size
                os.unlink(path)
                removed.append((digest, size))
        return removed

    def _clean_stale_tmp(self) -> None:
        """Remove temporary files of writers whose process is gone (a crash mid-download)."""
        for name in os.listdir(self.tmp_dir):
            pid = name.split("-")[0]
            if not pid.isdigit() or not os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.tmp_dir, name))


class Lease:
    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self._held: list[str] = []

    def add(self, digest: str) -> None:
        with self._store._leases_lock:
            self._store._leases[digest] += 1
        self._held.append(digest)

    def release(self) -> None:
        with self._store._leases_lock:
            for digest in self._held:
                self._store._leases[digest] -= 1
                if self._store._leases[digest] <= 0:
                    del self._store._leases[digest]
        self._held.clear()


class BlobWriter:
    """One blob being written: write() the chunks, then commit(); leaving the `with` block
    without a commit (an error, a cancel) removes what was written."""

    def __init__(self, store: BlobStore, digest: str | None, size: int | None) -> None:
        self.store, self.digest, self.expected_size = store, digest, size
        self.hash = hashlib.sha256()
        self.written = 0
        self.tmp_path = os.path.join(store.tmp_dir, f"{os.getpid()}-{uuid.uuid4().hex[:16]}")
        self._file: BinaryIO | None = None
        try:
            self._file = open(self.tmp_path, "xb")
        except OSError as exc:
            raise _write_error(exc, self._what()) from None

    def _what(self) -> str:
        return f"the blob {short(self.digest)}" if self.digest else "a layer"

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ImageError(f"Writing {self._what()} after it was finished.")
        self.written += len(data)
        if self.expected_size is not None and self.written > self.expected_size:
            self.abort()
            raise DigestMismatch(f"digest mismatch: {self._what()} is larger than its announced "
                                 f"{self.expected_size} bytes; nothing of it was kept.")
        self.hash.update(data)
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise _write_error(exc, self._what()) from None

    def commit(self) -> str:
        """Verify and move the blob into place; returns its digest."""
        if self._file is None:
            raise ImageError(f"Writing {self._what()} after it was finished.")
        actual = "sha256:" + self.hash.hexdigest()
        if self.digest is not None and actual != self.digest:
            self.abort()
            raise DigestMismatch(f"digest mismatch: {short(self.digest)} was expected, "
                                 f"the data received is {short(actual)}; nothing of it was kept.", actual)
        if self.expected_size is not None and self.written != self.expected_size:
            self.abort()
            raise DigestMismatch(f"digest mismatch: {self._what()} ended after {self.written} of its "
                                 f"{self.expected_size} bytes; nothing of it was kept.")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())   # the rename must never publish a blob the disk lacks
            self._file.close()
            self._file = None
            os.rename(self.tmp_path, self.store.path(actual))
        except OSError as exc:
            self.abort()
            raise _write_error(exc, self._what()) from None
        self.digest = actual
        return actual

    def abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()     # a no-op after commit: the file was renamed away


def _write_error(exc: OSError, what: str) -> ImageError:
    if exc.errno in _FULL_DISK:
        return ImageError(f"No space left on the device of the image store while writing {what}; "
                          f"nothing of it was kept.")
    return ImageError(f"Writing {what} to the image store failed: {exc.strerror or exc}.")

"""Layers staged by one import, load or pull before they enter the image store.

How this works. Each layer is extracted into its own layers/.tmp-PID-RANDOM
directory; the uncompressed tar of an imported or loaded layer is written on
the way to a blob writer (its digest is the diff_id), so that the store can
save and push the layer later; a pulled layer is unpacked from its blob,
already verified, and only counted. Nothing is visible in the store until
`move_into_place` (called by the store under its lock) commits the tar blobs
and renames the directories; `cleanup` removes whatever was not moved, so a
refused archive or a failed pull leaves nothing behind. A layer the store
holds already (by diff_id, with a source for its tar) is not extracted again.

A pulled image is registered as soon as its blobs are stored
(ImageStore.add_pulled without unpack; `note_pulled` lists the layers the
store lacks), and unpacked after (ImageStore.unpack_image): `PullLayers`
unpacks those layers from their verified blobs (`unpack_all`, a few at a
time in a thread pool), each staged as above and renamed into layers/DIFF_ID
under the store's lock at once, holding a lease on it (`LayerLeases`, shared
in this process): garbage collection spares a leased layer, and a second
thread needing the same layer (a task start while the background unpack
runs) waits for the first unpack (a lock per diff_id) instead of unpacking it
again. `close` releases the leases; a layer that no image reaches and no
other unpack holds any more (its image was removed meanwhile) is removed.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import io
import lzma
import os
import shutil
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from swarm.runtime.blobstore import BlobWriter, check_digest
from swarm.runtime.errors import ImageError
from swarm.runtime.extract import Budget, extract_layer, open_layer_stream

if TYPE_CHECKING:
    from swarm.runtime.images import ImageStore

DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"     # an imported layer's tar, as kept here


class StagedLayers:
    """Layers extracted by one import, load or pull, moved into the store only on commit; the
    uncompressed tar of an imported or loaded layer is kept as a blob (committed with it)."""

    def __init__(self, store: ImageStore, budget: Budget) -> None:
        self.store = store
        self.budget = budget
        self.dirs: dict[str, str] = {}     # diff_id -> temporary directory
        self.sizes: dict[str, int] = {}
        self.sources: dict[str, dict] = {}  # diff_id -> the blob its tar comes from
        self.writers: list[BlobWriter] = []            # tar blobs written, committed on move_into_place
        self.made: list[str] = []

    def new_dir(self) -> str:
        path = os.path.join(self.store.layers_dir, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        os.mkdir(path, 0o755)
        self.made.append(path)
        return path

    def _extract_keeping_tar(self, raw: BinaryIO, path: str) -> tuple[str, str, int]:
        """Extract `raw` into `path`, writing its uncompressed tar to a blob on the way:
        (diff_id, raw digest, unpacked size)."""
        writer = self.store.blobs.writer()
        self.writers.append(writer)
        with _unreadable_as_image_error():
            raw_reader, tar = open_layer_stream(raw, self.budget)
            info = extract_layer(_Tee(tar, writer), path, self.budget)
            raw_reader.drain()
        self.sources[info.diff_id] = {"digest": f"sha256:{info.diff_id}", "mediaType": LAYER_TAR,
                                      "size": writer.written, "tar_size": writer.written}
        return info.diff_id, raw_reader.hash.hexdigest(), info.size

    def extract(self, raw: BinaryIO) -> tuple[str, int]:
        diff_id, _, size = self._extract_keeping_tar(raw, self.new_dir())
        self.dirs.setdefault(diff_id, self.made[-1])
        self.sizes[diff_id] = size
        return diff_id, size

    def _present(self, diff_id: str) -> int | None:
        """The unpacked size of a layer the store already holds with a source for its tar."""
        if diff_id in self.sizes:
            return self.sizes[diff_id]
        if not os.path.isdir(self.store.layer_path(diff_id)):
            return None
        if (known := self.store.layer_leases.known(diff_id)) is not None:   # a pull unpacked it
            self.sizes[diff_id], self.sources[diff_id] = known
            return known[0]
        for doc in self.store.records():
            if diff_id in doc["layers"] and diff_id not in (doc.get("unpacking") or ()):   # else its size is a stand-in
                i = doc["layers"].index(diff_id)
                with contextlib.suppress(ImageError, IndexError, ValueError):
                    self.sources[diff_id] = self.store.layer_source(doc, i)
                    self.sizes[diff_id] = int(doc["layer_sizes"][i])
                    return self.sizes[diff_id]
        return None

    def ensure(self, diff_id: str, opener, index: int, raw_digest: str | None = None) -> int:
        """Extract a layer unless the store or this load already has it; verify its digests."""
        if (size := self._present(diff_id)) is not None:
            return size
        path = self.new_dir()
        with opener() as raw:
            got, got_raw, size = self._extract_keeping_tar(raw, path)
        if got != diff_id:
            raise ImageError(f"Layer {index + 1} of the archive does not match its digest "
                             f"(expected sha256:{diff_id[:12]}, got sha256:{got[:12]}).")
        if raw_digest is not None and got_raw != raw_digest:
            raise ImageError(f"Layer {index + 1} of the archive does not match its blob digest.")
        self.dirs[diff_id] = path
        self.sizes[diff_id] = size
        return size

    def ensure_from_blob(self, diff_id: str, desc: dict, index: int) -> int:
        """A pulled layer: unpack its (already verified) blob unless the layer is here already."""
        digest = str((desc or {}).get("digest", ""))
        check_digest(digest)
        source = {"digest": digest, "mediaType": str(desc.get("mediaType", DOCKER_LAYER_GZIP)),
                  "size": int(desc.get("size", 0))}
        if "zstd" in source["mediaType"]:
            raise ImageError("zstd-compressed layers are not supported; recompress the image with gzip.")
        if (size := self._present(diff_id)) is not None:
            if self.store.blobs.has(digest):   # else the puller skipped it: the layer's other source stays
                self.sources[diff_id] = {**source, "tar_size": self.sources.get(diff_id, {}).get("tar_size", 0)}
            return size
        path = self.new_dir()
        with self.store.blobs.open(digest) as blob:
            got, size, tar_size = unpack_blob(blob, path, self.budget)
        if got != diff_id:
            raise ImageError(f"digest mismatch: layer {index + 1} unpacks to sha256:{got[:12]}, "
                             f"its image configuration says sha256:{diff_id[:12]}.")
        self.sources[diff_id] = {**source, "tar_size": tar_size}
        self.dirs[diff_id] = path
        self.sizes[diff_id] = size
        return size

    def note_pulled(self, diff_id: str, layer: dict, later: list[str]) -> int:
        """A pulled layer registered before its unpacking (ImageStore.add_pulled without unpack):
        its unpacked size when the store has it unpacked already, else its blob's size, the
        layer (hex `diff_id`) then joining `later`. Its blob must be in the store."""
        if self._present(diff_id) is not None:
            return self.ensure_from_blob(diff_id, layer, 0)     # in place: only its source is noted
        digest = str((layer or {}).get("digest", ""))
        check_digest(digest)
        if "zstd" in str(layer.get("mediaType", "")):
            raise ImageError("zstd-compressed layers are not supported; recompress the image with gzip.")
        if not self.store.blobs.has(digest):
            raise ImageError(f"The blob {digest[:19]} of layer sha256:{diff_id[:12]} is not in the store; pull again.")
        self.sources[diff_id] = {"digest": digest, "mediaType": str(layer.get("mediaType", DOCKER_LAYER_GZIP)),
                                 "size": int(layer.get("size", 0))}
        later.append(diff_id)
        return self.store.blobs.size(digest)

    def move_into_place(self) -> None:
        for writer in self.writers:
            writer.commit()
        self.writers.clear()
        for diff_id, path in self.dirs.items():
            final = self.store.layer_path(diff_id)
            if os.path.isdir(final):
                continue  # another import brought the same layer: ours is removed in cleanup
            os.rename(path, final)
            self.made.remove(path)

    def cleanup(self) -> None:
        for writer in self.writers:
            writer.abort()
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)
        self.made.clear()


class LayerLeases:
    """The layers the pulls of this process unpacked and no image may reach yet (see the module
    doc): a lease count, the unpacked size and tar source of each, and a lock per diff_id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._known: dict[str, tuple[int, dict]] = {}     # diff_id -> (unpacked size, source)
        self._flights: dict[str, tuple[threading.Lock, int]] = {}   # diff_id -> (lock, users)

    def held(self) -> set[str]:
        with self._lock:
            return set(self._counts)

    def known(self, diff_id: str) -> tuple[int, dict] | None:
        with self._lock:
            return self._known.get(diff_id)

    def acquire(self, diff_id: str) -> None:
        with self._lock:
            self._counts[diff_id] += 1

    def remember(self, diff_id: str, size: int, source: dict) -> None:
        with self._lock:
            if self._counts[diff_id] > 0:
                self._known[diff_id] = (size, source)

    def release(self, diff_id: str) -> bool:
        """Drop one lease; True when it was the last one."""
        with self._lock:
            self._counts[diff_id] -= 1
            if self._counts[diff_id] > 0:
                return False
            del self._counts[diff_id]
            self._known.pop(diff_id, None)
            return True

    @contextlib.contextmanager
    def single_flight(self, diff_id: str) -> Iterator[None]:
        """One unpack of `diff_id` at a time in this process: a second caller waits, then finds it."""
        with self._lock:
            lock, users = self._flights.get(diff_id, (threading.Lock(), 0))
            self._flights[diff_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._flights[diff_id]
                if users == 1:
                    del self._flights[diff_id]
                else:
                    self._flights[diff_id] = (lock, users - 1)


class PullLayers:
    """The layers of one pull, unpacked one by one as their blobs are stored (the module doc).
    `unpack` runs in worker threads, several at once; `close` once, when the pull ended."""

    def __init__(self, store: ImageStore, cancel: threading.Event | None = None) -> None:
        self.store = store
        self.cancel = cancel        # set: the unpack under way stops at its next piece (ImageError)
        self.leases = store.layer_leases
        self._held: list[str] = []
        self._lock = threading.Lock()
        self._closed = False

    def unpack(self, index: int, diff_id: str, layer: dict) -> int:
        """Unpack layer `index` (its blob, described by the manifest's `layer`, is in the store)
        unless it is in place already; its diff_id ("sha256:HEX") is checked. Returns its size."""
        hexd = check_digest(diff_id)
        with self._lock:
            if self._closed:
                raise ImageError("The pull ended before its layers were unpacked.")
            self._held.append(hexd)
            self.leases.acquire(hexd)    # before looking: from now on no collection removes it
        with self.leases.single_flight(hexd):
            staged = StagedLayers(self.store, self.store.import_budget(self.cancel))
            try:
                with self.store.locked():     # a collection running now finishes before we look
                    size = staged._present(hexd)
                if size is None:
                    size = staged.ensure_from_blob(hexd, layer, index)
                    with self.store.locked():
                        staged.move_into_place()
                if hexd in staged.sources:
                    self.leases.remember(hexd, size, staged.sources[hexd])
                return size
            finally:
                staged.cleanup()

    def unpack_all(self, layers: list[tuple[int, str, dict]], workers: int,
                   done: Callable[[str, int], None]) -> None:
        """Unpack these layers ((index, hex diff_id, blob descriptor)), `workers` at a time in
        threads of a pool, calling `done(diff_id, size)` after each; the first failure is raised
        once the others ended (the pool's exit waits for them)."""
        def one(index: int, diff_id: str, layer: dict) -> None:
            done(diff_id, self.unpack(index, f"sha256:{diff_id}", layer))

        with concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(layers))),
                                                   thread_name_prefix="unpack") as pool:
            for future in [pool.submit(one, *item) for item in layers]:
                future.result()

    def close(self) -> None:
        """Release the pull's leases; a layer left with none that no image reaches is removed."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, []
        last = [d for d in held if self.leases.release(d)]
        if last:
            self.store.remove_unreached_layers(last)


def unpack_blob(blob: BinaryIO, dest: str, budget: Budget) -> tuple[str, int, int]:
    """Extract a layer blob (verified when it was stored) into the empty directory `dest`:
    (diff_id hex, size of its files, length of its tar)."""
    with _unreadable_as_image_error():
        tar, length = _verified_tar(blob, budget)
        info = extract_layer(tar, dest, budget)
        return info.diff_id, info.size, length()


_OTHER_COMPRESSIONS = (b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")   # bzip2, xz, zstd


def _verified_tar(blob: BinaryIO, budget: Budget) -> tuple[BinaryIO, Callable[[], int]]:
    """The uncompressed tar of a blob whose digest the store verified when it was written, and
    a function giving its length once read. extract_layer hashes this stream (the diff_id) and
    holds it to the budget, so a gzip or plain layer is read with no further hashing:
    open_layer_stream would hash the compressed bytes and the tar once more, over a quarter of
    the unpacking time of a pull. Rarer compressions (and zstd's refusal) still go through it."""
    head = blob.read(6)
    blob.seek(0)
    if head.startswith(b"\x1f\x8b"):
        gunzip = _Gunzip(blob)
        return io.BufferedReader(gunzip, TAR_PIECE), lambda: gunzip.length
    if head.startswith(_OTHER_COMPRESSIONS):
        reader = open_layer_stream(blob, budget)[1]
        return reader, lambda: reader.length  # type: ignore[return-value]
    return blob, blob.tell


# A pulled layer is decompressed this much at a time. tarfile reads its stream 10 KiB at a time;
# through gzip.GzipFile each of those reads was a file read, an inflate and a Python crc32 call
# (each letting go of the GIL that the pull's other threads want). Here those happen once per
# piece and tarfile's reads are copies out of a buffer: a 40 MiB layer unpacks in 61 ms, not 70.
TAR_PIECE = 1 << 20


class _Gunzip(io.RawIOBase):
    """A gzip stream decompressed with zlib in large pieces; zlib checks each member's CRC and
    length. Members may follow one another, and zero padding may follow the last (as gzip reads)."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._input = b""          # compressed bytes read and not yet given to zlib
        self._ended = False
        self.length = 0            # bytes given out

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "memoryview | bytearray") -> int:  # type: ignore[override]
        want = len(buffer)
        while not self._ended:
            if self._inflate.eof:
                self._input = self._inflate.unused_data
                self._next_member()
                continue
            data = self._inflate.unconsumed_tail or self._input or self._src.read(TAR_PIECE)
            self._input = b""
            if not data:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            out = self._inflate.decompress(data, want)
            if out:
                buffer[:len(out)] = out
                self.length += len(out)
                return len(out)
        return 0

    def _next_member(self) -> None:
        """After a member's end: another member, or the end (what follows is zeros or nothing)."""
        while True:
            rest = self._input.lstrip(b"\x00")
            if rest:
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._input = rest
                return
            self._input = self._src.read(TAR_PIECE)
            if not self._input:
                self._ended = True
                return


class _Tee:
    """A reader passing a layer's uncompressed tar to the extractor while a blob writer keeps it
    (or, with no writer, only counting its length)."""

    def __init__(self, src: BinaryIO, sink: BlobWriter | None) -> None:
        self._src, self._sink, self.length = src, sink, 0

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self.length += len(data)
        if self._sink is not None and data:
            self._sink.write(data)
        return data

    def readable(self) -> bool:
        return True


class GzipSink:
    """Deterministic gzip (no name, mtime 0) into a blob writer, so the same tar always gives the
    same compressed digest here."""

    def __init__(self, writer: BlobWriter) -> None:
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=writer, mtime=0, compresslevel=6)

    def write(self, data: bytes) -> None:
        self._gz.write(data)

    def close(self) -> None:
        self._gz.close()


@contextlib.contextmanager
def _unreadable_as_image_error() -> Iterator[None]:
    """A compressed stream that does not decompress is the layer's fault: one sentence, as extract's."""
    try:
        yield
    except (EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ImageError(f"The layer is not a readable tar archive ({exc}).") from None
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise ImageError(f"The layer is not a readable tar archive ({exc}).") from None

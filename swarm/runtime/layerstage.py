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
"""
from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import shutil
import uuid
import zlib
from collections.abc import Iterator
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
        for doc in self.store.records():
            if diff_id in doc["layers"]:
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
        with self.store.blobs.open(digest) as blob, _unreadable_as_image_error():
            counter = _Tee(_verified_tar(blob, self.budget), None)
            info = extract_layer(counter, path, self.budget)
        if info.diff_id != diff_id:
            raise ImageError(f"digest mismatch: layer {index + 1} unpacks to sha256:{info.diff_id[:12]}, "
                             f"its image configuration says sha256:{diff_id[:12]}.")
        self.sources[diff_id] = {**source, "tar_size": counter.length}
        self.dirs[diff_id] = path
        self.sizes[diff_id] = info.size
        return info.size

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


_OTHER_COMPRESSIONS = (b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")   # bzip2, xz, zstd


def _verified_tar(blob: BinaryIO, budget: Budget) -> BinaryIO:
    """The uncompressed tar of a blob whose digest the store verified when it was written.
    extract_layer hashes this stream (the diff_id) and holds it to the budget, so a gzip or
    plain layer is read with no further hashing: open_layer_stream would hash the compressed
    bytes and the tar once more, over a quarter of the unpacking time of a pull. Rarer compressions
    (and zstd's refusal) still go through it."""
    head = blob.read(6)
    blob.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=blob, mode="rb")  # type: ignore[return-value]
    if head.startswith(_OTHER_COMPRESSIONS):
        return open_layer_stream(blob, budget)[1]  # type: ignore[return-value]
    return blob


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

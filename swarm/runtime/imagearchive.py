"""Image archives: reading `docker save` and OCI layout archives, writing `docker save` ones.

How this works. Reading: the outer archive (maybe gzip, bzip2 or xz
compressed) is read with tarfile in random-access mode through a
`GuardedFile` that checks the import's budget and cancel flag on every read;
`read_archive` parses its manifest.json (docker save) or index.json (OCI
layout, the node's platform picked from a nested index) and hands every
layer to the store's `ensure` callback, which extracts and verifies it.
Nothing here touches the store.

Writing: `write_docker_save` writes the format of Docker 25 and later, which
`docker load` of every version and skopeo's `docker-archive:` read: an OCI
image layout (blobs/sha256/..., index.json naming each tag, oci-layout) plus
the classic manifest.json and repositories files. Layers are written as
uncompressed tars whose sha256 is their diff_id, each once even when several
images share it.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO, ContextManager

from swarm.runtime.errors import ImageError
from swarm.runtime.extract import Budget, format_bytes

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
PLATFORM = ("linux", "amd64")
MAX_METADATA_BYTES = 64 << 20    # a manifest, index or configuration read into memory
CHUNK_LIMIT = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

# ensure(diff_id, opener, index, raw_digest) -> unpacked size: the store's layer callback
Ensure = Callable[[str, Callable[[], ContextManager[BinaryIO]], int, "str | None"], int]


@dataclass
class ParsedImage:
    """An image read from an archive, its layers handed to `ensure`."""
    config_blob: bytes
    config: dict
    diff_ids: list[str]
    sizes: list[int]
    refs: list[str]          # as the archive names them, not yet normalized


def read_archive(path: str, f: BinaryIO, budget: Budget, ensure: Ensure) -> list[ParsedImage]:
    """The images of the archive `f` (opened from `path`, named so in errors)."""
    try:
        outer = tarfile.open(fileobj=GuardedFile(decompressed(f), budget), mode="r:")  # type: ignore[call-overload]
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise ImageError(f"{path} is not a readable image archive ({exc}).") from None
    with outer:
        try:
            members = {member_key(m.name): m for m in outer.getmembers()}
            reader = ArchiveReader(outer, members, path)
            if "manifest.json" in members:
                parsed = _read_docker_save(reader, ensure)
            elif "index.json" in members and "oci-layout" in members:
                parsed = _read_oci_layout(reader, ensure)
            else:
                raise ImageError(f"{path} is neither a docker save archive nor an OCI image layout archive.")
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
            raise ImageError(f"{path} is not a readable image archive ({exc}).") from None
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            raise ImageError(f"{path} has a malformed manifest or configuration ({exc!r}).") from None
    if not parsed:
        raise ImageError(f"{path} contains no image.")
    return parsed


def _read_docker_save(reader: "ArchiveReader", ensure: Ensure) -> list[ParsedImage]:
    manifest = reader.json("manifest.json")
    if not isinstance(manifest, list):
        raise ImageError(f"{reader.path}: manifest.json is not a list of images.")
    out = []
    for entry in manifest:
        config_blob = reader.bytes(entry.get("Config", ""))
        config = loads(config_blob, "the image configuration")
        ids = diff_ids(config)
        layer_names = entry.get("Layers") or []
        if len(layer_names) != len(ids):
            raise ImageError(f"{reader.path}: the manifest lists {len(layer_names)} layers "
                             f"but the image configuration {len(ids)}.")
        sizes = [ensure(diff_id, lambda name=name: reader.open(name), i, None)
                 for i, (name, diff_id) in enumerate(zip(layer_names, ids))]
        out.append(ParsedImage(config_blob, config, ids, sizes, list(entry.get("RepoTags") or [])))
    return out


def _read_oci_layout(reader: "ArchiveReader", ensure: Ensure) -> list[ParsedImage]:
    index = reader.json("index.json")
    out = []
    for desc in index.get("manifests") or []:
        desc = _pick_manifest(reader, desc)
        if desc is None:
            continue
        manifest = loads(reader.blob(desc), "an image manifest")
        config_blob = reader.blob(manifest.get("config") or {})
        config = loads(config_blob, "the image configuration")
        ids = diff_ids(config)
        layers = manifest.get("layers") or []
        if len(layers) != len(ids):
            raise ImageError(f"{reader.path}: the manifest lists {len(layers)} layers "
                             f"but the image configuration {len(ids)}.")
        sizes = []
        for i, (layer, diff_id) in enumerate(zip(layers, ids)):
            blob_name = reader.blob_name(layer)
            sizes.append(ensure(diff_id, lambda n=blob_name: reader.open(n), i, blob_name.rsplit("/", 1)[-1]))
        annotations = {**(desc.get("annotations") or {})}
        name = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
        refs = [name] if name and (":" in name or "/" in name) else []
        out.append(ParsedImage(config_blob, config, ids, sizes, refs))
    return out


def _pick_manifest(reader: "ArchiveReader", desc: dict) -> dict | None:
    media = desc.get("mediaType", "")
    if media.endswith("image.index.v1+json") or media.endswith("manifest.list.v2+json"):
        nested = loads(reader.blob(desc), "an image index").get("manifests") or []
        for sub in nested:
            plat = sub.get("platform") or {}
            if (plat.get("os"), plat.get("architecture")) == PLATFORM:
                return {**sub, "annotations": {**(desc.get("annotations") or {}), **(sub.get("annotations") or {})}}
        return None
    return desc


class ArchiveReader:
    """Members of an outer image archive by normalized name; never touches the filesystem."""

    def __init__(self, tf: tarfile.TarFile, members: dict[str, tarfile.TarInfo], path: str) -> None:
        self.tf, self.members, self.path = tf, members, path

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(member_key(str(name))) if name else None
        try:
            f = self.tf.extractfile(member) if member is not None else None
        except KeyError:      # a link member whose target is not in the archive
            f = None
        if f is None:
            raise ImageError(f"{self.path} lacks the file {name!r} that its manifest names.")
        return f

    def bytes(self, name: str) -> bytes:
        member = self.members.get(member_key(str(name))) if name else None
        if member is not None and member.size > MAX_METADATA_BYTES:
            raise ImageError(f"{self.path}: {name} is larger than {format_bytes(MAX_METADATA_BYTES)}, "
                             f"too large for image metadata.")
        with self.open(name) as f:
            return f.read(MAX_METADATA_BYTES + 1)

    def json(self, name: str):
        return loads(self.bytes(name), name)

    def blob_name(self, desc: dict) -> str:
        digest = str(desc.get("digest", ""))
        alg, _, hexd = digest.partition(":")
        if alg != "sha256" or not _HEX64.match(hexd):
            raise ImageError(f"{self.path}: unsupported or malformed blob digest {digest!r}.")
        return f"blobs/sha256/{hexd}"

    def blob(self, desc: dict) -> bytes:
        name = self.blob_name(desc)
        data = self.bytes(name)
        if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1]:
            raise ImageError(f"{self.path}: the blob {name} does not match its digest.")
        return data


def member_key(name: str) -> str:
    """An archive member name without leading '/' or './' and with '.' and '..' folded."""
    return posixpath.normpath("/" + name).lstrip("/")


def loads(data: bytes, what: str):
    try:
        return json.loads(data)
    except ValueError:
        raise ImageError(f"The archive's {what} is not valid JSON.") from None


def diff_ids(config: dict) -> list[str]:
    rootfs = config.get("rootfs") or {}
    out = []
    for d in rootfs.get("diff_ids") or []:
        alg, _, hexd = str(d).partition(":")
        if alg != "sha256" or not _HEX64.match(hexd):
            raise ImageError(f"The image configuration names an unsupported layer digest {d!r}.")
        out.append(hexd)
    if not out:
        raise ImageError("The image configuration lists no layers.")
    return out


_FILE_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a fifo"),
               (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


@contextlib.contextmanager
def open_source(src: str | BinaryIO) -> Iterator[BinaryIO]:
    """A path is opened only as a regular file: a device (/dev/zero) or fifo never ends."""
    if not isinstance(src, (str, os.PathLike)):
        yield src
        return
    try:
        # O_NONBLOCK: opening a fifo must not wait for a writer before fstat can refuse it
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ImageError(f"Cannot read {src}: {exc.strerror}.") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise ImageError(f"{src} is {kind}; images are imported from regular files only.")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        yield f


def decompressed(f: BinaryIO) -> BinaryIO:
    """The outer archive, uncompressed (docker load takes gzip, bzip2 and xz archives too)."""
    head = f.read(6)
    f.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(f, mode="rb")  # type: ignore[return-value]
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(f, mode="rb")  # type: ignore[return-value]
    return f


class GuardedFile:
    """The outer archive as tarfile reads it: every read checks the cancel flag, and reading past
    the budget's limit (a compressed bomb) is refused."""

    def __init__(self, f: BinaryIO, budget: Budget) -> None:
        self._f, self._budget = f, budget

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK_LIMIT), b""))
        data = self._f.read(n)
        self._budget.check_stream(self._f.tell())
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._budget.check_cancel()
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


# -- writing -------------------------------------------------------------------------------
@dataclass
class SaveLayer:
    diff_id: str                                   # hex sha256 of the uncompressed tar
    tar_size: int                                  # bytes of the uncompressed tar
    open: Callable[[], ContextManager[BinaryIO]]   # the uncompressed tar, streamed


@dataclass
class SaveImage:
    config_blob: bytes
    layers: list[SaveLayer]
    repo_tags: list[tuple[str, str]]               # (familiar NAME:TAG, full name) for each tag saved


def write_docker_save(out: BinaryIO, images: Sequence[SaveImage]) -> None:
    """Write `images` to `out` as a `docker save` archive (the format of Docker 25 and later)."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("blobs", "blobs/sha256"):
            tf.addfile(_member(name, 0, tarfile.DIRTYPE))
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        written: set[str] = set()
        manifest_json, index, repositories = [], [], {}
        for image in images:
            config_hex = hashlib.sha256(image.config_blob).hexdigest()
            if config_hex not in written:
                _add(tf, f"blobs/sha256/{config_hex}", image.config_blob)
                written.add(config_hex)
            for layer in image.layers:
                if layer.diff_id in written:
                    continue
                with layer.open() as f:
                    tf.addfile(_member(f"blobs/sha256/{layer.diff_id}", layer.tar_size), f)
                written.add(layer.diff_id)
            manifest = _canonical({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": f"sha256:{config_hex}", "size": len(image.config_blob)},
                "layers": [{"mediaType": OCI_LAYER_TAR, "digest": f"sha256:{layer.diff_id}", "size": layer.tar_size}
                           for layer in image.layers]})
            manifest_hex = hashlib.sha256(manifest).hexdigest()
            if manifest_hex not in written:
                _add(tf, f"blobs/sha256/{manifest_hex}", manifest)
                written.add(manifest_hex)
            desc = {"mediaType": OCI_MANIFEST, "digest": f"sha256:{manifest_hex}", "size": len(manifest)}
            for familiar, full in image.repo_tags:
                index.append({**desc, "annotations": {"io.containerd.image.name": full,
                                                      "org.opencontainers.image.ref.name": full.rsplit(":", 1)[1]}})
                repo, tag = familiar.rsplit(":", 1)
                if image.layers:
                    repositories.setdefault(repo, {})[tag] = image.layers[-1].diff_id
            if not image.repo_tags:
                index.append(desc)
            manifest_json.append({"Config": f"blobs/sha256/{config_hex}",
                                  "RepoTags": [familiar for familiar, _ in image.repo_tags] or None,
                                  "Layers": [f"blobs/sha256/{layer.diff_id}" for layer in image.layers]})
        _add(tf, "index.json", _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}))
        _add(tf, "manifest.json", _canonical(manifest_json))
        if repositories:
            _add(tf, "repositories", _canonical(repositories))


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _member(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    tf.addfile(_member(name, len(data)), io.BytesIO(data))

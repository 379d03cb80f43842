"""Safe extraction of one image layer (a tar stream) into an empty directory.

How this works: the stream is decompressed if needed (gzip, bzip2, xz) and
hashed on the way (sha256 of the uncompressed tar = the layer's diff_id; the
raw bytes are hashed too, for OCI blob digests), then read member by member
with tarfile in streaming mode. Every filesystem change goes through
directory file descriptors: each path component is opened with
O_NOFOLLOW | O_DIRECTORY starting at the layer root, so a symlink extracted
earlier can never redirect a later write outside the layer, whatever it
points to. Names are refused, not rewritten, when they are absolute or
contain `..`; a symlink may point anywhere absolute (it is resolved inside
the container's root later) but a relative target must stay inside the layer;
a hardlink must name a member already extracted; device nodes are refused.

Whiteouts are converted to overlayfs form so layers can be stacked by an
overlay mount without merging: `.wh.NAME` becomes a 0/0 character device
NAME, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.

Every import has a Budget, shared by all its layers: the bytes of file
content written (a sparse member counts at its full size, refused from its
header before anything is written) and the bytes of each uncompressed stream
(a gzip bomb of zeros is never written, only read) may not pass its limit, and
its cancel flag is checked per chunk read and per chunk written, so a daemon
shutting down stops an import within a chunk.

The caller owns the directory: on ImageError it removes it (nothing is left).
"""
from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import threading
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from swarm.runtime.errors import ImageError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1 << 16

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class LayerInfo:
    diff_id: str        # hex sha256 of the uncompressed tar stream
    raw_digest: str     # hex sha256 of the bytes as read (compressed or not)
    size: int           # bytes of regular file content


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


class Budget:
    """How far one import may expand, and whether it was cancelled; shared by all its layers.
    `why` names the limit for the user ("the import size limit", ...)."""

    def __init__(self, limit: int, why: str, cancel: threading.Event | None = None) -> None:
        self.limit, self.why, self.cancel = limit, why, cancel
        self.written = 0           # bytes of file content extracted so far, all layers

    def refuse(self) -> ImageError:
        return ImageError(f"The image expands to more than {format_bytes(self.limit)} ({self.why}); "
                          f"it was not imported.")

    def spend(self, n: int) -> None:
        """Account `n` bytes of file content before they are written."""
        self.check_cancel()
        if self.written + n > self.limit:
            raise self.refuse()
        self.written += n

    def check_stream(self, length: int) -> None:
        """An uncompressed stream has reached `length` bytes."""
        self.check_cancel()
        if length > self.limit:
            raise self.refuse()

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ImageError("The import was cancelled (the daemon is shutting down); nothing was imported.")


UNLIMITED = Budget(1 << 62, "no limit")


class _HashingReader:
    """A read-only file object that hashes and counts what passes through it; a counted
    (uncompressed) stream is held to the budget."""

    def __init__(self, raw: BinaryIO, prefix: bytes = b"", budget: Budget = UNLIMITED,
                 counted: bool = False) -> None:
        self._raw = raw
        self._prefix = prefix
        self.hash = hashlib.sha256()
        self.budget, self.counted, self.length = budget, counted, 0

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n is None or n < 0:
                data = self._prefix + self._raw.read()
                self._prefix = b""
            else:
                data, self._prefix = self._prefix[:n], self._prefix[n:]
                if len(data) < n:
                    data += self._raw.read(n - len(data))
        else:
            data = self._raw.read(n)
        self.length += len(data)
        if self.counted:
            self.budget.check_stream(self.length)
        else:
            self.budget.check_cancel()
        self.hash.update(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _read_exactly(raw: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = raw.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def open_layer_stream(raw: BinaryIO, budget: Budget = UNLIMITED) -> tuple[_HashingReader, _HashingReader]:
    """(raw reader, uncompressed reader) for a possibly compressed tar stream."""
    head = _read_exactly(raw, 6)
    raw_reader = _HashingReader(raw, head, budget)
    if head.startswith(b"\x1f\x8b"):
        inner: BinaryIO = gzip.GzipFile(fileobj=raw_reader, mode="rb")  # type: ignore[arg-type]
    elif head.startswith(b"BZh"):
        inner = bz2.BZ2File(raw_reader, mode="rb")  # type: ignore[arg-type]
    elif head.startswith(b"\xfd7zXZ\x00"):
        inner = lzma.LZMAFile(raw_reader, mode="rb")  # type: ignore[arg-type]
    elif head.startswith(b"\x28\xb5\x2f\xfd"):
        raise ImageError("zstd-compressed layers are not supported; recompress the image with gzip.")
    else:
        raw_reader.counted = True
        return raw_reader, raw_reader
    return raw_reader, _HashingReader(inner, budget=budget, counted=True)


def split_member_name(name: str) -> list[str]:
    """Path components of an archive member name; refuses absolute names and `..`."""
    if name.startswith("/"):
        raise ImageError(f"The archive member {name!r} has an absolute path, which images may not contain.")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"The archive member {name!r} contains a '..' component, which images may not contain.")
    return parts


class _Extractor:
    def __init__(self, root_fd: int, budget: Budget = UNLIMITED) -> None:
        self.root_fd = root_fd
        self.budget = budget
        self.size = 0
        self.dir_times: list[tuple[list[str], int]] = []

    # -- walking -------------------------------------------------------------------------
    def open_dir(self, parts: list[str], name: str, create: bool, link: bool = False) -> int:
        """A new fd for the directory `parts` under the root, never following a symlink."""
        fd = os.dup(self.root_fd)
        try:
            for i, comp in enumerate(parts):
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(parts[: i + 1])
                    if stat.S_ISLNK(os.lstat(comp, dir_fd=fd).st_mode) and link:
                        raise ImageError(f"The hard link {name!r} points through the symbolic link {where!r}, "
                                         f"which images may not contain.") from None
                    if stat.S_ISLNK(os.lstat(comp, dir_fd=fd).st_mode):
                        raise ImageError(f"The archive member {name!r} would be written through the symbolic link "
                                         f"{where!r}, which images may not do.") from None
                    raise ImageError(f"The archive member {name!r} needs {where!r} to be a directory, "
                                     f"but the archive made it a file.") from None
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def clear(dir_fd: int, leaf: str, keep_dir: bool = False) -> None:
        """Remove `leaf` in `dir_fd` if present (a directory only when not keep_dir)."""
        try:
            st = os.lstat(leaf, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not keep_dir:
                shutil.rmtree(leaf, dir_fd=dir_fd)  # fd-based: does not follow symlinks
        else:
            os.unlink(leaf, dir_fd=dir_fd)

    # -- members -------------------------------------------------------------------------
    def add(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = split_member_name(member.name)
        if not parts:
            return  # the root itself ("./"): the layer directory already exists
        leaf = parts[-1]
        if leaf.startswith(WHITEOUT_PREFIX):
            self.add_whiteout(member, parts)
            return
        parent = self.open_dir(parts[:-1], member.name, create=True)
        try:
            if member.isdir():
                self.add_dir(parent, leaf, member)
                self.dir_times.append((parts, int(member.mtime)))
            elif member.isreg():
                self.budget.spend(member.size)   # from the header: a sparse bomb is refused unwritten
                self.add_file(parent, leaf, member, tf)
            elif member.issym():
                self.add_symlink(parent, leaf, member, parts)
            elif member.islnk():
                self.add_hardlink(parent, leaf, member)
            elif member.isfifo():
                self.clear(parent, leaf)
                os.mkfifo(leaf, member.mode & 0o7777, dir_fd=parent)
                self.set_owner_and_time(parent, leaf, member)
            elif member.ischr() or member.isblk():
                raise ImageError(f"The archive member {member.name!r} is a device node, which images may not contain.")
            else:
                raise ImageError(f"The archive member {member.name!r} has an unsupported type {member.type!r}.")
        finally:
            os.close(parent)

    def add_dir(self, parent: int, leaf: str, member: tarfile.TarInfo) -> None:
        self.clear(parent, leaf, keep_dir=True)
        try:
            os.mkdir(leaf, 0o700, dir_fd=parent)
        except FileExistsError:
            pass
        fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)
            self.set_xattrs(fd, member)
        finally:
            os.close(fd)

    def add_file(self, parent: int, leaf: str, member: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        self.clear(parent, leaf)
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        try:
            src = tf.extractfile(member)
            if src is not None:
                while True:
                    chunk = src.read(CHUNK)   # the holes of a sparse member come from no stream
                    if not chunk:
                        break
                    self.budget.check_cancel()
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears set-id bits
            self.set_xattrs(fd, member)
            os.utime(fd, ns=(member.mtime * 10**9,) * 2)
        finally:
            os.close(fd)
        self.size += member.size

    def add_symlink(self, parent: int, leaf: str, member: tarfile.TarInfo, parts: list[str]) -> None:
        target = member.linkname
        if not target:
            raise ImageError(f"The symbolic link {member.name!r} in the archive has an empty target.")
        if not target.startswith("/"):
            resolved = posixpath.normpath(posixpath.join("/".join(parts[:-1]), target))
            if resolved == ".." or resolved.startswith("../"):
                raise ImageError(f"The symbolic link {member.name!r} points outside the image ({target!r}), "
                                 f"which images may not contain.")
        self.clear(parent, leaf)
        os.symlink(target, leaf, dir_fd=parent)
        self.set_owner_and_time(parent, leaf, member)

    def add_hardlink(self, parent: int, leaf: str, member: tarfile.TarInfo) -> None:
        if member.linkname.startswith("/") or ".." in member.linkname.split("/"):
            raise ImageError(f"The hard link {member.name!r} points outside the image ({member.linkname!r}), "
                             f"which images may not contain.")
        target = split_member_name(member.linkname)
        if not target:
            raise ImageError(f"The hard link {member.name!r} in the archive has an empty target.")
        missing = ImageError(f"The hard link {member.name!r} points to {member.linkname!r}, "
                             f"which is not a file earlier in the archive.")
        try:
            src_dir = self.open_dir(target[:-1], member.name, create=False, link=True)
        except FileNotFoundError:
            raise missing from None
        try:
            try:
                st = os.lstat(target[-1], dir_fd=src_dir)
            except FileNotFoundError:
                raise missing from None
            if stat.S_ISDIR(st.st_mode):
                raise ImageError(f"The hard link {member.name!r} points to the directory {member.linkname!r}.")
            try:
                if os.path.samestat(st, os.lstat(leaf, dir_fd=parent)):
                    return  # already the same file
            except FileNotFoundError:
                pass
            self.clear(parent, leaf)
            os.link(target[-1], leaf, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(src_dir)

    def add_whiteout(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        leaf = parts[-1]
        if not (member.isreg() or member.islnk()):
            raise ImageError(f"The whiteout {member.name!r} in the archive is not a regular file.")
        parent = self.open_dir(parts[:-1], member.name, create=True)
        try:
            if leaf == OPAQUE_MARKER:
                os.setxattr(parent, OPAQUE_XATTR, b"y")
                return
            if leaf.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
                return  # other aufs metadata (.wh..wh.plnk, ...): meaningless for overlayfs
            hidden = leaf[len(WHITEOUT_PREFIX):]
            if hidden in ("", ".", ".."):
                raise ImageError(f"The whiteout {member.name!r} in the archive names no file.")
            self.clear(parent, hidden)
            os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        finally:
            os.close(parent)

    # -- metadata ------------------------------------------------------------------------
    @staticmethod
    def set_owner_and_time(parent: int, leaf: str, member: tarfile.TarInfo) -> None:
        os.chown(leaf, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if not member.issym():
            os.chmod(leaf, member.mode & 0o7777, dir_fd=parent)
        os.utime(leaf, ns=(member.mtime * 10**9,) * 2, dir_fd=parent, follow_symlinks=False)

    @staticmethod
    def set_xattrs(fd: int, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if not (name.startswith("user.") or name == "security.capability"):
                continue  # trusted.overlay.* and the like would steer overlayfs: never from an image
            try:
                os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
            except OSError:
                pass  # an attribute this filesystem or kernel does not take is not worth refusing the image

    def finish(self) -> None:
        for parts, mtime in reversed(self.dir_times):
            try:
                fd = self.open_dir(parts, "/".join(parts), create=False)
            except (OSError, ImageError):
                continue  # replaced or removed by a later member
            try:
                os.utime(fd, ns=(mtime * 10**9,) * 2)
            finally:
                os.close(fd)


def extract_layer(raw: BinaryIO, dest: str, budget: Budget = UNLIMITED) -> LayerInfo:
    """Extract the tar stream `raw` (maybe compressed) into the existing empty directory `dest`.

    Raises ImageError on a refused or unreadable archive, past the budget or when cancelled;
    the caller removes `dest` then.
    """
    raw_reader, reader = open_layer_stream(raw, budget)
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        ex = _Extractor(root_fd, budget)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
                for member in tf:
                    ex.add(tf, member)
            reader.drain()
            if reader is not raw_reader:
                raw_reader.drain()
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise ImageError(f"The layer is not a readable tar archive ({exc}).") from None
        except OSError as exc:
            if exc.errno is None:  # gzip/bz2 report corrupt data as OSError without errno
                raise ImageError(f"The layer is not a readable tar archive ({exc}).") from None
            raise ImageError(f"Extracting the layer failed: {exc.strerror}.") from None
        ex.finish()
        return LayerInfo(diff_id=reader.hash.hexdigest(), raw_digest=raw_reader.hash.hexdigest(), size=ex.size)
    finally:
        os.close(root_fd)


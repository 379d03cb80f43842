"""Crash-safe file replacement: temp file, fsync, rename, fsync of the directory.

`atomic_write` is the project's one atomic file writer (the Raft journal and
membership, node config, certificates and keys, image metadata, bundles).
"""
from __future__ import annotations

import contextlib
import os
import tempfile


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` (file mode exactly `mode`) so that a crash leaves
    the old or the new file, whole. The temp file has a name of its own, in the
    same directory, and is removed if the write fails."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)

"""A runc task's mounts and files: where each --mount comes from on the host, the copy-up of
the image's files into new volumes, and the task's secrets and configs on a tmpfs.

How this works. A bind's source is the host path, its propagation checked against the
mount it lies on (as Docker's ensureShared does); a volume's is its directory in the
node's VolumeStore (created on first use, recorded as used by the bundle); a read-only
mount that runc cannot make read-only all the way down gets a read-only copy of the
tree (mounts.readonly_tree). Secrets and configs are written on a tmpfs at
bundle/FILES_DIR, never on the node's disk, and bound one by one, read-only, at their
targets.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

from swarm.api import secrets
from swarm.api.spec import ContainerSpec, FileReference, Mount
from swarm.runtime import mounts, volumes
from swarm.runtime.errors import SpecError

FILES_DIR = "files"     # the tmpfs in a bundle holding the task's secrets and configs
PAGE = 4096


def place_files(bundle: str, files: Sequence[tuple[FileReference, bytes, str]]) -> list[dict]:
    """Write the task's secrets and configs on a tmpfs at bundle/FILES_DIR (never on the
    node's disk; unmounted with the bundle), one file each with its uid, gid and mode, the
    tmpfs then read-only; the config.json mounts that bind each file, read-only, at its
    target (a secret under /run/secrets), as Docker's daemon does."""
    if not files:
        return []
    where = os.path.join(bundle, FILES_DIR)
    os.mkdir(where, 0o700)
    pages = sum(-(-len(value) // PAGE) + 1 for _, value, _ in files)
    mounts.mount_tmpfs(where, (pages + 16) * PAGE, len(files) + 16)
    entries, targets = [], set()
    for index, (ref, value, kind) in enumerate(files):
        target = secrets.target_path(kind, ref.target)
        if target in targets:
            raise SpecError(f"Two secrets or configs have the same target {target}.")
        targets.add(target)
        try:
            uid, gid = int(ref.uid), int(ref.gid)
        except ValueError:
            raise SpecError(f"The {kind} {ref.name} has a uid or gid that is not a number.") from None
        path = os.path.join(where, str(index))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, value)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, ref.mode & 0o7777)
        finally:
            os.close(fd)
        entries.append({"destination": target, "type": "bind", "source": path,
                        "options": ["bind", "rprivate", "ro", "nosuid", "nodev", "noexec"]})
    mounts.remount_readonly(where)
    return entries


def mount_source(store: volumes.VolumeStore, bundle: str, index: int, m: Mount,
                 rro: Callable[[], bool]) -> str:
    """The host path of a task's mount: the bind's source (its propagation checked as Docker
    does), or the volume's directory (created on first use, recorded as used by this bundle;
    an anonymous one lives and dies with the task)."""
    if m.type == "tmpfs":
        return "tmpfs"
    if m.type == "bind":
        path = m.source
        _check_propagation(path, m.bind_propagation)
    else:
        path = store.attach(bundle, m)[1]
    recursive = m.type != "bind" or m.bind_recursive in ("enabled", "readonly")
    if m.readonly and recursive and not rro():
        path = mounts.readonly_tree(bundle, index, path)
    return path


def populate_volumes(store: volumes.VolumeStore, bundle: str, container: ContainerSpec) -> None:
    """Copy-up of the image's files into new volumes, once bundle/rootfs is mounted."""
    names = volumes.read_uses(bundle)     # one per volume mount, in order (a fresh bundle)
    rootfs = os.path.join(bundle, "rootfs")
    for m, name in zip((m for m in container.mounts if m.type == "volume"), names):
        if not m.volume_nocopy:
            store.populate(name, volumes.resolve_in_root(rootfs, m.target))


def _check_propagation(source: str, propagation: str) -> None:
    """Docker's ensureShared / ensureSharedOrSlave: a shared bind needs a shared source mount,
    a slave one a shared or slave source mount (else no event could ever propagate)."""
    if propagation not in ("shared", "rshared", "slave", "rslave"):
        return
    point, tags = _mount_of(os.path.realpath(source))
    if propagation in ("shared", "rshared") and "shared" not in tags:
        raise SpecError(f"path {source} is mounted on {point} but it is not a shared mount.")
    if "shared" not in tags and "master" not in tags:
        raise SpecError(f"path {source} is mounted on {point} but it is not a shared or slave mount.")


def _mount_of(path: str) -> tuple[str, set[str]]:
    """The mount point holding `path` (the longest one above it) and its propagation tags
    ("shared", "master"), from /proc/self/mountinfo's optional fields."""
    best, tags = "/", set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if path == point or path.startswith(point.rstrip("/") + "/"):
                if len(point) >= len(best):   # a later mount on the same point hides the earlier
                    best = point
                    tags = {opt.split(":")[0] for opt in fields[6:fields.index("-")]}
    return best, tags


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

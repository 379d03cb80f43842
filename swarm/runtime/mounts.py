"""Host mounts and cgroups of the runc backend: the overlay root filesystem,
read-only trees for a runc without "rro", the mount table, and removal.

Mounts are made with mount(2) through libc (no `mount` binary); the mount
table is read from /proc/self/mountinfo.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import time

from swarm.runtime.errors import ContainerError

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
SYS_MOUNT_SETATTR = 442     # the same number on every architecture (new syscalls share one table)


def kernel_has_mount_setattr() -> bool:
    # mount_setattr(-1, "", 0, NULL, 0): EBADF where the call exists, ENOSYS where it does not.
    res = _libc.syscall(SYS_MOUNT_SETATTR, -1, b"", 0, None, 0)
    return not (res == -1 and ctypes.get_errno() == errno.ENOSYS)


def mount(source: str, target: str, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise ContainerError(f"Mounting {source} read-only at {target} failed: {os.strerror(err)}.")


def readonly_tree(bundle: str, index: int, source: str) -> str:
    """For a runc without "rro": a private recursive bind of `source` in the bundle, with every
    mount in it remounted read-only (runc's "ro" reaches only the top one). It is a host mount
    under the bundle, so the runtime's teardown (unmount_all) removes it with the rootfs."""
    source = os.path.realpath(source)
    if not os.path.isdir(source) or mounts_under(source) in ([], [source]):
        return source    # nothing mounted inside: "ro" is enough
    target = os.path.join(bundle, "ro", str(index))
    os.makedirs(target, mode=0o755)
    mount(source, target, MS_BIND | MS_REC)
    mount("none", target, MS_REC | MS_PRIVATE)   # our remounts must not propagate back to the source
    for point in sorted(mounts_under(target), key=len):
        flags = os.statvfs(point).f_flag
        kept = sum(ms for st, ms in _KEPT_FLAGS if flags & st)   # a bind remount resets these otherwise
        mount("none", point, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)
    return target


def mount_tmpfs(target: str, size: int, inodes: int) -> None:
    """A private tmpfs at `target` (root only, no devices, setuid or exec), at most `size` bytes
    and `inodes` files: where a task's secrets live, in memory only."""
    options = f"mode=0700,size={size},nr_inodes={inodes}"
    if _libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options.encode()) != 0:
        err = ctypes.get_errno()
        raise ContainerError(f"Mounting a tmpfs at {target} failed: {os.strerror(err)}.")


def remount_readonly(target: str) -> None:
    """Make the tmpfs at `target` read-only (its files are written: nothing may change them)."""
    mount("none", target, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_rootfs(bundle: str, lowers: list[str]) -> None:
    """Mount bundle/rootfs as an overlay of the image's layers (upper/ and work/ in the bundle)."""
    for lower in lowers:
        if not os.path.isdir(lower):
            raise ContainerError(f"The image layer {lower} is missing; load the image again.")
    options = (f"lowerdir={':'.join(reversed(lowers))},upperdir={bundle}/upper,workdir={bundle}/work")
    if any(c in bundle + "".join(lowers) for c in ",:"):
        raise ContainerError("The state directory path may not contain ',' or ':' (overlayfs options).")
    if len(options) >= 4096:
        raise ContainerError("The image has too many layers for one overlay mount.")
    target = os.path.join(bundle, "rootfs")
    if _libc.mount(b"overlay", target.encode(), b"overlay", 0, options.encode()) != 0:
        err = ctypes.get_errno()
        raise ContainerError(f"Mounting the root filesystem of {os.path.basename(bundle)} failed: "
                             f"{os.strerror(err)}.")


def unmount_all(bundle: str) -> bool:
    """Unmount everything under `bundle`, deepest first (lazily if busy); True if nothing is left mounted."""
    for mnt in sorted(mounts_under(bundle), key=len, reverse=True):
        if _libc.umount2(mnt.encode(), 0) != 0:
            _libc.umount2(mnt.encode(), MNT_DETACH)
    return not mounts_under(bundle)


def mountinfo(under: str = "") -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount in this mount namespace, or only
    of those whose point starts with `under`. With hundreds of containers the table
    is long and read often: lines that cannot match are skipped before parsing."""
    out = []
    needle = under.replace(" ", "\\040")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if needle and needle not in line:
                continue
            fields = line.split()
            sep = fields.index("-")
            point = fields[4]
            if "\\" in point:
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)  # \040 is a space
            if point.startswith(under):
                out.append((point, fields[sep + 1]))
    return out


def mounts_under(path: str) -> list[str]:
    prefix = path.rstrip("/") + "/"
    return [p for p, _ in mountinfo(path.rstrip("/")) if p == path or p.startswith(prefix)]


def mounted(path: str) -> bool:
    return any(p == path for p, _ in mountinfo(path))


@functools.cache
def cgroup_mounts() -> list[str]:
    return sorted({p for p, fstype in mountinfo() if fstype in ("cgroup", "cgroup2")})


def remove_cgroup(path: str) -> None:
    """rmdir a cgroup directory (children first); a cgroup with live processes stays and raises."""
    if not os.path.isdir(path):
        return
    for name in os.listdir(path):
        child = os.path.join(path, name)
        if os.path.isdir(child):
            remove_cgroup(child)
    for attempt in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == 49:
                raise ContainerError(f"Cannot remove the cgroup {path}: {exc.strerror}.") from None
            time.sleep(0.02)

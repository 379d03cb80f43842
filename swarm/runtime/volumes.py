"""Named volumes of this node, kept as Docker's `local` volume driver keeps them.

How this works. A volume is the directory ROOT/NAME (ROOT is STATE_DIR/volumes):
tasks mount ROOT/NAME/_data, and ROOT/NAME/meta.json records its name,
creation time, labels and driver options. A task's volume mount with a source
names a volume, created on first use with the mount's labels and options (an
existing one is used as it is, as Docker does); a mount without a source gets
a new anonymous volume (64 random hex digits, label ANONYMOUS_LABEL), removed
with its task as Docker removes the anonymous volumes of a swarm task's
container (moby's swarm executor removes containers with RemoveVolume).

In use: each task's bundle lists the volumes it mounts in BUNDLE/volumes.json,
written while the store's lock (an flock of ROOT/.lock) is held; the users of
a volume are the bundles that list it. There is no count to keep in step: a
bundle removed by any path stops using its volumes. `remove` and `prune` take
the same lock, so a volume is never removed between a task's choosing it and
its bundle recording it.

Driver options (`volume-opt`, as Docker's local driver takes them):
type=tmpfs,device=tmpfs[,o=size=64m] mounts a tmpfs on _data, and
type=none,o=bind,device=/path binds a host directory there. The mount is made
when a task first uses the volume and undone when the last one is gone, so a
tmpfs volume's content lives while tasks use it (Docker's refcounted Mount).

Copy-up (`populate`): a volume whose _data is empty, mounted where the image
has a directory, gets a copy of the image's files there (owners, modes, links
kept: `cp -a`) and that directory's owner and mode, unless the mount says
volume-nocopy: Docker's populateVolume, done once the task's root filesystem
is mounted.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from raft.fsutil import atomic_write
from swarm.api.model import rfc3339
from swarm.api.spec import Mount
from swarm.runtime import mounts
from swarm.runtime.errors import ContainerError, SpecError

DRIVER = "local"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"   # what Docker 23+ puts on anonymous volumes
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
USES_FILE = "volumes.json"                         # in a task's bundle: the volumes it mounts
LOCAL_OPTIONS = ("type", "device", "o")
# Docker's local driver: an option that needs others with it (volume/local/local_unix.go).
REQUIRED_WITH = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
_FLAGS = {"ro": MS_RDONLY, "rw": 0, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
          "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
          "suid": 0, "dev": 0, "exec": 0, "atime": 0}
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge", "mpol")
FILTERS = ("dangling", "driver", "label", "name")
PRUNE_FILTERS = ("label", "label!", "all")

_libc = ctypes.CDLL(None, use_errno=True)


class NoSuchVolume(ValueError):
    """The volume does not exist on this node."""


class VolumeInUse(ValueError):
    """The volume is mounted by tasks of this node."""


# -- pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MountPlan:
    """How the local driver's options put a filesystem on a volume's _data."""
    fstype: str | None       # None: a bind of `source`
    source: str
    flags: int
    data: str


def check_name(name: str) -> None:
    if not NAME.match(name) or len(name) > 255:
        raise ValueError(f"{name!r} is not a valid volume name (letters, digits, '_', '.', '-'; "
                         "it starts with a letter or digit)")


def check_options(opts: Mapping[str, str]) -> None:
    """The local driver's options as this node can honour them; ValueError with one sentence."""
    if not opts:
        return
    for key in opts:
        if key == "size":
            raise ValueError("the local volume option 'size' (an XFS quota) is not supported on this node")
        if key not in LOCAL_OPTIONS:
            raise ValueError(f"invalid option: {key!r} (the local volume driver takes type, device and o)")
    for key, needed in REQUIRED_WITH.items():
        for other in needed:
            if key in opts and other not in opts:
                raise ValueError(f"missing required option: {other!r}")
    mount_plan(opts)


def mount_plan(opts: Mapping[str, str]) -> MountPlan | None:
    """What to mount on _data for these (checked) options; None: a plain directory."""
    if not opts:
        return None
    fstype, device, o = opts["type"], opts["device"], opts.get("o", "")
    items = [item for item in o.split(",") if item]
    if fstype == "tmpfs":
        flags, data = 0, []
        for item in items:
            key = item.partition("=")[0]
            if item in _FLAGS:
                flags |= _FLAGS[item]
            elif "=" in item and key in _TMPFS_DATA:
                data.append(item)
            else:
                raise ValueError(f"the volume option o={o!r} has {item!r}, which is not a tmpfs mount option")
        return MountPlan("tmpfs", device or "tmpfs", flags, ",".join(data))
    if fstype == "none":
        if "bind" not in items and "rbind" not in items:
            raise ValueError("a local volume of type=none needs o=bind (a bind of device=/path)")
        flags = MS_BIND | (MS_REC if "rbind" in items else 0)
        for item in items:
            if item in ("bind", "rbind"):
                continue
            if item not in _FLAGS:
                raise ValueError(f"the volume option o={o!r} has {item!r}, which a bind mount does not take")
            flags |= _FLAGS[item]
        if not device.startswith("/"):
            raise ValueError(f"the volume option device={device!r} must be an absolute host path for a bind")
        return MountPlan(None, device, flags, "")
    raise ValueError(f"the local volume type {fstype!r} is not supported on this node "
                     "(use type=tmpfs, or type=none with o=bind)")


def parse_filters(items: Sequence[str], allowed: Sequence[str] = FILTERS) -> dict[str, list[str]]:
    """["name=web", "label=a=b"] -> {"name": ["web"], "label": ["a=b"]}; docker's sentence for an unknown key."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in allowed:
            raise ValueError(f"invalid filter '{item}'")
        if key in ("dangling", "all") and value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"invalid filter '{key}={value}'")
        out.setdefault(key, []).append(value)
    return out


def _truthy(value: str) -> bool:
    return value.lower() in ("true", "1")


def _label_match(labels: Mapping[str, str], want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _name_match(name: str, pattern: str) -> bool:
    # Docker matches a name filter as a regular expression anywhere in the name.
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def matches(info: Mapping, filters: Mapping[str, Sequence[str]]) -> bool:
    """Whether a volume (as `info` gives it, with UsedBy) passes every filter: values of one key
    are alternatives, except label (every one must match), as docker's volume ls."""
    labels = info.get("Labels") or {}
    for key, values in filters.items():
        if key == "name" and not any(_name_match(info["Name"], v) for v in values):
            return False
        if key == "driver" and info["Driver"] not in values:
            return False
        if key == "label" and not all(_label_match(labels, v) for v in values):
            return False
        if key == "label!" and any(_label_match(labels, v) for v in values):
            return False
        if key == "dangling" and not any(_truthy(v) == (not info.get("UsedBy")) for v in values):
            return False
    return True


def prunable(info: Mapping, all_volumes: bool, filters: Mapping[str, Sequence[str]]) -> bool:
    """Docker 23+: prune takes unused anonymous volumes, and unused named ones too with --all."""
    if info.get("UsedBy"):
        return False
    if not all_volumes and ANONYMOUS_LABEL not in (info.get("Labels") or {}):
        return False
    return matches(info, {k: v for k, v in filters.items() if k != "all"})


def resolve_in_root(root: str, path: str, max_links: int = 255) -> str:
    """`path` inside `root`, every symlink followed as if `root` were / (Docker's
    FollowSymlinkInScope): an image's link can never lead the copy-up out of its rootfs."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        try:
            st = os.lstat(here)
        except (FileNotFoundError, NotADirectoryError):
            done.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            done.append(part)
            continue
        links += 1
        if links > max_links:
            raise SpecError(f"Too many symbolic links under {path} in the image.")
        target = os.readlink(here)
        if target.startswith("/"):
            done = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *done)


def random_name() -> str:
    return secrets.token_hex(32)


# -- the store --------------------------------------------------------------------------------


class VolumeStore:
    """The volumes under `root`, used by the task bundles under `tasks_root`."""

    def __init__(self, root: str, tasks_root: str) -> None:
        self.root = os.path.abspath(root)
        self.tasks_root = os.path.abspath(tasks_root)

    def data_path(self, name: str) -> str:
        return os.path.join(self.root, name, "_data")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.root, mode=0o701, exist_ok=True)
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- what tasks do -------------------------------------------------------------------
    def attach(self, bundle: str, m: Mount, *, now: Callable[[], float] = time.time,
               new_name: Callable[[], str] = random_name) -> tuple[str, str]:
        """(volume name, host path) for a task's volume mount: the named volume, created now if
        it is new, or a new anonymous one; recorded in the bundle as used before the lock is let go."""
        with self._locked():
            name = m.source or new_name()
            if not os.path.exists(self._meta_path(name)):
                labels = dict(m.volume_labels)
                if not m.source:
                    labels[ANONYMOUS_LABEL] = ""
                self._create(name, labels, dict(m.volume_opts), now())
            uses = read_uses(bundle)
            atomic_write(os.path.join(bundle, USES_FILE), json.dumps(uses + [name]).encode(), 0o644)
            self._mount_driver(name)
        return name, self.data_path(name)

    def populate(self, name: str, image_dir: str) -> bool:
        """Copy-up: the image's directory into the volume if the volume is empty; True if copied.
        Under the lock, so two tasks starting on a new volume copy once."""
        with self._locked():
            return self._populate(name, image_dir)

    def _populate(self, name: str, image_dir: str) -> bool:
        data = self.data_path(name)
        try:
            src = os.stat(image_dir)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(src.st_mode) or os.listdir(data):
            return False
        res = subprocess.run(["cp", "-a", "--", image_dir + "/.", data + "/"], capture_output=True, text=True,
                             timeout=600)
        if res.returncode != 0:
            raise ContainerError(f"Copying the image's files into volume {name} failed: "
                                 f"{res.stderr.strip().splitlines()[-1:] or res.returncode}.")
        os.chown(data, src.st_uid, src.st_gid)
        os.chmod(data, stat.S_IMODE(src.st_mode))
        return True

    def release(self, names: Sequence[str]) -> None:
        """A task's bundle is gone: unmount driver mounts nobody uses now, remove its anonymous volumes."""
        if not names:
            return
        with self._locked():
            users = self._users()
            for name in dict.fromkeys(names):
                if users.get(name) or not os.path.exists(self._meta_path(name)):
                    continue
                if ANONYMOUS_LABEL in self._meta(name).get("labels", {}):
                    self._delete(name)
                else:
                    self._unmount_driver(name)

    # -- what `swarm volume` asks -------------------------------------------------------------
    def list(self) -> list[dict]:
        with self._locked():
            users = self._users()
            return [self._info(name, users) for name in self._names()]

    def inspect(self, name: str) -> dict:
        with self._locked():
            if not os.path.exists(self._meta_path(name)):
                raise NoSuchVolume(f"get {name}: no such volume")
            return self._info(name, self._users())

    def remove(self, name: str, force: bool = False) -> bool:
        """Remove an unused volume; True if removed. With force a missing one is no error (docker's -f)."""
        with self._locked():
            if not os.path.exists(self._meta_path(name)):
                if force:
                    return False
                raise NoSuchVolume(f"get {name}: no such volume")
            used = self._users().get(name)
            if used:
                raise VolumeInUse(f"remove {name}: volume is in use - [{', '.join(used)}]")
            self._delete(name)
            return True

    def prune(self, all_volumes: bool = False, filters: Mapping[str, Sequence[str]] | None = None
              ) -> tuple[list[str], int]:
        """(names removed, bytes reclaimed): unused anonymous volumes, or every unused one with all."""
        filters = filters or {}
        if "all" in filters:
            all_volumes = all_volumes or any(_truthy(v) for v in filters["all"])
        removed, reclaimed = [], 0
        with self._locked():
            users = self._users()
            for name in self._names():
                if prunable(self._info(name, users), all_volumes, filters):
                    size = _tree_size(self.data_path(name))
                    self._delete(name)
                    removed.append(name)
                    reclaimed += size
        return removed, reclaimed

    # -- helpers -----------------------------------------------------------------------------
    def _meta_path(self, name: str) -> str:
        check_name(name)
        return os.path.join(self.root, name, "meta.json")

    def _meta(self, name: str) -> dict:
        with open(self._meta_path(name)) as f:
            return json.load(f)

    def _names(self) -> list[str]:
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in entries if NAME.match(n) and os.path.exists(os.path.join(self.root, n, "meta.json"))]

    def _info(self, name: str, users: Mapping[str, list[str]]) -> dict:
        meta = self._meta(name)
        return {"CreatedAt": rfc3339(meta.get("created_at", 0.0)), "Driver": DRIVER,
                "Labels": meta.get("labels") or None, "Mountpoint": self.data_path(name), "Name": name,
                "Options": meta.get("options") or None, "Scope": "local", "UsedBy": users.get(name, [])}

    def _create(self, name: str, labels: dict, options: dict, created_at: float) -> None:
        try:
            check_options(options)
        except ValueError as exc:
            raise SpecError(f"Volume {name}: {exc}.") from None
        os.makedirs(os.path.join(self.root, name), mode=0o701, exist_ok=True)
        os.makedirs(self.data_path(name), mode=0o755, exist_ok=True)
        meta = {"name": name, "created_at": created_at, "labels": labels, "options": options}
        atomic_write(self._meta_path(name), json.dumps(meta, indent=1).encode(), 0o600)

    def _users(self) -> dict[str, list[str]]:
        """Volume name -> ids of the task bundles that mount it."""
        out: dict[str, list[str]] = {}
        try:
            tasks = sorted(os.listdir(self.tasks_root))
        except FileNotFoundError:
            return out
        for task_id in tasks:
            if task_id.startswith("."):
                continue
            for name in dict.fromkeys(read_uses(os.path.join(self.tasks_root, task_id))):
                out.setdefault(name, []).append(task_id)
        return out

    def _mount_driver(self, name: str) -> None:
        plan = mount_plan(self._meta(name).get("options") or {})
        data = self.data_path(name)
        if plan is None or mounts.mounted(data):
            return
        if plan.fstype is None and not os.path.isdir(plan.source):
            raise SpecError(f"The device {plan.source} of volume {name} is not a directory on this node.")
        _mount(plan.source, data, plan.fstype, plan.flags & ~MS_RDONLY if plan.fstype is None else plan.flags,
               plan.data)
        if plan.fstype is None and plan.flags & MS_RDONLY:
            # A bind takes "ro" only on a remount of itself.
            _mount("none", data, None, MS_REMOUNT | MS_BIND | MS_RDONLY, "")

    def _unmount_driver(self, name: str) -> None:
        data = self.data_path(name)
        for point in sorted(mounts.mounts_under(data), key=len, reverse=True):
            if _libc.umount2(point.encode(), 0) != 0:
                _libc.umount2(point.encode(), mounts.MNT_DETACH)

    def _delete(self, name: str) -> None:
        self._unmount_driver(name)
        if mounts.mounts_under(os.path.join(self.root, name)):
            # Never rmtree through a mount: it would delete the bound directory's files.
            raise ContainerError(f"Volume {name} is still mounted on this node; it was not removed.")
        os.unlink(self._meta_path(name))     # first: a half-removed volume is no longer listed
        shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)


def read_uses(bundle: str) -> list[str]:
    """The volumes a task bundle records as mounted ([] for none, or a bundle being written)."""
    try:
        with open(os.path.join(bundle, USES_FILE)) as f:
            names = json.load(f)
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str) -> None:
    res = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None)
    if res != 0:
        err = ctypes.get_errno()
        what = f"{fstype} filesystem" if fstype else f"bind of {source}"
        raise (SpecError if err in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR) else ContainerError)(
            f"Mounting the {what} on volume {os.path.basename(os.path.dirname(target))} failed: "
            f"{os.strerror(err)}.")


def _tree_size(path: str) -> int:
    """Bytes of the regular files under `path`, each inode once (what prune reports as reclaimed)."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total

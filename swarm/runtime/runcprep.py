"""What preparing a runc task reads of the node and of the image: the effective healthcheck,
whether runc can make mounts read-only recursively ("rro"), the limits runc may raise
(our hard rlimits, oom_score_adj and CAP_SYS_RESOURCE), the image's /etc/passwd and
/etc/group (to resolve --user), and the working directory made in the rootfs.
"""
from __future__ import annotations

import os
import re
import resource
import stat
import subprocess

from swarm.api import health
from swarm.api.spec import ContainerSpec
from swarm.runtime import mounts, ocispec, volumes
from swarm.runtime.errors import SpecError
from swarm.runtime.images import Image

MAX_ETC_FILE = 4 << 20  # an image's /etc/passwd or /etc/group read to resolve --user

_RRO_SUPPORT: dict[str, bool] = {}


def effective_healthcheck(container: ContainerSpec, image: Image) -> health.Check | None:
    """The task's healthcheck: the service's over the image's HEALTHCHECK (health.effective)."""
    hc = image.healthcheck
    image_config = health.image_config(hc.test, hc.interval, hc.timeout, hc.start_period, hc.start_interval,
                                       hc.retries) if hc else None
    try:
        return health.effective(container.healthcheck, image_config)
    except ValueError as exc:
        raise SpecError(f"Invalid healthcheck: {exc}.") from None


def runc_has_rro(runc: str) -> bool:
    """Whether `runc` takes the recursive read-only mount option "rro": runc 1.1 or later, on a
    kernel with mount_setattr (5.12). Asked once per runc and process: one `runc --version`."""
    if runc not in _RRO_SUPPORT:
        try:
            out = subprocess.run([runc, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        m = re.match(r"runc version (\d+)\.(\d+)", out)
        _RRO_SUPPORT[runc] = bool(m) and (int(m[1]), int(m[2])) >= (1, 1) and mounts.kernel_has_mount_setattr()
    return _RRO_SUPPORT[runc]


def nofile_limit() -> int:
    """runc can only lower the RLIMIT_NOFILE the container inherits from us (it may lack
    CAP_SYS_RESOURCE, as on this project's machines): ask for at most our hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ocispec.NOFILE if hard == resource.RLIM_INFINITY else min(ocispec.NOFILE, hard)


_CAP_SYS_RESOURCE = 24
_RLIMITS = {"core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU, "data": resource.RLIMIT_DATA,
            "fsize": resource.RLIMIT_FSIZE, "locks": 10, "memlock": resource.RLIMIT_MEMLOCK,
            "msgqueue": resource.RLIMIT_MSGQUEUE, "nice": resource.RLIMIT_NICE, "nofile": resource.RLIMIT_NOFILE,
            "nproc": resource.RLIMIT_NPROC, "rss": resource.RLIMIT_RSS, "rtprio": resource.RLIMIT_RTPRIO,
            "rttime": resource.RLIMIT_RTTIME, "sigpending": resource.RLIMIT_SIGPENDING,
            "stack": resource.RLIMIT_STACK}   # RLIMIT_LOCKS (10) has no name in Python's resource module


def host_limits() -> tuple[dict[str, int], int, bool]:
    """(our hard limit per ulimit name (-1 = unlimited), our oom_score_adj, whether we hold
    CAP_SYS_RESOURCE): runc, our child, can only raise them with that capability."""
    hard = {}
    for name, number in _RLIMITS.items():
        limit = resource.getrlimit(number)[1]
        hard[name] = -1 if limit == resource.RLIM_INFINITY else limit
    try:
        with open("/proc/self/oom_score_adj") as f:
            oom = int(f.read().strip())
        with open("/proc/self/status") as f:
            cap_eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, ValueError, StopIteration):
        return hard, 0, True       # cannot tell: let runc decide
    return hard, oom, bool(cap_eff >> _CAP_SYS_RESOURCE & 1)


def read_in_rootfs(rootfs: str, path: str) -> str | None:
    """A small text file of the image (/etc/passwd), or None when it has none."""
    try:
        fd = os.open(volumes.resolve_in_root(rootfs, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(MAX_ETC_FILE + 1)
    if len(data) > MAX_ETC_FILE:
        raise SpecError(f"The image's {path} is larger than {MAX_ETC_FILE >> 20} MiB.")
    return data.decode(errors="replace")


def make_workdir(rootfs: str, cwd: str) -> None:
    """Create the working directory in the rootfs when the image lacks it, as Docker does (owned by
    root, mode 755). A path that exists as something else than a directory is refused."""
    path = volumes.resolve_in_root(rootfs, cwd)
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SpecError(f"The working directory {cwd} is not a directory in the image.") from None

"""Watching a runc task's processes from the records in its bundle, without running runc.

How this works. The runtime writes monitor.json ({pid, start_time} of conmon) when
it starts the task; conmon writes `exit` when the container ended, then exits (the
records: runcmon.py); runc writes init.pid once the container's init runs. A process
is told alive from /proc: the monitor by its start time (against pid reuse), the init
by its cgroup. To wait for an exit, open a pidfd of the process that ends the
container's life (the monitor, or the init once the monitor died; its identity
checked after opening, so the fd pins that very process) and
sleep until it is readable; only where pidfd_open is missing (Linux < 5.3) does a
wait fall back to a sleep of FALLBACK_POLL between checks.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal as signals
import time

from swarm.runtime import runcmon
from swarm.runtime.base import STOPPED, ContainerState

FALLBACK_POLL = 0.5     # waits without pidfd_open: /proc and stat checks only


def exit_state(bundle: str) -> ContainerState | None:
    """The container's end as its monitor recorded it; None while there is none."""
    result = runcmon.exit_record(bundle)
    if result is None:
        return None
    return ContainerState(STOPPED, exit_code=result.get("exit_code"), error=result.get("error") or "",
                          finished_at=result.get("finished_at"))


def monitor_alive(bundle: str) -> bool:
    """Whether the task's monitor still runs (its start time guards against pid reuse)."""
    try:
        info = runcmon.monitor_record(bundle) or {}
        return runcmon.is_running(int(info["pid"]), int(info["start_time"]))
    except (ValueError, KeyError, TypeError):
        return False


def monitor_pidfd(bundle: str) -> tuple[int | None, bool]:
    """(pidfd of the monitor or None, whether it runs). Its identity is checked after the
    pidfd is opened: from then on the fd pins that very process, whatever happens to the pid."""
    try:
        pid = int((runcmon.monitor_record(bundle) or {})["pid"])
    except (ValueError, KeyError, TypeError):
        return None, False
    fd = pidfd_open(pid)
    if monitor_alive(bundle):
        return fd, True
    if fd is not None:
        os.close(fd)
    return None, False


def init_pid(bundle: str, cgroup: str) -> int | None:
    """The container's init process if it still runs (not a zombie). init.pid is the only record
    of it, so a recycled pid is told apart by the container's own cgroup (`cgroup`: its path
    below a hierarchy's root, /<cgroup_parent>/<task id>)."""
    try:
        with open(os.path.join(bundle, "init.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cgroup") as f:
            cgroups = f.read()
    except (OSError, ValueError):
        return None
    if stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X"):
        return None
    for line in cgroups.splitlines():
        path = line.split(":", 2)[-1]
        if path == cgroup or path.endswith(cgroup) or cgroup + "/" in path:
            return pid
    return None


def open_watch(bundle: str, cgroup: str) -> tuple[bool, int | None]:
    """(alive, pidfd): whether the process whose exit ends the container's life still runs, and
    a pidfd that turns readable when it exits (None where pidfd_open is missing). That process
    is the monitor (it writes the exit record, then exits) or, once it died, the container's init."""
    fd, alive = monitor_pidfd(bundle)
    if alive:
        return True, fd
    pid = init_pid(bundle, cgroup)
    if pid is None:
        return False, None
    fd = pidfd_open(pid)
    if init_pid(bundle, cgroup) == pid:   # checked after opening, as for the monitor
        return True, fd
    if fd is not None:
        os.close(fd)
    return False, None


def stop_monitor(bundle: str) -> None:
    """The monitor exits when the container ended; kill it only if it lingers."""
    fd, alive = monitor_pidfd(bundle)
    if alive:
        try:
            wait_exit(fd, 2.0)
        finally:
            if fd is not None:
                os.close(fd)
    if monitor_alive(bundle):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            os.kill(int((runcmon.monitor_record(bundle) or {})["pid"]), signals.SIGKILL)


def pidfd_open(pid: int) -> int | None:
    """A pidfd of `pid`, or None when the process is gone or the kernel (< 5.3) has no pidfds."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def wait_exit(pidfd: int | None, timeout: float) -> None:
    """Block until the pidfd's process exits or `timeout` passes; without a pidfd, sleep a little
    (the caller checks /proc again)."""
    if pidfd is None:
        time.sleep(min(FALLBACK_POLL, timeout))
        return
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.poll(max(0, int(timeout * 1000)))


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)

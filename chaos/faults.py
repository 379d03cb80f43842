"""Executing one `Fault` of a schedule on a lab: inject, hold, heal.

How this works. `execute` waits the fault's `wait`, resolves its target
("leader" is asked of the managers at that moment, "all" is every host),
injects it through `Cluster` (chaos/cluster.py), holds it for `hold`
seconds while the workload runs, and heals it. Every injection is appended
to `events` with the time on the workload's clock, so the report can line
faults up with the operations. The composite fault lives here too:

* disk-full: the manager's daemon is stopped, its STATE_DIR/raft moved onto
  a tmpfs just big enough for it, the daemon restarted there, and the tmpfs
  filled up with a file. Its next journal write fails and the daemon must
  stop, saying why (the event records whether it did and its last log
  line; one still running after `hold` is a violation, see
  chaos/invariants.py no_crash), and must never acknowledge what it could
  not persist, which the history shows. Healing copies what it persisted
  back to disk, unmounts and restarts it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from typing import Any, Callable

from chaos.cluster import ChaosError, Cluster, alive
from chaos.scenarios import DISK_FULL, FREEZE, KILL, KILL_ALL, LOSSY, PARTITION, PAUSE, Fault

DISK_SLACK = 2 * 1024 * 1024       # tmpfs size beyond the Raft directory's current size, before filling
FULL_DISK_CHECK = "daemon on the full disk"     # the event saying whether that daemon stopped


def execute(cluster: Cluster, fault: Fault, now: Callable[[], float], events: list[dict],
            say: Callable[[str], None] = lambda _: None, stop_writes: Callable[[], None] = lambda: None) -> None:
    time.sleep(fault.wait)
    if fault.detail.get("stop_writes"):
        stop_writes()   # the clients only read from here on
    if fault.target == "leader":
        targets = [cluster.leader()]
    elif fault.target == "all":
        targets = list(cluster.hosts)
    else:
        targets = fault.target.split(",")

    def note(what: str, host: str, **detail: Any) -> None:
        events.append({"at": round(now(), 3), "action": what, "host": host, **detail})
        say(f"  {now():7.2f} s  {what} {host}" + "".join(f" {k}={v}" for k, v in detail.items()))

    if fault.action in (KILL, KILL_ALL):
        for host in targets:
            note("kill -9", host, pid=cluster.kill(host), leader=fault.target == "leader")
        time.sleep(fault.hold)
        cluster.restart_all(targets)
    elif fault.action in (PAUSE, FREEZE):
        what, stop, go = (("SIGSTOP", cluster.pause, cluster.resume) if fault.action == PAUSE
                          else ("freezer FROZEN", cluster.freeze, cluster.thaw))
        for host in targets:
            note(what, host, pid=stop(host))
        time.sleep(fault.hold)
        for host in targets:
            go(host)
    elif fault.action in (PARTITION, LOSSY):
        direction = fault.detail.get("direction", "both")
        percent = int(fault.detail.get("percent", 100))
        for host in targets:
            peers = [m for m in cluster.managers if m != host]
            cluster.drop(host, peers, inbound=direction in ("both", "inbound"),
                         outbound=direction in ("both", "outbound"), percent=percent)
            note("nft drop" if percent == 100 else f"nft drop {percent}%", host, direction=direction,
                 peers=",".join(peers))
        time.sleep(fault.hold)
        for host in targets:
            cluster.heal_network(host)
    elif fault.action == DISK_FULL:
        for host in targets:
            disk_full(cluster, host, fault.hold, note)
    else:
        raise ChaosError(f"unknown fault action {fault.action!r}")


# -- disk full ------------------------------------------------------------------------------


def _du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _run(*argv: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise ChaosError(f"{' '.join(argv[:2])} failed: {res.stderr.strip() or res.returncode}")


def _fill(path: str) -> int:
    """Write zeros to `path` until the file system is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            block = b"\0" * size
            try:
                while n := f.write(block):
                    written += n
            except OSError:
                continue
    return written


def disk_full(cluster: Cluster, host: str, hold: float, note: Callable[..., None]) -> None:
    raft = os.path.join(cluster.hosts[host]["state_dir"], "raft")
    saved = raft + ".chaos-disk"
    note("kill -9", host, pid=cluster.kill(host))
    os.rename(raft, saved)
    os.makedirs(raft, mode=0o700)
    size = (_du(saved) + DISK_SLACK + 4095) // 4096 * 4096
    mounted = False
    try:
        _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", raft)
        mounted = True
        for name in os.listdir(saved):
            src = os.path.join(saved, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(raft, name))
        pid = cluster.restart(host)
        with cluster.lock:   # from here on its daemon may stop on its own: that is failing loudly
            cluster.expected.pop(host, None)
        filled = _fill(os.path.join(raft, ".chaos-fill"))
        note("filled the Raft tmpfs of", host, pid=pid, size=size, filler=filled)
        time.sleep(hold)
        stopped = not alive(pid)
        note(FULL_DISK_CHECK, host, stopped_by_itself=stopped,
             log=(cluster.daemon_log_tail(host, 1) or [""])[0][-200:])
        cluster.kill(host)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(raft, ".chaos-fill"))
        shutil.rmtree(saved)
        shutil.copytree(raft, saved, symlinks=True)  # what the node did persist
    finally:
        if mounted:
            cluster.kill(host)  # nothing may hold the tmpfs open
            _run("umount", raft)
        os.rmdir(raft)
        os.rename(saved, raft)
    cluster.restart(host)

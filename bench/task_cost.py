"""Per-task cost on one node: the memory of the container monitors and of the node daemon.

    .venv/bin/python bench/task_cost.py [--tasks 100,200] [--src TREE]

Starts a one-node cluster (swarm.lab.localcluster: a real daemon, real containers), creates
a service of sleeping busybox tasks, and at each size (scaling the service up) measures:
- the monitors: every process that watches one task from outside its container (conmon, or
  the Python log shim of earlier versions), found by its command line naming the node's
  tasks directory; their summed RSS, PSS (/proc/PID/smaps_rollup: shared pages split
  between the processes that share them, so a shared library counts once over all of them)
  and USS (private pages only), in total and per task;
- the node daemon's RSS and PSS (the manager and agent of a one-node cluster in one process);
- how long the service took to have all its tasks running, and the load average.
`--src TREE`: run another tree (a `git archive` of an older commit, for before/after in the
same run): its swarm package, its daemon and its runtime. Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024


def proc_memory(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, USS) of a process in bytes (USS: its private pages, what its exit frees);
    zeros once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[-1] == "kB"}
        return (fields.get("Rss", 0), fields.get("Pss", 0),
                fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0))
    except (OSError, ValueError, IndexError):
        return 0, 0, 0


def monitors(tasks_dir: str) -> list[int]:
    """Pids of the processes that monitor this node's tasks (conmon or the Python log shim)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv)
        if tasks_dir.encode() + b"/" not in text:
            continue
        if os.path.basename(argv[0]) == b"conmon" or b"shim.py" in text:
            out.append(int(name))
    return out


def running(node, name: str) -> int:
    from swarm.rpc.client import call_unix_sync
    rows = call_unix_sync(os.path.join(node.state_dir, "swarm.sock"), "service.ps", {"refs": [name]}, timeout=30)
    return sum(1 for r in rows if r["desired_state"] == "running" and r["state"] == "running")


def measure(swarm, node, tasks: int) -> dict:
    tasks_dir = os.path.join(node.state_dir, "tasks")
    pids = monitors(tasks_dir)
    mem = [proc_memory(p) for p in pids]
    rss, pss, uss = (sum(m[i] for m in mem) for i in range(3))
    d_rss, d_pss, _ = proc_memory(node.pid)
    return {"tasks": tasks, "monitors": len(pids),
            "monitor_rss_mib": round(rss / MIB, 1), "monitor_pss_mib": round(pss / MIB, 1),
            "monitor_rss_per_task_mib": round(rss / MIB / tasks, 2),
            "monitor_pss_per_task_mib": round(pss / MIB / tasks, 2),
            "monitor_uss_per_task_mib": round(uss / MIB / tasks, 2),
            "daemon_rss_mib": round(d_rss / MIB, 1), "daemon_pss_mib": round(d_pss / MIB, 1),
            "loadavg": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="100,200", help="sizes to measure at, comma-separated")
    parser.add_argument("--src", default=ROOT, help="the tree to run (default: this one)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait before measuring")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.tasks.split(","))
    src = os.path.abspath(args.src)
    sys.path.insert(0, src)
    from swarm.lab.localcluster import Swarm, eventually   # the tree under test's own

    base = tempfile.mkdtemp(prefix="swarm-taskcost-")
    tar = subprocess.run([os.path.join(ROOT, "scripts/build-demo-image.sh"), os.path.join(base, "demo.tar")],
                         check=True, capture_output=True, text=True).stdout.strip()
    swarm = Swarm(base)
    result: dict = {"src": src, "runtime": None, "levels": []}
    try:
        m1 = swarm.init("m1")
        swarm.run(m1, "image", "import", tar, "demo:1")
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 20, "node ready")
        time.sleep(1.5)            # the heartbeat carries the node's image list to the manager
        created = False
        for size in sizes:
            started = time.monotonic()
            if not created:
                swarm.run(m1, "service", "create", "--detach", "--name", "idle", "--replicas", str(size),
                          "--stop-grace-period", "0s", "demo:1", "sleep", "100000", timeout=120)
                created = True
            else:
                swarm.run(m1, "service", "scale", "--detach", f"idle={size}", timeout=120)
            eventually(lambda: running(m1, "idle") >= size, 600, f"{size} tasks running")
            converged = time.monotonic() - started
            time.sleep(args.settle)
            level = measure(swarm, m1, size)
            level["converge_s"] = round(converged, 1)
            print(json.dumps(level), file=sys.stderr, flush=True)
            result["levels"].append(level)
        try:
            from swarm.runtime import runcmon    # trees that run conmon: which OCI runtime
            result["runtime"] = runcmon.oci_runtime()
        except ImportError:
            result["runtime"] = "runc (Python log shim)"
    finally:
        swarm.stop_all()
        swarm.stop_containers()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

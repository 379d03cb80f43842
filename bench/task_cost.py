"""Per-task cost on one node: the memory of the container monitors and of the node daemon.

    .venv/bin/python bench/task_cost.py [--tasks 100,200] [--src TREE]

Starts a one-node cluster (swarm.lab.localcluster: a real daemon, real containers), creates
a service of sleeping busybox tasks, and at each size (scaling the service up) measures:
- the monitors: every process that watches one task from outside its container (conmon, or
  the Python log shim of earlier versions), found by its command line naming the node's
  tasks directory; their summed RSS, PSS (/proc/PID/smaps_rollup: shared pages split
  between the processes that share them, so a shared library counts once over all of them)
  and USS (private pages only), in total and per task;
- the node daemon's RSS and PSS (the manager and agent of a one-node cluster in one process),
  and the native libraries it has mapped (C extensions: which heavy packages it loaded);
- what the daemon's imports cost: a fresh interpreter of the tree under test imports the
  module `swarm daemon` runs, and its RSS, PSS and module count are printed next to a bare
  interpreter's (`imports` in the JSON), with the heavy packages it loaded;
- how long the service took to have all its tasks running, and the load average.
`--probe modules|tracemalloc`: restart the node's daemon (same state, same code) in this script
(`--run-daemon`, which runs the daemon as `swarm daemon` does, in its own process) so that at
each size it reports its module count and the heavy packages it has loaded (`probe` in a
level); with `tracemalloc` also the Python memory it holds, by file, largest first (tracemalloc
itself costs memory: the RSS of such a run is not the daemon's).
`--src TREE`: run another tree (a `git archive` of an older commit, for before/after in the
same run): its swarm package, its daemon and its runtime. Prints one JSON document.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024
# Packages a node daemon should load only when it uses them (the Engine API's stack, the registry
# client, the compose loader, netlink, Raft's engine, the CA's cryptography): `imports` says which
# of them the daemon's start imports.
HEAVY = ("hypercorn", "starlette", "anyio", "h11", "h2", "jsonschema", "yaml", "httpx", "httpcore",
         "pyroute2", "pysyncobj", "cryptography", "msgspec", "asyncio", "unittest")
# The tasks' image, imported into the node under a registry name on loopback where nothing listens:
# `service create` asks that registry for the digest as it would Docker Hub (the registry client
# runs, is refused, and the node's image is used with Docker's warning), and nothing leaves the machine.
IMAGE = "127.0.0.1:9/demo:1"
# A fresh interpreter: its RSS/PSS bare, then after importing the daemon's module (host.py where
# the tree has it, else daemon.py), as one JSON line.
IMPORT_PROBE = """
import importlib.util, json, sys
def memory():
    with open("/proc/self/smaps_rollup") as f:
        fields = {l.split(":")[0]: int(l.split()[1]) * 1024 for l in f if l.split()[-1] == "kB"}
    return fields["Rss"], fields["Pss"]
bare, bare_modules = memory(), len(sys.modules)
name = "swarm.daemon.host" if importlib.util.find_spec("swarm.daemon.host") else "swarm.daemon.daemon"
importlib.import_module(name)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(json.dumps({"module": name, "bare": bare, "bare_modules": bare_modules, "after": memory(),
                  "modules": len(sys.modules), "heavy": heavy}))
"""


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


def anon_and_threads(pid: int) -> tuple[int, int]:
    """A process's anonymous resident memory (its heaps and stacks, not the files it maps: code,
    libraries) in bytes, and its thread count; zeros once it is gone."""
    anon = threads = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/smaps_rollup") as f:
            anon = next(int(line.split()[1]) * 1024 for line in f if line.startswith("Anonymous:"))
        with open(f"/proc/{pid}/status") as f:
            threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return anon, threads


def native_libraries(pid: int) -> list[str]:
    """The Python C extensions a process has mapped (their file names, without the ABI tag)."""
    names = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                path = line.split()[-1]
                if path.endswith(".so") and ("site-packages" in path or "lib-dynload" in path):
                    names.add(os.path.basename(path).split(".")[0])
    except OSError:
        pass
    return sorted(names)


def import_cost(src: str) -> dict:
    """What importing the daemon's module costs in a fresh interpreter of the tree `src`."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *HEAVY], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=src), cwd="/", timeout=120, check=True)
    probe = json.loads(proc.stdout)
    (rss0, pss0), (rss, pss) = probe["bare"], probe["after"]
    return {"module": probe["module"], "interpreter_rss_mib": round(rss0 / MIB, 1),
            "interpreter_pss_mib": round(pss0 / MIB, 1), "rss_mib": round(rss / MIB, 1), "pss_mib": round(pss / MIB, 1),
            "imports_rss_mib": round((rss - rss0) / MIB, 1), "imports_pss_mib": round((pss - pss0) / MIB, 1),
            "modules": probe["modules"], "heavy": probe["heavy"]}


def run_daemon(state_dir: str, dump: str, trace: bool) -> None:
    """Run the node daemon of `state_dir` here (as `swarm daemon` does); on SIGUSR2 write what it
    holds to `dump` (JSON): its modules and, with `trace`, tracemalloc's figures by file."""
    import tracemalloc
    if trace:
        tracemalloc.start()

    def write(signum: int, frame: object) -> None:
        out: dict = {"modules": len(sys.modules), "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))}
        if trace:
            stats = tracemalloc.take_snapshot().statistics("filename")
            out["traced_mib"] = round(sum(s.size for s in stats) / MIB, 1)
            out["top"] = [[s.traceback[0].filename.replace(os.path.dirname(os.__file__), "<stdlib>"),
                           round(s.size / MIB, 2), s.count] for s in stats[:25]]
        with open(dump + ".tmp", "w") as f:
            json.dump(out, f)
        os.replace(dump + ".tmp", dump)

    signal.signal(signal.SIGUSR2, write)
    from swarm.daemon.bootstrap import start_daemon
    start_daemon(state_dir, detach=False)


def probe(node, dump: str) -> dict:
    """What the daemon started by `run_daemon` holds now."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dump)
    os.kill(node.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 120
    while not os.path.exists(dump):
        if time.monotonic() > deadline:
            raise SystemExit("the probed daemon did not answer SIGUSR2 in 120 s")
        time.sleep(0.2)
    with open(dump) as f:
        return json.load(f)


def restart_probed(swarm, node, src: str, dump: str, trace: bool) -> None:
    """Stop the node's daemon and start it again under `run_daemon`."""
    from swarm.daemon.procs import wait_gone
    pid = node.pid
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    argv = [sys.executable, os.path.abspath(__file__), "--src", src, "--run-daemon", node.state_dir, dump]
    with open(os.path.join(node.state_dir, "probe.log"), "ab") as log:
        subprocess.Popen(argv + (["--trace"] if trace else []), stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
                         env=dict(os.environ, PYTHONPATH=src))


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
    d_anon, d_threads = anon_and_threads(node.pid)
    return {"tasks": tasks, "monitors": len(pids),
            "monitor_rss_mib": round(rss / MIB, 1), "monitor_pss_mib": round(pss / MIB, 1),
            "monitor_rss_per_task_mib": round(rss / MIB / max(tasks, 1), 2),
            "monitor_pss_per_task_mib": round(pss / MIB / max(tasks, 1), 2),
            "monitor_uss_per_task_mib": round(uss / MIB / max(tasks, 1), 2),
            "daemon_rss_mib": round(d_rss / MIB, 1), "daemon_pss_mib": round(d_pss / MIB, 1),
            "daemon_anon_mib": round(d_anon / MIB, 1), "daemon_threads": d_threads,
            "daemon_native": native_libraries(node.pid),
            "loadavg": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="100,200", help="sizes to measure at, comma-separated")
    parser.add_argument("--src", default=ROOT, help="the tree to run (default: this one)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait before measuring")
    parser.add_argument("--probe", choices=("modules", "tracemalloc"), help="report what the daemon holds (see above)")
    parser.add_argument("--run-daemon", nargs=2, metavar=("STATE_DIR", "DUMP"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.tasks.split(","))
    src = os.path.abspath(args.src)
    sys.path.insert(0, src)
    if args.run_daemon:
        run_daemon(*args.run_daemon, trace=args.trace)
        return
    from swarm.lab.localcluster import Swarm, eventually   # the tree under test's own

    base = tempfile.mkdtemp(prefix="swarm-taskcost-")
    tar = subprocess.run([os.path.join(ROOT, "scripts/build-demo-image.sh"), os.path.join(base, "demo.tar")],
                         check=True, capture_output=True, text=True).stdout.strip()
    swarm = Swarm(base)
    result: dict = {"src": src, "runtime": None, "imports": import_cost(src), "levels": []}
    print(json.dumps({"imports": result["imports"]}), file=sys.stderr, flush=True)
    try:
        m1 = swarm.init("m1")
        swarm.run(m1, "image", "import", tar, IMAGE)
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 20, "node ready")
        dump = os.path.join(base, "probe.json")
        if args.probe:
            restart_probed(swarm, m1, src, dump, args.probe == "tracemalloc")
            eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 60, "node ready again")
        time.sleep(1.5)            # the heartbeat carries the node's image list to the manager
        idle = measure(swarm, m1, 0)   # the daemon with no task: its interpreter, imports and state
        if args.probe:
            idle["probe"] = probe(m1, dump)
        print(json.dumps(idle), file=sys.stderr, flush=True)
        result["levels"].append(idle)
        created = False
        for size in sizes:
            started = time.monotonic()
            if not created:
                proc = swarm.run(m1, "service", "create", "--detach", "--name", "idle", "--replicas", str(size),
                                 "--stop-grace-period", "0s", IMAGE, "sleep", "100000", timeout=120)
                result["create_said"] = (proc.stderr + proc.stdout).strip()   # the registry's answer, as a warning
                created = True
            else:
                swarm.run(m1, "service", "scale", "--detach", f"idle={size}", timeout=120)
            eventually(lambda: running(m1, "idle") >= size, 600, f"{size} tasks running")
            converged = time.monotonic() - started
            time.sleep(args.settle)
            level = measure(swarm, m1, size)
            level["converge_s"] = round(converged, 1)
            if args.probe:
                level["probe"] = probe(m1, dump)
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
        shutil.rmtree(base, ignore_errors=True)   # the node's state, its image and the demo tarball
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

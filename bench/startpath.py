"""The task start path, stage by stage: where `service create` to all tasks running goes.

    .venv/bin/python bench/startpath.py [--replicas 1 10 50] [--runs 3] [--profile 50]

One real node (`swarm.lab.localcluster`: a daemon that is manager and worker,
real runc/crun containers under conmon) whose daemon logs at DEBUG level, so it
writes the "start path TASK STAGE WALLTIME" lines the agent, the runtime and
the reconciler emit on a task's way to running. For each size and run: the
time just before `swarm service create --detach`, the command's return, the
service's creation time from the store (`created_at`: the control API's checks
are done, its Raft commit starts), then each task's stages from the log, and the
moment a poll of `service ps` (every 50 ms) sees all of them running.

Prints one JSON document: per size, the median over runs of each stage's
offset from the start, for the first task to reach it, the median task and the
last one; stages in the order a task meets them:

    cli_returned          the CLI answered (its start-up, the control API's checks and commit)
    service_committed     created_at of the service (taken before its commit)
    task_planned          the reconcile round that created the task (its `now`)
    committed             the round's transaction holding the task is committed
    assignment_received   the agent's tasks.assigned long poll brought it
    accepted_acked        ... and each reported state: *_sent (a tasks.status call
                          leaves) and *_acked (the manager committed it); a state
                          the agent left out of its calls (swarm/agent/reports.py)
                          has no such lines
    image_checked         the node has the image (no pull here)
    prepare_slot          a start slot is free (swarm/agent/slots.py)
    prepare_begin ... config_written   the runtime's prepare: bundle files, overlay mount, config.json
    prepared, start_slot, start_begin
    conmon_forked         conmon's first process exited (the monitor runs)
    created               conmon reported the container's pid (`<runtime> create` done)
    started               the container runs (runc's exec.fifo released; crun: `crun start`)
    running_acked         the manager committed "running"
    all_seen_running      the bench's poll saw every task running (only "last")

Per size also: the daemon's CPU seconds (all threads, and by thread: "main" is
trio's, "Trio thread N" the worker threads that run prepare and start,
"python" pysyncobj's tick) and every processor's busy seconds meanwhile.
With --profile N, py-spy (`pip install py-spy` into the venv) samples the
daemon during one more run of N replicas; the JSON then carries the functions
with the most samples (self and inclusive). DEBUG logging costs the daemon
some of its time (about an eighth of its interpreter's at 50 tasks). Nothing
here is a timing test: it explains the figures of bench/services_bench.py.
"""
from __future__ import annotations

import argparse
import calendar
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from swarm.lab.localcluster import Swarm, eventually  # noqa: E402
from swarm.rpc.client import call_unix_sync  # noqa: E402

POLL = 0.05    # as bench/services_bench.py: each `service ps` costs the daemon
LINE = re.compile(r"start path (\S+) (\S+) (\d+\.\d+)")
ORDER = ["cli_returned", "service_committed", "task_planned", "committed", "assignment_received",
         "accepted_sent", "accepted_acked", "image_checked", "prepare_slot", "preparing_sent", "prepare_begin",
         "bundle_files", "rootfs_mounted", "config_written", "prepared", "ready_sent", "start_slot",
         "starting_sent", "start_begin", "conmon_forked", "created", "started", "running_sent",
         "running_acked", "all_seen_running"]


def parse_time(text: str) -> float:
    """An RFC 3339 UTC time with nanoseconds (model.rfc3339) as seconds since the epoch."""
    whole, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))


def sock(node) -> str:
    return os.path.join(node.state_dir, "swarm.sock")


def stage_times(log_text: str, task_ids: set[str]) -> dict[str, dict[str, float]]:
    """task id -> stage -> wall time, from the daemon's DEBUG lines (the first of each stage)."""
    out: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for m in LINE.finditer(log_text):
        task_id, stage, when = m[1], m[2], float(m[3])
        if task_id in task_ids:
            out[task_id].setdefault(stage, when)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name (trio names its worker threads
    "Trio thread N": they count as one; the main thread carries the process's name)."""
    out: dict[str, float] = collections.defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = re.sub(r"\d+$", "N", f.read().strip())
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue          # a worker thread that ended meanwhile (its time is lost to both sides)
        out["main" if tid == str(pid) else name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def machine_busy() -> float:
    """CPU seconds all processors spent busy since boot (/proc/stat), for the whole machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def one_run(swarm: Swarm, node, name: str, replicas: int, log_path: str, on_seen=None) -> dict:
    offset = os.path.getsize(log_path)
    cpu0, busy0, threads0 = cpu_seconds(node.pid), machine_busy(), thread_cpu(node.pid)
    started = time.time()
    swarm.run(node, "service", "create", "--detach", "--name", name, "--replicas", str(replicas),
              "--stop-grace-period", "0s", "--no-resolve-image", "demo:1", "sleep", "1000")
    cli_done = time.time()
    while True:
        rows = call_unix_sync(sock(node), "service.ps", {"refs": [name]}, timeout=10)
        if sum(1 for r in rows if r["desired_state"] == "running" and r["state"] == "running") >= replicas:
            break
        time.sleep(POLL)
    seen = time.time()
    cpu, busy = cpu_seconds(node.pid) - cpu0, machine_busy() - busy0
    threads = {k: round(v - threads0.get(k, 0.0), 3) for k, v in thread_cpu(node.pid).items()}
    if on_seen is not None:
        on_seen()
    service = call_unix_sync(sock(node), "service.inspect", {"refs": [name]}, timeout=10)[0]
    time.sleep(0.3)     # the last acknowledgements reach the log
    with open(log_path, errors="replace") as f:
        f.seek(offset)
        text = f.read()
    tasks = {r["id"]: parse_time(r["created_at"]) for r in rows}
    stages = stage_times(text, set(tasks))
    for task_id, planned in tasks.items():
        stages[task_id]["task_planned"] = planned
    per_stage: dict[str, list[float]] = collections.defaultdict(list)
    for times in stages.values():
        for stage, when in times.items():
            per_stage[stage].append(when - started)
    out = {"total_s": seen - started, "daemon_cpu_s": cpu, "machine_busy_s": busy, "daemon_threads_cpu_s": threads,
           "stages": {
        "cli_returned": {"first": cli_done - started},
        "service_committed": {"first": parse_time(service["created_at"]) - started}}}
    for stage, offsets in per_stage.items():
        offsets.sort()
        out["stages"][stage] = {"first": offsets[0], "median": statistics.median(offsets), "last": offsets[-1],
                                "tasks": len(offsets)}
    out["stages"]["all_seen_running"] = {"last": seen - started}
    swarm.run(node, "service", "rm", name)
    eventually(lambda: not call_unix_sync(sock(node), "service.ps", {}, timeout=10), 60, "tasks to be removed")
    # and their containers gone (unmounted, bundles deleted): the next run has the machine to itself
    tasks = os.path.join(node.state_dir, "tasks")
    eventually(lambda: not [n for n in os.listdir(tasks) if not n.startswith(".")], 60, "containers to be removed")
    return out


def merge(runs: list[dict]) -> dict:
    """The median over runs of each figure."""
    stages: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for run in runs:
        for stage, figures in run["stages"].items():
            for key, value in figures.items():
                if key != "tasks":
                    stages[stage][key].append(value)
    ordered = sorted(stages, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    return {"total_s": {"runs": [r["total_s"] for r in runs], "median": statistics.median(r["total_s"] for r in runs)},
            # the daemon's CPU (its Python and what it does in the kernel; not conmon's or runc's),
            # and every processor's busy time meanwhile (this run's containers, and other programs)
            "daemon_cpu_s": statistics.median(r["daemon_cpu_s"] for r in runs),
            "machine_busy_s": statistics.median(r["machine_busy_s"] for r in runs),
            "daemon_threads_cpu_s": runs[len(runs) // 2]["daemon_threads_cpu_s"],   # of the middle run
            "stages_s": {s: {k: round(statistics.median(v), 4) for k, v in stages[s].items()} for s in ordered}}


def profile(swarm: Swarm, node, replicas: int, log_path: str, out_dir: str) -> dict:
    """One more run of `replicas` under py-spy, sampling whichever thread holds the GIL (--gil:
    the interpreter's own work, not threads waiting in the kernel); the top functions, and how
    much of the run the interpreter was busy."""
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if spy is None:
        return {"available": False, "reason": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    raw = os.path.join(out_dir, "profile.txt")
    rate = 250
    proc = subprocess.Popen([spy, "record", "--format", "raw", "--rate", str(rate), "--gil", "--threads",
                             "-o", raw, "-p", str(node.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)      # py-spy attaches

    def stop() -> None:   # at all running: the removal is not the start path
        proc.send_signal(2)   # SIGINT: py-spy writes its file and exits
        proc.wait(timeout=30)

    try:
        run = one_run(swarm, node, f"prof{replicas}", replicas, log_path, on_seen=stop)
    finally:
        if proc.poll() is None:
            stop()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [_frame(fr) for fr in stack.split(";")[1:]]   # the first frame names the thread
            if frames:
                own[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
    return {"available": True, "replicas": replicas, "total_s": run["total_s"], "samples": total,
            "rate_hz": rate, "raw": raw, "gil_busy_s": round(total / rate, 3),   # includes py-spy's 1 s attach
            "stages_s": merge([run])["stages_s"],
            "self_top": [(f, n) for f, n in own.most_common(25)],
            "inclusive_top": [(f, n) for f, n in inclusive.most_common(40)]}


def _frame(text: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)': lines of one function counted together."""
    m = re.match(r"(.*) \((.*?):\d+\)$", text)
    return f"{m[1]} ({os.path.basename(m[2])})" if m else text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also one run of N replicas under py-spy")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (daemon.log, profile)")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="startpath-")
    tar = os.path.join(base, "demo.tar")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), tar], check=True,
                   capture_output=True)
    os.environ["SWARM_LOG_LEVEL"] = "DEBUG"    # the daemon's stage lines (its environment is ours)
    # The CLI and the daemons with a bytecode cache, as an installed package has one (kept out
    # of the checkout): without it every command compiles its modules again (40 to 60 ms here).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(base, "pycache")
    swarm = Swarm(os.path.join(base, "cluster"))
    result: dict = {"load_average": os.getloadavg()}
    try:
        node = swarm.init("m1")
        swarm.run(node, "image", "import", tar, "demo:1")
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(node).values()), 20, "node ready")
        time.sleep(1.5)   # the heartbeat carries the node's images to the manager
        log_path = os.path.join(node.state_dir, "daemon.log")
        one_run(swarm, node, "warmup", 2, log_path)
        for n in args.replicas:
            result[str(n)] = merge([one_run(swarm, node, f"s{n}x{i}", n, log_path) for i in range(args.runs)])
        if args.profile:
            result["profile"] = profile(swarm, node, args.profile, log_path, base)
        result["load_average_after"] = os.getloadavg()
    finally:
        swarm.stop_all()
        swarm.stop_containers()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            result["kept"] = base
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

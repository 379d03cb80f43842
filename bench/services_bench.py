"""Service benchmarks with real runc containers, next to Docker swarm when it is installed.

    .venv/bin/python bench/services_bench.py [--quick] [--docker] [--no-scheduler]
    .venv/bin/python bench/services_bench.py --one-node --sizes 10 50 --runs 5 --docker --no-scheduler
    .venv/bin/python bench/services_bench.py --options

The file runs unchanged in a checkout of an older tree whose CLI has
--no-resolve-image (see docs/benchmarks.md, "Control plane before/after"), so
both sides are measured by the same code.

Prints one JSON document:
- convergence: `service create --replicas N` to all N running (N = 10, 50),
  on one node and on three nodes (one manager, two workers), median of runs;
- rescheduling: kill -9 of a worker daemon to the service's six replicas
  running again on the other nodes, median of 5; `down_detection` in it is
  the kill to the manager's record saying the node is down (the heartbeat
  grace period, 3 periods of 1 s, plus how late the dispatcher notices);
- options (--options, alone): 50 replicas on one node plain and with a user, a
  hostname template, a read-only root with a tmpfs and an init, interleaved;
- scheduler: the pure scheduler alone (bench/scheduler_bench.py; skipped
  with --no-scheduler);
- docker (with --docker, if dockerd is installed): the same convergence on a
  single-node Docker swarm, in the same run (bench/docker_anchor.py), and
  the ratios; the one-node runs of both sides then alternate (`interleaved`).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

try:
    from swarm.lab.localcluster import Swarm, eventually
    from swarm.rpc.client import call_unix_sync
except ImportError:  # a tree from before the package split (009c86f), for before/after runs
    from swarm.localcluster import Swarm, eventually  # type: ignore[no-redef]
    from swarm.rpc import call_unix_sync  # type: ignore[no-redef]


# As the Docker anchor polls its engine API (bench/docker_anchor.py): a `service ps` costs the
# daemon that answers it, so both sides are asked as often.
POLL = 0.05


def running_count(node, name: str) -> int:
    rows = call_unix_sync(os.path.join(node.state_dir, "swarm.sock"), "service.ps", {"refs": [name]}, timeout=10)
    return sum(1 for r in rows if r["desired_state"] == "running" and r["state"] == "running")


# The service options the options benchmark adds (a user, a hostname template, a read-only
# root with a tmpfs, an init as PID 1): what a real program asks of the start path.
OPTION_FLAGS = ("--user", "nobody", "--hostname", "{{.Service.Name}}-{{.Task.Slot}}", "--read-only",
                "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m", "--init")


def converge(swarm: Swarm, manager, name: str, replicas: int, flags: tuple[str, ...] = ()) -> float:
    started = time.monotonic()
    # --no-resolve-image as the Docker anchor's: no registry is asked for the image's digest
    # (this machine reaches none; asking costs 50 to 100 ms here, and Docker's figure has no such wait)
    swarm.run(manager, "service", "create", "--detach", "--name", name, "--replicas", str(replicas),
              "--stop-grace-period", "0s", "--no-resolve-image", *flags, "demo:1", "sleep", "1000")
    while running_count(manager, name) < replicas:
        time.sleep(POLL)
    elapsed = time.monotonic() - started
    swarm.run(manager, "service", "rm", name)
    eventually(lambda: not any(call_unix_sync(os.path.join(n.state_dir, "swarm.sock"), "service.ps", {}, timeout=10)
                               for n in [manager]), 60, "tasks to be removed")
    # and their containers gone from every node (unmounted, their bundles deleted), as the
    # Docker anchor waits for its containers: the next run does not share the machine with them
    eventually(lambda: not any(bundles(n) for n in swarm.nodes.values()), 60, "containers to be removed")
    return elapsed


def bundles(node) -> list[str]:
    """The task bundles (containers) a node still has (swarm/runtime/runc.py: one folder per task)."""
    tasks = os.path.join(node.state_dir, "tasks")
    return [n for n in os.listdir(tasks) if not n.startswith(".")] if os.path.isdir(tasks) else []


def make_cluster(base: str, workers: int, tar: str) -> tuple[Swarm, object, list]:
    swarm = Swarm(base)
    m1 = swarm.init("m1")
    nodes = [m1] + [swarm.join(f"w{i}", m1, "worker") for i in range(1, workers + 1)]
    for node in nodes:
        swarm.run(node, "image", "import", tar, "demo:1")
    eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 20, "nodes ready")
    time.sleep(1.5)  # heartbeats carry each node's image list to the manager
    swarm.run(m1, "service", "create", "--help")   # its modules into the bytecode cache, as installed
    return swarm, m1, nodes[1:]


WARMUP = 2    # replicas of the service each side runs first in interleaved(), not counted


def docker_anchor(tar: str, sizes: list[int], runs: int) -> dict:
    """bench/docker_anchor.py's JSON: Docker swarm's convergence at `sizes`, `runs` times each."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "docker_anchor.py"), "--replicas",
                           *map(str, sizes), "--runs", str(runs), "--rootfs-tar", tar],
                          capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.stdout.strip() else {"available": False, "reason": proc.stderr[-300:]}


def interleaved(base: str, tar: str, sizes: list[int], runs: int) -> tuple[dict, dict]:
    """(ours on one node, Docker's) at each size, in rounds: our runs, then one run of each size
    by the Docker anchor, and again. The machine is shared and its load moves by the minute;
    measured one after the other, the two sides saw different machines (Docker's 50 replicas
    took 4.0 s, then 2.3 s a minute later). Docker's dockerd is started for each round (the
    anchor cleans up after itself; its start is not timed), so each side first runs a service
    of WARMUP replicas, not counted: a first service after a start is slower (Docker's by
    20 to 50 %)."""
    swarm, m1, _ = make_cluster(os.path.join(base, "interleaved"), 0, tar)
    ours: dict[int, list[float]] = {n: [] for n in sizes}
    theirs: dict[int, list[float]] = {n: [] for n in sizes}
    docker: dict = {"available": True}
    loads = []
    try:
        converge(swarm, m1, "warmup", WARMUP)
        for r in range(runs):
            loads.append(os.getloadavg()[0])
            for n in sizes:
                ours[n].append(converge(swarm, m1, f"i{n}x{r}", n))
            if docker.get("available") and not docker.get("error"):   # else ours go on alone
                docker = docker_anchor(tar, [WARMUP, *sizes], 1)
                for n in sizes if docker.get("available") and not docker.get("error") else ():
                    theirs[n].extend(docker["results"][str(n)]["runs"])
    finally:
        swarm.stop_all()
        swarm.stop_containers()
    if theirs[sizes[0]]:
        docker["results"] = {str(n): {"runs": v, "median": statistics.median(v)} for n, v in theirs.items()}
        docker["interleaved"] = "one Docker run of each size after each round of ours"
    return ({f"1_node_{n}": {"runs": v, "median": statistics.median(v)} for n, v in ours.items()},
            dict(docker, load_average_1min_per_round=loads))


def convergence(base: str, tar: str, sizes: list[int], runs: int, worker_counts: tuple[int, ...] = (0, 2)) -> dict:
    out = {}
    for workers in worker_counts:
        swarm, m1, _ = make_cluster(os.path.join(base, f"conv{workers}"), workers, tar)
        try:
            for n in sizes:
                times = [converge(swarm, m1, f"c{n}x{i}", n) for i in range(runs)]
                out[f"{workers + 1}_node_{n}"] = {"runs": times, "median": statistics.median(times)}
        finally:
            swarm.stop_all()
            swarm.stop_containers()
    return out


def options_cost(base: str, tar: str, replicas: int, runs: int) -> dict:
    """`replicas` tasks on one node, plain and with OPTION_FLAGS, runs interleaved (a noisy
    machine slows both alike); the ratio of the medians is the options' cost."""
    swarm, m1, _ = make_cluster(os.path.join(base, "options"), 0, tar)
    plain, options = [], []
    try:
        for i in range(runs):
            plain.append(converge(swarm, m1, f"plain{i}", replicas))
            options.append(converge(swarm, m1, f"opts{i}", replicas, OPTION_FLAGS))
    finally:
        swarm.stop_all()
        swarm.stop_containers()
    return {"replicas": replicas, "flags": " ".join(OPTION_FLAGS),
            "plain": {"runs": plain, "median": statistics.median(plain)},
            "options": {"runs": options, "median": statistics.median(options)},
            "ratio_options_over_plain": statistics.median(options) / statistics.median(plain)}


def rescheduling(base: str, tar: str, trials: int) -> dict:
    swarm, m1, workers = make_cluster(os.path.join(base, "resched"), 2, tar)
    times, detections = [], []
    sock = os.path.join(m1.state_dir, "swarm.sock")
    try:
        swarm.run(m1, "service", "create", "--detach", "--name", "web", "--replicas", "6",
                  "--stop-grace-period", "0s", "demo:1", "sleep", "1000")
        eventually(lambda: running_count(m1, "web") == 6, 60, "six replicas")
        for trial in range(trials):
            victim = workers[trial % 2]
            swarm.kill(victim)
            killed = time.monotonic()
            detected = None

            def restored() -> bool:
                rows = call_unix_sync(sock, "service.ps", {"refs": ["web"]}, timeout=10)
                return sum(1 for r in rows if r["desired_state"] == "running" and r["state"] == "running"
                           and r["node"] != victim.name) == 6

            def down() -> bool:
                rows = call_unix_sync(sock, "node.ls", {}, timeout=10)
                return any(r["hostname"] == victim.name and r["status"] == "down" for r in rows)

            while True:
                if detected is None and down():
                    detected = time.monotonic() - killed
                if restored():
                    break
                time.sleep(0.02)
            times.append(time.monotonic() - killed)
            while detected is None:  # restored before the manager's record said down (not expected)
                if down():
                    detected = time.monotonic() - killed
                time.sleep(0.02)
            detections.append(detected)
            swarm.restart(victim)
            eventually(lambda: swarm.ls(m1)[victim.name]["status"] == "ready", 20, "worker back")
    finally:
        swarm.stop_all()
        swarm.stop_containers()
    return {"runs": times, "median": statistics.median(times),
            "down_detection": {"runs": detections, "median": statistics.median(detections)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--docker", action="store_true", help="also measure Docker swarm (if installed)")
    parser.add_argument("--no-scheduler", action="store_true", help="skip the pure scheduler benchmark")
    parser.add_argument("--one-node", action="store_true",
                        help="only the convergence on one node (no 3-node cluster, no rescheduling)")
    parser.add_argument("--sizes", type=int, nargs="+", help="replica counts (default 10 50; --quick: 10)")
    parser.add_argument("--runs", type=int, help="runs per size (default 3; --quick: 1)")
    parser.add_argument("--options", action="store_true",
                        help="only the cost of service options: 50 replicas plain and with options, 5 runs each")
    args = parser.parse_args()
    sizes, runs, trials = ([10], 1, 2) if args.quick else ([10, 50], 3, 5)
    sizes, runs = args.sizes or sizes, args.runs or runs
    base = tempfile.mkdtemp(prefix="svc-bench-")
    tar = os.path.join(base, "demo.tar")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), tar], check=True,
                   capture_output=True)
    # The CLI and the daemons with a bytecode cache, as an installed package has one (kept out
    # of the checkout): without it every command compiles its modules again (40 to 60 ms here).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(base, "pycache")
    if args.options:
        print(json.dumps({"options_cost_s": options_cost(base, tar, 50, 5)}, indent=2))
        return
    figures: dict = {"convergence_s": {}}
    if args.docker:   # one node, next to Docker, run for run
        figures["convergence_s"], figures["docker"] = interleaved(base, tar, sizes, runs)
    else:
        figures["convergence_s"] = convergence(base, tar, sizes, runs, (0,))
    if not args.one_node:
        figures["convergence_s"].update(convergence(base, tar, sizes, runs, (2,)))
        figures["rescheduling_s"] = rescheduling(base, tar, trials)
    if not args.no_scheduler:
        sched = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "scheduler_bench.py")],
                               capture_output=True, text=True, check=True)
        figures["scheduler"] = json.loads(sched.stdout)
    if args.docker:
        docker = figures["docker"]
        if docker.get("available") and "results" in docker:
            figures["ratios_docker_over_ours_1_node"] = {
                str(n): docker["results"][str(n)]["median"] / figures["convergence_s"][f"1_node_{n}"]["median"]
                for n in sizes}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

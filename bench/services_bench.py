"""Service benchmarks with real runc containers, next to Docker swarm when it is installed.

    .venv/bin/python bench/services_bench.py [--quick] [--docker] [--no-scheduler]
    .venv/bin/python bench/services_bench.py --options

The file runs unchanged in a checkout of an older tree (see docs/benchmarks.md,
"Control plane before/after"), so both sides are measured by the same code.

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
  the ratios.
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


def running_count(node, name: str) -> int:
    rows = call_unix_sync(os.path.join(node.state_dir, "swarm.sock"), "service.ps", {"refs": [name]}, timeout=10)
    return sum(1 for r in rows if r["desired_state"] == "running" and r["state"] == "running")


# The service options the options benchmark adds (a user, a hostname template, a read-only
# root with a tmpfs, an init as PID 1): what a real program asks of the start path.
OPTION_FLAGS = ("--user", "nobody", "--hostname", "{{.Service.Name}}-{{.Task.Slot}}", "--read-only",
                "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m", "--init")


def converge(swarm: Swarm, manager, name: str, replicas: int, flags: tuple[str, ...] = ()) -> float:
    started = time.monotonic()
    swarm.run(manager, "service", "create", "--detach", "--name", name, "--replicas", str(replicas),
              "--stop-grace-period", "0s", *flags, "demo:1", "sleep", "1000")
    while running_count(manager, name) < replicas:
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    swarm.run(manager, "service", "rm", name)
    eventually(lambda: not any(call_unix_sync(os.path.join(n.state_dir, "swarm.sock"), "service.ps", {}, timeout=10)
                               for n in [manager]), 60, "tasks to be removed")
    return elapsed


def make_cluster(base: str, workers: int, tar: str) -> tuple[Swarm, object, list]:
    swarm = Swarm(base)
    m1 = swarm.init("m1")
    nodes = [m1] + [swarm.join(f"w{i}", m1, "worker") for i in range(1, workers + 1)]
    for node in nodes:
        swarm.run(node, "image", "import", tar, "demo:1")
    eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 20, "nodes ready")
    time.sleep(1.5)  # heartbeats carry each node's image list to the manager
    return swarm, m1, nodes[1:]


def convergence(base: str, tar: str, sizes: list[int], runs: int) -> dict:
    out = {}
    for workers in (0, 2):
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
    parser.add_argument("--options", action="store_true",
                        help="only the cost of service options: 50 replicas plain and with options, 5 runs each")
    args = parser.parse_args()
    sizes, runs, trials = ([10], 1, 2) if args.quick else ([10, 50], 3, 5)
    base = tempfile.mkdtemp(prefix="svc-bench-")
    tar = os.path.join(base, "demo.tar")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), tar], check=True,
                   capture_output=True)
    if args.options:
        print(json.dumps({"options_cost_s": options_cost(base, tar, 50, 5)}, indent=2))
        return
    figures = {"convergence_s": convergence(base, tar, sizes, runs),
               "rescheduling_s": rescheduling(base, tar, trials)}
    if not args.no_scheduler:
        sched = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "scheduler_bench.py")],
                               capture_output=True, text=True, check=True)
        figures["scheduler"] = json.loads(sched.stdout)
    if args.docker:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "docker_anchor.py"), "--replicas",
                               *map(str, sizes), "--runs", str(runs), "--rootfs-tar", tar],
                              capture_output=True, text=True)
        docker = json.loads(proc.stdout) if proc.stdout.strip() else {"available": False, "reason": proc.stderr[-300:]}
        figures["docker"] = docker
        if docker.get("available"):
            figures["ratios_docker_over_ours_1_node"] = {
                str(n): docker["results"][str(n)]["median"] / figures["convergence_s"][f"1_node_{n}"]["median"]
                for n in sizes}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

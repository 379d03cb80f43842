"""How fast the `swarm` command line answers, next to docker's CLI in the same run.

    .venv/bin/python bench/cli_bench.py [--runs N] [--no-cluster] [--before DIR]

Times whole processes (fork, interpreter start, imports, the command, exit)
with time.perf_counter around subprocess.run, the commands interleaved round
by round so that a noisy machine slows every one alike; prints one JSON
document with the median, min and max of each, in milliseconds:
- `swarm --help` as `python -m swarm` and as the installed console script
  (.venv/bin/swarm), `swarm service ls --help`, and `swarm service ls`
  against the daemon of a one-node cluster (swarm.lab.localcluster, started
  here and killed at the end; skipped with --no-cluster);
- `swarm --help` with PYTHONDONTWRITEBYTECODE=1 and no cache of its own: the
  project's modules compiled from source at every run, as in a checkout whose
  environment sets it (the standard library keeps its installed cache);
- with --before DIR (another tree: `mkdir /tmp/old; git archive REV | tar -x -C /tmp/old`),
  `swarm --help` and `swarm service ls` of that tree too (PYTHONPATH=DIR);
- the anchor: docker's CLI (`docker --help`, `docker version --format ...`,
  which needs no daemon to print the client's version) and `python -c pass`
  (the interpreter alone);
- the ratios of swarm's figures to docker's, and the load average.

The swarm commands run with a bytecode cache of their own (PYTHONPYCACHEPREFIX
in a temporary directory, filled by the warm-up runs), as an installed
package has one; the checkout gets no __pycache__ from this script.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DOCKER = "/usr/local/bin/docker"
PYTHON = sys.executable
SCRIPT = os.path.join(os.path.dirname(PYTHON), "swarm")


def time_once(argv: list[str], env: dict[str, str]) -> float:
    # Run outside any tree (`-m` puts the working directory first on sys.path): PYTHONPATH picks the tree.
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def measure(commands: dict[str, tuple[list[str], dict[str, str]]], runs: int, warmup: int = 2) -> dict:
    """Each command `warmup` times, then `runs` rounds of every command in turn."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(warmup):
        for argv, env in commands.values():
            time_once(argv, env)
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            times[name].append(time_once(argv, env))
    return {name: {"median_ms": round(statistics.median(ts) * 1000, 1), "min_ms": round(min(ts) * 1000, 1),
                   "max_ms": round(max(ts) * 1000, 1)} for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="counted runs of each command (default 20)")
    parser.add_argument("--no-cluster", action="store_true", help="skip `swarm service ls` against a daemon")
    parser.add_argument("--before", metavar="DIR", help="also time the CLI of the checkout in DIR")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="cli-bench-")
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached = dict(base_env, PYTHONPATH=ROOT, PYTHONPYCACHEPREFIX=os.path.join(work, "pycache"),
                  SWARM_STATE_DIR=os.path.join(work, "no-node"))
    uncached = {k: v for k, v in cached.items() if k != "PYTHONPYCACHEPREFIX"}
    uncached["PYTHONDONTWRITEBYTECODE"] = "1"
    before = dict(cached, PYTHONPATH=os.path.abspath(args.before)) if args.before else None
    swarm = None
    try:
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([PYTHON, "-c", "pass"], base_env),
            "swarm --help": ([PYTHON, "-m", "swarm", "--help"], cached),
            "swarm --help (console script)": ([SCRIPT, "--help"], cached),
            "swarm --help (PYTHONDONTWRITEBYTECODE=1)": ([PYTHON, "-m", "swarm", "--help"], uncached),
            "swarm service ls --help": ([PYTHON, "-m", "swarm", "service", "ls", "--help"], cached),
        }
        if before is not None:
            commands["before: swarm --help"] = ([PYTHON, "-m", "swarm", "--help"], before)
        if not args.no_cluster:
            from swarm.lab.localcluster import Swarm
            swarm = Swarm(os.path.join(work, "cluster"))
            node = swarm.init("m1")
            commands["swarm service ls"] = ([PYTHON, "-m", "swarm", "service", "ls"],
                                            dict(cached, SWARM_STATE_DIR=node.state_dir))
            if before is not None:
                commands["before: swarm service ls"] = ([PYTHON, "-m", "swarm", "service", "ls"],
                                                        dict(before, SWARM_STATE_DIR=node.state_dir))
        if os.access(DOCKER, os.X_OK):
            commands["docker --help"] = ([DOCKER, "--help"], base_env)
            commands["docker version --format"] = ([DOCKER, "version", "--format", "{{.Client.Version}}"], base_env)
        result = measure(commands, args.runs)
    finally:
        if swarm is not None:
            swarm.stop_all()
            swarm.stop_containers()
        shutil.rmtree(work, ignore_errors=True)

    median = {name: figures["median_ms"] for name, figures in result.items()}
    ratios = {}
    if "docker --help" in median:
        ratios["swarm --help / docker --help"] = round(median["swarm --help"] / median["docker --help"], 2)
        if "swarm service ls" in median:
            ratios["swarm service ls / docker version --format"] = round(median["swarm service ls"]
                                                                         / median["docker version --format"], 2)
    for name in ("swarm --help", "swarm service ls"):
        if name in median and f"before: {name}" in median:
            ratios[f"{name} / before"] = round(median[name] / median[f"before: {name}"], 2)
    print(json.dumps({"runs": args.runs, "load_average": [round(x, 2) for x in os.getloadavg()],
                      "python": sys.version.split()[0], "commands": result, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()

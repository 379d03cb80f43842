"""The Engine API measured next to dockerd 20.10, in the same run, with the same docker CLI and client.

    .venv/bin/python bench/engineapi_bench.py                        # the full run, about 5 minutes
    .venv/bin/python bench/engineapi_bench.py --sizes 1 10 --runs 1 --duration 2 --tasks 100   # a smoke run
    .venv/bin/python bench/engineapi_bench.py --profile 8            # and py-spy on our daemon
    .venv/bin/python bench/engineapi_bench.py --no-lists --poll-cli  # creates polled by `docker service ps`
    git archive HEAD | tar -x -C /tmp/before                         # (an empty folder) an earlier tree, then
    .venv/bin/python bench/engineapi_bench.py --no-create --baseline /tmp/before   # it measured beside ours

Two single-node swarms side by side: ours (swarm.lab.localcluster: one daemon, manager and
worker, real runc containers, its Engine API on STATE_DIR/docker.sock) and Docker's
(bench/docker_anchor.py's Anchor: its own dockerd 20.10 in a network namespace of its own,
--bridge=none). Both get the same busybox root filesystem (scripts/build-demo-image.sh):
ours by `swarm image import TAR demo:1`, Docker's by `docker import` and its image ID (a tag
would make Docker's agent ask a registry for every task).

1. create: the same docker CLI (/usr/local/bin/docker, 28.x) on both sockets runs
   `docker service create --detach --no-resolve-image --replicas N --stop-grace-period 0s
   --name NAME IMAGE sleep 1000`; the figure is the time from just before the command to the
   first poll that sees N tasks running. Both sides are polled alike, every 50 ms, by the
   same Python client asking GET /tasks?filters={"service":[NAME]} (what `docker service ps`
   asks), not by starting the CLI for each poll (a CLI start costs 30 to 60 ms of CPU, which
   would blur the figure of the side it runs next to); --poll-cli polls with `docker service
   ps` instead, for comparison. Not `--detach=false`: the CLI then
   waits 5 s more to see the tasks stay up. Then `docker service rm` and a wait until the
   containers are gone, so the next run has the machine to itself. Each side first runs an
   uncounted service of 2 replicas. Runs interleave: in each round every size once on each
   side, the side that goes first alternating from round to round.
2. list: SERVICES services of TASKS/SERVICES replicas each, whose placement constraint
   (node.labels.engineapi-bench==nowhere) no node satisfies: both schedulers keep the TASKS
   tasks pending (no container runs), so the lists hold TASKS tasks on a 2-core machine.
   Each daemon's CPU is then read over 5 s in which nobody asks it anything (idle_cpu_percent:
   what holding pending tasks costs). Then for each path (GET /_ping: the HTTP stack alone;
   /services; /services?status=true as `docker service ls` asks; /tasks), each concurrency (1, 8 connections) and each side, a client of raw unix-socket
   HTTP/1.1 connections with keep-alive (asyncio; the same code for both sides, bodies read
   whole, Content-Length or chunked) sends requests for DURATION seconds: requests/s and
   latency percentiles. Paths are versioned /v1.41/ (dockerd 20.10's API; ours serves 1.24
   to 1.50), so both answer the same request. Sides alternate cell by cell, ROUNDS times.
   Beside requests/s and latency, each cell reads the daemon's own CPU (/proc, all threads)
   and gives CPU ms per request: the load other programs put on the machine does not blur it.
   With --baseline TREE a third side, "before", is our daemon run from TREE (another checkout,
   `git archive` of an earlier commit): a swarm of its own (its own address and data path
   port), the same pending tasks, measured in the same cells: before and after in one run,
   on the same machine load, each next to dockerd.
3. --profile S: py-spy (raw, --nonblocking) samples our daemon for S seconds while one
   connection sends GET /tasks, then GET /services: the top functions, self and inclusive.

Prints progress on stderr and one JSON document on stdout (the figures, the ratios
ours/dockerd, the load average at each phase). Needs root (runc, dockerd). Cleanup always
runs: our daemon and containers by PID, Docker's anchor as bench/docker_anchor.py does it.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import docker_anchor  # noqa: E402  (bench/docker_anchor.py, a script beside this one)

from swarm.lab.localcluster import Swarm, eventually  # noqa: E402

DOCKER_CLI = "/usr/local/bin/docker"
API = "/v1.41"                     # dockerd 20.10's version; both sides answer it
POLL = 0.05                        # seconds between task polls, as services_bench and docker_anchor
WARMUP = 2                         # replicas of the uncounted first service of each side
CONSTRAINT = "node.labels.engineapi-bench==nowhere"


def log(msg: str) -> None:
    print(f"[engineapi_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_seconds(pid: int) -> float:
    """User and system CPU of the process `pid`, all its threads, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- HTTP over a unix socket

class Connection:
    """One keep-alive HTTP/1.1 connection to a unix socket (blocking): GET only, whole bodies."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.buf = b""
        return s

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("connection closed mid-answer")
        self.buf += chunk

    def _until(self, mark: bytes) -> bytes:
        while (i := self.buf.find(mark)) < 0:
            self._fill()
        out, self.buf = self.buf[:i], self.buf[i + len(mark):]
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def get(self, target: str) -> tuple[int, bytes]:
        for attempt in (0, 1):     # the server may have closed an idle connection: once more on a new one
            if self.sock is None:
                self.sock = self._connect()
            try:
                self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
                head = self._until(b"\r\n\r\n")
                status, headers = parse_head(head)
                if "content-length" in headers:
                    body = self._exactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while size := int(self._until(b"\r\n").split(b";")[0], 16):
                        parts.append(self._exactly(size + 2)[:-2])
                    self._until(b"\r\n")
                    body = b"".join(parts)
                else:
                    raise ConnectionError("an answer with neither Content-Length nor chunks")
                if headers.get("connection", "").lower() == "close":
                    self.close()
                return status, body
            except (ConnectionError, BrokenPipeError) as exc:
                self.close()
                if attempt:
                    raise ConnectionError(f"GET {target}: {exc}") from None
        raise AssertionError("unreachable")

    def json(self, target: str):
        status, body = self.get(target)
        if status != 200:
            raise RuntimeError(f"GET {target}: HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _aget(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: bytes) -> tuple[int, bool]:
    """(status, whether the server closes the connection after this answer)."""
    writer.write(target)
    head = await reader.readuntil(b"\r\n\r\n")
    status, headers = parse_head(head[:-4])
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:   # chunked (dockerd streams a large JSON answer)
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status, headers.get("connection", "").lower() == "close"


async def _load(path: str, target: str, concurrency: int, duration: float) -> dict:
    request = f"GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    limit = 64 * 1024 * 1024

    reconnects = 0

    async def worker(stop_at: float) -> None:
        nonlocal reconnects
        reader, writer = await asyncio.open_unix_connection(path, limit=limit)
        try:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    status, closing = await _aget(reader, writer, request)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    errors[type(exc).__name__] += 1
                    writer.close()
                    reader, writer = await asyncio.open_unix_connection(path, limit=limit)
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[f"HTTP {status}"] += 1
                if closing:     # hypercorn closes a connection after 1,000 requests (keep_alive_max_requests)
                    reconnects += 1
                    writer.close()
                    reader, writer = await asyncio.open_unix_connection(path, limit=limit)
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(started + duration) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2) if latencies else None

    return {"requests": len(latencies), "seconds": round(elapsed, 2),
            "rps": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(latencies[-1] * 1000, 2) if latencies else None, "errors": dict(errors),
            "reconnects": reconnects}


def load_test(path: str, target: str, concurrency: int, duration: float) -> dict:
    """`concurrency` keep-alive connections sending GET `target` one after the other for `duration` s."""
    return asyncio.run(_load(path, target, concurrency, duration))


# --------------------------------------------------------------------------- the two sides

class Side:
    """One swarm as the docker CLI and the client see it: its socket, its image, how to clean up."""

    name = ""

    def __init__(self, sock: str, image: str, config_dir: str) -> None:
        self.sock = sock
        self.image = image
        self.conn = Connection(sock)
        self.env = dict(os.environ, DOCKER_HOST="unix://" + sock, DOCKER_CONFIG=config_dir, DOCKER_CLI_HINTS="false")
        for k in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_API_VERSION"):
            self.env.pop(k, None)
        os.makedirs(config_dir, exist_ok=True)

    def docker(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([DOCKER_CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: docker {' '.join(args[:3])} ... exited {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout).strip()[-400:]}")
        return proc

    def tasks(self, service: str) -> list[dict]:
        flt = urllib.parse.quote(json.dumps({"service": [service]}))
        status, body = self.conn.get(f"{API}/tasks?filters={flt}")
        if status == 404:      # dockerd: "service NAME not found" once it is removed
            return []
        if status != 200:
            raise RuntimeError(f"{self.name}: GET /tasks of {service}: HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def create(self, name: str, replicas: int, *flags: str) -> float:
        """Seconds of the `docker service create --detach` command alone."""
        t0 = time.monotonic()
        self.docker("service", "create", "--detach", "--no-resolve-image", "--replicas", str(replicas),
                    "--stop-grace-period", "0s", *flags, "--name", name, self.image, "sleep", "1000")
        return time.monotonic() - t0

    def running(self, name: str, poll_cli: bool) -> int:
        """Tasks of `name` running (and meant to): from GET /tasks, or with `poll_cli` from
        `docker service ps` (the CLI started for each poll, as a user's script would)."""
        if not poll_cli:
            return sum(1 for t in self.tasks(name) if t["Status"]["State"] == "running"
                       and t["DesiredState"] == "running")
        out = self.docker("service", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}",
                          name).stdout
        return sum(1 for line in out.splitlines() if line.startswith("Running"))

    def converge(self, name: str, replicas: int, poll_cli: bool = False, timeout: float = 300) -> tuple[float, float]:
        """(create to all `replicas` running, the create command alone), then the service removed."""
        t0 = time.monotonic()
        cli = self.create(name, replicas)
        while self.running(name, poll_cli) < replicas:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name}: {name}: fewer than {replicas} tasks running after {timeout} s")
            time.sleep(POLL)
        elapsed = time.monotonic() - t0
        self.remove(name)
        return elapsed, cli

    def remove(self, name: str) -> None:
        raise NotImplementedError

    def daemon_pid(self) -> int:
        raise NotImplementedError


class Ours(Side):
    name = "ours"

    def __init__(self, swarm: Swarm, node, base: str, name: str = "ours") -> None:
        self.name = name
        super().__init__(os.path.join(node.state_dir, "docker.sock"), "demo:1", os.path.join(base, f"cli-{name}"))
        self.swarm, self.node = swarm, node

    def remove(self, name: str) -> None:
        self.docker("service", "rm", name)
        eventually(lambda: not self.tasks(name), 120, f"{name}'s tasks to be removed")
        tasks = os.path.join(self.node.state_dir, "tasks")   # one bundle folder per container (runc.py)
        eventually(lambda: not [n for n in os.listdir(tasks) if not n.startswith(".")]
                   if os.path.isdir(tasks) else True, 120, f"{name}'s containers to be removed")

    def daemon_pid(self) -> int:
        assert self.node.pid is not None, "our daemon is not running"
        return self.node.pid


class TreeSwarm(Swarm):
    """Swarm nodes whose CLI and daemon run from another tree (--baseline): `tree` on
    PYTHONPATH and as the working directory, instead of this checkout."""

    def __init__(self, base: str, tree: str, octet: int) -> None:
        super().__init__(base)
        self.tree = os.path.abspath(tree)
        self.octet = octet

    def run(self, node, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=self.tree, SWARM_STATE_DIR=node.state_dir)
        proc = subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=self.tree, input=input)
        if node.pid:
            self.pids.add(node.pid)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.tree}: swarm {' '.join(args)} on {node.name} failed ({proc.returncode}): "
                                 f"{proc.stderr}{proc.stdout}")
        return proc


class Docker(Side):
    name = "dockerd"

    def __init__(self, anchor: docker_anchor.Anchor, image: str, base: str) -> None:
        super().__init__(anchor.sock, image, os.path.join(base, "cli-docker"))
        self.anchor = anchor

    def remove(self, name: str) -> None:
        self.docker("service", "rm", name)
        eventually(lambda: not self.anchor.engine.containers(name), 120, f"{name}'s containers to be removed")
        eventually(lambda: not self.tasks(name), 120, f"{name}'s tasks to be removed")

    def daemon_pid(self) -> int:
        assert self.anchor.dockerd is not None, "dockerd is not running"
        return self.anchor.dockerd.pid


def anchor_args(tmp_parent: str) -> argparse.Namespace:
    """The options docker_anchor.Anchor reads (its own command line's defaults)."""
    return argparse.Namespace(tmp_parent=tmp_parent, private_containerd=False, timeout=300.0, poll_interval=POLL,
                              keep_tmp=False, docker=DOCKER_CLI, dockerd=None)


# --------------------------------------------------------------------------- the measurements

def summarize(values: list[float]) -> dict:
    return {"runs": [round(v, 3) for v in values], "median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}


def create_bench(sides: list[Side], sizes: list[int], runs: int, poll_cli: bool = False) -> dict:
    times: dict[str, dict[int, list[float]]] = {s.name: {n: [] for n in sizes} for s in sides}
    cli: dict[str, dict[int, list[float]]] = {s.name: {n: [] for n in sizes} for s in sides}
    loads = []
    for side in sides:
        side.converge("warmup", WARMUP)
    for r in range(runs):
        loads.append(load())
        order = sides if r % 2 == 0 else sides[::-1]
        for n in sizes:
            for side in order:
                elapsed, t_cli = side.converge(f"c{n}x{r}", n, poll_cli)
                times[side.name][n].append(elapsed)
                cli[side.name][n].append(t_cli)
                log(f"{side.name}: {n} replicas running after {elapsed:.3f} s (create command {t_cli:.3f} s)")
    out: dict = {"load_average_1min_per_round": loads,
                 "poll": "docker service ps (the CLI per poll)" if poll_cli else "GET /tasks (the Python client)"}
    for side in sides:
        out[side.name] = {str(n): summarize(v) for n, v in times[side.name].items()}
        out[side.name + "_create_command_s"] = {str(n): summarize(v) for n, v in cli[side.name].items()}
    out["ratio_ours_over_dockerd"] = {str(n): round(out["ours"][str(n)]["median"] / out["dockerd"][str(n)]["median"], 3)
                                      for n in sizes}
    return out


def pending_tasks(sides: list[Side], tasks: int, services: int) -> dict:
    """`services` services of tasks/services replicas each that no node can take: every side
    holds `tasks` pending tasks. Returns the time each side took to list them all."""
    per = tasks // services
    out = {}
    for side in sides:
        t0 = time.monotonic()
        for i in range(services):
            side.create(f"pending{i}", per, "--constraint", CONSTRAINT)
        eventually(lambda: len(side.conn.json(f"{API}/tasks")) >= per * services, 300,
                   f"{side.name}: {per * services} pending tasks")
        states = collections.Counter(t["Status"]["State"] for t in side.conn.json(f"{API}/tasks"))
        out[side.name] = {"seconds_to_all_listed": round(time.monotonic() - t0, 2), "task_states": dict(states)}
        log(f"{side.name}: {per * services} tasks listed: {dict(states)}")
    time.sleep(SETTLE)
    for side in sides:    # what holding the pending tasks costs when nobody asks (schedulers retrying)
        pid = side.daemon_pid()
        c0 = cpu_seconds(pid)
        time.sleep(SETTLE)
        out[side.name]["idle_cpu_percent"] = round(100 * (cpu_seconds(pid) - c0) / SETTLE, 1)
    return out


SETTLE = 5.0      # seconds the daemons are left alone after the pending tasks are made, and idle CPU is read over

PATHS = {"GET /_ping": "/_ping", "GET /services": f"{API}/services", "GET /services?status=true": f"{API}/services?status=true",
         "GET /tasks": f"{API}/tasks"}


def list_bench(sides: list[Side], concurrencies: list[int], duration: float, rounds: int) -> dict:
    cells: dict = {}
    loads = []
    flip = 0
    for r in range(rounds):
        for label, target in PATHS.items():
            for c in concurrencies:
                loads.append(load())
                order = sides if flip % 2 == 0 else sides[::-1]
                flip += 1
                for side in order:
                    pid = side.daemon_pid()
                    c0 = cpu_seconds(pid)
                    fig = load_test(side.sock, target, c, duration)
                    # the daemon's own CPU per answer: what a noisy machine's load does not blur
                    fig["daemon_cpu_ms_per_request"] = round(1000 * (cpu_seconds(pid) - c0) / max(1, fig["requests"]), 3)
                    fig["body_bytes"] = len(side.conn.get(target)[1])
                    cells.setdefault(label, {}).setdefault(f"c{c}", {}).setdefault(side.name, []).append(fig)
                    log(f"{label} c={c} {side.name}: {fig['rps']} req/s, p50 {fig['p50_ms']} ms, "
                        f"p99 {fig['p99_ms']} ms{', errors ' + str(fig['errors']) if fig['errors'] else ''}")
    out: dict = {"load_average_1min_per_cell": loads, "cells": cells, "summary": {}}
    for label, by_c in cells.items():
        for c, by_side in by_c.items():
            row = {}
            for side, figs in by_side.items():
                row[side] = {"rps": round(statistics.median(f["rps"] for f in figs), 1),
                             "p99_ms": round(statistics.median(f["p99_ms"] for f in figs), 2),
                             "p50_ms": round(statistics.median(f["p50_ms"] for f in figs), 2),
                             "daemon_cpu_ms_per_request": round(statistics.median(
                                 f["daemon_cpu_ms_per_request"] for f in figs), 3),
                             "body_bytes": figs[-1]["body_bytes"]}
            pairs = [("ours", "dockerd")] + ([("before", "dockerd"), ("ours", "before")] if "before" in row else [])
            for a, b in pairs:
                row[f"rps_{a}_over_{b}"] = round(row[a]["rps"] / row[b]["rps"], 3)
                row[f"p99_{a}_over_{b}"] = round(row[a]["p99_ms"] / row[b]["p99_ms"], 3)
                row[f"cpu_per_request_{a}_over_{b}"] = round(
                    row[a]["daemon_cpu_ms_per_request"] / row[b]["daemon_cpu_ms_per_request"], 3)
            out["summary"][f"{label} {c}"] = row
    return out


def profile(side: Side, target: str, seconds: float, folder: str) -> dict:
    """py-spy on our daemon while one connection sends GET `target`: where the daemon's time goes
    (samples of all its threads, idle ones left out), by function, self and inclusive."""
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    pid = side.daemon_pid()
    raw = os.path.join(folder, "pyspy.txt")
    spy = subprocess.Popen([pyspy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250", "-f", "raw",
                            "-o", raw, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)    # py-spy attaches
    fig = load_test(side.sock, target, 1, seconds - 1.5)
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not os.path.exists(raw):
        return {"error": f"py-spy exited {spy.returncode}: {err.decode(errors='replace')[-300:]}"}
    self_t: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    with open(raw) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_short(fr) for fr in stack.split(";")]
            self_t[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    return {"target": target, "load": fig, "samples": total,
            "self_top": [(fr, round(100 * n / total, 1)) for fr, n in self_t.most_common(25)],
            "inclusive_top": [(fr, round(100 * n / total, 1)) for fr, n in incl.most_common(40)]}


def _short(frame: str) -> str:
    """py-spy's "func (path/to/module.py:123)" as "func (module.py)" so lines of one function add up."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--runs", type=int, default=3, help="rounds of create runs (each size once per side)")
    ap.add_argument("--tasks", type=int, default=1000, help="pending tasks for the list figures")
    ap.add_argument("--services", type=int, default=10, help="services the pending tasks belong to")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per list cell")
    ap.add_argument("--rounds", type=int, default=2, help="times each list cell is measured per side")
    ap.add_argument("--profile", type=float, default=0, help="seconds of py-spy on our daemon (GET /tasks)")
    ap.add_argument("--no-create", action="store_true", help="skip the create figures")
    ap.add_argument("--no-lists", action="store_true", help="skip the list figures")
    ap.add_argument("--baseline", metavar="TREE",
                    help="also measure the lists on our daemon run from TREE (an earlier tree): the side 'before'")
    ap.add_argument("--poll-cli", action="store_true",
                    help="poll the creates with `docker service ps` (a CLI start per poll) instead of GET /tasks")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (runc, dockerd)"}))
        return 1

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    wall0 = time.monotonic()
    base = tempfile.mkdtemp(prefix="eapi-bench-")
    out: dict = {"command": " ".join(["bench/engineapi_bench.py", *sys.argv[1:]]), "load_average_start": os.getloadavg(),
                 "cpus": os.cpu_count(), "cli": DOCKER_CLI}
    tar = os.path.join(base, "demo.tar")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), tar], check=True, capture_output=True)
    # the daemon and its CLI with a bytecode cache, as an installed package has (services_bench does the same)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(base, "pycache")

    before = docker_anchor.snapshot()
    dockerd_bin, _ = docker_anchor.find_binaries(anchor_args(base))
    anchor = docker_anchor.Anchor(anchor_args("/tmp"), dockerd_bin, DOCKER_CLI)
    netns = f"swarm-eapi-anchor-{os.getpid()}"
    swarm = Swarm(os.path.join(base, "ours"))
    baseline = TreeSwarm(os.path.join(base, "before"), args.baseline, swarm.octet % 249 + 2) if args.baseline else None
    status = 0
    try:
        m1 = swarm.init("m1")
        swarm.run(m1, "image", "import", tar, "demo:1")
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 30, "our node ready")
        time.sleep(1.5)   # the heartbeat carries the node's image list to the manager
        ours = Ours(swarm, m1, base)
        docker_anchor.run(["ip", "netns", "add", netns])
        docker_anchor.run(["ip", "-n", netns, "link", "set", "lo", "up"])
        anchor.launcher = ["nsenter", f"--net=/run/netns/{netns}"]
        ver = anchor.start()
        theirs = Docker(anchor, anchor.import_image(tar), base)
        out["dockerd"] = {"version": ver.get("Version"), "api_version": ver.get("ApiVersion")}
        out["ours"] = {"engine": ours.conn.json("/version").get("Version")}
        sides: list[Side] = [ours, theirs]
        if not args.no_create:
            log("create: " + " ".join(map(str, args.sizes)) + f" replicas, {args.runs} rounds")
            out["create_to_running_s"] = create_bench(sides, args.sizes, args.runs, args.poll_cli)
        if baseline is not None and not args.no_lists:
            # a data path port of its own: two daemons of one machine's namespace cannot share one
            b1 = baseline.init("b1", "--data-path-port", "4794")
            baseline.run(b1, "image", "import", tar, "demo:1")
            eventually(lambda: all(r["status"] == "ready" for r in baseline.ls(b1).values()), 30, "the baseline node ready")
            sides = [ours, Ours(baseline, b1, base, "before"), theirs]
            out["before"] = {"tree": baseline.tree}
        if not args.no_lists:
            log(f"list: {args.tasks} pending tasks in {args.services} services")
            out["pending"] = pending_tasks(sides, args.tasks, args.services)
            out["list"] = list_bench(sides, args.concurrency, args.duration, args.rounds)
        for label in ("GET /tasks", "GET /services") if args.profile and not args.no_lists else ():
            log(f"py-spy on our daemon for {args.profile:g} s ({label}, one connection)")
            out.setdefault("profile_ours", {})[label] = profile(ours, PATHS[label], args.profile, base)
    except BaseException as e:  # noqa: BLE001 - report what failed, clean up, exit 1
        out["error"] = f"{type(e).__name__}: {e}"
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for ours_swarm in (swarm, baseline) if baseline is not None else (swarm,):
            try:
                ours_swarm.stop_all()
                ours_swarm.stop_containers()
            except Exception as e:  # noqa: BLE001
                out.setdefault("cleanup", []).append(f"ours ({ours_swarm.base}): {type(e).__name__}: {e}")
        try:
            anchor.cleanup()
        except Exception as e:  # noqa: BLE001
            anchor.notes.append(f"cleanup error: {type(e).__name__}: {e}")
            status = 1
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
        docker_anchor.remove_empty_trees(before, anchor.notes)
        if anchor.notes:
            out["anchor_notes"] = anchor.notes
        diff = docker_anchor.diff_snapshots(before, docker_anchor.snapshot())
        out["machine_after"] = {"unchanged": not diff, **diff}
        if diff:
            out["machine_after"]["caveat"] = ("a before/after comparison of the whole machine: other programs "
                                              "running meanwhile (other labs) show up here too")
        shutil.rmtree(base, ignore_errors=True)
        out["load_average_end"] = os.getloadavg()
        out["wall_s"] = round(time.monotonic() - wall0, 1)
        print(json.dumps(out, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())

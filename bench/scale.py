"""The control plane at scale: real managers, simulated workers.

    .venv/bin/python bench/scale.py --nodes 100 --tasks 1000 [--managers 3] [--delay 0.05]
    .venv/bin/python bench/scale.py --sizes 100x1000,100x10000,1000x10000 [--failover] [--node-loss]

For each size (NODESxTASKS) it starts M real manager daemons on loopback
(`swarm init` with --availability drain, the others joined as managers and
drained: no task runs on a manager), then the simulated workers of
swarm/lab/simworker.py in two processes: 90 % of the nodes in one, 10 % in the
other (killing that one is "10 % of the nodes lost"). Each simulated worker is a
real node identity that joined with the worker token and speaks the worker
protocol over its own mutual-TLS connections. It measures:
- converge_s: `service create --replicas TASKS` (through the CLI) to every task
  running, as the managers' `service ls` counts them;
- dispatch_per_s: tasks that reached their nodes per second (the sims count the
  tasks assigned to them; the slope from the first to the last);
- raft_commits_per_s, raft_bytes_per_task (growth of the Raft directories of the
  leader during the run, per task), and per manager process the RSS and the CPU
  seconds it used during the run, per 1,000 tasks (from /proc);
- failover (--failover, needs 3 managers): kill -9 of the leader at the end:
  seconds to a new leader, to its first write (a `service scale` +1 % accepted;
  -1 % at 100,000 tasks, the managers' limit for one service)
  and to every task of the scaled service running (its orchestrator in charge);
- node_loss (--node-loss): kill -9 of the 10 % process: seconds until their
  nodes are down and until every task runs again on the others;
- check (--check, for small sizes: it lists every task): at the end, every slot
  of the service runs exactly once, as the managers see it (`service ps`) and
  as the live simulated workers count what they run.
Progress lines go to stderr; one JSON document to stdout at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from swarm.lab.localcluster import Node, Swarm, eventually  # noqa: E402
from swarm.rpc.client import call_unix_sync  # noqa: E402
from swarm.rpc.messages import RPCError  # noqa: E402

IMAGE = "demo:1"
SERVICE = "scale"
MAX_REPLICAS = 100_000   # what the managers accept for one service (controlapi/specparams.py)
MAX_FILTER_VALUES = 99    # node ids one service.ps call may name (100 filter values in all)
PS_ROWS = 4000         # tasks per service.ps answer, about: an answer must stay under the 4 MiB frame


def say(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sock(node: Node) -> str:
    return os.path.join(node.state_dir, "swarm.sock")


def call(node: Node, method: str, params: dict | None = None, timeout: float = 30) -> object:
    return call_unix_sync(sock(node), method, params or {}, timeout=timeout)


def proc_stats(pid: int) -> dict:
    """RSS (bytes) and CPU seconds (user + system) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return {"rss": rss, "cpu": cpu}


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def loadavg() -> float:
    return os.getloadavg()[0]


class Sims:
    """A simulated-worker process; its stderr progress is passed on, its counts kept."""

    def __init__(self, token: str, managers: list[str], count: int, prefix: str, delay: float, first: int) -> None:
        self.prefix = prefix
        argv = [sys.executable, "-m", "swarm.lab.simworker", "--token", token, "--count", str(count),
                "--prefix", prefix, "--delay", str(delay), "--image", IMAGE, "--progress", "1",
                "--first", str(first)]
        for m in managers:
            argv += ["--manager", m]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONPATH=ROOT))
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the simulated workers {prefix} did not start (exit {self.proc.wait()})")
        joined = json.loads(line)
        self.node_ids: list[str] = joined["node_ids"]
        self.join_seconds = joined["seconds"]
        self.samples: list[tuple[float, int, int]] = []   # (time, tasks known, running)
        self.beaten = 0                                     # its nodes that have had a heartbeat answered
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                s = json.loads(line)
            except ValueError:
                continue
            self.samples.append((time.monotonic(), s["known"], s["running"]))
            self.beaten = s.get("beaten", 0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def running(manager: Node) -> tuple[int, int]:
    """(running, desired) of the benchmark's service, from `service ls` ("7/10")."""
    for row in call(manager, "service.ls", {}, timeout=60):
        if row["name"] == SERVICE:
            run, _, rest = row["replicas"].partition("/")
            return int(run), int(rest.split()[0])
    return 0, 0


def leader_of(managers: list[Node], dead: set[str] = frozenset()) -> tuple[Node, str] | None:
    """The manager (Node, node id) the live managers agree leads, if any."""
    for m in managers:
        if m.name in dead:
            continue
        try:
            info = call(m, "info", timeout=5)
        except RPCError:
            continue
        leader = info.get("leader")
        for other in managers:
            if other.name not in dead:
                try:
                    if call(other, "info", timeout=5)["node_id"] == leader:
                        return other, leader
                except RPCError:
                    continue
    return None


def wait_running(manager: Node, want: int, timeout: float, label: str, sims: list[Sims], exact: bool = False) -> float:
    """Seconds until `want` tasks run (`exact`: no more either, after a scale down)."""
    started = time.monotonic()
    last = 0.0
    while True:
        try:
            run, _ = running(manager)
        except RPCError as exc:
            run = -1
            say(f"{label}: service ls failed: {exc.message}")
        now = time.monotonic()
        if run == want or (run > want and not exact):
            return now - started
        if now - started > timeout:
            raise TimeoutError(f"{label}: {run}/{want} running after {timeout:g} s")
        if now - last >= 2:
            known = sum(s.samples[-1][1] for s in sims if s.samples)
            say(f"{label}: {run}/{want} running, {known} delivered, {now - started:.1f} s, load {loadavg():.2f}")
            last = now
        time.sleep(0.5 if want < 20_000 else 2.0)   # service ls is a pass over every task


def make_cluster(base: str, managers: int, heartbeat: str) -> tuple[Swarm, list[Node]]:
    swarm = Swarm(base)
    m1 = swarm.init("m1", "--availability", "drain", "--dispatcher-heartbeat", heartbeat)
    nodes = [m1]
    for i in range(2, managers + 1):
        nodes.append(swarm.join(f"m{i}", m1, "manager"))
        swarm.run(m1, "node", "update", "--availability", "drain", f"m{i}")
    return swarm, nodes


def metrics(swarm: Swarm, managers: list[Node]) -> dict:
    out = {}
    for m in managers:
        pid = m.pid
        if pid is None:
            continue
        try:
            out[m.name] = dict(proc_stats(pid), raft_bytes=dir_bytes(os.path.join(m.state_dir, "raft")))
        except OSError:
            continue
    return out


def commit_index(manager: Node) -> int:
    return call(manager, "info", timeout=10)["raft"]["commit_index"]


def lost_still_running(manager: Node, lost_ids: list[str], per_node: int) -> int:
    """Tasks still counted running (desired and observed) on the lost nodes."""
    count = 0
    chunk = max(1, min(MAX_FILTER_VALUES, PS_ROWS // max(1, per_node)))
    for i in range(0, len(lost_ids), chunk):
        rows = call(manager, "service.ps", {"refs": [SERVICE], "filters": {
            "node": lost_ids[i:i + chunk], "desired-state": ["running"]}}, timeout=60)
        count += sum(1 for r in rows if r["state"] == "running")
    return count


def run_size(base: str, nodes: int, tasks: int, args: argparse.Namespace) -> dict:
    say(f"size {nodes} nodes x {tasks} tasks, {args.managers} managers")
    swarm, managers = make_cluster(base, args.managers, args.heartbeat)
    args.nodes_now = nodes
    result: dict = {"nodes": nodes, "tasks": tasks, "managers": args.managers, "heartbeat": args.heartbeat,
                    "delay": args.delay}
    sims: list[Sims] = []
    try:
        token = swarm.token(managers[0], "worker")
        addrs = [m.addr for m in managers]
        lost_count = max(1, nodes // 10) if args.node_loss else 0
        started = time.monotonic()
        sims.append(Sims(token, addrs, nodes - lost_count, "sim", args.delay, 0))
        if lost_count:
            sims.append(Sims(token, addrs, lost_count, "lost", args.delay, nodes - lost_count))
        result["join_s"] = round(time.monotonic() - started, 2)
        m1 = managers[0]
        eventually(lambda: call(m1, "info")["nodes"] >= nodes + len(managers), 120, "every node joined")
        say(f"{nodes} nodes joined in {result['join_s']} s")
        # Every node's first heartbeat (its images; its connection made) before the service is
        # created: the create measures the control plane, not a thousand TLS handshakes at once.
        eventually(lambda: sum(s.beaten for s in sims) >= nodes, 120, "every node's first heartbeat")
        result["ready_s"] = round(time.monotonic() - started, 2)
        say(f"{nodes} nodes heard from in {result['ready_s']} s")
        before, index0 = metrics(swarm, managers), commit_index(m1)
        t0 = time.monotonic()
        swarm.run(m1, "service", "create", "--detach", "--no-resolve-image", "--name", SERVICE,
                  "--replicas", str(tasks), "--stop-grace-period", "0s", IMAGE, timeout=120)
        # Counted on a follower: `service ls` is a pass over every task, which at 100,000
        # tasks cost the leader a quarter of its CPU when it was asked there.
        converge = wait_running(managers[-1], tasks, args.timeout, "converge", sims)
        after, index1 = metrics(swarm, managers), commit_index(m1)
        result["converge_s"] = round(converge, 2)
        result["tasks_per_s"] = round(tasks / converge, 1)
        result["dispatch_per_s"] = dispatch_rate(sims, t0, tasks)
        result["raft_commits"] = index1 - index0
        result["raft_commits_per_s"] = round((index1 - index0) / converge, 1)
        found = leader_of(managers)
        leader = found[0].name if found else m1.name
        result["leader"] = leader
        result["raft_bytes_per_task"] = round((after[leader]["raft_bytes"] - before[leader]["raft_bytes"]) / tasks, 1)
        result["managers_after"] = {
            name: {"rss_mib": round(a["rss"] / 2**20, 1),
                   "rss_bytes_per_task": round((a["rss"] - before[name]["rss"]) / tasks, 1),
                   "cpu_s": round(a["cpu"] - before[name]["cpu"], 2),
                   "cpu_s_per_1000_tasks": round((a["cpu"] - before[name]["cpu"]) * 1000 / tasks, 3)}
            for name, a in after.items() if name in before}
        result["load_avg"] = round(loadavg(), 2)
        say(f"converged in {converge:.2f} s ({tasks / converge:.0f} tasks/s); leader {leader}: "
            f"{result['managers_after'][leader]}")
        if args.failover and len(managers) >= 3:
            result["failover"] = failover(swarm, managers, leader, tasks, args, sims)
        dead = {result.get("failover", {}).get("killed", "")}
        if lost_count:
            result["node_loss"] = node_loss(managers, sims[1], tasks, args, sims, dead=dead)
        if args.check:
            result["check"] = check_exactly_once(next(m for m in managers if m.name not in dead), sims)
    except (TimeoutError, AssertionError, RPCError) as exc:
        say(f"size {nodes}x{tasks} failed: {exc}")
        result["failed"] = str(exc)   # what was measured before stays in the result
    finally:
        for s in sims:
            s.kill()
        swarm.stop_all()
    return result


def check_exactly_once(manager: Node, sims: list[Sims]) -> dict:
    """Every slot of the service runs exactly once: in the managers' store, and by the count
    of the live simulated workers (which can lag a progress period: waited for)."""
    want = running(manager)[1]
    rows = call(manager, "service.ps", {"refs": [SERVICE], "filters": {"desired-state": ["running"]}}, timeout=60)
    per_slot: dict[int, int] = {}
    for r in rows:
        if r["state"] == "running":
            per_slot[r["slot"]] = per_slot.get(r["slot"], 0) + 1
    problems = [f"slot {slot} runs {n} times" for slot, n in sorted(per_slot.items()) if n != 1]
    problems += [f"slot {slot} does not run" for slot in range(1, want + 1) if slot not in per_slot]
    live = [s for s in sims if s.proc.poll() is None]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        workers = sum(s.samples[-1][2] for s in live if s.samples)
        if workers == want:
            break
        time.sleep(0.5)
    if workers != want:
        problems.append(f"the simulated workers run {workers} tasks, not {want}")
    return {"ok": not problems, "slots": want, "running_slots": len(per_slot), "workers_running": workers,
            "problems": problems[:20]}


def dispatch_rate(sims: list[Sims], t0: float, tasks: int) -> float | None:
    """Tasks delivered to their nodes per second: to the first sample where the sims know them all."""
    merged: dict[float, int] = {}
    for s in sims:
        for t, known, _ in s.samples:
            merged[round(t, 0)] = merged.get(round(t, 0), 0) + known
    done = [t for t, known in sorted(merged.items()) if known >= tasks * 0.99]
    return round(tasks / (done[0] - t0), 1) if done and done[0] > t0 else None


def failover(swarm: Swarm, managers: list[Node], leader: str, tasks: int, args: argparse.Namespace,
             sims: list[Sims]) -> dict:
    victim = next(m for m in managers if m.name == leader)
    others = [m for m in managers if m.name != leader]
    old_id = call(victim, "info")["node_id"]
    say(f"failover: kill -9 of the leader {leader}")
    t0 = time.monotonic()
    swarm.kill(victim)
    found = None
    while found is None or found[1] == old_id:
        if time.monotonic() - t0 > 60:
            raise TimeoutError("no new leader within 60 s")
        time.sleep(0.05)
        found = leader_of(others)
    new_leader = time.monotonic() - t0
    # +1 % (a write the new leader's orchestrator must act on); -1 % at the managers' limit
    # of 100,000 replicas a service.
    step = max(1, tasks // 100)
    want = tasks + step if tasks + step <= MAX_REPLICAS else tasks - step
    while True:
        proc = swarm.run(others[0], "service", "scale", "--detach", f"{SERVICE}={want}", check=False, timeout=60)
        if proc.returncode == 0:
            break
        if time.monotonic() - t0 > 120:
            raise TimeoutError(f"no write accepted after the failover: {proc.stderr.strip()}")
        time.sleep(0.1)
    first_write = time.monotonic() - t0
    wait_running(others[0], want, args.timeout, "failover", sims, exact=want < tasks)
    all_running = time.monotonic() - t0
    say(f"failover: new leader {found[0].name} after {new_leader:.2f} s, first write {first_write:.2f} s, "
        f"{want} running {all_running:.2f} s")
    return {"killed": leader, "new_leader": found[0].name, "new_leader_s": round(new_leader, 2),
            "first_write_s": round(first_write, 2), "all_running_s": round(all_running, 2), "tasks_after": want}


def node_loss(managers: list[Node], lost: Sims, tasks: int, args: argparse.Namespace, sims: list[Sims],
              dead: set[str]) -> dict:
    live = [m for m in managers if m.name not in dead]
    # Counted on a follower, as the create: the checks below (`service ls`, `service ps` by node)
    # are passes over every task, which at 100,000 tasks kept the leader from reading beats.
    found = leader_of(live)
    m = next((x for x in live if found is None or x.name != found[0].name), live[0])
    want = running(m)[1]
    say(f"node loss: kill -9 of the {len(lost.node_ids)} nodes of '{lost.prefix}'")
    t0 = time.monotonic()
    lost.kill()

    def all_down() -> bool:
        rows = call(m, "node.ls", {}, timeout=60)
        ids = set(lost.node_ids)
        return all(r["status"] == "down" for r in rows if r["id"] in ids)

    eventually(all_down, args.timeout, "the lost nodes marked down")
    down = time.monotonic() - t0
    per_node = 2 * tasks // max(1, args.nodes_now)   # a node may hold more than its share
    while lost_still_running(m, lost.node_ids, per_node) or running(m)[0] < want:
        if time.monotonic() - t0 > args.timeout:
            raise TimeoutError("the lost nodes' tasks were not rescheduled in time")
        time.sleep(0.5)
    again = time.monotonic() - t0
    say(f"node loss: down after {down:.2f} s, all {want} running again after {again:.2f} s")
    return {"lost_nodes": len(lost.node_ids), "down_s": round(down, 2), "all_running_s": round(again, 2)}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        n, _, t = part.strip().partition("x")
        if not (n.isdigit() and t.isdigit()):
            raise SystemExit(f"--sizes takes NODESxTASKS,... (e.g. 100x1000,1000x10000), not {part!r}")
        out.append((int(n), int(t)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--sizes", help="NODESxTASKS,... instead of --nodes/--tasks")
    parser.add_argument("--managers", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between a task's states on the sims")
    parser.add_argument("--heartbeat", default="5s", help="the dispatcher heartbeat period (Docker's default: 5s)")
    parser.add_argument("--failover", action="store_true", help="kill -9 the leader at the end of each size")
    parser.add_argument("--node-loss", action="store_true", help="kill 10 %% of the nodes at the end of each size")
    parser.add_argument("--check", action="store_true",
                        help="at the end, check every task runs exactly once (lists every task: small sizes)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a size may take to converge")
    parser.add_argument("--out", help="also write the JSON document to this file")
    args = parser.parse_args()
    sizes = parse_sizes(args.sizes) if args.sizes else [(args.nodes, args.tasks)]
    # A kill (SIGTERM) unwinds as Ctrl-C does: the daemons and simulated workers started here stop.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-scale-") as base:
        for i, (nodes, tasks) in enumerate(sizes):
            results.append(run_size(os.path.join(base, f"size{i}"), nodes, tasks, args))
            if "failed" in results[-1]:
                break   # a larger size would fail too
    doc = {"machine": {"cpus": os.cpu_count(), "load_avg_end": round(loadavg(), 2)}, "results": results}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

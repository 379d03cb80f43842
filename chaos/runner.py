"""Run one scenario end to end on a fresh lab and return its verdicts.

How this works. `run_scenario` builds a lab with a unique name
(swarm/lab/lab.py), imports the demo image (busybox) on every host, creates a
replicated service `chaos` with one task per host and waits for it; then it
starts the observers and the client workload (chaos/workload.py), executes
the scenario's fault schedule (chaos/scenarios.py) with chaos/faults.py,
and heals whatever is still broken. From the moment of heal the clients
only read (so a lost write stays visible) and the runner measures the
service's convergence; then it stops the clients, waits until every
manager holds the same labels, checks the invariants (chaos/invariants.py),
and always runs `lab down` and looks for anything of the lab left behind.
An attack scenario's fault runs through chaos/attacks.py instead (with a
canary service beside it), the observer also samples node status, and its
outcome adds the attack invariants (chaos/attack_checks.py). A failure of
the harness itself (the lab would not build, no leader to target) is
reported as an error, never as a pass.
"""
from __future__ import annotations

import contextlib
import glob
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from chaos import attack_checks, attacks, faults
from chaos import invariants as inv
from chaos.cluster import FREEZER_ROOT, ChaosError, Cluster, alive
from chaos.scenarios import ATTACKS, Scenario, Shape
from chaos.workload import History, Observer, Workload
from swarm.lab import lab as labmod
from swarm.api.errors import SwarmError
from swarm.rpc.messages import RPCError

SERVICE = "chaos"
IMAGE = "demo:1"


@dataclass
class Options:
    nodes: int = 4
    managers: int = 3
    duration: float = 60.0
    seed: int | str = 0
    quick: bool = False
    clients: int = 3
    keys: int = 3
    read_mode: str = "log"
    memory_journal: bool = False    # UNSAFE: every scenario on managers with --unsafe-memory-journal
    say: Callable[[str], None] = lambda _: None

    @property
    def settle(self) -> float:
        """Seconds the workload keeps running after heal."""
        return 2.0 if self.quick else 5.0

    @property
    def converge_bound(self) -> float:
        return 45.0 if self.quick else 90.0

    @property
    def canary_bound(self) -> float:
        """Seconds a canary service created during an attack has for each of its steps."""
        return 30.0 if self.quick else 60.0


@dataclass
class Result:
    scenario: str
    seed: int | str
    lab: str
    expect_violation: bool = False
    schedule: list[dict] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)        # what was injected, when, on which host
    requests: dict[str, int] = field(default_factory=dict)  # ok / fail / unknown client requests
    verdicts: list[inv.Verdict] = field(default_factory=list)
    converge_seconds: float | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent building, faulting, converging...
    history: list[dict] = field(default_factory=list)       # the register operations, kept as evidence
    managers_at_end: dict[str, Any] = field(default_factory=dict)  # on a violation: Raft status and log tail
    attack: dict[str, Any] = field(default_factory=dict)    # an attack's outcome, canary and memory peaks
    error: str = ""

    def phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.phases[name] = round(now - since, 1)
        return now

    @property
    def violations(self) -> list[inv.Verdict]:
        return [v for v in self.verdicts if not v.held]

    @property
    def passed(self) -> bool:
        if self.error:
            return False
        if self.expect_violation:  # a self-test passes when the suite catches the damage it did
            return any(v.name == inv.NO_LOST_WRITE for v in self.violations)
        return not self.violations

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "seed": self.seed, "lab": self.lab, "passed": self.passed,
                "expect_violation": self.expect_violation, "schedule": self.schedule, "faults": self.faults,
                "requests": self.requests, "invariants": [v.to_json() for v in self.verdicts],
                "converge_seconds": self.converge_seconds, "seconds": round(self.seconds, 1), "phases": self.phases,
                "error": self.error, **({"history": self.history} if self.history else {}),
                **({"managers_at_end": self.managers_at_end} if self.managers_at_end else {}),
                **({"attack": self.attack} if self.attack else {})}


def result_from_json(doc: dict) -> Result:
    """A Result read back from a `--report` file (for `swarm chaos show`)."""
    r = Result(doc["scenario"], doc["seed"], doc["lab"], doc.get("expect_violation", False), doc.get("schedule", []),
               doc.get("faults", []), doc.get("requests", {}), converge_seconds=doc.get("converge_seconds"),
               seconds=doc.get("seconds", 0.0), phases=doc.get("phases", {}), error=doc.get("error", ""))
    r.attack = doc.get("attack", {})
    r.verdicts = [inv.Verdict(v["name"], v["held"], v.get("evidence", ""), v.get("details", {}))
                  for v in doc.get("invariants", [])]
    return r


def lab_name() -> str:
    """A fresh lab name whose subnet no other lab uses."""
    taken = {(labmod.load(n) or {}).get("octet") for n in labmod.lab_names()}
    for _ in range(100):
        name = "cx" + uuid.uuid4().hex[:6]
        if labmod.subnet_octet(name) not in taken and not os.path.exists(os.path.join(labmod.RUN_ROOT, name)):
            return name
    raise ChaosError("could not find a free lab subnet (too many labs?): remove some with swarm lab down")


def build_image(workdir: str) -> str:
    tar = os.path.join(workdir, "demo.tar")
    script = os.path.join(labmod.PROJECT_ROOT, "scripts", "build-demo-image.sh")
    res = subprocess.run(["bash", script, tar], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise ChaosError(f"could not build the demo image: {res.stderr.strip()}")
    return tar


def run_scenario(scenario: Scenario, opts: Options, image_tar: str) -> Result:
    name = lab_name()
    result = Result(scenario.name, opts.seed, name, scenario.expect_violation)
    started = time.monotonic()
    rec: dict[str, Any] | None = None
    workload = observer = None
    try:
        managers = [f"h{i}" for i in range(1, opts.managers + 1)]
        workers = [f"h{i}" for i in range(opts.managers + 1, opts.nodes + 1)]
        if scenario.needs_workers and not workers:
            raise ChaosError(f"{scenario.name} needs a worker: use more --nodes than --managers")
        schedule = scenario.faults(opts.seed, Shape(managers, workers, opts.quick, opts.duration))
        result.schedule = [f.to_json() for f in schedule]
        opts.say(f"[{scenario.name}] lab {name}: {opts.nodes} hosts, {opts.managers} managers")
        rec = labmod.up(name, opts.nodes, opts.managers)
        mark = result.phase("lab up", started)
        cluster = Cluster(rec)
        prepare_service(cluster, image_tar, opts)
        mark = result.phase("service", mark)
        target = cluster.node_ids[(cluster.workers or cluster.managers)[-1]]
        history = History()
        workload = Workload(cluster, target, history, f"{opts.seed}:{scenario.name}", opts.clients, opts.keys,
                            read_mode=opts.read_mode)
        observer = Observer(cluster, history, watch_nodes=scenario.attack)
        if scenario.memory_journal or opts.memory_journal:
            cluster.memory_journal = True
            for host in cluster.managers:   # one at a time: the others keep the quorum
                cluster.kill(host)
                cluster.restart(host)
            cluster.leader()
            mark = result.phase("memory journal", mark)
        if scenario.autolock:
            cluster.enable_autolock()
            mark = result.phase("autolock", mark)
        cluster.adopt_all()
        log_offsets = {h: cluster.daemon_log_size(h) for h in cluster.hosts}
        outcomes: list[dict] = []
        observer.start()
        workload.start()
        time.sleep(1.0)
        try:
            for fault in schedule:
                if fault.action in ATTACKS:
                    outcomes.append(attacks.execute(cluster, fault, history.now, result.faults, opts.say,
                                                    opts.canary_bound, f"{opts.seed}:{scenario.name}"))
                    continue
                faults.execute(cluster, fault, history.now, result.faults, opts.say, workload.reads_only.set)
        finally:
            healed = cluster.heal_everything()
            if healed:
                opts.say(f"[{scenario.name}] healed: {', '.join(healed)}")
        workload.reads_only.set()  # the registers keep what the fault phase left: a lost write stays visible
        healed_at = mark = result.phase("faults", mark)
        problems, seconds = wait_converged(cluster, len(cluster.hosts), opts.converge_bound)
        result.converge_seconds = None if seconds is None else round(seconds, 1)
        time.sleep(max(0.0, opts.settle - (time.monotonic() - healed_at)))
        workload.finish()
        observer.finish()
        result.requests = history.counts()
        ops = history.snapshot()
        finals = final_labels(cluster, target, workload.key_names(), opts.converge_bound)
        mark = result.phase("converge", mark)
        opts.say(f"[{scenario.name}] {len(result.faults)} faults, requests {result.requests}; checking")
        result.verdicts = [inv.linearizable(ops), inv.no_lost_write(ops, workload.key_names(), finals),
                           inv.one_leader_per_term(observer.observations),
                           inv.converged(problems, seconds, opts.converge_bound)]
        if scenario.attack:
            logs = {h: cluster.daemon_log_since(h, log_offsets.get(h, 0)) for h in cluster.hosts}
            for outcome in outcomes:
                result.verdicts += attack_checks.attack_verdicts(
                    scenario.name, outcome, observer.observations, observer.node_samples, observer.memory, logs,
                    opts.canary_bound)
            result.attack = {"outcomes": outcomes, "memory_peak_mib": {
                h: round(m["peak"] / attack_checks.MiB, 1) for h, m in sorted(observer.memory.items())},
                "load_peak": observer.load_peak}
        if not all(v.held for v in result.verdicts[:2]):
            result.history = [o.to_json() for o in ops]
        if result.violations:   # what each manager says of itself, before the lab (and its logs) go
            result.managers_at_end = manager_states(cluster)
        crashes = dict(observer.crashes)
        for host, pid in cluster.crashed().items():
            crashes.setdefault(host, (pid, history.now()))
        logs = {h: cluster.daemon_log_tail(h) for h in crashes}
    except (SwarmError, RPCError) as exc:
        result.error = exc.message
        crashes, logs = {}, {}
    except Exception as exc:  # a bug of the harness: reported, and the lab still goes down
        result.error = f"the harness failed: {type(exc).__name__}: {exc}"
        crashes, logs = {}, {}
    finally:
        for part in (workload, observer):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.finish()
        down_started = time.monotonic()
        leftovers = teardown(name, rec)
        result.phase("lab down", down_started)
        result.seconds = time.monotonic() - started
    if not result.error:
        silent = sorted({e["host"] for e in result.faults
                         if e["action"] == faults.FULL_DISK_CHECK and not e.get("stopped_by_itself")})
        result.verdicts.append(inv.no_crash(crashes, leftovers, logs, silent))
    elif leftovers:
        result.error += f"; after lab down {leftovers[0]} is left"
    return result


# -- preparing the lab -----------------------------------------------------------------


def prepare_service(cluster: Cluster, image_tar: str, opts: Options) -> None:
    for host in cluster.hosts:
        cluster.call(host, "image.import", {"path": image_tar, "ref": IMAGE}, timeout=60)
    first = cluster.hosts[cluster.managers[0]]
    python = cluster.rec.get("python") or "python3"
    argv = [python, "-m", "swarm", "service", "create", "--detach", "--name", SERVICE,
            "--replicas", str(len(cluster.hosts)), IMAGE, "sleep", "1000000"]
    deadline = time.monotonic() + 20
    while True:  # the image reaches the managers with the nodes' next heartbeats
        res = labmod.run(cluster.rec, first, argv, timeout=30)
        if res.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise ChaosError(f"could not create the test service: {(res.stderr or res.stdout).strip()}")
        time.sleep(0.5)
    problems, seconds = wait_converged(cluster, len(cluster.hosts), 60)
    if seconds is None:
        raise ChaosError(f"the test service did not start: {'; '.join(problems[:2])}")
    opts.say(f"service {SERVICE} runs {len(cluster.hosts)} tasks")


def container_states(cluster: Cluster) -> dict[str, dict[str, str]]:
    """host -> task ID -> the container's state as runc tells it (asked of runc, not of the daemons)."""
    from swarm.runtime.images import ImageStore
    from swarm.runtime.runc import Runtime

    out: dict[str, dict[str, str]] = {}
    for host, h in cluster.hosts.items():
        tasks = os.path.join(h["state_dir"], "tasks")
        if not os.path.isdir(tasks):
            continue
        runtime = Runtime(tasks, ImageStore(os.path.join(h["state_dir"], "images")))
        out[host] = {}
        for task_id in runtime.list():
            try:
                state = runtime.state(task_id)
                out[host][task_id] = state.status + (f": {state.error}" if state.error else "")
            except Exception as exc:  # evidence, not a reason to stop
                out[host][task_id] = f"unknown ({type(exc).__name__}: {exc})"
    return out


def running(states: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    from swarm.runtime.base import RUNNING

    return {host: [t for t, s in by_task.items() if s == RUNNING] for host, by_task in states.items()}


def wait_converged(cluster: Cluster, replicas: int, bound: float) -> tuple[list[str], float | None]:
    """(problems, seconds until converged or None if not within `bound`)."""
    started = time.monotonic()
    problems = ["the service could not be listed"]
    while time.monotonic() - started < bound:
        for host in cluster.managers:
            try:
                rows = cluster.call(host, "service.ps", {"refs": [SERVICE]}, timeout=3)
            except RPCError:
                continue
            states = container_states(cluster)
            problems = inv.slot_problems(rows, running(states), replicas, states)
            if not problems:
                return [], time.monotonic() - started
            break
        time.sleep(0.5)
    return problems, None


def final_labels(cluster: Cluster, target: str, keys: list[str], bound: float) -> dict[str, dict | None]:
    """Every manager's labels of the register node, once they all agree (or after `bound`)."""
    deadline = time.monotonic() + bound
    finals: dict[str, dict | None] = {}
    while True:
        finals = {}
        for host in cluster.managers:
            try:
                labels = cluster.call(host, "node.inspect", {"refs": [target]}, timeout=3)[0].get("labels") or {}
                finals[host] = {k: labels.get(k) for k in keys}
            except RPCError:
                finals[host] = None
        values = list(finals.values())
        if None not in values and all(v == values[0] for v in values) or time.monotonic() > deadline:
            return finals
        time.sleep(0.3)


def manager_states(cluster: Cluster) -> dict[str, Any]:
    """Each manager's Raft status (term, commit and applied index, members) and its log's last lines."""
    out: dict[str, Any] = {}
    for host in cluster.managers:
        try:
            raft = cluster.call(host, "info", timeout=3).get("raft")
        except RPCError as exc:
            raft = f"info failed: {exc.message}"
        out[host] = {"raft": raft, "log_tail": cluster.daemon_log_tail(host, 40)}
    return out


# -- teardown -------------------------------------------------------------------------------


def socket_if_names() -> list[str]:
    """The network interfaces of this process's (the machine's own) namespace."""
    return [n for _, n in socket.if_nameindex()]


def teardown(name: str, rec: dict[str, Any] | None) -> list[str]:
    """`lab down`, then whatever of the lab is still there (namespaces, mounts, processes, files)."""
    try:
        labmod.down(name)
    except SwarmError as exc:
        return [exc.message]
    rec = rec or labmod.plan(name, 0, 0)
    root = rec["state_root"]
    prefixes = tuple(rec.get("netns_prefixes", [])) + (f"{labmod.PREFIX}{name}-",)
    left = [f"namespace {n}" for n in labmod.netns_names() if n.startswith(prefixes)]
    # Links live in the lab's namespaces; one in the machine's own namespace with a lab name is a leak.
    left += [f"link {n}" for n in socket_if_names() if n.startswith(prefixes) or name in n]
    left += [f"mount {m}" for m in labmod._mounts_under(root)]
    left += [f"path {p}" for p in (root, os.path.join(labmod.RUN_ROOT, name)) if os.path.exists(p)]
    for pid in labmod._pids():
        if pid in labmod._ancestors():
            continue
        cmdline = labmod._cmdline(pid)
        with contextlib.suppress(OSError):
            proc_root = os.readlink(f"/proc/{pid}/root")
            if alive(pid) and (root + "/" in cmdline or proc_root.startswith(root + "/")):
                left.append(f"process {pid} ({cmdline.replace(chr(0), ' ').strip()[:80]})")
    left += [f"path {p}" for p in glob.glob(os.path.join(root, "*"))]
    left += [f"cgroup {p}" for p in glob.glob(os.path.join(FREEZER_ROOT, f"swarm-chaos-{name}-*"))]
    return left

"""The client workload and the observers that run while faults are injected.

How this works. The registers are labels of one worker node (key
`chaos.r<i>`), changed and read through the public control API of the
managers, over each manager's unix socket:

* write: `node.update {ref, label_add: {key: value}}`, with a value no
  other write uses (`c<client>.<seq>`), so a read names the write it saw;
* read: by default through the Raft log, as `node.update {ref}` with no
  change: it commits a compare-and-set of the node record at the version the
  manager read, so the labels it returns are the state at a point of the log
  between invoke and complete (a linearizable read). One read yields a read
  of every register. With `read_mode="local"` reads use `node.inspect`,
  which answers from the manager's local copy and is not linearizable.
* compare-and-set: a read through the log (recorded as reads), then
  `node.update {ref, label_add: {key: new}, version}` with the version that
  read returned (Docker's `update?version=N`). It applies only if the record
  has not changed since, so when it succeeds the register still held what
  the read saw: it is recorded as cas(seen -> new). A "conflict" answer
  proves nothing was written: recorded as a failed cas.

After heal the runner switches the clients to reads only, so the final
labels are those of the fault phase: a write acknowledged then and lost
cannot be hidden by a later write.

Each client is a thread with its own seeded RNG, bound to one manager and
moving to the next one when its manager's daemon is not running. An answer
is `ok`; an error that proves nothing was applied is `fail` (the daemon's
socket refused the connection, or the request was rejected as bad); every
other error (timeout, connection reset, "unavailable") is `unknown`. Times
are monotonic seconds since the workload's start.

`Observer` polls `info` of every manager (one thread per manager) and
records (time, host, term, leader) for the one-leader-per-term check, and
watches the PIDs of the daemons that should be alive, sampling each one's
resident memory (VmRSS of /proc/PID/status) and the machine's load average
as it goes. With `watch_nodes` it also lists the nodes every half second
and records each node's status (the attack scenarios' nodes-ready check).
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from chaos.attack_checks import vm_rss
from chaos.cluster import Cluster
from chaos.linearizability import CAS, FAIL, OK, READ, UNKNOWN, WRITE, Op
from swarm.rpc.messages import RPCError

KEY_PREFIX = "chaos.r"
OP_TIMEOUT = 7.0                          # above the daemon's 5 s commit timeout: its answer comes first
FAILURE_BACKOFF = 0.2                     # after a failed request, before trying the next manager
DEFINITE_FAILURES = ("bad_request", "not_found", "forbidden", "not_manager")


def classify(exc: RPCError) -> str:
    """fail if the error proves the request had no effect, else unknown."""
    if exc.code in DEFINITE_FAILURES:
        return FAIL
    if exc.code == "unavailable" and "is not running" in exc.message:  # connect() refused: nothing was sent
        return FAIL
    return UNKNOWN


class History:
    """A thread-safe list of operations with times relative to `t0`."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.ops: list[Op] = []
        self.requests = {OK: 0, FAIL: 0, UNKNOWN: 0}    # client requests (a read covers every register)
        self.lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, *ops: Op, outcome: str | None = None) -> None:
        """Record the register operations of one request (none for a read that failed)."""
        with self.lock:
            self.ops.extend(ops)
            self.requests[outcome or ops[0].outcome] += 1

    def snapshot(self) -> list[Op]:
        with self.lock:
            return list(self.ops)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.requests)


@dataclass
class Workload:
    cluster: Cluster
    target: str                 # node ID of the worker whose labels are the registers
    history: History
    seed: int | str = 0
    clients: int = 3
    keys: int = 3
    interval: float = 0.05      # mean pause between a client's operations
    read_mode: str = "log"
    stop: threading.Event = field(default_factory=threading.Event)
    reads_only: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def key_names(self) -> list[str]:
        return [f"{KEY_PREFIX}{i}" for i in range(self.keys)]

    def start(self) -> None:
        for c in range(self.clients):
            t = threading.Thread(target=self._client, args=(c,), name=f"chaos-client-{c}", daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(OP_TIMEOUT + 5)

    def _client(self, c: int) -> None:
        rng = random.Random(f"{self.seed}:client:{c}")
        managers = self.cluster.managers
        bound = c % len(managers)
        seq = 0
        while not self.stop.is_set():
            host = managers[bound]
            dice = rng.random()
            if dice < 0.35 and not self.reads_only.is_set():
                seq += 1
                ok = self._write(c, host, rng.choice(self.key_names()), f"c{c}.{seq}")
            elif dice < 0.6 and not self.reads_only.is_set():
                seq += 1
                ok = self._cas(c, host, rng.choice(self.key_names()), f"c{c}.{seq}")
            else:
                ok = self._read(c, host) is not None
            if not ok:
                bound = (bound + 1) % len(managers)
                self.stop.wait(FAILURE_BACKOFF)
            self.stop.wait(rng.uniform(0, 2 * self.interval))

    def _write(self, c: int, host: str, key: str, value: str) -> bool:
        start = self.history.now()
        try:
            self.cluster.call(host, "node.update", {"ref": self.target, "label_add": {key: value}},
                              timeout=OP_TIMEOUT)
        except RPCError as exc:
            outcome = classify(exc)
            self.history.add(Op(c, WRITE, value, start, self.history.now(), outcome, key))
            return False
        self.history.add(Op(c, WRITE, value, start, self.history.now(), OK, key))
        return True

    def _read(self, c: int, host: str) -> dict | None:
        """Read every register; the node object read, or None if the request failed."""
        start = self.history.now()
        try:
            if self.read_mode == "log":
                node = self.cluster.call(host, "node.update", {"ref": self.target}, timeout=OP_TIMEOUT)
            else:
                node = self.cluster.call(host, "node.inspect", {"refs": [self.target]}, timeout=OP_TIMEOUT)[0]
        except RPCError as exc:
            self.history.add(outcome=classify(exc))  # a read without an answer constrains nothing
            return None
        end = self.history.now()
        labels = node.get("labels") or {}
        self.history.add(*(Op(c, READ, labels.get(key), start, end, OK, key) for key in self.key_names()))
        return node

    def _cas(self, c: int, host: str, key: str, value: str) -> bool:
        node = self._read(c, host)
        if node is None:
            return False
        expected = (node.get("labels") or {}).get(key)
        start = self.history.now()
        try:
            self.cluster.call(host, "node.update", {"ref": self.target, "label_add": {key: value},
                                                    "version": node["version"]}, timeout=OP_TIMEOUT)
        except RPCError as exc:
            outcome = FAIL if exc.code == "conflict" else classify(exc)
            self.history.add(Op(c, CAS, (expected, value), start, self.history.now(), outcome, key))
            return exc.code == "conflict"       # a lost race, not a sick manager: stay
        self.history.add(Op(c, CAS, (expected, value), start, self.history.now(), OK, key))
        return True


@dataclass(frozen=True)
class Observation:
    at: float
    host: str
    term: int
    leader: str                 # hostname of the leader this manager names ("" for none)


class Observer:
    """Polls every manager's view of (term, leader) and the liveness of expected daemons."""

    def __init__(self, cluster: Cluster, history: History, period: float = 0.1, watch_nodes: bool = False) -> None:
        self.cluster = cluster
        self.history = history
        self.period = period
        self.watch_nodes = watch_nodes
        self.observations: list[Observation] = []
        self.crashes: dict[str, tuple[int, float]] = {}     # host -> (pid, when noticed)
        self.memory: dict[str, dict] = {}                   # host -> {"peak": bytes, "at": s, "samples": n}
        self.load_peak = 0.0
        self.node_samples: list[dict] = []                  # {"at": s, "nodes": hostname -> status}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for host in self.cluster.managers:
            self.threads.append(threading.Thread(target=self._poll, args=(host,), daemon=True))
        self.threads.append(threading.Thread(target=self._watch_pids, daemon=True))
        if self.watch_nodes:
            self.threads.append(threading.Thread(target=self._watch_nodes, daemon=True))
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def _poll(self, host: str) -> None:
        while not self.stop.is_set():
            try:
                info = self.cluster.call(host, "info", timeout=1.0)
            except RPCError:
                info = None
            if info and isinstance(info.get("raft"), dict):
                leader = info.get("leader") or ""
                obs = Observation(self.history.now(), host, int(info["raft"]["term"]),
                                  self.cluster.hostnames.get(leader, leader))
                with self.lock:
                    self.observations.append(obs)
            self.stop.wait(self.period)

    def _watch_pids(self) -> None:
        while not self.stop.is_set():
            for host, pid in self.cluster.crashed().items():
                if host not in self.crashes or self.crashes[host][0] != pid:
                    self.crashes[host] = (pid, self.history.now())
            self._sample_memory()
            self.stop.wait(0.2)

    def _sample_memory(self) -> None:
        with self.cluster.lock:
            expected = dict(self.cluster.expected)
        for host, pid in expected.items():
            try:
                with open(f"/proc/{pid}/status") as f:
                    rss = vm_rss(f.read())
            except OSError:
                continue
            if rss is None:
                continue
            seen = self.memory.setdefault(host, {"peak": 0, "at": 0.0, "samples": 0})
            seen["samples"] += 1
            if rss > seen["peak"]:
                seen["peak"], seen["at"] = rss, round(self.history.now(), 1)
        try:
            with open("/proc/loadavg") as f:
                self.load_peak = max(self.load_peak, float(f.read().split()[0]))
        except (OSError, ValueError):
            pass

    def _watch_nodes(self) -> None:
        while not self.stop.is_set():
            for host in self.cluster.managers:
                try:
                    rows = self.cluster.call(host, "node.ls", timeout=3)
                except RPCError:
                    continue
                sample = {"at": round(self.history.now(), 2), "nodes": {r["hostname"]: r["status"] for r in rows}}
                with self.lock:
                    self.node_samples.append(sample)
                break
            self.stop.wait(0.5)

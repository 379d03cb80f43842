"""Scenarios: a name, what it does, and a fault schedule drawn from a seeded RNG.

How this works. A scenario is pure data plus a function that turns
(random.Random, Shape) into a list of `Fault`s; nothing here touches the lab.
Every random choice (how long to wait, how long a fault lasts, which workers
or which minority of managers, which direction a one-way partition drops) is
drawn here, so the same seed gives the same schedule (`--seed` replays it).
The one choice made at run time is "the leader": whoever leads when the fault
fires (`target="leader"`). The runner executes the faults in order: wait
`wait` seconds, inject on the target, hold for `hold` seconds, heal
(restart what was killed, resume what was paused, delete the nft table).

An attack scenario (poison-worker, big-service, log-flood, frame-flood,
bad-names) has one `Fault` whose action names the attack (chaos/attacks.py
runs it for `hold` seconds, beside the workload and a canary service); its
`detail` holds every seeded choice: which poison kinds in which order, how
many replicas, which odd names, how many attacker addresses.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Callable

from chaos import payloads

KILL, PAUSE, FREEZE, PARTITION, LOSSY, KILL_ALL = "kill", "pause", "freeze", "partition", "lossy", "kill-all"
DISK_FULL = "disk-full"
POISON_WORKER, BIG_SERVICE, LOG_FLOOD, FRAME_FLOOD, BAD_NAMES = (
    "poison-worker", "big-service", "log-flood", "frame-flood", "bad-names")
ATTACKS = (POISON_WORKER, BIG_SERVICE, LOG_FLOOD, FRAME_FLOOD, BAD_NAMES)


@dataclass(frozen=True)
class Shape:
    managers: list[str]
    workers: list[str]
    quick: bool = False
    duration: float = 60.0      # rough length of the fault phase of a full run, in seconds


@dataclass(frozen=True)
class Fault:
    action: str                 # kill | pause | freeze | partition | lossy | disk-full | kill-all
    target: str                 # "leader", "all", or hostnames joined by ","
    wait: float                 # seconds before injecting
    hold: float                 # seconds before healing
    detail: dict = field(default_factory=dict)

    def describe(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.detail.items()))
        return f"{self.action} {self.target}{extra} (after {self.wait:.1f} s, for {self.hold:.1f} s)"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    schedule: Callable[[random.Random, Shape], list[Fault]]
    expect_violation: bool = False   # a self-test: passes only if an invariant fires
    needs_workers: bool = False
    memory_journal: bool = False     # run the managers with --unsafe-memory-journal
    autolock: bool = False           # the swarm's autolock on: each restarted manager is locked, then unlocked
    attack: bool = False             # one Fault naming an attack: the attack invariants are checked too

    def faults(self, seed: int | str, shape: Shape) -> list[Fault]:
        return self.schedule(random.Random(f"{seed}:{self.name}"), shape)


def _cycles(shape: Shape, quick: int, full: int, per_cycle: float) -> int:
    return quick if shape.quick else max(full, int(shape.duration / per_cycle))


def _leader_kill(rng: random.Random, shape: Shape) -> list[Fault]:
    return [Fault(KILL, "leader", rng.uniform(0.5, 2.0), rng.uniform(0.3, 2.0))
            for _ in range(_cycles(shape, 3, 10, 8.0))]


def _worker_kill(rng: random.Random, shape: Shape) -> list[Fault]:
    # Long enough down (> 3 heartbeat periods) for the leader to mark the worker down and move its tasks.
    return [Fault(KILL, rng.choice(shape.workers), rng.uniform(0.5, 2.0), rng.uniform(3.5, 6.0))
            for _ in range(_cycles(shape, 2, 5, 12.0))]


def _minority_kill(rng: random.Random, shape: Shape) -> list[Fault]:
    size = max(1, (len(shape.managers) - 1) // 2)
    return [Fault(KILL, ",".join(sorted(rng.sample(shape.managers, size))), rng.uniform(0.5, 2.0),
                  rng.uniform(1.0, 4.0)) for _ in range(_cycles(shape, 2, 5, 12.0))]


def _partition_leader(rng: random.Random, shape: Shape) -> list[Fault]:
    # Longer than the election timeout (0.3-0.6 s) many times over: a new leader must be elected.
    return [Fault(PARTITION, "leader", rng.uniform(0.5, 2.0), rng.uniform(2.5, 5.0), {"direction": "both"})
            for _ in range(_cycles(shape, 2, 4, 10.0))]


def _partition_one_way(rng: random.Random, shape: Shape) -> list[Fault]:
    return [Fault(PARTITION, "leader", rng.uniform(0.5, 2.0), rng.uniform(2.5, 5.0),
                  {"direction": rng.choice(["inbound", "outbound"])}) for _ in range(_cycles(shape, 2, 4, 10.0))]


def _pause_leader(rng: random.Random, shape: Shape) -> list[Fault]:
    return [Fault(PAUSE, "leader", rng.uniform(0.5, 2.0), rng.uniform(1.5, 3.5))
            for _ in range(_cycles(shape, 2, 5, 8.0))]


def _freeze_leader(rng: random.Random, shape: Shape) -> list[Fault]:
    return [Fault(FREEZE, "leader", rng.uniform(0.5, 2.0), rng.uniform(1.5, 3.5))
            for _ in range(_cycles(shape, 2, 5, 8.0))]


def _lossy_link(rng: random.Random, shape: Shape) -> list[Fault]:
    return [Fault(LOSSY, "leader", rng.uniform(0.5, 2.0), rng.uniform(4.0, 8.0), {"percent": rng.choice([20, 30, 40])})
            for _ in range(_cycles(shape, 1, 3, 15.0))]


def _disk_full(rng: random.Random, shape: Shape) -> list[Fault]:
    return [Fault(DISK_FULL, rng.choice(shape.managers), rng.uniform(0.5, 2.0), rng.uniform(4.0, 7.0))
            for _ in range(_cycles(shape, 1, 2, 30.0))]


def _restart_all(rng: random.Random, shape: Shape) -> list[Fault]:
    return [Fault(KILL_ALL, "all", rng.uniform(1.0, 3.0), rng.uniform(0.3, 1.5))
            for _ in range(_cycles(shape, 1, 3, 25.0))]


def _restart_all_once(rng: random.Random, shape: Shape) -> list[Fault]:
    # Long enough before the restart for many writes to be acknowledged, and then lost. Writes
    # stop just before the kill: a write after the restart would hide the loss from the final values.
    return [Fault(KILL_ALL, "all", rng.uniform(4.0, 6.0), rng.uniform(0.3, 1.0), {"stop_writes": True})]


# -- attacks: one long Fault each, every choice drawn here ----------------------------------------


def _attack_length(shape: Shape, quick: float) -> float:
    return quick if shape.quick else max(2 * quick, shape.duration)


def _canary(rng: random.Random) -> dict:
    """When the canary service is created during the attack, and how many replicas it has (then one more)."""
    return {"canary_after": round(rng.uniform(1.0, 3.0), 2), "canary_replicas": rng.randint(2, 3)}


def _poison_worker(rng: random.Random, shape: Shape) -> list[Fault]:
    kinds = sorted(payloads.POISON)
    rng.shuffle(kinds)
    return [Fault(POISON_WORKER, rng.choice(shape.workers), rng.uniform(0.5, 1.5), _attack_length(shape, 12.0),
                  {"kinds": kinds, "pause": round(rng.uniform(0.02, 0.1), 3), **_canary(rng)})]


def _big_service(rng: random.Random, shape: Shape) -> list[Fault]:
    # 400 tasks on a full run, 150-200 with --quick. At 1,000 a lab on one 2-core
    # machine converges (all running in ~80 s) but its managers hold elections: every
    # container held two processes then (a Python log shim and a foreground `runc run`; conmon now).
    # docs/chaos.md has the figures; the 1,000-replica control plane is a unit test.
    replicas = rng.choice([150, 180, 200]) if shape.quick else 400
    steps = [replicas, 0] if shape.quick else [replicas, replicas // 2, 0]
    return [Fault(BIG_SERVICE, "all", rng.uniform(0.5, 1.5), 60.0 if shape.quick else 300.0,
                  {"steps": steps, **_canary(rng)})]


def _log_flood(rng: random.Random, shape: Shape) -> list[Fault]:
    host = rng.choice(shape.workers or shape.managers)
    return [Fault(LOG_FLOOD, host, rng.uniform(0.5, 1.5), _attack_length(shape, 20.0),
                  {"follow_on": rng.choice(shape.managers), "line": rng.choice([80, 200, 1000]), **_canary(rng)})]


def _frame_flood(rng: random.Random, shape: Shape) -> list[Fault]:
    # From extra addresses on one host (not a node's own): each holds more half-open
    # connections than the server admits per address.
    host = rng.choice(shape.workers or shape.managers)
    addresses = 3 if shape.quick else 24
    return [Fault(FRAME_FLOOD, host, rng.uniform(0.5, 1.5), _attack_length(shape, 15.0),
                  {"addresses": addresses, "per_address": 20,
                   "frame_sizes": [rng.randint(2 * payloads.MiB, 4 * payloads.MiB) for _ in range(6)],
                   "garbage": rng.randint(4096, 65536), **_canary(rng)})]


def _bad_names(rng: random.Random, shape: Shape) -> list[Fault]:
    names = sorted(payloads.ODD_NAMES)
    labels = sorted(payloads.ODD_LABELS)
    if shape.quick:
        names, labels = sorted(rng.sample(names, 10)), sorted(rng.sample(labels, 4))
    rng.shuffle(names)
    return [Fault(BAD_NAMES, rng.choice(shape.managers), rng.uniform(0.5, 1.5), _attack_length(shape, 30.0),
                  {"names": names, "labels": labels, "cli": names[: 6 if shape.quick else len(names)],
                   **_canary(rng)})]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("leader-kill", "kill -9 the Raft leader's daemon under continuous writes, restart it, repeat "
             "(3 cycles with --quick, at least 10 otherwise)", _leader_kill),
    Scenario("worker-kill", "kill -9 a random worker's daemon for longer than the heartbeat grace period "
             "(its tasks move), then restart it", _worker_kill, needs_workers=True),
    Scenario("manager-minority-kill", "kill -9 a random minority of the managers at once, then restart them",
             _minority_kill),
    Scenario("partition-leader", "isolate the leader from the other managers with nftables drops in its "
             "host namespace, for several election timeouts, then heal", _partition_leader),
    Scenario("partition-one-way", "drop only inbound or only outbound traffic between the leader and the "
             "other managers, then heal", _partition_one_way),
    Scenario("pause-leader", "SIGSTOP the leader's daemon past the election timeout, then SIGCONT it "
             "(a stale leader must not commit)", _pause_leader),
    Scenario("freeze-leader", "freeze the leader's daemon with the cgroup freezer past the election timeout "
             "(no signal it could notice), then thaw it", _freeze_leader),
    Scenario("lossy-link", "drop 20-40% of the packets between the leader and the other managers "
             "(nftables numgen random), then heal", _lossy_link),
    Scenario("disk-full", "move a random manager's Raft directory onto a small tmpfs and fill it: the "
             "daemon may stop (loudly) but must not acknowledge what it did not persist; then give it its "
             "disk back", _disk_full),
    Scenario("restart-all", "kill -9 every daemon at once, then restart them all", _restart_all),
    Scenario("autolock-restart-all", "restart-all with autolock on: every restarted manager comes up locked "
             "and is unlocked with the swarm's unlock key (swarm unlock); nothing acknowledged is lost",
             _restart_all, autolock=True),
    Scenario("memory-journal-restart-all", "SELF-TEST, unsafe on purpose: restart-all on a lab whose managers "
             "keep new Raft entries in memory only (swarm daemon --unsafe-memory-journal); passes only if the "
             "lost-write invariant fires", _restart_all_once, expect_violation=True, memory_journal=True),
    Scenario(POISON_WORKER, "with a worker's own certificate, send the leader malformed tasks.status and "
             "heartbeat calls (a timestamp that is not a time, unknown states, huge strings, wrong types), "
             "again and again: each must be refused as bad_request", _poison_worker, needs_workers=True,
             attack=True),
    Scenario(BIG_SERVICE, "create a service of 400 replicas (150-200 with --quick), scale it down to 0 and "
             "remove it: it converges, its containers go, the canary is unaffected, no election storm",
             _big_service, attack=True),
    Scenario(LOG_FLOOD, "a task prints without end while `swarm service logs -f` follows it on a manager: the "
             "node stays ready, the daemons' memory and the task's log files stay bounded", _log_flood,
             attack=True),
    Scenario(FRAME_FLOOD, "without a certificate, hold many half-open TLS connections to every manager's node "
             "API, send 2-4 MiB frames and garbage: the daemons keep serving, no election storm", _frame_flood,
             attack=True),
    Scenario(BAD_NAMES, "create services and networks with odd names (unicode, '..', '-rf', 64+ characters, "
             "shell metacharacters, empty) and huge labels: refused in one sentence or harmless; DNS of a "
             "service on a shared network keeps answering", _bad_names, attack=True),
]}


def resolve(names: list[str]) -> list[Scenario]:
    """Scenario names (or "all": every scenario) -> scenarios; raises KeyError naming an unknown one."""
    out: list[Scenario] = []
    for name in names:
        picked = list(SCENARIOS.values()) if name == "all" else [SCENARIOS[name]]
        out += [s for s in picked if s not in out]
    return out

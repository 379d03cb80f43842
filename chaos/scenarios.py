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
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Callable

KILL, PAUSE, FREEZE, PARTITION, LOSSY, KILL_ALL = "kill", "pause", "freeze", "partition", "lossy", "kill-all"
DISK_FULL = "disk-full"


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
    Scenario("memory-journal-restart-all", "SELF-TEST, unsafe on purpose: restart-all on a lab whose managers "
             "keep new Raft entries in memory only (swarm daemon --unsafe-memory-journal); passes only if the "
             "lost-write invariant fires", _restart_all_once, expect_violation=True, memory_journal=True),
]}


def resolve(names: list[str]) -> list[Scenario]:
    """Scenario names (or "all": every scenario) -> scenarios; raises KeyError naming an unknown one."""
    out: list[Scenario] = []
    for name in names:
        picked = list(SCENARIOS.values()) if name == "all" else [SCENARIOS[name]]
        out += [s for s in picked if s not in out]
    return out

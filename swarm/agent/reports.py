"""Which task status reports go in the agent's next `tasks.status` call. Pure.

How this works. The manager applies one report per task and call, the latest
it is given, and only when the task state table (swarm.api.taskstate) allows
the move from the state it holds; a move the table refuses is dropped as
stale. Sending every report of a task in one call would cost the manager a
decode and an encode per report for one write, and a quick task whose reports
pile up while a call is under way (accepted, ..., running, complete) would
reach it as "complete" alone, a move from "accepted" the table refuses: the
task would stay accepted for ever. So `next_call` sends, per task, the
furthest pending report the manager can reach from the last state it was
sent (`Sent`), and keeps the task's later reports for the next call, as
SwarmKit's agent keeps only the latest pending status of a task. A task's
first pending report always goes: only the manager can tell whether it
applies. At most `limit` tasks go in one call (the manager refuses more).

A call's first report waits a little for others (`batch_delay`): 20 ms, and
longer the more of the node's tasks are on their way to running, so that a
node given a hundred tasks at once sends each task's states as they pile up,
one report per task, rather than one call per state: each report is a write
of the whole task through Raft, and at 1,000 such nodes those writes are most
of the leader's work. A node starting a few tasks is not held back.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from swarm.api import spec
from swarm.api.taskstate import can_advance

BATCH_DELAY = 0.02           # seconds a call's first report waits for others...
BATCH_DELAY_PER_TASK = 0.002  # ...per task of the node on its way to running...
MAX_BATCH_DELAY = 0.25       # ...up to this
RUNNING = spec.STATE_ORDER["running"]

Before = tuple[str, str]                          # (state, health) of a task before a report
Pending = tuple[str, spec.TaskStatus, Before]     # (task id, the report, the task's state before it)


def batch_delay(on_the_way: int) -> float:
    """Seconds a call's first report waits for more, with `on_the_way` of the node's tasks
    assigned and not yet running (20 ms up to ten such tasks, 0.2 s at a hundred)."""
    return min(MAX_BATCH_DELAY, max(BATCH_DELAY, BATCH_DELAY_PER_TASK * on_the_way))


def on_the_way(states: Iterable[str]) -> int:
    """How many of these task states are short of running (what `batch_delay` weighs)."""
    return sum(1 for state in states if spec.STATE_ORDER[state] < RUNNING)


def reachable(base: Before, status: spec.TaskStatus) -> bool:
    """Whether the manager moves a task in `base` to `status`: a move of the state table, or a
    running task's new health (the one same-state change the manager records)."""
    state, health = base
    return can_advance(state, status.state) or (status.state == state == "running" and status.health != health)


def next_call(pending: Sequence[Pending], sent: Mapping[str, Before],
              limit: int = spec.MAX_STATUS_BATCH) -> tuple[list[tuple[str, spec.TaskStatus]], list[Pending]]:
    """(the reports of the next call: one per task, in the order the tasks first appear;
    the reports kept for a later call, in their order). `pending`: reports in the order they
    were made; `sent`: task id -> what it was last sent as (else its first pending report's
    `before`)."""
    chosen: dict[str, int] = {}      # task id -> index in `pending` of the report it sends
    base: dict[str, Before] = {}
    held: set[str] = set()           # tasks whose later reports wait for the next call
    for i, (task_id, status, before) in enumerate(pending):
        if task_id in held:
            continue
        if task_id not in chosen:
            if len(chosen) >= limit:
                held.add(task_id)
                continue
            chosen[task_id] = i
            base[task_id] = sent.get(task_id, before)
        elif reachable(base[task_id], status):
            chosen[task_id] = i
        else:
            held.add(task_id)
    batch = [(task_id, pending[i][1]) for task_id, i in chosen.items()]
    rest = [p for j, p in enumerate(pending) if p[0] not in chosen or j > chosen[p[0]]]
    return batch, rest

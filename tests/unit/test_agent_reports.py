"""swarm.agent.reports: which task status reports go in the agent's next tasks.status call."""
from __future__ import annotations

import random

from swarm.agent.reports import BATCH_DELAY, MAX_BATCH_DELAY, batch_delay, next_call, reachable
from swarm.api import spec
from swarm.api.taskstate import can_advance
from swarm.manager.dispatcher import parse_status_updates

ASSIGNED = ("assigned", "")


def st(state: str, health: str = "") -> spec.TaskStatus:
    return spec.TaskStatus(state, state, health=health)


def states(batch: list[tuple[str, spec.TaskStatus]]) -> list[tuple[str, str]]:
    return [(tid, status.state) for tid, status in batch]


def test_each_task_goes_once_with_its_furthest_report_in_the_order_tasks_first_appear() -> None:
    pending = [("a", st("accepted"), ASSIGNED), ("b", st("accepted"), ASSIGNED),
               ("a", st("preparing"), ("accepted", "")), ("a", st("ready"), ("preparing", "")),
               ("b", st("preparing"), ("accepted", ""))]
    batch, rest = next_call(pending, {})
    assert states(batch) == [("a", "ready"), ("b", "preparing")]
    assert rest == []


def test_a_quick_tasks_end_waits_for_a_state_the_manager_can_end_it_from() -> None:
    # The manager holds "accepted"; a job ran and ended while a call was under way. "complete"
    # alone would be refused (accepted -> complete is no move of the table).
    made = ["preparing", "ready", "starting", "running", "complete"]
    befores = ["accepted", *made[:-1]]
    pending = [("a", st(s), (b, "")) for s, b in zip(made, befores)]
    batch, rest = next_call(pending, {"a": ("accepted", "")})
    assert states(batch) == [("a", "running")]
    assert [p[1].state for p in rest] == ["complete"]
    batch, rest = next_call(rest, {"a": ("running", "")})
    assert states(batch) == [("a", "complete")] and rest == []


def test_a_running_tasks_new_health_is_a_report_of_its_own() -> None:
    healthy = ("running", "healthy")
    assert reachable(healthy, st("running", "unhealthy"))
    assert not reachable(healthy, st("running", "healthy"))
    assert not reachable(("starting", "starting"), st("starting", "unhealthy"))   # the manager keeps no such change
    pending = [("a", st("running", "unhealthy"), healthy), ("a", st("failed", "unhealthy"), ("running", "unhealthy"))]
    batch, _ = next_call(pending, {"a": healthy})
    assert states(batch) == [("a", "failed")]


def test_a_tasks_first_report_goes_even_when_it_looks_stale() -> None:
    # Only the manager knows the task's state: a report the agent cannot place is its to judge.
    batch, rest = next_call([("a", st("running"), ("starting", ""))], {"a": ("complete", "")})
    assert states(batch) == [("a", "running")] and rest == []


def test_at_most_limit_tasks_go_in_one_call_the_others_keep_their_reports() -> None:
    pending = [(tid, st(s), ASSIGNED) for tid in "abc" for s in ("accepted",)]
    pending.append(("c", st("preparing"), ("accepted", "")))
    batch, rest = next_call(pending, {}, limit=2)
    assert states(batch) == [("a", "accepted"), ("b", "accepted")]
    assert [(p[0], p[1].state) for p in rest] == [("c", "accepted"), ("c", "preparing")]


def test_property_every_tasks_last_state_reaches_a_manager_that_applies_one_report_per_call() -> None:
    """Invariant: whatever the agent made and however the reports pile up between calls, a
    manager that applies only the latest report of a task per call, and only moves the state
    table allows (the dispatcher), ends with each task in the agent's last state. Seeded."""
    rng = random.Random(1605)
    live = ["accepted", "preparing", "ready", "starting", "running"]
    for _ in range(500):
        manager: dict[str, str] = {}
        made: dict[str, list[str]] = {}
        queue: list = []    # each task's reports in the order the agent made them
        for tid in ("a", "b", "c"):
            steps = live[:rng.randint(1, len(live))]
            end = rng.choice([None, "complete", "failed", "shutdown", "rejected"])
            if end == "complete" and steps[-1] not in ("ready", "starting", "running"):
                end = None
            if end == "rejected" and steps[-1] not in ("accepted", "preparing"):
                end = None
            made[tid] = steps + ([end] if end else [])
            manager[tid] = "assigned"
            before = "assigned"
            for state in made[tid]:
                queue.append((tid, st(state), (before, "")))
                before = state
        # The tasks' reports interleaved (each task's in its order), arriving a few at a time.
        by_task: dict[str, list] = {}
        for p in queue:
            by_task.setdefault(p[0], []).append(p)
        arrival = []
        while any(by_task.values()):
            tid = rng.choice([t for t, ps in by_task.items() if ps])
            arrival.append(by_task[tid].pop(0))
        sent: dict[str, tuple[str, str]] = {}
        pending: list = []
        while arrival or pending:
            take = rng.randint(0, 6)
            pending += arrival[:take]
            del arrival[:take]
            if not pending:
                continue
            batch, pending = next_call(pending, sent)
            wire = {"updates": [{"id": tid, "status": spec.to_dict(s)} for tid, s in batch]}
            for tid, status in parse_status_updates(wire, 0.0).items():   # the manager: latest per call
                if can_advance(manager[tid], status.state):
                    manager[tid] = status.state
            sent.update({tid: (s.state, s.health) for tid, s in batch})
        assert manager == {tid: seq[-1] for tid, seq in made.items()}


def test_a_call_waits_longer_for_more_reports_the_more_tasks_are_on_their_way() -> None:
    # A few tasks starting: 20 ms, as ever (a small service's start is not held back).
    assert batch_delay(0) == batch_delay(1) == batch_delay(10) == BATCH_DELAY
    # A node given a hundred tasks at once: long enough for a task's states to pile up.
    assert batch_delay(100) == 0.2
    assert batch_delay(50) < batch_delay(100) < batch_delay(120)
    assert batch_delay(10_000) == MAX_BATCH_DELAY

"""The task state machine, as a table.

How this works. `TRANSITIONS` maps every observed task state to the states it
may move to next; `advance` looks the move up and raises `IllegalTransition`
when the table does not have it. The rules behind the table:

* The live states (new .. running) only move forward in `spec.TASK_STATES`
  order; skipping ahead is fine (an agent may see "preparing" then "running").
* Any live state may end as failed, shutdown, orphaned (its node was lost) or
  remove (it was removed while live, e.g. its service was deleted).
* rejected (the agent refused the task) only from assigned, accepted or
  preparing: before that no agent has it, after that it has started.
* complete (exited 0) only from ready, starting or running: a container must
  have been created to exit.
* A terminal state is final, and so is every state towards itself: a report
  of the state the task is already in is not a transition (the dispatcher
  drops it as a duplicate). "remove" is a desired-state marker first; as an
  observed state it is terminal like the others.
"""
from __future__ import annotations

from swarm.api.spec import STATE_ORDER, TASK_STATES, TERMINAL_STATES

_END = frozenset({"failed", "shutdown", "orphaned", "remove"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "new":       frozenset({"pending", "assigned", "accepted", "preparing", "ready", "starting",
                            "running"}) | _END,
    "pending":   frozenset({"assigned", "accepted", "preparing", "ready", "starting", "running"}) | _END,
    "assigned":  frozenset({"accepted", "preparing", "ready", "starting", "running", "rejected"}) | _END,
    "accepted":  frozenset({"preparing", "ready", "starting", "running", "rejected"}) | _END,
    "preparing": frozenset({"ready", "starting", "running", "rejected"}) | _END,
    "ready":     frozenset({"starting", "running", "complete"}) | _END,
    "starting":  frozenset({"running", "complete"}) | _END,
    "running":   frozenset({"complete"}) | _END,
    # terminal: final
    "complete":  frozenset(),
    "shutdown":  frozenset(),
    "failed":    frozenset(),
    "rejected":  frozenset(),
    "remove":    frozenset(),
    "orphaned":  frozenset(),
}

assert set(TRANSITIONS) == set(TASK_STATES)
assert all(not TRANSITIONS[s] for s in TERMINAL_STATES)
assert all(STATE_ORDER[n] > STATE_ORDER[s] for s, ns in TRANSITIONS.items() for n in ns
           if n not in TERMINAL_STATES), "live states only move forward"


class IllegalTransition(ValueError):
    """A task state change the table does not allow (stale, duplicate or bogus report)."""

    def __init__(self, current: str, new: str):
        if current not in TRANSITIONS or new not in TRANSITIONS:
            unknown = current if current not in TRANSITIONS else new
            msg = f"unknown task state {unknown!r}"
        elif current in TERMINAL_STATES:
            msg = f"task state {current} is final (cannot become {new})"
        else:
            msg = f"task state cannot move from {current} to {new}"
        super().__init__(msg)
        self.current, self.new = current, new


def advance(current: str, new: str) -> str:
    """`new` if a task in state `current` may move to it; else raise IllegalTransition."""
    allowed = TRANSITIONS.get(current)
    if allowed is None or new not in allowed:
        raise IllegalTransition(current, new)
    return new


def can_advance(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, ())


_RUNNING_LIKE = frozenset(s for s in TASK_STATES
                          if STATE_ORDER["assigned"] <= STATE_ORDER[s] <= STATE_ORDER["running"])


def is_running_like(state: str) -> bool:
    """assigned .. running: the task holds (or is about to hold) a place on its node."""
    return state in _RUNNING_LIKE

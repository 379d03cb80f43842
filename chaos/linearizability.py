"""A linearizability checker for registers (read, write, compare-and-set).

How this works. A history is a list of operations, each with the client
that issued it, its kind, its value, the time it was invoked, the time it
completed (None if it never did) and its outcome:

* ok: it took effect between invoke and complete, and (for a read) returned
  `value`;
* fail: it certainly did not take effect; it is dropped before the search;
* unknown: it may have taken effect at any moment after invoke, or never.
  Its completion time is treated as infinite and the search may leave it out.

`check` runs the Wing-Gong search with the memoization of Lowe, Knossos and
Porcupine: the invoke and complete events are sorted by time into a linked
list; the search walks it, and at each invoke tries to linearize that
operation next (apply it to the model; if legal, remove both of its events
from the list and start again from the head). Reaching a complete event whose
operation is still in the list means that operation cannot be placed, so the
search backtracks to its last choice. A pair (set of linearized operations,
model state) already explored is never explored again, which turns the
factorial search into one bounded by the distinct configurations. The search
succeeds when every operation with a known completion time is linearized.

Equal times count as overlapping (invokes sort before completes), so a tie
never produces a violation. Registers with different keys are independent
(linearizability is local), so a multi-key history is checked per key.

Two reductions keep unknown outcomes cheap: a read with an unknown outcome
constrains nothing and is dropped; an unknown write (or CAS) whose new value
no successful read or CAS ever observed is dropped too, because placing it
can only put the register in a state that some later write must overwrite
before anything reads it.

On failure the result names the first operation that no linearization can
place (the one reached by the search path that got furthest through the
history), the values the register could hold at that point and the last
writes that led to them: a minimal explanation a person can check by hand.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
READ, WRITE, CAS = "read", "write", "cas"
OUTCOMES = (OK, FAIL, UNKNOWN)
KINDS = (READ, WRITE, CAS)
INF = float("inf")


@dataclasses.dataclass(frozen=True)
class Op:
    """One operation. `value`: what a read returned, what a write wrote, (expected, new) for a CAS."""
    client: Any
    kind: str
    value: Any
    invoke: float
    complete: float | None
    outcome: str
    key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown operation kind {self.kind!r} (use read, write or cas)")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r} (use ok, fail or unknown)")
        if self.outcome == OK and self.complete is None:
            raise ValueError("an operation that completed ok needs a completion time")
        if self.complete is not None and self.complete < self.invoke:
            raise ValueError(f"operation completes ({self.complete}) before it is invoked ({self.invoke})")
        if self.kind == CAS and not (isinstance(self.value, (tuple, list)) and len(self.value) == 2):
            raise ValueError("a cas value is (expected, new)")

    @property
    def end(self) -> float:
        """When the operation's effect is known to have happened by (infinite if never known)."""
        return self.complete if self.outcome == OK and self.complete is not None else INF

    def describe(self) -> str:
        if self.kind == READ:
            what = f"read -> {self.value!r}"
        elif self.kind == WRITE:
            what = f"write {self.value!r}"
        else:
            what = f"cas {self.value[0]!r} -> {self.value[1]!r}"
        done = "never completed" if self.complete is None else f"{self.complete:.3f}"
        return f"{what} by client {self.client} [{self.invoke:.3f}, {done}] ({self.outcome})"

    def to_json(self) -> dict:
        value = list(self.value) if self.kind == CAS else self.value
        return {"client": self.client, "kind": self.kind, "value": value, "invoke": self.invoke,
                "complete": self.complete, "outcome": self.outcome, "key": self.key}


def as_op(entry: Op | Sequence[Any]) -> Op:
    """An Op from an Op or a tuple (client, kind, value, invoke, complete, outcome[, key])."""
    if isinstance(entry, Op):
        return entry
    client, kind, value, invoke, complete, outcome, *rest = entry
    if kind == CAS:
        value = tuple(value)
    return Op(client, kind, value, invoke, complete, outcome, rest[0] if rest else "")


# -- the model -------------------------------------------------------------------------


def step(state: Any, op: Op) -> tuple[bool, Any]:
    """The register model: is `op` legal in `state`, and the state after it."""
    if op.kind == READ:
        return state == op.value, state
    if op.kind == WRITE:
        return True, op.value
    expected, new = op.value
    return (True, new) if state == expected else (False, state)


# -- the result --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Result:
    ok: bool
    key: str = ""
    op: Op | None = None                    # the first operation no linearization can place
    states: tuple = ()                      # the values the register could hold just before it
    linearized: tuple[Op, ...] = ()         # the furthest linearization found, in order
    explanation: str = ""
    operations: int = 0                     # operations searched (after dropping fail and prunable ones)
    configurations: int = 0                 # distinct (linearized set, state) pairs explored

    def to_json(self) -> dict:
        return {"ok": self.ok, "key": self.key, "op": self.op.to_json() if self.op else None,
                "states": list(self.states), "linearized": [o.to_json() for o in self.linearized[-5:]],
                "explanation": self.explanation, "operations": self.operations,
                "configurations": self.configurations}


# -- the search ---------------------------------------------------------------------------


def prune(ops: Iterable[Op]) -> list[Op]:
    """Drop what cannot constrain the search: failed operations, unknown reads, and unknown
    writes/CAS whose new value no successful read or CAS observed."""
    ops = [o for o in ops if o.outcome != FAIL and not (o.kind == READ and o.outcome == UNKNOWN)]
    observed = {_freeze(o.value) for o in ops if o.outcome == OK and o.kind == READ}
    observed |= {_freeze(o.value[0]) for o in ops if o.outcome == OK and o.kind == CAS}

    def keep(o: Op) -> bool:
        if o.outcome == OK or o.kind == READ:
            return True
        new = o.value if o.kind == WRITE else o.value[1]
        return _freeze(new) in observed

    return [o for o in ops if keep(o)]


def _freeze(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


def check(history: Iterable[Op | Sequence[Any]], init: Any = None) -> Result:
    """Check a history of one or more registers (all starting at `init`)."""
    by_key: dict[str, list[Op]] = {}
    for entry in history:
        op = as_op(entry)
        by_key.setdefault(op.key, []).append(op)
    total = configurations = 0
    for key in sorted(by_key):
        result = check_register(by_key[key], init, key)
        if not result.ok:
            return result
        total += result.operations
        configurations += result.configurations
    return Result(True, operations=total, configurations=configurations)


def check_register(history: Iterable[Op | Sequence[Any]], init: Any = None, key: str = "") -> Result:
    """Wing-Gong search with memoization over one register's history."""
    ops = prune(as_op(e) for e in history)
    n = len(ops)
    # Events: (time, 0 = invoke / 1 = complete, op index); invokes sort before completes at equal times.
    events = sorted([(o.invoke, 0, i) for i, o in enumerate(ops)] + [(o.end, 1, i) for i, o in enumerate(ops)])
    size = len(events) + 1                       # node 0 is the head
    nxt = list(range(1, size + 1))
    nxt[-1] = -1
    prv = list(range(-1, size - 1))
    kind = [0] * size
    opi = [0] * size
    match = [0] * size                           # invoke node -> its complete node
    where: dict[tuple[int, int], int] = {}
    for node, (_, is_complete, i) in enumerate(events, start=1):
        kind[node], opi[node] = is_complete, i
        where[(i, is_complete)] = node
    for i in range(n):
        match[where[(i, 0)]] = where[(i, 1)]
    required = {i for i, o in enumerate(ops) if o.end != INF}

    def lift(node: int) -> None:
        for x in (node, match[node]):
            nxt[prv[x]] = nxt[x]
            if nxt[x] != -1:
                prv[nxt[x]] = prv[x]

    def unlift(node: int) -> None:
        for x in (match[node], node):
            nxt[prv[x]] = x
            if nxt[x] != -1:
                prv[nxt[x]] = x

    state, linearized = init, 0
    seen: set[tuple[int, Any]] = {(0, _freeze(init))}
    stack: list[tuple[int, Any]] = []            # (invoke node, state before it)
    best_node, best_path, best_states = -1, (), set()
    entry = nxt[0]
    while True:
        if entry == -1 or (kind[entry] == 1 and opi[entry] not in required):
            # Only unknown operations are left, and they may never take effect.
            return Result(True, key, operations=n, configurations=len(seen))
        if kind[entry] == 0:
            op = ops[opi[entry]]
            legal, after = step(state, op)
            config = (linearized | (1 << opi[entry]), _freeze(after))
            if legal and config not in seen:
                seen.add(config)
                stack.append((entry, state))
                state, linearized = after, config[0]
                lift(entry)
                entry = nxt[0]
            else:
                entry = nxt[entry]
            continue
        # A complete event whose operation is not linearized: this path is stuck.
        if entry > best_node:
            best_node, best_path, best_states = entry, tuple(ops[opi[e]] for e, _ in stack), {_freeze(state)}
        elif entry == best_node:
            best_states.add(_freeze(state))
        if not stack:
            break
        entry, state = stack.pop()
        linearized &= ~(1 << opi[entry])
        unlift(entry)
        entry = nxt[entry]
    bad = ops[opi[best_node]]
    states = tuple(sorted(best_states, key=repr))
    return Result(False, key, bad, states, best_path, explain(bad, states, best_path, ops, key), n, len(seen))


def explain(bad: Op, states: tuple, path: Sequence[Op], ops: Sequence[Op], key: str = "") -> str:
    """One or two sentences a person can check against the history."""
    where = f"register {key!r}: " if key else ""
    could = " or ".join(repr(s) for s in states) or "nothing"
    if bad.kind == READ:
        why = f"{where}{bad.describe()} returned {bad.value!r}, but the register could only hold {could} then"
        writers = [o for o in ops if o.kind != READ and _new(o) == bad.value]
        if not writers and bad.value is not None:
            why += f"; no operation ever wrote {bad.value!r}"
        elif writers:
            later = [o for o in ops if o.kind != READ and o.outcome == OK and o.end < bad.invoke
                     and all(w.end < o.invoke for w in writers)]
            if later:
                why += (f" ({later[-1].describe()} completed after every write of {bad.value!r} and "
                        "before this read began)")
    elif bad.kind == CAS:
        why = (f"{where}{bad.describe()} succeeded, but the register could only hold {could} then, "
               f"not {bad.value[0]!r}")
    else:
        why = f"{where}{bad.describe()} cannot be placed; the register could hold {could} before it"
    last = [o for o in path if o.kind != READ][-2:]
    if last:
        why += ". Last writes linearized before it: " + "; ".join(o.describe() for o in last)
    return why + "."


def _new(op: Op) -> Any:
    return op.value if op.kind == WRITE else op.value[1]


# -- a reference for tests: brute force ------------------------------------------------------


def brute_force(history: Iterable[Op | Sequence[Any]], init: Any = None) -> bool:
    """Try every subset of the unknown operations and every order that respects real time.
    Exponential: for cross-checking `check` on histories of a handful of operations."""
    import itertools

    ops = [o for o in map(as_op, history) if o.outcome != FAIL and not (o.kind == READ and o.outcome == UNKNOWN)]
    keys = {o.key for o in ops}
    if len(keys) > 1:
        return all(brute_force([o for o in ops if o.key == k], init) for k in keys)
    sure = [o for o in ops if o.outcome == OK]
    maybe = [o for o in ops if o.outcome != OK]
    for r in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, r):
            chosen = sure + list(extra)
            for order in itertools.permutations(chosen):
                if any(order[j].end < order[i].invoke for i in range(len(order)) for j in range(i + 1, len(order))):
                    continue  # order[j] finished before order[i] began, yet comes after it
                state, legal = init, True
                for o in order:
                    legal, state = step(state, o)
                    if not legal:
                        break
                if legal:
                    return True
    return False

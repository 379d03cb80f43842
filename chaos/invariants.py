"""The invariants checked after every scenario, as pure functions of what was recorded.

How this works. The runner records a history of register operations, the
(term, leader) each manager reported, the final labels each manager holds,
the tasks and containers of the test service, crashes and leftovers; each
function here turns one of those into a `Verdict` (held, or the first
violation with its evidence). Nothing here does I/O or reads a clock.

1. linearizable: the history passes chaos.linearizability.check.
2. no-lost-write: after heal, every manager shows for each register a value
   whose write was not followed (in real time) by an acknowledged write: the
   last acknowledged value or a later one. A value nobody wrote, or one whose
   write failed, is a violation too.
3. one-leader-per-term: no two managers ever named different leaders for the
   same Raft term (a manager's status gives term and leader from one tick).
4. converged: every slot of the service has exactly one running task and one
   running container, within a bound after the last fault was healed.
5. no-crash-no-leftover: every daemon the suite did not kill stayed alive
   (except one whose disk it filled, which must stop: one that kept running
   on a full disk is a violation too), and after `lab down` nothing of the
   lab is left.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.linearizability import FAIL, INF, OK, READ, Op, check

LINEARIZABLE, NO_LOST_WRITE, ONE_LEADER, CONVERGED, NO_CRASH = (
    "linearizable", "no-lost-write", "one-leader-per-term", "converged", "no-crash-no-leftover")
NAMES = (LINEARIZABLE, NO_LOST_WRITE, ONE_LEADER, CONVERGED, NO_CRASH)


@dataclass(frozen=True)
class Verdict:
    name: str
    held: bool
    evidence: str = ""
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "held": self.held, "evidence": self.evidence, "details": self.details}


def linearizable(ops: Sequence[Op]) -> Verdict:
    result = check(ops)
    details = {"operations": result.operations, "configurations": result.configurations}
    if result.ok:
        return Verdict(LINEARIZABLE, True, f"{result.operations} register operations checked", details)
    return Verdict(LINEARIZABLE, False, result.explanation, dict(details, **result.to_json()))


def acceptable_values(ops: Iterable[Op], key: str) -> tuple[set, list[Op]]:
    """The values register `key` may finally hold, and the acknowledged writes that decide it."""
    writes = [o for o in ops if o.key == key and o.kind != READ and o.outcome != FAIL]
    acked = [o for o in writes if o.outcome == OK]
    allowed = {_new(w) for w in writes if not any(w.end < a.invoke for a in acked)}
    if not acked:
        allowed.add(None)
    return allowed, acked


def no_lost_write(ops: Sequence[Op], keys: Sequence[str], finals: Mapping[str, Mapping[str, Any] | None]) -> Verdict:
    """`finals`: host -> that manager's labels after heal (None if it could not be read)."""
    failed = {_new(o) for o in ops if o.kind != READ and o.outcome == FAIL}
    for host, labels in sorted(finals.items()):
        if labels is None:
            return Verdict(NO_LOST_WRITE, False, f"manager {host} could not be read after heal")
    for key in keys:
        allowed, acked = acceptable_values(ops, key)
        for host, labels in sorted(finals.items()):
            value = labels.get(key)
            if value in allowed:
                continue
            last = max(acked, key=lambda o: o.complete or INF, default=None)
            if value in failed:
                why = f"shows {value!r}, written by a write that failed (it must never be visible)"
            elif last is not None:
                why = (f"shows {value!r}, but the write of {_new(last)!r} was acknowledged at "
                       f"{last.complete:.3f} s (client {last.client}) and nothing later wrote {value!r}")
            else:
                why = f"shows {value!r}, a value no operation wrote"
            return Verdict(NO_LOST_WRITE, False, f"register {key!r} on manager {host} {why}",
                           {"key": key, "host": host, "value": value, "allowed": sorted(map(str, allowed)),
                            "last_acknowledged": last.to_json() if last else None})
    acked_total = sum(1 for o in ops if o.kind != READ and o.outcome == OK)
    return Verdict(NO_LOST_WRITE, True, f"{len(finals)} managers hold a latest value of all {len(keys)} "
                                        f"registers ({acked_total} acknowledged writes)")


def one_leader_per_term(observations: Iterable[Any]) -> Verdict:
    """Observations with .at, .host, .term, .leader (empty leader = none known)."""
    seen: dict[int, Any] = {}
    count = 0
    for obs in sorted(observations, key=lambda o: o.at):
        count += 1
        if not obs.leader:
            continue
        first = seen.setdefault(obs.term, obs)
        if first.leader != obs.leader:
            return Verdict(ONE_LEADER, False,
                           f"term {obs.term} had two leaders: {first.host} named {first.leader} at {first.at:.3f} s, "
                           f"{obs.host} named {obs.leader} at {obs.at:.3f} s",
                           {"term": obs.term, "first": vars(first), "second": vars(obs)})
    terms = sorted(seen)
    span = f"terms {terms[0]}-{terms[-1]}" if terms else "no term with a leader"
    return Verdict(ONE_LEADER, True, f"{count} observations, {span}, one leader each",
                   {"observations": count, "terms": len(terms)})


def slot_problems(tasks: Sequence[Mapping[str, Any]], running_containers: Mapping[str, Sequence[str]],
                  replicas: int, states: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """What keeps a replicated service from being converged (empty when it is).

    tasks: `service.ps` rows; running_containers: host -> task IDs whose container runs there;
    states (for the evidence): host -> task ID -> what the runtime says of its container."""
    problems: list[str] = []
    live = [t for t in tasks if t.get("desired_state") == "running" and t.get("state") == "running"]
    by_slot: dict[Any, list] = {}
    for t in live:
        by_slot.setdefault(t.get("slot"), []).append(t)
    slot_of = {t["id"]: t.get("slot") for t in tasks}
    for slot in range(1, replicas + 1):
        n = len(by_slot.get(slot, []))
        if n != 1:
            problems.append(f"slot {slot} has {n} running tasks{_slot_evidence(tasks, slot)}")
    extra = sorted(s for s in by_slot if not (isinstance(s, int) and 1 <= s <= replicas))
    problems += [f"slot {s} (beyond {replicas} replicas) has a running task" for s in extra]
    containers: dict[Any, list[str]] = {}
    for host, task_ids in sorted(running_containers.items()):
        for task_id in task_ids:
            if task_id in slot_of:
                containers.setdefault(slot_of[task_id], []).append(f"{task_id[:10]} on {host}")
    for slot, where in sorted(containers.items(), key=lambda kv: str(kv[0])):
        if len(where) > 1:
            problems.append(f"slot {slot} runs {len(where)} containers: {', '.join(where)}")
    for slot in range(1, replicas + 1):
        if slot not in containers:
            why = ""
            for t in by_slot.get(slot, []):
                said = (states or {}).get(t.get("node", ""), {}).get(t["id"], "no container there")
                why = f" (its task {t['id'][:10]} runs on {t.get('node')} per the managers; the runtime: {said})"
            problems.append(f"slot {slot} has no running container{why}")
    return problems


def _slot_evidence(tasks: Sequence[Mapping[str, Any]], slot: int) -> str:
    """The slot's tasks as the managers list them (the last few), for a violation's evidence."""
    rows = [t for t in tasks if t.get("slot") == slot][-4:]
    if not rows:
        return ""
    said = [f"{str(t.get('id'))[:10]} on {t.get('node')}: desired {t.get('desired_state')}, state {t.get('state')}"
            + (f", error {t.get('error')}" if t.get("error") else "") for t in rows]
    return f" ({'; '.join(said)})"


def converged(problems: Sequence[str], seconds: float | None, bound: float) -> Verdict:
    if seconds is not None:
        return Verdict(CONVERGED, True, f"every slot ran exactly once {seconds:.1f} s after heal",
                       {"seconds": seconds})
    return Verdict(CONVERGED, False, f"not converged {bound:g} s after heal: " + "; ".join(problems[:3]),
                   {"problems": list(problems)})


def no_crash(crashes: Mapping[str, Any], leftovers: Sequence[str], logs: Mapping[str, list[str]],
             kept_running_on_full_disk: Sequence[str] = ()) -> Verdict:
    if kept_running_on_full_disk:
        host = kept_running_on_full_disk[0]
        return Verdict(NO_CRASH, False, f"the daemon of {host} kept running on a full disk: it must stop, "
                                        "saying why", {"kept_running_on_full_disk": list(kept_running_on_full_disk)})
    if crashes:
        host, (pid, at) = sorted(crashes.items())[0]
        tail = " | ".join(logs.get(host, [])[-2:])
        return Verdict(NO_CRASH, False, f"the daemon of {host} (pid {pid}) died at {at:.1f} s without being "
                                        f"killed by the suite" + (f"; its log ends: {tail}" if tail else ""),
                       {"crashes": {h: list(v) for h, v in crashes.items()}, "logs": dict(logs)})
    if leftovers:
        return Verdict(NO_CRASH, False, f"after lab down {len(leftovers)} thing(s) are left: {leftovers[0]}",
                       {"leftovers": list(leftovers)})
    return Verdict(NO_CRASH, True, "no daemon died unasked; nothing left after lab down")


def _new(op: Op) -> Any:
    return op.value if op.kind != "cas" else op.value[1]

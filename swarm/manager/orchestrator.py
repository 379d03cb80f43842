"""Reconcile a service's desired state to tasks. Pure: returns a plan.

How this works. A task is *live* when its desired state is running and its
observed state is not terminal; it is *current* when its spec version is the
service's (a job: its iteration), *old* otherwise (`!=`, not `<`: a rollback
returns to a lower version). Replicated services work on slots: each slot is
first classified from its own tasks as

  live      one live task (extra live tasks in the slot are shut down), or
            the pair a start-first update makes: an old running task and
            its current successor that is not running yet (or just got
            there: the update supervisor then retires the old one);
  replace   its task is gone without having ended on its own: its node is
            down, removed or draining (shut it down), or it was orphaned or
            shut down under it. A replacement comes at once, same attempt;
  restart   its newest task ended on its own (complete, failed, rejected)
            and the restart policy allows another attempt: a replacement
            with attempt + 1 that may not start before now + delay;
  finished  its newest task ended and the policy says no more;

and a slot whose newest task was shut down on purpose is free. If more slots
are occupied than `replicas`, the cheapest go first (finished, restart,
replace, not yet running, running; highest slot first); if fewer, the lowest
free slot numbers get fresh tasks. A finished slot of an old version gets a
fresh task (an update reruns one-shot tasks). Then the update supervisor
(`swarm.manager.updater`, pure) decides which live slots with an old task are
replaced now (parallelism, delay, order, monitor, failure action) and where
the update stands: stop-first shuts the old task down and creates its
successor in the same slot in the same round, and the dispatcher and agent
do not start a slot's new task until the old one is terminal (see
`stopping_slots`); start-first creates the successor next to the running old
task and shuts the old one down once the successor runs. When the update's
UpdateStatus changes, or it rolls the service back to its previous spec, the
plan carries the service's new value (`OrchestratorPlan.service`). Global
services do the same per node, with the node fixed, for each node that is
ready, not draining and matching the constraints (new tasks only on active
nodes). Finally each slot (global: node) keeps its newest terminal tasks, as
many as the cluster's task history limit (5 unless `swarm update
--task-history-limit` says otherwise); older ones are deleted. A task that
never reached a node is shut down outright (its state set to shutdown): no
agent will.

Jobs (SwarmKit's jobs orchestrator) run to completion instead. A replicated
job has slots 1..replicas, each wanting one completed task, and keeps at most
max_concurrent slots active (live, or being restarted or replaced); a global
job wants one completed task per eligible node. A completed task is never
restarted (the condition "any" counts as "on-failure"), a failed one is per
the restart policy. Only the tasks of the service's current `job_iteration`
count: an update bumps it, so the job runs again, and the live tasks of an
earlier iteration are stopped. Jobs have no rolling update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from swarm.manager import updater
from swarm.manager.scheduler import ConstraintError, NodeInfo, node_matches, placement_rules
from swarm.api.spec import replace as replaced, JOB_MODES, STATE_ORDER, RestartPolicy, Service, Task, TaskStatus, is_terminal

HISTORY_LIMIT = 5
ENDED = frozenset({"complete", "failed", "rejected"})   # ended on its own: the restart policy decides
UNCLAIMED = frozenset({"new", "pending"})                 # no agent has the task yet


@dataclass(frozen=True)
class OrchestratorPlan:
    create: list[Task]
    update: list[Task]      # full new values of tasks whose desired state (or unclaimed status) changes
    delete: list[str]       # task ids to remove from the store
    service: Service | None = None   # the service's new value (its UpdateStatus, or a rollback's spec)


def is_live(t: Task) -> bool:
    return t.desired_state == "running" and not is_terminal(t.status.state)


def node_trouble(t: Task, nodes: dict[str, NodeInfo]) -> str | None:
    """Why a task cannot stay on its node: "lost" (down or removed), "drain", or None."""
    if not t.node_id:
        return None
    node = nodes.get(t.node_id)
    if node is None or node.status != "ready":
        return "lost"
    return "drain" if node.availability == "drain" else None


def stopping_slots(tasks: list[Task], nodes: list[NodeInfo]) -> set[tuple[str, int | str]]:
    """(service id, slot or node id) pairs whose old task is still stopping on a reachable node.

    The dispatcher must not start a new task in such a slot. A task on a down or removed
    node does not hold its slot: nobody can confirm it stopped, and it is replaced at once.
    """
    by_id = {n.id: n for n in nodes}
    return {(t.service_id, t.slot or t.node_id) for t in tasks
            if t.desired_state != "running" and not is_terminal(t.status.state)
            and node_trouble(t, by_id) != "lost"}


def _age(t: Task) -> tuple:
    return (t.created_at, t.attempt, t.status.timestamp, t.id)


def _preference(service: Service, t: Task) -> tuple:
    return (_current(service, t), STATE_ORDER.get(t.status.state, 0), t.created_at, t.id)


def _current(service: Service, t: Task) -> bool:
    """Does `t` belong to what the service asks for now: its spec version (a job: its iteration)?"""
    if service.spec.mode in JOB_MODES:
        return t.job_iteration == service.job_iteration
    return t.spec_version == service.spec_version


def _restart_at(policy: RestartPolicy, last: Task, slot_tasks: list[Task], service: Service,
                now: float) -> float | None:
    """When the slot of `last` (which ended on its own) may run again, or None: never.

    A job's task that completed is never run again, whatever the condition: SwarmKit
    treats "any" as "on-failure" for jobs (restarting a finished job makes no sense)."""
    if policy.condition == "none":
        return None
    failed = last.status.state != "complete" or last.status.exit_code not in (None, 0)
    if (policy.condition == "on-failure" or service.spec.mode in JOB_MODES) and not failed:
        return None
    if policy.max_attempts > 0:
        if policy.window > 0:
            # every task of this spec version that ended inside the window was (or asks for) a restart
            restarts = sum(1 for t in slot_tasks if t.status.state in ENDED
                           and _current(service, t) and t.status.timestamp >= now - policy.window)
        else:
            restarts = last.attempt + 1
        if restarts > policy.max_attempts:
            return None
    return now + policy.delay


class _Plan:
    def __init__(self, service: Service | None, now: float, new_id: Callable[[], str]):
        self.service, self.now, self.new_id = service, now, new_id
        self.version = service.spec_version if service else 0
        self.create: list[Task] = []
        self.update: dict[str, Task] = {}
        self.service_update: Service | None = None

    def shutdown(self, t: Task, why: str) -> None:
        t = self.update.get(t.id, t)
        if t.desired_state in ("shutdown", "remove"):
            return
        new = replaced(t, desired_state="shutdown")
        if t.status.state in UNCLAIMED:
            new = replaced(new, status=TaskStatus("shutdown", why, timestamp=self.now))
        self.update[t.id] = new

    def new_task(self, slot: int, node_id: str = "", attempt: int = 0, not_before: float = 0.0) -> Task:
        s = self.service
        assert s is not None
        t = Task(id=self.new_id(), service_id=s.id, service_name=s.spec.name, slot=slot, node_id=node_id,
                 desired_state="running", spec=s.spec.container, spec_version=s.spec_version,
                 status=TaskStatus("new", "created", timestamp=self.now), created_at=self.now,
                 attempt=attempt, not_before=not_before,
                 job_iteration=s.job_iteration if s.spec.mode in JOB_MODES else 0,
                 service_labels=dict(s.spec.labels))
        self.create.append(t)
        return t


@dataclass
class _Slot:
    kind: str               # live | replace | restart | finished
    task: Task              # the live task (of a pair: the current one), or the newest task of the slot
    key: int | str          # slot number, or node id (global)
    not_before: float = 0.0
    old: Task | None = None  # a start-first pair's old running task, live next to `task`


def reconcile(service: Service | None, tasks: list[Task], nodes: list[NodeInfo], now: float,
              new_id: Callable[[], str], history_limit: int = HISTORY_LIMIT) -> OrchestratorPlan:
    """The changes that bring `tasks` (all tasks of the service) to what `service` asks for.

    `service` None means the service was deleted: its tasks are shut down, then deleted.
    """
    by_node = {n.id: n for n in nodes}
    plan = _Plan(service, now, new_id)
    if service is None:
        delete = []
        for t in tasks:
            if is_terminal(t.status.state) or (t.node_id and t.node_id not in by_node):
                delete.append(t.id)
            else:
                plan.shutdown(t, "service removed")
        return OrchestratorPlan([], list(plan.update.values()), delete)

    tasks = [t for t in tasks if t.service_id == service.id]
    if service.spec.mode in ("global", "global-job"):
        try:
            constraints = placement_rules(service.spec.constraints, service.spec.platforms)
        except ConstraintError:
            return OrchestratorPlan([], [], [])   # validated at create time; never act on a bad spec
        if service.spec.mode == "global":
            _global(service, tasks, by_node, constraints, plan)
        else:
            _global_job(service, tasks, by_node, constraints, plan)
    elif service.spec.mode == "replicated-job":
        _replicated_job(service, tasks, by_node, plan)
    else:
        _replicated(service, tasks, by_node, plan)
    deletes = _trim_history(service, tasks, by_node, plan, history_limit)
    return OrchestratorPlan(plan.create, list(plan.update.values()), deletes, plan.service_update)


def _pair_of(service: Service, keep: Task, live: list[Task]) -> Task | None:
    """The old running task a start-first update keeps next to `keep` (current), if any."""
    if not _current(service, keep):
        return None
    old = [t for t in live if not _current(service, t) and t.status.state == "running"]
    return max(old, key=lambda t: _preference(service, t)) if old else None


def _trouble_text(trouble: str) -> str:
    return "node is down" if trouble == "lost" else "node is draining"


def _classify(service: Service, key: int | str, ts: list[Task], nodes: dict[str, NodeInfo],
              plan: _Plan, pairs: bool = False) -> _Slot | None:
    """One slot's (global: one node's) state, shutting down what cannot stay; None if free.
    `pairs`: a start-first update's pair may stay (not for jobs)."""
    if len(ts) == 1 and is_live(ts[0]) and not node_trouble(ts[0], nodes):
        return _Slot("live", ts[0], key)   # most slots, every round: one task, running where it is
    live = [t for t in ts if is_live(t)]
    if live:
        keep = max(live, key=lambda t: _preference(service, t))
        old = _pair_of(service, keep, live) if pairs else None
        for t in live:
            if t is not keep and t is not old:
                plan.shutdown(t, "duplicate task in slot")
        if old is not None and (trouble := node_trouble(old, nodes)):
            plan.shutdown(old, _trouble_text(trouble))     # its successor carries the slot now
            old = None
        trouble = node_trouble(keep, nodes)
        if trouble:
            plan.shutdown(keep, _trouble_text(trouble))
            if old is not None:       # the old task still serves: the update replaces it again
                return _Slot("live", old, key)
            return _Slot("replace", keep, key)
        return _Slot("live", keep, key, old=old)
    last = max(ts, key=_age)
    if last.desired_state != "running":
        return None
    if last.status.state not in ENDED:
        return _Slot("replace", last, key)        # orphaned or shut down under us: not its own doing
    at = _restart_at(service.spec.restart, last, ts, service, plan.now)
    return _Slot("finished", last, key) if at is None else _Slot("restart", last, key, at)


def _fill(slot: _Slot, plan: _Plan, node_id: str = "") -> None:
    """Create the task an occupied slot needs, if any."""
    slot_no = slot.key if isinstance(slot.key, int) else 0
    if slot.kind == "replace":
        plan.new_task(slot_no, node_id, slot.task.attempt)
    elif slot.kind == "restart":
        plan.new_task(slot_no, node_id, slot.task.attempt + 1, slot.not_before)
    elif slot.kind == "finished" and slot.task.spec_version != plan.version:
        plan.new_task(slot_no, node_id)


_VICTIM_ORDER = {"finished": 0, "restart": 1, "replace": 2}


def _victim_key(slot: _Slot) -> tuple:
    rank = _VICTIM_ORDER.get(slot.kind, 3 if slot.task.status.state != "running" else 4)
    return (rank, -int(slot.key))


def _replicated(service: Service, tasks: list[Task], nodes: dict[str, NodeInfo], plan: _Plan) -> None:
    by_slot: dict[int, list[Task]] = {}
    for t in tasks:
        if t.slot > 0:
            by_slot.setdefault(t.slot, []).append(t)
        elif is_live(t):
            plan.shutdown(t, "not a replicated task")   # left over from a mode change
    occupied = {}
    for slot_no in sorted(by_slot):
        slot = _classify(service, slot_no, by_slot[slot_no], nodes, plan, pairs=True)
        if slot is not None:
            occupied[slot_no] = slot
    replicas = max(service.spec.replicas, 0)
    if len(occupied) > replicas:
        for slot in sorted(occupied.values(), key=_victim_key)[:len(occupied) - replicas]:
            plan.shutdown(slot.task, "scaled down")
            if slot.old is not None:
                plan.shutdown(slot.old, "scaled down")
            del occupied[int(slot.key)]
    slot_no = 1
    for _ in range(replicas - len(occupied)):
        while slot_no in occupied:
            slot_no += 1
        plan.new_task(slot_no)
        slot_no += 1
    for slot in occupied.values():
        _fill(slot, plan)
    _update(service, tasks, occupied.values(), plan, lambda key: True)


def _global(service: Service, tasks: list[Task], nodes: dict[str, NodeInfo], constraints: tuple,
            plan: _Plan) -> None:
    def may_keep(node: NodeInfo | None) -> bool:
        return (node is not None and node.status == "ready" and node.availability != "drain"
                and node_matches(constraints, node))

    by_node: dict[str, list[Task]] = {}
    for t in tasks:
        by_node.setdefault(t.node_id, []).append(t)
    occupied: list[_Slot] = []
    for node_id, ts in by_node.items():
        node = nodes.get(node_id)
        if not may_keep(node):
            for t in ts:
                if is_live(t):
                    plan.shutdown(t, "node is not eligible for this global service")
            continue
        slot = _classify(service, node_id, ts, nodes, plan, pairs=True)
        if slot is None:
            continue
        occupied.append(slot)
        if node.availability == "active":  # type: ignore[union-attr]
            _fill(slot, plan, node_id)
    taken = {s.key for s in occupied}
    for node_id in sorted(nodes):
        node = nodes[node_id]
        if node_id not in taken and may_keep(node) and node.availability == "active":
            plan.new_task(0, node_id)
    _update(service, tasks, occupied, plan, lambda key: nodes[str(key)].availability == "active")


def _this_iteration(service: Service, tasks: list[Task], plan: _Plan) -> list[Task]:
    """The job's tasks of its current iteration; a live task of an earlier one is stopped
    (the job was updated: SwarmKit removes the old iteration's tasks)."""
    mine = []
    for t in tasks:
        if t.job_iteration == service.job_iteration:
            mine.append(t)
        elif is_live(t):
            plan.shutdown(t, "the job was updated")
    return mine


def _replicated_job(service: Service, tasks: list[Task], nodes: dict[str, NodeInfo], plan: _Plan) -> None:
    """SwarmKit's replicated job: slots 1..replicas each want one completed task, at most
    max_concurrent slots are active at once (running, waiting to restart, or replaced).

    A slot whose task completed is done for good; one whose task failed is restarted per
    the restart policy and keeps its place among the active ones; one whose policy gives
    up stays failed (the job cannot complete) and frees its place."""
    total = max(service.spec.replicas, 0)
    limit = service.spec.max_concurrent if service.spec.max_concurrent > 0 else total
    by_slot: dict[int, list[Task]] = {}
    for t in _this_iteration(service, tasks, plan):
        if t.slot > 0:
            by_slot.setdefault(t.slot, []).append(t)
        elif is_live(t):
            plan.shutdown(t, "not a replicated task")
    occupied: set[int] = set()
    active = 0
    for slot_no in sorted(by_slot):
        slot = _classify(service, slot_no, by_slot[slot_no], nodes, plan)
        if slot is None:
            continue
        if slot_no > total:   # fewer completions wanted than slots used
            if slot.kind == "live":
                plan.shutdown(slot.task, "scaled down")
            continue
        occupied.add(slot_no)
        if slot.kind != "finished":
            active += 1
            _fill(slot, plan)
    free = [n for n in range(1, total + 1) if n not in occupied]
    for slot_no in free[:max(limit - active, 0)]:
        plan.new_task(slot_no)


def _global_job(service: Service, tasks: list[Task], nodes: dict[str, NodeInfo], constraints: tuple,
                plan: _Plan) -> None:
    """SwarmKit's global job: one task to completion on each node that is ready, active
    and matches the constraints (a node that joins later runs it too); a failed task is
    restarted on its node per the restart policy."""
    def eligible(node: NodeInfo | None) -> bool:
        return (node is not None and node.status == "ready" and node.availability != "drain"
                and node_matches(constraints, node))

    by_node: dict[str, list[Task]] = {}
    for t in _this_iteration(service, tasks, plan):
        by_node.setdefault(t.node_id, []).append(t)
    taken = set()
    for node_id, ts in by_node.items():
        node = nodes.get(node_id)
        if not eligible(node):
            for t in ts:
                if is_live(t):
                    plan.shutdown(t, "node is not eligible for this global job")
            continue
        slot = _classify(service, node_id, ts, nodes, plan)
        if slot is None:
            continue
        taken.add(node_id)
        if slot.kind in ("replace", "restart") and node.availability == "active":  # type: ignore[union-attr]
            _fill(slot, plan, node_id)
    for node_id in sorted(nodes):
        if node_id not in taken and eligible(nodes[node_id]) and nodes[node_id].availability == "active":
            plan.new_task(0, node_id)


def _update(service: Service, tasks: list[Task], slots: Iterable[_Slot], plan: _Plan,
            may_start: Callable[[int | str], bool]) -> None:
    """Hand the live slots to the update supervisor and carry out its decision.
    `may_start(key)`: may a successor be created there (global: only on an active node)."""
    views = []
    for slot in slots:
        if slot.kind != "live" or slot.task.id in plan.update:
            continue
        if slot.old is not None:
            views.append(updater.SlotView(slot.key, slot.old, slot.task, may_start(slot.key)))
        elif _current(service, slot.task):
            views.append(updater.SlotView(slot.key, None, slot.task, may_start(slot.key)))
        else:
            views.append(updater.SlotView(slot.key, slot.task, None, may_start(slot.key)))
    decision = updater.decide(service, views, tasks, plan.now)
    by_key = {v.key: v for v in views}
    for key in decision.retire + decision.stop_first:
        old = by_key[key].old
        assert old is not None
        plan.shutdown(old, "replaced by a new version of the service")
    for key in decision.stop_first + decision.start_first:
        old = by_key[key].old
        assert old is not None
        plan.new_task(old.slot, "" if old.slot else old.node_id)
    plan.service_update = updater.service_after(service, decision, plan.now)


def _trim_history(service: Service, tasks: list[Task], nodes: dict[str, NodeInfo], plan: _Plan,
                  limit: int = HISTORY_LIMIT) -> list[str]:
    """Delete terminal tasks so that a slot (global: a node) keeps at most `limit` tasks, its live
    ones included, newest first (SwarmKit's task reaper); the limit is the cluster's task history
    retention limit (swarm update --task-history-limit), negative: keep all.

    Tasks that still count in an active restart window stay, so the window sees them; a
    task shut down on a removed node is deleted (no agent will report it stopped).
    """
    policy = service.spec.restart
    counting = policy.max_attempts > 0 and policy.window > 0
    history: dict[int | str, list[Task]] = {}
    live: dict[int | str, int] = {}
    delete = []
    for t in tasks:
        if t.id in plan.update:
            if not is_terminal(t.status.state):
                live[t.slot or t.node_id] = live.get(t.slot or t.node_id, 0) + 1
            continue
        if is_terminal(t.status.state):
            history.setdefault(t.slot or t.node_id, []).append(t)
            continue
        live[t.slot or t.node_id] = live.get(t.slot or t.node_id, 0) + 1
        if t.desired_state != "running" and t.node_id and t.node_id not in nodes:
            delete.append(t.id)
    for key, ts in history.items():
        ts.sort(key=_age, reverse=True)
        keep = max(0, limit - live.get(key, 0))
        for t in ts[keep:] if limit >= 0 else ():
            if counting and t.status.state in ENDED and _current(service, t) \
                    and t.status.timestamp >= plan.now - policy.window:
                continue
            delete.append(t.id)
    return delete

"""The leader's reconcile round as a pure function: a snapshot in, a plan out.

How this works. `plan_round(snapshot, now, rng, new_id)` decides everything
one round of the leader does, reading nothing but its arguments (the clock is
`now`, placement ties are broken by `rng`, new task ids come from `new_id`),
so the same snapshot, clock and seed give the same plan and a bad decision
can be replayed. In order:

1. endpoints: services that lack VIPs or published ports get them from an
   allocator rebuilt from the snapshot (`allocation_state`);
2. orphans: a non-terminal task on a node that is down or gone is marked
   orphaned and no longer wanted, so its slot is replaced at once;
3. per service, the orchestrator's plan (create, update, delete, and the
   service's new value when its update supervisor changes the UpdateStatus or
   rolls it back: merged with step 1's endpoint update of the same service,
   which it was decided from);
4. placement: tasks waiting for a node (not those of a slot whose old task is
   still stopping: stop-first) go to the scheduler, and each placed task
   gets its network addresses; a task left waiting gets the reason;
5. each ready node gets an address on the ingress network if any service
   publishes ports.

Every service is isolated: one whose allocation or plan fails gets the reason
(in `RoundPlan.problems` and on its waiting tasks) and the round goes on for
all the others. The plan holds full new values; the reconciler turns them
into compare-and-set writes against the versions in the snapshot.

When rounds are needed. A round is a pass over every task, so the reconciler
runs one only when something it decides from has changed
(`task_change_matters`: a task's status moving on between assigned and
running, as the agents report it, changes nothing a round decides unless the
task's service is being updated) or when the clock alone can change the plan
(`RoundPlan.clock_driven`: a restart delay or an update's delay and monitor
running out, a task still waiting for a node or an address, a service whose
allocation failed).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Callable

from overlay.errors import OverlayError
from swarm.api import records, spec
from swarm.manager.allocator import allocate_service, allocate_task, allocation_state
from swarm.manager.orchestrator import HISTORY_LIMIT, UNCLAIMED, reconcile, stopping_slots
from swarm.manager.updater import IN_PROGRESS
from swarm.manager.scheduler import NodeInfo, SchedulePlan, schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What a round reads from the store, once: typed records with their versions."""
    services: dict[str, tuple[spec.Service, int]] = field(default_factory=dict)
    tasks: dict[str, tuple[spec.Task, int]] = field(default_factory=dict)
    nodes: dict[str, tuple[dict, int]] = field(default_factory=dict)       # node records as the manager keeps them
    networks: dict[str, dict] = field(default_factory=dict)                # checked by `network_record`
    history_limit: int = HISTORY_LIMIT         # the cluster's task history retention limit


@dataclass(frozen=True)
class RoundPlan:
    """What a round changes. Values are full new records, in the order they are written."""
    services: tuple[spec.Service, ...] = ()     # endpoint updates (VIPs, published ports), UpdateStatus, rollbacks
    create: tuple[spec.Task, ...] = ()
    update: tuple[spec.Task, ...] = ()          # existing tasks whose value changes
    delete: tuple[str, ...] = ()                # task ids
    ingress: dict[str, str] = field(default_factory=dict)     # node id -> its new ingress address
    problems: dict[str, str] = field(default_factory=dict)    # service id -> why it was not reconciled
    warnings: dict[str, str] = field(default_factory=dict)    # key -> a message to log once
    # Whether a later round may decide differently with nothing but the clock moving on.
    clock_driven: bool = False
    # Services being updated or rolled back: any change of their tasks' status matters to them.
    updating: frozenset[str] = frozenset()

    def empty(self) -> bool:
        return not (self.services or self.create or self.update or self.delete or self.ingress)


def network_record(data: dict) -> dict:
    """A network record as decision code needs it (ValueError names a missing field)."""
    for key, kind in (("id", str), ("name", str), ("subnet", str), ("gateway", str), ("vni", int)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"network record lacks a valid {key}")
    return data


def ingress_id(networks: dict[str, dict]) -> str:
    return next((n["id"] for n in networks.values() if n.get("ingress")), "")


def node_infos(nodes: dict[str, dict]) -> list[NodeInfo]:
    """The scheduler's view of the nodes; a node record that does not fit it is left out (logged once)."""
    out = []
    for n in nodes.values():
        try:
            res = n.get("resources") or {}
            platform = n.get("platform") or {}   # checked by model.node_facts; absent before the first beat
            out.append(NodeInfo(id=n["id"], hostname=n["hostname"], role=n["role"], status=n["status"],
                                availability=n["availability"], labels=dict(n.get("labels", {})),
                                resources=spec.Resources(_count(res.get("nano_cpus", 0)),
                                                         _count(res.get("memory_bytes", 0))),
                                os=str(platform.get("os", "")), arch=str(platform.get("architecture", ""))))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            records.warn_once(f"node {n.get('id')!r}", f"node record ignored by the scheduler: {exc!r}")
    return out


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a resource amount")
    return value


def task_change_matters(old: spec.Task | None, new: spec.Task | None, updating: frozenset[str]) -> bool:
    """Whether a task going from `old` to `new` (None: absent) can change what a round decides.

    Not when its status only moves on between the states an agent reports on its way to
    running (assigned, accepted, preparing, starting, running: `running_at` is set on the
    way), unless its service is being updated (the update supervisor waits for running
    tasks). Anything else matters: a task created or deleted, waiting for a node, ended,
    or changed in any other field."""
    if old is None or new is None or new.service_id in updating:
        return True
    before, after = old.status.state, new.status.state
    if before in UNCLAIMED or after in UNCLAIMED or spec.is_terminal(before) or spec.is_terminal(after):
        return True
    return spec.replace(new, status=old.status, running_at=old.running_at) != old


def _clock_driven(services: dict[str, spec.Service], tasks: dict[str, spec.Task], problems: dict[str, str],
                  warnings: dict[str, str], updating: frozenset[str]) -> bool:
    """Whether the next round may decide differently with only the clock moving on: a task
    still waits (for its restart delay, a node, an address, its slot's old task), an update's
    delay or monitor is running, a restart window may let a finished slot run again, or
    something failed that a later round retries."""
    if problems or warnings or updating:
        return True
    if any(s.spec.restart.window > 0 and s.spec.restart.max_attempts > 0 for s in services.values()):
        return True
    return any(t.desired_state == "running" and t.status.state in UNCLAIMED for t in tasks.values())


def _node_of(task: spec.Task) -> str:
    return task.node_id


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def plan_round(snapshot: Snapshot, now: float, rng: random.Random, new_id: Callable[[], str]) -> RoundPlan:
    """Everything one reconcile round changes, decided from `snapshot` alone (see the module's doc)."""
    services = {k: s for k, (s, _) in snapshot.services.items()}
    tasks = {k: t for k, (t, _) in snapshot.tasks.items()}
    nodes = {k: n for k, (n, _) in snapshot.nodes.items()}
    networks = snapshot.networks
    infos = node_infos(nodes)
    problems: dict[str, str] = {}
    warnings: dict[str, str] = {}

    # 1. Endpoints first: VIPs and published ports for services that lack them.
    alloc = allocation_state(networks, services, list(tasks.values()), nodes, now)
    service_updates: dict[str, spec.Service] = {}     # id -> new value, in the order first changed
    for sid, service in sorted(services.items(), key=lambda kv: (kv[1].created_at, kv[0])):
        try:
            updated = allocate_service(service, networks, alloc)
        except (OverlayError, ValueError, KeyError) as exc:
            problems[sid] = f"cannot allocate the service's endpoints: {_why(exc)}"
            continue
        if updated is not None:
            service_updates[sid] = updated
            services[sid] = updated

    # 2. A task on a node that is down (or gone) is lost with it: mark it orphaned
    # (and no longer wanted) so its slot is replaced at once, not after a restart delay.
    changed: dict[str, spec.Task] = {}
    for tid, task in tasks.items():
        node = nodes.get(task.node_id)
        if task.node_id and (node is None or node.get("status") == "down") and not spec.is_terminal(task.status.state):
            changed[tid] = spec.replace(task, desired_state="shutdown", status=spec.TaskStatus(
                "orphaned", "the task's node is down", "node is down", now, None, task.status.container_id))

    # 3. The orchestrator, one service at a time (sorted: a replay makes the same ids in the same order).
    by_service: dict[str, list[spec.Task]] = {}
    for tid, task in tasks.items():
        by_service.setdefault(task.service_id, []).append(changed.get(tid, task))
    deletes: dict[str, None] = {}
    created: list[spec.Task] = []
    for service_id in sorted(set(services) | set(by_service)):
        try:
            plan = reconcile(services.get(service_id), by_service.get(service_id, []), infos, now, new_id,
                             snapshot.history_limit)
        except Exception as exc:  # a bug for one service's tasks must not stop the others
            log.debug("reconcile of service %s failed", service_id, exc_info=True)
            problems[service_id] = f"cannot reconcile the service: {_why(exc)}"
            continue
        created.extend(plan.create)
        if plan.service is not None:
            # decided from services[service_id], the allocated value: it carries step 1's change too
            service_updates[service_id] = plan.service
        for task in plan.update:
            base = changed.get(task.id)
            # keep the orphaned status decided above; take the plan's desired state
            changed[task.id] = spec.replace(task, status=base.status) if base else task
        for task_id in plan.delete:
            if task_id in tasks:
                deletes[task_id] = None

    # 4. Placement: new tasks and tasks still waiting, except a slot whose old task is still stopping.
    current = {tid: changed.get(tid, t) for tid, t in tasks.items()}
    for task in created:
        current[task.id] = task
    stopping = stopping_slots(list(current.values()), infos)
    waiting = [t for t in current.values()
               if t.desired_state == "running" and t.status.state in ("new", "pending")
               and t.not_before <= now and (t.service_id, t.slot or t.node_id) not in stopping
               and (not t.node_id or t.slot == 0)]
    pending = [t for t in waiting if t.service_id not in problems]
    placement = SchedulePlan({}, {})
    if pending:   # else the scheduler's pass over every task would place nothing
        # Everything still holding a node's resources counts, also tasks that are stopping.
        live = [t for t in current.values() if t.node_id and not spec.is_terminal(t.status.state)]
        placement = schedule(pending, infos, live, services, rng)
    unplaced = dict(placement.unplaced)
    for task in pending:
        if task.id not in placement.assignments:
            continue
        try:
            placed = allocate_task(task, services.get(task.service_id), networks, alloc)
        except (OverlayError, ValueError, KeyError) as exc:
            unplaced[task.id] = f"cannot allocate the task's network addresses: {_why(exc)}"
            continue
        current[task.id] = spec.replace(
            placed, node_id=placement.assignments[task.id],
            status=spec.TaskStatus("assigned", "scheduler assigned task to node", "", now))
    for task in waiting:
        if current[task.id] is not task:
            continue  # placed above
        reason = problems.get(task.service_id) or unplaced.get(task.id, "")
        if task.status.state == "new" or task.status.err != reason:
            current[task.id] = spec.replace(
                task, status=spec.TaskStatus("pending", "waiting for a suitable node", reason, now))

    # 5. Each node's ingress sandbox needs an address on the ingress network.
    ingress: dict[str, str] = {}
    mesh = ingress_id(networks)
    if mesh and any(s.ports for s in services.values()):
        for nid, node in nodes.items():
            if not node.get("ingress_ip") and node.get("status") == "ready":
                try:
                    ingress[nid] = alloc.allocate_address(mesh)
                except OverlayError as exc:
                    warnings[f"ingress {nid}"] = f"node {nid} gets no ingress address: {exc}"

    updates = tuple(new for tid, old in tasks.items()   # `is not` first: most tasks are left as they were
                    if (new := current[tid]) is not old and new != old and tid not in deletes)
    final = {**services, **service_updates}
    updating = frozenset(sid for sid, s in final.items()
                         if s.update_status is not None and s.update_status.state in IN_PROGRESS)
    # Each node's tasks are written together (a stable sort by node). Placement spreads a service
    # over the nodes, so in placement order every transaction would carry one task for each of
    # many nodes, and at 1,000 nodes every node would hear of its tasks one answer at a time.
    create = sorted((current[t.id] for t in created), key=_node_of)
    updates = tuple(sorted(updates, key=_node_of))
    return RoundPlan(services=tuple(service_updates.values()), create=tuple(create),
                     update=updates, delete=tuple(deletes), ingress=ingress, problems=problems, warnings=warnings,
                     clock_driven=_clock_driven(final, current, problems, warnings, updating), updating=updating)

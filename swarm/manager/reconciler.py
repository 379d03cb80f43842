"""Leader-only work: reconcile services to tasks, place tasks, hand out
assignments, take task status from agents.

How this works. `Reconciler.run` wakes on store events (services, tasks,
nodes) and at least every 200 ms (restart delays expire on the clock), and
only acts while this manager is the acting (lease-fenced) leader. Each round
reads the store once, asks the pure orchestrator for a plan per service and
the pure scheduler for placements, and writes everything in one batch of
compare-and-set transactions (the only place this module writes tasks). A
conflict means someone wrote in between: the next round sees it.

Agents long-poll `tasks.assigned` (answered by any manager from its store)
and report state changes with `tasks.status`, which applies each change as a
compare-and-set update that only ever moves a task's state forward.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import Any

import trio

from overlay.errors import OverlayError
from raft.node import RaftUnavailable
from raft.store import MAX_COMMAND, Op, TxnError
from swarm.api import model, records, spec
from swarm.ca import pki
from swarm.manager.membership import Manager
from swarm.manager.allocator import NETWORK, allocate_service, allocate_task, allocation_state
from swarm.manager.orchestrator import reconcile, stopping_slots
from swarm.api.errors import ApiError
from swarm.manager.scheduler import NodeInfo, schedule
from swarm.api.taskstate import IllegalTransition, advance

log = logging.getLogger(__name__)
ROUND_PERIOD = 0.2
DEBOUNCE = 0.01
ASSIGN_BATCH = 0.03
MAX_TXN_OPS = 200
MAX_TXN_BYTES = MAX_COMMAND // 2   # the store refuses a command past MAX_COMMAND; leave room for framing


def batches(ops: list[Op], max_bytes: int, max_ops: int) -> list[list[Op]]:
    """`ops` in order, cut into lists of at most `max_ops` operations and about
    `max_bytes` of records each (an operation bigger than that goes alone)."""
    out: list[list[Op]] = []
    size = 0
    for op in ops:
        cost = len(op.data or b"") + len(op.kind) + len(op.id) + 16
        if not out or len(out[-1]) >= max_ops or (out[-1] and size + cost > max_bytes):
            out.append([])
            size = 0
        out[-1].append(op)
        size += cost
    return out


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _network_record(data: dict) -> dict:
    for key, kind in (("id", str), ("name", str), ("subnet", str), ("gateway", str), ("vni", int)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"network record lacks a valid {key}")
    return data


def node_infos(nodes: dict[str, dict]) -> list[NodeInfo]:
    """The scheduler's view of the nodes; a node record that does not fit it is left out (logged once)."""
    out = []
    for n in nodes.values():
        try:
            res = n.get("resources") or {}
            out.append(NodeInfo(id=n["id"], hostname=n["hostname"], role=n["role"], status=n["status"],
                                availability=n["availability"], labels=dict(n.get("labels", {})),
                                resources=spec.Resources(_count(res.get("nano_cpus", 0)),
                                                         _count(res.get("memory_bytes", 0)))))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            records.warn_once(f"node {n.get('id')!r}", f"node record ignored by the scheduler: {exc!r}")
    return out


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a resource amount")
    return value


def encode_task(task: spec.Task) -> bytes:
    return model.encode(spec.to_dict(task))


class Reconciler:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.rng = random.Random()
        self.tasks_changed = trio.Event()
        self._dirty = trio.Event()
        self._problems: dict[str, str] = {}   # service id -> why its last round failed (logged once per change)

    def _read(self) -> tuple[dict, dict, dict]:
        raft = self.m.raft
        services = {k: s for k, (s, _) in records.decode_all(raft.list(spec.SERVICE), spec.service_from_dict).items()}
        tasks = records.decode_all(raft.list(spec.TASK), spec.task_from_dict)
        return services, tasks, self.m.nodes()

    async def run(self) -> None:
        with self.m.raft.watch(kinds=[spec.SERVICE, spec.TASK, model.NODE, NETWORK]) as watch:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wake_assignments, watch)
                while True:
                    with trio.move_on_after(ROUND_PERIOD):
                        await self._dirty.wait()
                    self._dirty = trio.Event()
                    await trio.sleep(DEBOUNCE)  # let a burst of events settle into one round
                    if self.m.raft.is_leader():
                        try:
                            await self.round()
                        except (ApiError, RaftUnavailable) as exc:
                            log.info("reconcile round failed (will retry): %s", getattr(exc, "message", exc))
                        except Exception:  # a bug in one round must not take the manager down
                            log.exception("reconcile round failed (will retry)")

    async def _wake_assignments(self, watch: Any) -> None:
        async for item in watch:
            self._dirty.set()
            self.tasks_changed.set()
            self.tasks_changed = trio.Event()

    def _note(self, service_id: str, problem: str | None) -> None:
        """Log a service's problem once per change, not once per round."""
        if problem is None:
            if self._problems.pop(service_id, None) is not None:
                log.info("service %s: reconciling again", service_id)
        elif self._problems.get(service_id) != problem:
            self._problems[service_id] = problem
            log.warning("service %s: %s", service_id, problem)

    async def round(self) -> None:
        """One pass over every service. Each service's allocation, plan and placement
        is isolated: one that fails gets the reason on its pending tasks and the
        round goes on for all the others."""
        services, tasks, nodes = self._read()
        networks = {k: n for k, (n, _) in records.decode_all(self.m.raft.list(NETWORK), _network_record).items()}
        infos = node_infos(nodes)
        now = time.time()
        problems: dict[str, str] = {}
        # Endpoints first: VIPs and published ports for services that lack them.
        alloc = allocation_state(networks, services, [t for t, _ in tasks.values()], nodes, now)
        service_ops: list[Op] = []
        for sid, service in sorted(services.items(), key=lambda kv: kv[1].created_at):
            try:
                updated = allocate_service(service, networks, alloc)
            except (OverlayError, ValueError, KeyError) as exc:
                problems[sid] = f"cannot allocate the service's endpoints: {_why(exc)}"
                continue
            if updated is not None:
                rec = self.m.raft.get(spec.SERVICE, sid)
                if rec is None:
                    continue
                service_ops.append(Op.update(spec.SERVICE, sid, model.encode(spec.to_dict(updated)),
                                             expect=rec.version))
                services[sid] = updated
        # A task on a node that is down (or gone) is lost with it: mark it orphaned
        # (and no longer wanted) so its slot is replaced at once, not after a restart delay.
        changed: dict[str, spec.Task] = {}
        for tid, (task, _) in tasks.items():
            node = nodes.get(task.node_id)
            if task.node_id and (node is None or node.get("status") == "down") and not spec.is_terminal(task.status.state):
                changed[tid] = dataclasses.replace(task, desired_state="shutdown", status=spec.TaskStatus(
                    "orphaned", "the task's node is down", "node is down", now, None, task.status.container_id))
        by_service: dict[str, list[spec.Task]] = {}
        for tid, (task, _) in tasks.items():
            by_service.setdefault(task.service_id, []).append(changed.get(tid, task))
        deletes: list[Op] = []
        created: list[spec.Task] = []
        for service_id in set(services) | set(by_service):
            try:
                plan = reconcile(services.get(service_id), by_service.get(service_id, []), infos, now, pki.new_id)
            except Exception as exc:  # a bug for one service's tasks must not stop the others
                log.debug("reconcile of service %s failed", service_id, exc_info=True)
                problems[service_id] = f"cannot reconcile the service: {_why(exc)}"
                continue
            created.extend(plan.create)
            for task in plan.update:
                base = changed.get(task.id)
                # keep the orphaned status we decided above; take the plan's desired state
                changed[task.id] = dataclasses.replace(task, status=base.status) if base else task
            for task_id in plan.delete:
                if task_id in tasks:
                    deletes.append(Op.delete(spec.TASK, task_id, expect=tasks[task_id][1]))
        # Placement: new tasks and tasks still waiting, except a slot whose old task is still stopping.
        current = {tid: changed.get(tid, t) for tid, (t, _) in tasks.items()}
        for task in created:
            current[task.id] = task
        # Stop-first: a slot's new task waits until its old one has stopped.
        stopping = stopping_slots(list(current.values()), infos)
        waiting = [t for t in current.values()
                   if t.desired_state == "running" and t.status.state in ("new", "pending")
                   and t.not_before <= now and (t.service_id, t.slot or t.node_id) not in stopping
                   and (not t.node_id or t.slot == 0)]
        pending = [t for t in waiting if t.service_id not in problems]
        # Everything still holding a node's resources counts, also tasks that are stopping.
        live = [t for t in current.values() if t.node_id and not spec.is_terminal(t.status.state)]
        placement = schedule(pending, infos, live, services, self.rng)
        unplaced = dict(placement.unplaced)
        for task in pending:
            if task.id not in placement.assignments:
                continue
            try:
                placed = allocate_task(task, services.get(task.service_id), networks, alloc)
            except (OverlayError, ValueError, KeyError) as exc:
                unplaced[task.id] = f"cannot allocate the task's network addresses: {_why(exc)}"
                continue
            current[task.id] = dataclasses.replace(
                placed, node_id=placement.assignments[task.id],
                status=spec.TaskStatus("assigned", "scheduler assigned task to node", "", now))
        for task in waiting:
            if current[task.id] is not task:
                continue  # placed above
            reason = problems.get(task.service_id) or unplaced.get(task.id, "")
            if task.status.state == "new" or task.status.err != reason:
                current[task.id] = dataclasses.replace(
                    task, status=spec.TaskStatus("pending", "waiting for a suitable node", reason, now))
        for sid in set(self._problems) | set(problems):
            self._note(sid, problems.get(sid))
        ops = list(service_ops)
        ops += [Op.create(spec.TASK, task.id, encode_task(current[task.id])) for task in created]
        deleted = {op.id for op in deletes}
        for tid, (old, version) in tasks.items():
            new = current.get(tid)
            if new is not None and new != old and tid not in deleted:
                ops.append(Op.update(spec.TASK, tid, encode_task(new), expect=version))
        ops += deletes
        # Each node's ingress sandbox needs an address on the ingress network.
        ingress_id = _ingress_id(networks)
        if ingress_id and any(s.ports for s in services.values()):
            for nid, node in nodes.items():
                if not node.get("ingress_ip") and node.get("status") == "ready":
                    rec = self.m.raft.get(model.NODE, nid)
                    try:
                        ip = alloc.allocate_address(ingress_id)
                    except OverlayError as exc:
                        records.warn_once(f"ingress {nid}", f"node {nid} gets no ingress address: {exc}")
                        continue
                    ops.append(Op.update(model.NODE, nid, model.encode(dict(node, ingress_ip=ip)),
                                         expect=rec.version))
        await self._commit(ops)

    async def _commit(self, ops: list[Op]) -> None:
        """Write a round's changes in transactions small enough for the store, by
        bytes as well as by count; the writes are independent compare-and-sets,
        so one batch that conflicts or fails does not hold back the others."""
        for batch in batches(ops, MAX_TXN_BYTES, MAX_TXN_OPS):
            try:
                result = await self.m.raft.commit(batch)
            except TxnError as exc:
                records.warn_once(f"txn {batch[0].kind}/{batch[0].id}", f"a reconcile write was refused: {exc}")
                continue
            if not result.ok:
                log.debug("reconcile batch conflicted (%s); next round retries", result.error)
                self._dirty.set()

    # -- dispatcher RPCs ------------------------------------------------------------------------
    async def assigned(self, caller: str, params: dict) -> dict:
        """Long-poll: the tasks assigned to the caller changed since `since` (store index)."""
        since, wait = params.get("since", 0), params.get("wait", 1.0)
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise ApiError("bad_request", "since must be a store index (a whole number)")
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 60:
            raise ApiError("bad_request", "wait must be a number of seconds from 0 to 60")
        wait = min(float(wait), 5.0)
        if self.m.raft.index <= since:
            with trio.move_on_after(wait):
                await self.tasks_changed.wait()
                await trio.sleep(ASSIGN_BATCH)  # let a burst of changes arrive together
        raft = self.m.raft
        index = raft.index
        listing = raft.list(spec.TASK)
        mine, changed = [], []
        # Typed (and cached) decoding: a record the agent could not act on is left out.
        for task_id, (task, version) in records.decode_all(listing, spec.task_from_dict).items():
            if task.node_id != caller:
                continue
            mine.append(task_id)
            if (version >> 16) > since:
                changed.append(model.decode(listing[task_id].data))
        return {"index": index, "task_ids": mine, "changed": changed,
                "network": self.network_view(caller)}

    def network_view(self, node_id: str) -> dict:
        """What the node's agent needs to wire its tasks: the networks its tasks use,
        the peers on them (other nodes' task addresses and VTEPs), and the
        service discovery and load-balancing table of each network."""
        raft = self.m.raft
        networks = {k: n for k, (n, _) in records.decode_all(raft.list(NETWORK), _network_record).items()}
        nodes = self.m.nodes()
        services = {k: s for k, (s, _) in records.decode_all(raft.list(spec.SERVICE), spec.service_from_dict).items()}
        tasks = [t for t, _ in records.decode_all(raft.list(spec.TASK), spec.task_from_dict).values()]
        live = [t for t in tasks if t.networks and t.desired_state == "running"
                and not spec.is_terminal(t.status.state) and t.node_id in nodes]
        local_ingress: dict[str, list[str]] = {}  # service -> its running tasks' ingress addresses on this node
        used = {a.network_id for t in live if t.node_id == node_id for a in t.networks}
        ingress_id = _ingress_id(networks)
        publishing = any(s.ports for s in services.values())
        if publishing and ingress_id:
            used.add(ingress_id)  # every node is in the routing mesh
        peers: dict[str, list[dict]] = {n: [] for n in used}
        if publishing and ingress_id:
            for nid, node in nodes.items():
                if nid != node_id and node.get("ingress_ip"):
                    peers[ingress_id].append({"ip": node["ingress_ip"], "vtep": node["addr"].rsplit(":", 1)[0]})
        # A task being stopped leaves the load balancers and DNS at once (`live`) but stays a
        # peer until it has stopped: connections already sent to it must still reach it.
        for t in tasks:
            if t.networks and t.desired_state != "running" and t.node_id in nodes and t.node_id != node_id \
                    and not spec.is_terminal(t.status.state):
                vtep = nodes[t.node_id]["addr"].rsplit(":", 1)[0]
                for a in t.networks:
                    if a.network_id in used:
                        peers[a.network_id].append({"ip": a.address.split("/")[0], "vtep": vtep})
        endpoints: dict[str, dict[str, list[str]]] = {}
        for t in live:
            vtep = nodes[t.node_id]["addr"].rsplit(":", 1)[0]
            for a in t.networks:
                ip = a.address.split("/")[0]
                if a.network_id in used and t.node_id != node_id:
                    peers[a.network_id].append({"ip": ip, "vtep": vtep})
                if t.status.state == "running":
                    endpoints.setdefault(a.network_id, {}).setdefault(t.service_id, []).append(ip)
                    if a.network_id == ingress_id and t.node_id == node_id:
                        local_ingress.setdefault(t.service_id, []).append(ip)
        table: dict[str, list[dict]] = {n: [] for n in used}
        for s in services.values():
            for net_id in used:
                if networks.get(net_id, {}).get("ingress"):
                    continue  # the routing mesh balances ingress; names resolve on the service's own networks
                if net_id not in s.vips and net_id not in s.spec.networks:
                    continue
                table[net_id].append({
                    "name": s.spec.name, "mode": s.spec.endpoint_mode,
                    "vip": s.vips.get(net_id, "").split("/")[0],
                    "tasks": sorted(endpoints.get(net_id, {}).get(s.id, [])),
                })
        return {"networks": {n: networks[n] for n in used if n in networks}, "peers": peers, "services": table,
                "ingress_ip": nodes.get(node_id, {}).get("ingress_ip", ""),
                # ingress mode: every task of the service; host mode: only this node's tasks
                "published": [{"published": p.published, "target": p.target, "protocol": p.protocol,
                               "service": s.spec.name,
                               "tasks": sorted(endpoints.get(ingress_id, {}).get(s.id, []) if p.mode == "ingress"
                                               else local_ingress.get(s.id, []))}
                              for s in services.values() for p in s.ports if p.published]}

    async def status(self, caller: str, params: dict) -> dict:
        """Apply a batch of task status changes reported by the caller's agent, as
        compare-and-set updates in store-sized transactions (a batch that conflicts
        is read again and retried); a state only moves forward. Every update is
        checked before anything is written: one malformed update refuses the whole
        call with the reason."""
        todo = parse_status_updates(params, time.time())  # later reports of one task win
        applied = 0
        for _ in range(10):
            ops = []
            for task_id, status in todo.items():
                rec = self.m.raft.get(spec.TASK, task_id)
                if rec is None:
                    continue
                try:
                    task = spec.task_from_dict(model.decode(rec.data))
                except spec.InvalidRecord:
                    continue  # a record no one can act on; the reader logs it
                if task.node_id != caller:
                    raise ApiError("forbidden", f"task {task_id} is not assigned to this node")
                try:
                    advance(task.status.state, status.state)
                except IllegalTransition:
                    continue  # stale or duplicate report
                ops.append(Op.update(spec.TASK, task_id, encode_task(dataclasses.replace(task, status=status)),
                                     expect=rec.version))
            conflicted: set[str] = set()
            for batch in batches(ops, MAX_TXN_BYTES, MAX_TXN_OPS):
                result = await self.m.raft.commit(batch)
                if result.ok:
                    applied += len(batch)
                else:
                    conflicted.update(op.id for op in batch)
            if not conflicted:
                return {"applied": applied}
            todo = {k: v for k, v in todo.items() if k in conflicted}
            await trio.sleep(0.01)  # the leader wrote one of these tasks meanwhile: read again
        raise ApiError("unavailable", "task status kept conflicting; the agent retries")


def parse_status_updates(params: dict, now: float) -> dict[str, spec.TaskStatus]:
    """task id -> its latest reported status, from a tasks.status call; ApiError bad_request names the fault."""
    updates = params.get("updates")
    if not isinstance(updates, list):
        raise ApiError("bad_request", "updates must be a list")
    if len(updates) > spec.MAX_STATUS_BATCH:
        raise ApiError("bad_request", f"at most {spec.MAX_STATUS_BATCH} status updates per call")
    latest: dict[str, spec.TaskStatus] = {}
    for i, u in enumerate(updates):
        if not isinstance(u, dict) or not isinstance(u.get("id"), str) or not 0 < len(u["id"]) <= spec.MAX_ID:
            raise ApiError("bad_request", f"update {i}: a task id is a non-empty string")
        try:
            latest[u["id"]] = spec.status_from_wire(u.get("status"), now)
        except spec.InvalidRecord as exc:
            raise ApiError("bad_request", f"update {i} (task {u['id']}): {exc}") from None
    return latest


def _ingress_id(networks: dict[str, dict]) -> str:
    return next((n["id"] for n in networks.values() if n.get("ingress")), "")

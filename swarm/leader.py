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

from raft.store import Op
from swarm import model, pki, spec
from swarm.manager import Manager
from swarm.networks import NETWORK, allocate_service, allocate_task, allocation_state
from swarm.orchestrator import reconcile, stopping_slots
from swarm.rpc import Peer, RPCError
from swarm.scheduler import NodeInfo, schedule
from swarm.taskstate import IllegalTransition, advance

log = logging.getLogger(__name__)
ROUND_PERIOD = 0.2
DEBOUNCE = 0.01
ASSIGN_BATCH = 0.03


def node_infos(nodes: dict[str, dict]) -> list[NodeInfo]:
    out = []
    for n in nodes.values():
        res = n.get("resources") or {}
        out.append(NodeInfo(id=n["id"], hostname=n["hostname"], role=n["role"], status=n["status"],
                            availability=n["availability"], labels=dict(n.get("labels", {})),
                            resources=spec.Resources(int(res.get("nano_cpus", 0)), int(res.get("memory_bytes", 0)))))
    return out


def encode_task(task: spec.Task) -> bytes:
    return model.encode(spec.to_dict(task))


class Reconciler:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.rng = random.Random()
        self.tasks_changed = trio.Event()
        self._dirty = trio.Event()

    def _read(self) -> tuple[dict, dict, dict]:
        raft = self.m.raft
        services = {k: spec.service_from_dict(model.decode(r.data)) for k, r in raft.list(spec.SERVICE).items()}
        tasks = {k: (spec.task_from_dict(model.decode(r.data)), r.version) for k, r in raft.list(spec.TASK).items()}
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
                        except RPCError as exc:
                            log.info("reconcile round failed (will retry): %s", exc.message)
                        except Exception:  # a bug in one round must not take the manager down
                            log.exception("reconcile round failed (will retry)")

    async def _wake_assignments(self, watch: Any) -> None:
        async for item in watch:
            self._dirty.set()
            self.tasks_changed.set()
            self.tasks_changed = trio.Event()

    async def round(self) -> None:
        services, tasks, nodes = self._read()
        networks = {k: model.decode(r.data) for k, r in self.m.raft.list(NETWORK).items()}
        infos = node_infos(nodes)
        now = time.time()
        # Endpoints first: VIPs and published ports for services that lack them.
        alloc = allocation_state(networks, services, [t for t, _ in tasks.values()], nodes, now)
        service_ops: list[Op] = []
        for sid, service in list(services.items()):
            updated = allocate_service(service, networks, alloc)
            if updated is not None:
                rec = self.m.raft.get(spec.SERVICE, sid)
                service_ops.append(Op.update(spec.SERVICE, sid, model.encode(spec.to_dict(updated)),
                                             expect=rec.version))
                services[sid] = updated
        # A task on a node that is down (or gone) is lost with it: mark it
        # orphaned so its slot is replaced at once, not after a restart delay.
        changed: dict[str, spec.Task] = {}
        for tid, (task, _) in tasks.items():
            node = nodes.get(task.node_id)
            if task.node_id and (node is None or node["status"] == "down") and not spec.is_terminal(task.status.state):
                changed[tid] = dataclasses.replace(task, status=spec.TaskStatus(
                    "orphaned", "the task's node is down", "node is down", now, None, task.status.container_id))
        by_service: dict[str, list[spec.Task]] = {}
        for tid, (task, _) in tasks.items():
            by_service.setdefault(task.service_id, []).append(changed.get(tid, task))
        ops: list[Op] = []
        created: list[spec.Task] = []
        for service_id in set(services) | set(by_service):
            plan = reconcile(services.get(service_id), by_service.get(service_id, []), infos, now, pki.new_id)
            for task in plan.create:
                created.append(task)
            for task in plan.update:
                base = changed.get(task.id)
                # keep the orphaned status we decided above; take the plan's desired state
                changed[task.id] = dataclasses.replace(task, status=base.status) if base else task
            for task_id in plan.delete:
                if task_id in tasks:
                    ops.append(Op.delete(spec.TASK, task_id, expect=tasks[task_id][1]))
        # Placement: new tasks and tasks still waiting, except a slot whose old task is still stopping.
        current = {tid: changed.get(tid, t) for tid, (t, _) in tasks.items()}
        for task in created:
            current[task.id] = task
        # Stop-first: a slot's new task waits until its old one has stopped.
        stopping = stopping_slots(list(current.values()), infos)
        pending = [t for t in current.values()
                   if t.desired_state == "running" and t.status.state in ("new", "pending")
                   and t.not_before <= now and (t.service_id, t.slot or t.node_id) not in stopping
                   and (not t.node_id or t.slot == 0)]
        # Everything still holding a node's resources counts, also tasks that are stopping.
        live = [t for t in current.values() if t.node_id and not spec.is_terminal(t.status.state)]
        plan = schedule(pending, infos, live, services, self.rng)
        for task in pending:
            if task.id in plan.assignments:
                placed = allocate_task(task, services.get(task.service_id), networks, alloc)
                current[task.id] = dataclasses.replace(
                    placed, node_id=plan.assignments[task.id],
                    status=spec.TaskStatus("assigned", "scheduler assigned task to node", "", now))
            elif task.status.state == "new" or task.status.err != plan.unplaced.get(task.id, ""):
                current[task.id] = dataclasses.replace(
                    task, status=spec.TaskStatus("pending", "waiting for a suitable node",
                                                 plan.unplaced.get(task.id, ""), now))
        for task in created:
            ops.append(Op.create(spec.TASK, task.id, encode_task(current[task.id])))
        for tid, (old, version) in tasks.items():
            new = current.get(tid)
            if new is not None and new != old and not any(o.id == tid for o in ops):
                ops.append(Op.update(spec.TASK, tid, encode_task(new), expect=version))
        # Each node's ingress sandbox needs an address on the ingress network.
        ingress_id = _ingress_id(networks)
        if ingress_id and any(s.ports for s in services.values()):
            for nid, node in nodes.items():
                if not node.get("ingress_ip") and node["status"] == "ready":
                    rec = self.m.raft.get(model.NODE, nid)
                    ip = alloc.allocate_address(ingress_id)
                    ops.append(Op.update(model.NODE, nid, model.encode(dict(node, ingress_ip=ip)),
                                         expect=rec.version))
        ops = service_ops + ops
        for start in range(0, len(ops), 200):
            result = await self.m.raft.commit(ops[start:start + 200])
            if not result.ok:
                log.debug("reconcile batch conflicted (%s); next round retries", result.error)
                self._dirty.set()

    # -- dispatcher RPCs ------------------------------------------------------------------------
    async def assigned(self, peer: Peer, params: dict) -> dict:
        """Long-poll: the tasks assigned to the caller changed since `since` (store index)."""
        since = int(params.get("since", 0))
        wait = min(float(params.get("wait", 1.0)), 5.0)
        if self.m.raft.index <= since:
            with trio.move_on_after(wait):
                await self.tasks_changed.wait()
                await trio.sleep(ASSIGN_BATCH)  # let a burst of changes arrive together
        raft = self.m.raft
        index = raft.index
        mine, changed = [], []
        for task_id, rec in raft.list(spec.TASK).items():
            data = model.decode(rec.data)
            if data.get("node_id") != peer.node_id:
                continue
            mine.append(task_id)
            if (rec.version >> 16) > since:
                changed.append(data)
        return {"index": index, "task_ids": mine, "changed": changed,
                "network": self.network_view(peer.node_id)}

    def network_view(self, node_id: str) -> dict:
        """What the node's agent needs to wire its tasks: the networks its tasks use,
        the peers on them (other nodes' task addresses and VTEPs), and the
        service discovery and load-balancing table of each network."""
        raft = self.m.raft
        networks = {k: model.decode(r.data) for k, r in raft.list(NETWORK).items()}
        nodes = self.m.nodes()
        services = {k: spec.service_from_dict(model.decode(r.data)) for k, r in raft.list(spec.SERVICE).items()}
        tasks = [spec.task_from_dict(model.decode(r.data)) for r in raft.list(spec.TASK).values()]
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

    async def status(self, peer: Peer, params: dict) -> dict:
        """Apply a batch of task status changes reported by the caller's agent,
        in one transaction (retried on conflict); a state only moves forward."""
        updates = [(str(u["id"]), spec.TaskStatus(**u["status"])) for u in params.get("updates", [])]
        for _ in range(10):
            ops, latest = [], {}
            for task_id, status in updates:  # later reports of one task win
                latest[task_id] = status
            for task_id, status in latest.items():
                rec = self.m.raft.get(spec.TASK, task_id)
                if rec is None:
                    continue
                task = spec.task_from_dict(model.decode(rec.data))
                if task.node_id != peer.node_id:
                    raise RPCError("forbidden", f"task {task_id} is not assigned to this node")
                try:
                    advance(task.status.state, status.state)
                except IllegalTransition:
                    continue  # stale or duplicate report
                ops.append(Op.update(spec.TASK, task_id, encode_task(dataclasses.replace(task, status=status)),
                                     expect=rec.version))
            if not ops:
                return {"applied": 0}
            result = await self.m.raft.commit(ops)
            if result.ok:
                return {"applied": len(ops)}
            await trio.sleep(0.01)  # the leader wrote one of these tasks meanwhile: read again
        raise RPCError("unavailable", "task status kept conflicting; the agent retries")


def _ingress_id(networks: dict[str, dict]) -> str:
    return next((n["id"] for n in networks.values() if n.get("ingress")), "")

"""The leader's reconcile loop: read the store once, plan, write once.

How this works. `Reconciler.run` wakes on store events (services, tasks,
nodes, networks) and at least every 200 ms (restart delays expire on the
clock), and only acts while this manager is the acting (lease-fenced)
leader. A round reads a `Snapshot` of the store, asks the pure planner for a
`RoundPlan` (`planner.plan_round`), and hands it to `apply`, the only place
this module writes: the plan's values become compare-and-set writes against
the snapshot's versions, committed in transactions small enough for the
store (`batches`). A conflict means someone wrote in between: the next
round sees it. A service's problem is logged once per change, not per round.

Randomness is seeded: the reconciler logs its seed, and each round draws its
own seed from it (logged at debug level), so a round's plan can be replayed
from the snapshot, its clock and its seed.

The agents' side (tasks.assigned, tasks.status, the network view) is the
dispatcher's (`swarm.manager.dispatcher`).
"""
from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

import trio

from raft.node import RaftUnavailable
from raft.store import MAX_COMMAND, Op, TxnError
from swarm.api import model, records, spec
from swarm.api.errors import ApiError
from swarm.ca import pki
from swarm.manager.allocator import NETWORK
from swarm.manager.membership import Manager
from swarm.manager.planner import RoundPlan, Snapshot, network_record, plan_round

log = logging.getLogger(__name__)
ROUND_PERIOD = 0.2
DEBOUNCE = 0.01
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


def encode_task(task: spec.Task) -> bytes:
    return model.encode(spec.to_dict(task))


def read_snapshot(store: Any) -> Snapshot:
    """Everything a round decides from, read from the local store at one index."""
    return Snapshot(
        services=records.decode_all(store.list(spec.SERVICE), spec.service_from_dict),
        tasks=records.decode_all(store.list(spec.TASK), spec.task_from_dict),
        nodes={k: (model.decode(r.data), r.version) for k, r in store.list(model.NODE).items()},
        networks={k: n for k, (n, _) in records.decode_all(store.list(NETWORK), network_record).items()},
        history_limit=_history_limit(store))


def _history_limit(store: Any) -> int:
    """The cluster's task history retention limit (`swarm update --task-history-limit`)."""
    rec = store.get(model.CLUSTER, model.CLUSTER_ID)
    return model.cluster_settings(model.decode(rec.data) if rec else {})["task_history_limit"]


def plan_ops(snapshot: Snapshot, plan: RoundPlan) -> list[Op]:
    """A plan as compare-and-set writes against the versions it was decided from, in plan order."""
    ops = [Op.update(spec.SERVICE, s.id, model.encode(spec.to_dict(s)), expect=snapshot.services[s.id][1])
           for s in plan.services]
    ops += [Op.create(spec.TASK, t.id, encode_task(t)) for t in plan.create]
    ops += [Op.update(spec.TASK, t.id, encode_task(t), expect=snapshot.tasks[t.id][1]) for t in plan.update]
    ops += [Op.delete(spec.TASK, tid, expect=snapshot.tasks[tid][1]) for tid in plan.delete]
    for nid, ip in plan.ingress.items():
        node, version = snapshot.nodes[nid]
        ops.append(Op.update(model.NODE, nid, model.encode(dict(node, ingress_ip=ip)), expect=version))
    return ops


class Reconciler:
    def __init__(self, manager: Manager, seed: int | None = None) -> None:
        self.m = manager
        self.seed = int.from_bytes(os.urandom(8), "big") if seed is None else seed
        log.info("reconciler seed %d", self.seed)
        self.rng = random.Random(self.seed)
        self._dirty = trio.Event()
        self._problems: dict[str, str] = {}   # service id -> why its last round failed (logged once per change)

    async def run(self) -> None:
        with self.m.raft.watch(kinds=[spec.SERVICE, spec.TASK, model.NODE, NETWORK]) as watch:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wake, watch)
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

    async def _wake(self, watch: Any) -> None:
        async for _ in watch:
            self._dirty.set()

    async def round(self) -> RoundPlan:
        """One pass over every service: read, plan, apply. Returns the plan it applied."""
        snapshot = read_snapshot(self.m.raft)
        now = time.time()
        seed = self.rng.getrandbits(64)
        log.debug("reconcile round at index %d, now %r, seed %d", self.m.raft.index, now, seed)
        plan = plan_round(snapshot, now, random.Random(seed), pki.new_id)
        await self.apply(snapshot, plan)
        return plan

    async def apply(self, snapshot: Snapshot, plan: RoundPlan) -> None:
        """The single write point: log what the plan says is wrong, then commit its changes
        in transactions small enough for the store, by bytes as well as by count. The
        writes are independent compare-and-sets, so one batch that conflicts or fails
        does not hold back the others."""
        for sid in sorted(set(self._problems) | set(plan.problems)):
            self._note(sid, plan.problems.get(sid))
        for key, message in plan.warnings.items():
            records.warn_once(key, message)
        for batch in batches(plan_ops(snapshot, plan), MAX_TXN_BYTES, MAX_TXN_OPS):
            try:
                result = await self.m.raft.commit(batch)
            except TxnError as exc:
                records.warn_once(f"txn {batch[0].kind}/{batch[0].id}", f"a reconcile write was refused: {exc}")
                continue
            if not result.ok:
                log.debug("reconcile batch conflicted (%s); next round retries", result.error)
                self._dirty.set()
            elif log.isEnabledFor(logging.DEBUG):   # a task's way to running, for bench/startpath.py
                done = time.time()
                for op in batch:
                    if op.kind == spec.TASK:
                        log.debug("start path %s committed %.6f", op.id, done)

    def _note(self, service_id: str, problem: str | None) -> None:
        """Log a service's problem once per change, not once per round."""
        if problem is None:
            if self._problems.pop(service_id, None) is not None:
                log.info("service %s: reconciling again", service_id)
        elif self._problems.get(service_id) != problem:
            self._problems[service_id] = problem
            log.warning("service %s: %s", service_id, problem)

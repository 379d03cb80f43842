"""The leader's reconcile loop: read the store once, plan, write once.

How this works. `Reconciler.run` follows the store's events (services, tasks,
nodes, networks, the cluster's settings) and runs a round only while this
manager is the acting (lease-fenced) leader, and only when one can decide
something: after an event that matters, at once when this manager becomes
the leader, every 200 ms while the last plan said the clock alone may change
it (restart delays, an update's delay and monitor, tasks still waiting), and
as a backstop at least every few seconds (more, the longer a round takes).
A round is a pass over every task, so this is what keeps 100,000 running
tasks cheap: the agents' reports of a task moving on towards running are
most of the writes, and they call for no round (`planner.task_change_matters`
decides, from the task as the last round saw it and as it is now). A burst
of events waits as long as the last round took (up to a second) to become
one round, so rounds take at most about half of the leader's time however
many nodes join or leave at once.

A round reads a `Snapshot` of the store, asks the pure planner for a
`RoundPlan` (`planner.plan_round`), and hands it to `apply`, the only place
this module writes: the plan's values become compare-and-set writes against
the snapshot's versions, committed in transactions small enough for the
store (`batches`), a few of them in Raft at once (`COMMITS_IN_FLIGHT`). A
conflict means someone wrote in between: the next round sees it. A
service's problem is logged once per change, not per round.

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
from raft.store import MAX_COMMAND, Event, Op, TxnError
from raft.watch import Resync
from swarm.api import model, records, spec
from swarm.api.errors import ApiError
from swarm.ca import pki
from swarm.manager.allocator import NETWORK
from swarm.manager.membership import Manager
from swarm.manager.planner import RoundPlan, Snapshot, network_record, plan_round, task_change_matters

log = logging.getLogger(__name__)
ROUND_PERIOD = 0.2
DEBOUNCE = 0.01
MAX_SETTLE = 1.0            # seconds: the longest a burst of events waits for its round
BACKSTOP_PERIOD = 5.0       # seconds between rounds at the least, whatever the events said...
BACKSTOP_ROUNDS = 20        # ...and at least this many round durations (a round of 100,000 tasks is seconds)
WATCH_BUFFER = 1_000_000    # events: a whole create of 100,000 tasks, with room (past it: a Resync)
FOLLOW_SLICE = 0.01         # seconds of event handling between checkpoints
MAX_TXN_OPS = 200
COMMITS_IN_FLIGHT = 4       # a large plan's transactions in Raft at once
THREAD_PLAN_TASKS = 5_000   # a round over this many tasks plans in a worker thread
SLOW_ROUND = 1.0            # seconds: a round planned for longer is logged (at INFO)
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


def round_size(snapshot: Snapshot) -> int:
    """About how many tasks a round over `snapshot` handles: those it holds, and those its
    services ask for (a new service of 100,000 replicas has no task yet, and its round is
    the largest of all)."""
    wanted = sum(s.spec.replicas if s.spec.mode in ("replicated", "replicated-job") else len(snapshot.nodes)
                 for s, _ in snapshot.services.values())
    return len(snapshot.tasks) + wanted


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
    ops += [Op.create(spec.TASK, t.id, spec.encode_task(t)) for t in plan.create]
    ops += [Op.update(spec.TASK, t.id, spec.encode_task(t), expect=snapshot.tasks[t.id][1]) for t in plan.update]
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
        # The tasks as the last round saw them, then as the events since brought them (None:
        # not followed yet, or lost track): what `task_change_matters` compares with.
        self._seen: dict[str, tuple[spec.Task, int]] | None = None
        self._clock_driven = True             # what the last round's plan said (True until one ran)
        self._updating: frozenset[str] = frozenset()
        self._backstop_at = 0.0               # monotonic time of the next round whatever happens
        self._took = 0.0                      # how long the last round took, in seconds
        self.rounds = 0                       # rounds run (read by tests and benchmarks)

    async def run(self) -> None:
        kinds = [spec.SERVICE, spec.TASK, model.NODE, NETWORK, model.CLUSTER]
        with self.m.raft.watch(kinds=kinds, maxlen=WATCH_BUFFER) as watch:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow, watch)
                was_leader = False
                while True:
                    with trio.move_on_after(ROUND_PERIOD):
                        await self._dirty.wait()
                    leader = self.m.raft.is_leader()
                    due = (self._dirty.is_set() or not was_leader or self._clock_driven
                           or time.monotonic() >= self._backstop_at)
                    was_leader = leader
                    if not leader or not due:
                        if not leader:
                            self._dirty = trio.Event()   # a new leader runs a round first thing anyway
                        continue
                    self._dirty = trio.Event()
                    # Let a burst of events settle into one round; as long as the last round took
                    # (up to a second), so that rounds take at most about half of the leader's time.
                    await trio.sleep(min(max(DEBOUNCE, self._took), MAX_SETTLE))
                    try:
                        await self.round()
                    except (ApiError, RaftUnavailable) as exc:
                        self._clock_driven = True   # try again in a moment
                        log.info("reconcile round failed (will retry): %s", getattr(exc, "message", exc))
                    except Exception:  # a bug in one round must not take the manager down
                        self._clock_driven = True
                        log.exception("reconcile round failed (will retry)")

    async def _follow(self, watch: Any) -> None:
        """Wake the loop for the events that can change a round's decisions."""
        slice_end = time.monotonic() + FOLLOW_SLICE
        async for item in watch:
            if not isinstance(item, Event):     # a Resync or a change of leadership
                if isinstance(item, Resync):
                    self._seen = None
                self._dirty.set()
            elif item.kind != spec.TASK or self._task_changed(item.id):
                self._dirty.set()
            if time.monotonic() >= slice_end:   # a whole create's events must not hold the loop
                await trio.sleep(0)
                slice_end = time.monotonic() + FOLLOW_SLICE

    def _task_changed(self, task_id: str) -> bool:
        """Whether task `task_id`'s change since the last round saw it matters (it is then
        seen as it is now). The store may be past the event: what matters is the difference
        between what the last round decided from and now."""
        seen = self._seen
        if seen is None:
            return True
        rec = self.m.raft.get(spec.TASK, task_id)
        before = seen.get(task_id)
        if rec is None:
            return seen.pop(task_id, None) is not None
        if before is not None and before[1] == rec.version:
            return False
        try:
            task = records.decode_one(task_id, rec, spec.task_from_dict)
        except Exception:   # a bad record: the round skips it (and says so once)
            seen.pop(task_id, None)
            return True
        seen[task_id] = (task, rec.version)
        return task_change_matters(before[0] if before else None, task, self._updating)

    async def round(self) -> RoundPlan:
        """One pass over every service: read, plan, apply. Returns the plan it applied."""
        started = time.monotonic()
        snapshot = read_snapshot(self.m.raft)
        now = time.time()
        seed = self.rng.getrandbits(64)
        log.debug("reconcile round at index %d, now %r, seed %d", self.m.raft.index, now, seed)
        # The plan is pure and reads only the snapshot, so a large one runs in a worker thread: at
        # 100,000 tasks it takes seconds, which in this thread would leave every node's calls (and
        # their heartbeats: swarm.manager.membership counts the loop's lateness) unread meanwhile.
        # A small one takes milliseconds, less than the hop to a thread.
        ops: list[Op] | None = None
        size = round_size(snapshot)
        if size >= THREAD_PLAN_TASKS:
            def decide() -> tuple[RoundPlan, list[Op]]:   # and its records' encoding, seconds as well
                decided = plan_round(snapshot, now, random.Random(seed), pki.new_id)
                return decided, plan_ops(snapshot, decided)
            plan, ops = await trio.to_thread.run_sync(decide)
        else:
            plan = plan_round(snapshot, now, random.Random(seed), pki.new_id)
        # Later events are weighed against what this round decided from (a copy: the
        # snapshot stays as read while the plan is applied).
        self._seen = dict(snapshot.tasks)
        self._clock_driven, self._updating = plan.clock_driven, plan.updating
        self.rounds += 1
        # The read and the plan are the round's own work (the apply mostly waits for Raft).
        self._took = took = time.monotonic() - started
        log.debug("reconcile round planned in %.3f s: %d tasks read, %d created, %d updated, %d deleted",
                  took, len(snapshot.tasks), len(plan.create), len(plan.update), len(plan.delete))
        await self.apply(snapshot, plan, ops)
        if took >= SLOW_ROUND:
            log.info("reconcile round over about %d tasks: planned in %.1f s, its writes committed %.1f s later",
                     size, took, time.monotonic() - started - took)
        self._backstop_at = time.monotonic() + max(BACKSTOP_PERIOD, BACKSTOP_ROUNDS * took)
        return plan

    async def apply(self, snapshot: Snapshot, plan: RoundPlan, ops: list[Op] | None = None) -> None:
        """The single write point: log what the plan says is wrong, then commit its changes
        in transactions small enough for the store, by bytes as well as by count. The
        writes are independent compare-and-sets, so one batch that conflicts or fails
        does not hold back the others. `ops`: the plan's writes, when they were made already
        (`plan_ops`, in the worker thread of a large round)."""
        for sid in sorted(set(self._problems) | set(plan.problems)):
            self._note(sid, plan.problems.get(sid))
        for key, message in plan.warnings.items():
            records.warn_once(key, message)
        todo = batches(plan_ops(snapshot, plan) if ops is None else ops, MAX_TXN_BYTES, MAX_TXN_OPS)
        # A large plan's transactions are independent: a few in Raft at once, so that the
        # followers append one while the leader prepares the next (one after another, a
        # 100,000-task create spent most of its time waiting for each commit in turn).
        slots = trio.CapacityLimiter(COMMITS_IN_FLIGHT)
        lost: list[RaftUnavailable] = []

        async def commit(batch: list[Op], slot: object) -> None:
            try:
                await self._commit(batch)
            except RaftUnavailable as exc:   # leadership lost: the other writes would fail too
                lost.append(exc)
                nursery.cancel_scope.cancel()
            finally:
                slots.release_on_behalf_of(slot)

        async with trio.open_nursery() as nursery:
            for batch in todo:
                slot = object()
                await slots.acquire_on_behalf_of(slot)
                nursery.start_soon(commit, batch, slot)
        if lost:
            raise lost[0]

    async def _commit(self, batch: list[Op]) -> None:
        try:
            result = await self.m.raft.commit(batch)
        except TxnError as exc:
            records.warn_once(f"txn {batch[0].kind}/{batch[0].id}", f"a reconcile write was refused: {exc}")
            return
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

"""Rolling updates through the orchestrator: its plans applied to an in-memory store, a
scheduler and agents stepped by hand, time as a parameter (no sleeps). The service
record is written back as the reconciler would (the plan's `service`), and `update`
and `rollback` change it as the control API does."""
import dataclasses
import itertools
import random
from collections import Counter

import pytest

from swarm.api.spec import (ContainerSpec, Resources, Service, ServiceSpec, Task, TaskStatus, UpdateConfig,
                            UpdateStatus, is_terminal)
from swarm.manager.controlapi.services import rolls
from swarm.manager.orchestrator import is_live, reconcile, stopping_slots
from swarm.manager.scheduler import NodeInfo, schedule

T0 = 1000.0


def make_service(replicas=4, mode="replicated", **update):
    spec = ServiceSpec("web", ContainerSpec("app:1"), mode=mode, replicas=replicas,
                       update_config=UpdateConfig(**update))
    return Service("s1", spec, spec_version=1, last_spec_version=1)


class Sim:
    """One leader's view: the store (tasks and the service), the nodes, the clock.
    Agents run a task whose image is not "bad" and fail one whose image is."""

    def __init__(self, svc, nodes=3, step=1.0, seed=0):
        self.svc = svc
        self.nodes = [NodeInfo(f"n{i}", f"h{i}", resources=Resources(64 * 10 ** 9, 64 << 30)) for i in range(nodes)]
        self.store: dict[str, Task] = {}
        self.now, self.step = T0, step
        self.rng = random.Random(seed)
        self.ids = itertools.count()
        self.history: list = []    # (now, plan) of every round

    def new_id(self):
        return f"t{next(self.ids):04d}"

    # -- the user, as the control API ---------------------------------------------------------------
    def update(self, image=None, **config):
        svc = self.svc
        spec = svc.spec
        if image:
            spec = dataclasses.replace(spec, container=dataclasses.replace(spec.container, image=image))
        if config:
            spec = dataclasses.replace(spec, update_config=dataclasses.replace(spec.update_config, **config))
        new = dataclasses.replace(svc, spec=spec)
        if rolls(svc.spec, spec):
            version = max(svc.last_spec_version, svc.spec_version) + 1
            new = dataclasses.replace(new, spec_version=version, last_spec_version=version, previous_spec=svc.spec,
                                      previous_spec_version=svc.spec_version)
        self.svc = dataclasses.replace(new, update_status=UpdateStatus("updating", self.now, 0.0, "update in progress"))

    def rollback(self):
        svc = self.svc
        self.svc = dataclasses.replace(svc, spec=svc.previous_spec, spec_version=svc.previous_spec_version,
                                       previous_spec=svc.spec, previous_spec_version=svc.spec_version,
                                       update_status=UpdateStatus("rollback_started", self.now, 0.0,
                                                                  "manually requested rollback"))

    # -- the leader's round, the scheduler, the agents ---------------------------------------------------
    def reconcile(self, now=None):
        return reconcile(self.svc, list(self.store.values()), self.nodes, self.now if now is None else now,
                         self.new_id)

    def round(self):
        plan = self.reconcile()
        self.history.append((self.now, plan))
        for t in plan.create + plan.update:
            self.store[t.id] = t
        for tid in plan.delete:
            self.store.pop(tid, None)
        if plan.service is not None:
            self.svc = plan.service
        check_slots(self.svc, self.store)
        self._schedule()
        self._agents()
        self.now += self.step
        return plan

    def _schedule(self):
        stopping = stopping_slots(list(self.store.values()), self.nodes)
        pending = [t for t in self.store.values()
                   if t.desired_state == "running" and t.status.state in ("new", "pending")
                   and (t.service_id, t.slot or t.node_id) not in stopping and t.not_before <= self.now]
        live = [t for t in self.store.values() if t.node_id and not is_terminal(t.status.state)]
        placed = schedule(pending, self.nodes, live, {self.svc.id: self.svc}, self.rng)
        for tid, node_id in placed.assignments.items():
            self.store[tid] = dataclasses.replace(self.store[tid], node_id=node_id,
                                                  status=TaskStatus("assigned", timestamp=self.now))

    def _agents(self):
        for t in list(self.store.values()):
            if is_terminal(t.status.state) or t.status.state in ("new", "pending"):
                continue
            if t.desired_state != "running":
                self.store[t.id] = dataclasses.replace(t, status=TaskStatus("shutdown", timestamp=self.now))
            elif t.status.state == "assigned":
                if t.spec.image == "bad":
                    self.store[t.id] = dataclasses.replace(t, status=TaskStatus("failed", err="exit 1", exit_code=1,
                                                                                timestamp=self.now))
                else:
                    self.store[t.id] = dataclasses.replace(t, status=TaskStatus("running", timestamp=self.now),
                                                           running_at=self.now)

    def until(self, predicate, rounds=200):
        for _ in range(rounds):
            if predicate():
                return
            self.round()
        raise AssertionError(f"not reached in {rounds} rounds: {self.svc.update_status}")

    # -- views ----------------------------------------------------------------------------------------
    def live(self):
        return [t for t in self.store.values() if is_live(t)]

    def state(self):
        return self.svc.update_status.state if self.svc.update_status else ""

    def created(self, version=None):
        return [t for _, p in self.history for t in p.create if version is None or t.spec_version == version]


def check_slots(svc, store):
    """At most two live tasks in a slot, and two only as a start-first pair: an old running one and
    its current successor."""
    by_slot: dict = {}
    for t in store.values():
        if is_live(t):
            by_slot.setdefault(t.slot or t.node_id, []).append(t)
    for key, ts in by_slot.items():
        assert len(ts) <= 2, f"slot {key} has {len(ts)} live tasks"
        if len(ts) == 2:
            old = [t for t in ts if t.spec_version != svc.spec_version]
            assert len(old) == 1 and old[0].status.state == "running", f"slot {key}: {ts}"


def converged(sim):
    live = sim.live()
    return (Counter(t.slot or t.node_id for t in live) == Counter({k: 1 for k in {t.slot or t.node_id for t in live}})
            and len(live) == (sim.svc.spec.replicas if sim.svc.spec.mode == "replicated" else len(sim.nodes))
            and all(t.spec_version == sim.svc.spec_version and t.status.state == "running" for t in live))


def settle(sim):
    sim.until(lambda: converged(sim) and sim.state() in ("", "completed", "rollback_completed"))


# -- order and batches ------------------------------------------------------------------------------------

def test_start_first_starts_the_successor_next_to_the_old_task_then_stops_the_old_one():
    sim = Sim(make_service(replicas=2, order="start-first", monitor=0.0))
    settle(sim)
    old_ids = {t.slot: t.id for t in sim.live()}
    sim.update("app:2")
    plan = sim.round()                   # the successor of slot 1; the old task stays (the agents run it)
    [new] = plan.create
    assert (new.slot, new.spec_version, plan.update) == (1, 2, [])
    assert {(t.id, t.status.state) for t in sim.live() if t.slot == 1} == {(old_ids[1], "running"),
                                                                           (new.id, "running")}
    plan = sim.round()                   # it runs: the old one is shut down, slot 2 gets its successor
    assert [(t.id, t.desired_state) for t in plan.update] == [(old_ids[1], "shutdown")]
    assert [t.slot for t in plan.create] == [2]
    settle(sim)
    assert sim.svc.update_status.state == "completed" and sim.svc.update_status.message == "update completed"


def test_stop_first_with_parallelism_two_replaces_two_slots_at_a_time():
    sim = Sim(make_service(replicas=4, parallelism=2, monitor=0.0))
    settle(sim)
    sim.update("app:2")
    plan = sim.round()
    assert sorted(t.slot for t in plan.create) == [1, 2]
    assert sorted(t.slot for t in plan.update) == [1, 2] and all(t.desired_state == "shutdown" for t in plan.update)
    busy_max = 0
    while not (converged(sim) and sim.state() == "completed"):
        sim.round()
        not_running = {t.slot for t in sim.store.values() if t.spec_version == 2 and is_live(t)
                       and t.status.state != "running"}
        busy_max = max(busy_max, len(not_running))
        assert len(sim.history) < 100
    assert busy_max <= 2
    assert [sorted(t.slot for t in p.create) for _, p in sim.history if p.create][-2:] == [[1, 2], [3, 4]]


def test_delay_waits_between_batches():
    sim = Sim(make_service(replicas=3, delay=5.0, monitor=0.0))
    settle(sim)
    sim.update("app:2")
    settle(sim)
    times = [now for now, p in sim.history if any(t.spec_version == 2 for t in p.create)]
    assert len(times) == 3 and all(b - a >= 5.0 for a, b in zip(times, times[1:]))
    # and no more than the delay plus a round or two for the start
    assert times[-1] - times[0] <= 2 * (5.0 + 3 * sim.step)


# -- failures -----------------------------------------------------------------------------------------

def test_pause_stops_after_the_first_batch_and_a_good_update_resumes():
    sim = Sim(make_service(replicas=4, failure_action="pause"))
    settle(sim)
    sim.update("bad")
    sim.until(lambda: sim.state() == "paused")
    first = sim.created(version=2)[0]     # (then restarts of its slot, by the restart policy)
    assert sim.svc.update_status.message == \
        f"update paused due to failure or early termination of task {first.id}"
    for _ in range(10):
        sim.round()
    # nothing more was replaced: the other slots still run the old version (the failed slot restarts)
    assert sorted(t.slot for t in sim.live() if t.spec_version == 1 and t.status.state == "running") == [2, 3, 4]
    assert {t.slot for t in sim.created(version=2)} == {1}
    sim.update("app:3")
    settle(sim)
    assert sim.svc.update_status.state == "completed" and all(t.spec.image == "app:3" for t in sim.live())


def test_continue_replaces_every_slot_despite_failures():
    sim = Sim(make_service(replicas=3, failure_action="continue"))
    settle(sim)
    sim.update("bad")
    sim.until(lambda: {t.slot for t in sim.created(version=2)} == {1, 2, 3})
    assert sim.state() == "updating"


def test_rollback_returns_to_the_previous_spec_with_the_rollback_config():
    svc = make_service(replicas=4, failure_action="rollback", monitor=2.0, parallelism=2)
    svc = dataclasses.replace(svc, spec=dataclasses.replace(svc.spec, rollback_config=UpdateConfig(
        parallelism=0, monitor=0.0)))
    sim = Sim(svc)
    settle(sim)
    untouched = {t.id for t in sim.live() if t.slot > 2}
    sim.update("bad")
    sim.until(lambda: sim.state() == "rollback_started")
    bad = max((t for t in sim.store.values() if t.status.state == "failed"), key=lambda t: (t.status.timestamp, t.id))
    reason = f"update rolled back due to failure or early termination of task {bad.id}"
    assert (sim.svc.spec_version, sim.svc.spec.container.image, sim.svc.previous_spec) == (1, "app:1", None)
    assert sim.svc.update_status.message == reason and sim.svc.last_spec_version == 2
    sim.until(lambda: sim.created(version=1))
    # the rollback config's parallelism 0: both updated slots at once
    assert sorted(t.slot for t in sim.history[-1][1].create) == [1, 2]
    settle(sim)
    assert sim.svc.update_status.state == "rollback_completed" and sim.svc.update_status.message == reason
    # the slots that never left version 1 kept their tasks; only the failed slot got a new one
    assert untouched <= {t.id for t in sim.live()}
    assert all(t.spec.image == "app:1" for t in sim.live())


def test_manual_rollback_rolls_back_only_the_updated_slots_and_a_second_one_swaps_back():
    sim = Sim(make_service(replicas=4, monitor=0.0, delay=100.0))
    settle(sim)
    sim.update("app:2")
    sim.until(lambda: any(t.spec_version == 2 and t.status.state == "running" for t in sim.live()))
    sim.rollback()     # slot 1 runs version 2, the others never left version 1
    keep = {t.id for t in sim.live() if t.spec_version == 1}
    before = len(sim.created(version=1))
    settle(sim)
    assert sim.svc.update_status.state == "rollback_completed" and len(sim.created(version=1)) == before + 1
    assert keep <= {t.id for t in sim.live()} and all(t.spec.image == "app:1" for t in sim.live())
    sim.rollback()     # the swap: back to version 2
    assert (sim.svc.spec_version, sim.svc.previous_spec_version) == (2, 1)
    settle(sim)
    assert all(t.spec.image == "app:2" and t.spec_version == 2 for t in sim.live())


# -- a new leader ----------------------------------------------------------------------------------

def strip_ids(plan):
    return ([(t.slot, t.node_id, t.spec_version, t.desired_state) for t in plan.create],
            sorted((t.id, t.desired_state, t.status.state) for t in plan.update), sorted(plan.delete), plan.service)


def test_a_new_leader_continues_the_update_from_the_store():
    sim = Sim(make_service(replicas=4, parallelism=2, delay=3.0, order="start-first", monitor=1.0))
    settle(sim)
    sim.update("app:2")
    for _ in range(4):
        sim.round()
    assert sim.state() == "updating"
    # another leader reads the same records: the same next step (its own task ids)
    other = reconcile(sim.svc, list(sim.store.values()), sim.nodes, sim.now, lambda: "other")
    assert strip_ids(other) == strip_ids(sim.reconcile())
    settle(sim)
    assert sim.state() == "completed" and converged(sim)


# -- property: no slot with zero or two live tasks once an update ends --------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_updates_end_with_one_live_current_task_per_slot(seed):
    rng = random.Random(seed)
    mode = rng.choice(["replicated", "replicated", "global"])
    sim = Sim(make_service(replicas=rng.randint(1, 6), mode=mode, monitor=rng.choice([0.0, 2.0])),
              nodes=rng.randint(1, 4), seed=seed)
    settle(sim)
    for n in range(rng.randint(1, 4)):
        sim.update(rng.choice(["app:2", "app:3", "bad"]), parallelism=rng.randint(0, 3),
                   delay=rng.choice([0.0, 2.0]), order=rng.choice(["stop-first", "start-first"]),
                   failure_action=rng.choice(["pause", "continue", "rollback"]))
        for _ in range(rng.randint(0, 12)):
            sim.round()
        if rng.random() < 0.3 and sim.svc.previous_spec is not None:
            sim.rollback()
            for _ in range(rng.randint(0, 5)):
                sim.round()
    sim.update(f"app:final{seed}", failure_action="pause")
    settle(sim)
    assert converged(sim) and sim.state() == "completed"

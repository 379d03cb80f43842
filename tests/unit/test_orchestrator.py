import dataclasses
import itertools
import random
from collections import Counter

import pytest

from swarm.manager.orchestrator import HISTORY_LIMIT, is_live, reconcile, stopping_slots
from swarm.manager.scheduler import NodeInfo, schedule
from swarm.api.spec import ContainerSpec, Resources, RestartPolicy, Service, ServiceSpec, Task, TaskStatus, is_terminal

NOW = 1000.0


def service(replicas=1, mode="replicated", restart=RestartPolicy(), version=1, constraints=(), image="img"):
    return Service("s1", ServiceSpec("web", ContainerSpec(image), mode=mode, replicas=replicas,
                                     constraints=tuple(constraints), restart=restart), spec_version=version)


def task(tid, slot=1, node_id="n1", state="running", desired="running", version=1, created=1.0, attempt=0,
         exit_code=None, ended=0.0):
    return Task(tid, "s1", "web", slot, node_id, desired, ContainerSpec("img"), version,
                TaskStatus(state, timestamp=ended, exit_code=exit_code), created_at=created, attempt=attempt)


def nodes(*ids, **kw):
    return [NodeInfo(i, f"host-{i}", **kw) for i in ids]


def ids():
    counter = itertools.count(1)
    return lambda: f"new{next(counter)}"


def run(svc, tasks, ns=None, now=NOW):
    return reconcile(svc, tasks, nodes("n1", "n2", "n3") if ns is None else ns, now, ids())


def updated(plan):
    return {t.id: t for t in plan.update}


# -- replicated: count and slots ------------------------------------------------------------------

def test_new_service_creates_one_task_per_slot():
    plan = run(service(replicas=3), [])
    assert [(t.slot, t.status.state, t.desired_state, t.node_id, t.attempt, t.not_before) for t in plan.create] == [
        (1, "new", "running", "", 0, 0.0), (2, "new", "running", "", 0, 0.0), (3, "new", "running", "", 0, 0.0)]
    assert all(t.spec_version == 1 and t.created_at == NOW and t.service_name == "web" for t in plan.create)
    assert plan.update == [] and plan.delete == []


def test_converged_service_needs_no_changes():
    plan = run(service(replicas=2), [task("a", 1), task("b", 2, "n2")])
    assert plan.create == [] and plan.update == [] and plan.delete == []


def test_scale_up_fills_the_lowest_free_slots():
    plan = run(service(replicas=4), [task("a", 1), task("c", 3)])
    assert sorted(t.slot for t in plan.create) == [2, 4]


def test_scale_down_shuts_down_highest_slots_first():
    tasks = [task(f"t{i}", i) for i in range(1, 6)]
    plan = run(service(replicas=2), tasks)
    assert sorted(updated(plan)) == ["t3", "t4", "t5"]
    assert all(t.desired_state == "shutdown" and t.status.state == "running" for t in plan.update)
    assert plan.create == []


def test_scale_down_takes_tasks_not_yet_running_before_running_ones():
    tasks = [task("t1", 1, "", state="pending"), task("t2", 2), task("t3", 3), task("t4", 4, state="preparing")]
    plan = run(service(replicas=2), tasks)
    up = updated(plan)
    assert sorted(up) == ["t1", "t4"]
    assert up["t1"].status.state == "shutdown"     # never reached a node: shut down outright
    assert up["t4"].status.state == "preparing"    # the agent stops it and reports


def test_scaled_down_slot_is_not_refilled_while_its_task_stops():
    tasks = [task("t1", 1), task("t2", 2, desired="shutdown")]
    assert run(service(replicas=1), tasks).create == []


def test_two_live_tasks_in_a_slot_keep_one():
    plan = run(service(), [task("a", 1, created=1), task("b", 1, state="starting", created=2)])
    assert list(updated(plan)) == ["b"] and plan.create == []


# -- restart policy -------------------------------------------------------------------------------

def failed(tid="a", attempt=0, exit_code=1, state="failed", ended=NOW - 1, created=1.0, version=1):
    return task(tid, state=state, attempt=attempt, exit_code=exit_code, ended=ended, created=created,
                version=version)


def test_restart_condition_none_never_replaces():
    svc = service(restart=RestartPolicy("none"))
    assert run(svc, [failed()]).create == []
    assert run(svc, [failed(state="complete", exit_code=0)]).create == []


def test_restart_on_failure_replaces_exit_1_but_not_exit_0():
    svc = service(restart=RestartPolicy("on-failure", delay=3))
    assert run(svc, [failed(state="complete", exit_code=0)]).create == []
    plan = run(svc, [failed(exit_code=1)])
    assert [(t.slot, t.attempt, t.not_before) for t in plan.create] == [(1, 1, NOW + 3)]
    assert len(run(svc, [failed(state="rejected", exit_code=None)]).create) == 1


def test_restart_any_replaces_completed_tasks_too():
    plan = run(service(restart=RestartPolicy("any", delay=0)), [failed(state="complete", exit_code=0, attempt=4)])
    assert [(t.attempt, t.not_before) for t in plan.create] == [(5, NOW)]


def test_restart_delay_sets_not_before_from_now():
    plan = run(service(restart=RestartPolicy("any", delay=7.5)), [failed()])
    assert plan.create[0].not_before == NOW + 7.5


def test_max_attempts_without_window_counts_restarts_forever():
    svc = service(restart=RestartPolicy("any", delay=0, max_attempts=2))
    assert run(svc, [failed(attempt=0)]).create[0].attempt == 1
    assert run(svc, [failed(attempt=1)]).create[0].attempt == 2
    assert run(svc, [failed(attempt=2)]).create == []


def test_max_attempts_within_window_counts_only_recent_ends():
    svc = service(restart=RestartPolicy("any", delay=0, max_attempts=2, window=60))
    recent = [failed("a", 0, ended=NOW - 50, created=1), failed("b", 1, ended=NOW - 30, created=2),
              failed("c", 2, ended=NOW - 1, created=3)]
    assert run(svc, recent).create == []           # three ends in the last 60 s: 2 restarts used up
    old = [failed("a", 0, ended=NOW - 500, created=1), failed("b", 1, ended=NOW - 30, created=2),
           failed("c", 2, ended=NOW - 1, created=3)]
    assert [t.attempt for t in run(svc, old).create] == [3]


def test_tasks_of_a_finished_slot_stay_and_keep_the_slot():
    svc = service(replicas=2, restart=RestartPolicy("none"))
    plan = run(svc, [failed("a"), task("b", 2)])
    assert plan.create == [] and plan.update == [] and plan.delete == []


# -- nodes going away -----------------------------------------------------------------------------

def test_node_down_replaces_task_at_once_without_delay_or_attempt():
    svc = service(replicas=2, restart=RestartPolicy("any", delay=30))
    tasks = [task("a", 1, "n1", attempt=3), task("b", 2, "n2")]
    plan = run(svc, tasks, nodes("n1", status="down") + nodes("n2"))
    assert [(t.id, t.desired_state, t.status.state) for t in plan.update] == [("a", "shutdown", "running")]
    assert [(t.slot, t.attempt, t.not_before, t.node_id) for t in plan.create] == [(1, 3, 0.0, "")]


def test_task_on_removed_node_is_replaced():
    plan = run(service(), [task("a", 1, "gone")])
    assert updated(plan)["a"].desired_state == "shutdown" and [t.slot for t in plan.create] == [1]


def test_orphaned_task_is_replaced_at_once():
    plan = run(service(restart=RestartPolicy("any", delay=30)), [task("a", state="orphaned", attempt=1)])
    assert [(t.attempt, t.not_before) for t in plan.create] == [(1, 0.0)]


def test_lost_task_being_shut_down_does_not_hold_its_slot():
    tasks = [task("a", 1, "n1", desired="shutdown"), task("b", 1, "n2", state="new", created=2),
             task("c", 2, "n2", desired="shutdown")]
    ns = nodes("n1", status="down") + nodes("n2")
    assert stopping_slots(tasks, ns) == {("s1", 2)}


def test_drain_moves_tasks_elsewhere():
    ns = nodes("n1", availability="drain") + nodes("n2")
    plan = run(service(replicas=2), [task("a", 1, "n1"), task("b", 2, "n2")], ns)
    assert list(updated(plan)) == ["a"] and [(t.slot, t.node_id) for t in plan.create] == [(1, "")]


def test_pause_keeps_existing_tasks():
    ns = nodes("n1", availability="pause")
    plan = run(service(replicas=1), [task("a", 1, "n1")], ns)
    assert plan.create == [] and plan.update == []


# -- rolling update -------------------------------------------------------------------------------

def test_rolling_update_replaces_one_task_at_a_time_stop_first():
    svc = service(replicas=3, version=2, image="img:2")
    tasks = [task("a", 1, "n1"), task("b", 2, "n2"), task("c", 3, "n3")]
    plan = run(svc, tasks)
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", "shutdown")]
    assert [(t.slot, t.spec_version, t.not_before, t.spec.image) for t in plan.create] == [(1, 2, 0.0, "img:2")]
    new = plan.create[0]
    stopping = [dataclasses.replace(tasks[0], desired_state="shutdown"), new] + tasks[1:]
    assert run(svc, stopping).update == []                      # the old one is still stopping
    stopped = [dataclasses.replace(stopping[0], status=TaskStatus("shutdown")), new] + tasks[1:]
    assert run(svc, stopped).update == []                       # its successor has not started yet
    started = stopped[:1] + [dataclasses.replace(new, node_id="n1", status=TaskStatus("running"))] + tasks[1:]
    plan = run(svc, started)
    assert [t.id for t in plan.update] == ["b"] and [t.slot for t in plan.create] == [2]


def test_rolling_update_takes_tasks_not_yet_running_first():
    svc = service(replicas=2, version=2)
    plan = run(svc, [task("a", 1), task("b", 2, "", state="pending")])
    assert [t.id for t in plan.update] == ["b"] and plan.update[0].status.state == "shutdown"


def test_update_reruns_a_finished_slot():
    svc = service(restart=RestartPolicy("none"), version=2)
    plan = run(svc, [failed(state="complete", exit_code=0)])
    assert [(t.slot, t.spec_version, t.attempt) for t in plan.create] == [(1, 2, 0)]


def test_restart_within_window_only_counts_the_current_spec_version():
    svc = service(restart=RestartPolicy("any", delay=0, max_attempts=1, window=60), version=2)
    tasks = [failed("a", 0, ended=NOW - 5, created=1), failed("b", 0, ended=NOW - 2, created=2, version=2)]
    assert len(run(svc, tasks).create) == 1


# -- global ---------------------------------------------------------------------------------------

def test_global_creates_one_task_per_eligible_node_with_node_preset():
    ns = (nodes("a", labels={"zone": "x"}) + nodes("b", labels={"zone": "y"}) + nodes("c", status="down")
          + nodes("d", availability="drain") + nodes("e", availability="pause") + nodes("f", labels={"zone": "x"}))
    plan = run(service(mode="global", constraints=["node.labels.zone==x"]), [], ns)
    assert sorted((t.node_id, t.slot) for t in plan.create) == [("a", 0), ("f", 0)]
    assert all(t.name == f"web.{t.node_id}" for t in plan.create)


def test_global_runs_only_on_nodes_of_the_images_platforms():
    from dataclasses import replace
    svc = service(mode="global")
    svc = replace(svc, spec=replace(svc.spec, platforms=("linux/arm64",)))
    ns = nodes("x", os="linux", arch="x86_64") + nodes("arm", os="linux", arch="aarch64") + nodes("unknown")
    plan = run(svc, [], ns)
    assert [t.node_id for t in plan.create] == ["arm"]
    plan = run(svc, [task("tx", 0, "x")], ns)                  # a task on a node of another platform goes
    assert list(updated(plan)) == ["tx"] and plan.update[0].desired_state == "shutdown"


def test_global_adds_a_task_for_a_new_node_and_drops_the_removed_one():
    svc = service(mode="global")
    tasks = [task("ta", 0, "a"), task("tgone", 0, "gone")]
    plan = run(svc, tasks, nodes("a", "b"))
    assert [t.node_id for t in plan.create] == ["b"]
    assert [(t.id, t.desired_state) for t in plan.update] == [("tgone", "shutdown")]
    plan = run(svc, [task("ta", 0, "a"), task("tgone", 0, "gone", desired="shutdown")], nodes("a"))
    assert plan.delete == ["tgone"]


def test_global_shuts_down_on_drain_and_constraint_change_but_keeps_paused():
    svc = service(mode="global", constraints=["node.role==worker"])
    ns = nodes("a", availability="drain") + nodes("b", role="manager") + nodes("c", availability="pause")
    plan = run(svc, [task("ta", 0, "a"), task("tb", 0, "b"), task("tc", 0, "c")], ns)
    assert sorted(updated(plan)) == ["ta", "tb"] and plan.create == []


def test_global_restarts_in_place():
    svc = service(mode="global", restart=RestartPolicy("on-failure", delay=2))
    plan = run(svc, [task("ta", 0, "a", state="failed", exit_code=2)], nodes("a"))
    assert [(t.node_id, t.attempt, t.not_before) for t in plan.create] == [("a", 1, NOW + 2)]


def test_global_rolling_update_one_node_at_a_time():
    svc = service(mode="global", version=2)
    plan = run(svc, [task("ta", 0, "a"), task("tb", 0, "b")], nodes("a", "b"))
    assert len(plan.update) == 1 and [(t.node_id, t.spec_version) for t in plan.create] == [
        (plan.update[0].node_id, 2)]


# -- history and deletion -------------------------------------------------------------------------

def test_history_is_trimmed_to_five_per_slot_with_the_live_task_oldest_first():
    tasks = [failed(f"h{i}", attempt=i, created=float(i), ended=float(i)) for i in range(8)]
    tasks += [task("live", 1, created=100.0, attempt=8)]
    plan = run(service(), tasks)
    # As SwarmKit's task reaper: five tasks a slot in all, the live one and the four newest ended
    assert sorted(plan.delete) == ["h0", "h1", "h2", "h3"] and HISTORY_LIMIT == 5
    assert plan.create == [] and plan.update == []


def test_history_kept_per_node_for_global_services():
    tasks = [task(f"{n}{i}", 0, n, state="shutdown", desired="shutdown", created=float(i))
             for n in ("a", "b") for i in range(7)] + [task("la", 0, "a", created=50), task("lb", 0, "b", created=50)]
    plan = run(service(mode="global"), tasks, nodes("a", "b"))
    assert sorted(plan.delete) == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_deleted_service_shuts_down_live_tasks_and_deletes_terminal_ones():
    tasks = [task("run", 1), task("unclaimed", 2, "", state="pending"), task("done", 3, state="failed"),
             task("stopping", 4, desired="shutdown"), task("lost", 5, "gone")]
    plan = reconcile(None, tasks, nodes("n1"), NOW, ids())
    up = updated(plan)
    assert sorted(up) == ["run", "unclaimed"]
    assert up["run"].desired_state == "shutdown" and up["run"].status.state == "running"
    assert up["unclaimed"].status.state == "shutdown"
    assert sorted(plan.delete) == ["done", "lost"] and plan.create == []


# -- property: convergence ------------------------------------------------------------------------

def _apply(store, plan):
    for t in plan.create + plan.update:
        store[t.id] = t
    for tid in plan.delete:
        store.pop(tid, None)


def _live_per_slot(store):
    return Counter(t.slot for t in store.values() if is_live(t))


def _agents(store, ns, now):
    up = {n.id for n in ns if n.status == "ready"}
    for t in list(store.values()):
        if t.node_id not in up or is_terminal(t.status.state) or t.status.state in ("new", "pending"):
            continue
        state = "running" if t.desired_state == "running" else "shutdown"
        if t.status.state != state:
            store[t.id] = dataclasses.replace(t, status=TaskStatus(state, timestamp=now))


def _schedule(store, ns, svc, rng, now):
    stopping = stopping_slots(list(store.values()), ns)
    pending = [t for t in store.values() if t.desired_state == "running" and t.status.state in ("new", "pending")
               and t.not_before <= now and (t.service_id, t.slot or t.node_id) not in stopping]
    live = [t for t in store.values() if t.node_id and is_live(t)]
    plan = schedule(pending, ns, live, {svc.id: svc}, rng)
    for tid, node_id in plan.assignments.items():
        store[tid] = dataclasses.replace(store[tid], node_id=node_id, status=TaskStatus("assigned", timestamp=now))


def _chaos(rng, store, ns, svc, now):
    roll = rng.random()
    if roll < 0.15:
        return ns, dataclasses.replace(svc, spec=dataclasses.replace(svc.spec, replicas=rng.randint(0, 8)))
    if roll < 0.25:
        return ns, dataclasses.replace(svc, spec_version=svc.spec_version + 1)
    if roll < 0.45:
        i = rng.randrange(len(ns))
        changed = dataclasses.replace(ns[i], status=rng.choice(["ready", "ready", "down"]),
                                      availability=rng.choice(["active", "active", "pause", "drain"]))
        return ns[:i] + [changed] + ns[i + 1:], svc
    running = [t for t in store.values() if t.status.state == "running"]
    if running:
        victim = rng.choice(running)
        state, code = rng.choice([("failed", 1), ("complete", 0), ("orphaned", None)])
        store[victim.id] = dataclasses.replace(victim, status=TaskStatus(state, timestamp=now, exit_code=code))
    return ns, svc


@pytest.mark.parametrize("seed", range(200))
def test_service_converges_to_replicas_live_tasks_one_per_slot_never_two(seed):
    rng = random.Random(seed)
    ns = [NodeInfo(f"n{i}", f"host{i}", resources=Resources(8 * 10 ** 9, 8 << 30)) for i in range(rng.randint(1, 4))]
    svc = Service("s1", ServiceSpec("web", ContainerSpec("img"), replicas=rng.randint(0, 6),
                                    restart=RestartPolicy("any", delay=rng.choice([0.0, 1.0, 3.0]))))
    store: dict[str, Task] = {}
    new_id = (lambda c: lambda: f"t{next(c)}")(itertools.count())
    now = 1000.0
    for step in range(120):
        if step < 40 and rng.random() < 0.5:
            ns, svc = _chaos(rng, store, ns, svc, now)
        if step == 40:   # calm: at least one usable node
            ns[0] = dataclasses.replace(ns[0], status="ready", availability="active")
        _apply(store, reconcile(svc, list(store.values()), ns, now, new_id))
        assert max(_live_per_slot(store).values(), default=0) <= 1, f"two live tasks in one slot at step {step}"
        _schedule(store, ns, svc, rng, now)
        _agents(store, ns, now)
        now += 1.0
    live = [t for t in store.values() if is_live(t)]
    assert sorted(t.slot for t in live) == sorted(set(t.slot for t in live))
    assert len(live) == svc.spec.replicas
    assert all(t.status.state == "running" and t.spec_version == svc.spec_version for t in live)
    assert all(len([t for t in store.values() if t.slot == s and is_terminal(t.status.state)]) <= HISTORY_LIMIT
               for s in {t.slot for t in store.values()})


@pytest.mark.parametrize("seed", range(50))
def test_global_service_converges_to_one_live_task_per_eligible_node(seed):
    rng = random.Random(seed)
    ns = [NodeInfo(f"n{i}", f"host{i}", labels={"zone": rng.choice("ab")}) for i in range(rng.randint(1, 5))]
    svc = Service("s1", ServiceSpec("agent", ContainerSpec("img"), mode="global",
                                    constraints=rng.choice([(), ("node.labels.zone==a",)]),
                                    restart=RestartPolicy("any", delay=1.0)))
    store: dict[str, Task] = {}
    new_id = (lambda c: lambda: f"t{next(c)}")(itertools.count())
    now = 1000.0
    for step in range(80):
        if step < 30 and rng.random() < 0.5:
            roll = rng.random()
            if roll < 0.2:
                svc = dataclasses.replace(svc, spec_version=svc.spec_version + 1)
            elif roll < 0.35 and len(ns) > 1:
                ns.pop(rng.randrange(len(ns)))
            elif roll < 0.5:
                ns.append(NodeInfo(f"n{len(ns)}-{step}", "h", labels={"zone": rng.choice("ab")}))
            else:
                ns, svc = _chaos(rng, store, ns, svc, now)
        if step == 30:
            ns = [dataclasses.replace(n, status="ready", availability=rng.choice(["active", "drain"])) for n in ns]
        _apply(store, reconcile(svc, list(store.values()), ns, now, new_id))
        live = Counter(t.node_id for t in store.values() if is_live(t))
        assert max(live.values(), default=0) <= 1, f"two live tasks on one node at step {step}"
        _schedule(store, ns, svc, rng, now)
        _agents(store, ns, now)
        now += 1.0
    want = {n.id for n in ns if n.availability == "active" and (not svc.spec.constraints or n.labels["zone"] == "a")}
    live = [t for t in store.values() if is_live(t)]
    assert sorted(t.node_id for t in live) == sorted(want)
    assert all(t.status.state == "running" and t.spec_version == svc.spec_version and t.slot == 0 for t in live)


# -- jobs (SwarmKit's jobs orchestrator) ------------------------------------------------------------

def job(replicas=5, concurrent=2, mode="replicated-job", restart=RestartPolicy("any", delay=0), iteration=0,
        constraints=(), labels=None):
    return Service("s1", ServiceSpec("batch", ContainerSpec("img"), mode=mode, replicas=replicas,
                                     max_concurrent=concurrent, restart=restart, constraints=tuple(constraints),
                                     labels=labels or {}), job_iteration=iteration)


def job_task(tid, slot=1, node_id="n1", state="running", iteration=0, attempt=0, exit_code=None, created=1.0,
             desired="running"):
    return dataclasses.replace(task(tid, slot, node_id, state, desired, created=created, attempt=attempt,
                                    exit_code=exit_code, ended=NOW - 1), job_iteration=iteration)


def test_a_replicated_job_starts_max_concurrent_tasks_of_its_iteration_with_the_service_labels():
    plan = run(job(replicas=5, concurrent=2, iteration=3, labels={"team": "data"}), [])
    assert [(t.slot, t.job_iteration, t.service_labels) for t in plan.create] == [
        (1, 3, {"team": "data"}), (2, 3, {"team": "data"})]


def test_max_concurrent_zero_runs_every_replica_at_once():
    assert sorted(t.slot for t in run(job(replicas=4, concurrent=0), []).create) == [1, 2, 3, 4]


def test_a_completed_slot_is_never_rerun_and_frees_its_place_for_the_next_slot():
    tasks = [job_task("a", 1, state="complete", exit_code=0), job_task("b", 2)]
    plan = run(job(replicas=5, concurrent=2, restart=RestartPolicy("any", delay=0)), tasks)
    assert [t.slot for t in plan.create] == [3]
    done = [job_task(f"t{i}", i, state="complete", exit_code=0) for i in range(1, 6)]
    assert run(job(replicas=5, concurrent=2), done) == run(job(replicas=5, concurrent=2), done)
    plan = run(job(replicas=5, concurrent=2), done)
    assert plan.create == [] and plan.update == []


def test_a_failed_task_is_restarted_in_its_slot_and_keeps_its_place():
    tasks = [job_task("a", 1, state="failed", exit_code=1), job_task("b", 2)]
    plan = run(job(replicas=5, concurrent=2, restart=RestartPolicy("on-failure", delay=4)), tasks)
    assert [(t.slot, t.attempt, t.not_before) for t in plan.create] == [(1, 1, NOW + 4)]


def test_a_failed_task_the_policy_gives_up_on_stays_failed_and_frees_its_place():
    tasks = [job_task("a", 1, state="failed", exit_code=1), job_task("b", 2)]
    plan = run(job(replicas=3, concurrent=2, restart=RestartPolicy("none")), tasks)
    assert [t.slot for t in plan.create] == [3]
    tasks = [job_task("a", 1, state="failed", exit_code=1, attempt=2), job_task("b", 2, state="complete", exit_code=0)]
    plan = run(job(replicas=2, concurrent=2, restart=RestartPolicy("any", max_attempts=2)), tasks)
    assert plan.create == []


def test_a_task_on_a_lost_node_is_replaced_at_once_without_counting_an_attempt():
    plan = run(job(replicas=1), [job_task("a", 1, node_id="gone")])
    assert updated(plan)["a"].desired_state == "shutdown"
    assert [(t.slot, t.attempt, t.not_before) for t in plan.create] == [(1, 0, 0.0)]


def test_a_new_iteration_reruns_every_slot_and_stops_the_old_iterations_tasks():
    tasks = [job_task("a", 1, state="complete", exit_code=0), job_task("b", 2), job_task("c", 3, state="pending",
                                                                                           node_id="")]
    plan = run(job(replicas=3, concurrent=3, iteration=1), tasks)
    assert sorted(t.slot for t in plan.create) == [1, 2, 3] and all(t.job_iteration == 1 for t in plan.create)
    up = updated(plan)
    assert sorted(up) == ["b", "c"] and all(t.desired_state == "shutdown" for t in up.values())
    assert up["c"].status.state == "shutdown"   # never reached a node


def test_global_job_runs_once_on_each_eligible_node():
    ns = nodes("n1", "n2") + nodes("n3", availability="drain") + nodes("n4", availability="pause") + \
        nodes("n5", status="down")
    svc = job(mode="global-job", replicas=0, concurrent=0, labels={"k": "v"}, iteration=2)
    plan = run(svc, [], ns)
    assert [(t.node_id, t.slot, t.job_iteration, t.service_labels) for t in plan.create] == [
        ("n1", 0, 2, {"k": "v"}), ("n2", 0, 2, {"k": "v"})]
    done = [dataclasses.replace(t, status=TaskStatus("complete", exit_code=0)) for t in plan.create]
    plan = run(svc, done, ns + nodes("n6"))
    assert [t.node_id for t in plan.create] == ["n6"]     # a node that joins runs it too, the others are done


def test_global_job_restarts_a_failed_task_on_its_node_and_stops_tasks_on_ineligible_nodes():
    svc = job(mode="global-job", replicas=0, concurrent=0, constraints=["node.labels.zone==a"],
              restart=RestartPolicy("on-failure", delay=2))
    ns = [NodeInfo("n1", "h1", labels={"zone": "a"}), NodeInfo("n2", "h2", labels={"zone": "b"})]
    plan = run(svc, [job_task("a", 0, "n1", state="failed", exit_code=2), job_task("b", 0, "n2")], ns)
    assert [(t.node_id, t.attempt, t.not_before) for t in plan.create] == [("n1", 1, NOW + 2)]
    assert updated(plan)["b"].desired_state == "shutdown"


def test_regular_services_carry_the_service_labels_too():
    svc = dataclasses.replace(service(replicas=1), spec=dataclasses.replace(service().spec, labels={"a": "b"}))
    assert run(svc, []).create[0].service_labels == {"a": "b"}


def _agents_finish(store, rng, now):
    """Workers: a placed task runs; a running one ends (mostly completing, sometimes failing)."""
    for t in list(store.values()):
        if t.desired_state != "running" and not is_terminal(t.status.state) and t.node_id:
            store[t.id] = dataclasses.replace(t, status=TaskStatus("shutdown", timestamp=now))
        elif t.status.state == "assigned":
            store[t.id] = dataclasses.replace(t, status=TaskStatus("running", timestamp=now))
        elif t.status.state == "running" and rng.random() < 0.4:
            state, code = ("complete", 0) if rng.random() < 0.75 else ("failed", 1)
            store[t.id] = dataclasses.replace(t, status=TaskStatus(state, timestamp=now, exit_code=code))


@pytest.mark.parametrize("seed", range(60))
def test_replicated_job_never_runs_more_than_max_concurrent_and_completes_every_slot(seed):
    rng = random.Random(seed)
    ns = [NodeInfo(f"n{i}", f"host{i}") for i in range(rng.randint(1, 4))]
    total, concurrent = rng.randint(1, 8), rng.randint(0, 4)
    svc = job(replicas=total, concurrent=concurrent, restart=RestartPolicy(rng.choice(["any", "on-failure"]),
                                                                          delay=rng.choice([0.0, 2.0])))
    limit = concurrent or total
    store: dict[str, Task] = {}
    new_id = (lambda c: lambda: f"t{next(c)}")(itertools.count())
    now = 1000.0
    for step in range(400):
        _apply(store, reconcile(svc, list(store.values()), ns, now, new_id))
        assert len([t for t in store.values() if is_live(t)]) <= limit, f"too many live tasks at step {step}"
        _schedule(store, ns, svc, rng, now)
        _agents_finish(store, rng, now)
        now += 1.0
    complete = [t for t in store.values() if t.status.state == "complete"]
    assert sorted(t.slot for t in complete) == list(range(1, total + 1))
    assert not [t for t in store.values() if is_live(t)]

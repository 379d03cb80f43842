"""The update supervisor alone: slots and tasks in, a decision out, time as a parameter."""
import dataclasses

from swarm.api.spec import ContainerSpec, Service, ServiceSpec, Task, TaskStatus, UpdateConfig, UpdateStatus
from swarm.manager.updater import (ROLLBACK_COMPLETED, UPDATE_COMPLETED, UPDATE_STARTED, Decision, SlotView,
                                   decide, failures, service_after)

NOW = 1000.0
STARTED = 900.0


def service(version=2, state="updating", previous=True, rollback=None, **update):
    s = ServiceSpec("web", ContainerSpec("img:2"), replicas=4, update_config=UpdateConfig(**update),
                    rollback_config=rollback or UpdateConfig())
    status = UpdateStatus(state, STARTED, 0.0, UPDATE_STARTED) if state else None
    return Service("s1", s, spec_version=version, last_spec_version=version, update_status=status,
                   previous_spec=ServiceSpec("web", ContainerSpec("img:1"), replicas=4) if previous else None,
                   previous_spec_version=1 if previous else 0)


def task(tid, slot, version=1, state="running", created=1.0, running_at=0.0, ended=0.0, desired="running"):
    return Task(tid, "s1", "web", slot, "n1", desired, ContainerSpec("img"), version,
                TaskStatus(state, timestamp=ended), created_at=created, running_at=running_at)


def old(slot, state="running"):
    return SlotView(slot, old=task(f"o{slot}", slot, state=state))


def new(slot, state="running", running_at=950.0, created=STARTED + 1):
    return SlotView(slot, new=task(f"n{slot}", slot, version=2, state=state, created=created,
                                   running_at=running_at if state == "running" else 0.0))


def pair(slot, state="pending"):
    return SlotView(slot, old=old(slot).old, new=new(slot, state).new)


def tasks_of(views):
    return [t for v in views for t in (v.old, v.new) if t is not None]


def run(svc, views, extra=(), now=NOW):
    return decide(svc, views, tasks_of(views) + list(extra), now)


# -- which slots, how many --------------------------------------------------------------------------

def test_parallelism_one_replaces_one_slot_not_yet_running_ones_first():
    views = [old(1), old(2, "starting"), old(3)]
    assert run(service(), views) == Decision(stop_first=(2,))


def test_parallelism_counts_slots_whose_new_task_is_not_running_yet():
    svc = service(parallelism=2)
    assert run(svc, [old(1), old(2), old(3), old(4)]).stop_first == (1, 2)
    assert run(svc, [new(1, "pending"), old(2), old(3), old(4)]).stop_first == (2,)
    assert run(svc, [new(1, "pending"), new(2, "starting"), old(3), old(4)]).stop_first == ()
    assert run(svc, [new(1), new(2, "assigned"), old(3), old(4)]).stop_first == (3,)


def test_parallelism_zero_replaces_every_slot_at_once():
    assert run(service(parallelism=0), [old(1), old(2), old(3)]).stop_first == (1, 2, 3)


def test_a_slot_that_may_not_start_a_task_waits():
    views = [dataclasses.replace(old(1), may_start=False), old(2)]
    assert run(service(), views).stop_first == (2,)


def test_delay_keeps_a_slot_busy_after_its_task_runs():
    svc = service(delay=10.0)
    views = [new(1, running_at=995.0), old(2), old(3)]
    assert run(svc, views, now=1000.0).stop_first == ()
    assert run(svc, views, now=1004.9).stop_first == ()
    assert run(svc, views, now=1005.0).stop_first == (2,)
    # two workers: each waits its own delay
    svc = service(delay=10.0, parallelism=2)
    views = [new(1, running_at=995.0), new(2, running_at=999.0), old(3), old(4)]
    assert run(svc, views, now=1005.0).stop_first == (3,)
    assert run(svc, views, now=1009.0).stop_first == (3, 4)


# -- start-first --------------------------------------------------------------------------------------

def test_start_first_keeps_a_running_old_task_until_its_successor_runs():
    svc = service(order="start-first", parallelism=2)
    assert run(svc, [old(1), old(2, "preparing")]) == Decision(stop_first=(2,), start_first=(1,))
    assert run(svc, [pair(1), old(3)]) == Decision(start_first=(3,))
    assert run(svc, [pair(1, "running"), old(3)]).retire == (1,)


def test_a_pair_is_retired_even_while_the_update_is_paused():
    svc = service(state="paused", order="start-first")
    assert run(svc, [pair(1, "running"), old(2)]) == Decision(retire=(1,))


# -- failures -----------------------------------------------------------------------------------------

def failed(tid, slot, running_at=0.0, ended=NOW - 1, created=STARTED + 1, version=2, state="failed"):
    return task(tid, slot, version=version, state=state, created=created, running_at=running_at, ended=ended)


def test_a_failure_pauses_the_update_naming_the_task():
    views = [old(2), old(3), old(4)]
    d = run(service(), views, [failed("bad1", 1)])
    assert d.status == UpdateStatus("paused", STARTED, 0.0,
                                    "update paused due to failure or early termination of task bad1")
    assert (d.stop_first, d.start_first, d.rollback) == ((), (), False)
    # paused: nothing more until the user updates again
    paused = dataclasses.replace(service(), update_status=d.status)
    assert run(paused, views, [failed("bad1", 1)]) == Decision()


def test_what_counts_as_a_failure():
    svc = service(monitor=5.0)
    cfg = svc.spec.update_config
    counted = [failed("never-ran", 1), failed("early", 2, running_at=990.0, ended=994.0),
               failed("completed", 3, state="complete"), failed("rejected", 4, state="rejected")]
    ignored = [failed("late", 1, running_at=980.0, ended=990.0),              # ran past the monitor period
               failed("old-version", 2, version=1),                           # not this update's spec
               failed("before", 3, created=STARTED - 1),                      # from before the update started
               failed("orphaned", 4, state="orphaned"),                       # its node's fault
               dataclasses.replace(failed("stopped", 4), desired_state="shutdown")]  # stopped on purpose
    # oldest failure first: the last one is the task the status names
    assert [t.id for t in failures(svc, counted + ignored, cfg, STARTED)] == [
        "early", "completed", "never-ran", "rejected"]


def test_the_failure_ratio_tolerates_failures_up_to_it():
    svc = service(max_failure_ratio=0.25)
    views = [old(1), old(2), old(3), old(4)]
    assert run(svc, views, [failed("f1", 1)]).stop_first == (1,)          # 1/4 is not above 0.25
    assert run(svc, views, [failed("f1", 1), failed("f2", 2)]).status.state == "paused"


def test_continue_goes_on_past_failures():
    d = run(service(failure_action="continue"), [old(2), old(3)], [failed("f1", 1), failed("f2", 1)])
    assert d.stop_first == (2,) and d.status is None


def test_rollback_returns_the_service_to_its_previous_spec():
    svc = service(failure_action="rollback")
    d = run(svc, [old(2), old(3)], [failed("bad1", 1)])
    assert d.rollback and (d.stop_first, d.start_first) == ((), ())
    assert d.status == UpdateStatus("rollback_started", STARTED, 0.0,
                                    "update rolled back due to failure or early termination of task bad1")
    back = service_after(svc, d, NOW)
    assert (back.spec, back.spec_version, back.previous_spec, back.previous_spec_version) == (
        svc.previous_spec, 1, None, 0)
    assert back.last_spec_version == 2 and back.update_status == d.status


def test_a_rollback_is_never_rolled_back_it_pauses():
    svc = service(version=1, state="rollback_started",
                  rollback=UpdateConfig(failure_action="rollback"), failure_action="rollback")
    failing = failed("r1", 1, version=1)
    d = run(svc, [SlotView(2, old=task("o2", 2, version=2))], [failing])
    assert not d.rollback and d.status.state == "rollback_paused"
    assert d.status.message == "rollback paused due to failure or early termination of task r1"


def test_during_a_rollback_the_rollback_config_applies():
    svc = service(version=1, state="rollback_started", rollback=UpdateConfig(parallelism=0, order="start-first"))
    views = [SlotView(k, old=task(f"o{k}", k, version=2)) for k in (1, 2, 3)]
    assert run(svc, views).start_first == (1, 2, 3)


# -- start and completion -----------------------------------------------------------------------------

def test_old_tasks_without_an_update_status_start_one():
    d = run(service(state=""), [old(1), old(2)])
    assert d.stop_first == (1,) and d.status == UpdateStatus("updating", NOW, 0.0, UPDATE_STARTED)


def test_nothing_happens_without_old_tasks_or_an_update():
    assert run(service(state=""), [new(1, "pending"), new(2)]) == Decision()
    assert run(service(state="completed"), [new(1, "pending"), new(2)]) == Decision()


def test_completes_one_monitor_period_after_the_last_replacement_runs():
    svc = service(monitor=5.0)
    views = [new(1, running_at=990.0), new(2, running_at=996.0)]
    assert run(svc, views, now=1000.0) == Decision()
    d = run(svc, views, now=1001.0)
    assert d.status == UpdateStatus("completed", STARTED, 1001.0, UPDATE_COMPLETED)
    assert run(svc, [new(1), new(2, "starting")], now=2000.0) == Decision()     # still in flight
    manual = service(version=1, state="rollback_started")
    d = run(manual, [SlotView(1, new=task("t1", 1, created=1.0))], now=NOW)
    assert d.status == UpdateStatus("rollback_completed", STARTED, NOW, ROLLBACK_COMPLETED)
    reason = "update rolled back due to failure or early termination of task bad1"
    automatic = dataclasses.replace(manual, update_status=dataclasses.replace(manual.update_status, message=reason))
    d = run(automatic, [SlotView(1, new=task("t1", 1, created=1.0))], now=NOW)
    assert d.status == UpdateStatus("rollback_completed", STARTED, NOW, reason)


def test_a_failure_within_the_last_monitor_period_still_acts():
    svc = service(monitor=5.0)
    d = run(svc, [new(1, running_at=998.0)], [failed("late-bad", 2, running_at=996.0, ended=999.0)])
    assert d.status.state == "paused"


def test_the_decision_depends_only_on_its_inputs():
    """A new leader reads the same records: it decides the same next step."""
    views = [new(1, "pending"), old(2), old(3), old(4)]
    svc = service(parallelism=2, delay=1.0)
    assert run(svc, views) == run(svc, list(views)) == Decision(stop_first=(2,))

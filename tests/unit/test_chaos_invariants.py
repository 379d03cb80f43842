"""The invariants (chaos/invariants.py) on recorded data, without a lab."""
from types import SimpleNamespace

from chaos import invariants as inv
from chaos.linearizability import FAIL, OK, READ, UNKNOWN, WRITE, Op


def w(value, start, end, outcome=OK, key="k", client=1):
    return Op(client, WRITE, value, start, end, outcome, key)


def obs(at, host, term, leader):
    return SimpleNamespace(at=at, host=host, term=term, leader=leader)


# -- 1. linearizable -------------------------------------------------------------------------


def test_linearizable_names_the_stale_read():
    ops = [w("a", 0, 1), w("b", 2, 3), Op(2, READ, "a", 4, 5, OK, "k")]
    verdict = inv.linearizable(ops)
    assert not verdict.held and "returned 'a'" in verdict.evidence
    assert verdict.details["op"]["value"] == "a"
    assert inv.linearizable(ops[:2]).held


# -- 2. no lost write --------------------------------------------------------------------------


def test_the_last_acknowledged_value_or_a_later_one_is_fine():
    ops = [w("a", 0, 1), w("b", 2, 3), w("c", 2.5, None, UNKNOWN)]
    for value in ("b", "c"):
        assert inv.no_lost_write(ops, ["k"], {"h1": {"k": value}, "h2": {"k": value}}).held


def test_a_value_older_than_an_acknowledged_write_is_a_lost_write():
    ops = [w("a", 0, 1), w("b", 2, 3)]
    verdict = inv.no_lost_write(ops, ["k"], {"h1": {"k": "b"}, "h2": {"k": "a"}})
    assert not verdict.held
    assert "manager h2" in verdict.evidence and "'b' was acknowledged" in verdict.evidence
    assert verdict.details["host"] == "h2"


def test_concurrent_acknowledged_writes_may_end_either_way():
    ops = [w("a", 0, 5), w("b", 1, 6, client=2)]
    assert inv.no_lost_write(ops, ["k"], {"h1": {"k": "a"}}).held
    assert inv.no_lost_write(ops, ["k"], {"h1": {"k": "b"}}).held


def test_a_failed_write_must_not_be_visible_and_nothing_unwritten_either():
    ops = [w("a", 0, 1), w("x", 2, 3, FAIL)]
    assert "failed" in inv.no_lost_write(ops, ["k"], {"h1": {"k": "x"}}).evidence
    assert not inv.no_lost_write([], ["k"], {"h1": {"k": "ghost"}}).held
    assert inv.no_lost_write([], ["k"], {"h1": {"k": None}}).held


def test_an_unreadable_manager_is_a_violation():
    verdict = inv.no_lost_write([w("a", 0, 1)], ["k"], {"h1": {"k": "a"}, "h2": None})
    assert not verdict.held and "h2" in verdict.evidence


def test_registers_are_checked_one_by_one():
    ops = [w("a", 0, 1, key="k1"), w("b", 0, 1, key="k2")]
    verdict = inv.no_lost_write(ops, ["k1", "k2"], {"h1": {"k1": "a", "k2": None}})
    assert not verdict.held and verdict.details["key"] == "k2"


# -- 3. one leader per term ---------------------------------------------------------------------


def test_one_leader_per_term_holds_across_elections():
    seen = [obs(0, "h1", 2, "h1"), obs(0.1, "h2", 2, "h1"), obs(1, "h2", 3, ""), obs(2, "h3", 3, "h2"),
            obs(2.1, "h2", 3, "h2")]
    verdict = inv.one_leader_per_term(seen)
    assert verdict.held and "terms 2-3" in verdict.evidence


def test_two_leaders_in_one_term_are_reported_with_both_observations():
    verdict = inv.one_leader_per_term([obs(0, "h1", 4, "h1"), obs(0.5, "h3", 4, "h3")])
    assert not verdict.held
    assert "term 4 had two leaders" in verdict.evidence and "h1" in verdict.evidence and "h3" in verdict.evidence


# -- 4. convergence -----------------------------------------------------------------------------


def task(tid, slot, desired="running", state="running"):
    return {"id": tid, "slot": slot, "desired_state": desired, "state": state}


def test_a_converged_service_has_one_task_and_one_container_per_slot():
    tasks = [task("t1", 1), task("t2", 2), task("t0", 1, "shutdown", "shutdown")]
    assert inv.slot_problems(tasks, {"h1": ["t1"], "h2": ["t2"]}, 2) == []


def test_a_slot_running_twice_is_found_in_the_tasks_and_in_the_containers():
    tasks = [task("t1", 1), task("t2", 2), task("t3", 2, state="orphaned")]
    problems = inv.slot_problems(tasks, {"h1": ["t1", "t3"], "h2": ["t2"]}, 2)
    assert problems == ["slot 2 runs 2 containers: t3 on h1, t2 on h2"]
    problems = inv.slot_problems([task("t1", 1), task("t2", 1)], {"h1": ["t1"]}, 1)
    assert "slot 1 has 2 running tasks (t1 on None: desired running, state running; t2 on None: desired running, " \
           "state running)" in problems


def test_a_slot_without_a_running_task_names_the_tasks_it_has():
    rows = [dict(task("t1", 1, "shutdown", "running"), node="h2"),
            dict(task("t2", 1, state="rejected"), node="h3", error="No such image: app:9")]
    problems = inv.slot_problems(rows, {"h2": ["t1"]}, 1)
    assert problems == ["slot 1 has 0 running tasks (t1 on h2: desired shutdown, state running; t2 on h3: desired "
                        "running, state rejected, error No such image: app:9)"]


def test_missing_slots_and_containers_are_problems():
    problems = inv.slot_problems([task("t1", 1)], {}, 2)
    assert "slot 2 has 0 running tasks" in problems
    assert "slot 1 has no running container (its task t1 runs on None per the managers; the runtime: no " \
           "container there)" in problems


def test_a_task_running_without_a_container_quotes_the_runtime():
    rows = [dict(task("t1", 1), node="h2")]
    problems = inv.slot_problems(rows, {"h2": []}, 1, {"h2": {"t1": "stopped: the shim is gone"}})
    assert problems == ["slot 1 has no running container (its task t1 runs on h2 per the managers; "
                        "the runtime: stopped: the shim is gone)"]


def test_converged_verdict():
    assert inv.converged([], 1.5, 45).held
    verdict = inv.converged(["slot 1 has 0 running tasks"], None, 45)
    assert not verdict.held and "not converged 45 s after heal: slot 1" in verdict.evidence


# -- 5. crashes and leftovers ------------------------------------------------------------------


def test_a_crash_names_the_host_and_quotes_its_log():
    verdict = inv.no_crash({"h2": (123, 4.5)}, [], {"h2": ["...", "Traceback: boom"]})
    assert not verdict.held and "h2 (pid 123)" in verdict.evidence and "boom" in verdict.evidence
    verdict = inv.no_crash({}, ["namespace swl-x-h1"], {})
    assert not verdict.held and "swl-x-h1" in verdict.evidence
    assert inv.no_crash({}, [], {}).held


def test_a_daemon_that_kept_running_on_a_full_disk_is_a_violation():
    verdict = inv.no_crash({}, [], {}, ["h3"])
    assert not verdict.held and "h3 kept running on a full disk" in verdict.evidence
    assert verdict.details == {"kept_running_on_full_disk": ["h3"]}

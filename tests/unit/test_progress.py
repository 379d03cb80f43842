"""The CLI's progress (swarm/cli/progress.py) against a scripted daemon: a job's exact lines,
when the wait ends, a job that cannot complete failing at once; an update followed by its
UpdateStatus (completed: exit 0; paused or rolled back: the command fails with the reason)."""
from __future__ import annotations

from typing import Any

import pytest

from swarm.cli import progress
from swarm.cli.progress import (GIVE_UP_POLLS, JOB_STATE_PROGRESS, MAX_JOB_PROGRESS, UpdateFollow, UpdateVerdict,
                                Waiter, bar, read_update_status)

SID = "svc1"


class ScriptedDaemon:
    """service.ps answers one list of rows per call (the last repeats); service.inspect the view."""

    def __init__(self, view: dict, *answers: list[dict]) -> None:
        self.view, self.answers, self.calls = view, list(answers), []

    def call(self, method: str, params: dict) -> Any:
        self.calls.append(method)
        if method == "service.inspect":
            return [self.view]
        assert method == "service.ps" and params == {"refs": [SID]}
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(progress, "_sleep", lambda seconds: None)


def job_view(replicas=3, concurrent=0, mode="replicated-job", iteration=0, condition="any", max_attempts=0):
    return {"id": SID, "job_iteration": iteration,
            "spec": {"mode": mode, "replicas": replicas, "max_concurrent": concurrent,
                     "restart": {"condition": condition, "delay": 5.0, "max_attempts": max_attempts, "window": 0.0}}}


def row(tid, slot, state, node="n1", error="", exit_code=None, iteration=0, desired="running"):
    return {"id": tid, "name": f"job.{slot or node}", "image": "img", "node": node, "desired_state": desired,
            "current_state": state, "error": error, "service_id": SID, "slot": slot, "node_id": node,
            "state": state, "exit_code": exit_code, "job_iteration": iteration}


def job_bar(state):
    return bar(JOB_STATE_PROGRESS[state], MAX_JOB_PROGRESS)


def waiter(daemon, mode="replicated-job", timeout=60.0):
    return Waiter(daemon, SID, "job", mode, None, None, False, timeout)


def test_replicated_job_progress_until_every_slot_completed(capsys):
    daemon = ScriptedDaemon(
        job_view(replicas=3, concurrent=2),
        [row("a", 1, "running"), row("b", 2, "pending")],
        [row("a", 1, "complete"), row("b", 2, "running"), row("c", 3, "running")],
        [row("a", 1, "complete"), row("b", 2, "complete"), row("c", 3, "complete")])
    assert waiter(daemon).wait() is None
    out = capsys.readouterr().out.splitlines()
    assert out[:5] == [f"job progress: 0 out of 3 complete {bar(0, 3)}",
                       "active tasks: 2 out of 2 tasks",
                       f"1/3: running   {job_bar('running')}",
                       f"2/3: pending   {job_bar('pending')}",
                       f"job progress: 1 out of 3 complete {bar(1, 3)}"]
    assert f"3/3: complete  {job_bar('complete')}" in out
    assert "active tasks: 0 out of 0 tasks" in out
    assert out[-1] == "job complete"
    assert daemon.calls.count("service.inspect") == 1


def test_tasks_of_an_earlier_iteration_do_not_count():
    daemon = ScriptedDaemon(
        job_view(replicas=1, iteration=2),
        [row("old", 1, "complete", iteration=1), row("new", 1, "running", iteration=2)],
        [row("old", 1, "complete", iteration=1), row("new", 1, "complete", iteration=2)])
    w = Waiter(daemon, SID, "job", "replicated-job", None, None, True, 60.0)
    assert w.poll(daemon.call("service.ps", {"refs": [SID]})) is False
    assert w.poll(daemon.call("service.ps", {"refs": [SID]})) is True


def test_a_failed_task_is_shown_and_its_restart_awaited(capsys):
    daemon = ScriptedDaemon(
        job_view(replicas=1),
        [row("a", 1, "failed", exit_code=3)],
        [row("a2", 1, "running"), row("a", 1, "failed", exit_code=3)],
        [row("a2", 1, "complete"), row("a", 1, "failed", exit_code=3)])
    assert waiter(daemon).wait() is None
    out = capsys.readouterr().out
    assert "1/1: task: non-zero exit (3)\n" in out and out.endswith("job complete\n")


def test_a_job_whose_restart_policy_gives_up_fails_at_once_naming_the_error():
    failed = [row("a", 1, "complete"), row("b", 2, "failed", error="task: non-zero exit (1)", exit_code=1)]
    daemon = ScriptedDaemon(job_view(replicas=2, condition="none"), failed)
    w = Waiter(daemon, SID, "job", "replicated-job", None, None, True, 60.0)
    assert w.wait() == ("job job cannot complete: task 2/2 failed and its restart policy gives up: "
                        "task: non-zero exit (1)")
    assert daemon.calls.count("service.ps") == GIVE_UP_POLLS


def test_attempts_used_up_give_up_but_attempts_left_wait():
    failures = [row(f"f{i}", 1, "failed", exit_code=1) for i in range(3)]
    gives_up = Waiter(ScriptedDaemon(job_view(replicas=1, max_attempts=2), failures), SID, "job", "replicated-job",
                      None, None, True, 60.0)
    assert "cannot complete" in gives_up.wait()
    waits = Waiter(ScriptedDaemon(job_view(replicas=1, max_attempts=3), failures), SID, "job", "replicated-job",
                   None, None, True, 0.0)
    assert waits.wait() == "service job did not complete in 0s: task: non-zero exit (1)"


def test_global_job_waits_for_tasks_then_for_every_node_it_started_on(capsys):
    daemon = ScriptedDaemon(
        job_view(mode="global-job", replicas=0),
        [],
        [row("a", 0, "running", node="n1"), row("b", 0, "complete", node="n2")],
        [row("a", 0, "complete", node="n1"), row("b", 0, "complete", node="n2"), row("c", 0, "running", node="n3")])
    assert waiter(daemon, mode="global-job").wait() is None
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "job progress: waiting for tasks"
    assert f"n1: running   {job_bar('running')}" in out and f"n2: complete  {job_bar('complete')}" in out
    assert f"job progress: 2 out of 2 complete {bar(2, 2)}" in out   # n3 came later: not waited for
    assert out[-1] == "job complete"


# -- following an update by its UpdateStatus ---------------------------------------------------

BEFORE = {"state": "completed", "started_at": 100.0, "completed_at": 110.0, "message": "update completed"}


def status(state, message="", started=200.0):
    return {"state": state, "started_at": started, "completed_at": 0.0, "message": message}


def svc_row(tid, slot, state, version, desired="running"):
    return {"id": tid, "name": f"web.{slot}", "image": "img", "node": "n1", "desired_state": desired,
            "current_state": state, "error": "", "service_id": SID, "slot": slot, "node_id": "n1",
            "state": state, "exit_code": None, "spec_version": version}


class UpdateDaemon:
    """Per poll: service.inspect answers the next view, service.ps the next rows (the last repeat)."""

    def __init__(self, *polls: tuple[dict, list[dict]]) -> None:
        self.polls, self.calls, self.index = list(polls), [], -1

    def call(self, method: str, params: dict) -> Any:
        self.calls.append(method)
        if method == "service.inspect":
            self.index = min(self.index + 1, len(self.polls) - 1)
            return [self.polls[self.index][0]]
        assert method == "service.ps" and params == {"refs": [SID]}
        return self.polls[self.index][1]


def view(version, update_status):
    return {"id": SID, "spec_version": version, "update_status": update_status,
            "spec": {"mode": "replicated", "replicas": 2}}


def update_waiter(daemon, rollback=False, quiet=False, timeout=60.0, before=()):
    return Waiter(daemon, SID, "web", "replicated", 2, None, quiet, timeout, before=before,
                  update=UpdateFollow(BEFORE, rollback=rollback))


def test_a_status_as_it_was_before_the_command_says_nothing_of_this_update():
    follow = UpdateFollow(BEFORE)
    assert read_update_status(BEFORE, follow) == UpdateVerdict()
    assert read_update_status(None, follow) == UpdateVerdict()
    assert read_update_status(status("updating"), follow) == UpdateVerdict(busy=True)
    assert read_update_status(status("paused", "update paused due to failure or early termination of task t9"),
                              follow).failure == ("service update paused: update paused due to failure or early "
                                                  "termination of task t9")
    assert read_update_status(status("rollback_paused", "why"), follow).failure == "service rollback paused: why"
    assert read_update_status(status("rollback_started", "m"), follow) == UpdateVerdict(
        busy=True, rolling_back=True, message="m")


def test_an_update_is_followed_until_its_status_says_completed(capsys):
    old, new = 1, 2
    daemon = UpdateDaemon(
        (view(new, BEFORE), [svc_row("a", 1, "running", old), svc_row("b", 2, "running", old)]),   # not begun
        (view(new, status("updating")), [svc_row("a2", 1, "running", new), svc_row("b", 2, "running", old)]),
        # every task runs the new version, but the daemon has not said completed yet: not converged
        (view(new, status("updating")), [svc_row("a2", 1, "running", new), svc_row("b2", 2, "running", new)]),
        (view(new, status("completed", "update completed")),
         [svc_row("a2", 1, "running", new), svc_row("b2", 2, "running", new)]))
    assert update_waiter(daemon).wait() is None
    out = capsys.readouterr().out.splitlines()
    assert out.count("overall progress: 2 out of 2 tasks") == 1 and out[-1] == "verify: Service converged"
    assert "overall progress: 0 out of 2 tasks" in out and "overall progress: 1 out of 2 tasks" in out
    assert daemon.calls == ["service.inspect", "service.ps"] * 4


def test_a_paused_update_fails_the_command_at_once_with_the_reason():
    reason = "update paused due to failure or early termination of task t7"
    daemon = UpdateDaemon(
        (view(2, status("updating")), [svc_row("a", 1, "starting", 2), svc_row("b", 2, "running", 1)]),
        (view(2, status("paused", reason)), [svc_row("a", 1, "failed", 2), svc_row("b", 2, "running", 1)]))
    assert update_waiter(daemon, quiet=True).wait() == f"service update paused: {reason}"
    assert daemon.calls == ["service.inspect", "service.ps", "service.inspect"]


def test_an_update_that_rolls_back_is_followed_to_the_end_then_fails_with_its_reason(capsys):
    reason = "update rolled back due to failure or early termination of task t7"
    daemon = UpdateDaemon(
        (view(2, status("updating")), [svc_row("a", 1, "starting", 2), svc_row("b", 2, "running", 1)]),
        # the rollback: back to version 1; slot 1 rolls back
        (view(1, status("rollback_started", reason)), [svc_row("a", 1, "failed", 2, "shutdown"),
                                                        svc_row("a1", 1, "starting", 1), svc_row("b", 2, "running", 1)]),
        (view(1, status("rollback_completed", "rollback completed")),
         [svc_row("a1", 1, "running", 1), svc_row("b", 2, "running", 1)]))
    assert update_waiter(daemon).wait() == f"service update rolled back: {reason}"
    out = capsys.readouterr().out.splitlines()
    assert f"rollback: {reason}" in out
    assert "overall progress: rolling back update: 1 out of 2 tasks" in out
    assert out[-2:] == ["verify: Service converged", "rollback: rollback completed"]


def test_a_requested_rollback_converges_and_a_paused_one_fails():
    done = UpdateDaemon(
        (view(1, status("rollback_started", "manually requested rollback")),
         [svc_row("a", 1, "running", 2), svc_row("b", 2, "running", 1)]),
        (view(1, status("rollback_completed", "rollback completed")),
         [svc_row("a1", 1, "running", 1), svc_row("b", 2, "running", 1)]))
    assert update_waiter(done, rollback=True, quiet=True).wait() is None
    paused = UpdateDaemon((view(1, status("rollback_paused", "rollback paused due to failure")), []))
    assert update_waiter(paused, rollback=True, quiet=True).wait() == (
        "service rollback paused: rollback paused due to failure")


def test_start_first_shows_the_new_task_of_a_slot_with_two():
    # start-first: the old task still runs next to its running successor; the slot counts as updated
    daemon = UpdateDaemon((view(2, status("completed", "update completed")),
                           [svc_row("a", 1, "running", 1), svc_row("a2", 1, "running", 2),
                            svc_row("b2", 2, "running", 2)]))
    assert update_waiter(daemon, quiet=True).wait() is None


def test_a_rollback_that_outlives_the_timeout_names_the_update_s_failure():
    reason = "update rolled back due to failure or early termination of task t7"
    daemon = UpdateDaemon((view(1, status("rollback_started", reason)),
                           [svc_row("a", 1, "failed", 2, "shutdown"), svc_row("a1", 1, "pending", 1),
                            svc_row("b", 2, "running", 1)]))
    assert update_waiter(daemon, quiet=True, timeout=0.0).wait() == (
        f"service web did not converge in 0s: task failed ({reason})")

"""The CLI's job progress (swarm/cli/progress.py) against a scripted daemon: the exact
lines drawn, when the wait ends, and a job that cannot complete failing at once."""
from __future__ import annotations

from typing import Any

import pytest

from swarm.cli import progress
from swarm.cli.progress import GIVE_UP_POLLS, JOB_STATE_PROGRESS, MAX_JOB_PROGRESS, Waiter, bar

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

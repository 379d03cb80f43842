"""The agent's healthchecks against the in-memory runtime, a fake manager and trio's
MockClock (see test_agent.py for why the clock jumps only after a few real
milliseconds): a task with a healthcheck stays starting until its first healthy
check, fails once retries checks failed after its start period, a hanging check
counts as a failure at its timeout, and a re-adopted task is monitored again."""
from __future__ import annotations

import dataclasses
import signal

import pytest
import trio

from swarm.api import health, spec
from swarm.api.spec import HealthConfig
from swarm.runtime.base import ExecResult
from swarm.runtime.fake import HANG, KILL_EXIT, TERM_EXIT, FakeRuntime
from tests.unit.test_agent import (FakeManager, FakeNetworking, clock, make_task, reported,  # noqa: F401 (fixture)
                                   running_agent)

pytestmark = pytest.mark.trio
FAIL = ExecResult(1, "not yet")
OK = ExecResult(0, "fine")


def with_health(task: spec.Task, config: HealthConfig | None) -> spec.Task:
    return dataclasses.replace(task, spec=dataclasses.replace(task.spec, healthcheck=config))


def exec_times(runtime: FakeRuntime, task_id: str) -> list[float]:
    """When each check began, relative to the first."""
    times = [at for tid, _, _, at in runtime.execs if tid == task_id]
    return [round(t - times[0], 6) for t in times]


def health_reports(manager: FakeManager, task_id: str) -> list[tuple[str, str]]:
    return [(status.state, status.health) for _, tid, status in manager.reports if tid == task_id]


async def test_a_task_that_passes_its_check_is_starting_until_then_running_and_healthy(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    runtime.exec_default = OK
    task = with_health(make_task("t1"), HealthConfig(("CMD-SHELL", "wget -q localhost"), interval=3.0))
    async with running_agent(runtime, manager):
        manager.put(task)
        await manager.until_state("t1", "starting")
        starting_at = manager.last("t1")[0]
        await manager.until_state("t1", "running")
        running_at, status = manager.last("t1")
    assert reported(health_reports(manager, "t1"), [("accepted", ""), ("preparing", ""), ("ready", ""),
                                                    ("starting", "starting"), ("running", "healthy")])
    assert ("starting", "starting") in health_reports(manager, "t1")   # it was, for 3 s
    assert status.message == "started"
    [(_, argv, timeout, _)] = runtime.execs
    assert argv == ("/bin/sh", "-c", "wget -q localhost") and timeout == health.DEFAULT_TIMEOUT
    # The first check runs one interval after the start (no start period): not before.
    assert 3.0 <= running_at - starting_at < 3.5


async def test_a_task_whose_check_fails_retries_times_after_its_start_period_fails(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    runtime.exec_default = FAIL
    config = HealthConfig(("CMD", "check"), interval=2.0, start_period=10.0, start_interval=1.0, retries=3)
    async with running_agent(runtime, manager):
        manager.put(with_health(make_task("t1"), config))
        await manager.until_state("t1", "failed")
    # Checks every start interval within the start period (not counted), then every interval;
    # the third counted failure (at 14 s) is the end: no check after it.
    assert exec_times(runtime, "t1") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13]
    # (starting, unhealthy) came right before the end in the same call: the manager records no
    # health of a task that is not running, so only the end went.
    assert health_reports(manager, "t1")[-2:] == [("starting", "starting"), ("failed", "unhealthy")]
    _, status = manager.last("t1")
    assert status.err == "task: non-zero exit (143): dockerexec: unhealthy container"
    assert status.exit_code == TERM_EXIT
    assert runtime.containers["t1"].signals == [signal.SIGTERM]   # stopped as a shut down task is
    assert "running" not in manager.states("t1")


async def test_failures_within_the_start_period_do_not_count(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    config = HealthConfig(("CMD", "check"), interval=5.0, start_period=10.0, start_interval=1.0, retries=1)
    task = with_health(make_task("t1"), config)
    async with running_agent(runtime, manager):
        manager.put(task)
        await manager.until_state("t1", "starting")
        await runtime.until(lambda: "t1" in runtime.containers and runtime.containers["t1"].status == "running")
        runtime.script_exec("t1", *[FAIL] * 8, OK)
        await manager.until_state("t1", "running")
    assert len(runtime.execs) == 9 and "failed" not in manager.states("t1")
    assert health_reports(manager, "t1")[-1] == ("running", "healthy")


async def test_a_hanging_check_is_killed_at_its_timeout_and_counts_as_a_failure(clock) -> None:
    runtime, manager = FakeRuntime(term_exit=None), FakeManager()   # it also ignores SIGTERM
    runtime.exec_default = OK
    config = HealthConfig(("CMD", "check"), interval=1.0, timeout=2.0, retries=2)
    async with running_agent(runtime, manager):
        manager.put(with_health(make_task("t1", grace=4.0), config))
        await manager.until_state("t1", "running")
        runtime.script_exec("t1", HANG, OK, HANG, HANG)
        await manager.until_state("t1", "failed")
    # healthy, hang (2 s, streak 1), ok (streak 0), hang, hang (streak 2): unhealthy.
    assert exec_times(runtime, "t1") == [0, 1, 4, 5, 8]
    _, status = manager.last("t1")
    assert status.err == "task: non-zero exit (137): dockerexec: unhealthy container"
    assert status.exit_code == KILL_EXIT and runtime.containers["t1"].signals == [signal.SIGTERM, signal.SIGKILL]
    assert health_reports(manager, "t1")[-3:] == [("running", "healthy"), ("running", "unhealthy"),
                                                  ("failed", "unhealthy")]


async def test_the_images_healthcheck_runs_unless_the_service_disables_it(clock) -> None:
    image = {"demo:1": HealthConfig(("CMD", "probe"), interval=1.0)}
    runtime, manager = FakeRuntime(image_health=image), FakeManager()
    async with running_agent(runtime, manager):
        manager.put(make_task("t1"))
        manager.put(dataclasses.replace(with_health(make_task("t2"), HealthConfig(("NONE",))), slot=2))
        await manager.until_state("t1", "running")
        await manager.until_state("t2", "running")
    assert [(tid, argv) for tid, argv, _, _ in runtime.execs] == [("t1", ("probe",))]
    assert health_reports(manager, "t2")[-1] == ("running", "")


async def test_a_shut_down_task_stops_its_checks(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    runtime.exec_default = FAIL
    config = HealthConfig(("CMD", "check"), interval=1.0, start_period=100.0, start_interval=1.0)
    async with running_agent(runtime, manager):
        manager.put(with_health(make_task("t1"), config))
        await runtime.until(lambda: len(runtime.execs) >= 3)
        manager.desire("t1", "shutdown")
        await manager.until_state("t1", "shutdown")
        checks = len(runtime.execs)
        await trio.sleep(10)
    assert len(runtime.execs) == checks and manager.states("t1")[-1] == "shutdown"


async def test_a_re_adopted_task_gets_its_monitor_back(clock) -> None:
    config = HealthConfig(("CMD", "check"), interval=1.0, retries=2)
    earlier = FakeRuntime()
    for tid in ("t1", "t2"):
        earlier.prepare(tid, dataclasses.replace(make_task(tid).spec, healthcheck=config), spec.Resources(), None)
        earlier.start(tid)
    runtime, manager = FakeRuntime(), FakeManager()
    runtime.adopt_from(earlier)
    manager.put(make_task("t1", state="starting"))                              # not healthy yet
    manager.put(dataclasses.replace(make_task("t2", state="running"), slot=2))  # was healthy
    runtime.script_exec("t2", FAIL, FAIL)
    async with running_agent(runtime, manager):
        await manager.until_state("t1", "running")
        await manager.until_state("t2", "failed")
    assert ("start", "t1") not in runtime.calls and manager.states("t1") == ["running"]
    assert health_reports(manager, "t1") == [("running", "healthy")]
    assert manager.last("t2")[1].err == "task: non-zero exit (143): dockerexec: unhealthy container"

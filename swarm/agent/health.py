"""The I/O side of a task's healthcheck: run the checks in its container and
hand each change of its health to the task's controller.

How this works. `run_checks` sleeps for the delay the pure monitor
(swarm.api.health.Monitor) asks for, runs the check with the runtime's `exec`
(which kills a check at its timeout), gives the result to the monitor, and
calls `on_change` when the health changed. It returns once the task turned
unhealthy; the controller cancels it when the task stops. Times come from
trio's clock, so unit tests run it on a mock clock.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from swarm.api import health
from swarm.runtime.base import ContainerRuntime, ExecResult

log = logging.getLogger(__name__)


async def run_checks(runtime: ContainerRuntime, task_id: str, monitor: health.Monitor,
                     on_change: Callable[[str], Awaitable[None]]) -> None:
    """Check the task's health until it is unhealthy (then return) or the caller cancels."""
    check = monitor.check
    while monitor.status != health.UNHEALTHY:
        await trio.sleep(monitor.next_delay(trio.current_time()))
        start = trio.current_time()
        try:
            result = await runtime.exec(task_id, check.argv, check.timeout)
        except Exception as exc:  # the check could not run (the container is stopping): a failure, as Docker's
            result = ExecResult(-1, str(exc))
        change = monitor.record(health.Result(start, trio.current_time(), result.exit_code, result.output))
        if change is not None:
            log.info("task %s is %s (last check: exit %s, %r)", task_id, change, result.exit_code,
                     result.output[:200])
            await on_change(change)

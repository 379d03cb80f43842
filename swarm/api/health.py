"""Healthchecks as Docker runs them: the effective check of a task, and the
decisions of its monitor. Pure: no I/O, no clock (times are parameters).

How this works. `effective` merges the service's HealthConfig over the
image's HEALTHCHECK field by field, as Docker's daemon merges a container's
config over its image's (an empty test or a zero duration takes the image's
value), then fills Docker's defaults; ["NONE"] (or no test at all) means no
healthcheck. CMD runs its arguments, CMD-SHELL runs `/bin/sh -c COMMAND`.

`Monitor` is the state machine of one task's health (Docker's
daemon/health.go): it starts as `starting`; a check exiting 0 makes it
`healthy` and clears the failing streak; any other result (a non-zero exit,
a check killed at its timeout, a check that could not run) adds one to the
streak, except while the task is still `starting` within its start period;
`retries` consecutive counted failures make it `unhealthy`, which is final
(the agent stops the task). The next check runs `start_interval` after the
last one while the task is starting within its start period, else
`interval` after it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

from swarm.api.spec import HealthConfig

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
DEFAULT_INTERVAL = 30.0        # Docker's defaultProbeInterval
DEFAULT_TIMEOUT = 30.0         # defaultProbeTimeout
DEFAULT_START_PERIOD = 0.0     # defaultStartPeriod
DEFAULT_START_INTERVAL = 5.0   # defaultStartInterval
DEFAULT_RETRIES = 3            # defaultProbeRetries
MAX_OUTPUT = 4096              # bytes of a check's output kept (Docker's maxOutputLen)
MAX_LOG = 5                    # results kept per task (Docker's maxLogEntries)
SHELL = ("/bin/sh", "-c")      # what CMD-SHELL runs (Docker's default shell on Linux)
UNHEALTHY_CAUSE = "dockerexec: unhealthy container"   # SwarmKit's ErrContainerUnhealthy


@dataclass(frozen=True)
class Check:
    """A task's effective healthcheck: what runs in its container, and when (seconds)."""
    argv: tuple[str, ...]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    start_period: float = DEFAULT_START_PERIOD
    start_interval: float = DEFAULT_START_INTERVAL
    retries: int = DEFAULT_RETRIES

    def to_dict(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "interval": self.interval, "timeout": self.timeout,
                "start_period": self.start_period, "start_interval": self.start_interval, "retries": self.retries}

    @staticmethod
    def from_dict(data: Any) -> Check | None:
        """The check kept in a bundle (meta.json); None for none, or for a record that is not one."""
        if not isinstance(data, dict):
            return None
        try:
            argv = tuple(str(a) for a in data["argv"])
            check = Check(argv, float(data["interval"]), float(data["timeout"]), float(data["start_period"]),
                          float(data["start_interval"]), int(data["retries"]))
        except (KeyError, TypeError, ValueError):
            return None
        return check if argv else None


def image_config(test: Sequence[str], interval: int, timeout: int, start_period: int, start_interval: int,
                 retries: int) -> HealthConfig:
    """An image's HEALTHCHECK (durations in nanoseconds, as the image config keeps them) as a HealthConfig."""
    return HealthConfig(tuple(test), interval / 1e9, timeout / 1e9, start_period / 1e9, start_interval / 1e9,
                        retries)


def effective(service: HealthConfig | None, image: HealthConfig | None) -> Check | None:
    """The check a task runs: the service's settings over the image's, then Docker's defaults;
    None when there is none (no test, or ["NONE"]). Raises ValueError, naming the setting,
    for values Docker refuses."""
    merged = image or HealthConfig()
    if service is not None:
        merged = HealthConfig(
            test=service.test or merged.test,
            interval=service.interval or merged.interval,
            timeout=service.timeout or merged.timeout,
            start_period=service.start_period or merged.start_period,
            start_interval=service.start_interval or merged.start_interval,
            retries=service.retries or merged.retries)
    for name in ("interval", "timeout", "start_period", "start_interval"):
        value = getattr(merged, name)
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"the healthcheck {name.replace('_', ' ')} must be a duration of 0 or more, not {value!r}")
    if merged.retries < 0:
        raise ValueError(f"the healthcheck retries cannot be negative ({merged.retries})")
    test = merged.test
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        argv = tuple(test[1:])
    elif test[0] == "CMD-SHELL":
        argv = (*SHELL, *test[1:])
    else:
        raise ValueError(f"the healthcheck test starts with {test[0]!r}, not NONE, CMD or CMD-SHELL")
    if not test[1:] or not test[1]:
        raise ValueError(f"the healthcheck {test[0]} has no command")
    return Check(argv, merged.interval or DEFAULT_INTERVAL, merged.timeout or DEFAULT_TIMEOUT,
                 merged.start_period or DEFAULT_START_PERIOD, merged.start_interval or DEFAULT_START_INTERVAL,
                 merged.retries or DEFAULT_RETRIES)


def timeout_output(timeout: float) -> str:
    """What a check killed at its timeout reports (Docker's text, with Go's duration format)."""
    return f"Health check exceeded timeout ({_go_duration(timeout)})"


def unhealthy_error(exit_code: int | None) -> str:
    """The task's error once an unhealthy container stopped, as SwarmKit's exitError says it."""
    return f"task: non-zero exit ({-1 if exit_code is None else exit_code}): {UNHEALTHY_CAUSE}"


@dataclass(frozen=True)
class Result:
    start: float          # when the check began (the monitor's clock)
    end: float
    exit_code: int        # 0 healthy; anything else (-1: killed at its timeout, or could not run) a failure
    output: str


class Monitor:
    """One task's health, decided from check results (see the module docstring)."""

    def __init__(self, check: Check, started_at: float, status: str = STARTING) -> None:
        if status not in (STARTING, HEALTHY):
            raise ValueError(f"a health monitor starts as starting or healthy, not {status!r}")
        self.check = check
        self.started_at = started_at      # when the container started: the start period counts from it
        self.status = status
        self.failing_streak = 0
        self.log: deque[Result] = deque(maxlen=MAX_LOG)

    def next_delay(self, now: float) -> float:
        """Seconds from `now` (the end of the last check, or the monitor's start) to the next check."""
        in_start_period = now - self.started_at < self.check.start_period
        return self.check.start_interval if in_start_period and self.status == STARTING else self.check.interval

    def record(self, result: Result) -> str | None:
        """Take one check's result; the new status when it changed, else None."""
        if self.status == UNHEALTHY:
            raise ValueError("an unhealthy task's monitor takes no more results")
        self.log.append(result)
        before = self.status
        if result.exit_code == 0:
            self.failing_streak = 0
            self.status = HEALTHY
        elif not (self.status == STARTING and result.start - self.started_at < self.check.start_period):
            self.failing_streak += 1
            if self.failing_streak >= self.check.retries:
                self.status = UNHEALTHY
        return self.status if self.status != before else None


def _go_duration(seconds: float) -> str:
    """Go's time.Duration.String() for the common cases: 30s, 1.5s, 500ms, 1m0s."""
    if seconds < 1:
        return f"{round(seconds * 1000, 6):g}ms"
    if seconds < 60:
        return f"{round(seconds, 9):g}s"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{minutes}m{round(rest, 9):g}s"
    return f"{hours}h{text}" if hours else text

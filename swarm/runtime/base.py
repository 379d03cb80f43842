"""The seam between the worker agent and a container runtime backend.

The agent drives one container per task through `ContainerRuntime`:
prepare -> start -> (state | wait | logs) -> stop -> remove. Everything a
backend knows about a task lives on disk under its root, so a new runtime
object (a restarted agent) finds, inspects and stops the containers an earlier
one started (`list` + `state`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, NamedTuple, Protocol, Sequence

from swarm.api.spec import ContainerSpec, Resources

if TYPE_CHECKING:
    from swarm.runtime.logfile import Chunk, Cursor

CREATED, RUNNING, STOPPED, MISSING = "created", "running", "stopped", "missing"


@dataclass(frozen=True)
class ContainerState:
    status: str                    # created | running | stopped | missing
    pid: int | None = None         # the container's init process, as seen from the host
    exit_code: int | None = None   # set when stopped and known
    error: str = ""                # why it never started, or why the exit code is unknown
    finished_at: float | None = None


class LogEntry(NamedTuple):
    timestamp: str                 # RFC 3339 with nanoseconds, UTC ("2024-05-01T12:00:00.123456789Z")
    stream: str                    # stdout | stderr
    line: str                      # without the trailing newline


class ContainerRuntime(Protocol):
    def prepare(self, task_id: str, container: ContainerSpec, limits: Resources, netns_path: str | None, *,
                hostname: str | None = None, dns: Sequence[str] = ..., dns_search: Sequence[str] = (),
                dns_options: Sequence[str] = ..., hosts: Sequence[tuple[str, str]] = ()) -> None: ...

    def start(self, task_id: str) -> None: ...

    def state(self, task_id: str) -> ContainerState: ...

    async def wait(self, task_id: str) -> int | None: ...

    def kill(self, task_id: str, signal: int) -> None: ...

    def stop(self, task_id: str, grace: float) -> None: ...

    async def stop_async(self, task_id: str, grace: float) -> None: ...

    def remove(self, task_id: str) -> None: ...

    def list(self) -> list[str]: ...

    def logs(self, task_id: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[LogEntry]: ...

    def log_chunk(self, task_id: str, cursor: Cursor | None, *, tail: int | None = None, follow: bool = False,
                  budget: int = ...) -> Chunk: ...

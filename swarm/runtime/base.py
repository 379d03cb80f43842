"""The seam between the worker agent and a container runtime backend.

The agent drives one container per task through `ContainerRuntime`:
prepare -> start -> (state | wait | logs | exec) -> stop -> remove. Everything a
backend knows about a task lives on disk under its root, so a new runtime
object (a restarted agent) finds, inspects and stops the containers an earlier
one started (`list` + `state`).

Two backends implement it: `swarm.runtime.runc.Runtime` (the real one, used
by daemons and integration tests) and `swarm.runtime.fake.FakeRuntime` (in
memory, for unit tests and simulation). Plain methods may block (they run
runc, mount, read files): the agent calls them in a worker thread; the
coroutine methods are awaited on the event loop and may be cancelled.

Errors: every method raises `ContainerError` (swarm.runtime.errors) with one
sentence for the user; `prepare` raises its subclass `SpecError` when the
task's spec cannot run on this node as given (retrying cannot help).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, NamedTuple, Protocol, Sequence

from swarm.api.health import Check
from swarm.api.spec import ContainerSpec, FileReference, Resources

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


class ExecResult(NamedTuple):
    exit_code: int                 # the process's; -1 when it was killed at its timeout or could not run
    output: str                    # its stdout and stderr together, at most health.MAX_OUTPUT bytes ("..." if cut)


class ContainerRuntime(Protocol):
    """One container per task id; what the agent, the daemon's log reader and the lab ask of a backend."""

    def prepare(self, task_id: str, container: ContainerSpec, limits: Resources, netns_path: str | None, *,
                hostname: str | None = None, dns: Sequence[str] = ..., dns_search: Sequence[str] = (),
                dns_options: Sequence[str] = ..., hosts: Sequence[tuple[str, str]] = (),
                files: Sequence[tuple[FileReference, bytes, str]] = ()) -> None:
        """Make the task's container ready to start (status `created`), joined to the network
        namespace at `netns_path` (None: a namespace of its own). A prepared, never started
        container is prepared again; a started one is refused (remove it first). `files`: the
        task's secrets and configs, (reference, value, "secret" | "config"): each a read-only
        file at its target (swarm.api.secrets.target_path) with the reference's uid, gid and
        mode; a secret's value is never written to the node's disk (a tmpfs)."""

    def start(self, task_id: str) -> None:
        """Start a prepared container; returns once it runs (`running`), or raises when its
        process could not start (the state then says why, with status `stopped`)."""

    def state(self, task_id: str) -> ContainerState:
        """The container's state now; `missing` for a task id this backend does not know."""

    async def wait(self, task_id: str) -> int | None:
        """Until the started container stops: its exit code (None when it cannot be known).
        Raises for an unknown or never started task."""

    async def exec(self, task_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        """Run `argv` in the running container as its process runs (user, groups, environment,
        working directory, capabilities) and wait for it; past `timeout` seconds it is killed
        with what it started, and the result is (-1, "Health check exceeded timeout (...)").
        Cancelling the caller kills it too. Raises when the container does not run."""

    def healthcheck(self, task_id: str) -> Check | None:
        """The task's effective healthcheck as `prepare` decided it (kept with the container, so a
        restarted agent monitors it too); None when it has none."""

    def kill(self, task_id: str, signal: int) -> None:
        """Send `signal` to the container's init process; raises when it does not run."""

    def stop(self, task_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL once `grace` seconds have passed; returns when the container
        stopped. A container that is not running (created, stopped, missing) is left as it is."""

    async def stop_async(self, task_id: str, grace: float) -> None:
        """`stop` for trio callers: its waits can be cancelled."""

    def remove(self, task_id: str) -> None:
        """Kill the container if it runs and forget it (state `missing`). Idempotent."""

    def list(self) -> list[str]:
        """The task ids this backend holds a container for (any status), sorted: what a
        restarted agent re-adopts or cleans up."""

    def logs(self, task_id: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[LogEntry]:
        """The container's log lines, oldest first (the last `tail` ones); with follow, until
        the container stopped and everything it wrote was given out."""

    def log_chunk(self, task_id: str, cursor: Cursor | None, *, tail: int | None = None, follow: bool = False,
                  budget: int = ..., since: str | None = None, until: str | None = None) -> Chunk:
        """About `budget` bytes of log lines from `cursor` (None: start a read at the oldest line,
        or `tail` lines from the end; without follow it ends at what is written now), and the
        cursor to go on from; only lines from `since` to `until` (RFC 3339 UTC with nanoseconds,
        both included), the first line past `until` ending the read. Raises for an unknown task."""

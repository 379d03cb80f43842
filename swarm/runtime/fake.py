"""An in-memory `ContainerRuntime`: the runtime seam's fake, for unit tests and simulation.

How this works. Each task id maps to a `FakeContainer` record; nothing runs.
A started container "runs" until it is stopped (kill, stop, remove) or until
the test ends it with `exit(task_id, code)`. Its end sets a trio Event, so
`wait` and `stop_async` sleep on events and on the caller's (mock) clock,
never on real time. The answers and errors follow the runc backend: the same
statuses, the same one-sentence `ContainerError`s, `remove` idempotent, a
started container refused by `prepare`, SIGTERM exiting with 143 (128 + the
signal) unless the container ignores it, SIGKILL with 137.

The agent calls the plain methods in worker threads, as it does with runc.
So every change that wakes trio code is handed to the event loop (`_on_loop`),
and counters are kept under a lock. Test controls: `fail(op, error)` makes an
operation raise, `hold(op)`/`release(op)` keep calls of an operation blocked
(from worker threads) so that a test can count them in flight (`active`,
`peak`), `calls` lists every operation in order, `until(predicate)` sleeps
until a change makes the predicate true, `write` adds log lines, and
`adopt_from` gives a new runtime object the containers of an earlier one (an
agent restarted on the same node).

Healthchecks: `image_health` gives images a HEALTHCHECK (image name ->
HealthConfig, seconds), merged at prepare as runc does; `script_exec(task_id,
*results)` queues what the next `exec` calls answer (an ExecResult, or HANG:
the check runs into its timeout on the caller's clock and is "killed"), and
once the queue is empty `exec` answers `exec_default`. `execs` lists every
exec as (task id, argv, timeout, trio time it began).
"""
from __future__ import annotations

import signal as signals
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import AsyncIterator, Callable, Mapping, Sequence

import trio

from swarm.api import health, secrets
from swarm.api.spec import ContainerSpec, FileReference, HealthConfig, Resources
from swarm.runtime import ocispec
from swarm.runtime.base import CREATED, MISSING, RUNNING, STOPPED, ContainerState, ExecResult, LogEntry
from swarm.runtime.errors import ContainerError, SpecError
from swarm.runtime.logfile import CHUNK_BYTES, Chunk, Cursor, FileId

TERM_EXIT = 128 + signals.SIGTERM   # a shell-like init that dies of SIGTERM
KILL_EXIT = 128 + signals.SIGKILL
OPERATIONS = ("prepare", "start", "state", "wait", "kill", "stop", "stop_async", "remove", "list", "logs",
              "log_chunk", "exec")
HANG = "hang"   # a scripted exec result: the check outlives its timeout


@dataclass
class FakeContainer:
    task_id: str
    container: ContainerSpec
    limits: Resources
    netns_path: str | None
    options: dict                        # hostname, dns, dns_search, dns_options, hosts as prepare got them
    # the task's secrets and configs as prepare got them: target path -> (kind, value, uid, gid, mode)
    files: dict[str, tuple[str, bytes, str, str, int]] = field(default_factory=dict)
    status: str = CREATED
    pid: int | None = None
    exit_code: int | None = None
    error: str = ""
    finished_at: float | None = None
    term_exit: int | None = TERM_EXIT    # the exit code SIGTERM ends it with; None: it ignores SIGTERM
    signals: list[int] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)
    stopped: trio.Event = field(default_factory=trio.Event)
    check: health.Check | None = None    # the effective healthcheck prepare decided
    exec_script: list[ExecResult | str] = field(default_factory=list)

    def state(self) -> ContainerState:
        pid = self.pid if self.status == RUNNING else None
        return ContainerState(self.status, pid, self.exit_code, self.error, self.finished_at)


class FakeRuntime:
    """Containers as records in memory; see the module docstring for the controls."""

    def __init__(self, *, clock: Callable[[], float] = time.time, term_exit: int | None = TERM_EXIT,
                 image_health: Mapping[str, HealthConfig] | None = None) -> None:
        self.clock = clock                   # wall time for finished_at and log timestamps
        self.term_exit = term_exit           # given to every container prepared from now on
        self.image_health = dict(image_health or {})   # image -> its HEALTHCHECK
        self.exec_default = ExecResult(0, "")
        self.execs: list[tuple[str, tuple[str, ...], float, float]] = []
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, str]] = []   # (operation, task id or "") in call order
        self.active: Counter[str] = Counter()    # calls of each operation in progress
        self.peak: Counter[str] = Counter()      # the most calls of each operation ever in progress at once
        self.failures: dict[tuple[str, str | None], BaseException] = {}
        self._gates: dict[str, trio.Event] = {}
        self._lock = threading.Lock()
        self._changed = trio.Event()
        self._to_set: list[trio.Event] = []   # ends recorded under the lock, announced on the loop by _wake
        self._next_pid = 1000

    # -- test controls ---------------------------------------------------------------
    def fail(self, op: str, error: BaseException, task_id: str | None = None) -> None:
        """Make every later call of `op` (for `task_id`, or for any task) raise `error`, until
        `failures` is cleared. A failed start leaves the container stopped with the error, as runc does."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}")
        self.failures[(op, task_id)] = error

    def hold(self, op: str) -> None:
        """Keep calls of `op` that come from worker threads blocked (counted in `active`) until release."""
        self._gates.setdefault(op, trio.Event())

    def release(self, op: str | None = None) -> None:
        """Let the held calls of `op` (of every operation: None) go on; later ones are not held."""
        for name in [op] if op is not None else list(self._gates):
            gate = self._gates.pop(name, None)
            if gate is not None:
                gate.set()

    def exit(self, task_id: str, code: int | None) -> None:
        """The running container's process ends with `code` (None: the exit code is lost)."""
        with self._lock:
            c = self._get(task_id)
            if c.status != RUNNING:
                raise ContainerError(f"Task {task_id} is not running.")
            self._end(c, code)
        self._wake()

    def write(self, task_id: str, line: str, stream: str = "stdout") -> None:
        """The container writes one log line."""
        with self._lock:
            self._get(task_id).log.append(LogEntry(_rfc3339(self.clock()), stream, line))
        self._wake()

    def script_exec(self, task_id: str, *results: ExecResult | str) -> None:
        """What the next exec calls in the task's container answer, in order (HANG: past the timeout)."""
        with self._lock:
            self._get(task_id).exec_script.extend(results)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Sleep until `predicate()` holds, looking again after every change (set a deadline around it)."""
        while not predicate():
            await self._changed.wait()

    def adopt_from(self, earlier: FakeRuntime) -> None:
        """Take over the containers of `earlier`, as a new runc object finds the bundles on disk."""
        self.containers = earlier.containers
        self._next_pid = earlier._next_pid

    # -- ContainerRuntime --------------------------------------------------------------
    def prepare(self, task_id: str, container: ContainerSpec, limits: Resources, netns_path: str | None, *,
                hostname: str | None = None, dns: Sequence[str] = ("127.0.0.11",), dns_search: Sequence[str] = (),
                dns_options: Sequence[str] = ("ndots:0",), hosts: Sequence[tuple[str, str]] = (),
                files: Sequence[tuple[FileReference, bytes, str]] = ()) -> None:
        with self._call("prepare", task_id):
            ocispec.check_process(container)     # the spec errors runc's prepare gives without a machine
            placed = {secrets.target_path(kind, ref.target): (kind, bytes(value), ref.uid, ref.gid, ref.mode)
                      for ref, value, kind in files}
            try:
                check = health.effective(container.healthcheck, self.image_health.get(container.image))
            except ValueError as exc:
                raise SpecError(f"Invalid healthcheck: {exc}.") from None
            with self._lock:
                c = self.containers.get(task_id)
                if c is not None and c.status != CREATED:
                    raise ContainerError(f"Task {task_id} was already started; remove it before preparing it again.")
                options = {"hostname": hostname, "dns": tuple(dns), "dns_search": tuple(dns_search),
                           "dns_options": tuple(dns_options), "hosts": tuple(hosts)}
                self.containers[task_id] = FakeContainer(task_id, container, limits, netns_path, options,
                                                         files=placed, term_exit=self.term_exit, check=check)

    def start(self, task_id: str) -> None:
        with self._call("start", task_id, check=False):
            with self._lock:
                c = self.containers.get(task_id)
                if c is None:
                    raise ContainerError(f"Task {task_id} is not prepared.")
                if c.status != CREATED:
                    raise ContainerError(f"Task {task_id} was already started.")
                error = self._failure("start", task_id)
                if error is not None:
                    c.status, c.error, c.finished_at = STOPPED, str(error), self.clock()
                    self._to_set.append(c.stopped)
                    raise error
                c.status, c.pid = RUNNING, self._next_pid
                self._next_pid += 1

    def state(self, task_id: str) -> ContainerState:
        with self._call("state", task_id), self._lock:
            c = self.containers.get(task_id)
            return ContainerState(MISSING) if c is None else c.state()

    async def wait(self, task_id: str) -> int | None:
        self._record("wait", task_id)
        self._raise_failure("wait", task_id)
        c = self.containers.get(task_id)
        if c is None:
            raise ContainerError(f"No such task {task_id}.")
        if c.status == CREATED:
            raise ContainerError(f"Task {task_id} has not been started.")
        await c.stopped.wait()
        return c.exit_code

    async def exec(self, task_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        self._record("exec", task_id)
        self._raise_failure("exec", task_id)
        with self._lock:
            c = self.containers.get(task_id)
            if c is None or c.status != RUNNING:
                raise ContainerError(f"Task {task_id} is not running.")
            self.execs.append((task_id, tuple(argv), timeout, trio.current_time()))
            result = c.exec_script.pop(0) if c.exec_script else self.exec_default
        self._wake()
        if result == HANG:
            await trio.sleep(timeout)
            return ExecResult(-1, health.timeout_output(timeout))
        assert isinstance(result, ExecResult)
        return result

    def healthcheck(self, task_id: str) -> health.Check | None:
        # A read of what prepare kept: not recorded in `calls`, as the agent asks it of every task.
        with self._lock:
            c = self.containers.get(task_id)
            return c.check if c is not None else None

    def kill(self, task_id: str, signal: int) -> None:
        with self._call("kill", task_id), self._lock:
            self._signal(task_id, signal)

    def stop(self, task_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL if the container ignored it: a blocking fake has no clock to wait `grace` on."""
        with self._call("stop", task_id), self._lock:
            c = self.containers.get(task_id)
            if c is None or c.status != RUNNING:
                return
            self._signal(task_id, signals.SIGTERM)
            if c.status == RUNNING:
                self._signal(task_id, signals.SIGKILL)

    async def stop_async(self, task_id: str, grace: float) -> None:
        self._record("stop_async", task_id)
        self._raise_failure("stop_async", task_id)
        c = self.containers.get(task_id)
        if c is None or c.status != RUNNING:
            return
        self.kill(task_id, signals.SIGTERM)
        with trio.move_on_after(max(grace, 0.0)):
            await c.stopped.wait()
            return
        if c.status == RUNNING:
            self.kill(task_id, signals.SIGKILL)

    def remove(self, task_id: str) -> None:
        with self._call("remove", task_id), self._lock:
            c = self.containers.pop(task_id, None)
            if c is not None and c.status == RUNNING:
                c.signals.append(signals.SIGKILL)
                self._end(c, KILL_EXIT)

    def list(self) -> list[str]:
        with self._call("list", ""), self._lock:
            return sorted(self.containers)

    async def logs(self, task_id: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[LogEntry]:
        self._record("logs", task_id)
        self._raise_failure("logs", task_id)
        c = self.containers.get(task_id)
        if c is None:
            raise ContainerError(f"No such task {task_id}.")
        at = max(len(c.log) - tail, 0) if tail is not None else 0
        while True:
            while at < len(c.log):
                at += 1
                yield c.log[at - 1]
            if not follow or c.status == STOPPED or self.containers.get(task_id) is not c:
                return
            await self._changed.wait()

    def log_chunk(self, task_id: str, cursor: Cursor | None, *, tail: int | None = None, follow: bool = False,
                  budget: int = CHUNK_BYTES, since: str | None = None, until: str | None = None) -> Chunk:
        """Lines from one never rotated "file" per container: a cursor's offset counts lines."""
        with self._call("log_chunk", task_id), self._lock:
            c = self.containers.get(task_id)
            if c is None:
                raise ContainerError(f"No such task {task_id}.")
            log = list(c.log)
        fid = FileId(0, task_id.encode()[:40])
        if cursor is None:
            start = max(len(log) - tail, 0) if tail is not None else 0
            cursor = Cursor(fid, start, None if follow else (fid, len(log)))
        if cursor.nothing:
            return Chunk(cursor=cursor, start=cursor)
        end = len(log) if cursor.until is None else min(cursor.until[1], len(log))
        lines, used, at = [], 0, cursor.offset
        while at < end and (used < budget or not lines):
            entry = log[at]
            if until is not None and entry.timestamp > until:
                return Chunk(lines, [fid], Cursor(fid, at, cursor.until), cursor, eof=True)
            at += 1
            used += len(entry.line) + 1
            if since is None or entry.timestamp >= since:
                lines.append((entry.timestamp, entry.stream, entry.line, (0, at)))
        return Chunk(lines, [fid], Cursor(fid, at, cursor.until), cursor, eof=at >= end)

    # -- helpers ----------------------------------------------------------------------
    def _get(self, task_id: str) -> FakeContainer:
        c = self.containers.get(task_id)
        if c is None:
            raise ContainerError(f"No such task {task_id}.")
        return c

    def _signal(self, task_id: str, signal: int) -> None:
        c = self.containers.get(task_id)
        if c is None or c.status != RUNNING:
            raise ContainerError(f"Task {task_id} is not running.")
        c.signals.append(signal)
        if signal == signals.SIGKILL:
            self._end(c, KILL_EXIT)
        elif signal == signals.SIGTERM and c.term_exit is not None:
            self._end(c, c.term_exit)

    def _end(self, c: FakeContainer, code: int | None) -> None:
        c.status, c.exit_code, c.finished_at = STOPPED, code, self.clock()
        if code is None:
            c.error = f"The container monitor of task {c.task_id} is gone; the exit code is unknown."
        self._to_set.append(c.stopped)

    def _wake(self) -> None:
        """Announce on the event loop what changed: ended containers' events, then `until` sleepers.
        Never called under the lock: from a worker thread it waits for the loop, which may want the lock."""
        with self._lock:
            events, self._to_set = self._to_set, []

        def announce() -> None:
            for event in events:
                event.set()
            self._changed.set()
            self._changed = trio.Event()

        self._on_loop(announce)

    def _record(self, op: str, task_id: str) -> None:
        with self._lock:
            self.calls.append((op, task_id))

    def _failure(self, op: str, task_id: str) -> BaseException | None:
        return self.failures.get((op, task_id)) or self.failures.get((op, None))

    def _raise_failure(self, op: str, task_id: str) -> None:
        error = self._failure(op, task_id)
        if error is not None:
            raise error

    def _call(self, op: str, task_id: str, check: bool = True) -> _Call:
        return _Call(self, op, task_id, check)

    @staticmethod
    def _on_loop(fn: Callable[[], object]) -> None:
        """Run `fn` on trio's thread: directly there, through from_thread from a worker thread
        (trio objects are not thread-safe), directly when no trio runs at all."""
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            try:
                trio.from_thread.run_sync(fn)
                return
            except RuntimeError:   # not a trio worker thread: no loop to hand it to
                pass
        fn()


class _Call:
    """One call of a plain operation: recorded, counted while in progress, held while its gate
    is closed, then failed if the test asked for it (unless `check` is False: the operation
    decides itself where it fails)."""

    def __init__(self, runtime: FakeRuntime, op: str, task_id: str, check: bool) -> None:
        self.rt, self.op, self.task_id, self.check = runtime, op, task_id, check

    def __enter__(self) -> None:
        rt = self.rt
        with rt._lock:
            rt.calls.append((self.op, self.task_id))
            rt.active[self.op] += 1
            rt.peak[self.op] = max(rt.peak[self.op], rt.active[self.op])
        rt._wake()
        gate = rt._gates.get(self.op)
        if gate is not None:
            try:
                trio.lowlevel.current_task()
            except RuntimeError:
                trio.from_thread.run(gate.wait)
            else:
                self._leave()
                raise RuntimeError(f"a held {self.op} must be called from a worker thread (trio.to_thread)")
        if self.check:
            try:
                rt._raise_failure(self.op, self.task_id)
            except BaseException:
                self._leave()
                raise

    def __exit__(self, *exc: object) -> None:
        self._leave()

    def _leave(self) -> None:
        rt = self.rt
        with rt._lock:
            rt.active[self.op] -= 1
        rt._wake()


def _rfc3339(t: float) -> str:
    stamp = datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{int(round((t % 1) * 1e9)) % 1_000_000_000:09d}Z"

"""Following a service until it converges, drawn as docker does (its WaitOnService).

How this works: `create`, `update` and `scale` poll `service.ps` every
POLL_INTERVAL and draw one line per slot (per node for a global service),
redrawn in place on a terminal, one line per change otherwise; a task's
failure is printed (each distinct error once, with how long the command
still waits) and waited through (the orchestrator replaces it), and if the
service is still not running when `--timeout` ends the command fails with
the last error seen.

An update (or rollback) is followed as docker's ServiceProgress does: each
poll also reads the service (`service.inspect`), whose spec_version tells
which tasks are up to date and whose UpdateStatus, once it differs from the
one before the command, decides too: updating / rollback_started are not
converged yet; paused and rollback_paused fail the command with docker's
sentence ("service update paused: ..."); an update that rolled back by
itself ("rollback: update rolled back due to ...") is followed to its end,
then fails the command with its reason.

A job (replicated-job, global-job) does not converge to running tasks: it is
followed as docker's job progress until every slot (global: every node it
started on) has a complete task of the job's current iteration, then "job
complete". When a task failed and the restart policy will not run its slot
again (condition none, or its attempts used up), the job cannot complete and
the command fails at once, naming the error.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import click

from swarm.api.states import JOB_MODES, TERMINAL_STATES
from swarm.cli.common import LocalDaemon, fail, format_duration

POLL_INTERVAL = 0.25          # seconds between two service.ps while waiting for convergence
PENDING_ERROR_POLLS = 3       # a pending task's error is shown once it lasts this many polls
UNCHANGED_GRACE_POLLS = 6     # update: polls before tasks the update did not replace count as updated
ID_LEN = 12                   # IDs in tables, as docker truncates them
MAX_PROGRESS_ERR = 75         # a task's error on its progress line, as docker truncates it
GIVE_UP_POLLS = 8             # a failed job task not replaced for this many polls: its slot was given up

# The progress bar of a task in each state (docker's numbering: running = full bar).
STATE_PROGRESS = {"new": 1, "pending": 3, "assigned": 4, "accepted": 5, "preparing": 6,
                  "ready": 7, "starting": 8, "running": 9}
MAX_PROGRESS = 9
MAX_JOB_PROGRESS = 10         # a job task's bar: complete (10) is full
LONGEST_STATE = max(len(s) for s in STATE_PROGRESS)
FAILED_STATES = frozenset({"failed", "rejected"})


def _sleep(seconds: float) -> None:  # one place for tests to replace
    time.sleep(seconds)


def progress_bar(state: str) -> str:
    return bar(STATE_PROGRESS.get(state, 0), MAX_PROGRESS)


def bar(current: int, total: int) -> str:
    """Docker's progress bar: 50 columns, '=' for the part done, '>' at its head."""
    done = min(50, int(current / total * 100) // 2) if total else 0
    return f"[{'=' * done}>{' ' * (50 - done)}]"


def trunc_error(message: str) -> str:
    message = message.replace("\n", " ")
    return message[:MAX_PROGRESS_ERR - 1] + "…" if len(message) > MAX_PROGRESS_ERR else message


class Progress:
    """Lines keyed by slot: redrawn in place on a terminal, printed when they change otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out, self.tty = out, tty
        self.drawn: list[str] = []          # terminal: the block now on screen
        self.last: dict[str, str] = {}      # not a terminal: the last line printed per key

    def show(self, events: Iterable[str], frame: Sequence[tuple[str, str]]) -> None:
        events = list(events)
        if self.tty:
            lines = [text for _, text in frame]
            if not events and lines == self.drawn:
                return
            if self.drawn:
                self.out.write(f"\x1b[{len(self.drawn)}A\r\x1b[J")
            self.out.write("".join(f"{e}\n" for e in events) + "".join(f"{line}\n" for line in lines))
            self.drawn = lines
        else:
            for event in events:
                self.out.write(f"{event}\n")
            for key, text in frame:
                if self.last.get(key) != text:
                    self.out.write(f"{text}\n")
                    self.last[key] = text
        self.out.flush()

    def line(self, text: str) -> None:
        """A line under the block, which stays."""
        self.out.write(f"{text}\n")
        self.out.flush()
        self.drawn = []


@dataclass(frozen=True)
class UpdateFollow:
    """What following an update needs beyond its tasks: the service's UpdateStatus before the
    command (a status equal to it is an earlier update's), and whether the command asked for
    a rollback (then rolling back is what it waits for, not a failure)."""
    before: Mapping[str, Any] | None
    rollback: bool = False


@dataclass(frozen=True)
class UpdateVerdict:
    """One reading of a service's UpdateStatus while an update is followed."""
    busy: bool = False        # an update or rollback is under way: not converged yet
    failure: str = ""         # the command fails at once with this sentence
    rolling_back: bool = False
    message: str = ""         # the status's message


def read_update_status(status: Mapping[str, Any] | None, follow: UpdateFollow) -> UpdateVerdict:
    """What the UpdateStatus says about the update being followed (docker's ServiceProgress)."""
    if not status or not status.get("state") or status == follow.before:
        return UpdateVerdict()       # no news of this update: its tasks decide
    state, message = status["state"], str(status.get("message") or "")
    if state == "paused":
        return UpdateVerdict(failure=f"service update paused: {message}", message=message)
    if state == "rollback_paused":
        return UpdateVerdict(failure=f"service rollback paused: {message}", rolling_back=True, message=message)
    return UpdateVerdict(busy=state in ("updating", "rollback_started"),
                         rolling_back=state in ("rollback_started", "rollback_completed"), message=message)


class Waiter:
    """Follow a created, updated or scaled service until its tasks all run (docker's WaitOnService).

    A task that cannot start (no node fits, a command that fails at once) is
    replaced again and again with the same error: each reason is shown once,
    with a line saying how long the command goes on waiting (--timeout)."""

    def __init__(self, daemon: LocalDaemon, service_id: str, name: str, mode: str, replicas: int | None,
                 image: str | None, quiet: bool, timeout: float, before: Sequence[Mapping[str, Any]] = (),
                 update: UpdateFollow | None = None) -> None:
        self.daemon, self.service_id, self.name = daemon, service_id, name
        self.mode, self.replicas, self.image = mode, replicas, image
        self.timeout = timeout
        self.progress = None if quiet else Progress(sys.stdout, sys.stdout.isatty())
        # update: the tasks there were before; the running ones may be replaced (or may not need to be)
        self.old_ids = {t["id"] for t in before}
        self.old_running = {t["id"]: t["name"] for t in before if t["desired_state"] == "running"}
        self.replacing = False
        self.polls = 0
        self.reported: set[str] = set()
        self.reasons: set[str] = set()      # the errors shown so far, each without its task's ID
        self.pending_errors: dict[str, tuple[str, int]] = {}
        self.last_error = ""
        self.status = ""  # the state of things, for a timeout without an error: "1 of 2 tasks running"
        self.job: JobProgress | None = None
        self.failure = ""  # a job that cannot complete: why
        # update: the service's spec version (tasks of another are not up to date) and UpdateStatus
        self.update = update
        self.version: int | None = None
        self.verdict = UpdateVerdict()
        self.rollback_reason = ""   # an update that rolled back by itself: why (the command fails with it)
        self.events: list[str] = []  # lines of the status to print with the next poll's

    def run(self) -> None:
        """Wait up to --timeout; fail if the service has not converged by then."""
        failure = self.wait()
        if failure:
            fail(failure)

    def wait(self, deadline: float | None = None) -> str | None:
        """None once the service converged, else the sentence saying why it did not by the deadline."""
        from swarm.rpc.messages import RPCError  # with the daemon's client, not at the CLI's start
        deadline = time.monotonic() + self.timeout if deadline is None else deadline
        try:
            while True:
                try:
                    if self.update is not None:
                        self.follow(self.daemon.call("service.inspect", {"refs": [self.service_id]})[0])
                    rows = [] if self.verdict.failure else self.daemon.call("service.ps",
                                                                            {"refs": [self.service_id]})
                except RPCError as exc:
                    if exc.code not in ("unavailable", "deadline"):
                        raise
                    self.status = exc.message  # no leader for a moment: keep waiting
                else:
                    if self.verdict.failure:
                        return self.verdict.failure
                    if self.poll(rows):
                        return self._converged()
                    if self.failure:
                        return f"job {self.name} cannot complete: {self.failure}"
                if time.monotonic() >= deadline:
                    what = "complete" if self.mode in JOB_MODES else "converge"
                    rolling = f" ({self.rollback_reason})" if self.rollback_reason else ""
                    return (f"service {self.name} did not {what} in {format_duration(self.timeout)}: "
                            f"{self.last_error or self.status}{rolling}")
                _sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            click.echo(f"Operation continuing in background.\nUse `swarm service ps {self.name}` to check progress.",
                       err=True)
            raise click.exceptions.Exit(130) from None

    def _converged(self) -> str | None:
        if self.progress:
            self.progress.line("job complete" if self.mode in JOB_MODES else "verify: Service converged")
            if self.verdict.rolling_back and not self.verdict.busy and self.verdict.message:
                self.progress.line(f"rollback: {self.verdict.message}")
        if self.rollback_reason:
            return f"service update rolled back: {self.rollback_reason}"
        return None

    def follow(self, view: Mapping[str, Any]) -> None:
        """Take the service's record (an update's poll): its spec version and UpdateStatus."""
        assert self.update is not None
        version = view.get("spec_version")
        self.version = version if isinstance(version, int) else None
        verdict = read_update_status(view.get("update_status"), self.update)
        if verdict.rolling_back and not self.verdict.rolling_back:
            if verdict.busy and verdict.message:
                self.events.append(f"rollback: {verdict.message}")   # docker's line
            if not self.update.rollback:
                self.rollback_reason = verdict.message or "the update was rolled back"
        self.verdict = verdict

    def _label(self, task: Mapping[str, Any], index: int | None = None) -> str:
        if self.mode == "global":
            return str(task.get("node_id") or task.get("node") or "")[:ID_LEN]
        return f"{index if index is not None else task.get('slot', 0)}/{self.replicas}"

    def _new_reason(self, task: Mapping[str, Any], error: str) -> bool:
        """Is this error one not shown yet? Each replacement of a task names
        itself in the same error, so the task's ID does not count."""
        reason = error.replace(task["id"], "")
        if reason in self.reasons:
            return False
        self.reasons.add(reason)
        return True

    def _current(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Per slot (node), the task meant to run: the least advanced live one, as docker picks."""
        current: dict[Any, Mapping[str, Any]] = {}
        for t in rows:
            if t["desired_state"] in TERMINAL_STATES or t["state"] in TERMINAL_STATES:
                continue
            key = t.get("node_id") if self.mode == "global" else t.get("slot")
            # the least advanced; of two as advanced (start-first: old and new running), the up-to-date one
            if key not in current or (STATE_PROGRESS.get(t["state"], 0), not self._current_version(t)) < (
                    STATE_PROGRESS.get(current[key]["state"], 0), not self._current_version(current[key])):
                current[key] = t
        return sorted(current.values(), key=lambda t: (t.get("slot", 0), t.get("node_id", "")))

    def _current_version(self, task: Mapping[str, Any]) -> bool:
        return self.version is not None and task.get("spec_version") == self.version

    def _up_to_date(self, task: Mapping[str, Any]) -> bool:
        if self.version is not None and task.get("spec_version") is not None:
            return bool(task["spec_version"] == self.version)   # as docker's _up-to-date filter
        if self.image is not None and task.get("image") not in (None, self.image):
            return False
        if task["id"] not in self.old_running:
            return True
        return not self.replacing and self.polls >= UNCHANGED_GRACE_POLLS

    def poll(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Take one service.ps answer; draw it; True once the service runs as specified."""
        if self.mode in JOB_MODES:
            return self._poll_job(rows)
        self.polls += 1
        old_names = set(self.old_running.values())
        if any(t["id"] not in self.old_ids and t["name"] in old_names for t in rows):
            self.replacing = True  # the update replaces tasks: wait for all of them
        events, self.events = self.events, []
        for t in rows:
            if t["id"] in self.old_ids or t["id"] in self.reported or t["state"] not in FAILED_STATES:
                continue
            self.reported.add(t["id"])
            error = t.get("error") or (f"task: non-zero exit ({t['exit_code']})" if t.get("exit_code")
                                       else f"task {t['state']}")
            self.last_error = error
            if self._new_reason(t, error):
                # whole: this line is printed once and stays (only the redrawn lines must fit one row)
                events.append(f"{self._label(t)}: {' '.join(error.splitlines())}")
        current = self._current(rows)
        desired = self.replicas if self.mode == "replicated" else len(current)
        frame = []
        running = 0
        pending_error = ""  # one seen in this poll only: named at the deadline, not drawn before it lasts
        for index, t in enumerate(current, 1):
            extra = self.mode == "replicated" and index > (desired or 0)  # scaled down: on its way out
            running += not extra and t["state"] == "running" and self._up_to_date(t)
            label = self._label(t, index)
            error = t.get("error") or ""
            count = 0
            if error and t["state"] == "pending":
                pending_error = error
                seen, count = self.pending_errors.get(t["id"], ("", 0))
                count = count + 1 if seen == error else 1
                self.pending_errors[t["id"]] = (error, count)
                if count >= PENDING_ERROR_POLLS:
                    self.last_error = error
                    self._new_reason(t, error)
            if extra:
                continue
            if count >= PENDING_ERROR_POLLS:
                frame.append((label, f"{label}: {trunc_error(error)}"))
            else:
                frame.append((label, f"{label}: {t['state']:<{LONGEST_STATE}} {progress_bar(t['state'])}"))
        rolling_back = "rolling back update: " if self.verdict.rolling_back else ""
        frame.insert(0, ("overall", f"overall progress: {rolling_back}{running} out of {desired} tasks"))
        if self.reasons:
            frame.append(("wait", waiting_note(self.timeout)))
        self.status = pending_error or f"{running} of {desired} tasks running"
        if self.progress:
            self.progress.show(events, frame)
        if self.verdict.busy:
            return False            # the daemon says the update (or rollback) goes on
        if self.mode == "global" and not current:
            return self.polls >= UNCHANGED_GRACE_POLLS  # no node to run on (or no task yet)
        return running == desired and len(current) == desired


    def _poll_job(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """A job's poll: draw docker's job progress; True once the job completed."""
        if self.job is None:
            view = self.daemon.call("service.inspect", {"refs": [self.service_id]})[0]
            self.job = JobProgress(self.mode, view.get("spec") or {}, view.get("job_iteration", 0), self.old_ids)
        job = self.job
        done, frame, failure = job.poll(rows)
        events = []
        for t in job.failed(rows):
            if t["id"] in self.reported:
                continue
            self.reported.add(t["id"])
            error = t.get("error") or (f"task: non-zero exit ({t['exit_code']})" if t.get("exit_code")
                                       else f"task {t['state']}")
            self.last_error = error
            if self._new_reason(t, error):
                events.append(f"{job.label(t)}: {' '.join(error.splitlines())}")
        if self.reasons and not failure:
            frame.append(("wait", waiting_note(self.timeout)))
        self.status = job.status
        self.failure = failure
        if self.progress:
            self.progress.show(events, frame)
        return done


class JobProgress:
    """Docker's replicated and global job progress (its replicatedJobProgressUpdater and
    globalJobProgressUpdater), from service.ps rows.

    Only the tasks of the job's current iteration count: the rows' job_iteration when
    they carry it, else the tasks that were not there before the command. Per slot
    (global: per node) the least advanced task is shown, as docker picks."""

    def __init__(self, mode: str, spec: Mapping[str, Any], iteration: int, old_ids: set[str]) -> None:
        self.mode, self.iteration, self.old_ids = mode, iteration, old_ids
        self.total = int(spec.get("replicas") or 0) if mode == "replicated-job" else 0
        self.concurrent = int(spec.get("max_concurrent") or 0) or self.total
        restart = spec.get("restart") or {}
        self.condition = restart.get("condition", "any")
        self.max_attempts = int(restart.get("max_attempts") or 0)
        self.window = float(restart.get("window") or 0)
        self.nodes: list[str] | None = None     # global: the nodes the job started on
        self.unreplaced: dict[str, int] = {}    # failed task id -> polls it has been the newest of its slot
        self.status = ""

    def mine(self, t: Mapping[str, Any]) -> bool:
        if "job_iteration" in t:
            return t["job_iteration"] == self.iteration
        return t["id"] not in self.old_ids

    def key(self, t: Mapping[str, Any]) -> Any:
        return t.get("slot") if self.mode == "replicated-job" else t.get("node_id")

    def label(self, t: Mapping[str, Any]) -> str:
        if self.mode == "replicated-job":
            return f"{t.get('slot', 0)}/{self.total}"
        return str(t.get("node_id") or t.get("node") or "")[:ID_LEN]

    def failed(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [t for t in rows if self.mine(t) and t["state"] in FAILED_STATES]

    def poll(self, rows: Sequence[Mapping[str, Any]]) -> tuple[bool, list[tuple[str, str]], str]:
        """(done, the lines to draw, why the job cannot complete or "")."""
        by_key: dict[Any, list[Mapping[str, Any]]] = {}
        for t in rows:
            if self.mine(t):
                by_key.setdefault(self.key(t), []).append(t)
        if self.mode == "global-job":
            if self.nodes is None:
                if not by_key:
                    self.status = "waiting for tasks"
                    return False, [("overall", "job progress: waiting for tasks")], ""
                self.nodes = sorted(by_key)   # as docker: the nodes of the first tasks; later ones are not waited for
            self.total = len(self.nodes)
            keys: list[Any] = self.nodes
        else:
            keys = list(range(1, self.total + 1))
        frame: list[tuple[str, str]] = []
        complete = active = 0
        failure = ""
        for key in keys:
            ts = by_key.get(key, [])
            shown = self._shown(ts)
            if shown is None:
                continue
            label = self.label(shown)
            state = shown["state"]
            complete += state == "complete"
            active += state not in TERMINAL_STATES
            if shown.get("error") and state != "complete":
                frame.append((label, f"{label}: {trunc_error(shown['error'])}"))
            else:
                frame.append((label, f"{label}: {state:<{LONGEST_STATE}} "
                                     f"{bar(JOB_STATE_PROGRESS.get(state, 0), MAX_JOB_PROGRESS)}"))
            failure = failure or self._given_up(ts)
        frame.insert(0, ("overall", f"job progress: {complete} out of {self.total} complete "
                                    f"{bar(complete, self.total)}"))
        if self.mode == "replicated-job":
            frame.insert(1, ("active", f"active tasks: {active} out of "
                                       f"{min(self.total - complete, self.concurrent)} tasks"))
        self.status = f"{complete} of {self.total} tasks complete"
        return complete == self.total and self.total > 0, frame, failure

    @staticmethod
    def _shown(ts: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The slot's task to show: a live one if any (the least advanced), else the newest that ended."""
        live = [t for t in ts if t["state"] not in TERMINAL_STATES and t["desired_state"] == "running"]
        if live:
            return min(live, key=lambda t: JOB_STATE_PROGRESS.get(t["state"], 0))
        ended = [t for t in ts if t["state"] in TERMINAL_STATES]
        return ended[0] if ended else None   # service.ps lists a slot's history newest first

    def _given_up(self, ts: list[Mapping[str, Any]]) -> str:
        """The error of a slot the restart policy will not run again, or "".

        Decided only when the policy says so (condition none, or more failures than
        max attempts without a window) and the orchestrator, which replaces a failed
        task at once (delayed start), has not done so for GIVE_UP_POLLS polls."""
        if any(t["state"] not in TERMINAL_STATES for t in ts) or any(t["state"] == "complete" for t in ts):
            return ""
        failed = [t for t in ts if t["state"] in FAILED_STATES]
        if not failed:
            return ""
        exhausted = self.condition == "none" or (
            self.max_attempts > 0 and not self.window and len(failed) > self.max_attempts)
        newest = failed[0]   # service.ps lists a slot's history newest first
        polls = self.unreplaced[newest["id"]] = self.unreplaced.get(newest["id"], 0) + 1
        if not exhausted or polls < GIVE_UP_POLLS:
            return ""
        error = newest.get("error") or (f"task: non-zero exit ({newest['exit_code']})" if newest.get("exit_code")
                                        else f"task {newest['state']}")
        return f"task {self.label(newest)} failed and its restart policy gives up: {error}"


JOB_STATE_PROGRESS = {**STATE_PROGRESS, "complete": 10}


def waiting_note(timeout: float) -> str:
    # short enough for one row of a terminal: the block it ends is redrawn by counting rows
    return f"waiting up to {format_duration(timeout)} (--timeout); Ctrl-C stops waiting, not the service"

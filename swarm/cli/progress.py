"""Following a service until it converges, drawn as docker does (its WaitOnService).

How this works: `create`, `update` and `scale` poll `service.ps` every
POLL_INTERVAL and draw one line per slot (per node for a global service),
redrawn in place on a terminal, one line per change otherwise; a task's
failure is printed (each distinct error once, with how long the command
still waits) and waited through (the orchestrator replaces it), and if the
service is still not running when `--timeout` ends the command fails with
the last error seen.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import click

from swarm.api.spec import TERMINAL_STATES
from swarm.cli.common import LocalDaemon, fail, format_duration
from swarm.rpc.messages import RPCError

POLL_INTERVAL = 0.25          # seconds between two service.ps while waiting for convergence
PENDING_ERROR_POLLS = 3       # a pending task's error is shown once it lasts this many polls
UNCHANGED_GRACE_POLLS = 6     # update: polls before tasks the update did not replace count as updated
ID_LEN = 12                   # IDs in tables, as docker truncates them
MAX_PROGRESS_ERR = 75         # a task's error on its progress line, as docker truncates it

# The progress bar of a task in each state (docker's numbering: running = full bar).
STATE_PROGRESS = {"new": 1, "pending": 3, "assigned": 4, "accepted": 5, "preparing": 6,
                  "ready": 7, "starting": 8, "running": 9}
MAX_PROGRESS = 9
LONGEST_STATE = max(len(s) for s in STATE_PROGRESS)
FAILED_STATES = frozenset({"failed", "rejected"})


def _sleep(seconds: float) -> None:  # one place for tests to replace
    time.sleep(seconds)


def progress_bar(state: str) -> str:
    done = min(50, int(STATE_PROGRESS.get(state, 0) / MAX_PROGRESS * 100) // 2)
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


class Waiter:
    """Follow a created, updated or scaled service until its tasks all run (docker's WaitOnService).

    A task that cannot start (no node fits, a command that fails at once) is
    replaced again and again with the same error: each reason is shown once,
    with a line saying how long the command goes on waiting (--timeout)."""

    def __init__(self, daemon: LocalDaemon, service_id: str, name: str, mode: str, replicas: int | None,
                 image: str | None, quiet: bool, timeout: float, before: Sequence[Mapping[str, Any]] = ()) -> None:
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

    def run(self) -> None:
        """Wait up to --timeout; fail if the service has not converged by then."""
        failure = self.wait()
        if failure:
            fail(failure)

    def wait(self, deadline: float | None = None) -> str | None:
        """None once the service converged, else the sentence saying why it did not by the deadline."""
        deadline = time.monotonic() + self.timeout if deadline is None else deadline
        try:
            while True:
                try:
                    rows = self.daemon.call("service.ps", {"refs": [self.service_id]})
                except RPCError as exc:
                    if exc.code not in ("unavailable", "deadline"):
                        raise
                    self.status = exc.message  # no leader for a moment: keep waiting
                else:
                    if self.poll(rows):
                        if self.progress:
                            self.progress.line("verify: Service converged")
                        return None
                if time.monotonic() >= deadline:
                    return (f"service {self.name} did not converge in {format_duration(self.timeout)}: "
                            f"{self.last_error or self.status}")
                _sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            click.echo(f"Operation continuing in background.\nUse `swarm service ps {self.name}` to check progress.",
                       err=True)
            raise click.exceptions.Exit(130) from None

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
            if key not in current or STATE_PROGRESS.get(t["state"], 0) < STATE_PROGRESS.get(current[key]["state"], 0):
                current[key] = t
        return sorted(current.values(), key=lambda t: (t.get("slot", 0), t.get("node_id", "")))

    def _up_to_date(self, task: Mapping[str, Any]) -> bool:
        if self.image is not None and task.get("image") not in (None, self.image):
            return False
        if task["id"] not in self.old_running:
            return True
        return not self.replacing and self.polls >= UNCHANGED_GRACE_POLLS

    def poll(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Take one service.ps answer; draw it; True once the service runs as specified."""
        self.polls += 1
        old_names = set(self.old_running.values())
        if any(t["id"] not in self.old_ids and t["name"] in old_names for t in rows):
            self.replacing = True  # the update replaces tasks: wait for all of them
        events = []
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
        frame.insert(0, ("overall", f"overall progress: {running} out of {desired} tasks"))
        if self.reasons:
            frame.append(("wait", waiting_note(self.timeout)))
        self.status = pending_error or f"{running} of {desired} tasks running"
        if self.progress:
            self.progress.show(events, frame)
        if self.mode == "global" and not current:
            return self.polls >= UNCHANGED_GRACE_POLLS  # no node to run on (or no task yet)
        return running == desired and len(current) == desired


def waiting_note(timeout: float) -> str:
    # short enough for one row of a terminal: the block it ends is redrawn by counting rows
    return f"waiting up to {format_duration(timeout)} (--timeout); Ctrl-C stops waiting, not the service"

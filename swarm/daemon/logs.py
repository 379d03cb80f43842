"""`service logs`: reading tasks' logs in bounded chunks, and the manager's merge by time.

How this works. No answer is ever a whole log. The client (the CLI) calls
`service.logs` again and again with the cursors the previous answer gave
(one per task: a log file's identity and an offset, see
swarm/runtime/logfile.py), until an answer says `done`; with `follow` it never
is, and a call with nothing new waits up to `wait` seconds for new lines (the
manager looks again every FOLLOW_POLL). The first call (no cursors) places
every task at its oldest line or `tail` lines from its end; without follow it
also fixes where each task's log ends, so a task that writes faster than it
is read cannot keep the command going. `since` and `until` (RFC 3339 UTC
times, the CLI turns Docker's syntax into them: swarm/api/logview.py) go to
the nodes with every read: a node seeks to `since` and stops at the first
line after `until`, so no line outside them leaves the node; with `until`
and follow the command ends once `until` has passed and every task read up
to it.

Each line says its task, service, slot and node (IDs and names: the CLI
prints Docker's `NAME.SLOT.TASKID@NODE`), and with `details` the details the
task's log options ask for (`logview.log_details`). The reference names a
service or, as Docker's, one task (its ID or a unique prefix).

Per call the manager asks each node (`task.logs`, TASKS_PER_CALL tasks at a
time, nodes in parallel) for about CHUNK_BYTES / tasks of each task's log,
and merges the chunks by time: a task that has more to give bounds how far
the merge may go (the time of its last line read), so the lines taken are in
time order across calls too. Lines past that horizon are not given out; the
task's cursor goes back to the last line taken (every line says where a
reader could go on after it). Memory is bounded by one chunk per task.

Workers read in a worker thread (`trio.to_thread`, at most READ_THREADS at a
time), BLOCK bytes at a step, so a 100 MB log costs neither memory nor event
loop time. A task whose container is gone has no lines; a node that is down
is named in `warnings`; a node that is up but does not answer fails the call
with one sentence.
"""
from __future__ import annotations

import functools
import heapq
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

import trio

from swarm.api import logview
from swarm.rpc.messages import RPCError
from swarm.runtime.errors import ContainerError
from swarm.runtime.logfile import CHUNK_BYTES, Cursor, CursorError, FileId

MIN_TASK_BYTES = 1024         # the smallest share of a call's budget a task gets (one line at least)
TASKS_PER_CALL = 64           # tasks in one task.logs call (keeps an answer well under the frame cap)
FOLLOW_POLL = 0.25            # seconds between two looks for new lines while a follow call waits
MAX_WAIT = 10.0               # the longest a follow call waits for new lines
NODE_TIMEOUT = 10.0           # seconds for one task.logs call
READ_THREADS = trio.CapacityLimiter(2)   # log reads at once on a node: leave cores to the rest


@dataclass(frozen=True)
class LogsRequest:
    ref: str
    tail: int | None = None
    follow: bool = False
    cursors: dict[str, dict] | None = None   # task id -> cursor; None: the first call
    wait: float = 0.0
    since: str | None = None                 # RFC 3339 UTC with nanoseconds (logview.check_time)
    until: str | None = None
    details: bool = False

    @classmethod
    def from_wire(cls, params: dict) -> LogsRequest:
        """The request checked field by field; a bad one is a bad_request naming the field."""
        ref, tail, follow, cursors = params.get("ref"), params.get("tail"), params.get("follow", False), \
            params.get("cursors")
        wait = params.get("wait", 0.0)
        if not isinstance(ref, str) or not ref:
            raise RPCError("bad_request", "service.logs needs a service name or ID (ref)")
        if tail is not None and (not _is_int(tail) or tail < 0):
            raise RPCError("bad_request", "tail must be a non-negative number of lines or null")
        if not isinstance(follow, bool):
            raise RPCError("bad_request", "follow must be true or false")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT:
            raise RPCError("bad_request", f"wait must be a number of seconds from 0 to {MAX_WAIT:g}")
        if cursors is not None:
            if not isinstance(cursors, dict) or not all(isinstance(k, str) for k in cursors):
                raise RPCError("bad_request", "cursors must map task IDs to the cursors of the previous answer")
            for cursor in cursors.values():
                if cursor is not None:        # None: a task whose container was not there yet
                    _check_cursor(cursor)
        since, until = _check_times(params)
        if not isinstance(params.get("details", False), bool):
            raise RPCError("bad_request", "details must be true or false")
        return cls(ref, tail, follow, cursors, float(wait), since, until, params.get("details", False))


def _check_times(params: dict) -> tuple[str | None, str | None]:
    try:
        return logview.check_time("since", params.get("since")), logview.check_time("until", params.get("until"))
    except ValueError as exc:
        raise RPCError("bad_request", str(exc)) from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_cursor(wire: Any) -> Cursor:
    try:
        return Cursor.from_wire(wire)
    except CursorError as exc:
        raise RPCError("bad_request", f"{exc}; pass back the cursors of the previous answer") from None


# -- the worker's side ---------------------------------------------------------------


async def read_tasks(runtime: Any, params: dict) -> dict:
    """task.logs: one chunk of each task's log ({"tasks": [{"id", "cursor"}], "tail", "follow", "budget"})."""
    tasks, tail, follow, budget = params.get("tasks"), params.get("tail"), params.get("follow", False), \
        params.get("budget", CHUNK_BYTES)
    if not isinstance(tasks, list) or len(tasks) > TASKS_PER_CALL or not all(
            isinstance(t, dict) and isinstance(t.get("id"), str) for t in tasks):
        raise RPCError("bad_request", f"tasks must be a list of at most {TASKS_PER_CALL} {{id, cursor}} maps")
    if tail is not None and (not _is_int(tail) or tail < 0):
        raise RPCError("bad_request", "tail must be a non-negative number of lines or null")
    if not _is_int(budget) or not 0 < budget <= CHUNK_BYTES:
        raise RPCError("bad_request", f"budget must be a number of bytes from 1 to {CHUNK_BYTES}")
    since, until = _check_times(params)
    bounds = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
    chunks = []
    for task in tasks:
        cursor = None if task.get("cursor") is None else _check_cursor(task["cursor"])
        read = functools.partial(runtime.log_chunk, task["id"], cursor, tail=tail, follow=bool(follow),
                                 budget=budget, **bounds)
        try:
            chunk = await trio.to_thread.run_sync(read, limiter=READ_THREADS)
        except (ContainerError, ValueError):
            # The container (and its log) was removed, or is not there yet: nothing to show now.
            # Following, look again next time; a snapshot stays empty.
            gone = cursor.to_wire() if cursor else None if follow else Cursor(nothing=True).to_wire()
            chunks.append({"task_id": task["id"], "lines": [], "files": [], "start": gone, "cursor": gone,
                           "eof": True, "lost": False})
            continue
        except OSError as exc:
            raise RPCError("unavailable", f"cannot read the log of task {task['id']}: {exc.strerror or exc}") \
                from None
        chunks.append(chunk.to_wire(task["id"]))
    return {"chunks": chunks}


# -- the manager's side --------------------------------------------------------------


def merge(chunks: list[dict]) -> tuple[list[tuple[str, list]], dict[str, dict]]:
    """Pure: the lines of these chunks that can be given out now, as (task id, line) in time
    order, and each task's cursor after what was taken.

    A task that has more to read bounds the merge at the time of its last line read
    (what it has not read yet is later); the task that sets the bound gives all its lines,
    so every call makes progress."""
    horizon = min((max(line[0] for line in c["lines"]) for c in chunks if not c["eof"] and c["lines"]),
                  default=None)
    streams, cursors = [], {}
    for c in chunks:
        lines = c["lines"]
        n = len(lines)
        if horizon is not None:
            n = 0
            while n < len(lines) and lines[n][0] <= horizon:
                n += 1
            while 0 < n < len(lines) and lines[n - 1][3] is None:
                n -= 1                        # go back to a line a reader can go on after
        if n == len(lines):
            cursors[c["task_id"]] = c["cursor"]
        elif n == 0:
            cursors[c["task_id"]] = c["start"]
        else:
            fi, off = lines[n - 1][3]
            ino, head = c["files"][fi]
            start = Cursor.from_wire(c["start"])
            cursors[c["task_id"]] = Cursor(FileId(ino, head), off, start.until).to_wire()
        streams.append([(line[0], c["task_id"], line) for line in lines[:n]])
    merged = heapq.merge(*streams, key=lambda item: item[0])   # keeps each task's own order
    return [(task_id, line) for _, task_id, line in merged], cursors


@dataclass
class LogsSource:
    """What the fan-out needs from the manager (a seam: tests give fakes)."""
    tasks_of: Callable[[str], Awaitable[list[dict]]]   # service.ps rows of one service or task (+ "details",
                                                       # "service", "width": see Daemon.service_logs)
    nodes: Callable[[], dict[str, dict]]               # node id -> node record
    read_node: Callable[[str, dict], Awaitable[dict]]  # (node id, task.logs params) -> answer


async def service_logs(source: LogsSource, params: dict) -> dict:
    """service.logs: {"ref", "tail", "follow", "cursors", "wait", "since", "until", "details"}
    -> {"lines", "cursors", "done", "warnings", "width"}."""
    request = LogsRequest.from_wire(params)
    deadline = trio.current_time() + (request.wait if request.follow else 0.0)
    while True:
        answer = await _one_round(source, request)
        if answer["lines"] or answer["done"] or not request.follow or trio.current_time() + FOLLOW_POLL > deadline:
            return answer
        request = replace(request, cursors=answer["cursors"])
        await trio.sleep(FOLLOW_POLL)


async def _one_round(source: LogsSource, request: LogsRequest) -> dict:
    rows = await source.tasks_of(request.ref)
    first = request.cursors is None
    cursors = dict(request.cursors or {})
    # After the first call only the tasks seen then are read, unless following (new tasks show up).
    rows = [r for r in rows if r["node_id"] and (first or request.follow or r["id"] in cursors)]
    nodes = source.nodes()
    budget = max(MIN_TASK_BYTES, CHUNK_BYTES // max(1, len(rows)))
    by_node: dict[str, list[dict]] = {}
    for row in rows:
        by_node.setdefault(row["node_id"], []).append(row)
    warnings: list[str] = []
    failures: list[str] = []
    chunks: list[dict] = []

    async def read(node_id: str, batch: list[dict], name: str) -> None:
        # tail places the first cursors only; a task that shows up later is read from its start.
        req = {"tasks": [{"id": r["id"], "cursor": cursors.get(r["id"])} for r in batch],
               "tail": request.tail if first else None, "follow": request.follow, "budget": budget}
        req.update({k: v for k, v in (("since", request.since), ("until", request.until)) if v is not None})
        try:
            answer = await source.read_node(node_id, req)
        except RPCError as exc:
            failures.append(f"could not read the logs of {', '.join(r['name'] for r in batch)} "
                            f"on node {name}: {exc.message}")
            return
        chunks.extend(answer["chunks"])

    async with trio.open_nursery() as nursery:
        for node_id, node_rows in by_node.items():
            node = nodes.get(node_id)
            name = node.get("hostname", node_id) if node else node_id
            if node is None or node.get("status") != "ready":
                warnings.append(f"node {name} is down: the logs of {', '.join(r['name'] for r in node_rows)} "
                                f"are not shown")
                continue
            for i in range(0, len(node_rows), TASKS_PER_CALL):
                nursery.start_soon(read, node_id, node_rows[i:i + TASKS_PER_CALL], name)
    if failures:
        raise RPCError("unavailable", failures[0])
    taken, new_cursors = merge(chunks)
    cursors.update(new_cursors)
    cursors = {r["id"]: cursors[r["id"]] for r in rows if r["id"] in cursors}   # forget removed tasks
    warnings += [f"lines of task {task_names_of(rows, c['task_id'])} were rotated away before they could be read"
                 for c in chunks if c["lost"]]
    by_id = {r["id"]: r for r in rows}
    node_names = {r["id"]: nodes.get(r["node_id"], {}).get("hostname", r["node_id"]) for r in rows}
    lines = [_line(by_id[tid], node_names[tid], line, request.details) for tid, line in taken]
    # Following up to --until: done once that time has passed here and every task read up to it.
    past_until = request.until is not None and logview.rfc3339_ns(time.time_ns()) > request.until
    done = (not request.follow or past_until) and all(c["eof"] for c in chunks)
    return {"lines": lines, "cursors": cursors, "done": done, "warnings": warnings,
            "width": max((r.get("width", 1) for r in rows), default=1)}


def _line(row: dict, node_name: str, line: list, details: bool) -> dict:
    out = {"task": row["name"], "task_id": row["id"], "service": row.get("service", row["name"].rsplit(".", 1)[0]),
           "service_id": row.get("service_id", ""), "slot": row.get("slot", 0), "node": node_name,
           "node_id": row["node_id"], "time": line[0], "stream": line[1], "line": line[2]}
    if details:
        out["details"] = row.get("details") or {}
    return out


def task_names_of(rows: list[dict], task_id: str) -> str:
    return next((r["name"] for r in rows if r["id"] == task_id), task_id)

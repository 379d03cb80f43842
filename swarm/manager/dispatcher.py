"""The dispatcher: the managers' side of the agents' two calls.

How this works. Agents long-poll `tasks.assigned`: any manager answers from
its local store with the changes to the tasks assigned to the caller (placed:
one still new or pending is not the node's yet) since the store index the
agent last saw, as SwarmKit's Assignments stream: the first answer is the
full set (the ids of all the node's tasks, and their records), the next ones
only the records that changed for the agent and the ids that left the node
(a status the agent reported itself is not sent back). A `since` older than
what this manager's index knows the removals from (another manager's index,
read again after a snapshot, or a node back after a while) gets the full set
again. The poll waits (up to 5 s) until a store event (services, tasks,
nodes, networks) arrives, then a little longer so a burst of changes goes out
in one answer. A poll costs the caller's changes, not a pass over every task
of the cluster: `run` keeps an index of the assigned tasks by node (`Placed`,
each node's tasks in the order they last changed, and the ids that left each
node until it has seen them), updated from the store's task events, and
answers carry the index of the last event it applied. The index is read
whole only when `run` starts and on a watch `Resync` (a snapshot installed),
in chunks; neither that read nor a burst of events holds the trio thread
longer than SLICE without a checkpoint. A dispatcher whose `run` is not
running groups a fresh listing (`group_tasks`, once per store index).
The network view (`build_network_view`, pure) is a typed
`swarm.api.netview.NetworkView`: the networks the node's tasks use (and
ingress when any service publishes ports), the peers on them, each network's
service table for DNS and the VIP load balancers, and the published ports;
it is encoded to plain data only at the end. A task whose service was
given --with-registry-auth goes with the service's encoded credentials
("auth": task id -> credentials), to the node it is assigned to only, with
the task's first sending: the agent keeps them in memory to pull the image.
The secrets and configs of the tasks sent (those that may still start) go the
same way, to that node only: "secrets"/"configs": id -> base64 value
(`task_files`); the agent keeps them in memory until its tasks that use them
have stopped.

Agents report state changes with `tasks.status`: every update is checked
before anything is written, then applied as compare-and-set updates that only
move a task's state forward, in store-sized transactions; a batch that
conflicts is read again and retried. A task's first `running` report also
records when (Task.running_at: the update monitor counts from it).
"""
from __future__ import annotations

import base64
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from raft.node import RaftUnavailable
from raft.store import Event, Op
from raft.watch import Resync
from swarm.api import model, netview, records, secrets, spec
from swarm.api.errors import ApiError
from swarm.api.taskstate import IllegalTransition, advance
from swarm.manager.allocator import NETWORK
from swarm.manager.controlapi.secrets import objects, read_value
from swarm.manager.membership import Manager
from swarm.manager.planner import ingress_id, network_record
from swarm.manager.reconciler import MAX_TXN_BYTES, MAX_TXN_OPS, batches

ASSIGN_BATCH = 0.03
# As swarmkit's dispatcher: a task is the node's once the scheduler has assigned it (and the
# allocator given it its addresses). A global task is born with its node (a restarted one waits
# out its restart delay unplaced): sent earlier, the agent would start it without its networks.
ASSIGNED = spec.STATE_ORDER["assigned"]
MAX_WAIT = spec.POLL_WAIT
# The longest the index keeps the trio thread without a checkpoint: the heartbeats, the polls
# and the Raft thread (which shares the GIL) are served in between.
SLICE = 0.01
WATCH_BUFFER = 1_000_000   # events
BUILD_CHUNK = 500   # records decoded between two looks at the clock while the index is read whole


class Dispatcher:
    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self._waiting: dict[str, trio.Event] = {}   # node id -> set when its next answer may differ
        self._placed: Placed | None = None   # the tasks by node: kept by run, else of the last poll's index
        self._running = False                # run keeps _placed up to date (once _built is set)
        self._built = trio.Event()

    async def run(self) -> None:
        """Keep the index of assigned tasks, and wake the long polls on every store
        event that can change an answer."""
        raft = self.m.raft
        # A resync reads every task again (seconds at 100,000 tasks): a buffer that holds a
        # whole create's events (a few hundred bytes each) is far cheaper.
        with raft.watch(kinds=[spec.SERVICE, spec.TASK, model.NODE, NETWORK], maxlen=WATCH_BUFFER) as watch:
            self._running = True
            try:
                self._placed = await self._build()
                self._built.set()
                mark = time.perf_counter()
                while True:
                    try:
                        item = await watch.next()
                    except trio.EndOfChannel:
                        return
                    placed = self._placed
                    if isinstance(item, Resync):
                        # A Raft snapshot replaced the store (no events for what it changed), or
                        # this watch fell behind: read it whole again; the old index answers meanwhile.
                        self._placed = await self._build()
                        mark = time.perf_counter()
                        self._wake(None)
                    elif isinstance(item, Event) and item.index > placed.built_at:   # older: in the listing
                        # The record as it is now (perhaps newer than the event: an agent then
                        # sees the change twice, never misses it).
                        touched: set[str] | None = None     # None: every node
                        if item.kind == spec.TASK:
                            touched = placed.apply(item.id, raft.get(spec.TASK, item.id), item.index)
                        elif item.kind == model.NODE:
                            placed.node_changed(item.id, raft.get(model.NODE, item.id))
                        placed.index = max(placed.index, item.index)
                        if touched is None:
                            placed.views_at = max(placed.views_at, item.index)
                        self._wake(touched)
                    else:
                        continue   # a change of leadership: any manager answers from its own store
                    if time.perf_counter() - mark > SLICE:
                        # A long burst of events (a 10,000-task transaction): let the others run.
                        # The events of one index arrive together, so the index a poll answers
                        # with is the last complete one meanwhile.
                        index = placed.index
                        placed.index = min(index, item.index - 1)
                        await trio.sleep(0)
                        placed.index = max(placed.index, index)
                        mark = time.perf_counter()
            finally:
                self._running = False

    def _wake(self, nodes: set[str] | None) -> None:
        """Wake the long polls of `nodes` (None: every node's: a service, node or network
        changed, or a task with network attachments, which every network view may hold). A
        task's status moving on, which its agent reported itself, wakes no one: it is not
        sent back (`seen_change`)."""
        if nodes is None:
            waiting, self._waiting = self._waiting, {}
            for event in waiting.values():
                event.set()
            return
        for node in nodes:
            event = self._waiting.pop(node, None)
            if event is not None:
                event.set()

    async def _build(self) -> Placed:
        """The tasks grouped from a listing of the store, read in chunks with checkpoints
        between them (100,000 tasks are seconds of decoding)."""
        raft = self.m.raft
        # Events up to `before` are in the listing; those after `after` are not. Between the
        # two, the listing may hold a removal the index never sees: a node asking from before
        # `after` gets its whole set.
        before = raft.index
        listing = raft.list(spec.TASK)
        after = raft.index
        placed = Placed(before, floor=after, built_at=before)
        mark = time.perf_counter()
        for i, (task_id, rec) in enumerate(listing.items()):
            placed.apply(task_id, rec, rec.version >> 16)
            if i % BUILD_CHUNK == 0 and time.perf_counter() - mark > SLICE:
                await trio.sleep(0)
                mark = time.perf_counter()
        placed.sort()
        placed.removed.clear()   # nothing was sent from this index yet
        placed.views_at = placed.index   # read whole: any network view may differ from the last sent
        return placed

    async def assigned(self, caller: str, params: dict) -> dict:
        """Long-poll: the changes to the caller's assigned tasks since `since` (store index).

        As SwarmKit's Assignments stream: a first answer (since 0, or a `since` older than
        this index knows the removals from) is the full set ("full", "task_ids"); the others
        carry only what changed ("changed": the records whose content changed for the agent,
        "removed": the ids that left the node)."""
        since, wait = params.get("since", 0), params.get("wait", 1.0)
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise ApiError("bad_request", "since must be a store index (a whole number)")
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 60:
            raise ApiError("bad_request", "wait must be a number of seconds from 0 to 60")
        wait = min(float(wait), MAX_WAIT)
        if self._running and not self._built.is_set():
            with trio.move_on_after(wait):
                await self._built.wait()
            if not self._built.is_set():
                raise ApiError("unavailable", "this manager is still reading the tasks; retry")
        placed = self.placed()
        delta = placed.delta(caller, since)
        if self._running and not (delta.full or delta.changed or delta.removed or placed.views_at > since) \
                and wait > 0:
            # Nothing new for this node, nor for the network views since its last answer: wait
            # until something is.
            event = self._waiting.setdefault(caller, trio.Event())
            with trio.move_on_after(wait):
                await event.wait()
                await trio.sleep(ASSIGN_BATCH)  # let a burst of changes arrive together
            placed = self.placed()
            delta = placed.delta(caller, since)
        elif not self._running and self._index() <= since and wait > 0:
            with trio.move_on_after(wait):    # no index kept: nothing can say when it changes
                await trio.sleep_forever()
            placed = self.placed()
            delta = placed.delta(caller, since)
        answer: dict[str, Any] = {"index": placed.index, "full": delta.full,
                                  # the records as stored, copied into the answer's frame as they are
                                  "changed": [msgspec.Raw(data) for _, data in delta.changed],
                                  "network": netview.encode(self.network_view(caller))}
        if delta.full:
            answer["task_ids"] = delta.task_ids
        else:
            answer["removed"] = delta.removed
        sent = [task for task, _ in delta.changed]
        auth = task_credentials(sent, self._services())
        if auth:
            answer["auth"] = auth
        answer.update(self._file_values(task_files(sent)))
        return answer
    def _file_values(self, wanted: dict[str, set[str]]) -> dict[str, dict[str, str]]:
        """"secrets"/"configs": id -> base64 value, of the objects `wanted` names (one the
        store no longer holds whole is left out: the agent then rejects the task that needs it)."""
        out: dict[str, dict[str, str]] = {}
        for kind, ids in wanted.items():
            found = objects(self.m.raft, kind)
            values = {}
            for obj_id in sorted(ids):
                value = read_value(self.m.raft, kind, found[obj_id][0]) if obj_id in found else None
                if value is not None:
                    values[obj_id] = base64.b64encode(value).decode()
            if values:
                out[f"{kind}s"] = values
        return out

    def _services(self) -> dict[str, spec.Service]:
        return {k: s for k, (s, _) in records.decode_all(self.m.raft.list(spec.SERVICE),
                                                         spec.service_from_dict).items()}

    def network_view(self, node_id: str) -> netview.NetworkView:
        """The caller's network view, from the local store."""
        raft = self.m.raft
        networks = {k: n for k, (n, _) in records.decode_all(raft.list(NETWORK), network_record).items()}
        services = self._services()
        placed = self.placed()
        # Only tasks with networks enter a view (build_network_view skips the others).
        view = build_network_view(node_id, networks, placed.node_records(raft), services,
                                  list(placed.networked.values()))
        port = model.cluster_settings(self.m.cluster())["data_path_port"]
        return view if port == view.data_path_port else dataclasses.replace(view, data_path_port=port)

    def _index(self) -> int:
        return self._placed.index if self._running and self._placed is not None else self.m.raft.index

    def placed(self) -> Placed:
        """The assigned tasks by node: the index `run` keeps, else grouped once per store index
        (a dispatcher whose `run` is not running: every answer is then a full one)."""
        if not self._running and (self._placed is None or self._placed.index != self.m.raft.index):
            index = self.m.raft.index
            self._placed = group_tasks(index, self.m.raft.list(spec.TASK))
        assert self._placed is not None
        return self._placed

    async def status(self, caller: str, params: dict) -> dict:
        """Apply a batch of task status changes reported by the caller's agent, as
        compare-and-set updates in store-sized transactions (a batch that conflicts
        is read again and retried); a state only moves forward. Every update is
        checked before anything is written: one malformed update refuses the whole
        call with the reason."""
        now = time.time()
        todo = parse_status_updates(params, now)  # later reports of one task win
        applied = 0
        # Whether this manager's store holds every commit: the acting leader's does (its lease
        # says no other leader can have been elected), else a quorum round shows it when needed.
        confirmed = self.m.raft.is_leader()
        for _ in range(10):
            ops = []
            unsure = False
            for task_id, status in todo.items():
                rec = self.m.raft.get(spec.TASK, task_id)
                task = None
                if rec is not None:
                    try:   # typed once per version: the index of assigned tasks typed it already
                        task = records.decode_one(task_id, rec, spec.task_from_dict)
                    except (ValueError, TypeError):
                        continue  # a record no one can act on; the reader logs it
                if task is None or task.node_id != caller:
                    if not confirmed:
                        # This store may lag the leader's (a follower, or a leader cut off from
                        # the others): the task may be newer than it, or placed on this node
                        # since. A report dropped on its word would be acknowledged, and the
                        # task would stay in its last state for ever.
                        unsure = True
                        break
                    if task is None:
                        continue  # removed: nothing to report to
                    raise ApiError("forbidden", f"task {task_id} is not assigned to this node")
                try:
                    advance(task.status.state, status.state)
                except IllegalTransition:
                    # A running task whose health changed stays running, but the change must
                    # be recorded: an unhealthy task leaves the load balancers at once.
                    if not (status.state == task.status.state == "running" and status.health != task.status.health):
                        continue  # stale or duplicate report
                ops.append(Op.update(spec.TASK, task_id, spec.encode_task(with_status(task, status, now)),
                                     expect=rec.version))
            if unsure:
                await self.m.confirm_current()
                confirmed = True
                continue
            conflicted: set[str] = set()
            for batch in batches(ops, MAX_TXN_BYTES, MAX_TXN_OPS):
                try:
                    result = await self.m.raft.commit(batch)
                except RaftUnavailable as exc:
                    # Leadership moved under the commit (a loaded leader at 100,000 tasks):
                    # "unavailable" is what the agent retries, not an internal error.
                    raise ApiError("unavailable", str(exc)) from None
                if result.ok:
                    applied += len(batch)
                else:
                    conflicted.update(op.id for op in batch)
            if not conflicted:
                return {"applied": applied}
            todo = {k: v for k, v in todo.items() if k in conflicted}
            await trio.sleep(0.01)  # the leader wrote one of these tasks meanwhile: read again
        raise ApiError("unavailable", "task status kept conflicting; the agent retries")


@dataclass(frozen=True)
class Entry:
    """A task as the index holds it: `sent_at` is the store index of its last change an agent
    must see (its status moving on, which the agent itself reported, is not one)."""

    task: spec.Task
    data: bytes
    sent_at: int


@dataclass(frozen=True)
class Delta:
    """What one poll answers a node: the full set or the removals since, and the changed tasks."""

    full: bool
    changed: list[tuple[spec.Task, bytes]]
    task_ids: list[str]
    removed: list[str]


@dataclass
class Placed:
    """The store's tasks as the long polls read them: those assigned, by node (in the
    order of their last change for the agent), the ids that left each node, and the
    tasks with network attachments (the only ones a network view looks at)."""

    index: int                  # every task change up to here is in
    floor: int = 0              # removals are known from here: a poll from before gets the full set
    built_at: int = 0           # the listing it was read from holds every change up to here
    by_node: dict[str, dict[str, Entry]] = field(default_factory=dict)
    removed: dict[str, dict[str, int]] = field(default_factory=dict)   # node -> task id -> index it left at
    seen: dict[str, int] = field(default_factory=dict)   # node -> its removals are forgotten up to here
    networked: dict[str, spec.Task] = field(default_factory=dict)
    nodes: dict[str, dict] | None = None                 # node records, kept one node event at a time
    views_at: int = 0           # the last change that may have changed any node's network view
    _node_of: dict[str, str] = field(default_factory=dict)

    def apply(self, task_id: str, rec: Any, index: int) -> set[str] | None:
        """Task `task_id`'s record is now `rec` (None: removed), as of store index `index`.
        Returns the nodes whose next answer changed, or None for every node (a task with
        network attachments: it is in the network views)."""
        task = None
        if rec is not None:
            try:
                task = records.decode_one(task_id, rec, spec.task_from_dict)   # shared with the rounds' listings
            except (spec.InvalidRecord, ValueError, TypeError) as exc:
                records.warn_once(f"{task_id}@{rec.version}", f"skipping record {task_id} "
                                                              f"(version {rec.version}): {exc}")
        if rec is None:
            records.forget(task_id, spec.task_from_dict)
        return self._put(task_id, task, rec.data if rec is not None else b"", index)

    def _put(self, task_id: str, task: spec.Task | None, data: bytes, index: int) -> set[str] | None:
        networked = self.networked.pop(task_id, None) is not None
        if task is not None and task.networks:
            self.networked[task_id] = task
            networked = True
        touched: set[str] = set()
        node = task.node_id if task is not None and spec.STATE_ORDER[task.status.state] >= ASSIGNED else ""
        old = self._node_of.get(task_id)
        if old is not None and old != node:
            mine = self.by_node[old]
            del mine[task_id]
            if not mine:
                del self.by_node[old]
            del self._node_of[task_id]
            self.removed.setdefault(old, {})[task_id] = index
            touched.add(old)
        if node:
            assert task is not None
            mine = self.by_node.setdefault(node, {})
            before = mine.get(task_id)
            if before is not None and not seen_change(before.task, task):
                mine[task_id] = Entry(task, data, before.sent_at)   # in place: its order stays
            else:
                mine.pop(task_id, None)
                mine[task_id] = Entry(task, data, index)   # last: the order of sent_at
                self._node_of[task_id] = node
                gone = self.removed.get(node)
                if gone is not None:
                    gone.pop(task_id, None)
                touched.add(node)
        return None if networked else touched

    def sort(self) -> None:
        """Order each node's tasks by sent_at (after a listing, read in no order)."""
        for node, mine in self.by_node.items():
            self.by_node[node] = dict(sorted(mine.items(), key=lambda kv: kv[1].sent_at))

    def delta(self, node: str, since: int) -> Delta:
        """The answer to `node` polling from `since`; the removals it has seen are forgotten."""
        mine = self.by_node.get(node, {})
        full = since == 0 or since < max(self.floor, self.seen.get(node, 0))
        if full:
            changed = [(e.task, e.data) for e in mine.values() if e.sent_at > since]
        else:
            changed = []
            for e in reversed(mine.values()):   # newest first: stop at the first one it has
                if e.sent_at <= since:
                    break
                changed.append((e.task, e.data))
            changed.reverse()
        gone = self.removed.get(node, {})
        removed = [] if full else [tid for tid, at in gone.items() if at > since]
        # The node answered from `since` holds every change up to it (from any manager).
        upto = min(since, self.index)
        if upto > self.seen.get(node, 0):
            self.seen[node] = upto
            for tid in [tid for tid, at in gone.items() if at <= upto]:
                del gone[tid]
        if not gone:
            self.removed.pop(node, None)
        return Delta(full, changed, list(mine) if full else [], removed)

    def node_changed(self, node_id: str, rec: Any) -> None:
        if self.nodes is None:
            return   # read whole when a network view first needs them
        if rec is None:
            self.nodes.pop(node_id, None)
        else:
            self.nodes[node_id] = model.decode(rec.data)

    def node_records(self, store: Any) -> dict[str, dict]:
        if self.nodes is None:
            self.nodes = {k: model.decode(r.data) for k, r in store.list(model.NODE).items()}
        return self.nodes


def seen_change(old: spec.Task, new: spec.Task) -> bool:
    """Whether the agent must be sent `new`, holding `old`: anything but the status changed, or
    the status became terminal (the managers end a task too). As SwarmKit's dispatcher, a
    status the agent reported itself is not sent back."""
    if spec.is_terminal(new.status.state) and not spec.is_terminal(old.status.state):
        return True
    return spec.replace(new, status=old.status, running_at=old.running_at) != old


def group_tasks(index: int, listing: dict[str, Any]) -> Placed:
    """Group a task listing (read at `index` or later): a task is its node's once assigned
    (ASSIGNED); typed (and cached) decoding leaves out a record the agent could not act on.
    Removals are known from `index` on only."""
    placed = Placed(index, floor=index, built_at=index)
    for task_id, (task, version) in records.decode_all(listing, spec.task_from_dict).items():
        placed._put(task_id, task, listing[task_id].data, version >> 16)
    placed.sort()
    placed.removed.clear()
    return placed


def task_credentials(tasks: list[spec.Task], services: dict[str, spec.Service]) -> dict[str, str]:
    """task id -> its service's registry credentials, for the tasks sent that may still pull
    their image (not yet terminal) and whose service has credentials."""
    out = {}
    for task in tasks:
        service = services.get(task.service_id)
        if service is not None and service.registry_auth and not spec.is_terminal(task.status.state):
            out[task.id] = service.registry_auth
    return out


def task_files(tasks: list[spec.Task]) -> dict[str, set[str]]:
    """kind ("secret", "config") -> the ids the tasks sent use, for those that may still start
    (not terminal, wanted running): only their node gets the values, with their assignment."""
    out: dict[str, set[str]] = {}
    for task in tasks:
        if spec.is_terminal(task.status.state) or task.desired_state not in ("running", "ready"):
            continue
        for kind, refs in ((secrets.SECRET, task.spec.secrets), (secrets.CONFIG, task.spec.configs)):
            if refs:
                out.setdefault(kind, set()).update(r.id for r in refs)
    return out


def with_status(task: spec.Task, status: spec.TaskStatus, now: float) -> spec.Task:
    """`task` with a reported status; its first `running` report sets running_at (the
    manager's clock, as the update supervisor's `now`: its monitor and delay count from it)."""
    if status.state == "running" and not task.running_at:
        return spec.replace(task, status=status, running_at=now)
    return spec.replace(task, status=status)


def parse_status_updates(params: dict, now: float) -> dict[str, spec.TaskStatus]:
    """task id -> its latest reported status, from a tasks.status call; ApiError bad_request names the fault."""
    updates = params.get("updates")
    if not isinstance(updates, list):
        raise ApiError("bad_request", "updates must be a list")
    if len(updates) > spec.MAX_STATUS_BATCH:
        raise ApiError("bad_request", f"at most {spec.MAX_STATUS_BATCH} status updates per call")
    latest: dict[str, spec.TaskStatus] = {}
    for i, u in enumerate(updates):
        if not isinstance(u, dict) or not isinstance(u.get("id"), str) or not 0 < len(u["id"]) <= spec.MAX_ID:
            raise ApiError("bad_request", f"update {i}: a task id is a non-empty string")
        try:
            latest[u["id"]] = spec.status_from_wire(u.get("status"), now)
        except spec.InvalidRecord as exc:
            raise ApiError("bad_request", f"update {i} (task {u['id']}): {exc}") from None
    return latest


def _vtep(node: dict) -> str:
    return node["addr"].rsplit(":", 1)[0]


def build_network_view(node_id: str, networks: dict[str, dict], nodes: dict[str, dict],
                       services: dict[str, spec.Service], tasks: list[spec.Task]) -> netview.NetworkView:
    """What the node's agent needs to wire its tasks: the networks its tasks use,
    the peers on them (other nodes' task addresses and VTEPs), the service
    discovery and load-balancing table of each network, and the published ports."""
    live = [t for t in tasks if t.networks and t.desired_state == "running"
            and not spec.is_terminal(t.status.state) and t.node_id in nodes]
    local_ingress: dict[str, list[str]] = {}  # service -> its running tasks' ingress addresses on this node
    used = {a.network_id for t in live if t.node_id == node_id for a in t.networks}
    mesh = ingress_id(networks)
    publishing = any(s.ports for s in services.values())
    if publishing and mesh:
        used.add(mesh)  # every node is in the routing mesh
    peers: dict[str, list[netview.Peer]] = {n: [] for n in used}
    if publishing and mesh:
        for nid, node in nodes.items():
            if nid != node_id and node.get("ingress_ip"):
                peers[mesh].append(netview.Peer(node["ingress_ip"], _vtep(node)))
    # A task being stopped leaves the load balancers and DNS at once (`live`) but stays a
    # peer until it has stopped: connections already sent to it must still reach it.
    for t in tasks:
        if t.networks and t.desired_state != "running" and t.node_id in nodes and t.node_id != node_id \
                and not spec.is_terminal(t.status.state):
            vtep = _vtep(nodes[t.node_id])
            for a in t.networks:
                if a.network_id in used:
                    peers[a.network_id].append(netview.Peer(a.address.split("/")[0], vtep))
    endpoints: dict[str, dict[str, list[str]]] = {}
    for t in live:
        vtep = _vtep(nodes[t.node_id])
        for a in t.networks:
            ip = a.address.split("/")[0]
            if a.network_id in used and t.node_id != node_id:
                peers[a.network_id].append(netview.Peer(ip, vtep))
            if t.status.state == "running" and t.status.health != "unhealthy":
                endpoints.setdefault(a.network_id, {}).setdefault(t.service_id, []).append(ip)
                if a.network_id == mesh and t.node_id == node_id:
                    local_ingress.setdefault(t.service_id, []).append(ip)
    table: dict[str, list[netview.ServiceEntry]] = {n: [] for n in used}
    for s in services.values():
        for net_id in used:
            if networks.get(net_id, {}).get("ingress"):
                continue  # the routing mesh balances ingress; names resolve on the service's own networks
            if net_id not in s.vips and net_id not in s.spec.networks:
                continue
            table[net_id].append(netview.ServiceEntry(
                s.spec.name, s.spec.endpoint_mode, s.vips.get(net_id, "").split("/")[0],
                tuple(sorted(endpoints.get(net_id, {}).get(s.id, []))),
                tuple(s.spec.network_aliases.get(net_id, ()))))   # its aliases on this network only
    published = tuple(
        netview.PublishedPort(p.published, p.target, p.protocol, s.spec.name, tuple(sorted(
            # ingress mode: every task of the service; host mode: only this node's tasks
            endpoints.get(mesh, {}).get(s.id, []) if p.mode == "ingress" else local_ingress.get(s.id, []))))
        for s in services.values() for p in s.ports if p.published)
    return netview.NetworkView(
        networks={n: _network(networks[n]) for n in used if n in networks},
        peers={n: tuple(ps) for n, ps in peers.items()},
        services={n: tuple(entries) for n, entries in table.items()},
        ingress_ip=nodes.get(node_id, {}).get("ingress_ip", ""),
        published=published)


def _network(record: dict) -> netview.Network:
    return netview.Network(record["id"], record["name"], record["subnet"], record["gateway"], record["vni"],
                           bool(record.get("ingress")))

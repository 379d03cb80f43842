"""Task placement: a SwarmKit-style filter pipeline, then spread. Pure.

How this works. `schedule` builds one `NodeState` per node (what live tasks
already reserve there, how many tasks of each service it runs), then places
the pending tasks service by service. For a service, the static filters
(ready, availability, constraints) run once per node, cheapest first, and a
node that fails is counted against the first filter that refused it; their
result is cached per constraint set, since many services share one. The
nodes that pass go into a heap ordered by (tasks of this service, tasks
overall, seeded shuffle rank). Each task takes the top node if the dynamic
filters (max replicas per node, resources, host ports) still accept it; a
node they refuse is dropped for the rest of the service (placements only use
capacity up, so it cannot fit later) and counted; a node that takes a task
has its counters bumped and goes back into the heap.

Placement preferences are SwarmKit's decision tree: with `spread=LABEL`
preferences the nodes are grouped by their value of the first label (nodes
without it form the group ""), each group by the next label, and so on; the
heaps above are the leaves. The tasks are divided equally over the groups of
a level, counting the tasks each already runs (the emptiest get the
remainder); a group that cannot take its share (no node fits) gives the rest
to the others. A node's `platform` (os, architecture as uname names it) is
matched by node.platform.os / node.platform.arch constraints. Host ports are SwarmKit's: a port a
service publishes in host mode (protocol and number) binds on the node that
runs the task, so no node runs two tasks holding one, counting the live
tasks already there; ingress ports are the routing mesh's and constrain no
node. Tasks do not carry their ports: a task holds those of its service's
current spec. A task with no node left gets Docker's
reason, built from the per-filter counts: "no suitable node (1 node is not
ready; 2 nodes lack 4GiB of memory)". Global tasks arrive with their node
preset: they are only checked against that node. The rng only orders ties;
the same seed, nodes and tasks give the same plan.
"""
from __future__ import annotations

import heapq
import random
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from swarm.api.errors import SwarmError
from swarm.api.spec import Resources, Service, Task, is_terminal

# -- constraints ------------------------------------------------------------------------------


class ConstraintError(SwarmError, ValueError):
    """A placement constraint that cannot be parsed (the user's input is wrong)."""


class PreferenceError(ConstraintError):
    """A placement preference that cannot be parsed."""


_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
_LABEL_PREFIXES = ("node.labels.", "engine.labels.")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
_VALUE = re.compile(r"^[A-Za-z0-9:\-_\s.*()?+\[\]\\^$|/]+$")   # SwarmKit's value pattern
_KEY_HELP = ("use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME "
             "or engine.labels.NAME")


@dataclass(frozen=True)
class Constraint:
    key: str          # node.id | node.hostname | node.role | node.platform.os|arch | node.labels | engine.labels
    label: str        # the label name for *.labels keys, else ""
    equal: bool       # == (True) or != (False)
    value: str

    def matches(self, node: NodeInfo) -> bool:
        if self.key == "node.id":
            have: str | None = node.id
        elif self.key == "node.hostname":
            have = node.hostname
        elif self.key == "node.role":
            have = node.role
        elif self.key == "node.platform.os":
            have = node.os
        elif self.key == "node.platform.arch":
            have = node.arch
        elif self.key == "node.labels":
            have = node.labels.get(self.label)
        else:
            have = node.engine_labels.get(self.label)
        # SwarmKit compares case-insensitively; a missing label never equals anything
        same = have is not None and have.casefold() == self.value.casefold()
        return same if self.equal else not same


def parse_constraint(expr: str) -> Constraint:
    def bad(why: str) -> ConstraintError:
        return ConstraintError(f'invalid constraint "{expr}": {why}')

    if not isinstance(expr, str):
        raise ConstraintError(f"invalid constraint {expr!r}: expected a string")
    eq, ne = expr.find("=="), expr.find("!=")
    if eq < 0 and ne < 0:
        raise bad("expected KEY==VALUE or KEY!=VALUE")
    equal = ne < 0 or (0 <= eq < ne)
    at = eq if equal else ne
    key, value = expr[:at].strip(), expr[at + 2:].strip()
    if not key:
        raise bad(f"the key is missing ({_KEY_HELP})")
    if not value:
        raise bad("the value is missing")
    if not _VALUE.match(value):
        raise bad(f'"{value}" is not a valid value')
    low = key.lower()
    if low in _KEYS:
        return Constraint(low, "", equal, value)
    for prefix in _LABEL_PREFIXES:
        if low.startswith(prefix):
            label = key[len(prefix):]
            if not _LABEL_NAME.match(label):
                raise bad(f'"{label}" is not a valid label name' if label else f"a label name must follow {prefix}")
            return Constraint(prefix[:-1], label, equal, value)
    raise bad(f"unknown key {key} ({_KEY_HELP})")


def parse_constraints(exprs: Iterable[str]) -> tuple[Constraint, ...]:
    """Parse every expression; raise ConstraintError naming the first bad one."""
    return tuple(parse_constraint(e) for e in exprs)


def node_matches(constraints: Iterable[Constraint], node: NodeInfo) -> bool:
    return all(c.matches(node) for c in constraints)


def eligible_nodes(constraints: Iterable[str], nodes: Iterable[NodeInfo]) -> list[NodeInfo]:
    """The nodes a service's tasks could be placed on now, whatever their load: ready,
    active and matching the constraints (what `service create` asks the nodes about)."""
    parsed = parse_constraints(constraints)
    return [n for n in nodes if n.status == "ready" and n.availability == "active" and node_matches(parsed, n)]


# -- what the filters look at ----------------------------------------------------------------

HostPort = tuple[str, int]   # (protocol, published port)


@dataclass(frozen=True)
class NodeInfo:
    id: str
    hostname: str = ""
    role: str = "worker"
    status: str = "ready"               # ready | down | unknown | disconnected
    availability: str = "active"        # active | pause | drain
    labels: dict[str, str] = field(default_factory=dict)
    resources: Resources = Resources()  # total capacity the node reported
    engine_labels: dict[str, str] = field(default_factory=dict)
    os: str = ""                        # node.platform.os as the node reports it: "linux"
    arch: str = ""                      # node.platform.arch, uname's name: "x86_64", "aarch64"


@dataclass(frozen=True)
class Preference:
    """One placement preference: spread the tasks over the values of a node or engine label."""
    key: str          # node.labels | engine.labels
    label: str

    def value(self, node: NodeInfo) -> str:
        # A node without the label spreads as the value "" (SwarmKit's tree does the same).
        labels = node.labels if self.key == "node.labels" else node.engine_labels
        return labels.get(self.label, "")


def parse_preference(expr: str) -> Preference:
    """"spread=node.labels.zone" (docker's --placement-pref); PreferenceError says what is wrong."""
    if not isinstance(expr, str):
        raise PreferenceError(f"invalid placement preference {expr!r}: expected a string")
    strategy, sep, descriptor = expr.partition("=")
    if not sep or not strategy:
        raise PreferenceError(f'invalid placement preference "{expr}": the format is "<strategy>=<arg>"')
    if strategy != "spread":
        raise PreferenceError(f"unsupported placement preference {strategy} (only spread is supported)")
    low = descriptor.strip().lower()
    for prefix in _LABEL_PREFIXES:
        label = descriptor.strip()[len(prefix):]
        if low.startswith(prefix) and _LABEL_NAME.match(label):
            return Preference(prefix[:-1], label)
    raise PreferenceError(f'invalid placement preference "{expr}": spread over node.labels.NAME or '
                          f"engine.labels.NAME")


def parse_preferences(exprs: Iterable[str]) -> tuple[Preference, ...]:
    return tuple(parse_preference(e) for e in exprs)


@dataclass(frozen=True)
class TaskContext:
    """What the filters need to know about a task (the same for all tasks of a service)."""
    service_id: str
    constraints: tuple[Constraint, ...] = ()
    reservations: Resources = Resources()
    host_ports: frozenset[HostPort] = frozenset()
    max_replicas: int = 0               # per node; 0 = no limit
    preferences: tuple[Preference, ...] = ()
    platforms: tuple[tuple[str, str], ...] = ()   # (os, architecture) pairs the image runs on; () = any


class NodeState:
    """One node during one scheduling pass: capacity left and task counts, kept incrementally."""
    __slots__ = ("info", "free_cpu", "free_mem", "tasks", "ports", "by_service")

    def __init__(self, info: NodeInfo):
        self.info = info
        self.free_cpu = info.resources.nano_cpus
        self.free_mem = info.resources.memory_bytes
        self.tasks = 0                  # live tasks of any service (spread tie-break)
        self.ports: set[HostPort] = set()   # host-mode ports in use
        self.by_service: dict[str, int] = {}   # service id -> its live tasks here

    def take(self, reservations: Resources, ports: Iterable[HostPort] = ()) -> None:
        self.free_cpu -= reservations.nano_cpus
        self.free_mem -= reservations.memory_bytes
        self.ports.update(ports)


def host_ports(service: Service | None) -> frozenset[HostPort]:
    """The (protocol, port) pairs a service's tasks bind on their node: its host-mode published ports."""
    if service is None:
        return frozenset()
    return frozenset((p.protocol, p.published) for p in service.spec.ports if p.mode == "host" and p.published)


# -- filters ----------------------------------------------------------------------------------


def _n(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


def _nodes(count: int, one: str, many: str) -> str:
    return f"{_n(count)} {one if count == 1 else many}"


def human_bytes(n: int) -> str:
    """Docker's (go-units BytesSize) rendering: 4GiB, 1.5GiB, 512MiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    size, i = float(n), 0
    while size >= 1024 and i < len(units) - 1:
        size, i = size / 1024, i + 1
    return f"{size:.4g}{units[i]}"


def human_cpus(nano_cpus: int) -> str:
    cpus = nano_cpus / 1e9
    return "1 CPU" if cpus == 1 else f"{cpus:g} CPUs"


class Filter:
    name = ""
    static = True   # depends on the node alone, not on what this pass placed

    def enabled(self, ctx: TaskContext) -> bool:
        """False when the filter has nothing to say about this task (SwarmKit's SetTask)."""
        return True

    def check(self, ctx: TaskContext, node: NodeState) -> bool:
        raise NotImplementedError

    def explain(self, count: int, ctx: TaskContext | None = None) -> str:
        raise NotImplementedError


class ReadyFilter(Filter):
    name = "ready"

    def check(self, ctx: TaskContext, node: NodeState) -> bool:
        return node.info.status == "ready"

    def explain(self, count: int, ctx: TaskContext | None = None) -> str:
        return _nodes(count, "is not ready", "are not ready")


class AvailabilityFilter(Filter):
    name = "availability"

    def check(self, ctx: TaskContext, node: NodeState) -> bool:
        return node.info.availability == "active"

    def explain(self, count: int, ctx: TaskContext | None = None) -> str:
        return _nodes(count, "not available for new tasks", "not available for new tasks")


class ConstraintFilter(Filter):
    name = "constraints"

    def enabled(self, ctx: TaskContext) -> bool:
        return bool(ctx.constraints)

    def check(self, ctx: TaskContext, node: NodeState) -> bool:
        return node_matches(ctx.constraints, node.info)

    def explain(self, count: int, ctx: TaskContext | None = None) -> str:
        return f"scheduling constraints not satisfied on {_n(count)}"


# SwarmKit's platformEqual: uname's names and the OCI ones are the same architectures.
_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}


def parse_platforms(texts: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """"os/arch" strings (either part may be empty: any) -> (os, arch) pairs, arch normalized."""
    out = []
    for text in texts:
        os_name, _, arch = text.partition("/")
        out.append((os_name.lower(), _ARCH_ALIASES.get(arch.split("/")[0].lower(), arch.split("/")[0].lower())))
    return tuple(out)


def platform_matches(platforms: tuple[tuple[str, str], ...], node: NodeInfo) -> bool:
    """SwarmKit's PlatformFilter: no platforms match every node; otherwise the node's (os, arch)
    must equal one of them (an empty part matches any), and a node that reported no platform
    matches none."""
    if not platforms:
        return True
    if not node.os and not node.arch:
        return False
    arch = _ARCH_ALIASES.get(node.arch.lower(), node.arch.lower())
    return any((not want_os or want_os == node.os.lower()) and (not want_arch or want_arch == arch)
               for want_os, want_arch in platforms)


@dataclass(frozen=True)
class PlatformRule:
    """The platforms as one more rule beside the constraints, for who places by `node_matches`
    (the orchestrator's global services)."""
    platforms: tuple[tuple[str, str], ...]

    def matches(self, node: NodeInfo) -> bool:
        return platform_matches(self.platforms, node)


def placement_rules(constraints: Iterable[str], platforms: Iterable[str]) -> tuple[Any, ...]:
    """A spec's constraints, parsed (ConstraintError), and its platforms as a rule: what a node
    must match to run the service's tasks."""
    parsed_platforms = parse_platforms(platforms)
    return parse_constraints(constraints) + ((PlatformRule(parsed_platforms),) if parsed_platforms else ())


class PlatformFilter(Filter):
    name = "platforms"

    def enabled(self, ctx: TaskContext) -> bool:
        return bool(ctx.platforms)

    def check(self, ctx: TaskContext, node: NodeState) -> bool:
        return platform_matches(ctx.platforms, node.info)

    def explain(self, count: int, ctx: TaskContext | None = None) -> str:
        return f"unsupported platform on {_n(count)}"       # SwarmKit's PlatformFilter.Explain


class ResourceFilter(Filter):
    name = "resources"
    static = False

    def enabled(self, ctx: TaskContext) -> bool:
        return ctx.reservations.nano_cpus > 0 or ctx.reservations.memory_bytes > 0

    def check(self, ctx: TaskContext, node: NodeState) -> bool:
        return (node.free_cpu >= ctx.reservations.nano_cpus
                and node.free_mem >= ctx.reservations.memory_bytes)

    def explain(self, count: int, ctx: TaskContext | None = None) -> str:
        wants = []
        if ctx is not None and ctx.reservations.nano_cpus:
            wants.append(human_cpus(ctx.reservations.nano_cpus))
        if ctx is not None and ctx.reservations.memory_bytes:
            wants.append(f"{human_bytes(ctx.reservations.memory_bytes)} of memory")
        what = " and ".join(wants) or "the reserved resources"
        return _nodes(count, f"lacks {what}", f"lack {what}")


class PortFilter(Filter):
    name = "ports"
    static = False

    def enabled(self, ctx: TaskContext) -> bool:
        return bool(ctx.host_ports)

    def check(self, ctx: TaskContext, node: NodeState) -> bool:
        return node.ports.isdisjoint(ctx.host_ports)

    def explain(self, count: int, ctx: TaskContext | None = None) -> str:
        return f"host-mode port already in use on {_n(count)}"


class MaxReplicasFilter(Filter):
    """SwarmKit's: no more than max_replicas_per_node live tasks of the service on a node."""
    name = "max-replicas"
    static = False

    def enabled(self, ctx: TaskContext) -> bool:
        return ctx.max_replicas > 0

    def check(self, ctx: TaskContext, node: NodeState) -> bool:
        return node.by_service.get(ctx.service_id, 0) < ctx.max_replicas

    def explain(self, count: int, ctx: TaskContext | None = None) -> str:
        return "max replicas per node limit exceed"   # SwarmKit's words, without a count


# cheapest first; a node is counted against the first filter that refuses it
FILTERS: tuple[Filter, ...] = (ReadyFilter(), AvailabilityFilter(), ConstraintFilter(), PlatformFilter(),
                               MaxReplicasFilter(),
                               ResourceFilter(), PortFilter())


def explain(failures: dict[str, int], ctx: TaskContext | None = None) -> str:
    """Docker's reason for an unplaced task from per-filter failure counts (keyed by filter name)."""
    parts = [f.explain(failures[f.name], ctx) for f in FILTERS if failures.get(f.name)]
    return f"no suitable node ({'; '.join(parts)})" if parts else "no suitable node (the cluster has no nodes)"


def first_failure(ctx: TaskContext, node: NodeState) -> Filter | None:
    """The first enabled filter that refuses the node, or None if all accept it."""
    for f in FILTERS:
        if f.enabled(ctx) and not f.check(ctx, node):
            return f
    return None


# -- the pass ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulePlan:
    assignments: dict[str, str]     # task id -> node id
    unplaced: dict[str, str]        # task id -> why not ("no suitable node (...)")


def schedule(pending: list[Task], nodes: list[NodeInfo], live_tasks: list[Task],
             services: dict[str, Service], rng: random.Random) -> SchedulePlan:
    """Place `pending` tasks (desired running) on `nodes`, given the `live_tasks` already there.

    Tasks whose desired state is not running are ignored (neither placed nor explained). A pending
    task listed among `live_tasks` too (a global task has its node before it is placed) is not
    counted there: it would otherwise hold its own node's capacity and ports against itself.
    """
    placing = {t.id for t in pending if t.desired_state == "running"}
    p = _Pass(nodes, [t for t in live_tasks if t.id not in placing], services, rng)
    groups: dict[str, list[Task]] = {}
    contexts: dict[str, TaskContext | str] = {}
    for t in pending:
        if t.desired_state != "running":
            continue
        if t.service_id not in contexts:
            contexts[t.service_id] = _context(t.service_id, services.get(t.service_id))
        ctx = contexts[t.service_id]
        if isinstance(ctx, str):
            p.unplaced[t.id] = ctx
        elif t.node_id:
            p.place_on_its_node(ctx, t)
        else:
            groups.setdefault(t.service_id, []).append(t)
    for service_id, tasks in groups.items():
        ctx = contexts[service_id]
        assert isinstance(ctx, TaskContext)
        p.place_group(ctx, tasks)
    return SchedulePlan(p.assignments, p.unplaced)


def _context(service_id: str, service: Service | None) -> TaskContext | str:
    """The filters' view of a service's tasks, or the reason none of them can be placed."""
    if service is None:
        return f"service {service_id} not found"
    try:
        constraints = parse_constraints(service.spec.constraints)
        preferences = parse_preferences(service.spec.placement_prefs)
    except ConstraintError as exc:
        return exc.message
    return TaskContext(service_id, constraints, service.spec.reservations, host_ports(service),
                       max(service.spec.max_replicas_per_node, 0), preferences,
                       parse_platforms(service.spec.platforms))


class _Branch:
    """A node of SwarmKit's decision tree: the nodes sharing the values of the preferences so far.

    `tasks` counts the service's live tasks under it, kept up to date as the pass places
    more; a leaf holds its feasible nodes in a heap, least loaded first."""
    __slots__ = ("key", "tasks", "children", "heap")

    def __init__(self, key: str) -> None:
        self.key = key
        self.tasks = 0
        self.children: dict[str, _Branch] = {}
        self.heap: list[tuple[int, int, int, int]] = []   # (service tasks, all tasks, rank, node index)


class _Pass:
    """The mutable state of one `schedule` call: node counters, caches, the plan so far."""

    def __init__(self, nodes: list[NodeInfo], live_tasks: list[Task], services: dict[str, Service],
                 rng: random.Random):
        ordered = sorted(nodes, key=lambda n: n.id)   # input order must not change the plan
        self.states = [NodeState(n) for n in ordered]
        self.index = {n.id: i for i, n in enumerate(ordered)}
        self.rank = list(range(len(ordered)))
        rng.shuffle(self.rank)
        self.assignments: dict[str, str] = {}
        self.unplaced: dict[str, str] = {}
        for t in live_tasks:
            i = self.index.get(t.node_id) if t.node_id else None
            if i is None or is_terminal(t.status.state):
                continue
            svc = services.get(t.service_id)
            self.states[i].take(svc.spec.reservations if svc else Resources(), host_ports(svc))
            if t.desired_state == "running":
                self._count(t.service_id, i)
        # ready and availability do not depend on the task: run them once for the whole pass
        self.base: list[int] = []
        self.base_failures: dict[str, int] = {}
        for i, ns in enumerate(self.states):
            refused = next((f for f in FILTERS[:2] if not f.check(_ANY, ns)), None)
            if refused is None:
                self.base.append(i)
            else:
                self.base_failures[refused.name] = self.base_failures.get(refused.name, 0) + 1
        self.static_cache: dict[tuple[tuple[Constraint, ...], tuple[tuple[str, str], ...]],
                                tuple[list[int], dict[str, int]]] = {}

    def _count(self, service_id: str, i: int) -> int:
        state = self.states[i]
        state.tasks += 1
        state.by_service[service_id] = state.by_service.get(service_id, 0) + 1
        return state.by_service[service_id]

    def static_pass(self, ctx: TaskContext) -> tuple[list[int], dict[str, int]]:
        """Nodes passing the static filters for these constraints, and the failure counts."""
        key = (ctx.constraints, ctx.platforms)
        hit = self.static_cache.get(key)
        if hit is None:
            ok = [i for i in self.base if node_matches(ctx.constraints, self.states[i].info)]
            fails = dict(self.base_failures)
            if len(ok) < len(self.base):
                fails["constraints"] = len(self.base) - len(ok)
            if ctx.platforms:
                fitting = [i for i in ok if platform_matches(ctx.platforms, self.states[i].info)]
                if len(fitting) < len(ok):
                    fails["platforms"] = len(ok) - len(fitting)
                ok = fitting
            hit = self.static_cache[key] = (ok, fails)
        return hit

    def place_group(self, ctx: TaskContext, tasks: list[Task]) -> None:
        """Place one service's tasks: over the preferences' tree, then least loaded first."""
        feasible, static_failures = self.static_pass(ctx)
        group = _Group(self, ctx, list(reversed(tasks)), static_failures)
        root = self._tree(ctx, feasible)
        group.spread(root, len(tasks))
        if group.queue:
            reason = explain(group.failures, ctx)
            for rest in group.queue:
                self.unplaced[rest.id] = reason

    def _tree(self, ctx: TaskContext, feasible: list[int]) -> _Branch:
        """SwarmKit's decision tree (nodeset.go `tree`): one level per preference, keyed by the
        node's value of its label. Every node counts in the tree's task totals, so a branch
        whose nodes are all unfit still gets its share and then gives it up; only feasible
        nodes go into the leaves' heaps."""
        root = _Branch("")
        if not ctx.preferences:   # one leaf: no totals needed, and only the feasible nodes to visit
            by_service = [self.states[i].by_service.get(ctx.service_id, 0) for i in feasible]
            root.heap = [(mine, self.states[i].tasks, self.rank[i], i) for mine, i in zip(by_service, feasible)]
            heapq.heapify(root.heap)
            return root
        fit = set(feasible)
        for i, state in enumerate(self.states):
            mine = state.by_service.get(ctx.service_id, 0)
            branch = root
            branch.tasks += mine
            for pref in ctx.preferences:
                value = pref.value(state.info)
                branch = branch.children.setdefault(value, _Branch(value))
                branch.tasks += mine
            if i in fit:
                heapq.heappush(branch.heap, (mine, state.tasks, self.rank[i], i))
        return root

    def place_on_its_node(self, ctx: TaskContext, t: Task) -> None:
        """A global task: its node is fixed, only check that node."""
        i = self.index.get(t.node_id)
        if i is None:
            self.unplaced[t.id] = f"no suitable node (node {t.node_id} is not in the cluster)"
            return
        refused = first_failure(ctx, self.states[i])
        if refused is not None:
            self.unplaced[t.id] = explain({refused.name: 1}, ctx)
            return
        self.states[i].take(ctx.reservations, ctx.host_ports)
        self._count(t.service_id, i)
        self.assignments[t.id] = self.states[i].info.id


class _Group:
    """Placing one service's tasks over a decision tree (SwarmKit's scheduleNTasksOnSubtree)."""

    def __init__(self, p: _Pass, ctx: TaskContext, queue: list[Task], failures: dict[str, int]) -> None:
        self.p, self.ctx = p, ctx
        self.queue = queue          # tasks still to place, the next one last
        self.failures = dict(failures)
        self.dynamic = [f for f in FILTERS if not f.static and f.enabled(ctx)]

    def spread(self, branch: _Branch, n: int) -> list[int]:
        """Place up to `n` tasks under `branch`; the node indexes used (one per task placed).

        The tasks are divided equally over the children, counting those they already have:
        each child below its share gets the difference (the first `remainder` ones one
        more), and a child that cannot take its share is full: the rest is divided over the
        others, until all are placed or every child is full."""
        if not branch.children:
            return self._fill_leaf(branch, n)
        used: list[int] = []
        full: set[str] = set()
        while len(used) < n:
            open_ = [c for c in branch.children.values() if c.key not in full]
            if not open_:
                break
            share, remainder = divmod(sum(c.tasks for c in open_) + n - len(used), len(open_))
            moved = False
            # fewest tasks first (then by value): they get the remainder, and the plan is repeatable
            for child in sorted(open_, key=lambda c: (c.tasks, c.key)):
                target = share + (1 if remainder > 0 else 0)
                want = min(target - child.tasks, n - len(used))
                if want <= 0:
                    continue
                got = self.spread(child, want)
                used += got
                moved = moved or bool(got)
                if len(got) < want:
                    full.add(child.key)
                    moved = True
                elif target > share:
                    remainder -= 1
            if not moved:
                break
        branch.tasks += len(used)
        return used

    def _fill_leaf(self, leaf: _Branch, n: int) -> list[int]:
        """Place up to `n` tasks on the leaf's nodes: fewest of this service, then fewest overall, then rank."""
        heap, states, ctx = leaf.heap, self.p.states, self.ctx
        used: list[int] = []
        while len(used) < n and self.queue:
            while heap:
                i = heap[0][3]
                refused = next((f for f in self.dynamic if not f.check(ctx, states[i])), None)
                if refused is None:
                    break
                self.failures[refused.name] = self.failures.get(refused.name, 0) + 1
                heapq.heappop(heap)    # capacity only shrinks in a pass: this node is out for good
            if not heap:
                break
            _, total, r, i = heap[0]
            t = self.queue.pop()
            states[i].take(ctx.reservations, ctx.host_ports)
            heapq.heapreplace(heap, (self.p._count(ctx.service_id, i), total + 1, r, i))
            self.p.assignments[t.id] = states[i].info.id
            used.append(i)
        leaf.tasks += len(used)
        return used


_ANY = TaskContext("")

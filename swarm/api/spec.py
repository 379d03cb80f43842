"""Services and tasks: the object model the orchestrator, scheduler,
dispatcher and agent share, with one msgpack codec for all of them.

Records in Raft: kind "service" (id -> Service), kind "task" (id -> Task).
Frozen dataclasses; `to_dict`/`from_dict` turn them into plain data.
Times are float seconds since the epoch (wall clock), given by callers.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

# The state and mode names live in a light module (the CLI reads them); the model's users find them here too.
from swarm.api.states import GLOBAL_MODES, JOB_MODES, STATE_ORDER, TASK_STATES, TERMINAL_STATES  # noqa: F401

SERVICE, TASK = "service", "task"


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES


@dataclass(frozen=True)
class Resources:
    nano_cpus: int = 0       # 1e9 = one CPU
    memory_bytes: int = 0


@dataclass(frozen=True)
class RestartPolicy:
    condition: str = "any"   # none | on-failure | any
    delay: float = 5.0       # seconds between a task's end and its replacement's start
    max_attempts: int = 0    # 0 = unlimited
    window: float = 0.0      # seconds; 0 = attempts are counted forever


@dataclass(frozen=True)
class Mount:
    type: str                # bind | volume | tmpfs
    target: str
    source: str = ""         # bind: host path; volume: name ("" = anonymous, one per task); tmpfs: none
    readonly: bool = False
    bind_propagation: str = ""          # bind: rprivate (Docker's default) | private | rshared | shared | rslave | slave
    bind_recursive: str = "enabled"     # bind: enabled | disabled | writable | readonly (Docker 25's bind-recursive)
    volume_nocopy: bool = False         # volume: do not copy the image's files at the target into a new volume
    volume_labels: dict[str, str] = field(default_factory=dict)
    volume_driver: str = "local"        # only the local driver exists
    volume_opts: dict[str, str] = field(default_factory=dict)   # local driver: type, device, o (as docker's)
    tmpfs_size: int = 0                 # bytes; 0 = unlimited (half the node's memory, the kernel's default)
    tmpfs_mode: int = 0                 # permission bits; 0 = 1777


@dataclass(frozen=True)
class Ulimit:
    name: str                # nofile, nproc, core, ... (without RLIMIT_)
    soft: int
    hard: int


@dataclass(frozen=True)
class DNSConfig:
    nameservers: tuple[str, ...] = ()   # --dns: upstreams of the embedded DNS (or resolv.conf without networks)
    search: tuple[str, ...] = ()        # --dns-search
    options: tuple[str, ...] = ()       # --dns-option


@dataclass(frozen=True)
class LogDriver:
    name: str = "json-file"             # json-file | local | none
    options: dict[str, str] = field(default_factory=dict)   # max-size, max-file (as docker's --log-opt)


@dataclass(frozen=True)
class PortConfig:
    target: int
    published: int = 0                 # 0 = allocate one from 30000-32767
    protocol: str = "tcp"              # tcp | udp
    mode: str = "ingress"              # ingress | host


@dataclass(frozen=True)
class Attachment:
    network_id: str
    address: str                       # "10.0.1.5/24"


@dataclass(frozen=True)
class FileReference:
    """A secret or config a task gets as a file (Docker's SecretReference / ConfigReference)."""
    id: str                  # the secret's or config's record id
    name: str                # its name when the service was given it (what --secret-rm matches)
    target: str              # secret: a name under /run/secrets (or an absolute path); config: an absolute path
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass(frozen=True)
class HealthConfig:
    """Docker's HealthConfig. test: [] = the image's; ["NONE"] = disabled; ["CMD", arg...];
    ["CMD-SHELL", "command"]. A duration of 0 takes the image's value, else Docker's default
    (interval 30 s, timeout 30 s, start period 0, start interval 5 s, retries 3)."""
    test: tuple[str, ...] = ()
    interval: float = 0.0
    timeout: float = 0.0
    start_period: float = 0.0
    start_interval: float = 0.0
    retries: int = 0


@dataclass(frozen=True)
class UpdateConfig:
    """How tasks are replaced by an update (or a rollback): Docker's UpdateConfig and its defaults."""
    parallelism: int = 1               # tasks replaced at once; 0 = all
    delay: float = 0.0                 # seconds between two batches
    failure_action: str = "pause"      # pause | continue | rollback (rollback config: pause | continue)
    monitor: float = 5.0               # seconds a new task is watched for a failure after it runs
    max_failure_ratio: float = 0.0     # failures tolerated, as a fraction of the tasks updated
    order: str = "stop-first"          # stop-first | start-first


@dataclass(frozen=True)
class UpdateStatus:
    """Docker's UpdateStatus: where the last update (or rollback) of a service stands."""
    state: str = ""                    # updating | paused | completed | rollback_started | rollback_paused | rollback_completed
    started_at: float = 0.0
    completed_at: float = 0.0
    message: str = ""


HEALTH_STATES = ("", "starting", "healthy", "unhealthy")
UPDATE_STATES = ("updating", "paused", "completed", "rollback_started", "rollback_paused", "rollback_completed")


@dataclass(frozen=True)
class ContainerSpec:
    """What one task's container runs: Docker's ContainerSpec, plus the log driver (a
    task template field in Docker, kept here because it is all the worker needs)."""
    image: str
    command: tuple[str, ...] = ()     # docker's Args (COMMAND ARG... of service create): replaces the image's CMD
    env: tuple[str, ...] = ()         # "K=V"; values may hold templates ({{.Task.Slot}})
    mounts: tuple[Mount, ...] = ()
    stop_grace_period: float = 10.0
    limits: Resources = Resources()   # copied from ServiceSpec.limits: what the runtime enforces
    entrypoint: tuple[str, ...] = ()  # docker's Command (--entrypoint): replaces the image's ENTRYPOINT and CMD
    hostname: str = ""                # may hold templates; "" = the container id's first 12 characters
    user: str = ""                    # USER[:GROUP], names or ids; "" = the image's USER (root if none)
    groups: tuple[str, ...] = ()      # supplementary groups (names or gids)
    workdir: str = ""                 # "" = the image's WORKDIR ("/" if none)
    init: bool | None = None          # a tiny init as PID 1; None = the node's default (off)
    tty: bool = False
    stop_signal: str = ""             # "" = the image's STOPSIGNAL, else SIGTERM
    read_only: bool = False           # the root filesystem
    cap_add: tuple[str, ...] = ()     # "CAP_NET_ADMIN" form, or "ALL"
    cap_drop: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: tuple[Ulimit, ...] = ()
    pids_limit: int = 0               # 0 = no limit
    oom_score_adj: int = 0
    dns: DNSConfig = DNSConfig()
    hosts: tuple[str, ...] = ()       # "IP HOSTNAME..." lines for /etc/hosts (docker's --host HOST:IP)
    labels: dict[str, str] = field(default_factory=dict)    # container labels
    log_driver: LogDriver = LogDriver()
    healthcheck: HealthConfig | None = None   # None = the image's HEALTHCHECK (if any)
    force_update: int = 0             # bumped by `service update --force`: a new task template, same values
    secrets: tuple[FileReference, ...] = ()  # files on a tmpfs under /run/secrets, sent with the assignment
    configs: tuple[FileReference, ...] = ()  # read-only files at their targets


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    container: ContainerSpec
    mode: str = "replicated"          # replicated | global | replicated-job | global-job
    replicas: int = 1                 # replicated-job: the number of completions wanted
    constraints: tuple[str, ...] = ()  # "node.labels.zone==a", "node.role!=manager", ...
    reservations: Resources = Resources()
    limits: Resources = Resources()
    restart: RestartPolicy = RestartPolicy()
    labels: dict[str, str] = field(default_factory=dict)
    networks: tuple[str, ...] = ()     # network IDs
    endpoint_mode: str = "vip"         # vip | dnsrr
    ports: tuple[PortConfig, ...] = ()
    placement_prefs: tuple[str, ...] = ()  # "spread=node.labels.zone", applied in order (SwarmKit's tree)
    max_replicas_per_node: int = 0     # 0 = no limit
    max_concurrent: int = 0            # jobs: tasks running at once; 0 = as many as replicas (global: all)
    update_config: UpdateConfig = UpdateConfig()
    rollback_config: UpdateConfig = UpdateConfig()
    network_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # network ID -> its DNS aliases
    # The platforms the image runs on ("linux/amd64"; "" parts match any), as Docker's CLI copies them from
    # the image's index into Placement.Platforms: a node whose own platform is none of them is not eligible.
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    id: str
    spec: ServiceSpec
    spec_version: int = 1             # bumped on every update
    created_at: float = 0.0
    updated_at: float = 0.0
    vips: dict[str, str] = field(default_factory=dict)   # network ID -> VIP ("10.0.1.2/24"), set by the allocator
    ports: tuple[PortConfig, ...] = ()                     # published ports as allocated
    job_iteration: int = 0             # jobs: bumped on every update, so the job runs again (Docker's JobIteration)
    previous_spec: ServiceSpec | None = None   # the spec before the last update: what a rollback returns to
    previous_spec_version: int = 0
    last_spec_version: int = 0         # the highest spec version given so far (a new spec takes the next;
                                       # a rollback returns to previous_spec_version, so its tasks stay current)
    update_status: UpdateStatus | None = None
    # --with-registry-auth: the caller's credentials for the image's registry, Docker's encoded
    # auth config (base64url JSON). Sent to the nodes with their assignments, kept in their memory
    # only; never shown by inspect.
    registry_auth: str = ""


@dataclass(frozen=True)
class TaskStatus:
    state: str = "new"
    message: str = ""
    err: str = ""
    timestamp: float = 0.0
    exit_code: int | None = None
    container_id: str = ""
    health: str = ""                   # "" (no healthcheck) | starting | healthy | unhealthy


@dataclass(frozen=True)
class Task:
    id: str
    service_id: str
    service_name: str
    slot: int                          # replicated: 1..N; global: 0
    node_id: str                       # "" until the scheduler assigns it; global: fixed at creation
    desired_state: str                 # running | shutdown | remove (and ready for stop-first updates)
    spec: ContainerSpec
    spec_version: int
    status: TaskStatus = TaskStatus()
    created_at: float = 0.0
    attempt: int = 0                   # restarts of this slot so far
    not_before: float = 0.0            # restart delay: do not start before this time
    networks: tuple[Attachment, ...] = ()  # addresses, set by the allocator when the task is placed
    job_iteration: int = 0             # jobs: the service's job_iteration this task belongs to
    running_at: float = 0.0            # when it was first reported running (the update monitor counts from it)
    service_labels: dict[str, str] = field(default_factory=dict)  # for templates ({{.Service.Labels}})

    @property
    def name(self) -> str:
        return f"{self.service_name}.{self.slot if self.slot else self.node_id}"


D = TypeVar("D")
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}   # dataclass -> its fields' names, looked up once


def to_dict(obj: Any) -> Any:
    """Plain data (for msgpack) from any of the dataclasses above.

    Every field, defaults included (typed records are built by msgspec, which leaves a
    default out of the instance's __dict__, so msgspec's own encoder would leave it out of
    the record). The field names are looked up once per class and scalars returned first:
    a task's record is built in a third of the time `dataclasses.fields` took per object
    (each status report and each new task is encoded: thousands a second at scale)."""
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    names = _FIELD_NAMES.get(kind)
    if names is not None:
        return {name: to_dict(getattr(obj, name)) for name in names}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(obj))
        return to_dict(obj)
    return obj


_FIELD_SETS: dict[type, frozenset[str]] = {}


def replace(obj: D, **changes: Any) -> D:
    """`dataclasses.replace` for the dataclasses above, in a third of its time: a copy of `obj`'s
    attributes with `changes` set, without running __init__ again (none of them has a
    __post_init__ to run). A round replaces every task it places, twice: at 100,000 tasks,
    seconds. An unknown field name is a TypeError, as there."""
    kind = type(obj)
    names = _FIELD_SETS.get(kind)
    if names is None:
        names = _FIELD_SETS[kind] = frozenset(f.name for f in dataclasses.fields(obj))
    if not names.issuperset(changes):
        raise TypeError(f"{kind.__name__} has no field {sorted(set(changes) - names)[0]!r}")
    new = object.__new__(kind)
    attrs = new.__dict__
    attrs.update(obj.__dict__)
    attrs.update(changes)
    return new


# -- a task's record, encoded ---------------------------------------------------------------------
# msgspec writes plain data as msgpack.packb does (swarm.api.model.encode), and a msgspec.Raw as is.
_pack = msgspec.msgpack.Encoder().encode
_MAX_SPEC_RECORDS = 1024
# id(container spec) -> (that spec, its encoding). A container spec is most of a task's record
# (nine tenths of the time to encode one), and tasks share them: those a round creates for a
# service, and those decoded from the store (task_from_dict). Each entry holds its spec, so the
# id is not reused while the entry is here.
_spec_records: dict[int, tuple[ContainerSpec, msgspec.Raw]] = {}
_TASK_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Task))


def encode_task(task: Task) -> bytes:
    """A task's record: the bytes of `model.encode(to_dict(task))`, with its container spec
    encoded once for every task that holds the same spec object (each status report and each
    new task is encoded: thousands a second at scale)."""
    held = _spec_records.get(id(task.spec))
    if held is None:
        if len(_spec_records) >= _MAX_SPEC_RECORDS:
            _spec_records.clear()
        held = _spec_records[id(task.spec)] = (task.spec, msgspec.Raw(_pack(to_dict(task.spec))))
    record = {}
    for name in _TASK_FIELD_NAMES:   # in the fields' order, as to_dict: the same bytes
        value = getattr(task, name)
        record[name] = held[1] if name == "spec" else value if type(value) in _SCALARS else to_dict(value)
    return _pack(record)


class InvalidRecord(ValueError):
    """Data that does not decode into the object model; the message names the field."""


def _build(cls: type, data: Any) -> Any:
    # Typed decoding: every field's type is checked (a string where a number
    # belongs, a bool for an int, an unknown nested shape all fail here, with
    # the path of the field), so nothing malformed reaches decision code.
    try:
        return msgspec.convert(data, cls)
    except (msgspec.ValidationError, TypeError) as exc:
        raise InvalidRecord(f"invalid {cls.__name__.lower()}: {exc}") from None


def service_from_dict(data: dict) -> Service:
    return _build(Service, data)


# -- what the tasks of a service hold alike, decoded once ----------------------------------------
# The tasks of a service carry equal container specs (about 2 KB typed each), equal service labels
# and the same few short strings (ids of the service and node, state names). task_from_dict shares
# them, so a typed task's own memory is its ids, status, slot and times. Sharing is safe because the
# objects are frozen and nothing writes their dicts (dataclasses.replace builds new objects).
#
# A container spec is found by its encoding (the bytes of an equal map, keys in the same order):
# equal bytes mean the very data the shared object was built from, so a hit gives what decoding
# would. An entry lives as long as some object holds its spec (weak values): the table never
# outgrows the specs in use.
_shared_specs: weakref.WeakValueDictionary[bytes, ContainerSpec] = weakref.WeakValueDictionary()
_shared_labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
_MAX_SHARED_LABELS = 4096        # label sets remembered (a dict holds no weak reference): then start over
_WORDS = ("service_id", "service_name", "node_id", "desired_state")   # the task's repeated strings
_STATUS_WORDS = ("state", "message", "health")                        # and its status's
_MAX_WORD = 64                   # a longer string is not vocabulary: interning it would only cost


def _spec_key(container: Any) -> bytes | None:
    if not isinstance(container, dict):
        return None            # not a spec: decoding says what is wrong with it
    try:
        return _pack(container)
    except (TypeError, ValueError, OverflowError):
        return None


def _interned(data: dict, names: tuple[str, ...]) -> dict:
    out = dict(data)           # the caller's map stays as it was
    for name in names:
        value = out.get(name)
        if type(value) is str and len(value) <= _MAX_WORD:
            out[name] = sys.intern(value)
    return out


def task_from_dict(data: dict) -> Task:
    """A task, checked field by field; what it holds alike with the tasks decoded before (its
    container spec, service labels, ids and state names) is the same object as theirs."""
    if not isinstance(data, dict):
        return _build(Task, data)
    key = _spec_key(data.get("spec"))
    return _shared_task(data, key, _shared_specs.get(key) if key is not None else None)


# A task's record with its container spec left as bytes (fields the record lacks: UNSET, so
# that the Task's defaults apply as when decoding the whole map).
_TaskFields = msgspec.defstruct("_TaskFields", [(name, msgspec.Raw if name == "spec" else Any, msgspec.UNSET)
                                                for name in _TASK_FIELD_NAMES])
_read_task_fields = msgspec.msgpack.Decoder(_TaskFields).decode


def task_from_record(record: bytes) -> Task:
    """`task_from_dict(model.decode(record))`, faster: the container spec, most of a record,
    is looked up among the shared ones by its bytes and decoded only when none is (every
    manager types every task version it applies: thousands a second during a large create).
    Bad bytes raise InvalidRecord, as a bad map does."""
    try:
        fields = _read_task_fields(record)
        data = {name: value for name in _TASK_FIELD_NAMES
                if (value := getattr(fields, name)) is not msgspec.UNSET}
        raw = data.get("spec")
        if raw is None:
            return _shared_task(data, None, None)
        key = bytes(raw)
        shared = _shared_specs.get(key)
        if shared is None:
            data["spec"] = msgspec.msgpack.decode(key)
            if not isinstance(data["spec"], dict):
                key = None           # not a spec: decoding says what is wrong with it
    except msgspec.DecodeError as exc:   # not msgpack, not a map, a string that is not UTF-8
        raise InvalidRecord(f"invalid task record: {exc}") from None
    return _shared_task(data, key, shared)


def _shared_task(data: dict, key: bytes | None, shared: ContainerSpec | None) -> Task:
    """The task of `data`, sharing its container spec (`shared`, or the one decoded now, kept
    under `key`), service labels, ids and state names with the tasks decoded before."""
    data = _interned(data, _WORDS)
    if isinstance(data.get("status"), dict):
        data["status"] = _interned(data["status"], _STATUS_WORDS)
    if shared is not None:
        data["spec"] = shared  # msgspec takes an instance of the field's type as it is
    task = _build(Task, data)
    if key is not None and shared is None:
        _shared_specs[key] = task.spec
    labels = tuple(task.service_labels.items())
    same = _shared_labels.get(labels)
    if same is None:
        if len(_shared_labels) >= _MAX_SHARED_LABELS:
            _shared_labels.clear()
        _shared_labels[labels] = task.service_labels
    elif same is not task.service_labels:
        object.__setattr__(task, "service_labels", same)   # not yet seen by anyone: frozen for them
    return task


# -- limits of what a worker or a client may send ----------------------------------------------
MAX_ID = 64                 # node, task and service ids are 25 characters; leave room, refuse junk
MAX_STATUS_TEXT = 4096      # a status message or error (the agent cuts longer ones)
MAX_STATUS_BATCH = 1000     # task status updates in one tasks.status call
# Seconds an agent's tasks.assigned long poll waits for a change (the dispatcher's most). Every
# change wakes the polls it concerns, so a longer wait costs no latency; a poll whose wait ran out
# is a call the leader serves for nothing (1,000 nodes polling every second kept it busy).
POLL_WAIT = 5.0
CLOCK_SKEW = 300.0          # seconds a worker's clock may run ahead before its timestamps are clamped
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(kind: str, name: Any) -> str:
    """A service (or network) name as Docker accepts it: it becomes a DNS label and part of task names."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidRecord(f"invalid {kind} name {name!r}: a name starts with a letter or digit and holds "
                            "only letters, digits, '-', '_' and '.' (at most 63 characters)")
    return name


def status_from_wire(data: Any, now: float) -> TaskStatus:
    """A task status reported by an agent, checked field by field.

    A timestamp from the future (a worker's clock ahead of ours) is clamped to
    `now` rather than refused: refusing would leave the task's state stuck."""
    status = _build(TaskStatus, data)
    if status.state not in STATE_ORDER:
        raise InvalidRecord(f"invalid task status: unknown state {status.state!r}")
    if not math.isfinite(status.timestamp) or status.timestamp < 0:
        raise InvalidRecord(f"invalid task status: timestamp {status.timestamp!r} is not a time")
    for name in ("message", "err"):
        if len(getattr(status, name)) > MAX_STATUS_TEXT:
            raise InvalidRecord(f"invalid task status: {name} longer than {MAX_STATUS_TEXT} characters")
    if len(status.container_id) > MAX_ID:
        raise InvalidRecord("invalid task status: container_id too long")
    if status.health not in HEALTH_STATES:
        raise InvalidRecord(f"invalid task status: unknown health {status.health[:40]!r}")
    if status.exit_code is not None and not -(1 << 31) <= status.exit_code < (1 << 31):
        raise InvalidRecord(f"invalid task status: exit code {status.exit_code} out of range")
    if status.timestamp > now + CLOCK_SKEW:
        status = dataclasses.replace(status, timestamp=now)
    return status

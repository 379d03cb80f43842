"""The update supervisor: which slots a rolling update replaces now, and where the
update stands (Docker's UpdateStatus). Pure: a service, its slots, its tasks and
`now` in; a `Decision` out.

How this works. Each round the orchestrator hands over the occupied slots of a
replicated or global service (global: one per node), each with its *old* live
task (of another spec version than the service's: an update or a rollback
changed the spec) and its *new* one (of the service's version). `decide` then

1. retires: a slot whose start-first successor is running gets its old task
   shut down (also while paused: a slot never keeps two running tasks);
2. stops there while the update is paused (paused, rollback_paused): only the
   user resumes it, by updating the service again;
3. counts failures (failure action pause or rollback): a task of the service's
   version this update created (created since UpdateStatus.started_at) that
   ended on its own (failed, rejected, even completed: "early termination")
   before running `monitor` seconds, or without ever running. Past
   `max_failure_ratio` of the slots the failure action runs: pause (paused, or
   rollback_paused during a rollback), or rollback (the service returns to its
   previous spec, rollback_started; a rollback is never rolled back: it pauses);
4. replaces: while fewer than `parallelism` slots (0 = all) are busy, the next
   dirty slots (not yet running old tasks first, then in slot order) get a
   successor. A slot is busy while its new task is not running yet (unless a
   task of this update ended there: the restart policy has the slot now), and
   for `delay` seconds after it reached running (each of SwarmKit's
   `parallelism` workers waits `delay` after its task runs). Stop-first shuts the old task
   down in the same round (the dispatcher holds the successor until it has
   stopped); start-first keeps a running old task until its successor runs;
5. completes: once no slot has an old task and none is busy with a
   replacement, and `monitor` seconds after the last replacement reached
   running (a failure in that time still counts, as SwarmKit's updater keeps
   watching one monitor period): completed or rollback_completed (the message
   of an automatic rollback keeps its reason, so inspect still says why).

During a rollback (rollback_started, rollback_paused) the spec's
rollback_config applies, else its update_config. Nothing is remembered between
rounds: everything comes from the store's records (task times, running_at,
UpdateStatus), so a new leader continues an update where it stood.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from swarm.api.spec import Service, Task, UpdateConfig, UpdateStatus

ENDED = frozenset({"complete", "failed", "rejected"})     # ended on its own (orphaned: the node's fault)
ROLLING_BACK = frozenset({"rollback_started", "rollback_paused"})
PAUSED = frozenset({"paused", "rollback_paused"})
IN_PROGRESS = frozenset({"updating", "rollback_started"})

UPDATE_STARTED = "update in progress"
MANUAL_ROLLBACK = "manually requested rollback"
UPDATE_COMPLETED = "update completed"
ROLLBACK_COMPLETED = "rollback completed"


def paused_message(task_id: str, rolling_back: bool) -> str:
    return f"{'rollback' if rolling_back else 'update'} paused due to failure or early termination of task {task_id}"


ROLLED_BACK = "update rolled back due to"


def rolled_back_message(task_id: str) -> str:
    return f"{ROLLED_BACK} failure or early termination of task {task_id}"


@dataclass(frozen=True)
class SlotView:
    """One occupied slot (global: node) as the update sees it."""
    key: int | str
    old: Task | None = None     # its live task of another spec version: what the update replaces
    new: Task | None = None     # its live task of the service's spec version
    may_start: bool = True      # a successor may be created here (global: the node is active)


@dataclass(frozen=True)
class Decision:
    stop_first: tuple[int | str, ...] = ()    # shut the old task down and create its successor
    start_first: tuple[int | str, ...] = ()   # create the successor; the old task keeps running
    retire: tuple[int | str, ...] = ()        # the successor runs: shut the old task down
    status: UpdateStatus | None = None        # the service's new UpdateStatus (None: unchanged)
    rollback: bool = False                    # return the service to its previous spec


def config_of(service: Service) -> UpdateConfig:
    """The config that drives the replacements now: rollback_config while rolling back."""
    status = service.update_status
    rolling_back = status is not None and status.state in ROLLING_BACK
    return service.spec.rollback_config if rolling_back else service.spec.update_config


def failures(service: Service, tasks: Sequence[Task], config: UpdateConfig, since: float) -> list[Task]:
    """The tasks this update created (of the service's version, since `since`) that ended on their
    own before running `config.monitor` seconds (or never ran), oldest failure first."""
    out = [t for t in tasks if t.spec_version == service.spec_version and t.created_at >= since
           and t.desired_state == "running" and t.status.state in ENDED
           and (not t.running_at or t.status.timestamp - t.running_at <= config.monitor)]
    return sorted(out, key=lambda t: (t.status.timestamp, t.id))


def _key(t: Task) -> int | str:
    return t.slot or t.node_id


def _order(view: SlotView) -> tuple:
    # not yet running old tasks first (replacing them costs no availability), then slot order
    assert view.old is not None
    return (view.old.status.state == "running", isinstance(view.key, str), str(view.key).zfill(20))


def decide(service: Service, slots: Sequence[SlotView], tasks: Sequence[Task], now: float) -> Decision:
    """What the update of `service` does this round (see the module's doc). `tasks`: all the
    service's tasks (failures are counted from them)."""
    retire = tuple(v.key for v in slots if v.old is not None and v.new is not None
                   and v.new.status.state == "running" and v.old.status.state == "running")
    status = service.update_status
    if status is not None and status.state in PAUSED:
        return Decision(retire=retire)
    dirty = [v for v in slots if v.old is not None and v.new is None]
    if not dirty and status is None:
        return Decision(retire=retire)     # no update: tasks starting after a create or a restart
    # A slot whose replacement ended is done for the update (the restart policy has it now, as
    # SwarmKit's worker moves on once its task fails); the others are busy until theirs runs.
    ended = {_key(t) for t in tasks if t.spec_version == service.spec_version and t.status.state in ENDED
             and (status is None or t.created_at >= status.started_at)}
    pending = [v for v in slots if v.new is not None and v.new.status.state != "running" and v.key not in ended]
    if not dirty and not pending and status.state not in IN_PROGRESS:
        return Decision(retire=retire)     # the update is over
    new_status = None
    if status is None:     # old tasks with no update recorded (a record from before UpdateStatus): start one
        status = new_status = UpdateStatus("updating", now, 0.0, UPDATE_STARTED)
    config = config_of(service)
    rolling_back = status.state in ROLLING_BACK
    ours = [v.new for v in slots if v.new is not None and v.new.created_at >= status.started_at]

    if status.state in IN_PROGRESS and config.failure_action != "continue":
        failed = failures(service, tasks, config, status.started_at)
        if failed and len(failed) / max(len(slots), 1) > config.max_failure_ratio:
            culprit = failed[-1].id
            if config.failure_action == "rollback" and not rolling_back and service.previous_spec is not None:
                return Decision(retire=retire, rollback=True, status=dataclasses.replace(
                    status, state="rollback_started", message=rolled_back_message(culprit)))
            return Decision(retire=retire, status=dataclasses.replace(
                status, state="rollback_paused" if rolling_back else "paused",
                message=paused_message(culprit, rolling_back)))

    if not dirty and not pending:
        last_run = max((t.running_at for t in ours), default=0.0)
        if status.state in IN_PROGRESS and now >= last_run + config.monitor:
            message = UPDATE_COMPLETED
            if rolling_back:
                # an automatic rollback keeps its reason: inspect says why the update did not stay
                message = status.message if status.message.startswith(ROLLED_BACK) else ROLLBACK_COMPLETED
            return Decision(retire=retire, status=dataclasses.replace(
                status, state="rollback_completed" if rolling_back else "completed", completed_at=now,
                message=message))
        return Decision(retire=retire, status=new_status)

    delaying = [t for t in ours if t.status.state == "running" and now < t.running_at + config.delay]
    busy = len(pending) + len(delaying)
    room = len(dirty) if config.parallelism <= 0 else max(config.parallelism - busy, 0)
    chosen = sorted((v for v in dirty if v.may_start), key=_order)[:room]
    start_first = tuple(v.key for v in chosen if config.order == "start-first" and v.old is not None
                        and v.old.status.state == "running")
    stop_first = tuple(v.key for v in chosen if v.key not in start_first)
    return Decision(stop_first=stop_first, start_first=start_first, retire=retire, status=new_status)


def service_after(service: Service, decision: Decision, now: float) -> Service | None:
    """The service's new value after `decision`, or None if it does not change. An automatic
    rollback returns to the previous spec and its version (tasks that never left it stay
    current) and forgets it, as SwarmKit's updater does."""
    if decision.status is None and not decision.rollback:
        return None
    new = dataclasses.replace(service, update_status=decision.status or service.update_status)
    if decision.rollback and service.previous_spec is not None:
        new = dataclasses.replace(new, spec=service.previous_spec, spec_version=service.previous_spec_version,
                                  previous_spec=None, previous_spec_version=0, updated_at=now)
    return new

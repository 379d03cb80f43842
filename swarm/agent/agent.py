"""The worker agent: run the tasks assigned to this node, report every change.

How this works. `Agent.run` long-polls a manager for this node's
assignments (`tasks.assigned`) and keeps one controller per task, each a trio
task in the agent's nursery. A controller walks its task through SwarmKit's
states with the runtime (prepare, start, wait, stop, remove), reporting each
state through a channel that one reporter task batches into `tasks.status`
calls (one report per task and call, the furthest the manager can take:
swarm.agent.reports). A task is prepared and started in one start slot (a
few per processor). When the desired state becomes shutdown the controller
stops the container (SIGTERM, then SIGKILL after the grace period); when a
task is no longer assigned at all its container is removed.

A task with a healthcheck (the runtime keeps the effective one, see
swarm.api.health) is reported `starting` (health starting) while its container
starts, and `running` (health healthy) only after its first healthy check,
so no load balancer sends it traffic before; the checks run in the
controller's nursery (swarm.agent.health). A task that turns unhealthy is
stopped like a shut down one (its stop signal, its grace period) and reported
failed with SwarmKit's error, so the restart policy replaces it.

Before a task is prepared, a node whose store lacks the task's image pulls
it (the daemon's `pull_image`: the node's registry client, whose
single-flight makes two tasks of one image share one pull; a pinned
reference the store holds never touches the network): the task is reported
`preparing` with "pulling image", and a failed pull rejects it with the
registry's sentence (the restart policy retries). The credentials a manager
sends with a task (--with-registry-auth) are kept in this process's memory
only, never passed to the runtime or written anywhere. So are the values of
the secrets and configs it sends with the tasks that use them: handed to
the runtime's prepare (which puts them on a tmpfs in the task), and
forgotten once no task here may still start with them.

On start the agent re-adopts: containers that still run for tasks that are
still assigned are watched (their healthchecks run again), not restarted, and
containers of tasks that are no longer assigned are stopped and removed. The
agent dying does not stop its containers (each runs under its own conmon, in its
own session).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import inspect
import ipaddress
import logging
import os
import platform
import socket
import time
from typing import Any, Awaitable, Callable, Protocol, Sequence

import trio

from overlay import dns as embedded_dns
from swarm.agent import reports
from swarm.agent.health import run_checks
from swarm.agent.slots import FairSlots
from swarm.api import health, secrets, spec
from swarm.api.servicetemplate import context_for, expand_container
from swarm.rpc.messages import RPCError
from swarm.runtime.base import ContainerRuntime

log = logging.getLogger(__name__)
# DEBUG lines "start path TASK STAGE WALLTIME" mark each task's way to running (bench/startpath.py reads them).
STAGE_LOG = "start path %s %s %.6f"
REPORT_BATCH_DELAY = reports.BATCH_DELAY   # with a few tasks on their way (reports.batch_delay)
# Containers being prepared or started at once on this node: four per processor. A start
# waits on the kernel and on runc's processes for most of its time, so one per processor
# leaves them idle: on 2 processors 4 slots took 50 tasks to running in 2.6 s, 8 in 2.2 s;
# 16 did no better than 8 (bench/startpath.py, docs/benchmarks.md "The start path").
START_CONCURRENCY = min(32, 4 * (os.cpu_count() or 1))
LB_DRAIN_DELAY = 1.0   # seconds between leaving the load balancers and the stop signal
EMBEDDED_DNS = "127.0.0.11"             # the task's resolver on its networks (networking.py serves it)
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")   # Docker's, when the node's resolv.conf names no usable server


def resolver_settings(dns: spec.DNSConfig, on_networks: bool,
                      host_servers: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(nameservers, search, options) of a task's resolv.conf, as Docker writes it: on networks the
    embedded DNS (which forwards to the --dns servers) with ndots:0 unless an ndots option is
    given; without networks the --dns servers themselves, else the node's, else Docker's fallback."""
    if on_networks:
        options = dns.options if any(o.startswith("ndots:") for o in dns.options) else (*dns.options, "ndots:0")
        return (EMBEDDED_DNS,), dns.search, tuple(options)
    return dns.nameservers or tuple(host_servers) or FALLBACK_DNS, dns.search, dns.options


def hosts_entries(lines: Sequence[str]) -> list[tuple[str, str]]:
    """--host entries ("IP HOSTNAME [ALIAS...]") as (address, names) for /etc/hosts."""
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"invalid --host entry {line!r}: expected an address and a host name")
        try:
            ipaddress.ip_address(parts[0])
        except ValueError:
            raise ValueError(f"invalid --host entry {line!r}: {parts[0]!r} is not an IP address") from None
        out.append((parts[0], " ".join(parts[1:])))
    return out


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await a coroutine function, or run a blocking one in a worker thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


class Networking(Protocol):
    """What the agent asks of the node's networking (NodeNetworking; a fake in unit tests)."""

    async def update(self, view: dict) -> None: ...

    async def sandbox(self, task: spec.Task) -> str: ...   # the task's network namespace path

    async def remove(self, task_id: str) -> None: ...

    async def teardown(self) -> None: ...


# (node id, VTEP address, the agent's nursery) -> the node's networking, made when the agent runs
NetworkingFactory = Callable[[str, str, trio.Nursery], Networking]
CallManager = Callable[[str, dict, float], Awaitable[Any]]   # (method, params, timeout) -> result
HasImage = Callable[[str], bool]                 # (image reference) -> the node's store holds it (blocking)
PullImage = Callable[[str, str], Awaitable[Any]]  # (image reference, encoded auth or "") -> pulled; raises


def node_networking(node_id: str, vtep: str, nursery: trio.Nursery) -> Networking:
    """The real datapath (kernel namespaces, VXLAN, nftables), imported only when an agent runs."""
    from swarm.agent.networking import NodeNetworking

    return NodeNetworking(node_id, vtep, nursery)


class Controller:
    """Drives one task; lives as long as the task is assigned here."""

    def __init__(self, agent: "Agent", task: spec.Task) -> None:
        self.agent = agent
        self.task = task
        self.state = task.status.state
        self.health = task.status.health   # as last reported
        self.changed = trio.Event()
        self.cancel = trio.CancelScope()
        self.done = False
        self.monitor: health.Monitor | None = None   # the task's health, when it has a healthcheck
        self.unhealthy = False

    def update(self, task: spec.Task) -> None:
        self.task = task
        self.changed.set()

    async def report(self, state: str, message: str = "", err: str = "", exit_code: int | None = None,
                     health_status: str | None = None) -> None:
        """Report a new state, or a new health (None: unchanged) in the same state."""
        health_status = self.health if health_status is None else health_status
        if state == self.state and health_status == self.health:
            return
        if spec.STATE_ORDER[state] < spec.STATE_ORDER.get(self.state, 0) and not spec.is_terminal(state):
            return
        before = (self.state, self.health)
        self.state, self.health = state, health_status
        cut = spec.MAX_STATUS_TEXT  # the manager refuses longer texts: keep their beginning
        status = spec.TaskStatus(state, message[:cut], err[:cut], time.time(), exit_code, self.task.id,
                                 health=health_status)
        await self.agent.reports.send((self.task.id, status, before))

    async def run(self, adopted: bool) -> None:
        runtime = self.agent.runtime
        task_id = self.task.id
        try:
            if adopted:
                if self.task.networks:
                    try:  # repair the sandbox, restart its DNS server
                        await self.agent.net.sandbox(self.task)
                    except Exception as exc:
                        # E.g. its network left the view while this node was down (the task is
                        # being stopped): the task still runs as it is; the agent must go on.
                        log.warning("could not repair the sandbox of re-adopted task %s: %s", task_id, exc)
                check = await call(runtime.healthcheck, task_id)
                if check is None:
                    await self.report("running", "re-adopted after an agent restart")
                else:
                    # A running task was healthy; a starting one gets its start period again (when
                    # its container started is not kept).
                    healthy = self.state == "running"
                    self.monitor = health.Monitor(check, trio.current_time(),
                                                  health.HEALTHY if healthy else health.STARTING)
            else:
                if self.task.desired_state != "running":
                    await self.report("shutdown", "shut down before it started")
                    return
                await self.report("accepted", "accepted")
                if not await self._pull():
                    return
                log.debug(STAGE_LOG, task_id, "image_checked", time.time())
                started = False
                async with self.agent.start_slots.hold(self.task.service_id):
                    log.debug(STAGE_LOG, task_id, "prepare_slot", time.time())
                    await self.report("preparing", "preparing")
                    try:
                        await self._prepare()
                    except Exception as exc:  # the runtime's or the datapath's one-sentence error
                        await self.report("rejected", "preparing failed", err=str(exc))
                        return
                    log.debug(STAGE_LOG, task_id, "prepared", time.time())
                    await self.report("ready", "ready")
                    # With no restart delay to wait out, the task starts in the slot it was
                    # prepared in: taking a slot a second time, it would queue behind the
                    # prepares of every task assigned after it, and none would run until all
                    # of them were prepared.
                    if self.task.not_before <= time.time() and self.task.desired_state == "running":
                        if not await self._start():
                            return
                        started = True
                if not started:
                    while self.task.not_before > time.time() and self.task.desired_state == "running":
                        with trio.move_on_after(self.task.not_before - time.time()):
                            await self._desired_changed()
                    if self.task.desired_state != "running":
                        await self.report("shutdown", "shut down before it started")
                        return
                    async with self.agent.start_slots.hold(self.task.service_id):
                        if not await self._start():
                            return
            await self._watch_running()
        finally:
            self.done = True
            if self.task.networks and spec.is_terminal(self.state):
                # A stopped task gives its addresses back: its sandbox must go
                # now, before the allocator hands them to a new task.
                with trio.CancelScope(shield=True):
                    try:
                        await self.agent.net.remove(task_id)
                    except Exception as exc:
                        log.warning("could not remove the sandbox of task %s: %s", task_id, exc)

    async def _start(self) -> bool:
        """Start the prepared container (the caller holds a start slot); False: it failed (reported)."""
        runtime, task_id = self.agent.runtime, self.task.id
        log.debug(STAGE_LOG, task_id, "start_slot", time.time())
        check = await call(runtime.healthcheck, task_id)
        await self.report("starting", "starting", health_status=health.STARTING if check else "")
        try:
            await call(runtime.start, task_id)
        except Exception as exc:
            await self.report("failed", "starting failed", err=str(exc))
            return False
        log.debug(STAGE_LOG, task_id, "started", time.time())
        if check is None:
            await self.report("running", "started")
        else:   # running once healthy (_on_health)
            self.monitor = health.Monitor(check, trio.current_time())
        return True

    async def _pull(self) -> bool:
        """Pull the task's image when the node lacks it (see the module doc). False: the task
        ended here (rejected, or shut down while its image was being pulled)."""
        agent, image = self.agent, self.task.spec.image
        if agent.pull_image is None or await call(agent.has_image, image):
            return True
        await self.report("preparing", "pulling image")
        # Not in a start slot: a pull waits on the network, and must not hold back other tasks.
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_unless_running, nursery.cancel_scope)
            try:
                await agent.pull_image(image, agent.auth.get(self.task.id, ""))
            except Exception as exc:   # the registry's one sentence ("No such image: ...", "unauthorized: ...")
                failure = exc
            nursery.cancel_scope.cancel()
        if failure is not None:
            await self.report("rejected", "pulling image failed", err=str(failure))
            return False
        if self.task.desired_state != "running":
            await self.report("shutdown", "shut down before it started")
            return False
        return True

    async def _cancel_unless_running(self, scope: trio.CancelScope) -> None:
        while self.task.desired_state == "running":
            await self._desired_changed()
        scope.cancel()

    async def _prepare(self) -> None:
        """The task's container spec with its templates expanded for this node, then its container."""
        agent, task = self.agent, self.task
        container = expand_container(task.spec, context_for(task, agent.hostname, "linux", agent.arch))
        servers, search, options = resolver_settings(container.dns, bool(task.networks), agent.host_nameservers)
        hosts = hosts_entries(container.hosts)
        netns = await agent.net.sandbox(task) if task.networks else None
        if netns:
            log.debug(STAGE_LOG, task.id, "sandbox", time.time())
        files = agent.task_files(container)
        await call(agent.runtime.prepare, task.id, container, container.limits, netns,
                   hostname=container.hostname or None, dns=servers, dns_search=search, dns_options=options,
                   hosts=hosts, files=files)

    async def _desired_changed(self) -> None:
        self.changed = trio.Event()
        await self.changed.wait()

    async def _watch_running(self) -> None:
        runtime = self.agent.runtime
        async with trio.open_nursery() as nursery:
            exit_box: list[int] = []

            async def wait_exit() -> None:
                exit_box.append(await call(runtime.wait, self.task.id))
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait_exit)
            checks = trio.CancelScope()
            if self.monitor is not None:
                nursery.start_soon(self._check_health, checks, self.monitor)
            # Stop when the desired state leaves "running", when the managers
            # declared the task dead (orphaned while this node was cut off:
            # its slot already runs elsewhere), or when it turned unhealthy.
            while self.task.desired_state == "running" and not spec.is_terminal(self.task.status.state) \
                    and not self.unhealthy:
                await self._desired_changed()
            checks.cancel()
            if self.task.networks and not spec.is_terminal(self.task.status.state):
                # The managers took the task out of every load balancer when its desired
                # state changed; give the other nodes a moment to apply that before the
                # task stops answering, so no new connection is sent to a closed port.
                await trio.sleep(LB_DRAIN_DELAY)
            await call(runtime.stop_async, self.task.id, self.task.spec.stop_grace_period)
            await trio.sleep_forever()  # wait_exit cancels us once the container is gone
        code = exit_box[0] if exit_box else None
        if self.task.desired_state != "running" or spec.is_terminal(self.task.status.state):
            await self.report("shutdown", "shut down", exit_code=code)
        elif self.unhealthy:
            await self.report("failed", "unhealthy container", err=health.unhealthy_error(code), exit_code=code)
        elif code == 0:
            await self.report("complete", "finished", exit_code=0)
        else:
            await self.report("failed", "task: non-zero exit", err=f"task: non-zero exit ({code})", exit_code=code)

    async def _check_health(self, scope: trio.CancelScope, monitor: health.Monitor) -> None:
        with scope:
            await run_checks(self.agent.runtime, self.task.id, monitor, self._on_health)

    async def _on_health(self, status: str) -> None:
        """A new health: the first healthy result makes a starting task running; unhealthy stops it."""
        if status == health.HEALTHY and self.state == "starting":
            await self.report("running", "started", health_status=status)
            return
        # The same state, a new health: the message stays the state's own.
        await self.report(self.state, "started" if self.state == "running" else "starting", health_status=status)
        if status == health.UNHEALTHY:
            self.unhealthy = True
            self.changed.set()


class Agent:
    def __init__(self, node_id: str, runtime: ContainerRuntime, call_manager: CallManager,
                 vtep: str = "127.0.0.1", *, networking: NetworkingFactory = node_networking,
                 hostname: str = "", has_image: HasImage | None = None, pull_image: PullImage | None = None) -> None:
        self.node_id = node_id
        self.hostname = hostname or socket.gethostname()   # the node's, for {{.Node.Hostname}}
        self.arch = platform.machine()                      # {{.Node.Platform.Architecture}}, as uname -m
        # Servers for tasks without networks and without --dns, as Docker's (loopback ones left out).
        self.host_nameservers = tuple(addr for addr, _ in embedded_dns.host_upstreams())
        self.vtep = vtep
        self.networking = networking
        self.net: Networking = None  # type: ignore[assignment]  # made in run(), with the agent's nursery
        self.runtime = runtime
        self.call_manager = call_manager   # (method, params, timeout) -> result, to any manager
        # None: no registry (tests with a fake runtime): the runtime finds the image or fails
        self.has_image: HasImage = has_image or (lambda ref: True)
        self.pull_image = pull_image
        self.auth: dict[str, str] = {}     # task id -> its registry credentials (memory only)
        # (kind, id) -> the value of a secret or config the tasks here use (memory only)
        self.files: dict[tuple[str, str], bytes] = {}
        self.controllers: dict[str, Controller] = {}
        self.reports, self._report_inbox = trio.open_memory_channel[reports.Pending](10_000)
        self._sent: dict[str, reports.Before] = {}   # task id -> the state its last sent report said
        self.since = 0
        self.known: dict[str, spec.Task] = {}
        # Preparing and starting a container is CPU-heavy (mounts, a namespace, a monitor,
        # runc): hundreds at once would starve this node's own control plane (Raft
        # elections from starvation). A few per processor at a time finish as soon, in
        # total, and services take turns, so a big one never holds back a small one's tasks.
        self.start_slots = FairSlots(START_CONCURRENCY)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.net = self.networking(self.node_id, self.vtep, nursery)
            nursery.start_soon(self._reporter)
            adoptable = set(await call(self.runtime.list))
            first = True
            while True:
                try:
                    answer = await self.call_manager("tasks.assigned", {"since": self.since, "wait": spec.POLL_WAIT},
                                                    spec.POLL_WAIT + 5.0)
                except Exception as exc:  # a manager may be down: try another shortly
                    log.info("could not fetch assignments: %s", exc)
                    await trio.sleep(0.5)
                    continue
                await self._apply(answer, adoptable if first else set())
                first = False

    async def _apply(self, answer: dict, adoptable: set[str]) -> None:
        received = time.time()
        self.since = answer["index"]
        if answer.get("network"):
            try:
                await self.net.update(answer["network"])
            except Exception as exc:
                log.exception("could not apply the network view: %s", exc)
        for data in answer["changed"]:
            task = spec.task_from_dict(data)
            self.known[task.id] = task
        auth = answer.get("auth")
        if isinstance(auth, dict):
            self.auth.update({k: v for k, v in auth.items() if isinstance(k, str) and isinstance(v, str)})
        if "task_ids" in answer:   # the full set (a first answer, or a resync)
            assigned = set(answer["task_ids"])
            for task_id in list(self.known):
                if task_id not in assigned:
                    self.known.pop(task_id)
        else:                      # only the changes since the index this agent saw
            for task_id in answer.get("removed", ()):
                self.known.pop(task_id, None)
        for task_id in list(self.auth):
            if task_id not in self.known:
                del self.auth[task_id]
        self._keep_files(answer)
        for task_id, task in self.known.items():
            controller = self.controllers.get(task_id)
            if controller is None:
                if spec.is_terminal(task.status.state):
                    # Orphaned while this node was down (its slot now runs elsewhere):
                    # a container still running for it must stop.
                    if task_id in adoptable:
                        self._nursery.start_soon(self._remove_orphan, task_id)
                    continue
                adopted = task_id in adoptable and task.status.state in ("starting", "running")
                if task_id in adoptable and not adopted:
                    await call(self.runtime.remove, task_id)
                controller = Controller(self, task)
                log.debug(STAGE_LOG, task_id, "assignment_received", received)
                self.controllers[task_id] = controller
                self._nursery.start_soon(controller.run, adopted)
            else:
                controller.update(task)
        for task_id in list(self.controllers):
            if task_id not in self.known:
                self._sent.pop(task_id, None)
                controller = self.controllers.pop(task_id)
                controller.update(dataclasses.replace(controller.task, desired_state="remove"))
                self._nursery.start_soon(self._remove_when_done, controller)
        for task_id in adoptable - set(self.known):
            self._nursery.start_soon(self._remove_orphan, task_id)

    def _keep_files(self, answer: dict) -> None:
        """Keep the secret and config values sent with this answer, and forget those no task
        here may still start with (the last task using a value has stopped, or left)."""
        for kind in (secrets.SECRET, secrets.CONFIG):
            sent = answer.get(f"{kind}s")
            if not isinstance(sent, dict):
                continue
            for obj_id, text in sent.items():
                try:
                    self.files[(kind, obj_id)] = base64.b64decode(text, validate=True)
                except (TypeError, ValueError, binascii.Error):
                    log.warning("the manager sent a malformed %s value (ignored)", kind)
        needed = set()
        for task in self.known.values():
            controller = self.controllers.get(task.id)
            if spec.is_terminal(task.status.state) or (controller is not None and controller.done):
                continue
            needed |= {(secrets.SECRET, r.id) for r in task.spec.secrets}
            needed |= {(secrets.CONFIG, r.id) for r in task.spec.configs}
        for key in set(self.files) - needed:
            del self.files[key]

    def task_files(self, container: spec.ContainerSpec) -> list[tuple[spec.FileReference, bytes, str]]:
        """The task's secrets and configs with their values, for the runtime's prepare;
        ValueError when a value did not come (the task is then rejected)."""
        out = []
        for kind, refs in ((secrets.SECRET, container.secrets), (secrets.CONFIG, container.configs)):
            for ref in refs:
                value = self.files.get((kind, ref.id))
                if value is None:
                    raise ValueError(f"the {kind} {ref.name} was not received from the managers")
                out.append((ref, value, kind))
        return out

    async def _remove_when_done(self, controller: Controller) -> None:
        while not controller.done:
            await trio.sleep(0.05)
        await call(self.runtime.remove, controller.task.id)
        await self.net.remove(controller.task.id)

    async def _remove_orphan(self, task_id: str) -> None:
        try:
            await call(self.runtime.stop_async, task_id, 1.0)
        finally:
            await call(self.runtime.remove, task_id)
            await self.net.remove(task_id)

    async def _reporter(self) -> None:
        """Report task states in tasks.status calls, in order, retried until accepted: one
        report per task and call, the furthest the manager can take (swarm.agent.reports)."""
        pending: list[reports.Pending] = []
        while True:
            if not pending:
                pending.append(await self._report_inbox.receive())
                live = (c.state for c in self.controllers.values() if not c.done)
                await trio.sleep(reports.batch_delay(reports.on_the_way(live)))
            while True:
                try:
                    pending.append(self._report_inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            batch, pending = reports.next_call(pending, self._sent)
            updates = [{"id": tid, "status": spec.to_dict(status)} for tid, status in batch]
            sent = time.time()
            while True:
                try:
                    await self.call_manager("tasks.status", {"updates": updates}, 10.0)
                    for tid, status in batch:
                        if spec.is_terminal(status.state):
                            self._sent.pop(tid, None)      # its last report
                        else:
                            self._sent[tid] = (status.state, status.health)
                    if log.isEnabledFor(logging.DEBUG):
                        acked = time.time()
                        for tid, status in batch:
                            log.debug(STAGE_LOG, tid, f"{status.state}_sent", sent)
                            log.debug(STAGE_LOG, tid, f"{status.state}_acked", acked)
                    break
                except RPCError as exc:
                    if exc.code in ("bad_request", "forbidden"):
                        # Retrying cannot help, and would hold back every later report.
                        log.error("the manager refused task status reports (dropped): %s", exc.message)
                        break
                    log.info("could not report task status (retrying): %s", exc)
                    await trio.sleep(0.5)
                except Exception as exc:
                    log.info("could not report task status (retrying): %s", exc)
                    await trio.sleep(0.5)

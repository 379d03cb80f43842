"""The worker agent against the in-memory runtime (swarm.runtime.fake), a fake
manager and a fake networking, on trio's MockClock (autojump): no kernel, no
runc, no real sleeps.

The agent calls the runtime's plain methods in worker threads. A mock clock
that jumps as soon as no trio task can run would jump while such a thread
works (and run the agent's long polls to any deadline before the thread has
even started), so these tests jump only after a few real milliseconds of
idleness (`clock`), and never further than PACE at once (`running_agent`), so that a
thread held up by a busy machine does not run a test into its deadline.
Virtual times are asserted exactly over phases without a thread call (once
a container runs: wait and stop_async are coroutines).
"""
from __future__ import annotations

import dataclasses
import inspect
import signal
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import pytest
import trio
import trio.testing

from swarm.agent.agent import (LB_DRAIN_DELAY, REPORT_BATCH_DELAY, START_CONCURRENCY, Agent, hosts_entries,
                               resolver_settings)
from swarm.agent.reports import batch_delay
from swarm.api import spec, taskstate
from swarm.rpc.messages import RPCError
from swarm.runtime.base import ContainerRuntime
from swarm.runtime.errors import ContainerError, SpecError
from swarm.runtime.fake import KILL_EXIT, TERM_EXIT, FakeRuntime
from swarm.runtime.runc import Runtime

NODE = "node0000000000000000000001"
DEADLINE = 60.0    # virtual seconds for one test; a hang fails within a few real seconds
PACE = 0.1         # virtual seconds the clock may jump at once while the agent waits on a worker thread
STARTING = ["accepted", "preparing", "ready", "starting", "running"]


def reported(states: list[str], made: list[str]) -> bool:
    """The manager heard the states `made` in their order, the last one surely, the others
    perhaps not each: a call carries a task's furthest report (swarm.agent.reports)."""
    rest = iter(made)
    return bool(states) and states[-1] == made[-1] and all(state in rest for state in states)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """The virtual clock of every test here (pytest-trio runs a test on the clock fixture it asks for)."""
    return trio.testing.MockClock(autojump_threshold=0.005)


def make_task(task_id: str, *, desired: str = "running", state: str = "assigned", grace: float = 10.0,
              networks: tuple[spec.Attachment, ...] = ()) -> spec.Task:
    container = spec.ContainerSpec(image="demo:1", command=("sleep", "inf"), stop_grace_period=grace)
    return spec.Task(id=task_id, service_id="svc1", service_name="web", slot=1, node_id=NODE,
                     desired_state=desired, spec=container, spec_version=1, status=spec.TaskStatus(state),
                     networks=networks)


class FakeManager:
    """The managers' side of the agent protocol, in memory: `tasks.assigned` long-polls an
    indexed task table; `tasks.status` checks each report as the reconciler does and moves
    the task's status forward (so the agent sees its own reports come back, as in a cluster)."""

    def __init__(self) -> None:
        self.tasks: dict[str, spec.Task] = {}
        self.versions: dict[str, int] = {}
        self.index = 0
        self.reports: list[tuple[float, str, spec.TaskStatus]] = []   # accepted: (virtual time, task id, status)
        self.status_calls: list[list[tuple[str, str]]] = []           # every call: [(task id, state), ...]
        self.refuse: list[RPCError] = []     # the next tasks.status calls raise these, in order
        self.status_gate: trio.Event | None = None   # set: tasks.status calls wait for it
        self._changed = trio.Event()

    # -- what the test does ------------------------------------------------------------
    def put(self, task: spec.Task) -> None:
        self.index += 1
        self.tasks[task.id] = task
        self.versions[task.id] = self.index
        self._wake()

    def desire(self, task_id: str, desired: str) -> None:
        self.put(dataclasses.replace(self.tasks[task_id], desired_state=desired))

    def unassign(self, task_id: str) -> None:
        self.index += 1
        del self.tasks[task_id]
        self._wake()

    def states(self, task_id: str) -> list[str]:
        return [status.state for _, tid, status in self.reports if tid == task_id]

    def last(self, task_id: str) -> tuple[float, spec.TaskStatus]:
        return [(at, status) for at, tid, status in self.reports if tid == task_id][-1]

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def until_state(self, task_id: str, state: str) -> None:
        await self.until(lambda: state in self.states(task_id))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the agent's call_manager ------------------------------------------------------------
    async def __call__(self, method: str, params: dict, timeout: float) -> Any:
        if method == "tasks.assigned":
            since = params["since"]
            if self.index <= since:
                with trio.move_on_after(params["wait"]):
                    await self._changed.wait()
            return {"index": self.index, "task_ids": sorted(self.tasks), "network": None,
                    "changed": [spec.to_dict(t) for tid, t in self.tasks.items() if self.versions[tid] > since]}
        assert method == "tasks.status", method
        updates = params["updates"]
        self.status_calls.append([(u["id"], u["status"]["state"]) for u in updates])
        self._wake()
        if self.status_gate is not None:
            await self.status_gate.wait()
        if self.refuse:
            raise self.refuse.pop(0)
        for update in updates:
            status = spec.status_from_wire(update["status"], time.time())
            self.reports.append((trio.current_time(), update["id"], status))
            task = self.tasks.get(update["id"])
            if task is not None and taskstate.can_advance(task.status.state, status.state):
                self.put(dataclasses.replace(task, status=status))
        self._wake()
        return {"applied": len(updates)}


class FakeNetworking:
    """The agent's Networking seam: records sandboxes made and removed, touches no kernel."""

    def __init__(self) -> None:
        self.sandboxes: list[str] = []
        self.removed: list[str] = []
        self.views: list[dict] = []

    async def update(self, view: dict) -> None:
        self.views.append(view)

    async def sandbox(self, task: spec.Task) -> str:
        self.sandboxes.append(task.id)
        return f"/run/netns/fake-{task.id}"

    async def remove(self, task_id: str) -> None:
        self.removed.append(task_id)

    async def teardown(self) -> None:
        pass


@asynccontextmanager
async def running_agent(runtime: FakeRuntime, manager: FakeManager,
                        net: FakeNetworking | None = None) -> AsyncIterator[Agent]:
    net = net if net is not None else FakeNetworking()
    agent = Agent(NODE, runtime, manager, networking=lambda node_id, vtep, nursery: net)

    async def pace() -> None:
        # The mock clock cannot see a worker thread at work: were the test's deadline the
        # nearest one, the clock would jump to it when a thread is slow to finish.
        while True:
            await trio.sleep(PACE)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pace)
            nursery.start_soon(agent.run)
            try:
                yield agent
            finally:
                runtime.release()   # a thread held in the runtime would keep the nursery open
                if manager.status_gate is not None:
                    manager.status_gate.set()
                nursery.cancel_scope.cancel()


async def run_to_running(runtime: FakeRuntime, manager: FakeManager, task: spec.Task) -> None:
    manager.put(task)
    await manager.until_state(task.id, "running")
    assert runtime.containers[task.id].status == "running"


async def agent_reached(agent: Agent, state: str, *task_ids: str) -> None:
    """Until the agent's controllers of `task_ids` reached `state` (reported or not)."""
    def reached() -> bool:
        return all(tid in agent.controllers and agent.controllers[tid].state == state for tid in task_ids)
    while not reached():
        await trio.sleep(0.01)


def ops(runtime: FakeRuntime, task_id: str) -> list[str]:
    return [op for op, tid in runtime.calls if tid == task_id and op != "state"]


# -- the seam ---------------------------------------------------------------------------------


def protocol_members() -> list[str]:
    return [name for name, value in vars(ContainerRuntime).items()
            if callable(value) and not name.startswith("_")]


@pytest.mark.parametrize("backend", [FakeRuntime, Runtime])
def test_both_backends_have_the_protocols_methods_with_its_signatures(backend: type) -> None:
    assert {"prepare", "start", "wait", "stop_async", "remove", "list"} <= set(protocol_members())
    for name in protocol_members():
        want, have = getattr(ContainerRuntime, name), getattr(backend, name)
        assert inspect.iscoroutinefunction(want) == inspect.iscoroutinefunction(have), name
        assert inspect.isasyncgenfunction(have) == (name == "logs"), name
        assert list(inspect.signature(want).parameters) == list(inspect.signature(have).parameters), name


def test_the_fake_answers_like_runc_outside_an_agent() -> None:
    rt = FakeRuntime()
    assert rt.state("t1").status == "missing"
    with pytest.raises(ContainerError, match="is not prepared"):
        rt.start("t1")
    rt.prepare("t1", spec.ContainerSpec(image="demo:1"), spec.Resources(), None)
    rt.prepare("t1", spec.ContainerSpec(image="demo:1"), spec.Resources(), None)   # a created one is redone
    assert rt.state("t1").status == "created"
    rt.start("t1")
    assert rt.state("t1").status == "running" and rt.state("t1").pid is not None
    with pytest.raises(ContainerError, match="already started"):
        rt.prepare("t1", spec.ContainerSpec(image="demo:1"), spec.Resources(), None)
    rt.write("t1", "hello")
    rt.stop("t1", grace=5)
    st = rt.state("t1")
    assert (st.status, st.exit_code, st.pid) == ("stopped", TERM_EXIT, None)
    chunk = rt.log_chunk("t1", None)
    assert [line[2] for line in chunk.lines] == ["hello"] and chunk.eof
    assert rt.list() == ["t1"]
    rt.remove("t1")
    rt.remove("t1")
    assert rt.list() == [] and rt.state("t1").status == "missing"


@pytest.mark.trio
async def test_the_fakes_stop_async_kills_after_the_grace_period_on_the_mock_clock(clock) -> None:
    rt = FakeRuntime(term_exit=None)   # a process that ignores SIGTERM
    rt.prepare("t1", spec.ContainerSpec(image="demo:1"), spec.Resources(), None)
    rt.start("t1")
    t0 = trio.current_time()
    await rt.stop_async("t1", grace=3.0)
    assert trio.current_time() - t0 == 3.0
    assert await rt.wait("t1") == KILL_EXIT
    assert rt.containers["t1"].signals == [signal.SIGTERM, signal.SIGKILL]


# -- the agent ----------------------------------------------------------------------------------


@pytest.mark.trio
async def test_an_assigned_task_runs_through_each_state_in_order_and_is_reported(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    runtime.hold("prepare")
    runtime.hold("start")
    async with running_agent(runtime, manager):
        manager.put(make_task("t1"))
        # While a step takes its time, the manager knows the task is in it.
        await manager.until(lambda: manager.states("t1")[-1:] == ["preparing"])
        runtime.release("prepare")
        await manager.until(lambda: manager.states("t1")[-1:] == ["starting"])
        runtime.release("start")
        await manager.until_state("t1", "running")
    assert reported(manager.states("t1"), STARTING)
    assert ops(runtime, "t1") == ["prepare", "start", "wait"]
    assert manager.tasks["t1"].status.state == "running"


@pytest.mark.trio
async def test_desired_shutdown_stops_the_container_and_reports_its_exit_code(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    async with running_agent(runtime, manager):
        await run_to_running(runtime, manager, make_task("t1"))
        t0 = trio.current_time()
        manager.desire("t1", "shutdown")
        await manager.until_state("t1", "shutdown")
        at, status = manager.last("t1")
    # No networks, so no load-balancer drain: SIGTERM at once, then one report batch.
    assert at - t0 == pytest.approx(REPORT_BATCH_DELAY)
    assert (status.state, status.exit_code) == ("shutdown", TERM_EXIT)
    assert runtime.containers["t1"].signals == [signal.SIGTERM]


@pytest.mark.trio
async def test_a_container_ignoring_sigterm_is_killed_after_its_grace_period(clock) -> None:
    runtime, manager = FakeRuntime(term_exit=None), FakeManager()
    async with running_agent(runtime, manager):
        await run_to_running(runtime, manager, make_task("t1", grace=2.5))
        t0 = trio.current_time()
        manager.desire("t1", "shutdown")
        await manager.until_state("t1", "shutdown")
        at, status = manager.last("t1")
    assert at - t0 == pytest.approx(2.5 + REPORT_BATCH_DELAY)
    assert (status.state, status.exit_code) == ("shutdown", KILL_EXIT)
    assert runtime.containers["t1"].signals == [signal.SIGTERM, signal.SIGKILL]


@pytest.mark.trio
async def test_a_task_with_networks_leaves_the_load_balancers_before_it_is_stopped(clock) -> None:
    runtime, manager, net = FakeRuntime(), FakeManager(), FakeNetworking()
    task = make_task("t1", networks=(spec.Attachment("net1", "10.0.1.5/24"),))
    async with running_agent(runtime, manager, net):
        await run_to_running(runtime, manager, task)
        assert net.sandboxes == ["t1"]
        assert runtime.containers["t1"].netns_path == "/run/netns/fake-t1"
        t0 = trio.current_time()
        manager.desire("t1", "shutdown")
        await trio.sleep(LB_DRAIN_DELAY * 0.99)
        assert runtime.state("t1").status == "running"   # still answering while the other nodes catch up
        await manager.until_state("t1", "shutdown")
        at, status = manager.last("t1")
    assert at - t0 == pytest.approx(LB_DRAIN_DELAY + REPORT_BATCH_DELAY)
    assert (status.state, status.exit_code) == ("shutdown", TERM_EXIT)
    assert net.removed == ["t1"]   # a stopped task gives its addresses back at once


@pytest.mark.trio
@pytest.mark.parametrize("code, state, err", [(0, "complete", ""), (3, "failed", "task: non-zero exit (3)")])
async def test_a_container_that_exits_is_reported_complete_or_failed(clock, code, state, err) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    async with running_agent(runtime, manager):
        await run_to_running(runtime, manager, make_task("t1"))
        runtime.exit("t1", code)
        await manager.until_state("t1", state)
        _, status = manager.last("t1")
    assert reported(manager.states("t1"), STARTING + [state])
    assert (status.exit_code, status.err) == (code, err)
    assert manager.tasks["t1"].status.state == state


@pytest.mark.trio
async def test_a_prepare_failure_is_reported_rejected_with_the_runtimes_sentence(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    sentence = "The bind mount source /srv/nope does not exist on this node."
    runtime.fail("prepare", SpecError(sentence))
    async with running_agent(runtime, manager):
        manager.put(make_task("t1"))
        await manager.until_state("t1", "rejected")
        _, status = manager.last("t1")
    assert reported(manager.states("t1"), ["accepted", "preparing", "rejected"])
    assert (status.message, status.err) == ("preparing failed", sentence)
    assert ("start", "t1") not in runtime.calls


@pytest.mark.trio
async def test_a_start_failure_is_reported_failed_with_the_runtimes_sentence(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    sentence = "Task t1 could not start: exec: \"nope\": executable file not found in $PATH."
    runtime.fail("start", ContainerError(sentence))
    async with running_agent(runtime, manager):
        manager.put(make_task("t1"))
        await manager.until_state("t1", "failed")
        _, status = manager.last("t1")
    assert reported(manager.states("t1"), ["accepted", "preparing", "ready", "starting", "failed"])
    assert status.err == sentence
    assert runtime.state("t1").error == sentence


@pytest.mark.trio
async def test_at_most_start_concurrency_containers_are_prepared_or_started_at_once(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    count = 3 * START_CONCURRENCY
    runtime.hold("prepare")
    runtime.hold("start")
    async with running_agent(runtime, manager):
        for i in range(count):
            manager.put(make_task(f"t{i}"))
        await runtime.until(lambda: runtime.active["prepare"] == START_CONCURRENCY)
        await trio.sleep(2)   # the others wait for a slot, however long these take
        assert (runtime.active["prepare"], runtime.active["start"]) == (START_CONCURRENCY, 0)
        runtime.release("prepare")
        # A prepared task starts in the slot it was prepared in, before any task assigned
        # after it is prepared: once the starts hold every slot, nothing else goes on.
        await runtime.until(lambda: runtime.active["start"] == START_CONCURRENCY)
        await trio.sleep(2)
        assert (runtime.active["prepare"], runtime.active["start"]) == (0, START_CONCURRENCY)
        runtime.release("start")
        await manager.until(lambda: all(manager.states(f"t{i}")[-1:] == ["running"] for i in range(count)))
    assert runtime.peak["prepare"] == runtime.peak["start"] == START_CONCURRENCY
    assert all(reported(manager.states(f"t{i}"), STARTING) for i in range(count))


@pytest.mark.trio
async def test_a_node_given_many_tasks_at_once_waits_longer_for_its_first_report_call(clock) -> None:
    # The fake runtime's calls run in worker threads; on a loaded machine one can take more than
    # the usual 5 ms, and the clock would jump ahead while the agent waits for it.
    clock.autojump_threshold = 0.2
    for count in (1, 40):
        runtime, manager = FakeRuntime(), FakeManager()
        async with running_agent(runtime, manager):
            t0 = trio.current_time()
            for i in range(count):
                manager.put(make_task(f"t{i}"))
            await manager.until(lambda: all(manager.states(f"t{i}")[-1:] == ["running"] for i in range(count)))
        first = min(at for at, _, _ in manager.reports)
        # The poll answers at once and the tasks report at once: the first call leaves after the
        # batch delay for as many tasks on their way (reports.batch_delay).
        assert first - t0 == pytest.approx(batch_delay(count), abs=0.011)
        if count > 1:   # and each task's states went in fewer reports than it has states
            assert len(manager.reports) < 2 * count


@pytest.mark.trio
async def test_status_reports_are_batched_one_per_task_in_order(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    manager.status_gate = trio.Event()   # the manager is slow to answer the first call
    tasks = [f"t{i}" for i in range(3)]
    async with running_agent(runtime, manager) as agent:
        for tid in tasks:
            manager.put(make_task(tid))
        await agent_reached(agent, "running", *tasks)
        await trio.sleep(1)   # no thread runs now: the last reports reach the reporter's queue
        assert len(manager.status_calls) == 1
        manager.status_gate.set()
        manager.status_gate = None
        await manager.until(lambda: all(manager.states(tid)[-1:] == ["running"] for tid in tasks))
    # What was reported while the first call was under way went in one more call (or, the
    # threads being quick, all in the first one), each task's furthest report only.
    assert len(manager.status_calls) <= 2
    assert all(len({tid for tid, _ in call}) == len(call) for call in manager.status_calls)
    sent = [update for call in manager.status_calls for update in call]
    for tid in tasks:   # each task's states in the order they happened
        assert reported([state for t, state in sent if t == tid], STARTING)


@pytest.mark.trio
@pytest.mark.parametrize("code", ["bad_request", "forbidden"])
async def test_a_refused_report_batch_is_dropped_and_later_reports_go_on(clock, code) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    manager.refuse = [RPCError(code, "invalid task status: message longer than 4096 characters")]
    async with running_agent(runtime, manager) as agent:
        manager.put(make_task("t1"))
        await agent_reached(agent, "running", "t1")   # the manager may never hear of it: wait on the agent
        await manager.until(lambda: len(manager.status_calls) >= 1)   # the refused call
        runtime.exit("t1", 0)
        await manager.until_state("t1", "complete")
    refused = manager.status_calls[0]
    assert refused and all(tid == "t1" for tid, _ in refused)
    # Sent once, never again: the states of the refused batch are missing from the manager's view.
    assert all(refused != later for later in manager.status_calls[1:])
    assert reported(manager.states("t1"), [s for s in STARTING if ("t1", s) not in refused] + ["complete"])


@pytest.mark.trio
async def test_a_report_batch_that_failed_for_another_reason_is_retried(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    manager.refuse = [RPCError("unavailable", "no leader"), RPCError("deadline", "the call took too long")]
    async with running_agent(runtime, manager):
        await run_to_running(runtime, manager, make_task("t1"))
    assert manager.status_calls[0] == manager.status_calls[1] == manager.status_calls[2]
    assert reported(manager.states("t1"), STARTING)


@pytest.mark.trio
async def test_a_restarted_agent_re_adopts_its_running_containers_and_cleans_up_the_rest(clock) -> None:
    # What the earlier agent left on this node: t1 runs, t2 was only prepared, t3 is no longer assigned.
    earlier = FakeRuntime()
    for tid in ("t1", "t2", "t3"):
        earlier.prepare(tid, spec.ContainerSpec(image="demo:1"), spec.Resources(), None)
    earlier.start("t1")
    earlier.start("t3")
    pid = earlier.state("t1").pid
    runtime, manager = FakeRuntime(), FakeManager()
    runtime.adopt_from(earlier)
    manager.put(make_task("t1", state="running"))
    manager.put(make_task("t2", state="preparing"))
    async with running_agent(runtime, manager):
        await manager.until_state("t2", "running")
        await runtime.until(lambda: "t3" not in runtime.list())
        assert runtime.state("t1").pid == pid   # watched, not restarted
        runtime.exit("t1", 0)
        await manager.until_state("t1", "complete")
    assert ("prepare", "t1") not in runtime.calls and ("start", "t1") not in runtime.calls
    assert manager.states("t1") == ["complete"]   # it was running all along: nothing else to say
    # t2 was not running: its container is redone, from where the manager had seen it.
    assert [op for op, tid in runtime.calls if tid == "t2"][:3] == ["remove", "prepare", "start"]
    assert reported(manager.states("t2"), ["ready", "starting", "running"])
    assert ("stop_async", "t3") in runtime.calls and earlier.containers is runtime.containers


class NoNetworks(FakeNetworking):
    """A node whose network view lacks the networks of the tasks it re-adopts."""

    async def sandbox(self, task: spec.Task) -> str:
        raise RuntimeError(f"network {task.networks[0].network_id} is not known on this node yet")


@pytest.mark.trio
async def test_a_readopted_task_whose_network_left_the_view_is_stopped_and_the_agent_goes_on(clock) -> None:
    # Restarted after its service was removed: the task still runs here, its network is no
    # longer in the view, so its sandbox cannot be repaired. The agent must not die of it.
    earlier = FakeRuntime()
    earlier.prepare("t1", spec.ContainerSpec(image="demo:1"), spec.Resources(), None)
    earlier.start("t1")
    runtime, manager, net = FakeRuntime(), FakeManager(), NoNetworks()
    runtime.adopt_from(earlier)
    manager.put(make_task("t1", desired="shutdown", state="running",
                          networks=(spec.Attachment("net1", "10.0.1.5/24"),)))
    async with running_agent(runtime, manager, net):
        await manager.until_state("t1", "shutdown")
        await run_to_running(runtime, manager, make_task("t2"))   # the agent still works
    assert net.removed == ["t1"]


@pytest.mark.trio
async def test_an_unassigned_task_is_stopped_and_its_container_removed(clock) -> None:
    runtime, manager, net = FakeRuntime(), FakeManager(), FakeNetworking()
    async with running_agent(runtime, manager, net):
        await run_to_running(runtime, manager, make_task("t1"))
        manager.unassign("t1")
        await runtime.until(lambda: runtime.list() == [])
        await trio.sleep(1)
    assert ops(runtime, "t1") == ["prepare", "start", "wait", "stop_async", "kill", "remove"]
    assert net.removed == ["t1"]
    assert reported(manager.states("t1"), STARTING + ["shutdown"])   # a real manager ignores it: the task is gone


# -- templates, hostname, DNS and hosts given to prepare -------------------------------------------
def test_resolver_settings_as_docker_writes_resolv_conf() -> None:
    dns = spec.DNSConfig(nameservers=("10.0.0.2",), search=("corp.example",), options=("timeout:2",))
    assert resolver_settings(dns, True, ("192.0.2.1",)) == (("127.0.0.11",), ("corp.example",), ("timeout:2", "ndots:0"))
    assert resolver_settings(dataclasses.replace(dns, options=("ndots:3",)), True, ())[2] == ("ndots:3",)
    assert resolver_settings(dns, False, ("192.0.2.1",)) == (("10.0.0.2",), ("corp.example",), ("timeout:2",))
    assert resolver_settings(spec.DNSConfig(), False, ("192.0.2.1",))[0] == ("192.0.2.1",)
    assert resolver_settings(spec.DNSConfig(), False, ())[0] == ("8.8.8.8", "8.8.4.4")


def test_hosts_entries() -> None:
    assert hosts_entries(["10.0.0.5 db db.local", "::1 six"]) == [("10.0.0.5", "db db.local"), ("::1", "six")]
    with pytest.raises(ValueError, match="expected an address and a host name"):
        hosts_entries(["10.0.0.5"])
    with pytest.raises(ValueError, match="'db' is not an IP address"):
        hosts_entries(["db 10.0.0.5"])


@pytest.mark.trio
async def test_prepare_gets_the_expanded_spec_hostname_dns_and_hosts(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    task = make_task("t1")
    container = dataclasses.replace(task.spec, hostname="{{.Service.Name}}-{{.Task.Slot}}-{{.Node.Hostname}}",
                                    env=("SLOT={{.Task.Slot}}",), hosts=("10.0.0.5 db",),
                                    dns=spec.DNSConfig(nameservers=("10.0.0.2",), search=("example.org",)))
    async with running_agent(runtime, manager) as agent:
        agent.hostname = "node-a"
        await run_to_running(runtime, manager, dataclasses.replace(task, spec=container))
    prepared = runtime.containers["t1"]
    assert prepared.container.hostname == "web-1-node-a" and prepared.container.env == ("SLOT=1",)
    assert prepared.options == {"hostname": "web-1-node-a", "dns": ("10.0.0.2",), "dns_search": ("example.org",),
                                "dns_options": (), "hosts": (("10.0.0.5", "db"),)}


@pytest.mark.trio
async def test_a_bad_template_rejects_the_task_with_its_sentence(clock) -> None:
    runtime, manager = FakeRuntime(), FakeManager()
    task = make_task("t1")
    async with running_agent(runtime, manager):
        manager.put(dataclasses.replace(task, spec=dataclasses.replace(task.spec, hostname="{{.Task.Nope}}")))
        await manager.until_state("t1", "rejected")
    err = manager.last("t1")[1].err
    assert err.startswith("invalid template in --hostname") and "Nope" in err
    assert "t1" not in runtime.containers

"""The runc backend with real runc and the busybox demo image (scripts/build-demo-image.sh).

Every test gets its own state directory and cgroup parent; the fixture
removes every container, mount, cgroup, network namespace and file it made,
also when the test fails.
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
import trio
import trio.testing

from swarm.runtime import runcmon
from swarm.runtime.errors import ContainerError, SpecError
from swarm.runtime.runc import Runtime
from swarm.api.spec import ContainerSpec, Mount, Resources
from tests.integration.helpers import kill_monitor, runc_runtime, scratch_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/busybox"), reason="needs busybox-static"),
]

# A shell that stops on SIGTERM: as PID 1 it only gets signals it has a handler for,
# and `wait` (unlike a foreground command) is interrupted by a trapped signal.
TERMINABLE = ("sh", "-c", 'trap "exit 0" TERM; echo ready; sleep 100 & wait')
STUBBORN = ("sh", "-c", 'trap "" TERM; echo ready; sleep 100')


def _mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path.rstrip("/") + "/")]


@pytest.fixture(scope="module")
def demo_tar():
    work = tempfile.mkdtemp(prefix="swarm-demo-")
    try:
        out = subprocess.run([os.path.join(ROOT, "scripts/build-demo-image.sh"), os.path.join(work, "demo.tar")],
                             check=True, capture_output=True, text=True).stdout.strip()
        assert os.path.isfile(out)
        yield out
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def state_dir():
    with scratch_dir("swarm-runc-test-") as path:
        yield path


@pytest.fixture
def runtime(state_dir, demo_tar):
    with runc_runtime(state_dir, demo_tar, "demo:1") as rt:
        yield rt


_kill_monitor = kill_monitor


def spec(*command, **kw):
    return ContainerSpec(image="demo:1", command=tuple(command), **kw)


def new_id():
    return f"t{uuid.uuid4().hex[:12]}"


async def logs_of(rt, task_id, **kw):
    with trio.fail_after(20):
        return [e async for e in rt.logs(task_id, **kw)]


async def wait_for_line(rt, task_id, text):
    with trio.fail_after(20):
        async for entry in rt.logs(task_id, follow=True):
            if entry.line == text:
                return
    raise AssertionError(f"{text!r} never appeared in the logs")


async def run_to_end(rt, task_id, container, limits=Resources()):
    rt.prepare(task_id, container, limits, None)
    rt.start(task_id)
    with trio.fail_after(20):
        return await rt.wait(task_id)


def assert_clean(rt, task_id):
    bundle = rt.bundle(task_id)
    assert not os.path.exists(bundle)
    assert _mounts_under(bundle) == []
    with open("/proc/mounts") as f:
        assert bundle not in f.read()
    assert [d for d in rt.cgroup_dirs(task_id) if os.path.exists(d)] == []
    assert not os.path.exists(os.path.join(rt.runc_root, task_id))
    assert rt.state(task_id).status == "missing"


# -- running -----------------------------------------------------------------------------
@pytest.mark.trio
async def test_echo_hello_appears_in_logs_with_timestamps(runtime):
    tid = new_id()
    assert await run_to_end(runtime, tid, spec("echo", "hello")) == 0
    entries = await logs_of(runtime, tid)
    assert [(e.stream, e.line) for e in entries] == [("stdout", "hello")]
    assert TS.match(entries[0].timestamp)
    with open(runtime.log_path(tid)) as f:
        assert re.match(r"^\S+\+00:00 stdout F hello\n$", f.read())     # conmon's form (TZ=UTC)
    st = runtime.state(tid)
    assert (st.status, st.exit_code, st.error) == ("stopped", 0, "")


@pytest.mark.trio
async def test_exit_code_and_both_streams(runtime):
    tid = new_id()
    assert await run_to_end(runtime, tid, spec("sh", "-c", "echo out; echo err >&2; exit 3")) == 3
    entries = await logs_of(runtime, tid)
    assert sorted((e.stream, e.line) for e in entries) == [("stderr", "err"), ("stdout", "out")]
    assert runtime.state(tid).exit_code == 3


@pytest.mark.trio
async def test_missing_command_is_a_clear_error(runtime):
    tid = new_id()
    runtime.prepare(tid, spec("no-such-command"), Resources(), None)
    # runc's words, or crun's
    missing = r'(exec: "no-such-command": executable file not found|executable file `no-such-command` not found) in \$PATH'
    with pytest.raises(ContainerError, match=missing):
        runtime.start(tid)
    st = runtime.state(tid)
    assert st.status == "stopped" and st.exit_code == 127 and re.search(missing, st.error)
    assert "\n" not in st.error


@pytest.mark.trio
async def test_logs_follow_and_tail(runtime):
    tid = new_id()
    runtime.prepare(tid, spec("sh", "-c", "echo a; sleep 0.3; echo b; printf partial"), Resources(), None)
    runtime.start(tid)
    with trio.fail_after(20):
        followed = [e.line async for e in runtime.logs(tid, follow=True)]
    assert followed == ["a", "b", "partial"]
    assert [e.line for e in await logs_of(runtime, tid, tail=1)] == ["partial"]
    assert [e.line for e in await logs_of(runtime, tid, tail=0)] == []


# -- stopping ----------------------------------------------------------------------------
@pytest.mark.trio
async def test_stop_with_sigterm_within_grace(runtime):
    tid = new_id()
    runtime.prepare(tid, spec(*TERMINABLE), Resources(), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    assert runtime.state(tid).status == "running"
    t0 = time.monotonic()
    runtime.stop(tid, grace=10)
    assert time.monotonic() - t0 < 5
    st = runtime.state(tid)
    assert (st.status, st.exit_code) == ("stopped", 0)


@pytest.mark.trio
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_sigterm_ignored_is_killed_after_grace(runtime, mode):
    tid = new_id()
    runtime.prepare(tid, spec(*STUBBORN), Resources(), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    t0 = time.monotonic()
    if mode == "sync":
        runtime.stop(tid, grace=1.0)
    else:
        await runtime.stop_async(tid, grace=1.0)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 6
    assert runtime.state(tid).exit_code == 128 + signal.SIGKILL
    with trio.fail_after(5):
        assert await runtime.wait(tid) == 137


# -- limits, environment and mounts --------------------------------------------------------
@pytest.mark.trio
async def test_memory_and_cpu_limits_in_the_cgroup(runtime):
    tid = new_id()
    runtime.prepare(tid, spec(*TERMINABLE), Resources(memory_bytes=64 << 20, nano_cpus=500_000_000), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    dirs = {os.path.basename(os.path.dirname(os.path.dirname(d))): d for d in runtime.cgroup_dirs(tid)}
    with open(os.path.join(dirs["memory"], "memory.limit_in_bytes")) as f:
        assert int(f.read()) == 64 << 20
    with open(os.path.join(dirs["cpu"], "cpu.cfs_quota_us")) as f:
        assert int(f.read()) == 50_000
    with open(os.path.join(dirs["memory"], "cgroup.procs")) as f:
        assert runtime.state(tid).pid in [int(p) for p in f.read().split()]
    runtime.stop(tid, grace=5)


@pytest.mark.trio
async def test_an_oom_kill_is_reported(runtime):
    # conmon watches the cgroup's OOM events and leaves an `oom` file beside its exit file.
    tid = new_id()
    hog = spec("sh", "-c", "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived")
    assert await run_to_end(runtime, tid, hog, Resources(memory_bytes=16 << 20)) == 137
    st = runtime.state(tid)
    assert (st.status, st.exit_code) == ("stopped", 137) and "out of memory" in st.error
    # An ordinary kill says nothing of memory.
    other = new_id()
    runtime.prepare(other, spec(*STUBBORN), Resources(memory_bytes=64 << 20), None)
    runtime.start(other)
    await wait_for_line(runtime, other, "ready")
    runtime.stop(other, grace=0)
    assert (runtime.state(other).exit_code, runtime.state(other).error) == (137, "")


def test_memory_below_minimum_is_refused_at_prepare(runtime):
    tid = new_id()
    with pytest.raises(SpecError, match="below the minimum of 6 MiB"):
        runtime.prepare(tid, spec("true"), Resources(memory_bytes=2 << 20), None)
    assert runtime.list() == [] and not os.path.exists(runtime.bundle(tid))


@pytest.mark.trio
async def test_env_tmpfs_volume_and_bind_are_visible(runtime, state_dir):
    host_dir = os.path.join(state_dir, "host")
    os.mkdir(host_dir)
    with open(os.path.join(host_dir, "greeting"), "w") as f:
        f.write("hi from host\n")
    script = ("echo FOO=$FOO; grep ' /scratch ' /proc/mounts | cut -d' ' -f3; cat /host/greeting; "
              "touch /host/x 2>/dev/null || echo ro; echo kept > /data/file; hostname; cat /etc/resolv.conf")
    container = spec("sh", "-c", script, env=("FOO=bar",), mounts=(
        Mount("tmpfs", "/scratch"), Mount("volume", "/data", source="vol1"),
        Mount("bind", "/host", source=host_dir, readonly=True)))
    tid = new_id()
    assert await run_to_end(runtime, tid, container) == 0
    lines = [e.line for e in await logs_of(runtime, tid)]
    assert lines[:5] == ["FOO=bar", "tmpfs", "hi from host", "ro", tid[:12]]
    assert "nameserver 127.0.0.11" in lines
    with open(os.path.join(state_dir, "volumes", "vol1", "_data", "file")) as f:
        assert f.read() == "kept\n"
    runtime.remove(tid)
    assert os.path.exists(os.path.join(state_dir, "volumes", "vol1", "_data", "file"))   # volumes outlive tasks


def test_bind_source_must_exist(runtime):
    tid = new_id()
    with pytest.raises(SpecError, match="does not exist"):
        runtime.prepare(tid, spec("true", mounts=(Mount("bind", "/x", source="/no/such/dir"),)), Resources(), None)
    assert not os.path.exists(runtime.bundle(tid))


@pytest.fixture
def netns():
    name = f"swarm-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.mark.trio
async def test_joins_the_given_network_namespace(runtime, netns):
    tid = new_id()
    runtime.prepare(tid, spec("readlink", "/proc/self/ns/net"), Resources(), netns)
    runtime.start(tid)
    with trio.fail_after(20):
        assert await runtime.wait(tid) == 0
    [entry] = await logs_of(runtime, tid)
    assert entry.line == f"net:[{os.stat(netns).st_ino}]"


# -- adoption and removal ----------------------------------------------------------------
@pytest.mark.trio
async def test_new_runtime_adopts_a_running_container(runtime):
    tid = new_id()
    runtime.prepare(tid, spec(*TERMINABLE), Resources(), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    monitor_pid = runcmon.monitor_record(runtime.bundle(tid))["pid"]
    with open(f"/proc/{monitor_pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid()   # not our child: survives us

    restarted = Runtime(runtime.root, runtime.images, cgroup_parent=runtime.cgroup_parent)
    assert restarted.list() == [tid]
    st = restarted.state(tid)
    assert st.status == "running" and st.pid == runtime.state(tid).pid
    with pytest.raises(ContainerError, match="already started"):
        restarted.start(tid)
    await restarted.stop_async(tid, grace=5)
    assert restarted.state(tid).exit_code == 0
    assert [e.line for e in await logs_of(restarted, tid)] == ["ready"]


@pytest.mark.trio
async def test_remove_cleans_up_a_running_container(runtime):
    tid = new_id()
    runtime.prepare(tid, spec(*STUBBORN), Resources(memory_bytes=32 << 20), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    bundle = runtime.bundle(tid)
    assert _mounts_under(bundle) == [os.path.join(bundle, "rootfs")]
    assert any(os.path.isdir(d) for d in runtime.cgroup_dirs(tid))
    pid = runtime.state(tid).pid
    runtime.remove(tid)
    assert_clean(runtime, tid)
    assert not os.path.exists(f"/proc/{pid}")
    runtime.remove(tid)                                    # idempotent
    assert runtime.list() == []


@pytest.mark.trio
async def test_prepare_twice_redoes_an_unstarted_bundle_and_remove_cleans_a_stopped_one(runtime):
    tid = new_id()
    runtime.prepare(tid, spec("echo", "one"), Resources(), None)
    assert runtime.state(tid).status == "created"
    runtime.prepare(tid, spec("echo", "two"), Resources(), None)
    runtime.start(tid)
    with trio.fail_after(20):
        assert await runtime.wait(tid) == 0
    assert [e.line for e in await logs_of(runtime, tid)] == ["two"]
    runtime.remove(tid)
    assert_clean(runtime, tid)


@pytest.mark.trio
async def test_a_dead_monitor_leaves_the_container_running_and_stoppable(runtime):
    tid = new_id()
    runtime.prepare(tid, spec(*TERMINABLE), Resources(), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    _kill_monitor(runtime, tid)                   # the conmon this test started
    st = runtime.state(tid)
    assert st.status == "running" and st.pid
    runtime.stop(tid, grace=5)
    st = runtime.state(tid)
    assert st.status == "stopped" and st.exit_code is None and "monitor" in st.error
    with trio.fail_after(5):
        assert await runtime.wait(tid) is None
    runtime.remove(tid)
    assert_clean(runtime, tid)


# -- waiting without polling -------------------------------------------------------------
def _counting_runc(state_dir):
    """A runc that logs each invocation (one line) and then is the real runc."""
    log = os.path.join(state_dir, "runc-calls.log")
    wrapper = os.path.join(state_dir, "counting-runc")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\necho "$*" >> {log}\nexec {shutil.which("runc")} "$@"\n')
    os.chmod(wrapper, 0o755)
    return wrapper, log


def _calls(log):
    with open(log) as f:
        return f.read().splitlines()


def _children_of_us():
    """Live child processes of this test process (what a polling wait would fork)."""
    me, out = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rindex(b")") + 2:].split()[1]) == me:
                out.append(int(name))
    return out


@pytest.mark.trio
@pytest.mark.parametrize("pidfds", ["pidfd", "no-pidfd"])
async def test_waiting_on_30_containers_spawns_no_process(runtime, state_dir, monkeypatch, pidfds):
    if pidfds == "no-pidfd":
        monkeypatch.delattr(os, "pidfd_open")   # as on a kernel before 5.3: the /proc fallback
    wrapper, log = _counting_runc(state_dir)
    rt = Runtime(runtime.root, runtime.images, cgroup_parent=runtime.cgroup_parent, runc=wrapper)
    ids = [new_id() for _ in range(30)]
    for tid in ids:
        rt.prepare(tid, spec("sh", "-c", 'trap "exit 5" TERM; sleep 100 & wait'), Resources(), None)
        rt.start(tid)
    codes = {}

    async def waiter(tid):
        codes[tid] = await rt.wait(tid)

    async with trio.open_nursery() as nursery:
        for tid in ids:
            nursery.start_soon(waiter, tid)
        await trio.testing.wait_all_tasks_blocked()
        before, children = len(_calls(log)), set()
        deadline = time.monotonic() + 3.0       # the old code ran `runc state` 30 times a second
        while time.monotonic() < deadline:
            children.update(_children_of_us())
            await trio.sleep(0.01)
        assert _calls(log)[before:] == []
        assert children == set()
        assert codes == {}
        for tid in ids:
            rt.kill(tid, signal.SIGTERM)
        with trio.fail_after(10):
            while len(codes) < len(ids):
                await trio.sleep(0.05)
    assert codes == {tid: 5 for tid in ids}


@pytest.mark.trio
async def test_wait_returns_promptly_with_the_exit_code(runtime):
    tid = new_id()
    runtime.prepare(tid, spec("sh", "-c", 'trap "exit 7" TERM; echo ready; sleep 100 & wait'), Resources(), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    result = []

    async def waiter():
        result.append(await runtime.wait(tid))
        result.append(time.monotonic())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        t0 = time.monotonic()
        runtime.kill(tid, signal.SIGTERM)
    assert result[0] == 7
    assert result[1] - t0 < 0.3


@pytest.mark.trio
async def test_wait_on_a_container_adopted_by_a_new_runtime(runtime):
    tid = new_id()
    runtime.prepare(tid, spec("sh", "-c", 'trap "exit 9" TERM; echo ready; sleep 100 & wait'), Resources(), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    restarted = Runtime(runtime.root, runtime.images, cgroup_parent=runtime.cgroup_parent)
    result = []

    async def waiter():
        result.append(await restarted.wait(tid))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert result == []
        restarted.kill(tid, signal.SIGTERM)
        with trio.fail_after(5):
            while not result:
                await trio.sleep(0.01)
    assert result == [9]


@pytest.mark.trio
async def test_wait_follows_the_container_when_its_monitor_dies(runtime):
    tid = new_id()
    runtime.prepare(tid, spec(*TERMINABLE), Resources(), None)
    runtime.start(tid)
    await wait_for_line(runtime, tid, "ready")
    result = []

    async def waiter():
        result.append(await runtime.wait(tid))
        result.append(time.monotonic())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        _kill_monitor(runtime, tid)                 # the wait now watches the container's init
        await trio.sleep(0.2)
        assert result == [] and runtime.state(tid).status == "running"
        t0 = time.monotonic()
        runtime.kill(tid, signal.SIGTERM)
    assert result[0] is None                     # the conmon that knew the exit code is gone
    assert result[1] - t0 < 0.3
    assert "monitor" in runtime.state(tid).error


# -- read-only binds are read-only all the way down ----------------------------------------
@pytest.mark.trio
@pytest.mark.parametrize("how", ["rro", "remount"])
async def test_readonly_bind_makes_its_submounts_readonly_too(runtime, state_dir, how):
    host_dir = os.path.join(state_dir, "host")
    os.makedirs(os.path.join(host_dir, "sub"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", os.path.join(host_dir, "sub")], check=True)
    # "remount": prepare remounts the submounts itself, as for a runc or kernel without "rro"
    rt = Runtime(runtime.root, runtime.images, cgroup_parent=runtime.cgroup_parent,
                 recursive_readonly=(how == "rro"))
    tid = new_id()
    script = ("touch /host/top 2>/dev/null && echo top-writable || echo top-ro; "
              "touch /host/sub/inner 2>/dev/null && echo sub-writable || echo sub-ro; "
              "grep ' /host/sub ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1")
    container = spec("sh", "-c", script, mounts=(Mount("bind", "/host", source=host_dir, readonly=True),))
    assert await run_to_end(rt, tid, container) == 0
    with open(os.path.join(rt.bundle(tid), "config.json")) as f:
        [entry] = [e for e in __import__("json").load(f)["mounts"] if e["destination"] == "/host"]
    assert ("rro" in entry["options"]) == (how == "rro")
    assert [e.line for e in await logs_of(rt, tid)] == ["top-ro", "sub-ro", "ro"]
    # the host's own mounts stay writable, also while the task's bundle exists
    with open(os.path.join(host_dir, "sub", "from-host"), "w") as f:
        f.write("x")
    rt.remove(tid)
    assert_clean(rt, tid)
    assert _mounts_under(host_dir) == [os.path.join(host_dir, "sub")]

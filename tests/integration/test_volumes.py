"""Volumes, mount options and log drivers on real runc containers (the busybox demo image),
and `swarm volume` against a real daemon.

Everything is checked from inside the container (its own output) or on the
host's disk; every fixture removes the containers, mounts and cgroups it made.
"""
import ctypes
import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
import trio

from swarm.api import logdriver
from swarm.api.spec import ContainerSpec, LogDriver, Mount, Resources
from swarm.lab.localcluster import Swarm, eventually
from swarm.runtime.errors import ContainerError, SpecError
from swarm.runtime.volumes import ANONYMOUS_LABEL
from tests.integration.helpers import runc_runtime, scratch_dir

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc"),
]
libc = ctypes.CDLL(None, use_errno=True)


def _mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path.rstrip("/") + "/")]


def _mounted(path):
    return path in _mounts_under(path)


@pytest.fixture
def state_dir():
    with scratch_dir("swarm-vol-test-") as path:
        yield path


@pytest.fixture
def runtime(state_dir, demo_tar):
    with runc_runtime(state_dir, demo_tar, "demo:1") as rt:
        yield rt


def spec(script, **kw):
    return ContainerSpec(image="demo:1", command=("sh", "-c", script), **kw)


def new_id():
    return f"t{uuid.uuid4().hex[:12]}"


async def run(rt, container, task_id=None, keep=False):
    """Run the container to its end; (exit code, its output lines). Removed unless `keep`."""
    task_id = task_id or new_id()
    rt.prepare(task_id, container, Resources(), None)
    rt.start(task_id)
    with trio.fail_after(30):
        code = await rt.wait(task_id)
        lines = [e.line async for e in rt.logs(task_id)]
    if not keep:
        rt.remove(task_id)
    return code, lines


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


# -- volumes --------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_named_volume_keeps_its_data_across_a_task_replacement(runtime):
    data = Mount("volume", "/data", source="appdata", volume_labels={"app": "db"})
    code, _ = await run(runtime, spec("echo generation-1 > /data/state", mounts=(data,)))
    assert code == 0
    # The replacement task (a new container, same node) finds what the first one wrote.
    code, lines = await run(runtime, spec("cat /data/state; echo generation-2 >> /data/state", mounts=(data,)))
    assert (code, lines) == (0, ["generation-1"])
    info = runtime.volumes.inspect("appdata")
    assert info["Labels"] == {"app": "db"} and info["UsedBy"] == []
    with open(os.path.join(info["Mountpoint"], "state")) as f:
        assert f.read() == "generation-1\ngeneration-2\n"


@pytest.mark.trio
async def test_volume_in_use_cannot_be_removed(runtime):
    tid = new_id()
    runtime.prepare(tid, spec("sleep 100", mounts=(Mount("volume", "/data", source="busy"),)), Resources(), None)
    runtime.start(tid)
    with pytest.raises(ValueError, match=rf"^remove busy: volume is in use - \[{tid}\]$"):
        runtime.volumes.remove("busy")
    runtime.remove(tid)
    assert runtime.volumes.remove("busy") is True


@pytest.mark.trio
async def test_copy_up_versus_volume_nocopy_as_docker(runtime):
    # The image has /www/index.html and /root (mode 0700): a new volume there gets a copy of them.
    mounts = (Mount("volume", "/www", source="site"), Mount("volume", "/root", source="home"))
    code, lines = await run(runtime, spec("cat /www/index.html | grep -c 'Hello from a swarm task'; "
                                          "stat -c %a /root; echo mine > /www/extra", mounts=mounts))
    assert (code, lines) == (0, ["1", "700"])
    # Not empty any more: a later task sees the volume as it was left, not the image's files again.
    code, lines = await run(runtime, spec("ls /www", mounts=mounts[:1]))
    assert lines == ["extra", "index.html"]
    # volume-nocopy: the new volume stays empty, hiding the image's files.
    code, lines = await run(runtime, spec("ls -A /www | wc -l",
                                          mounts=(Mount("volume", "/www", source="bare", volume_nocopy=True),)))
    assert lines == ["0"]
    # A target the image does not have: nothing to copy, the directory is made.
    code, lines = await run(runtime, spec("ls -A /newdir | wc -l", mounts=(Mount("volume", "/newdir", source="nd"),)))
    assert (code, lines) == (0, ["0"])


@pytest.mark.trio
async def test_anonymous_volume_lives_and_dies_with_its_task(runtime):
    tid = new_id()
    code, lines = await run(runtime, spec("ls /www; echo x > /www/y", mounts=(Mount("volume", "/www"),)),
                            task_id=tid, keep=True)
    assert lines == ["index.html"]                    # copied up like a named one
    (anon,) = runtime.volumes.list()
    assert len(anon["Name"]) == 64 and anon["Labels"] == {ANONYMOUS_LABEL: ""} and anon["UsedBy"] == [tid]
    runtime.remove(tid)
    assert runtime.volumes.list() == []


@pytest.mark.trio
async def test_tmpfs_size_and_mode_are_enforced(runtime):
    script = ("stat -c %a /scratch; dd if=/dev/zero of=/scratch/a bs=1024 count=512 2>/dev/null && echo half-ok; "
              "dd if=/dev/zero of=/scratch/b bs=1024 count=1024 2>/dev/null || echo full")
    code, lines = await run(runtime, spec(script, mounts=(Mount("tmpfs", "/scratch", tmpfs_size=1 << 20,
                                                                tmpfs_mode=0o700),)))
    assert lines == ["700", "half-ok", "full"]


@pytest.mark.trio
async def test_tmpfs_volume_option_is_a_shared_tmpfs_while_in_use(runtime):
    vol = Mount("volume", "/cache", source="fast", volume_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    tid = new_id()
    script = ("grep ' /cache ' /proc/mounts | cut -d' ' -f3; "
              "dd if=/dev/zero of=/cache/big bs=1024 count=2048 2>/dev/null || echo full; sleep 100")
    runtime.prepare(tid, spec(script, mounts=(vol,)), Resources(), None)
    runtime.start(tid)
    data = runtime.volumes.data_path("fast")
    assert _mounted(data)                              # mounted on the host while a task uses it
    with trio.fail_after(20):
        async for entry in runtime.logs(tid, follow=True):
            if entry.line == "full":
                break
    assert [e.line async for e in runtime.logs(tid)] == ["tmpfs", "full"]
    assert runtime.volumes.inspect("fast")["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    runtime.remove(tid)
    assert not _mounted(data)                          # the last user gone: unmounted, content gone
    assert runtime.volumes.remove("fast")


@pytest.mark.trio
async def test_bind_volume_option_and_bad_options(runtime, state_dir):
    host = os.path.join(state_dir, "export")
    os.mkdir(host)
    with open(os.path.join(host, "shared.txt"), "w") as f:
        f.write("from the host\n")
    vol = Mount("volume", "/srv", source="exported", volume_opts={"type": "none", "device": host, "o": "bind"})
    code, lines = await run(runtime, spec("cat /srv/shared.txt; echo back > /srv/reply", mounts=(vol,)))
    assert (code, lines) == (0, ["from the host"])
    assert open(os.path.join(host, "reply")).read() == "back\n"
    assert not _mounted(runtime.volumes.data_path("exported"))
    runtime.volumes.remove("exported")
    assert os.path.exists(os.path.join(host, "shared.txt"))     # removing the volume keeps the device's files
    bad = Mount("volume", "/srv", source="nfs", volume_opts={"type": "nfs", "device": ":/x", "o": "addr=1.2.3.4"})
    with pytest.raises(SpecError, match="type 'nfs' is not supported on this node"):
        runtime.prepare(new_id(), spec("true", mounts=(bad,)), Resources(), None)
    assert runtime.list() == [] and runtime.volumes.list() == []


# -- bind options -----------------------------------------------------------------------------------


@pytest.fixture
def shared_dir(state_dir):
    """A host directory that is a shared mount point (a tmpfs), as a propagating bind needs."""
    path = os.path.join(state_dir, "shared")
    os.makedirs(os.path.join(path))
    sh("mount", "-t", "tmpfs", "tmpfs", path)
    sh("mount", "--make-shared", path)
    os.mkdir(os.path.join(path, "sub"))
    yield path
    for mnt in sorted(_mounts_under(path), key=len, reverse=True):
        libc.umount2(mnt.encode(), 2)


async def _sees_later_mount(runtime, shared_dir, propagation):
    """Whether a mount made on the host under the bind's source after the container started
    shows inside it."""
    tid = new_id()
    script = ("echo ready; i=0; while [ $i -lt 50 ]; do [ -e /h/sub/marker ] && { echo seen; exit 0; }; "
              "sleep 0.1; i=$((i+1)); done; echo unseen")
    bind = Mount("bind", "/h", source=shared_dir, bind_propagation=propagation)
    runtime.prepare(tid, spec(script, mounts=(bind,)), Resources(), None)
    runtime.start(tid)
    sub = os.path.join(shared_dir, "sub")
    try:
        with trio.fail_after(20):
            async for entry in runtime.logs(tid, follow=True):
                if entry.line == "ready":
                    break
            sh("mount", "-t", "tmpfs", "tmpfs", sub)
            open(os.path.join(sub, "marker"), "w").close()
            await runtime.wait(tid)
        return [e.line async for e in runtime.logs(tid)][-1] == "seen"
    finally:
        libc.umount2(sub.encode(), 2)
        runtime.remove(tid)


@pytest.mark.trio
async def test_bind_propagation_rslave_sees_host_mounts_and_rprivate_does_not(runtime, shared_dir):
    assert await _sees_later_mount(runtime, shared_dir, "rslave") is True
    assert await _sees_later_mount(runtime, shared_dir, "") is False      # Docker's default: rprivate


def test_shared_propagation_needs_a_shared_source(runtime, state_dir):
    private = os.path.join(state_dir, "private")
    os.mkdir(private)
    sh("mount", "-t", "tmpfs", "tmpfs", private)
    sh("mount", "--make-private", private)
    try:
        for mode, what in (("rshared", "not a shared mount"), ("rslave", "not a shared or slave mount")):
            tid = new_id()
            with pytest.raises(SpecError, match=f"path {private} is mounted on {private} but it is {what}"):
                runtime.prepare(tid, spec("true", mounts=(Mount("bind", "/p", source=private,
                                                                bind_propagation=mode),)), Resources(), None)
            assert not os.path.exists(runtime.bundle(tid))
    finally:
        libc.umount2(private.encode(), 2)


@pytest.mark.trio
async def test_bind_recursive_modes(runtime, state_dir):
    src = os.path.join(state_dir, "tree")
    os.makedirs(os.path.join(src, "inner"))
    sh("mount", "-t", "tmpfs", "tmpfs", os.path.join(src, "inner"))
    try:
        script = "touch /t/inner/f 2>/dev/null && echo inner-rw || echo inner-ro; grep -c ' /t/inner ' /proc/mounts"

        async def check(**kw):
            return (await run(runtime, spec(script, mounts=(Mount("bind", "/t", source=src, readonly=True,
                                                                   **kw),))))[1]

        assert await check() == ["inner-ro", "1"]                                # enabled: read-only all down
        assert await check(bind_recursive="readonly") == ["inner-ro", "1"]
        assert await check(bind_recursive="writable") == ["inner-rw", "1"]       # the submount stays writable
        # disabled: the submount is not there at all (the directory under it is, read-only).
        assert await check(bind_recursive="disabled") == ["inner-ro", "0"]
    finally:
        libc.umount2(os.path.join(src, "inner").encode(), 2)


# -- log drivers ------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_200_mb_of_logs_with_max_size_1m_max_file_2_keeps_at_most_2_mb(runtime):
    # 200 MB of 1000-byte lines as fast as conmon takes them.
    line = "x" * 999
    script = f"yes {line} | head -c 200000000; echo the-end"
    log = LogDriver("json-file", {"max-size": "1m", "max-file": "2"})
    tid = new_id()
    started = time.monotonic()
    runtime.prepare(tid, spec(script, log_driver=log), Resources(), None)
    runtime.start(tid)
    with trio.fail_after(120):
        assert await runtime.wait(tid) == 0
    elapsed = time.monotonic() - started
    bundle = runtime.bundle(tid)
    files = sorted(f for f in os.listdir(bundle) if f.startswith("container.log"))
    assert files == ["container.log", "container.log.1"]
    sizes = [os.path.getsize(os.path.join(bundle, f)) for f in files]
    print(f"kept {sizes} bytes")
    # The runtime rotates from outside conmon, as often as the file grows: a file passes max-size
    # by what the task writes until the next check acts (at full speed on a busy node, a few MB).
    assert sum(sizes) <= 2_000_000 + 200_000_000 * 0.2 / elapsed
    t0 = time.monotonic()
    with trio.fail_after(5):
        tail = [e.line async for e in runtime.logs(tid, tail=2)]
        everything = [e.line async for e in runtime.logs(tid)]
    assert time.monotonic() - t0 < 2.0                        # a read answers at once
    assert tail == [line, "the-end"] and everything[-1] == "the-end" and len(everything) > 500
    print(f"200 MB of logs written and rotated in {elapsed:.1f} s")


@pytest.mark.trio
async def test_none_log_driver_keeps_nothing_and_says_so(runtime):
    tid = new_id()
    runtime.prepare(tid, spec("echo nobody reads this; exit 3", log_driver=LogDriver("none")), Resources(), None)
    runtime.start(tid)
    with trio.fail_after(20):
        assert await runtime.wait(tid) == 3
    assert not [f for f in os.listdir(runtime.bundle(tid)) if f.startswith("container.log")]
    with pytest.raises(ContainerError, match=f"^{logdriver.NO_READ}$"):
        runtime.log_chunk(tid, None)
    bad = spec("true", log_driver=LogDriver("json-file", {"max-size": "lots"}))
    with pytest.raises(SpecError, match="Invalid log driver settings: invalid size: 'lots'"):
        runtime.prepare(new_id(), bad, Resources(), None)


# -- swarm volume against a daemon ----------------------------------------------------------------


def test_swarm_volume_ls_inspect_rm_prune(tmp_path, demo_tar):
    swarm = Swarm(str(tmp_path))
    try:
        m1 = swarm.init("m1")
        swarm.run(m1, "image", "import", demo_tar, "demo:1")
        # The manager learns of the image at the node's next heartbeat.
        eventually(lambda: swarm.ls(m1)["m1"]["status"] == "ready", 10, "the node ready")
        eventually(lambda: swarm.run(m1, "service", "create", "--name", "probe", "--detach", "demo:1", "true",
                                     check=False).returncode == 0, 20, "the image known to the manager")
        swarm.run(m1, "service", "rm", "probe")
        swarm.run(m1, "service", "create", "--name", "db", "--detach",
                  "--mount", "type=volume,source=dbdata,target=/data", "demo:1", "sh", "-c",
                  "echo hello > /data/f; exec sleep 1000")
        eventually(lambda: "dbdata" in swarm.run(m1, "volume", "ls", "-q").stdout.split(), 30, "the volume made")
        swarm.run(m1, "service", "create", "--name", "once", "--detach", "--restart-condition", "none",
                  "--mount", "type=volume,source=scratch,target=/s", "demo:1", "true")
        eventually(lambda: "scratch" in swarm.run(m1, "volume", "ls", "-q").stdout.split(), 30, "the second volume")
        assert swarm.run(m1, "volume", "ls").stdout == "DRIVER    VOLUME NAME\nlocal     dbdata\nlocal     scratch\n"
        assert swarm.run(m1, "volume", "ls", "--format", "{{.Name}}:{{.Driver}}", "-f", "name=db").stdout == \
            "dbdata:local\n"
        (info,) = json.loads(swarm.run(m1, "volume", "inspect", "dbdata").stdout)
        assert sorted(info) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"]
        assert info["Mountpoint"] == os.path.join(m1.state_dir, "volumes", "dbdata", "_data")
        eventually(lambda: os.path.exists(os.path.join(info["Mountpoint"], "f")), 30, "the task to write")
        missing = swarm.run(m1, "volume", "inspect", "nosuch", check=False)
        assert (missing.returncode, missing.stdout, missing.stderr) == (1, "[]\n", "Error: get nosuch: no such volume\n")
        # In use: refused with docker's sentence; rm -f does not force it either.
        busy = swarm.run(m1, "volume", "rm", "-f", "dbdata", check=False)
        assert busy.returncode == 1 and "Error: remove dbdata: volume is in use - [" in busy.stderr
        # Once the service (and so its task's container) is gone, its volume is dangling.
        swarm.run(m1, "service", "rm", "once")
        eventually(lambda: swarm.run(m1, "volume", "ls", "-q", "-f", "dangling=true").stdout.split() == ["scratch"],
                   30, "the removed task's volume to be unused")
        # prune asks first; "n" keeps everything, without --all named volumes stay.
        proc = subprocess.run([*_cli(m1), "volume", "prune", "--all"], input="n\n", capture_output=True, text=True,
                              env=_env(m1))
        assert proc.stdout.startswith("WARNING! This will remove all local volumes not used by at least one "
                                      "container.\nAre you sure you want to continue? [y/N] ")
        assert swarm.run(m1, "volume", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
        assert swarm.run(m1, "volume", "prune", "-f", "--all").stdout == \
            "Deleted Volumes:\nscratch\n\nTotal reclaimed space: 0B\n"
        swarm.run(m1, "service", "rm", "db")
        eventually(lambda: swarm.run(m1, "volume", "rm", "dbdata", check=False).stdout == "dbdata\n", 30,
                   "the volume to be free once its service is gone")
        assert swarm.run(m1, "volume", "ls", "-q").stdout == ""
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def _cli(node):
    import sys
    return [sys.executable, "-m", "swarm"]


def _env(node):
    from swarm.lab.localcluster import ROOT
    return dict(os.environ, PYTHONPATH=ROOT, SWARM_STATE_DIR=node.state_dir)

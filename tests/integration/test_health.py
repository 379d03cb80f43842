"""Healthchecks with real runc containers (the busybox demo image): `exec` runs a check
inside the container as its process runs (user, environment, working directory), kills
one that outlives its timeout with what it started, bounds its output; prepare keeps the
effective check (the image's HEALTHCHECK under the service's settings) for a restarted
agent; and through a real daemon a service with a healthcheck stays starting until its
first healthy check, and a task that turns unhealthy fails and is replaced."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import time

import pytest
import trio

from swarm.api.health import Check
from swarm.api.spec import ContainerSpec, HealthConfig, Resources
from swarm.cli.common import LocalDaemon
from swarm.runtime.errors import ContainerError, SpecError
from swarm.runtime.runc import Runtime

from tests.integration.test_runc import new_id, runtime, state_dir  # noqa: F401 (fixtures)
from tests.integration.helpers import create_service as create

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/busybox"), reason="needs busybox-static"),
]
SECOND = 1_000_000_000


def started(rt: Runtime, **kw) -> str:
    task_id = new_id()
    rt.prepare(task_id, ContainerSpec(image="demo:1", command=("sleep", "1000"), **kw), Resources(), None)
    rt.start(task_id)
    return task_id


def processes_with(argv: list[str]) -> list[int]:
    """Live (not zombie) processes on this machine whose command line is `argv`."""
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == want:
                    out.append(int(pid))
        except OSError:
            pass
    return out


# -- the runtime -------------------------------------------------------------------------------------

def test_exec_runs_the_check_in_the_container_as_its_process_runs(runtime) -> None:
    task_id = started(runtime, user="nobody", env=("GREETING=hi",), workdir="/tmp")

    async def main():
        return await runtime.exec(task_id, ["sh", "-c", 'id -u; id -g; echo $GREETING; pwd; hostname; '
                                                        'echo oops >&2; exit 3'], 10)

    result = trio.run(main)
    assert result.exit_code == 3
    # runc copies stdout and stderr each on its own: the two streams may interleave either way
    lines = result.output.splitlines()
    assert [line for line in lines if line != "oops"] == ["65534", "65534", "hi", "/tmp", task_id[:12]]
    assert lines.count("oops") == 1
    assert not [n for n in os.listdir(runtime.bundle(task_id)) if n.startswith("exec-")]   # nothing left


def test_a_check_past_its_timeout_is_killed_with_what_it_started(runtime) -> None:
    task_id = started(runtime)
    leftover, hanging = ["sleep", "3117"], ["sleep", "3118"]

    async def main():
        t0 = time.monotonic()
        result = await runtime.exec(task_id, ["sh", "-c", "sleep 3117 & sleep 3118"], 1.0)
        took = time.monotonic() - t0
        assert result == (-1, "Health check exceeded timeout (1s)") and 1.0 <= took < 4.0
        assert processes_with(leftover) == processes_with(hanging) == []
        # A caller that gives up (a task stopping) takes its check down too.
        with trio.move_on_after(0.5):
            await runtime.exec(task_id, ["sleep", "3119"], 30)
        assert processes_with(["sleep", "3119"]) == []
        # The container is fine: the next check runs.
        return await runtime.exec(task_id, ["true"], 5)

    assert trio.run(main) == (0, "")


def test_a_checks_output_is_cut_at_4_kib_and_a_missing_command_is_a_failure(runtime) -> None:
    task_id = started(runtime)

    async def main():
        big = await runtime.exec(task_id, ["sh", "-c", "yes | head -c 100000; exit 1"], 10)
        missing = await runtime.exec(task_id, ["no-such-check"], 10)
        return big, missing

    big, missing = trio.run(main)
    assert big.exit_code == 1 and big.output == "y\n" * 2048 + "..."
    assert missing.exit_code != 0 and "no-such-check" in missing.output
    runtime.stop(task_id, 0)
    with pytest.raises(ContainerError, match="is not running"):
        trio.run(runtime.exec, task_id, ["true"], 5)


def _image_with_healthcheck(demo_tar: str, path: str, healthcheck: dict) -> str:
    """A `docker save` archive of the demo rootfs whose config has a HEALTHCHECK."""
    with open(demo_tar, "rb") as f:
        layer = f.read()
    if layer[:2] == b"\x1f\x8b":
        layer = gzip.decompress(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
                         "config": {"Cmd": ["sleep", "1000"], "Env": ["PATH=/bin:/usr/bin"],
                                    "Healthcheck": healthcheck},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]}})
    config_name = hashlib.sha256(config.encode()).hexdigest() + ".json"
    with tarfile.open(path, "w") as tf:
        for name, data in (("layer0/layer.tar", layer), (config_name, config.encode()),
                           ("manifest.json", json.dumps([{"Config": config_name, "RepoTags": ["checked:1"],
                                                          "Layers": ["layer0/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_prepare_keeps_the_images_healthcheck_under_the_services_for_a_restarted_agent(runtime, demo_tar,
                                                                                       state_dir) -> None:
    archive = _image_with_healthcheck(demo_tar, os.path.join(state_dir, "checked.tar"), {
        "Test": ["CMD-SHELL", "test -e /tmp/ready"], "Interval": 2 * SECOND, "Timeout": 3 * SECOND,
        "StartPeriod": 20 * SECOND, "Retries": 4})
    assert runtime.images.load_archive(archive) == ["checked:1"]
    image_check = Check(("/bin/sh", "-c", "test -e /tmp/ready"), interval=2.0, timeout=3.0, start_period=20.0,
                        start_interval=5.0, retries=4)
    plain, tuned, disabled, none = new_id(), new_id(), new_id(), new_id()
    runtime.prepare(plain, ContainerSpec(image="checked:1"), Resources(), None)
    runtime.prepare(tuned, ContainerSpec(image="checked:1", healthcheck=HealthConfig(interval=0.5, retries=1)),
                    Resources(), None)
    runtime.prepare(disabled, ContainerSpec(image="checked:1", healthcheck=HealthConfig(("NONE",))),
                    Resources(), None)
    runtime.prepare(none, ContainerSpec(image="demo:1", command=("true",)), Resources(), None)
    restarted = Runtime(runtime.root, runtime.images, cgroup_parent=runtime.cgroup_parent)   # reads meta.json
    for rt in (runtime, restarted):
        assert rt.healthcheck(plain) == image_check
        assert rt.healthcheck(tuned) == Check(image_check.argv, 0.5, 3.0, 20.0, 5.0, 1)
        assert rt.healthcheck(disabled) is None and rt.healthcheck(none) is None
    with pytest.raises(SpecError, match="Invalid healthcheck: the healthcheck CMD has no command"):
        runtime.prepare(new_id(), ContainerSpec(image="checked:1", healthcheck=HealthConfig(("CMD",))),
                        Resources(), None)


# -- through a real daemon ---------------------------------------------------------------------------

@pytest.fixture
def api(swarm, demo_tar):
    try:
        m1 = swarm.init("m1")
        swarm.run(m1, "image", "import", demo_tar, "demo:1")
        yield LocalDaemon(m1.state_dir)
    finally:
        swarm.stop_all()          # the daemon first, so it restarts no task while its container goes
        swarm.stop_containers()




def watch(api: LocalDaemon, name: str, until, timeout: float) -> list[tuple[float, list[dict]]]:
    """Samples (time, service.ps rows) every 0.1 s until `until(rows)` holds."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = api.call("service.ps", {"refs": [name]})
        samples.append((time.monotonic(), rows))
        if until(rows):
            return samples
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout:g} s; last: {samples[-1][1] if samples else None}")


def test_a_service_is_starting_until_its_first_healthy_check_then_running(api) -> None:
    # Ready after 3 s; failures before that fall in the start period and do not count.
    create(api, {"name": "slow", "image": "demo:1", "command": ["sh", "-c", "sleep 3; touch /tmp/ready; sleep 1000"],
                 "healthcheck": {"test": ["CMD-SHELL", "test -e /tmp/ready"], "interval": 0.5, "retries": 3,
                                 "start_period": 30, "start_interval": 0.5}})
    samples = watch(api, "slow", lambda rows: any(r["state"] == "running" for r in rows), 60)
    states = [(at, r["state"]) for at, rows in samples for r in rows]
    first_starting = min(at for at, state in states if state == "starting")
    first_running = min(at for at, state in states if state == "running")
    assert first_running - first_starting >= 2.5           # its container ran for 3 s unhealthy
    assert {s for _, s in states} <= {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting",
                                      "running"}
    [row] = samples[-1][1]
    assert row["error"] == ""


def test_a_task_that_turns_unhealthy_fails_and_is_replaced(api) -> None:
    # Healthy for 3 s, then never again; sh as PID 1 ignores SIGTERM: killed after the grace period.
    create(api, {"name": "flaky", "image": "demo:1",
                 "command": ["sh", "-c", "touch /tmp/ready; sleep 3; rm /tmp/ready; sleep 1000"],
                 "stop_grace_period": 1.0, "restart_delay": 0.5,
                 "healthcheck": {"test": ["CMD-SHELL", "test -e /tmp/ready"], "interval": 0.5, "retries": 3,
                                 "timeout": 2}})
    samples = watch(api, "flaky", lambda rows: any(r["state"] == "failed" for r in rows), 60)
    states = [r["state"] for _, rows in samples for r in rows]
    assert "running" in states   # it was healthy first
    failed = next(r for r in samples[-1][1] if r["state"] == "failed")
    assert failed["error"] == "task: non-zero exit (137): dockerexec: unhealthy container"
    # The restart policy puts a new task in its slot, which runs once healthy.
    watch(api, "flaky", lambda rows: any(r["state"] == "running" and r["id"] != failed["id"] for r in rows), 60)

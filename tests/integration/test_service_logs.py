"""Task logs on real runc containers: rotation on disk, reading across rotations, and
`swarm service logs` of a chatty task through real daemons (one manager, two workers)."""
import os
import re
import shlex
import subprocess
import sys
import threading
import time

import pytest
import trio

from swarm.lab.localcluster import ROOT, eventually
from swarm.rpc.client import call_unix_sync
from swarm.api.spec import ContainerSpec, Resources
from tests.integration.test_runc import _kill_monitor, demo_tar, runtime, state_dir, pytestmark  # noqa: F401

# Numbered lines of ~100 bytes, fast (busybox awk), so conmon, the rotation and the readers do the work.
PAD = "x" * 80


def printer(count: int) -> tuple[str, ...]:
    return ("awk", f'BEGIN {{ for (i = 1; i <= {count}; i++) printf "line %d {PAD}\\n", i }}')


def paced_printer(count: int, burst: int = 1000, pause: float = 0.03) -> tuple[str, ...]:
    """printer, with a pause after every `burst` lines (the rotation checks between bursts)."""
    return ("awk", f'BEGIN {{ for (i = 1; i <= {count}; i++) {{ printf "line %d {PAD}\\n", i; '
                   f'if (i % {burst} == 0) {{ fflush(); system("sleep {pause}") }} }} }}')


def expected(count: int) -> list[str]:
    return [f"line {i} {PAD}" for i in range(1, count + 1)]


def log_files(rt, task_id):
    bundle = rt.bundle(task_id)
    return {n: os.path.getsize(os.path.join(bundle, n)) for n in os.listdir(bundle) if n.startswith("container.log")}


@pytest.mark.trio
async def test_a_chatty_task_keeps_at_most_max_size_times_max_file_on_disk(runtime):
    runtime.log_max_size, runtime.log_max_file = 256 * 1024, 3
    tid = "tloud1"
    # ~14 MB on disk, in bursts of 1000 lines (~137 kB) with a pause after each.
    runtime.prepare(tid, ContainerSpec(image="demo:1", command=paced_printer(100_000, pause=0.05)),
                    Resources(), None)
    runtime.start(tid)
    with trio.fail_after(60):
        assert await runtime.wait(tid) == 0          # the wait keeps the log rotated, as the agent's does
    files = log_files(runtime, tid)
    assert sorted(files) == ["container.log", "container.log.1", "container.log.2"]
    # The runtime rotates from outside conmon: a file passes max-size by at most what the task
    # writes until the next check acts (runcmon.rotation_step), here a burst, two on a busy node.
    assert max(files.values()) <= 256 * 1024 + 2 * 140_000
    # What is kept is the newest lines, whole and in order, read across the rotated files.
    lines = [e.line async for e in runtime.logs(tid)]
    assert lines == expected(100_000)[-len(lines):] and len(lines) >= 3000
    assert [e.line async for e in runtime.logs(tid, tail=3)] == expected(100_000)[-3:]


@pytest.mark.trio
async def test_following_a_log_that_rotates_loses_and_repeats_nothing(runtime):
    runtime.log_max_size, runtime.log_max_file = 128 * 1024, 100
    tid = "tloud2"
    runtime.prepare(tid, ContainerSpec(image="demo:1", command=paced_printer(60_000)), Resources(), None)  # ~6 MB
    runtime.start(tid)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.wait, tid)           # as the agent waits: it keeps the log rotated
            followed = [e.line async for e in runtime.logs(tid, follow=True)]
    assert followed == expected(60_000)
    assert len(log_files(runtime, tid)) > 20              # it did rotate, many times, while being read


# -- through the daemons ------------------------------------------------------------


@pytest.fixture
def cluster(three_nodes):
    return three_nodes


def rss_peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_service_logs_of_a_chatty_task_prints_every_line_and_the_worker_stays_responsive(cluster):
    swarm, m1, (w1, _) = cluster
    count = 300_000                                       # ~30 MB: more than one rotation at 20 MB
    # In bursts of ~400 kB: the rotation is checked from outside conmon, so one unbroken 30 MB
    # burst on a loaded machine could pass max-size by whatever it writes during one late check.
    swarm.run(m1, "service", "create", "--name", "loud", "--detach", "--constraint", "node.hostname==w1",
              "demo:1", "sh", "-c", f"{shlex.join(paced_printer(count, burst=4000, pause=0.02))}; exec sleep 1000")
    eventually(lambda: swarm.run(m1, "service", "logs", "--tail", "1", "loud").stdout.endswith(
        f"| line {count} {PAD}\n"), 120, "the task to print all its lines")
    rss_before = rss_peak_kb(w1.pid)

    # While the manager reads w1's log, w1's event loop must keep answering.
    delays: list[float] = []
    stop = threading.Event()

    def ping() -> None:
        while not stop.is_set():
            start = time.monotonic()
            call_unix_sync(os.path.join(w1.state_dir, "swarm.sock"), "ping", {}, timeout=5)
            delays.append(time.monotonic() - start)
            time.sleep(0.05)
    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    out_path = os.path.join(swarm.base, "logs.out")
    env = dict(os.environ, PYTHONPATH=ROOT, SWARM_STATE_DIR=m1.state_dir)
    try:
        with open(out_path, "w") as out:
            proc = subprocess.run([sys.executable, "-m", "swarm", "service", "logs", "loud"], stdout=out,
                                  stderr=subprocess.PIPE, text=True, env=env, timeout=300, cwd=ROOT)
    finally:
        stop.set()
        pinger.join(10)
    assert proc.returncode == 0, proc.stderr
    with open(out_path) as f:
        lines = f.read().splitlines()
    [task] = swarm.json(m1, "service", "ps", "loud", "--format", "json")
    assert lines == [f"loud.1.{task['id'][:12]}@w1    | {line}" for line in expected(count)]
    rss_after = rss_peak_kb(w1.pid)
    print(f"w1 peak RSS {rss_before} -> {rss_after} kB; ping delays max {max(delays):.3f}s over {len(delays)}")
    assert delays and max(delays) < 1.0
    assert rss_after - rss_before < 100 * 1024
    assert swarm.ls(m1)["w1"]["status"] == "ready"
    # Disk: the task's log was rotated at the default 20 MB.
    tasks_dir = os.path.join(w1.state_dir, "tasks")
    [bundle] = [os.path.join(tasks_dir, d) for d in os.listdir(tasks_dir) if not d.startswith(".")]
    # The runtime rotates while it waits on the task (swarm/runtime/runcmon.py): a file passes
    # max-size by what the task wrote between two checks (docs/daemon-api.md), a few hundred KB
    # here (a few bursts on a busy node); a rotation that broke would leave the whole 30 MB in one file.
    assert os.path.getsize(os.path.join(bundle, "container.log.1")) <= 20 * 1024 * 1024 * 1.25


def test_service_logs_that_fail_exit_non_zero_with_one_sentence(cluster):
    swarm, m1, (w1, _) = cluster
    swarm.run(m1, "service", "create", "--name", "quiet", "--detach", "--constraint", "node.hostname==w1",
              "demo:1", "sh", "-c", "echo hello; exec sleep 1000")
    eventually(lambda: "hello" in swarm.run(m1, "service", "logs", "quiet").stdout, 60, "the task's line")
    follow = subprocess.Popen([sys.executable, "-m", "swarm", "service", "logs", "-f", "quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT, SWARM_STATE_DIR=m1.state_dir))
    try:
        time.sleep(2)
        swarm.kill(w1)                                    # the manager still thinks w1 is ready
        out, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 1 and "hello" in out
    assert err.startswith("Error: could not read the logs of quiet.1 on node w1") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    proc = swarm.run(m1, "service", "logs", "nope", check=False)
    assert proc.returncode == 1 and proc.stderr == "Error: no such task or service: nope\n"


def test_service_logs_takes_dockers_flags_and_a_task_id(cluster):
    swarm, m1, (w1, _) = cluster
    swarm.run(m1, "service", "create", "--name", "ticker", "--detach", "--constraint", "node.hostname==w1",
              "demo:1", "sh", "-c", "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.2; done; exec sleep 1000")

    def logs(*args: str) -> list[str]:
        return swarm.run(m1, "service", "logs", *args).stdout.splitlines()
    eventually(lambda: len(logs("ticker")) == 6, 60, "six ticks")
    [task] = swarm.json(m1, "service", "ps", "ticker", "--format", "json")
    tid = task["id"]
    ticks = [f"tick {i}" for i in range(1, 7)]
    # Docker's line: NAME.SLOT.TASKID@NODE    | LINE, and its variants.
    assert logs("ticker") == [f"ticker.1.{tid[:12]}@w1    | {t}" for t in ticks]
    assert logs("--no-task-ids", "ticker") == [f"ticker.1@w1    | {t}" for t in ticks]
    assert logs("--no-trunc", "ticker")[0] == f"ticker.1.{tid}@w1    | tick 1"
    assert logs("--raw", "ticker") == ticks
    assert logs("--details", "--no-task-ids", "ticker")[0] == "ticker.1@w1    |  tick 1"   # no log-opt: empty
    assert logs("--tail", "2", "--raw", "ticker") == ticks[-2:] == logs("-n", "2", "--raw", "ticker")
    # A task ID (or a unique prefix) instead of the service, as `docker service logs TASK`.
    assert logs(tid[:10]) == logs("ticker")
    # --timestamps: RFC 3339 with nanoseconds; the same times bound --since and --until (both included).
    stamped = logs("-t", "--raw", "ticker")
    times = [line.split(" ", 1)[0] for line in stamped]
    assert [line.split(" ", 1)[1] for line in stamped] == ticks and times == sorted(times)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", t) for t in times)
    assert logs("--raw", "--since", times[2], "--until", times[4], "ticker") == ticks[2:5]
    assert logs("--raw", "--since", "10m", "ticker") == ticks          # relative: the last 10 minutes
    assert logs("--raw", "--until", "10m", "ticker") == []             # older than 10 minutes: none
    assert logs("--raw", "--since", "1h", "--tail", "1", "ticker") == ticks[-1:]
    # Following up to a time already past ends by itself, as the lines are all there.
    assert swarm.run(m1, "service", "logs", "-f", "--raw", "--until", times[1], "ticker",
                     timeout=30).stdout.splitlines() == ticks[:2]
    # Bad input: one sentence, usage exit 2; an unknown reference: exit 1.
    bad = swarm.run(m1, "service", "logs", "--since", "last tuesday", "ticker", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for '--since'")
    assert "Traceback" not in bad.stderr

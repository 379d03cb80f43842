"""runcmon: conmon's command line, the records it leaves, which OCI runtime runs, and when
the runtime rotates a log (pure decisions and real files; conmon itself: tests/integration)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from swarm.runtime import logfile, runcmon

HYBRID = """cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
UNIFIED = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"


def test_crun_is_chosen_where_it_can_manage_the_cgroups():
    # crun refuses hybrid mode with controllers on the cgroup2 side; runc copes with it.
    assert not runcmon.crun_fits(HYBRID, lambda path: "hugetlb\n")
    assert runcmon.crun_fits(HYBRID, lambda path: "")                # no controllers there: fine
    assert runcmon.crun_fits(UNIFIED, lambda path: "cpu memory pids\n")
    assert runcmon.crun_fits("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n", lambda path: "")


def test_the_runtime_named_by_the_environment_wins(monkeypatch):
    monkeypatch.setattr(runcmon.shutil, "which", lambda name: f"/usr/bin/{name}" if name in ("runc", "crun") else None)
    assert runcmon.oci_runtime({"SWARM_OCI_RUNTIME": "runc"}, UNIFIED) == "/usr/bin/runc"
    assert runcmon.oci_runtime({"SWARM_OCI_RUNTIME": "crun"}, HYBRID) == "/usr/bin/crun"
    assert runcmon.oci_runtime({}, UNIFIED) == "/usr/bin/crun"
    monkeypatch.setattr(runcmon, "_controllers", lambda path: "hugetlb")
    assert runcmon.oci_runtime({}, HYBRID) == "/usr/bin/runc"


def test_monitor_argv():
    argv = runcmon.monitor_argv("/usr/bin/conmon", "/usr/sbin/runc", "/s/.runc", "/s/t1", "t1",
                                {"driver": "json-file", "max_size": 10, "max_file": 2}, tty=True)
    assert argv[0] == "/usr/bin/conmon" and argv[argv.index("--runtime") + 1] == "/usr/sbin/runc"
    assert "--runtime-arg=--root=/s/.runc" in argv and "--terminal" in argv
    assert argv[argv.index("--persist-dir") + 1] == "/s/t1"             # exit and oom land in the bundle
    assert argv[argv.index("--container-pidfile") + 1] == "/s/t1/init.pid"
    assert "--terminal" not in runcmon.monitor_argv("c", "r", "/r", "/s/t1", "t1", None, tty=False)


def test_exit_records(tmp_path):
    bundle = str(tmp_path)
    assert runcmon.exit_record(bundle) is None
    (tmp_path / "exit").write_text("137")
    assert runcmon.exit_record(bundle)["exit_code"] == 137 and runcmon.exit_record(bundle)["error"] == ""
    (tmp_path / "oom").write_text("")
    assert runcmon.exit_record(bundle)["error"] == "the container ran out of memory and was killed (OOM)"
    # A failed start is ours, and comes first (as the exit.json of an earlier version's shim).
    (tmp_path / "exit.json").write_text(json.dumps({"exit_code": 127, "error": "no such command", "finished_at": 1}))
    assert runcmon.exit_record(bundle) == {"exit_code": 127, "error": "no such command", "finished_at": 1}


def test_the_monitor_record_of_an_earlier_version_is_read_too(tmp_path):
    assert not runcmon.started(str(tmp_path)) and runcmon.monitor_record(str(tmp_path)) is None
    (tmp_path / "shim.json").write_text(json.dumps({"pid": 5, "start_time": 7}))
    assert runcmon.started(str(tmp_path)) and runcmon.monitor_record(str(tmp_path)) == {"pid": 5, "start_time": 7}
    assert not runcmon.is_running(5, 7)         # pid 5 is not a process that started at tick 7


def test_start_errors_get_dockers_exit_codes(tmp_path):
    log = tmp_path / "runc.log"
    log.write_text('{"level":"error","msg":"runc create failed: unable to start container process: exec: '
                   '\\"nosuch\\": executable file not found in $PATH","time":"x"}\nnot json\n')
    message = runcmon.runtime_error(str(log))
    assert message.startswith("unable to start container process") and runcmon.start_error_code(message) == 127
    assert runcmon.start_error_code("open /bin/x: permission denied") == 126
    assert runcmon.start_error_code("something else") == 128
    assert runcmon.runtime_error(str(tmp_path / "missing")) == ""


def test_rotation_step_checks_as_often_as_the_log_grows():
    max_size = 1 << 20
    assert runcmon.rotation_step(0, max_size, 0.0, previous=0.8) == (False, runcmon.MAX_CHECK)   # a quiet task
    # A task that just started is checked at once, then less and less often while it is quiet.
    assert runcmon.rotation_step(0, max_size, 0.0) == (False, runcmon.MIN_CHECK)
    assert runcmon.rotation_step(0, max_size, 0.0, previous=0.1) == (False, 0.2)
    assert runcmon.rotation_step(max_size, max_size, 0.0) == (True, runcmon.MIN_CHECK)    # full
    assert runcmon.rotation_step(max_size + 5, max_size, 0.0)[0]
    # 100 kB/s with 900 kB of room: the next check in half the time it takes to fill.
    rotate, delay = runcmon.rotation_step(max_size - 900_000, max_size, 100_000.0)
    assert not rotate and delay == runcmon.MAX_CHECK
    rotate, delay = runcmon.rotation_step(max_size - 100_000, max_size, 10_000.0)
    assert not rotate and delay == runcmon.MAX_CHECK         # 5 s of room: never past MAX_CHECK
    rotate, delay = runcmon.rotation_step(max_size - 100_000, max_size, 1_000_000.0)
    assert not rotate and delay == 0.05                     # 0.1 s of room: half of it
    # 100 MB/s: the next check would find it past max-size, so rotate now.
    assert runcmon.rotation_step(max_size - 100_000, max_size, 100e6) == (True, runcmon.MIN_CHECK)
    assert runcmon.rotation_step(0, 0, 0.0) == (False, runcmon.MIN_CHECK)                # nothing to rotate
    # On a busy node checks come late: 1 MB/s and 50 kB of room is enough on time, not 100 ms late.
    assert not runcmon.rotation_step(max_size - 50_000, max_size, 1e6)[0]
    assert runcmon.rotation_step(max_size - 50_000, max_size, 1e6, lag=0.1) == (True, runcmon.MIN_CHECK)
    assert not runcmon.rotation_step(1000, max_size, 1e9)[0]      # under half full: never early


def test_rotate_loses_nothing_when_the_writer_does_not_reopen(tmp_path):
    bundle = str(tmp_path)
    (tmp_path / "container.log").write_bytes(b"2024-01-01T00:00:00.000000000+00:00 stdout F one\n")
    (tmp_path / "container.log.1").write_bytes(b"2024-01-01T00:00:00.000000000+00:00 stdout F zero\n")
    assert not logfile.rotate(bundle, 3, lambda: None, timeout=0.05)   # a writer that is gone
    assert sorted(os.listdir(bundle)) == ["container.log", "container.log.1", "container.log.2"]
    assert os.path.getsize(os.path.join(bundle, "container.log")) == 0
    lines = logfile.read_chunk(bundle, logfile.start_cursor(bundle, None, follow=False)).lines
    assert [(ts, line) for ts, _, line, _ in lines] == [("2024-01-01T00:00:00.000000000Z", "zero"),
                                                        ("2024-01-01T00:00:00.000000000Z", "one")]


def test_conmon_timestamps_are_given_out_in_one_form():
    assert logfile.parse_line(b"2024-05-01T12:00:00.123456789+00:00 stderr P part") == (
        "2024-05-01T12:00:00.123456789Z", "stderr", "P", b"part")
    assert logfile.parse_line(b"2024-05-01T12:00:00.123456789Z stdout F x")[0] == "2024-05-01T12:00:00.123456789Z"


def test_a_last_partial_line_is_given_out_once_the_writer_is_gone(tmp_path):
    bundle = str(tmp_path)
    (tmp_path / "container.log").write_bytes(b"2024-01-01T00:00:00.000000000+00:00 stdout F a\n"
                                             b"2024-01-01T00:00:01.000000000+00:00 stdout P no newline\n")
    cursor = logfile.start_cursor(bundle, None, follow=True)
    assert [line for _, _, line, _ in logfile.read_chunk(bundle, cursor).lines] == ["a"]
    assert [line for _, _, line, _ in logfile.read_chunk(bundle, cursor, final=True).lines] == ["a", "no newline"]
    tail = logfile.start_cursor(bundle, 1, follow=True, final=True)
    assert [line for _, _, line, _ in logfile.read_chunk(bundle, tail, final=True).lines] == ["no newline"]


def _fifo_writer(path, code: str) -> subprocess.Popen:
    """A process that plays runc's init: opens the exec fifo for writing (blocking until a reader
    comes), then does what `code` says with the open file `f`."""
    script = f"import os, time\nf = os.open({str(path)!r}, os.O_WRONLY)\n{code}\n"
    return subprocess.Popen([sys.executable, "-c", script])


def test_release_lets_the_waiting_init_go_and_removes_the_fifo(tmp_path):
    fifo = tmp_path / runcmon.EXEC_FIFO
    os.mkfifo(fifo)
    writer = _fifo_writer(fifo, "os.write(f, b'0'); time.sleep(0.2)")   # writes, then "execs" (closes)
    try:
        assert runcmon.release(str(tmp_path), writer.pid, 10) is True
        assert not fifo.exists()           # `runc state` then says running
        assert writer.poll() is None or writer.returncode == 0
    finally:
        writer.wait(10)


def test_release_says_so_when_the_init_died_before_opening_the_fifo(tmp_path):
    os.mkfifo(tmp_path / runcmon.EXEC_FIFO)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(runcmon.StartFailed, match="already dead"):
        runcmon.release(str(tmp_path), dead.pid, 10)


def test_release_of_an_init_that_closed_without_a_byte_fails(tmp_path):
    fifo = tmp_path / runcmon.EXEC_FIFO
    os.mkfifo(fifo)
    writer = _fifo_writer(fifo, "os.close(f)")
    try:
        with pytest.raises(runcmon.StartFailed):
            runcmon.release(str(tmp_path), writer.pid, 10)
    finally:
        writer.wait(10)


def test_release_leaves_a_runtime_without_the_fifo_to_its_own_start(tmp_path):
    assert runcmon.release(str(tmp_path), os.getpid(), 1) is False

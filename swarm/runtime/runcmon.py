"""conmon, the monitor of a runc (or crun) task, and the records it leaves in the bundle.

How this works. `spawn` runs Debian's conmon (the monitor podman and CRI-O use:
a small C process, about 1 MiB resident) for one task. The process we start
forks and exits once its child is on its way, so the child (in a session of
its own, reparented to init) survives the agent. The child makes itself a
subreaper, runs `<runtime> create` with the container's stdout and stderr on
pipes it holds (with --tty the runtime hands it the pseudo-terminal's master
through a console socket, and all is stdout, as Docker logs a TTY container),
reports the container's pid on the sync pipe (_OCI_SYNCPIPE, API version 1:
{"data": pid}, or {"data": -1, "message": the runtime's stderr}), then copies
the output to container.log in the CRI format until the container exits:

    2024-05-01T12:00:00.123456789+00:00 stdout F the line without its newline

(P instead of F for a piece of a line, when a read ends without a newline;
conmon runs with TZ=UTC and logfile.py reads that form). Then it writes the
exit status to `exit` (128+N when killed by signal N) and, if the container's
cgroup saw an OOM kill, an empty `oom`, and exits. Once the pid is reported,
`start` (runc.py) lets the container run: `release` does what `runc start`
does (reads runc's exec.fifo to its end), crun gets `crun start`. Records in
the bundle:

    monitor.json {pid, start_time} of conmon (the start time guards against pid reuse)
    init.pid     the container's init process, written by the runtime at create
    exit, oom    written by conmon when the container ended
    exit.json    {exit_code, error, finished_at}: ours, for a start that failed
    ctl          conmon's control FIFO: "2 0 0\\n" makes it reopen container.log

Rotation. conmon's own --log-size-max truncates (the old lines are gone), so
it is not used: conmon appends without a bound, and the runtime rotates with
logfile.rotate (rename, then "reopen" on ctl) while it waits on the task;
`rotation_step` decides when, from the file's size and how fast it grows.
Lines are never lost; a file may pass max-size by what the task wrote between
two checks, and while no agent runs the current file grows until one does.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import stat
import subprocess
import time
from typing import Callable, Mapping

from swarm.runtime.errors import ContainerError

log = logging.getLogger(__name__)
CONMON = "conmon"
RUNTIMES = ("crun", "runc")      # the first one installed, unless SWARM_OCI_RUNTIME names one
RUNTIME_ENV = "SWARM_OCI_RUNTIME"
MONITOR = "monitor.json"
LEGACY_MONITOR = "shim.json"     # the Python log shim's record in bundles of earlier versions
EXIT, OOM, FAILED = "exit", "oom", "exit.json"
CTL = "ctl"
EXEC_FIFO = "exec.fifo"          # in runc's state directory of the container, while it is created
REOPEN = b"2 0 0\n"              # conmon's REOPEN_LOGS_EVENT on the control FIFO

# rotation_step: checks every MAX_CHECK seconds at most, MIN_CHECK at least; a file is rotated
# once the next check would likely find it past max-size.
MIN_CHECK = 0.001
# The longest a task's output goes unchecked, so what a file can pass max-size by: a quiet task
# that bursts is caught within this (0.2 s of output at most); a quiet task costs 5 stats a second.
MAX_CHECK = 0.2


class StartFailed(Exception):
    """The runtime could not create the container; the message is the runtime's own."""


def oci_runtime(env: Mapping[str, str] = os.environ, mounts_text: str | None = None) -> str:
    """The OCI runtime to run: SWARM_OCI_RUNTIME (runc, crun or a path) if set, else crun when
    installed (it starts containers faster) and able to run here, else runc. A path when found
    on PATH. `mounts_text`: /proc/self/mounts (read when None)."""
    wanted = env.get(RUNTIME_ENV, "").strip()
    if wanted:
        return shutil.which(wanted) or wanted
    if mounts_text is None:
        try:
            with open("/proc/self/mounts") as f:
                mounts_text = f.read()
        except OSError:
            mounts_text = ""
    names = RUNTIMES if crun_fits(mounts_text, _controllers) else RUNTIMES[1:]
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return RUNTIMES[-1]


def crun_fits(mounts_text: str, controllers: Callable[[str], str]) -> bool:
    """Whether crun can manage this node's cgroups: not in hybrid mode (cgroup v1 hierarchies
    and a cgroup2 one beside them) when the cgroup2 one has controllers, which crun refuses
    ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"); runc copes.
    `controllers(path)`: the text of <path>/cgroup.controllers."""
    entries = [line.split() for line in mounts_text.splitlines()]
    v1 = any(len(e) > 2 and e[2] == "cgroup" for e in entries)
    v2 = [e[1] for e in entries if len(e) > 2 and e[2] == "cgroup2"]
    return not (v1 and any(controllers(path).strip() for path in v2))


def _controllers(path: str) -> str:
    try:
        with open(os.path.join(path, "cgroup.controllers")) as f:
            return f.read()
    except OSError:
        return ""


def monitor_argv(conmon: str, runtime: str, runtime_root: str, bundle: str, task_id: str,
                 log: Mapping | None, tty: bool) -> list[str]:
    """conmon's command line for a task (`log`: its log settings, None for the none driver)."""
    argv = [conmon, "--api-version", "1", "--cid", task_id, "--cuuid", task_id, "--name", task_id,
            "--runtime", runtime, f"--runtime-arg=--root={runtime_root}",
            f"--runtime-arg=--log={os.path.join(bundle, 'runc.log')}", "--runtime-arg=--log-format=json",
            "--bundle", bundle, "--container-pidfile", os.path.join(bundle, "init.pid"),
            "--conmon-pidfile", os.path.join(bundle, "conmon.pid"), "--persist-dir", bundle,
            # the attach socket (unused) in the bundle, not in /var/run/crio
            "--socket-dir-path", bundle, "--full-attach",
            # no fsync at every rotation and exit: the log shim never synced either
            "--no-sync-log",
            "--log-path", "none:" if log is None else f"k8s-file:{os.path.join(bundle, 'container.log')}"]
    return argv + (["--terminal"] if tty else [])


def spawn(argv: list[str], bundle: str, timeout: float) -> int:
    """Run conmon; the container's pid once it is created (StartFailed with the runtime's
    message when it could not be). conmon's own early errors go to the bundle's monitor.log."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "TZ": "UTC",
           "_OCI_SYNCPIPE": str(write_end)}
    try:
        with open(os.path.join(bundle, "monitor.log"), "ab") as errors:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                        cwd=bundle, env=env, pass_fds=(write_end,), start_new_session=True)
            except FileNotFoundError:
                raise ContainerError(f"The container monitor {argv[0]} is not installed "
                                     "(install Debian's conmon package).") from None
        os.close(write_end)
        write_end = -1
        try:
            _wait_child(proc, timeout)       # it forks and exits at once
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ContainerError("The container monitor conmon did not start.") from None
        record_monitor(bundle)
        log.debug("start path %s conmon_forked %.6f", os.path.basename(bundle), time.time())
        reply = _read_reply(read_end, timeout)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if reply is None:
        raise StartFailed(f"conmon ended without a word (see {bundle}/monitor.log)")
    pid = reply.get("data")
    if not isinstance(pid, int) or pid <= 0:
        raise StartFailed(str(reply.get("message") or "the runtime could not create the container").strip())
    return pid


def _wait_child(proc: subprocess.Popen, timeout: float) -> int:
    """proc.wait(timeout) without its naps: with a timeout Popen polls, sleeping twice as long
    each time (up to 50 ms), while conmon's first process is gone within a few ms. A pidfd
    turns readable the moment it exits."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):        # no pidfds (Linux < 5.3)
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(int(timeout * 1000) + 1):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    return proc.wait()                       # it has exited: this only reaps it


def release(state_dir: str, pid: int, timeout: float) -> bool:
    """Let a container created by runc run, as `runc start` does, without running runc again (a
    Go program's start: a few ms of CPU and 5 to 20 ms per task on a busy node). runc's init
    process waits, once created, to open the state directory's exec.fifo for writing; when a
    reader opens it, it writes one byte and execs the container's process, which closes it.
    So: open it, read to its end, remove it (runc's `start`, step by step: `runc state` then
    says running). False when there is no such fifo (crun's start works the other way round:
    the caller runs the runtime's own start). StartFailed when the init process died first,
    as runc's start then says."""
    path = os.path.join(state_dir, EXEC_FIFO)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        data = _drain_fifo(fd, pid, timeout)
    finally:
        os.close(fd)
    if not data:
        raise StartFailed("container process is already dead")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def _drain_fifo(fd: int, pid: int, timeout: float) -> bytes:
    """What the writer of the fifo `fd` (opened for reading, non-blocking) writes until it
    closes it; b"" when the process `pid`, which is to write, died before it opened the fifo.
    A reader that came before any writer sees no end of file until a writer came and went."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ContainerError(f"The container was not started within {timeout:g} s.")
        if poller.poll(min(100, int(remaining * 1000) + 1)):
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:     # the writer opened the fifo and has not written yet
                continue
            if not chunk:
                return data             # the writer closed it: the container's process runs
            data += chunk
        elif not _alive(pid):
            try:                        # it may have written and gone between two polls
                return data + os.read(fd, 4096)
            except BlockingIOError:
                return data


def _alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] not in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return False


def _read_reply(fd: int, timeout: float) -> dict | None:
    """conmon's first message on the sync pipe; None when it closed the pipe without one."""
    deadline = time.monotonic() + timeout
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ContainerError(f"The container was not created within {timeout:g} s.")
        if not poller.poll(int(remaining * 1000) + 1):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    try:
        reply = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def record_monitor(bundle: str) -> None:
    """monitor.json from the pid file conmon's first process wrote before exiting."""
    try:
        with open(os.path.join(bundle, "conmon.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        raise ContainerError(f"The container monitor did not start (see {bundle}/monitor.log).") from None
    try:
        started = start_time(pid)
    except (OSError, ValueError, IndexError):
        started = 0                          # already gone: its exit record tells the rest
    write_json(os.path.join(bundle, MONITOR), {"pid": pid, "start_time": started})


def monitor_record(bundle: str) -> dict | None:
    """{pid, start_time} of the task's monitor (conmon, or an earlier version's log shim)."""
    for name in (MONITOR, LEGACY_MONITOR):
        try:
            with open(os.path.join(bundle, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    return None


def started(bundle: str) -> bool:
    """Whether the task was started (a monitor ran for it)."""
    return any(os.path.exists(os.path.join(bundle, n)) for n in (MONITOR, LEGACY_MONITOR))


def exit_record(bundle: str) -> dict | None:
    """How the container ended: {exit_code, error, finished_at}; None while it has not.
    A failed start (exit.json, also what the log shim of earlier versions wrote) comes first,
    then conmon's `exit`, with `oom` turned into the error a user reads."""
    try:
        with open(os.path.join(bundle, FAILED)) as f:
            doc = json.load(f)
        if isinstance(doc, dict):
            return doc
    except (OSError, ValueError):
        pass
    path = os.path.join(bundle, EXIT)
    try:
        with open(path) as f:
            text = f.read().strip()
        finished = os.stat(path).st_mtime
    except OSError:
        return None
    try:
        code: int | None = int(text)
    except ValueError:
        return None                          # conmon is writing it (it writes whole, so rarely seen)
    error = ""
    if code is not None and code < 0:
        code, error = None, "conmon could not tell the container's exit status"
    if os.path.exists(os.path.join(bundle, OOM)):
        error = "the container ran out of memory and was killed (OOM)"
    return {"exit_code": code, "error": error, "finished_at": finished}


def reopen_log(bundle: str) -> None:
    """Ask conmon to start a new container.log (it renames a fresh file over the path)."""
    try:
        fd = os.open(os.path.join(bundle, CTL), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return                               # ENXIO: no conmon reads it any more
    try:
        with contextlib.suppress(OSError):
            os.write(fd, REOPEN)
    finally:
        os.close(fd)


def rotation_step(size: int, max_size: int, rate: float, lag: float = 0.0,
                  previous: float = 0.0) -> tuple[bool, float]:
    """(rotate now, seconds until the next check) for a log of `size` bytes growing at `rate`
    bytes/s, when a check (and a rotation) comes `lag` seconds later than asked (a busy node).
    Rotates when the file would likely be past max-size by the time the next check could act
    (from half full on); checks sooner the faster it grows, and at least every MAX_CHECK. While it does not grow the checks slow down from MIN_CHECK (`previous`: the last
    delay), so a task that starts with a burst is caught in its first milliseconds."""
    if max_size <= 0:
        return False, MIN_CHECK
    horizon = MIN_CHECK + lag          # the soonest the next check can act
    # Early only from half full: a rate that is out of date must not rotate a small file away.
    if size >= max_size or (rate > 0 and size >= max_size // 2 and size + rate * horizon >= max_size):
        return size > 0, MIN_CHECK
    if rate <= 0:
        return False, min(MAX_CHECK, max(MIN_CHECK, previous * 2))
    room = max_size - size - rate * lag
    return False, min(MAX_CHECK, max(MIN_CHECK, room / rate / 2))


def runtime_error(log_path: str) -> str:
    """The last error the runtime logged (its --log file, JSON lines), without its own prefixes."""
    message = ""
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal") and entry.get("msg"):
                    message = str(entry["msg"])
    except OSError:
        return ""
    for prefix in ("runc run failed: ", "runc create failed: ", "runc start failed: "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message


def start_error_code(message: str) -> int:
    """The exit code Docker gives a container that could not start (127: no such command,
    126: not executable, else 128)."""
    text = message.lower()
    if "executable file not found" in text or "no such file or directory" in text:
        return 127
    if "permission denied" in text:
        return 126
    return 128


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (with the pid, a unique identity)."""
    return int(_stat_fields(pid)[19])


def is_running(pid: int, started_at: int) -> bool:
    """Whether `pid` is still the process that started at `started_at` and has not exited
    (an exited monitor may stay a zombie for a while: its new parent reaps it, not us)."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError, IndexError):
        return False
    return int(fields[19]) == started_at and fields[0] not in ("Z", "X")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, ..."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].decode().split()


def write_json(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)

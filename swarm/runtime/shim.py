"""The log shim: one small process per container, outliving the agent.

How this works: the agent runs `python shim.py --bundle B --id ID ...`; the
process forks, the parent records the child's pid and start time in
B/shim.json and exits, so the agent has nothing to reap and the child (in its
own session, reparented to init) survives an agent restart. The child runs
`runc run` in the foreground as its own child, in runc's "pass-through" stdio
mode: the container's stdout and stderr are pipes the shim reads (with --tty,
a pseudo-terminal: see _start_runc). runc writes
B/init.pid once the container's process runs. Every line read is appended to
B/container.log in the CRI log format (what kubelet writes, one entry a line):

    2024-05-01T12:00:00.123456789Z stdout F the line without its newline

(RFC 3339 UTC with nanoseconds, the stream, F for a full line or P for a
partial one continued by the next entry of that stream; a line longer than
16 KiB is split into P entries). Before a write would take container.log
past --log-max-size, the shim rotates it as Docker's `local` log driver does
(container.log -> container.log.1 -> ... -> container.log.<max-file - 1>, the
oldest dropped), so a task keeps at most max-size * max-file bytes of log
(max-size and max-file come from the task's log driver options, see
swarm/api/logdriver.py; with --no-log, the `none` driver, the output is read
and dropped); it
rotates under an exclusive flock of the bundle directory, which readers
(logfile.py) take shared while they open the files. When both pipes are closed (the container
and runc have exited) the shim waits for runc, whose exit status is the
container's (128+N when killed by signal N), and writes B/exit.json:
{"exit_code", "error", "finished_at"}. If runc failed before the container's
process started, "error" holds runc's message and exit_code follows Docker
(127 command not found, 126 not executable, 128 otherwise).

This file imports only the standard library: it runs by path, without the
package on sys.path.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import termios
import time

MAX_LINE = 16 * 1024
LOG_MAX_SIZE = 20 * 1024 * 1024      # Docker's `local` driver: max-size 20m, max-file 5
LOG_MAX_FILE = 5
STREAMS = ("stdout", "stderr")


def timestamp(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (with the pid, a unique identity)."""
    return int(_stat_fields(pid)[19])


def is_running(pid: int, started: int) -> bool:
    """Whether `pid` is still the process that started at `started` and has not exited
    (an exited shim may stay a zombie for a while: its new parent reaps it, not us)."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError, IndexError):
        return False
    return int(fields[19]) == started and fields[0] not in ("Z", "X")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, ..."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].decode().split()


def write_json(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def runc_error(log_path: str) -> str:
    """The last error runc logged (its --log file, JSON lines), without runc's own prefixes."""
    message = ""
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                    message = str(entry["msg"])
    except OSError:
        return ""
    for prefix in ("runc run failed: ", "runc create failed: "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message


def start_error_code(message: str) -> int:
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message:
        return 126
    return 128


class NoLog:
    """The `none` log driver: the container's output is read (so it never blocks) and dropped."""

    def feed(self, stream: str, data: bytes) -> None:
        pass

    def close_stream(self, stream: str) -> None:
        pass


class LogWriter:
    def __init__(self, path: str, max_size: int = LOG_MAX_SIZE, max_file: int = LOG_MAX_FILE) -> None:
        self.path, self.max_size, self.max_file = path, max_size, max_file
        self.dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        self.pending = {s: b"" for s in STREAMS}

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def feed(self, stream: str, data: bytes) -> None:
        ts = timestamp(time.time_ns()).encode()
        buf = self.pending[stream] + data
        out = []
        pos, name = 0, stream.encode()
        while True:
            nl = buf.find(b"\n", pos, pos + MAX_LINE + 1)
            if nl >= 0:
                out.append(b"%s %s F %s\n" % (ts, name, buf[pos:nl]))
                pos = nl + 1
            elif len(buf) - pos >= MAX_LINE:   # the end of a long line may be in this data too: look again
                out.append(b"%s %s P %s\n" % (ts, name, buf[pos:pos + MAX_LINE]))
                pos += MAX_LINE
            else:
                break
        self.pending[stream] = buf[pos:]
        self.write_entries(out)

    def close_stream(self, stream: str) -> None:
        if self.pending[stream]:
            ts = timestamp(time.time_ns()).encode()
            self.write_entries([b"%s %s F %s\n" % (ts, stream.encode(), self.pending[stream])])
            self.pending[stream] = b""

    def write_entries(self, entries: list[bytes]) -> None:
        """Append whole entries, rotating first whenever the next one would pass max-size
        (so every file ends with a whole entry, and none is larger than max-size unless
        one entry is)."""
        batch: list[bytes] = []
        batch_size = 0
        for entry in entries:
            if self.size + batch_size + len(entry) > self.max_size and self.size + batch_size > 0:
                self.write(b"".join(batch))
                batch, batch_size = [], 0
                self.rotate()
            batch.append(entry)
            batch_size += len(entry)
        if batch:
            self.write(b"".join(batch))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)

    def rotate(self) -> None:
        fcntl.flock(self.dir_fd, fcntl.LOCK_EX)   # readers see the files before or after, never halfway
        try:
            os.close(self.fd)
            if self.max_file > 1:
                for i in range(self.max_file - 1, 0, -1):   # the oldest is replaced, so it goes
                    src = self.path if i == 1 else f"{self.path}.{i - 1}"
                    if os.path.exists(src):
                        os.replace(src, f"{self.path}.{i}")
            else:
                os.unlink(self.path)
            self.fd = self._open()
            self.size = 0
        finally:
            fcntl.flock(self.dir_fd, fcntl.LOCK_UN)


def run(args: argparse.Namespace) -> int:
    bundle = args.bundle
    pid_file = os.path.join(bundle, "init.pid")
    runc_log = os.path.join(bundle, "runc.log")
    log: LogWriter | NoLog = (NoLog() if args.no_log else
                              LogWriter(os.path.join(bundle, "container.log"), args.log_max_size, args.log_max_file))
    cmd = [args.runc, "--root", args.runc_root, "--log", runc_log, "--log-format", "json",
           "run", "--bundle", bundle, "--pid-file", pid_file, args.id]
    try:
        proc, readers = _start_runc(cmd, args.tty)
    except OSError as exc:
        write_json(os.path.join(bundle, "exit.json"),
                   {"exit_code": 128, "error": f"cannot run {args.runc}: {exc.strerror}", "finished_at": time.time()})
        return 1
    sel = selectors.DefaultSelector()
    for fd, stream in readers:
        sel.register(fd, selectors.EVENT_READ, stream)
    while sel.get_map():
        for key, _ in sel.select():
            try:
                data = os.read(key.fd, 65536)
            except OSError:       # EIO: a pseudo-terminal whose other end is closed (runc exited)
                data = b""
            if data:
                log.feed(key.data, data)
            else:
                log.close_stream(key.data)
                sel.unregister(key.fd)
                os.close(key.fd)
    rc = proc.wait()
    started = os.path.exists(pid_file)
    error = runc_error(runc_log)
    if rc < 0:
        exit_code, error = None, f"runc was killed by signal {-rc}; the container's exit code is unknown"
    elif started:
        exit_code, error = rc, ""
    else:
        error = error or f"runc exited with status {rc} before the container started"
        exit_code = start_error_code(error)
    write_json(os.path.join(bundle, "exit.json"), {"exit_code": exit_code, "error": error, "finished_at": time.time()})
    return 0


def _start_runc(cmd: list[str], tty: bool) -> tuple[subprocess.Popen, list[tuple[int, str]]]:
    """Run `runc run` in the foreground; the fds its output comes from, with their streams.

    Without a terminal runc passes the container's stdout and stderr through: two pipes.
    With one (`--tty`, process.terminal), foreground runc needs a controlling terminal of
    its own, whose size it gives the container's console, and copies the console to it:
    runc gets the slave of a pseudo-terminal (80x24, as a terminal starts), the shim reads
    the master, and everything is stdout, as Docker logs a TTY container."""
    if not tty:
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=w_out, stderr=w_err, cwd="/",
                                    close_fds=True)
        except OSError:
            os.close(r_out)
            os.close(r_err)
            raise
        finally:
            os.close(w_out)
            os.close(w_err)
        return proc, [(r_out, "stdout"), (r_err, "stderr")]
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd="/", close_fds=True,
                                start_new_session=True, preexec_fn=controlling_terminal)
    except OSError:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return proc, [(master, "stdout")]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="swarm container log shim")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--runc", default="runc")
    parser.add_argument("--runc-root", required=True)
    parser.add_argument("--log-max-size", type=_positive, default=LOG_MAX_SIZE, help="bytes per log file")
    parser.add_argument("--log-max-file", type=_positive, default=LOG_MAX_FILE, help="log files kept")
    parser.add_argument("--no-log", action="store_true", help="keep no log (the none log driver)")
    parser.add_argument("--tty", action="store_true", help="the container has a terminal (process.terminal)")
    args = parser.parse_args(argv)
    args.bundle = os.path.abspath(args.bundle)
    child = os.fork()
    if child:
        # Parent: record who the shim is, then exit so the caller has nothing to reap.
        write_json(os.path.join(args.bundle, "shim.json"), {"pid": child, "start_time": start_time(child)})
        return 0
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = run(args)
    except BaseException as exc:  # leave a trace in shim.log (stderr) and an exit file for the agent
        print(f"shim: {exc!r}", file=sys.stderr)
        try:
            write_json(os.path.join(args.bundle, "exit.json"),
                       {"exit_code": None, "error": f"the log shim failed: {exc!r}", "finished_at": time.time()})
        except OSError:
            pass
        code = 1
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

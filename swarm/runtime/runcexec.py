"""One `runc exec` (or crun exec) run from trio, with a deadline and bounded output.

How this works. `run` starts the exec command in a session of its own with
stdout and stderr on one pipe (runc copies the process's two streams into it
each on its own, so lines of one may pass lines of the other, as Docker's
two streams do), reads that pipe into a buffer that keeps the
first health.MAX_OUTPUT bytes and drains the rest (a chatty check never
blocks on a full pipe), and waits for the command to end. runc gives the
exec'd process a session (and process group) of its own and writes its host
pid to the --pid-file, so on the deadline, or when the caller is cancelled,
that whole group is killed (what a check's shell started goes too), then
runc exec itself if it lingers. crun gives the process a session too, led by
a helper of its own that has gone: the group killed is the process's, read
from /proc, not one named by its pid. A check that outlives its deadline
answers Docker's (-1, "Health check exceeded timeout (...)").
"""
from __future__ import annotations

import contextlib
import os
import signal as signals
import subprocess
from typing import Sequence

import trio

from swarm.api import health
from swarm.runtime.base import ExecResult
from swarm.runtime.errors import ContainerError

KILL_WAIT = 2.0       # seconds runc exec has to end once its process was killed
KILL_TIMEOUT = 10.0   # seconds for runc exec to end once it was killed itself
OUTPUT_GRACE = 0.2    # seconds the output is read after the command ended (what is left in the pipe)


async def run(cmd: Sequence[str], pid_file: str, timeout: float, what: str) -> ExecResult:
    """Run the exec command `cmd` (whose --pid-file is `pid_file`) for at most `timeout` seconds.
    `what` names it in errors ("runc exec in task X")."""
    try:
        proc = await trio.lowlevel.open_process(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
    except FileNotFoundError:
        raise ContainerError(f"The container runtime {cmd[0]} is not installed.") from None
    stdout = proc.stdout
    assert stdout is not None
    output = bytearray()
    cut = False
    read_all = trio.Event()

    async def read() -> None:
        nonlocal cut
        while chunk := await stdout.receive_some(65536):
            room = health.MAX_OUTPUT - len(output)
            output.extend(chunk[:max(room, 0)])
            cut = cut or len(chunk) > room
        read_all.set()

    timed_out = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            with trio.move_on_after(max(timeout, 0.0)):
                await proc.wait()
            if proc.returncode is None:
                timed_out = True
                _kill(proc.pid, pid_file)
                with trio.move_on_after(KILL_WAIT):
                    await proc.wait()
                if proc.returncode is None:     # runc outlives its process: it goes too
                    _kill(proc.pid, pid_file, runc_too=True)
                    with trio.move_on_after(KILL_TIMEOUT):
                        await proc.wait()
            # What is still in the pipe comes at once; a process the check left running in the
            # background may hold the pipe open for long, so do not wait for the end of it.
            with trio.move_on_after(OUTPUT_GRACE):
                await read_all.wait()
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:        # the caller was cancelled, or runc hung
            _kill(proc.pid, pid_file, runc_too=True)
            with trio.CancelScope(shield=True), trio.move_on_after(KILL_TIMEOUT):
                await proc.wait()
        with trio.CancelScope(shield=True):
            await stdout.aclose()
    if timed_out:
        return ExecResult(-1, health.timeout_output(timeout))
    if proc.returncode is None:
        raise ContainerError(f"{what} did not end within {KILL_TIMEOUT:g} s of SIGKILL.")
    text = output.decode(errors="replace") + ("..." if cut else "")
    # A signal's death as a shell reports it (128 + the signal), as runc does for its process.
    return ExecResult(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode, text)


def _kill(runc_pid: int, pid_file: str, runc_too: bool = False) -> None:
    """SIGKILL to the exec'd process's group (and the process, should it have left it); to the
    exec command's own group too when asked, when the process is not known yet (runc init,
    still in runc's group, goes with it) or when the process is in that group."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pid = 0
    group = 0
    if pid > 1:
        with contextlib.suppress(OSError):
            group = os.getpgid(pid)
        # runc makes the process lead a group of its own; crun's is led by a helper that is gone.
        if group in (os.getpgid(0), 1):
            group = 0                     # never our own group, nor init's
        for kill, target in ((os.killpg, group or pid), (os.kill, pid)):
            with contextlib.suppress(OSError):
                kill(target, signals.SIGKILL)
    if runc_too or pid <= 1 or group == runc_pid:
        with contextlib.suppress(OSError):
            os.killpg(runc_pid, signals.SIGKILL)

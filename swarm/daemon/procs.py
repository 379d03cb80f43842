"""Waiting for processes this project started to be gone (PIDs, /proc)."""
from __future__ import annotations

import time


def wait_gone(pid: int, timeout: float = 5.0, poll: float = 0.01) -> None:
    """Return once `pid` has exited (a zombie awaiting its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except OSError:
            return
        time.sleep(poll)

"""Serving the Engine API on STATE_DIR/docker.sock: hypercorn's trio worker, in the daemon's nursery.

The socket is made here (bound and set to mode 0660 before it listens: a connect to a
socket that does not listen is refused, so no other user can connect at any moment: dockerd's docker.sock is root:docker 0660) and handed to
hypercorn as a file descriptor. Idle connections are closed after KEEP_ALIVE seconds
and a request whose bytes stop coming after READ_TIMEOUT, so idle clients cannot pile up.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from swarm.engineapi.app import EngineApp
from swarm.rpc.messages import LOCAL_PEER

log = logging.getLogger(__name__)

KEEP_ALIVE = 5.0        # seconds an idle connection is kept (hypercorn's keep_alive_timeout)
READ_TIMEOUT = 30       # seconds a started request may wait for its next bytes
SOCKET_MODE = 0o660


def bind_unix(path: str) -> socket.socket:
    """A unix socket bound at `path` (a stale socket file there is replaced), mode 0660."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)               # not listening yet: any connect is refused until the chmod
        os.chmod(path, SOCKET_MODE)
    except BaseException:
        sock.close()
        raise
    return sock


def config_for(fd: int) -> Config:
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.keep_alive_timeout = KEEP_ALIVE
    config.read_timeout = READ_TIMEOUT
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = log
    return config


async def serve(app: Any, path: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` (an ASGI application) on the unix socket `path` until cancelled."""
    await serve_socket(app, bind_unix(path), path, task_status=task_status)


async def serve_socket(app: Any, sock: socket.socket, path: str, *,
                       task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `sock` (bound at `path`, not listening yet); the socket file goes at the end."""
    try:
        # hypercorn owns a duplicate of the descriptor; ours is closed when the server ends
        await hypercorn_serve(app, config_for(os.dup(sock.fileno())), task_status=task_status, mode="asgi")
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def host_facts() -> dict:
    """What /info tells of this machine: CPUs, memory, kernel, architecture."""
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            memory = int(f.readline().split()[1]) * 1024
    uname = os.uname()
    return {"NCPU": os.cpu_count() or 1, "MemTotal": memory, "KernelVersion": uname.release,
            "Architecture": uname.machine}


async def serve_router(router: Any, path: str, role: Callable[[], str], *,
                       task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """The daemon's hook: serve the Engine API over `router` (the daemon's local router, called
    in process as the local peer) on `path`. `role()`: "manager" or "worker" now (the /_ping
    Swarm header). A socket that cannot be made is logged, and the daemon goes on without it."""
    app = EngineApp(functools.partial(router.dispatch, LOCAL_PEER), role, host_facts())
    try:
        sock = bind_unix(path)
    except OSError as exc:
        log.error("the Engine API is not served: cannot listen on %s: %s", path, exc)
        task_status.started()
        return
    await serve_socket(app, sock, path, task_status=task_status)

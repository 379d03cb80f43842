"""Serving the Engine API on STATE_DIR/docker.sock: hypercorn's trio worker, in the daemon's nursery.

The socket is made here (bound and set to mode 0660 before it listens: a connect to a
socket that does not listen is refused, so no other user can connect at any moment: dockerd's docker.sock is root:docker 0660) and handed to
hypercorn's trio connection handler (TCPServer) on our own accept loop. Idle connections are
closed after KEEP_ALIVE seconds and a request whose bytes stop coming after READ_TIMEOUT, and
at most MAX_CONNECTIONS are served at once (hypercorn has no cap): the accept loop takes a
slot before it accepts, so a client beyond the cap waits in the listen backlog (BACKLOG; then
its connect fails with EAGAIN) until an idle connection times out, and the daemon's file
descriptors never run out, whatever the clients do.
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
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from swarm.engineapi.app import EngineApp
from swarm.rpc.messages import LOCAL_PEER

log = logging.getLogger(__name__)

KEEP_ALIVE = 5.0        # seconds an idle connection is kept (hypercorn's keep_alive_timeout)
READ_TIMEOUT = 30       # seconds a started request may wait for its next bytes
SOCKET_MODE = 0o660
MAX_CONNECTIONS = 1024  # served at once; more wait in the backlog (dockerd has no cap: Go's fds are cheap)
BACKLOG = 1024          # connections the kernel queues for us (capped by net.core.somaxconn)


class CappedListener(trio.abc.Listener[trio.SocketStream]):
    """A listener that accepts only while fewer than `limit` of its streams are open: each
    accepted stream holds a slot of `slots` until its handler gives it back (`release`)."""

    def __init__(self, inner: trio.SocketListener, slots: trio.Semaphore) -> None:
        self.inner = inner
        self.slots = slots

    async def accept(self) -> trio.SocketStream:
        await self.slots.acquire()
        try:
            return await self.inner.accept()
        except BaseException:
            self.slots.release()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


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


def config_for() -> Config:
    config = Config()
    config.keep_alive_timeout = KEEP_ALIVE
    config.read_timeout = READ_TIMEOUT
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = log
    return config


async def serve(app: Any, path: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` (an ASGI application) on the unix socket `path` until cancelled."""
    await serve_socket(app, bind_unix(path), path, task_status=task_status)


async def serve_socket(app: Any, sock: socket.socket, path: str, *, max_connections: int = MAX_CONNECTIONS,
                       task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `sock` (bound at `path`, not listening yet), at most `max_connections`
    at once; the socket file goes at the end."""
    config = config_for()
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    slots = trio.Semaphore(max_connections)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await TCPServer(wrapped, config, context, ConnectionState({}), stream)  # type: ignore[arg-type]
        finally:
            slots.release()

    try:
        sock.listen(BACKLOG)
        listener = CappedListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), slots)
        async with trio.open_nursery() as handlers:
            task_status.started()
            await trio.serve_listeners(handle, [listener], handler_nursery=handlers)
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

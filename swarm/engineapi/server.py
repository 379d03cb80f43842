"""Serving the Engine API on STATE_DIR/docker.sock: hypercorn's trio worker, in the daemon's nursery.

The socket is made here (bound and set to mode 0660 before it listens: a connect to a
socket that does not listen is refused, so no other user can connect at any moment: dockerd's docker.sock is root:docker 0660) and handed to
hypercorn's trio connection handler (TCPServer) on our own accept loop. Idle connections are
closed after KEEP_ALIVE seconds and a request whose bytes stop coming after READ_TIMEOUT, and
at most MAX_CONNECTIONS are served at once (hypercorn has no cap): the accept loop takes a
slot before it accepts, so a client beyond the cap waits in the listen backlog (BACKLOG; then
its connect fails with EAGAIN) until an idle connection times out, and the daemon's file
descriptors never run out, whatever the clients do.

Over TCP (`--docker-api tcp://ADDR:PORT`, swarm/engineapi/tls.py) the same app is served by the
same loop, each accepted stream first wrapped in trio's SSLStream and taken through the TLS
handshake here, bounded by HANDSHAKE_TIMEOUT: a client without a certificate from the operator's
CA (or a plain HTTP one, which gets Go's one-line 400 as from dockerd) is refused at the handshake,
logged at debug, and the listener goes on. The TCP listener has a cap of its own: clients that have
not yet shown a certificate hold slots until their handshake ends, and they must never be able to
take the local socket's slots from root.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from swarm.engineapi.lazy import LazyApp
from swarm.engineapi.tls import BadApiSetting, TcpApi, insecure_warning, server_context
from swarm.rpc.messages import LOCAL_PEER

if TYPE_CHECKING:
    from hypercorn.config import Config

log = logging.getLogger(__name__)

KEEP_ALIVE = 5.0        # seconds an idle connection is kept (hypercorn's keep_alive_timeout)
READ_TIMEOUT = 30       # seconds a started request may wait for its next bytes
SOCKET_MODE = 0o660
MAX_CONNECTIONS = 1024  # served at once; more wait in the backlog (dockerd has no cap: Go's fds are cheap)
BACKLOG = 1024          # connections the kernel queues for us (capped by net.core.somaxconn)
HANDSHAKE_TIMEOUT = 10.0  # seconds a TCP client has to finish its TLS handshake (it holds a slot meanwhile)
# Go's net/http answer to plain HTTP on a TLS port: what the docker CLI shows when -H tcp:// lacks --tls
PLAIN_HTTP_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


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
    from hypercorn.config import Config

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
    try:
        sock.listen(BACKLOG)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        await serve_listeners(app, [listener], trio.Semaphore(max_connections), task_status=task_status)
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def head_waits_for_body(data: bytes) -> bool:
    """Is `data` (what hypercorn sends first after a request came) a final HTTP/1.x response
    head with a Content-Length? Its body comes at once (Starlette's Response sends the start and
    the body back to back; a streamed answer has no Content-Length), so the head is sent with it."""
    if not data.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) or data[9:10] == b"1":    # 1xx: 100 Continue
        return False
    end = data.find(b"\r\n\r\n")
    return end > 0 and b"\r\ncontent-length:" in data[:end].lower()


# hypercorn's (0.17, 0.18) methods that coalescing_server's handler overrides or calls
_TCPSERVER_HOOKS = ("protocol_send", "_read_data", "_idle_timeout", "_initiate_server_close")


@functools.cache
def coalescing_server() -> type:
    """hypercorn's trio connection handler (TCPServer) with two costs per request taken out (a
    third of the HTTP stack's CPU for a /_ping):
    - an answer's head is sent together with its body, and nothing for h11's empty end of a
      Content-Length body: one write of the socket per answer instead of three. Only the first
      bytes after a request (hypercorn's Updated(idle=False)) may be held, and what is held goes
      with the next bytes or before any other event (a close);
    - the keep-alive timeout is one task per connection whose deadline moves (infinite while a
      request is served, KEEP_ALIVE after its answer), where hypercorn cancelled its idle task
      at each request and started a new one after it."""
    from hypercorn.events import Closed, Event, RawData, Updated
    from hypercorn.trio.tcp_server import TCPServer

    if not all(callable(getattr(TCPServer, name, None)) for name in _TCPSERVER_HOOKS):
        # another hypercorn than the one read: its own handler, slower but whole
        log.warning("hypercorn's TCPServer lacks %s: its own connection handler is used",
                    ", ".join(n for n in _TCPSERVER_HOOKS if not callable(getattr(TCPServer, n, None))))
        return TCPServer

    class CoalescingTCPServer(TCPServer):
        _held = b""
        _answer_next = False     # a request came: its answer's head is the next bytes (after a 100 Continue)
        _busy = False            # a request is being served: the connection is not idle
        _idle_scope: trio.CancelScope | None = None
        _ended = False           # the connection closes or its client stopped sending: no idle watch

        async def protocol_send(self, event: Event) -> None:
            if isinstance(event, RawData):
                data = event.data
                if self._answer_next and data.startswith(b"HTTP/1.") and data[9:10] != b"1":
                    self._answer_next = False
                    if head_waits_for_body(data):
                        self._held = data
                        return
                data, self._held = self._held + data, b""
                if data:
                    await super().protocol_send(RawData(data=data, address=event.address))
                return
            if self._held:
                data, self._held = self._held, b""
                await super().protocol_send(RawData(data=data))
            if isinstance(event, Updated):
                self._busy = not event.idle
                self._answer_next = self._busy
                if self._idle_scope is not None:
                    self._idle_scope.deadline = self._idle_deadline()
                return
            if isinstance(event, Closed):
                self._end_idle_watch()
            await super().protocol_send(event)

        async def _read_data(self) -> None:
            try:
                await super()._read_data()
            finally:
                self._end_idle_watch()      # no request can come: TCPServer.run waits for this task

        def _end_idle_watch(self) -> None:
            self._ended = True
            if self._idle_scope is not None:
                self._idle_scope.cancel()

        def _idle_deadline(self) -> float:
            return math.inf if self._busy else trio.current_time() + self.config.keep_alive_timeout

        async def _idle_timeout(self) -> None:
            # started once per connection (by TCPServer.run); closes it once idle for KEEP_ALIVE
            if self._ended:
                return
            with trio.CancelScope(deadline=self._idle_deadline()) as self._idle_scope:
                await self.context.terminated.wait()
            self._idle_scope = None
            if self._ended:
                return
            with trio.CancelScope(shield=True):
                await self._initiate_server_close()

    return CoalescingTCPServer


def hypercorn_handler(app: Any) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    """hypercorn's trio connection handler serving `app` on one stream. hypercorn is imported
    here, when the first connection comes, not with this module (swarm/engineapi/lazy.py)."""
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import wrap_app

    config = config_for()
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    server = coalescing_server()
    return lambda stream: server(wrapped, config, context, ConnectionState({}), stream)


async def serve_listeners(app: Any, listeners: list[trio.SocketListener], slots: trio.Semaphore,
                          tls: ssl.SSLContext | None = None, *, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                          task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `listeners` (listening already; closed at the end), as many streams at once
    as `slots` allows; with `tls`, each stream is a TLS server stream once its handshake is done."""
    serve_stream = functools.cache(functools.partial(hypercorn_handler, app))   # at the first connection

    async def handle(stream: trio.SocketStream) -> None:
        try:
            served: trio.abc.Stream | None = stream
            if tls is not None:
                served = await handshake(stream, tls, handshake_timeout)
            if served is not None:
                await serve_stream()(served)
        finally:
            slots.release()

    async with trio.open_nursery() as handlers:
        task_status.started()
        await trio.serve_listeners(handle, [CappedListener(one, slots) for one in listeners],
                                   handler_nursery=handlers)


async def handshake(stream: trio.SocketStream, tls: ssl.SSLContext, timeout: float) -> trio.SSLStream | None:
    """The server side of the TLS handshake on `stream`, within `timeout` seconds: the TLS stream,
    or None when the client was refused (the stream is closed then; a refusal is the client's
    business, so it is logged at debug only, as dockerd's http server does)."""
    tls_stream = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
    peer = peer_of(stream)
    with trio.move_on_after(timeout) as waiting:
        try:
            await tls_stream.do_handshake()
            return tls_stream
        except trio.BrokenResourceError as exc:
            reason = exc.__cause__ or exc
            log.debug("Engine API: refused the TLS handshake of %s: %s", peer, reason)
            # OpenSSL wrote its alert ("certificate required", "unknown ca") into the stream's
            # outgoing buffer, which trio drops when the handshake breaks: send it, so the client
            # says why (as it does against dockerd) instead of "EOF". trio has no public way to it.
            outgoing = getattr(tls_stream, "_outgoing", None)
            alert = outgoing.read() if isinstance(outgoing, ssl.MemoryBIO) else b""
            if getattr(reason, "reason", None) == "HTTP_REQUEST":
                alert = PLAIN_HTTP_ANSWER
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                if alert:
                    await stream.send_all(alert)
    if waiting.cancelled_caught:
        log.debug("Engine API: %s did not finish its TLS handshake within %g s", peer, timeout)
    await trio.aclose_forcefully(tls_stream)
    return None


def peer_of(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "a client that went away"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_facts() -> dict:
    """What /info tells of this machine: CPUs, memory, kernel, architecture."""
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            memory = int(f.readline().split()[1]) * 1024
    uname = os.uname()
    return {"NCPU": os.cpu_count() or 1, "MemTotal": memory, "KernelVersion": uname.release,
            "Architecture": uname.machine}


def engine_app(router: Any, role: Callable[[], str]) -> Any:
    """The Engine API's app over `router` (imported at its first request: see lazy.py)."""
    from swarm.engineapi.app import EngineApp

    return EngineApp(functools.partial(router.dispatch, LOCAL_PEER), role, host_facts())


async def serve_router(router: Any, path: str, role: Callable[[], str], *, tcp: TcpApi | None = None,
                       task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """The daemon's hook: serve the Engine API over `router` (the daemon's local router, called
    in process as the local peer) on `path`, and on `tcp` if given. `role()`: "manager" or
    "worker" now (the /_ping Swarm header). A socket that cannot be made (or TLS files that no
    longer load) is logged, and the daemon goes on without it."""
    app = LazyApp(functools.partial(engine_app, router, role))
    async with trio.open_nursery() as nursery:
        if tcp is not None:
            await start_tcp(nursery, app, tcp)
        try:
            sock = bind_unix(path)
        except OSError as exc:
            log.error("the Engine API is not served: cannot listen on %s: %s", path, exc)
        else:
            await nursery.start(serve_socket, app, sock, path)
        task_status.started()


async def serve_tcp(router: Any, role: Callable[[], str], tcp: TcpApi, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """serve_router's TCP listener alone: for a daemon that was given its setting after it
    started (`swarm init --docker-api ...` on a running daemon outside any swarm)."""
    app = LazyApp(functools.partial(engine_app, router, role))
    async with trio.open_nursery() as nursery:
        await start_tcp(nursery, app, tcp)
        task_status.started()


async def start_tcp(nursery: trio.Nursery, app: Any, tcp: TcpApi) -> None:
    """Listen on `tcp` and serve `app` there in `nursery`; what fails is logged (the unix socket
    is served all the same). Plain TCP is warned about at each start, as dockerd does."""
    try:
        tls = None if tcp.insecure else server_context(tcp)
        listeners = await trio.open_tcp_listeners(tcp.port, host=tcp.host, backlog=BACKLOG)
    except (OSError, BadApiSetting) as exc:
        log.error("the Engine API is not served on %s: %s", tcp.addr, exc)
        return
    if tcp.insecure:
        log.warning("%s", insecure_warning(tcp))
    await nursery.start(serve_listeners, app, listeners, trio.Semaphore(MAX_CONNECTIONS), tls)
    log.info("the Engine API is served on %s%s", tcp.addr, "" if tls is None else " (mutual TLS)")

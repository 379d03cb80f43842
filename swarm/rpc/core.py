"""Request/response RPC over raft.framing frames, on trio.

How this works: the caller sends {"id", "method", "params", "deadline"} and
the server answers {"id", "ok": true, "result"} or {"id", "ok": false,
"error": {"code", "message"}}. The server reads frames in one task and runs
each request in its own task in a per-connection nursery, under the smaller of
the caller's deadline and the server's cap; at most `max_in_flight` run at
once (past that it stops reading, so a peer cannot spawn unbounded work), and
answers leave in any order under one send lock. The client multiplexes:
each call registers a waiter under a fresh id and sends; one reader task, in
a nursery the client owns, hands each answer to its waiter, and when the
connection ends every waiter gets "unavailable". Between nodes the transport
is TLS with client certificates and `identify` turns the verified certificate
into the Peer whose role the Router checks; the CLI reaches its own daemon
over a 0600 unix socket as role "local". Bad bytes, failed handshakes and
crashing handlers cost one connection (or one call), never the server.

Peers that have not authenticated (the node API accepts TLS without a client
certificate, because a joining node has none yet) are held to
`UNAUTHENTICATED` limits: a 64 KiB frame cap, a few calls at once, a deadline
for the first whole request and another for the next one whenever no call is
running, and one for every answer they are slow to read. Before the handshake
every connection counts as unauthenticated: `Admission` holds at most 16 per
remote address and a total derived from RLIMIT_NOFILE (read at each accept, so
a prlimit on the running daemon counts), so a flood is refused at accept and
never takes the file descriptors that the Raft journal needs. If accept itself
fails for lack of descriptors, the listener pauses and says so once.
"""
from __future__ import annotations

import errno
import itertools
import logging
import math
import os
import resource
import socket
import ssl
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from raft.framing import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, MalformedFrame, encode_frame

log = logging.getLogger(__name__)

ALL_ROLES = frozenset({"manager", "worker", "local"})
MAX_IN_FLIGHT = 64
MAX_DEADLINE = 60.0
HANDSHAKE_TIMEOUT = 5.0
MAX_UNAUTHENTICATED_PER_ADDRESS = 16
ACCEPT_BACKOFF = 0.1  # seconds between accept attempts while descriptors are exhausted
_RECV_SIZE = 65536
_LOST = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# accept() errors that mean "no descriptor or buffer for one more socket now"
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class RPCError(Exception):
    """An error answer: raised by handlers, and by clients when a call fails."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BadMessage(MalformedFrame):
    """A frame that decoded but is not a well-formed request or response."""


@dataclass(frozen=True)
class Peer:
    node_id: str
    role: str  # "manager" | "worker" | "local"
    cluster_id: str


LOCAL_PEER = Peer(node_id="local", role="local", cluster_id="")
Handler = Callable[[Peer, dict], Awaitable[Any]]


@dataclass(frozen=True)
class StreamLimits:
    """What one connection may cost the server once its handshake is done."""

    max_frame: int = DEFAULT_MAX_FRAME
    max_in_flight: int = MAX_IN_FLIGHT
    first_frame_timeout: float = math.inf  # from the handshake to the first whole request
    idle_timeout: float = math.inf         # with no call running, to the next whole request
    send_timeout: float = math.inf         # for the peer to take one answer off our hands


# A join request carries a CSR of about 1 KB; 64 KiB leaves room and decodes
# in a few milliseconds even if every byte is an empty container.
UNAUTHENTICATED = StreamLimits(max_frame=64 * 1024, max_in_flight=4, first_frame_timeout=5.0,
                               idle_timeout=5.0, send_timeout=5.0)


def connection_caps(nofile: int) -> tuple[int, int]:
    """(all TLS connections, those not yet authenticated) a server may hold with `nofile` descriptors.

    Half the descriptor table stays free for the Raft journal and transport,
    container shims and the CLI socket; unauthenticated peers get at most
    half of the rest, so a flood of them leaves room for the members."""
    total = max(16, min(nofile // 2, 4096))
    return total, max(8, min(total // 2, 1024))


def _nofile() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


class Admission:
    """Counts the connections a server holds and decides, before any byte is
    read, whether to hold one more (pure bookkeeping; the caller does the I/O).

    A connection is identified by a token of the caller's (its cancel scope).
    Over the per-address cap or the total cap the newcomer is refused; over
    the cap of unauthenticated connections the *oldest* one is dropped
    instead, so that a flood from many addresses cannot keep a member from
    finishing its handshake, which takes milliseconds, not seconds."""

    def __init__(self, per_address: int = MAX_UNAUTHENTICATED_PER_ADDRESS) -> None:
        self.per_address = per_address
        self.total = 0
        self._strangers: dict[Hashable, str] = {}  # token -> address, oldest first
        self._by_address: dict[str, int] = {}

    @property
    def unauthenticated(self) -> int:
        return len(self._strangers)

    def admit(self, token: Hashable, address: str, nofile: int) -> tuple[str | None, Hashable | None]:
        """Count a new connection from `address`: (why it is refused or None, token of a connection to drop or None)."""
        total_cap, unauth_cap = connection_caps(nofile)
        if self.total >= total_cap:
            return f"{self.total} connections are open, the most this node holds with {nofile} descriptors", None
        if self._by_address.get(address, 0) >= self.per_address:
            return f"{self.per_address} unauthenticated connections from this address are open already", None
        victim = next(iter(self._strangers)) if len(self._strangers) >= unauth_cap else None
        if victim is not None:
            self._forget(victim)  # it no longer counts; its own release comes when it has closed
        self.total += 1
        self._strangers[token] = address
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None, victim

    def authenticated(self, token: Hashable) -> None:
        """The connection presented a valid certificate: it no longer counts as a stranger's."""
        self._forget(token)

    def release(self, token: Hashable) -> None:
        self.total -= 1
        self._forget(token)

    def _forget(self, token: Hashable) -> None:
        address = self._strangers.pop(token, None)
        if address is None:
            return
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]


class _Throttled:
    """A warning logged at once, then at most once per `period` with a count (floods must not flood the log)."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._last = -math.inf
        self._held = 0

    def warning(self, now: float, msg: str, *args: Any) -> None:
        if now - self._last < self.period:
            self._held += 1
            return
        if self._held:
            msg += " (and %d more like it since the last report)"
            args = (*args, self._held)
        log.warning(msg, *args)
        self._last, self._held = now, 0


class Router:
    """Method name -> (handler, roles allowed to call it)."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[Handler, frozenset[str]]] = {}

    def route(self, name: str, handler: Handler | None = None, roles: Any = ALL_ROLES) -> Any:
        """Register `handler` for `name`; without a handler, return a decorator."""
        def register(fn: Handler) -> Handler:
            if name in self._routes:
                raise ValueError(f"method {name!r} is already registered")
            self._routes[name] = (fn, frozenset(roles))
            return fn
        return register if handler is None else register(handler)

    @property
    def methods(self) -> list[str]:
        return sorted(self._routes)

    async def dispatch(self, peer: Peer, method: str, params: dict) -> Any:
        if method not in self._routes:
            raise RPCError("unknown_method", f"unknown method {method!r}")
        handler, roles = self._routes[method]
        if peer.role not in roles:
            raise RPCError("forbidden", f"method {method!r} may not be called by a {peer.role} node")
        return await handler(peer, params)


# -- messages ------------------------------------------------------------------


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return str(cause) or type(cause).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _error(call_id: int, code: str, message: str) -> dict:
    return {"id": call_id, "ok": False, "error": {"code": code, "message": message}}


def _check_response(msg: Any) -> dict:
    if not isinstance(msg, dict) or not _is_int(msg.get("id")) or not isinstance(msg.get("ok"), bool):
        raise BadMessage("a response must be a map with an integer id and a boolean ok")
    err = msg.get("error")
    if not msg["ok"] and not (isinstance(err, dict) and isinstance(err.get("code"), str)
                              and isinstance(err.get("message"), str)):
        raise BadMessage("an error response must carry a code and a message")
    return msg


def _result(resp: dict) -> Any:
    if resp["ok"]:
        return resp.get("result")
    raise RPCError(resp["error"]["code"], resp["error"]["message"])


def _as_peer(who: Any) -> Peer:
    # identify may return a Peer or anything shaped like one (pki.NodeIdentity).
    if isinstance(who, Peer):
        return who
    return Peer(node_id=str(who.node_id), role=str(who.role), cluster_id=str(who.cluster_id))


# -- server --------------------------------------------------------------------


async def _answer(router: Router, peer: Peer, req: dict, max_deadline: float) -> dict:
    call_id, method = req["id"], req["method"]
    params, deadline = req.get("params"), req.get("deadline")
    params = {} if params is None else params
    if not isinstance(params, dict):
        return _error(call_id, "bad_request", "params must be a map")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or math.isnan(deadline)):
        return _error(call_id, "bad_request", "deadline must be a number of seconds or null")
    budget = max_deadline if deadline is None else max(0.0, min(float(deadline), max_deadline))
    try:
        with trio.move_on_after(budget) as scope:
            result = await router.dispatch(peer, method, params)
        if scope.cancelled_caught:
            return _error(call_id, "deadline", f"{method} did not finish within {budget:g} s")
        return {"id": call_id, "ok": True, "result": result}
    except RPCError as exc:
        return _error(call_id, str(exc.code), str(exc.message))
    except Exception:
        log.exception("handler for %s failed (caller %s, role %s)", method, peer.node_id, peer.role)
        return _error(call_id, "internal", f"internal error while handling {method}")


async def _serve_stream(router: Router, stream: trio.abc.Stream, peer: Peer, remote: str,
                        limits: StreamLimits, max_deadline: float) -> None:
    decoder = FrameDecoder(limits.max_frame)
    send_lock = trio.Lock()
    slots = trio.Semaphore(limits.max_in_flight)
    running = requests = 0
    # The next whole request is due by this scope's deadline; while a call runs
    # nothing is due (the peer waits for its answer).
    waiting = trio.CancelScope(deadline=trio.current_time() + limits.first_frame_timeout)

    async def run_call(req: dict) -> None:
        nonlocal running
        try:
            resp = await _answer(router, peer, req, max_deadline)
            try:
                frame = encode_frame(resp, limits.max_frame)
            except Exception as exc:  # unserialisable or oversized result
                log.error("cannot encode the answer to %s for %s: %s", req["method"], remote, exc)
                frame = encode_frame(_error(req["id"], "internal", f"the result of {req['method']} could not be encoded"))
            with trio.move_on_after(limits.send_timeout) as sending:
                async with send_lock:
                    await stream.send_all(frame)
            if sending.cancelled_caught:
                # A peer that does not read its answers would hold this call (and its slot) forever.
                log.warning("closing the connection from %s: it did not read an answer within %g s",
                            remote, limits.send_timeout)
                nursery.cancel_scope.cancel()
        except _LOST:
            pass  # the caller is gone; the reader notices and closes
        finally:
            slots.release()
            running -= 1
            if not running:
                waiting.deadline = trio.current_time() + limits.idle_timeout

    try:
        async with trio.open_nursery() as nursery:
            try:
                with waiting:
                    while data := await stream.receive_some(_RECV_SIZE):
                        for msg in decoder.feed(data):
                            if not (isinstance(msg, dict) and _is_int(msg.get("id"))
                                    and isinstance(msg.get("method"), str)):
                                raise BadMessage("a request must be a map with an integer id and a string method")
                            running += 1
                            requests += 1
                            waiting.deadline = math.inf
                            await slots.acquire()
                            nursery.start_soon(run_call, msg)
                    decoder.close()
                if waiting.cancelled_caught:
                    log.warning("closing the connection from %s: no whole request within %g s", remote,
                                limits.idle_timeout if requests else limits.first_frame_timeout)
            except FrameError as exc:
                log.warning("closing the connection from %s: %s", remote, exc)
            except _LOST as exc:
                log.debug("connection from %s lost: %s", remote, _why(exc))
            finally:
                nursery.cancel_scope.cancel()  # nobody is left to read the answers
    finally:
        await trio.aclose_forcefully(stream)


def _guarded(handle: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    # A bug in one connection must not take down serve_listeners.
    async def run(stream: Any) -> None:
        try:
            await handle(stream)
        except Exception:
            log.exception("unexpected error on an RPC connection")
            await trio.aclose_forcefully(stream)
    return run


async def _accept_loop(listener: trio.SocketListener, handle: Callable[[trio.SocketStream], Awaitable[None]],
                       what: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """trio.serve_listeners, but out of descriptors it pauses and says so once (not every 0.1 s)."""
    short = False
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            try:
                conn = await listener.accept()
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    raise
                if not short:
                    log.warning("%s: no descriptor for a new connection (%s); not accepting until one is free",
                                what, os.strerror(exc.errno))
                    short = True
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            if short:
                log.warning("%s: accepting connections again", what)
                short = False
            nursery.start_soon(_guarded(handle), conn)


async def serve_tls(
    router: Router, host: str | None, port: int, ssl_context: ssl.SSLContext,
    identify: Callable[[Any], Any], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    max_frame: int = DEFAULT_MAX_FRAME, max_deadline: float = MAX_DEADLINE,
    max_in_flight: int = MAX_IN_FLIGHT, handshake_timeout: float = HANDSHAKE_TIMEOUT,
    unauthenticated: StreamLimits = UNAUTHENTICATED, admission: Admission | None = None,
    nofile: Callable[[], int] = _nofile,
) -> None:
    """Serve `router` over TLS until cancelled; task_status gets the bound port.

    After the handshake `identify(ssl_stream)` (anything with getpeercert())
    returns a Peer, or an object with node_id/role/cluster_id such as
    pki.peer_identity's; if it raises, the connection is refused. A peer
    that presented a verified certificate gets `max_frame`/`max_in_flight`
    and no read deadlines; one without (possible when `ssl_context` makes the
    certificate optional) gets the `unauthenticated` limits.
    """
    admission = admission or Admission()
    trusted = StreamLimits(max_frame=max_frame, max_in_flight=max_in_flight)
    refusals = _Throttled()

    async def handle(tcp: trio.SocketStream) -> None:
        try:
            address = str(tcp.socket.getpeername()[0])
            remote = "%s:%s" % tcp.socket.getpeername()[:2]
        except OSError:
            address = remote = "an unknown address"
        scope = trio.CancelScope()
        why, victim = admission.admit(scope, address, nofile())
        if why is not None:
            refusals.warning(trio.current_time(), "refused %s at once: %s", remote, why)
            await trio.aclose_forcefully(tcp)
            return
        if victim is not None:
            refusals.warning(trio.current_time(), "dropped the oldest unauthenticated connection "
                             "to make room for %s: the most this node holds are open", remote)
            victim.cancel()
        stream = trio.SSLStream(tcp, ssl_context, server_side=True, https_compatible=True)
        authenticated = False
        try:
            with scope:
                try:
                    with trio.fail_after(handshake_timeout):
                        await stream.do_handshake()
                    if stream.getpeercert(binary_form=True) is not None:
                        authenticated = True
                        admission.authenticated(scope)
                    peer = _as_peer(identify(stream))
                except trio.TooSlowError:
                    log.warning("refused %s: TLS handshake not done within %g s", remote, handshake_timeout)
                except trio.BrokenResourceError as exc:
                    log.warning("refused %s: TLS handshake failed: %s", remote, _why(exc))
                except Exception as exc:
                    log.warning("refused %s: cannot identify its certificate: %s", remote, exc)
                else:
                    limits = trusted if authenticated else unauthenticated
                    return await _serve_stream(router, stream, peer, f"{remote} ({peer.role} {peer.node_id})",
                                               limits, max_deadline)
        finally:
            admission.release(scope)
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("RPC listening on %s:%d (TLS)", host or "*", bound)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            await nursery.start(_accept_loop, listener, handle, f"RPC port {bound}")
        task_status.started(bound)


async def _claim_socket_path(path: str) -> None:
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = await trio.open_unix_socket(path)
    except FileNotFoundError:
        return
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: left by a crashed daemon
        return
    await probe.aclose()
    raise OSError(errno.EADDRINUSE, f"another swarm daemon is already listening on {path}")


async def serve_unix(
    router: Router, path: str | os.PathLike[str], *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED, peer: Peer = LOCAL_PEER,
    max_frame: int = DEFAULT_MAX_FRAME, max_deadline: float = MAX_DEADLINE,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> None:
    """Serve `router` on a mode-0600 unix socket until cancelled; every caller is `peer`."""
    path = os.fspath(path)
    await _claim_socket_path(path)
    # Bind inside a private 0700 directory, chmod, then rename into place: the
    # socket is never reachable with looser modes, and no process-wide umask.
    private = tempfile.mkdtemp(prefix=".s", dir=os.path.dirname(os.path.abspath(path)))
    staged = os.path.join(private, "s")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(staged)
        os.chmod(staged, 0o600)
        sock.listen(128)
        os.rename(staged, path)
        inode = os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise
    finally:
        if os.path.lexists(staged):
            os.unlink(staged)
        os.rmdir(private)

    limits = StreamLimits(max_frame=max_frame, max_in_flight=max_in_flight)

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_stream(router, stream, peer, f"unix:{path}", limits, max_deadline)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(_accept_loop, trio.SocketListener(sock), handle, f"unix:{path}")
            task_status.started(path)
    finally:
        sock.close()
        try:  # remove the file only if it is still ours
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass


# -- client --------------------------------------------------------------------


@dataclass
class _Waiter:
    event: trio.Event = field(default_factory=trio.Event)
    response: dict | None = None
    error: RPCError | None = None


def _unreachable(name: str, exc: BaseException, timeout: float, unix: bool = False) -> RPCError:
    if isinstance(exc, trio.TooSlowError):
        return RPCError("unavailable", f"could not connect to {name} within {timeout:g} s")
    if unix and isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        return RPCError("unavailable", f"the swarm daemon is not running (no socket at {name})")
    if isinstance(exc, trio.BrokenResourceError):
        return RPCError("unavailable", f"TLS handshake with {name} failed: {_why(exc)}")
    return RPCError("unavailable", f"could not connect to {name}: {getattr(exc, 'strerror', None) or exc}")


class RPCClient:
    """One connection, many concurrent calls. Enter it with `async with` (which
    owns the reader's nursery) or start `client.run` in a nursery of yours."""

    def __init__(self, stream: trio.abc.Stream, name: str, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._stream = stream
        self.name = name
        self._max_frame = max_frame
        self._send_lock = trio.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._ids = itertools.count(1)
        self._closed: str | None = None
        self._running = False
        self._reader_scope: trio.CancelScope | None = None
        self._stack: AsyncExitStack | None = None

    @classmethod
    async def connect_tls(cls, host: str, port: int, ssl_context: ssl.SSLContext, *, timeout: float = 5.0,
                          server_hostname: str | None = None, max_frame: int = DEFAULT_MAX_FRAME) -> RPCClient:
        if server_hostname is None and ssl_context.check_hostname:
            server_hostname = host
        try:
            with trio.fail_after(timeout):
                tcp = await trio.open_tcp_stream(host, port)
                stream = trio.SSLStream(tcp, ssl_context, server_hostname=server_hostname, https_compatible=True)
                try:
                    await stream.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(tcp)
                    raise
        except (trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
            raise _unreachable(f"{host}:{port}", exc, timeout) from None
        return cls(stream, f"{host}:{port}", max_frame=max_frame)

    @classmethod
    async def connect_unix(cls, path: str | os.PathLike[str], *, timeout: float = 5.0,
                           max_frame: int = DEFAULT_MAX_FRAME) -> RPCClient:
        path = os.fspath(path)
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_unix_socket(path)
        except (trio.TooSlowError, OSError) as exc:
            raise _unreachable(path, exc, timeout, unix=True) from None
        return cls(stream, path, max_frame=max_frame)

    @property
    def ssl_object(self) -> Any:
        """For TLS, an object with getpeercert() to check who the server is."""
        return self._stream if isinstance(self._stream, trio.SSLStream) else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read answers until the connection ends or the client is closed."""
        if self._running:
            raise RuntimeError("this client's reader is already running")
        self._running = True
        decoder = FrameDecoder(self._max_frame)
        reason = f"the connection to {self.name} was closed"
        try:
            with trio.CancelScope() as self._reader_scope:
                task_status.started()
                while data := await self._stream.receive_some(_RECV_SIZE):
                    for msg in decoder.feed(data):
                        resp = _check_response(msg)
                        waiter = self._pending.get(resp["id"])
                        if waiter is not None and waiter.response is None:
                            waiter.response = resp
                            waiter.event.set()
                decoder.close()
                reason = f"{self.name} closed the connection"
        except FrameError as exc:
            reason = f"{self.name} sent a bad frame: {exc}"
            log.warning("closing the connection: %s", reason)
        except _LOST as exc:
            reason = f"lost the connection to {self.name} ({_why(exc)})"
        finally:
            self._shut(reason)
            await trio.aclose_forcefully(self._stream)

    def _shut(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        for waiter in self._pending.values():
            if waiter.response is None and waiter.error is None:
                waiter.error = RPCError("unavailable", self._closed)
                waiter.event.set()
        if self._reader_scope is not None:
            self._reader_scope.cancel()

    async def call(self, method: str, params: dict | None = None, timeout: float = 5.0) -> Any:
        """Call `method` and return its result; raises RPCError."""
        if not self._running:
            raise RuntimeError("use 'async with client' or start client.run in a nursery before calling")
        if self._closed is not None:
            raise RPCError("unavailable", self._closed)
        call_id = next(self._ids)
        try:
            frame = encode_frame({"id": call_id, "method": method, "params": params or {},
                                  "deadline": timeout}, self._max_frame)
        except FrameError as exc:
            raise RPCError("bad_request", f"cannot send {method}: {exc}") from None
        waiter = self._pending[call_id] = _Waiter()
        try:
            with trio.move_on_after(timeout):
                async with self._send_lock:
                    if self._closed is not None:
                        raise RPCError("unavailable", self._closed)
                    try:
                        await self._stream.send_all(frame)
                    except _LOST as exc:
                        self._shut(f"lost the connection to {self.name} ({_why(exc)})")
                    except BaseException:
                        # Interrupted mid-frame: the framing of this stream is lost.
                        self._shut(f"a call to {self.name} was interrupted while sending")
                        raise
                await waiter.event.wait()
        finally:
            del self._pending[call_id]
        if waiter.error is not None:
            raise waiter.error
        if waiter.response is None:
            raise RPCError("deadline", f"{method} got no answer from {self.name} within {timeout:g} s")
        return _result(waiter.response)

    async def aclose(self) -> None:
        self._shut(f"the connection to {self.name} was closed")
        await trio.aclose_forcefully(self._stream)

    async def __aenter__(self) -> RPCClient:
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        try:
            await nursery.start(self.run)
        except BaseException:
            # Cancelled while the reader starts: exit its nursery here, since
            # no __aexit__ will (an open nursery corrupts trio's nursery stack).
            self._shut(f"the connection to {self.name} was closed")
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        try:
            await self.aclose()
        finally:
            # aclose cancelled the reader: exit its nursery cleanly, so that the
            # body's own exception propagates unwrapped (no ExceptionGroup).
            # Also when aclose itself was cancelled: a nursery left open here
            # corrupts trio's nursery stack ("Nursery stack corrupted").
            if stack is not None:
                await stack.aclose()


class ClientPool:
    """One open mutual-TLS connection per address, shared by every call to it.

    A TLS handshake costs milliseconds of CPU on both sides; a node that
    heartbeats, long-polls and reports status opened one per call. The pool
    keeps a connection (its reader runs in `nursery`) and reconnects once when
    a kept connection turns out to be gone. `reset()` closes them all: after a
    certificate renewal new calls must present the new certificate."""

    def __init__(self, ssl_context: ssl.SSLContext, nursery: trio.Nursery, *, max_open: int = 16) -> None:
        self._ctx = ssl_context
        self._nursery = nursery
        self._max_open = max_open
        self._clients: dict[tuple[str, int], RPCClient] = {}
        self._locks: dict[tuple[str, int], trio.Lock] = {}

    async def _client(self, host: str, port: int, timeout: float) -> RPCClient:
        key = (host, port)
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            client = self._clients.get(key)
            if client is not None and client._closed is None:
                return client
            if len(self._clients) >= self._max_open:
                for stale in list(self._clients)[: len(self._clients) - self._max_open + 1]:
                    await self._clients.pop(stale).aclose()
            client = await RPCClient.connect_tls(host, port, self._ctx, timeout=timeout)
            await self._nursery.start(client.run)
            self._clients[key] = client
            return client

    async def call(self, host: str, port: int, method: str, params: dict | None = None,
                   timeout: float = 5.0) -> Any:
        for attempt in (1, 2):
            client = await self._client(host, port, timeout)
            try:
                return await client.call(method, params or {}, timeout=timeout)
            except RPCError as exc:
                if exc.code == "deadline":
                    # No answer in time: the link may be dead (a partition keeps a TCP
                    # connection open but silent). The next call connects afresh.
                    if self._clients.get((host, port)) is client:
                        del self._clients[(host, port)]
                    await client.aclose()
                    raise
                if exc.code != "unavailable" or client._closed is None:
                    raise
                if self._clients.get((host, port)) is client:
                    del self._clients[(host, port)]
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def reset(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


@asynccontextmanager
async def open_client_tls(host: str, port: int, ssl_context: ssl.SSLContext, *,
                          timeout: float = 5.0, **kwargs: Any) -> AsyncIterator[RPCClient]:
    async with await RPCClient.connect_tls(host, port, ssl_context, timeout=timeout, **kwargs) as client:
        yield client


@asynccontextmanager
async def open_client_unix(path: str | os.PathLike[str], *, timeout: float = 5.0,
                           **kwargs: Any) -> AsyncIterator[RPCClient]:
    async with await RPCClient.connect_unix(path, timeout=timeout, **kwargs) as client:
        yield client


def call_unix_sync(path: str | os.PathLike[str], method: str, params: dict | None = None,
                   timeout: float = 5.0, *, max_frame: int = DEFAULT_MAX_FRAME) -> Any:
    """One blocking call to the local daemon, for the CLI (no trio needed)."""
    path = os.fspath(path)
    try:
        frame = encode_frame({"id": 1, "method": method, "params": params or {}, "deadline": timeout}, max_frame)
    except FrameError as exc:
        raise RPCError("bad_request", f"cannot send {method}: {exc}") from None
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise RPCError("unavailable", f"the swarm daemon is not running (no socket at {path})") from None
        sock.sendall(frame)
        decoder = FrameDecoder(max_frame)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not (data := sock.recv(_RECV_SIZE)):
                decoder.close()
                raise RPCError("unavailable", f"the swarm daemon at {path} closed the connection without answering")
            for msg in decoder.feed(data):
                if (resp := _check_response(msg))["id"] == 1:
                    return _result(resp)
        raise TimeoutError
    except TimeoutError:
        raise RPCError("deadline", f"{method} got no answer from the swarm daemon within {timeout:g} s") from None
    except FrameError as exc:
        raise RPCError("unavailable", f"the swarm daemon at {path} sent a bad reply: {exc}") from None
    except OSError as exc:
        raise RPCError("unavailable", f"cannot reach the swarm daemon at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()

"""The RPC server: serve a Router over mutual TLS (the node API) or a 0600 unix socket (the local API).

How this works: the server reads frames in one task and runs each request in
its own task in a per-connection nursery, under the smaller of the caller's
deadline and the server's cap; at most `max_in_flight` run at once (past that
it stops reading, so a peer cannot spawn unbounded work), and answers leave in
any order under one send lock. Between nodes the transport is TLS with client
certificates and `identify` turns the verified certificate into the Peer whose
role the Router checks; the CLI reaches its own daemon over a 0600 unix socket
as role "local". Bad bytes, failed handshakes and crashing handlers cost one
connection (or one call), never the server. Connections are admitted and
limited as swarm.rpc.limits says; if accept itself fails for lack of
descriptors, the listener pauses and says so once.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import socket
import ssl
import stat
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from raft.framing import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, encode_frame
from swarm.rpc.limits import (HANDSHAKE_TIMEOUT, MAX_DEADLINE, MAX_IN_FLIGHT, UNAUTHENTICATED, Admission,
                              StreamLimits, nofile_limit)
from swarm.rpc.client import LOST, send_in_pieces
from swarm.rpc.messages import LOCAL_PEER, RECV_SIZE, BadMessage, Peer, RPCError, as_peer, cause_of, error_answer, \
    is_int
from swarm.rpc.router import Router

log = logging.getLogger(__name__)

ACCEPT_BACKOFF = 0.1  # seconds between accept attempts while descriptors are exhausted
# accept() errors that mean "no descriptor or buffer for one more socket now"
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


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



# Answers are packed by msgspec: the same bytes as msgpack for plain data, and a part that is
# msgpack already (`msgspec.Raw`: a record as the store holds it) goes in unchanged, with no
# decode and encode again. (A CLI command frames its requests with msgpack alone: this module
# is the daemon's.)
pack_answer = msgspec.msgpack.Encoder().encode


async def _answer(router: Router, peer: Peer, req: dict, max_deadline: float) -> dict:
    call_id, method = req["id"], req["method"]
    params, deadline = req.get("params"), req.get("deadline")
    params = {} if params is None else params
    if not isinstance(params, dict):
        return error_answer(call_id, "bad_request", "params must be a map")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or math.isnan(deadline)):
        return error_answer(call_id, "bad_request", "deadline must be a number of seconds or null")
    budget = max_deadline if deadline is None else max(0.0, min(float(deadline), max_deadline))
    try:
        with trio.move_on_after(budget) as scope:
            result = await router.dispatch(peer, method, params)
        if scope.cancelled_caught:
            return error_answer(call_id, "deadline", f"{method} did not finish within {budget:g} s")
        return {"id": call_id, "ok": True, "result": result}
    except RPCError as exc:
        return error_answer(call_id, str(exc.code), str(exc.message))
    except Exception:
        log.exception("handler for %s failed (caller %s, role %s)", method, peer.node_id, peer.role)
        return error_answer(call_id, "internal", f"internal error while handling {method}")


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
                frame = encode_frame(resp, limits.max_frame, pack_answer)
            except Exception as exc:  # unserialisable or oversized result
                log.error("cannot encode the answer to %s for %s: %s", req["method"], remote, exc)
                frame = encode_frame(error_answer(req["id"], "internal", f"the result of {req['method']} could not be encoded"))
            with trio.move_on_after(limits.send_timeout) as sending:
                async with send_lock:
                    await send_in_pieces(stream, frame)
            if sending.cancelled_caught:
                # A peer that does not read its answers would hold this call (and its slot) forever.
                log.warning("closing the connection from %s: it did not read an answer within %g s",
                            remote, limits.send_timeout)
                nursery.cancel_scope.cancel()
        except LOST:
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
                    while data := await stream.receive_some(RECV_SIZE):
                        for msg in decoder.feed(data):
                            if not (isinstance(msg, dict) and is_int(msg.get("id"))
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
            except LOST as exc:
                log.debug("connection from %s lost: %s", remote, cause_of(exc))
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
    nofile: Callable[[], int] = nofile_limit,
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
                    peer = as_peer(identify(stream))
                except trio.TooSlowError:
                    log.warning("refused %s: TLS handshake not done within %g s", remote, handshake_timeout)
                except trio.BrokenResourceError as exc:
                    log.warning("refused %s: TLS handshake failed: %s", remote, cause_of(exc))
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

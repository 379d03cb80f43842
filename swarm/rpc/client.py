"""The RPC client: one connection, many concurrent calls; a pool of kept
TLS connections; and (from swarm.rpc.blocking) one blocking call for the CLI.

How this works: each call registers a waiter under a fresh id and sends; one
reader task, in a nursery the client owns, hands each answer to its waiter,
and when the connection ends every waiter gets "unavailable".
"""
from __future__ import annotations

import itertools
import logging
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from raft.framing import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, encode_frame
from swarm.rpc.blocking import call_unix_sync
from swarm.rpc.messages import RECV_SIZE, RPCError, cause_of, check_response, result_of

__all__ = ["LOST", "ClientPool", "RPCClient", "call_unix_sync", "open_client_tls", "open_client_unix"]

log = logging.getLogger(__name__)

# What a lost connection raises: the call (or the connection) ends, the server goes on.
LOST = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# A frame goes to a TLS stream in pieces of at most this many bytes (a TLS record's most). trio's
# SSLStream encrypts what one send_all gets into an OpenSSL memory buffer of its connection, which
# keeps the size of the largest write for as long as the connection lives: a leader's 80 KB answer
# to each of 1,000 nodes held 82 KiB a connection, where 16 KiB pieces hold 20.
SEND_PIECE = 16 * 1024


async def send_in_pieces(stream: trio.abc.SendStream, data: bytes) -> None:
    """`stream.send_all(data)`, in pieces of at most SEND_PIECE bytes."""
    view = memoryview(data)
    for start in range(0, len(view), SEND_PIECE):
        await stream.send_all(view[start:start + SEND_PIECE])


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
        return RPCError("unavailable", f"TLS handshake with {name} failed: {cause_of(exc)}")
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
                while data := await self._stream.receive_some(RECV_SIZE):
                    for msg in decoder.feed(data):
                        resp = check_response(msg)
                        waiter = self._pending.get(resp["id"])
                        if waiter is not None and waiter.response is None:
                            waiter.response = resp
                            waiter.event.set()
                decoder.close()
                reason = f"{self.name} closed the connection"
        except FrameError as exc:
            reason = f"{self.name} sent a bad frame: {exc}"
            log.warning("closing the connection: %s", reason)
        except LOST as exc:
            reason = f"lost the connection to {self.name} ({cause_of(exc)})"
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
                        await send_in_pieces(self._stream, frame)
                    except LOST as exc:
                        self._shut(f"lost the connection to {self.name} ({cause_of(exc)})")
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
        return result_of(waiter.response)

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

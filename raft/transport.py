"""pysyncobj transport over mutual TLS 1.3 with msgpack frames.

How it works. pysyncobj's TCPTransport keeps the connection bookkeeping
(who dials whom, reconnects, node lookup); this subclass replaces what
crosses the wire:
- `TlsConnection` stands in for pysyncobj's TcpConnection on the same
  non-blocking poller: TCP connect, TLS handshake (both sides present
  certificates of the cluster CA), then frames from `raft.framing`. Nothing
  is ever unpickled.
- After the handshake `identify(ssl_object)` (given by the owner) returns the
  peer's node ID or raises; it enforces the manager role and the cluster.
  The dialler also checks that the server is the node it meant to reach.
- A peer's first frame names it (`node_id@host:port`); the name must belong
  to a cluster member and its node ID must be the certificate's CN. Readonly
  peers and pysyncobj's utility commands (add/remove/status/transfer from the
  network) are refused.
- Every incoming message is checked against the shape pysyncobj expects,
  chunked "transmission" entries (which pysyncobj unpickles) are refused,
  and AppendEntries are rewritten by `raft.appendfix` so acknowledged entries
  are never deleted.
- Acknowledgements (`next_node_idx`) are held until the end of the tick,
  when one fdatasync covers every entry appended in it (group commit); the
  same flush precedes the leader's next commit computation, which counts
  its own log.
- Every connection sends a keepalive ping each `ping_interval`, so idle
  follower-follower links stay up and the first RequestVote is not lost.
- Accepted connections that have not named themselves yet (still in the
  handshake, or before their first frame) are bounded: a few per remote
  address and a total derived from RLIMIT_NOFILE, the oldest dropped first,
  so a flood of bare TCP connections can never take the descriptors the
  journal needs (the journal stops the node when it cannot write). Out of
  descriptors, the listener pauses until the next tick instead of spinning.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import resource
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable

import raft.inet_fix  # noqa: F401  (before pysyncobj: see there)
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from raft import framing
from raft.appendfix import Backup, plan_append

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
Identify = Callable[[ssl.SSLObject], str]
MAX_UNNAMED_PER_ADDRESS = 4  # a member needs one; a few cover reconnects
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def unnamed_cap(nofile: int) -> int:
    """How many accepted, not yet named connections the Raft port holds with `nofile` descriptors.

    A Raft group has a handful of members; the RPC port (swarm.rpc.server) takes at
    most half the table, this at most a sixteenth."""
    return max(8, min(64, nofile // 16))


def _nofile() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


@dataclass
class TlsSettings:
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    identify: Identify              # peer certificate -> node ID, raises if not allowed
    max_frame: int = framing.DEFAULT_MAX_FRAME
    ping_interval: float = 1.0


def node_id_of(name: str) -> str:
    return name.split("@", 1)[0]


class TlsConnection:
    """A TLS connection on pysyncobj's poller with TcpConnection's interface."""

    def __init__(self, poller: Any, settings: TlsSettings, timeout: float,
                 sock: socket.socket | None = None, expected_id: str | None = None,
                 on_security_event: Callable[[str], None] | None = None) -> None:
        self.sendRandKey = None   # pysyncobj's encryptor hooks; unused
        self.recvRandKey = None
        self.encryptor = None
        self._poller = poller
        self._settings = settings
        self._timeout = timeout
        self._expected_id = expected_id
        self._on_security_event = on_security_event or (lambda msg: None)
        self._on_connected: Callable[[], None] | None = None
        self._on_message: Callable[[Any], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None
        self._sock: Any = None
        self._fileno: int | None = None
        self._state = CONNECTION_STATE.DISCONNECTED
        self._handshaking = False
        self._wbuf = bytearray()
        self._retry_len = 0
        self._decoder = framing.FrameDecoder(settings.max_frame)
        self._last_read = time.monotonic()
        self._last_ping = 0.0
        self.peer_id: str | None = None
        self.remote = ""
        self.address = ""
        self.accepted_at = time.monotonic()
        if sock is not None:  # accepted: start the server-side handshake
            peer = sock.getpeername()
            self.address, self.remote = str(peer[0]), "%s:%s" % peer[:2]
            self._start_tls(sock, server_side=True)

    # -- TcpConnection interface -------------------------------------------------
    def setOnConnectedCallback(self, cb: Callable[[], None]) -> None:
        self._on_connected = cb

    def setOnMessageReceivedCallback(self, cb: Callable[[Any], None]) -> None:
        self._on_message = cb

    def setOnDisconnectedCallback(self, cb: Callable[[], None]) -> None:
        self._on_disconnected = cb

    @property
    def state(self) -> int:
        return self._state

    def fileno(self) -> int | None:
        return self._fileno

    def getSendBufferSize(self) -> int:
        return len(self._wbuf)

    def connect(self, host: str, port: int) -> bool:
        if host is None:
            return False
        self._reset()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.remote = f"{host}:{port}"
        try:
            sock.connect((host, port))
        except OSError as exc:
            if exc.errno not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                sock.close()
                return False
        self._sock = sock
        self._fileno = sock.fileno()
        self._state = CONNECTION_STATE.CONNECTING
        self._last_read = time.monotonic()
        self._poller.subscribe(self._fileno, self._on_event,
                               POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)
        return True

    def send(self, message: Any) -> None:
        if self._state == CONNECTION_STATE.DISCONNECTED:
            return
        try:
            self._wbuf += framing.encode_frame(message, self._settings.max_frame)
        except framing.FrameTooLarge as exc:
            log.error("not sending a Raft message to %s: %s", self.remote, exc)
            return
        if self._state == CONNECTION_STATE.CONNECTED:
            self._flush_writes()
            self._resubscribe()

    def disconnect(self) -> None:
        notify = self._on_disconnected is not None and self._state != CONNECTION_STATE.DISCONNECTED
        self._reset()
        if notify:
            self._on_disconnected()

    # -- internals -------------------------------------------------------------
    def _reset(self) -> None:
        if self._fileno is not None:
            self._poller.unsubscribe(self._fileno)
            self._fileno = None
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._state = CONNECTION_STATE.DISCONNECTED
        self._handshaking = False
        self._wbuf = bytearray()
        self._retry_len = 0
        self._decoder = framing.FrameDecoder(self._settings.max_frame)
        self.peer_id = None

    def _refuse(self, why: str) -> None:
        self._on_security_event(f"refused Raft connection {self.remote}: {why}")
        self.disconnect()

    def _start_tls(self, sock: socket.socket, server_side: bool) -> None:
        ctx = self._settings.server_context if server_side else self._settings.client_context
        self._sock = ctx.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=False)
        self._fileno = self._sock.fileno()
        self._state = CONNECTION_STATE.CONNECTING
        self._handshaking = True
        self._last_read = time.monotonic()
        self._poller.subscribe(self._fileno, self._on_event,
                               POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)

    def _resubscribe(self) -> None:
        if self._fileno is None:
            return
        mask = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        if self._wbuf or self._handshaking:
            mask |= POLL_EVENT_TYPE.WRITE
        self._poller.subscribe(self._fileno, self._on_event, mask)

    def check_timeout(self, now: float) -> None:
        if self._state != CONNECTION_STATE.DISCONNECTED and now - self._last_read > self._timeout:
            if self._state != CONNECTION_STATE.CONNECTED:
                self._on_security_event(f"Raft connection {self.remote}: handshake timed out")
            self.disconnect()
        elif self._state == CONNECTION_STATE.CONNECTED and now - self._last_ping >= self._settings.ping_interval:
            self._last_ping = now
            self.send({"type": "ping"})

    def _on_event(self, descr: int, event: int) -> None:
        if descr != self._fileno:
            self._poller.unsubscribe(descr)
            return
        if event & POLL_EVENT_TYPE.ERROR:
            self.disconnect()
            return
        if self._state == CONNECTION_STATE.CONNECTING and not self._handshaking:
            if self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.disconnect()
                return
            raw = self._sock
            self._poller.unsubscribe(self._fileno)
            self._sock = None
            self._start_tls(raw, server_side=False)
        if self._handshaking:
            self._continue_handshake()
            if self._handshaking or self._state != CONNECTION_STATE.CONNECTED:
                return
        if event & POLL_EVENT_TYPE.WRITE:
            self._flush_writes()
        if self._state == CONNECTION_STATE.CONNECTED:
            self._read_all()
        self._resubscribe()

    def _continue_handshake(self) -> None:
        try:
            self._sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (ssl.SSLError, OSError) as exc:
            self._refuse(f"TLS handshake failed: {exc}")
            return
        self._handshaking = False
        try:
            peer = self._settings.identify(self._sock)
        except Exception as exc:
            self._refuse(str(exc))
            return
        if self._expected_id is not None and peer != self._expected_id:
            self._refuse(f"expected node {self._expected_id}, certificate says {peer}")
            return
        self.peer_id = peer
        self._state = CONNECTION_STATE.CONNECTED
        self._last_read = time.monotonic()
        if self._on_connected is not None:
            self._on_connected()

    def _flush_writes(self) -> None:
        while self._wbuf and self._sock is not None:
            size = self._retry_len or min(len(self._wbuf), CHUNK)
            try:
                sent = self._sock.send(self._wbuf[:size])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self._retry_len = size  # OpenSSL wants the identical chunk again
                return
            except BlockingIOError:
                return
            except (ssl.SSLError, OSError):
                self.disconnect()
                return
            self._retry_len = 0
            del self._wbuf[:sent]

    def _read_all(self) -> None:
        # Drain OpenSSL's buffer: decrypted bytes may wait there with no new
        # socket event to announce them.
        while self._sock is not None:
            try:
                data = self._sock.recv(CHUNK)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except (ssl.SSLError, OSError):
                self.disconnect()
                return
            if not data:
                self.disconnect()
                return
            self._last_read = time.monotonic()
            try:
                messages = self._decoder.feed(data)
            except framing.FrameError as exc:
                self._refuse(str(exc))
                return
            for message in messages:
                if isinstance(message, dict) and message.get("type") == "ping":
                    continue
                if self._on_message is not None:
                    self._on_message(message)
                if self._state != CONNECTION_STATE.CONNECTED:
                    return


class TlsServer:
    """Listening socket on pysyncobj's poller; hands accepted sockets to TLS."""

    def __init__(self, poller: Any, host: str, port: int, on_accept: Callable[[socket.socket], None]) -> None:
        self._poller = poller
        self._host = host
        self._port = int(port)
        self._on_accept = on_accept
        self._sock: socket.socket | None = None
        self._paused = False

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        try:
            sock.bind((self._host, self._port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._poller.subscribe(sock.fileno(), self._on_event, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)

    def unbind(self) -> None:
        if self._sock is not None:
            if not self._paused:
                self._poller.unsubscribe(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._paused = False

    def resume(self) -> None:
        """Listen again after a pause for lack of descriptors (called each tick)."""
        if self._paused and self._sock is not None:
            self._paused = False
            self._poller.subscribe(self._sock.fileno(), self._on_event, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)

    def _on_event(self, descr: int, event: int) -> None:
        if self._sock is None:
            return
        for _ in range(64):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    # The pending connection keeps the socket readable: polling it
                    # now would spin (and log) until a descriptor is free.
                    log.warning("Raft listener: no descriptor for a new connection (%s); "
                                "pausing until the next tick", os.strerror(exc.errno))
                    self._poller.unsubscribe(self._sock.fileno())
                    self._paused = True
                else:
                    log.warning("Raft listener accept failed: %s", exc)
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(False)
            self._on_accept(conn)


_INT = int


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SCHEMAS: dict[str, dict[str, tuple]] = {
    "request_vote": {"term": (_INT,), "last_log_index": (_INT,), "last_log_term": (_INT,)},
    "response_vote": {"term": (_INT,)},
    "timeout_now": {"term": (_INT,)},
    "next_node_idx": {"next_node_idx": (_INT,), "reset": (bool,), "success": (bool,)},
    "append_entries": {"term": (_INT,), "commit_index": (_INT,)},
    "apply_command": {"command": (bytes,)},
    "apply_command_response": {"request_id": (_INT,)},
}
REGULAR, NO_OP, MEMBERSHIP = 0, 1, 2


def check_message(message: Any) -> str:
    """'' if `message` has the shape pysyncobj expects, else why not."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "not a Raft message"
    schema = _SCHEMAS.get(message["type"])
    if schema is None:
        return f"unknown message type {message['type']!r}"
    for key, types in schema.items():
        value = message.get(key)
        if not isinstance(value, types) or (types == (_INT,) and isinstance(value, bool)):
            return f"{message['type']} needs {key}"
    kind = message["type"]
    if kind == "append_entries":
        if "transmission" in message:
            return "chunked entries are not accepted"
        entries = message.get("entries", [])
        if not isinstance(entries, list):
            return "entries must be a list"
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], bytes) and entry[0]
                    and entry[0][0] in (REGULAR, NO_OP, MEMBERSHIP)
                    and _is_int(entry[1]) and _is_int(entry[2])):
                return "malformed log entry"
        if "prevLogIdx" in message:
            for key in ("prevLogIdx", "prevLogTerm"):
                if message[key] is not None and not _is_int(message[key]):
                    return f"append_entries needs {key}"
        serialized = message.get("serialized")
        if serialized is not None and serialized is not False:
            if not (isinstance(serialized, list) and len(serialized) == 3 and isinstance(serialized[0], bytes)
                    and isinstance(serialized[1], bool) and isinstance(serialized[2], bool)):
                return "malformed snapshot chunk"
    elif kind == "apply_command":
        command = message["command"]
        if not command or command[0] not in (REGULAR, MEMBERSHIP):
            return "only transactions and membership changes may be forwarded"
        if "request_id" in message and not _is_int(message["request_id"]):
            return "apply_command needs request_id"
    elif kind == "apply_command_response":
        for key in ("error", "log_idx", "log_term"):
            if key in message and not _is_int(message[key]):
                return f"apply_command_response needs {key}"
    return ""


class TlsTransport(TCPTransport):
    """pysyncobj Transport: TLS + msgpack, identity-bound, pickle-free."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any, *, settings: TlsSettings,
                 journal: Any, on_security_event: Callable[[str], None]) -> None:
        self._settings = settings
        self._journal = journal
        self._security_event = on_security_event
        self._pending_acks: list[tuple[Any, dict]] = []
        self.append_rewrites = 0
        self._backup: Backup | None = None   # the back-up hint given to the leader (raft.appendfix)
        self._refusal_logged = -float("inf")
        self._refusals_held = 0
        super().__init__(syncObj, selfNode, otherNodes)

    # -- server and connections ----------------------------------------------------
    def _createServer(self) -> None:
        bind = self._syncObj.conf.bindAddress
        if bind:
            host, port = bind.rsplit(":", 1)
        else:
            host, port = self._selfNode.host, self._selfNode.port
        self._server = TlsServer(self._syncObj._poller, host, int(port), self._on_accept)

    def _new_outgoing(self, node: Any) -> TlsConnection:
        conn = TlsConnection(self._syncObj._poller, self._settings, self._syncObj.conf.connectionTimeout,
                             expected_id=node_id_of(node.id), on_security_event=self._security_event)
        conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
        return conn

    def _on_accept(self, sock: socket.socket) -> None:
        try:
            address = str(sock.getpeername()[0])
        except OSError:
            sock.close()
            return
        unnamed = [c for c in self._unknownConnections if isinstance(c, TlsConnection) and c.address]
        if sum(c.address == address for c in unnamed) >= MAX_UNNAMED_PER_ADDRESS:
            sock.close()
            self._throttled_refusal(f"{MAX_UNNAMED_PER_ADDRESS} connections from {address} are still unnamed")
            return
        if len(unnamed) >= unnamed_cap(_nofile()):
            # Drop the oldest, not the newcomer: a member's handshake takes
            # milliseconds, a flood's connections sit until they time out.
            oldest = min(unnamed, key=lambda c: c.accepted_at)
            self._throttled_refusal(f"{len(unnamed)} unnamed connections are open; dropped the oldest ({oldest.remote})")
            oldest.disconnect()
        conn = TlsConnection(self._syncObj._poller, self._settings, self._syncObj.conf.connectionTimeout,
                             sock=sock, on_security_event=self._security_event)
        self._onNewIncomingConnection(conn)

    def _throttled_refusal(self, why: str) -> None:
        # Once per 10 s at most: a flood must not flood the log as well.
        now = time.monotonic()
        if now - self._refusal_logged < 10.0:
            self._refusals_held += 1
            return
        held = f" (and {self._refusals_held} more refusals since the last report)" if self._refusals_held else ""
        log.warning("Raft port: %s%s", why, held)
        self._refusal_logged, self._refusals_held = now, 0

    def addNode(self, node: Any) -> None:
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            self._connections[node] = self._new_outgoing(node)

    def _onIncomingMessageReceived(self, conn: TlsConnection, message: Any) -> None:
        # The first frame on an accepted connection names the peer.
        node = self._nodeAddrToNode.get(message) if isinstance(message, str) else None
        if node is None:
            if isinstance(message, list):
                why = "utility commands are not accepted from the network"
            elif message == "readonly":
                why = "readonly peers are not accepted"
            else:
                why = f"{str(message)[:80]!r} is not a member of this Raft group"
            self._unknownConnections.discard(conn)
            conn._refuse(why)
            return
        if node_id_of(node.id) != conn.peer_id:
            self._unknownConnections.discard(conn)
            conn._refuse(f"certificate of {conn.peer_id} used to claim the name {node.id}")
            return
        old = self._connections.get(node)
        if old is not None and old is not conn:
            old.setOnDisconnectedCallback(None)
            old.disconnect()
        self._unknownConnections.discard(conn)
        self._connections[node] = conn
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        self._onNodeConnected(node)

    # -- messages --------------------------------------------------------------------
    def _onMessageReceived(self, node: Any, message: Any) -> None:
        why = check_message(message)
        if why:
            self._security_event(f"dropped Raft message from {node.id}: {why}")
            conn = self._connections.get(node)
            if conn is not None:
                conn.disconnect()
            return
        if message.get("serialized") is False:
            message["serialized"] = None
        if message["type"] == "append_entries":
            try:
                plan = plan_append(message, self._syncObj.raftCurrentTerm,
                                   self._journal.term_at, self._journal.last_index(), self._backup)
            except ValueError as exc:
                self._security_event(f"dropped Raft message from {node.id}: {exc}")
                return
            self._backup = plan.backup
            if plan.skipped:
                self.append_rewrites += 1
            message = plan.message
            super()._onMessageReceived(node, message)
            if plan.reply is not None:
                self.send(node, plan.reply)
            return
        super()._onMessageReceived(node, message)

    def send(self, node: Any, message: Any) -> bool:
        if isinstance(message, dict) and message.get("type") == "next_node_idx":
            # Acknowledgements wait for the group commit at the end of the tick.
            self._pending_acks.append((node, message))
            return True
        return super().send(node, message)

    def flush_acks(self) -> None:
        """One fdatasync for everything appended this tick, then the acks it covers."""
        self._journal.flush()
        acks, self._pending_acks = self._pending_acks, []
        journal = self._journal
        for node, message in acks:
            if message["success"]:
                term = journal.getCurrentTerm()
                if journal.acked_term != term:
                    journal.acked_term, journal.acked_index = term, 0
                journal.acked_index = max(journal.acked_index, message["next_node_idx"] - 1)
            super().send(node, message)

    def _onTick(self) -> None:
        # Runs after pysyncobj appended this tick's entries and before its
        # next commit computation counts the leader's own log.
        self.flush_acks()
        sync_obj = self._syncObj
        if not self._nodes and sync_obj._isLeader() and self._journal.last_index() > sync_obj.raftCommitIndex:
            # A lone member commits on its own: nothing will arrive to wake
            # the poll, so wake it now rather than after a whole tick period.
            notifier = getattr(sync_obj, "_SyncObj__pipeNotifier", None)
            if notifier is not None:
                notifier.notify()
        super()._onTick()
        if self._server is not None:
            self._server.resume()
        now = time.monotonic()
        for conn in list(self._connections.values()) + list(self._unknownConnections):
            conn.check_timeout(now)

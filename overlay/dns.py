"""Embedded DNS: names of services and tasks at 127.0.0.11:53 in each task.

How this works. The node daemon owns, per task, a UDP socket and a TCP
listener bound to 127.0.0.11:53 *inside* the task's network namespace
(`open_sockets_in_netns` makes them from a throw-away thread that setns()-es
in and back), and serves them all from its own trio loop (`serve`).

Deciding is pure: `answer(query, view, rng=...)` reads the wire query and
says reply (with these bytes), forward, or drop. `Records` is plain data per
network id (services, their endpoint mode, VIP and task addresses, and
optionally task/container names); `Records.view(network_ids)` flattens what
one task may see (the union over its networks) into a `ResolverView`, so a
service on a network the task is not attached to is simply not there. Names
match case-insensitively, with or without the trailing dot: `SERVICE` gives
the VIP (endpoint mode vip) or every task address (dnsrr), `tasks.SERVICE`
every task address, `NAME.NETWORK` the same scoped to one network, a task or
container name its address, and PTR queries for those addresses their name.
Multi-address answers are shuffled by the caller's rng. A known name asked
for another type (AAAA above all: the overlay is IPv4) gets an empty NOERROR
at once, so resolvers do not wait. TTL is 1 s, not Docker's 600: a scaled or
rescheduled service shows within a second. Asking again is cheap: a view
remembers (bounded) the replies that depend neither on rng nor transport, so
a repeated query costs a dict lookup; a new view (new records) starts empty.

A name that is not ours is forwarded upstream (`forward`): from the daemon's
own namespace (tasks usually have no route out), to the host's
/etc/resolv.conf servers minus loopback ones, with a fresh random query id
and source port per attempt, retried over TCP when truncated. When nothing
answers within the budget (1 s in all) the client gets SERVFAIL: never
silence, unlike dockerd, which leaves the client waiting its full timeout.
A packet too short for a header is dropped, one with a header but a broken
body gets FORMERR; an error while handling one query never stops the server.
"""
from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import logging
import os
import random
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Mapping, NamedTuple, Sequence

import trio

from overlay.errors import DatapathError, InvalidRequest

log = logging.getLogger(__name__)

DNS_ADDRESS, DNS_PORT = "127.0.0.11", 53
TTL = 1                     # seconds; see the module docstring
FORWARD_TIMEOUT = 1.0       # seconds for all upstreams together
MAX_FORWARDS = 64           # forwarded queries in flight per serve() unless a limiter is shared
MAX_TCP = 64                # TCP connections per serve()
TCP_IDLE = 10.0             # seconds a TCP client may sit between messages
UDP_BATCH = 64              # datagrams handled per wake-up before letting other tasks run

QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
NOERROR, FORMERR, SERVFAIL, NOTIMP = 0, 1, 2, 4
T_A, T_PTR, T_OPT, T_ANY, C_IN = 1, 12, 41, 255, 1
EDNS_PAYLOAD = 1232         # what we advertise and the most we send over UDP
REPLY_CACHE = 1024          # replies remembered per view (a new view starts empty)

Upstream = tuple[str, int]
Forwarder = Callable[[bytes, int], Awaitable[bytes]]


# -- records and views -------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceRecord:
    name: str
    endpoint_mode: str = "vip"              # "vip": NAME -> vip; "dnsrr": NAME -> task_ips
    vip: str | None = None                  # None until allocated: the name answers no address
    task_ips: tuple[str, ...] = ()          # tasks.NAME -> these, in either mode


@dataclass(frozen=True)
class NetworkRecords:
    services: tuple[ServiceRecord, ...] = ()
    hosts: Mapping[str, str] = field(default_factory=dict)   # task / container name -> address
    name: str = ""                          # the network's name: NAME.<name> resolves too


@dataclass(frozen=True)
class ResolverView:
    """What one task may resolve, compiled for `answer`: lower-case wire-format name ->
    ready A records (in `names`) or one ready PTR record (in `ptr`)."""
    names: Mapping[bytes, tuple[bytes, ...]] = field(default_factory=dict)
    ptr: Mapping[bytes, bytes] = field(default_factory=dict)
    # query minus its id -> reply minus its id, for replies that depend on neither rng nor transport
    replies: dict[bytes, Answer] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Records:
    networks: Mapping[str, NetworkRecords] = field(default_factory=dict)   # network id -> records

    def view(self, network_ids: Iterable[str]) -> ResolverView:
        """The union over the given networks; unknown network ids contribute nothing."""
        names: dict[bytes, list[bytes]] = {}
        ptr: dict[bytes, bytes] = {}

        def add(name: str, ips: Iterable[str], suffix: str, reverse: bool = False) -> None:
            for key in (name, f"{name}.{suffix}") if suffix else (name,):
                known = names.setdefault(_wire_name(key), [])
                known.extend(rr for rr in map(_a_record, ips) if rr not in known)
            for ip in ips if reverse else ():
                target = _wire_name(name)
                ptr.setdefault(_wire_name(_reverse(ip)),
                               struct.pack("!HHHIH", 0xC00C, T_PTR, C_IN, TTL, len(target)) + target)

        for nid in network_ids:
            net = self.networks.get(nid)
            if net is None:
                continue
            for svc in net.services:
                if svc.endpoint_mode not in ("vip", "dnsrr"):
                    raise InvalidRequest(f"Service {svc.name!r} has endpoint mode {svc.endpoint_mode!r}; "
                                         "expected vip or dnsrr.")
                vip = (svc.vip,) if svc.vip else ()
                add(svc.name, vip if svc.endpoint_mode == "vip" else svc.task_ips, net.name,
                    reverse=svc.endpoint_mode == "vip")
                add(f"tasks.{svc.name}", svc.task_ips, net.name)
            for host, ip in net.hosts.items():
                add(host, (ip,), net.name, reverse=True)
        return ResolverView({k: tuple(v) for k, v in names.items()}, ptr)


def _a_record(ip: str) -> bytes:
    try:
        return struct.pack("!HHHIH", 0xC00C, T_A, C_IN, TTL, 4) + ipaddress.IPv4Address(ip).packed
    except ValueError:
        raise InvalidRequest(f"{ip!r} is not an IPv4 address.") from None


def _reverse(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def _wire_name(name: str) -> bytes:
    labels = name.lower().rstrip(".").encode("ascii").split(b".")
    if not all(0 < len(label) < 64 for label in labels):
        raise InvalidRequest(f"{name!r} is not a valid DNS name.")
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


# -- the pure resolver ---------------------------------------------------------------------
class Answer(NamedTuple):
    reply: bytes | None = None     # send this back
    forward: bool = False          # not ours: ask upstream, send back what it says
    max_size: int = 512            # the largest reply this client accepts


class _Malformed(Exception):
    pass


class _Query(NamedTuple):
    qid: int
    flags: int
    name: bytes              # the question's name in wire format, lower-cased
    qtype: int
    qclass: int
    question: bytes          # the question section as sent (a reply echoes it)
    edns: int | None         # the client's UDP payload size, None without EDNS


def _parse(wire: bytes) -> _Query:
    """Header, the single question and any OPT record; raises _Malformed."""
    if len(wire) < 12:
        raise _Malformed
    qid, flags, qd, an, ns, ar = struct.unpack_from("!6H", wire)
    if qd != 1:
        raise _Malformed
    off, end = 12, len(wire)
    while (n := wire[off] if off < end else -1) != 0:
        if n < 0 or n & 0xC0 or off + n >= end:   # no compression pointer can be valid here
            raise _Malformed
        off += n + 1
    if off + 5 > end or off > 12 + 255:
        raise _Malformed
    qtype, qclass = struct.unpack_from("!HH", wire, off + 1)
    name, question, off = wire[12:off + 1].lower(), wire[12:off + 5], off + 5
    edns = None
    for i in range(an + ns + ar):
        while True:                             # the owner name: labels, maybe ending in a pointer
            if off >= end:
                raise _Malformed
            n = wire[off]
            off += 2 if n & 0xC0 == 0xC0 else 1 + n
            if n == 0 or n & 0xC0 == 0xC0:
                break
        if off + 10 > end:
            raise _Malformed
        rtype, rclass, _ttl, rdlen = struct.unpack_from("!HHIH", wire, off)
        off += 10 + rdlen
        if off > end:
            raise _Malformed
        if rtype == T_OPT and i >= an + ns:
            edns = max(512, rclass)
    return _Query(qid, flags, name, qtype, qclass, question, edns)


def error_reply(query: bytes, rcode: int) -> bytes | None:
    """An error reply echoing the query's id, opcode, RD and question; None if no header."""
    if len(query) < 12:
        return None
    qid, flags = struct.unpack_from("!HH", query)
    try:
        question = _parse(query).question
    except _Malformed:
        question = b""
    out_flags = QR | (flags & 0x7900) | RA | rcode       # 0x7900: opcode and RD
    return struct.pack("!6H", qid, out_flags, 1 if question else 0, 0, 0, 0) + question


def answer(query: bytes, view: ResolverView, *, rng: random.Random, tcp: bool = False) -> Answer:
    """Decide what to do with one query. Pure: no I/O, randomness only from rng."""
    if (hit := view.replies.get(query[2:])) is not None:
        return Answer(query[:2] + hit.reply, False, 65535 if tcp else hit.max_size)
    try:
        q = _parse(query)
    except _Malformed:
        if len(query) >= 12 and not query[2] & 0x80:
            return Answer(error_reply(query, FORMERR))
        return Answer()                                  # no header, or a response: drop
    if q.flags & QR:
        return Answer()
    limit = 65535 if tcp else min(q.edns or 512, EDNS_PAYLOAD)
    if q.flags & 0x7800:                                 # an opcode other than QUERY
        return Answer(error_reply(query, NOTIMP))
    if q.qclass != C_IN and q.qclass != T_ANY:
        return Answer(None, True, limit)
    records: Sequence[bytes] = ()
    shuffled = False
    if (found := view.names.get(q.name)) is not None:
        if q.qtype == T_A or q.qtype == T_ANY:
            records = found
            if shuffled := len(found) > 1:
                records = list(found)
                rng.shuffle(records)
    elif (rr := view.ptr.get(q.name)) is not None:
        if q.qtype == T_PTR or q.qtype == T_ANY:
            records = (rr,)
    else:
        return Answer(None, True, limit)
    opt = _OPT if q.edns else b""
    flags = QR | AA | RA | (q.flags & RD)
    room = limit - 12 - len(q.question) - len(opt)
    if sum(map(len, records)) > room:                    # the client retries over TCP
        flags |= TC
        records = list(records)
        while records and sum(map(len, records)) > room:
            records.pop()
    header = struct.pack("!6H", q.qid, flags, 1, len(records), 0, 1 if opt else 0)
    reply = header + q.question + b"".join(records) + opt
    if not (shuffled or tcp or flags & TC):             # the same bytes on any transport: remember
        if len(view.replies) >= REPLY_CACHE:
            view.replies.clear()
        view.replies[query[2:]] = Answer(reply[2:], False, limit)
    return Answer(reply, False, limit)


_OPT = struct.pack("!BHHIH", 0, T_OPT, EDNS_PAYLOAD, 0, 0)


# -- forwarding upstream ------------------------------------------------------------------
def parse_resolv_conf(text: str) -> list[Upstream]:
    """Nameservers from resolv.conf text, loopback ones left out (they are not ours to reach)."""
    out: list[Upstream] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if not addr.is_loopback:
                out.append((str(addr), 53))
    return out


def host_upstreams(path: str = "/etc/resolv.conf") -> list[Upstream]:
    try:
        with open(path) as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return []


def _matches(reply: bytes, sent: bytes) -> bool:
    if len(reply) < 12 or reply[:2] != sent[:2] or not reply[2] & 0x80:
        return False
    qlen = len(_parse(sent).question)
    return reply[12:12 + qlen].lower() == sent[12:12 + qlen].lower()


async def _ask_udp(wire: bytes, upstream: Upstream) -> bytes:
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.connect(upstream)
        await sock.send(wire)
        while True:                         # ignore stray or spoofed datagrams
            reply = await sock.recv(65535)
            if _matches(reply, wire):
                return reply


async def _recv_exact(stream: trio.abc.ReceiveStream, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


async def _ask_tcp(wire: bytes, upstream: Upstream) -> bytes | None:
    async with await trio.open_tcp_stream(*upstream) as stream:
        await stream.send_all(struct.pack("!H", len(wire)) + wire)
        head = await _recv_exact(stream, 2)
        reply = head and await _recv_exact(stream, struct.unpack("!H", head)[0])
        return reply if reply and _matches(reply, wire) else None


async def forward(query: bytes, upstreams: Sequence[Upstream], timeout: float = FORWARD_TIMEOUT,
                  *, max_size: int = 65535) -> bytes:
    """Ask the upstreams in turn, sharing `timeout` between them; SERVFAIL if none answers."""
    try:
        _parse(query)
    except _Malformed:
        return error_reply(query, FORMERR) or b""
    deadline = trio.current_time() + timeout
    for i, upstream in enumerate(upstreams):
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            break
        wire = struct.pack("!H", secrets.randbits(16)) + query[2:]
        got = None
        with trio.move_on_after(remaining / (len(upstreams) - i)):
            try:
                got = await _ask_udp(wire, upstream)
                if got[2] & (TC >> 8):
                    full = await _ask_tcp(wire, upstream)
                    if full and len(full) <= max_size:
                        got = full
            except (OSError, trio.BrokenResourceError) as e:
                log.debug("upstream %s:%d failed: %s", *upstream, e)
        if got is not None:
            return query[:2] + got[2:]
    return error_reply(query, SERVFAIL) or b""


# -- the trio server -------------------------------------------------------------------
async def serve(sockets: Sequence[trio.socket.SocketType | socket.socket], resolver: Callable[[], ResolverView],
                upstreams: Sequence[Upstream], *, forwarder: Forwarder | None = None,
                rng: random.Random | None = None, limiter: trio.CapacityLimiter | None = None,
                max_tcp: int = MAX_TCP, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve UDP sockets and TCP listeners (stdlib or trio) until cancelled; closes them after.

    `resolver()` is asked for the current view at every query: hand back the
    same object until the records change (its reply cache lives in it; tasks on
    the same networks may share one). `forwarder(query,
    max_size)` replaces forwarding to `upstreams` (tests). `limiter` bounds
    forwarded queries in flight (share one across tasks to bound a node); above
    it a client gets SERVFAIL at once.
    """
    fwd = forwarder or (lambda q, size: forward(q, upstreams, max_size=size))
    ctx = _Ctx(resolver, fwd, rng or random.Random(), limiter or trio.CapacityLimiter(MAX_FORWARDS), max_tcp)
    socks = [socket.socket(s.family, s.type, s.proto, fileno=s.detach())
             if isinstance(s, trio.socket.SocketType) else s for s in sockets]
    try:
        async with trio.open_nursery() as nursery:
            for sock in socks:
                sock.setblocking(False)
                loop = _udp_loop if sock.type == socket.SOCK_DGRAM else _tcp_loop
                nursery.start_soon(loop, ctx, sock, nursery)
            task_status.started()
    finally:
        for sock in socks:
            trio.lowlevel.notify_closing(sock)
            sock.close()


@dataclass
class _Ctx:
    resolver: Callable[[], ResolverView]
    forwarder: Forwarder
    rng: random.Random
    limiter: trio.CapacityLimiter
    max_tcp: int
    tcp_open: int = 0


def _decide(ctx: _Ctx, query: bytes, tcp: bool) -> Answer:
    try:
        return answer(query, ctx.resolver(), rng=ctx.rng, tcp=tcp)
    except Exception:                        # a bug or a broken view: say so, keep serving
        log.exception("embedded DNS failed to answer a query")
        return Answer(error_reply(query, SERVFAIL))


async def _forwarded(ctx: _Ctx, query: bytes, max_size: int) -> bytes:
    token = object()
    try:
        ctx.limiter.acquire_on_behalf_of_nowait(token)
    except trio.WouldBlock:                  # too many in flight: refuse at once
        return error_reply(query, SERVFAIL) or b""
    try:
        return await ctx.forwarder(query, max_size)
    except Exception:
        log.exception("embedded DNS failed to forward a query")
        return error_reply(query, SERVFAIL) or b""
    finally:
        ctx.limiter.release_on_behalf_of(token)


def _send_udp(sock: socket.socket, reply: bytes | None, addr) -> None:
    try:
        if reply:
            sock.sendto(reply, addr)
    except OSError as e:                     # a full buffer drops the reply, as a network would
        log.debug("embedded DNS: cannot reply to %s: %s", addr, e)


async def _udp_loop(ctx: _Ctx, sock: socket.socket, nursery: trio.Nursery) -> None:
    # Plain non-blocking calls after one readiness wait: a burst of queries is
    # answered in one wake-up, without trio's per-call overhead (2-3x the rate).
    async def forward_then_send(query: bytes, addr, max_size: int) -> None:
        _send_udp(sock, await _forwarded(ctx, query, max_size), addr)

    while True:
        await trio.lowlevel.wait_readable(sock)
        for _ in range(UDP_BATCH):
            try:
                query, addr = sock.recvfrom(65535)
            except OSError as e:             # BlockingIOError: drained
                if not isinstance(e, BlockingIOError):
                    log.debug("embedded DNS: recvfrom failed: %s", e)
                break
            a = _decide(ctx, query, tcp=False)
            if a.forward:
                nursery.start_soon(forward_then_send, query, addr, a.max_size)
            else:
                _send_udp(sock, a.reply, addr)


async def _tcp_loop(ctx: _Ctx, listener: socket.socket, nursery: trio.Nursery) -> None:
    while True:
        await trio.lowlevel.wait_readable(listener)
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            continue
        except OSError as e:                 # out of file descriptors, say: back off, do not spin
            log.warning("embedded DNS: accept failed: %s", e)
            await trio.sleep(0.1)
            continue
        if ctx.tcp_open >= ctx.max_tcp:
            conn.close()
            continue
        ctx.tcp_open += 1
        nursery.start_soon(_tcp_conn, ctx, trio.SocketStream(trio.socket.from_stdlib_socket(conn)))


async def _tcp_conn(ctx: _Ctx, stream: trio.SocketStream) -> None:
    try:
        async with stream:
            while True:
                query = None
                with trio.move_on_after(TCP_IDLE):
                    head = await _recv_exact(stream, 2)
                    query = head and await _recv_exact(stream, struct.unpack("!H", head)[0])
                if not query:
                    return                       # EOF, idle, or a zero-length message
                a = _decide(ctx, query, tcp=True)
                reply = await _forwarded(ctx, query, a.max_size) if a.forward else a.reply
                if not reply:
                    return
                with trio.move_on_after(TCP_IDLE) as sending:
                    await stream.send_all(struct.pack("!H", len(reply)) + reply)
                if sending.cancelled_caught:
                    return
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
        log.debug("embedded DNS: TCP client gone: %s", e)
    finally:
        ctx.tcp_open -= 1


# -- sockets inside a task's namespace ----------------------------------------------------
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread (os.setns only exists from Python 3.12)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_sockets_in_netns(netns: str, address: str = DNS_ADDRESS,
                          port: int = DNS_PORT) -> tuple[socket.socket, socket.socket]:
    """(UDP socket, listening TCP socket) bound to address:port inside the namespace.

    `netns` is a name under /run/netns or a path (/proc/PID/ns/net). A socket
    stays in the namespace it was made in, so a dedicated thread (never a
    pooled one: a failed return would poison it) enters it, brings `lo` up,
    binds, and leaves; the calling thread never changes namespace. Blocking:
    from trio, call it through trio.to_thread.run_sync.
    """
    result: list = []

    def work() -> None:
        fds: list[int] = []
        try:
            for path in ("/proc/thread-self/ns/net", netns if "/" in netns else f"/run/netns/{netns}"):
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            setns(fds[1])
            try:
                result.append(_bind_pair(address, port))
            finally:
                setns(fds[0])               # back home (the thread ends anyway)
        except BaseException as e:
            result.append(e)
        finally:
            for fd in fds:
                os.close(fd)

    thread = threading.Thread(target=work, name=f"dns-netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if isinstance(e := result[-1], BaseException):
        for made in result[:-1]:
            for sock in made:
                sock.close()
        raise DatapathError(f"Cannot open the DNS sockets in network namespace {netns}: {e}.") from e
    return result[0]


def _bind_pair(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:   # `ip link set lo up`
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(ctl, SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(ctl, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((address, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((address, port))
        tcp.listen(128)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp

"""Embedded DNS: names of services and tasks at 127.0.0.11:53 in each task.

How this works. The node daemon owns, per task, a UDP socket and a TCP
listener bound to 127.0.0.11:53 *inside* the task's network namespace
(`open_sockets_in_netns` makes them from a throw-away thread that setns()-es
in and back), and serves them all from its own trio loop (`serve`).

Deciding is pure: `answer(query, view, rng=...)` reads the wire query and
says reply (with these bytes), forward, or drop. `Records` is plain data per
network id (services, their endpoint mode, VIP and task addresses, and
optionally task/container names); `Records.view(network_ids)` flattens what
one task may see (the union over its networks) into a `ResolverView` of
ready dnspython rrsets keyed by `dns.name.Name`, so a service on a network
the task is not attached to is simply not there. Names match
case-insensitively, with or without the trailing dot: `SERVICE` gives the VIP
(endpoint mode vip) or every task address (dnsrr), `tasks.SERVICE` every task
address, `NAME.NETWORK` the same scoped to one network, a task or container
name its address, and PTR queries for those addresses their name. A
service's aliases on a network (Docker's `--network name=N,alias=A`) answer
as its name does, `tasks.ALIAS` too, on that network only (they are records
of that network, like the rest).
Multi-address answers are shuffled by the caller's rng. A known name asked
for another type (AAAA above all: the overlay is IPv4) gets an empty NOERROR
at once, so resolvers do not wait. TTL is 1 s, not Docker's 600: a scaled or
rescheduled service shows within a second.

The wire format is dnspython's: a query is read with `dns.message.from_wire`
(a signed query is answered unsigned: we hold no keys; trailing bytes are
ignored) and a reply is `dns.message.make_response` (id, opcode, RD, the
question as sent and, for an EDNS query, an OPT advertising 1232 bytes),
rendered no larger than the client takes: 512 bytes without EDNS, its payload
size up to 1232 with EDNS, 65535 over TCP. dnspython truncates by leaving
out every rrset that does not fit whole, so a view holds one record per
rrset: a client whose answer is too large gets as many records as fit and
TC, and retries over TCP.
Parsing and rendering cost some 0.1-0.3 ms a query, so a view remembers
(bounded) the replies that fit over UDP, keyed by the query minus its id: a
repeated query costs a dict lookup and is not parsed again; a new view (new
records) starts empty. A multi-address answer is remembered in the view's
order, with where its A records sit: each is 16 bytes (a pointer to the
question's name, type, class, TTL, length, address), so a hit shuffles those
slices with the rng, exactly as shuffling the records before rendering would.

A name that is not ours is forwarded upstream (`forward`): from the daemon's
own namespace (tasks usually have no route out), to the host's
/etc/resolv.conf servers minus loopback ones, with a fresh random query id
and source port per attempt, retried over TCP when truncated; a reply counts
only if dnspython reads it as the response to what was sent (id and
question). When nothing answers within the budget (1 s in all) the client
gets SERVFAIL: never silence, unlike dockerd, which leaves the client waiting
its full timeout. A packet too short for a header, or a response, is
dropped; one with a header but a body dnspython cannot read (or not exactly
one question) gets FORMERR, another opcode than QUERY NOTIMP; an error while
handling one query never stops the server.

dnspython is imported when a view is first compiled or a query first read, not with this
module: every node imports this module at start (the agent reads resolv.conf
with `host_upstreams`, its networking keeps `Records`), but only a node whose tasks are on
a network serves DNS, and dnspython with its 60 modules is about 2 MiB of a node's memory.
So the flags, codes and types below are the wire values themselves (dnspython's are int
enums of the same values), and the functions that read, build or render messages import
the parts of dnspython they use. On a node, the worker thread that opens the first task's
DNS sockets imports them (`load_dnspython`, about 20 ms), so its trio loop never waits.
"""
from __future__ import annotations

import ctypes
import fcntl
import importlib
import ipaddress
import logging
import os
import random
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable, Mapping, NamedTuple, Sequence

import trio

from overlay.errors import DatapathError, InvalidRequest

if TYPE_CHECKING:       # at run time each function imports what it uses (see the module docstring)
    import dns.message
    import dns.name
    import dns.rdtypes.IN.A
    import dns.rrset

log = logging.getLogger(__name__)

DNS_ADDRESS, DNS_PORT = "127.0.0.11", 53
TTL = 1                     # seconds; see the module docstring
FORWARD_TIMEOUT = 1.0       # seconds for all upstreams together
MAX_FORWARDS = 64           # forwarded queries in flight per serve() unless a limiter is shared
MAX_TCP = 64                # TCP connections per serve()
TCP_IDLE = 10.0             # seconds a TCP client may sit between messages
UDP_BATCH = 64              # datagrams handled per wake-up before letting other tasks run

# Header flags, rcodes, opcode, types and classes as on the wire (RFC 1035, 6891): equal to
# dnspython's dns.flags.QR, dns.rcode.SERVFAIL, dns.rdatatype.A... without importing it.
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
NOERROR, FORMERR, SERVFAIL, NOTIMP = 0, 1, 2, 4
OPCODE_QUERY = 0
T_A, T_PTR, T_OPT, T_ANY = 1, 12, 41, 255
C_IN, C_ANY = 1, 255
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
    aliases: tuple[str, ...] = ()           # other names of the service on this network only (--network
                                            # name=N,alias=A): each answers as NAME does, tasks.ALIAS too


@dataclass(frozen=True)
class NetworkRecords:
    services: tuple[ServiceRecord, ...] = ()
    hosts: Mapping[str, str] = field(default_factory=dict)   # task / container name -> address
    name: str = ""                          # the network's name: NAME.<name> resolves too


@dataclass(frozen=True)
class ResolverView:
    """What one task may resolve, compiled for `answer`: absolute name (dnspython compares
    names case-insensitively) -> ready one-record rrsets, TTL included: its A records in
    `names` (a known name may have none), its PTR record in `ptr`. A reply lists the
    rrsets it needs, so shuffling or truncating an answer is a list operation."""
    names: Mapping[dns.name.Name, tuple[dns.rrset.RRset, ...]] = field(default_factory=dict)
    ptr: Mapping[dns.name.Name, dns.rrset.RRset] = field(default_factory=dict)
    rejected: tuple[str, ...] = ()      # why records were left out (each costs only its own name)
    # query minus its id -> reply minus its id (see _Cached), for replies that fit over UDP
    replies: dict[bytes, _Cached] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Records:
    networks: Mapping[str, NetworkRecords] = field(default_factory=dict)   # network id -> records

    def view(self, network_ids: Iterable[str]) -> ResolverView:
        """The union over the given networks; unknown network ids contribute nothing."""
        import dns.rdtypes.ANY.PTR
        import dns.reversename
        import dns.rrset

        names: dict[dns.name.Name, dict[str, dns.rrset.RRset]] = {}    # name -> address -> its rrset
        ptr: dict[dns.name.Name, dns.rrset.RRset] = {}
        a_records: dict[str, dns.rdtypes.IN.A.A] = {}        # each address checked and converted once
        rejected: list[str] = []

        def add(name: str, ips: Iterable[str], suffix: str, reverse: bool = False) -> None:
            records = [a_records[ip] if ip in a_records else a_records.setdefault(ip, _a_record(ip))
                       for ip in ips]
            for key in (name, f"{name}.{suffix}") if suffix else (name,):
                owner = _name(key)
                known = names.setdefault(owner, {})
                for rd in records:
                    if rd.address not in known:
                        known[rd.address] = dns.rrset.from_rdata(owner, TTL, rd)
            if reverse:
                target = dns.rdtypes.ANY.PTR.PTR(C_IN, T_PTR, _name(name))
                for rd in records:
                    owner = dns.reversename.from_address(rd.address)
                    if owner not in ptr:
                        ptr[owner] = dns.rrset.from_rdata(owner, TTL, target)

        for nid in network_ids:
            net = self.networks.get(nid)
            if net is None:
                continue
            for svc in net.services:
                if svc.endpoint_mode not in ("vip", "dnsrr"):
                    rejected.append(f"Service {svc.name!r} has endpoint mode {svc.endpoint_mode!r}; "
                                    "expected vip or dnsrr.")
                    continue
                if (problem := _unusable(svc.name, (*svc.task_ips, *((svc.vip,) if svc.vip else ())))):
                    rejected.append(problem)   # one bad record costs its own name, never the others'
                    continue
                vip = (svc.vip,) if svc.vip else ()
                add(svc.name, vip if svc.endpoint_mode == "vip" else svc.task_ips, net.name,
                    reverse=svc.endpoint_mode == "vip")
                add(f"tasks.{svc.name}", svc.task_ips, net.name)
                for alias in svc.aliases:       # the PTR of the VIP stays the service's own name
                    if (problem := _unusable(alias, ())):
                        rejected.append(problem)
                        continue
                    add(alias, vip if svc.endpoint_mode == "vip" else svc.task_ips, net.name)
                    add(f"tasks.{alias}", svc.task_ips, net.name)
            for host, ip in net.hosts.items():
                if (problem := _unusable(host, (ip,))):
                    rejected.append(problem)
                    continue
                add(host, (ip,), net.name, reverse=True)
        return ResolverView({owner: tuple(known.values()) for owner, known in names.items()}, ptr,
                            tuple(rejected))


def _unusable(name: str, ips: Iterable[str]) -> str | None:
    """Why a record cannot be served (a name that is no DNS name, an address that is no IPv4), or None."""
    try:
        _name(name)
        for ip in ips:
            _a_record(ip)
    except InvalidRequest as exc:
        return str(exc)
    return None


def _a_record(ip: str) -> dns.rdtypes.IN.A.A:
    import dns.exception
    import dns.rdtypes.IN.A

    try:
        return dns.rdtypes.IN.A.A(C_IN, T_A, ip)
    except (ValueError, dns.exception.DNSException):
        raise InvalidRequest(f"{ip!r} is not an IPv4 address.") from None


def _name(text: str) -> dns.name.Name:
    """`text` as an absolute name, lower-cased (a PTR answer shows it); dots only separate labels."""
    import dns.exception
    import dns.name

    try:
        return dns.name.Name([*text.lower().rstrip(".").encode("ascii").split(b"."), b""])
    except (UnicodeError, dns.exception.DNSException):
        raise InvalidRequest(f"{text!r} is not a valid DNS name.") from None


# -- the pure resolver ---------------------------------------------------------------------
class Answer(NamedTuple):
    reply: bytes | None = None     # send this back
    forward: bool = False          # not ours: ask upstream, send back what it says
    max_size: int = 512            # the largest reply this client accepts


class _Cached(NamedTuple):
    reply: bytes                   # the reply minus its id, records in the view's order
    max_size: int
    shuffle_at: int = 0            # offset in `reply` of `shuffle_count` 16-byte A records to shuffle
    shuffle_count: int = 0


A_RECORD_SIZE = 16                 # compressed owner name (2), type, class, TTL, rdlength, address
_A_RECORD_HEAD = b"\xc0\x0c\x00\x01"  # a pointer to the question's name (offset 12), type A


def _read(wire: bytes) -> dns.message.Message | None:
    """The message dnspython reads from `wire`, or None if it cannot."""
    import dns.exception
    import dns.message

    try:
        return dns.message.from_wire(wire, keyring=False, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError):   # its FormError and friends; an rdata it cannot build
        return None


def _is_query(q: dns.message.Message | None) -> bool:
    return q is not None and not q.flags & QR and len(q.question) == 1


def _error(query: bytes, q: dns.message.Message | None, rcode: int) -> bytes:
    """An error reply to `query`, which is at least a header; `q` is what dnspython read of it."""
    import dns.message
    import dns.opcode

    if _is_query(q):
        r = dns.message.make_response(q, recursion_available=True, our_payload=EDNS_PAYLOAD)
    else:                                   # nothing readable beyond the header: echo that
        qid, flags = struct.unpack_from("!HH", query)
        r = dns.message.Message(qid)
        r.flags = QR | RA | (flags & (RD | dns.opcode.to_flags(dns.opcode.from_flags(flags))))
    r.set_rcode(rcode)
    return r.to_wire()


def error_reply(query: bytes, rcode: int) -> bytes | None:
    """An error reply echoing the query's id, opcode, RD and question; None if no header."""
    if len(query) < 12:
        return None
    return _error(query, _read(query), rcode)


def answer(query: bytes, view: ResolverView, *, rng: random.Random, tcp: bool = False) -> Answer:
    """Decide what to do with one query. Pure: no I/O, randomness only from rng."""
    if (hit := view.replies.get(query[2:])) is not None:
        return Answer(query[:2] + _shuffled(hit, rng), False, 65535 if tcp else hit.max_size)
    import dns.message      # after the remembered replies: a hit does not pay even the import statement
    q = _read(query)
    if not _is_query(q):
        if len(query) >= 12 and not query[2] & 0x80:     # a header, and not a response
            return Answer(_error(query, q, FORMERR))
        return Answer()                                  # no header, or a response: drop
    limit = 65535 if tcp else min(max(512, q.payload), EDNS_PAYLOAD) if q.edns >= 0 else 512
    if q.opcode() != OPCODE_QUERY:
        return Answer(_error(query, q, NOTIMP))
    question = q.question[0]
    if question.rdclass != C_IN and question.rdclass != C_ANY:
        return Answer(None, True, limit)
    qtype = question.rdtype
    records: Sequence[dns.rrset.RRset] = ()
    if (found := view.names.get(question.name)) is not None:
        if qtype == T_A or qtype == T_ANY:
            records = found
    elif (rrset := view.ptr.get(question.name)) is not None:
        if qtype == T_PTR or qtype == T_ANY:
            records = (rrset,)
    else:
        return Answer(None, True, limit)
    r = dns.message.make_response(q, recursion_available=True, our_payload=EDNS_PAYLOAD)
    r.flags |= AA
    r.answer.extend(records)
    reply, truncated = _render(r, limit)
    cached = _Cached(reply[2:], limit)
    if len(records) > 1:
        at = 12 + len(question.name.to_wire()) + 4       # header and the question: the answers follow
        body = reply[at:at + A_RECORD_SIZE * len(records)]
        if truncated or len(body) != A_RECORD_SIZE * len(records) or \
                not all(body[i:i + 4] == _A_RECORD_HEAD for i in range(0, len(body), A_RECORD_SIZE)):
            # Which records fit depends on their order (or the layout is not the one the cache
            # can shuffle): shuffle the records, render again, do not remember.
            records = list(records)
            rng.shuffle(records)
            r.answer[:] = records
            return Answer(_render(r, limit)[0], False, limit)
        cached = cached._replace(shuffle_at=at - 2, shuffle_count=len(records))
    if not (tcp or truncated):                           # fits over UDP, so over TCP too: remember
        if len(view.replies) >= REPLY_CACHE:
            view.replies.clear()
        view.replies[query[2:]] = cached
    return Answer(reply[:2] + _shuffled(cached, rng), False, limit)


def _shuffled(cached: _Cached, rng: random.Random) -> bytes:
    """The cached reply with its A records in an order drawn from rng (as is when there is one)."""
    if not cached.shuffle_count:
        return cached.reply
    at, end = cached.shuffle_at, cached.shuffle_at + A_RECORD_SIZE * cached.shuffle_count
    slices = [cached.reply[i:i + A_RECORD_SIZE] for i in range(at, end, A_RECORD_SIZE)]
    rng.shuffle(slices)
    return cached.reply[:at] + b"".join(slices) + cached.reply[end:]


def _render(r: dns.message.Message, limit: int) -> tuple[bytes, bool]:
    """`r` in at most `limit` bytes, and whether records had to be left out (TC set).

    dnspython truncates by leaving out each rrset that does not fit whole; as every
    rrset here holds one record, the client gets all records that fit, in our order
    (want_shuffle=False: dnspython would otherwise shuffle with the global random)."""
    import dns.exception

    try:
        return r.to_wire(max_size=limit, want_shuffle=False), False
    except dns.exception.TooBig:
        return r.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False), True


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


def _matches(reply: bytes, sent: dns.message.Message) -> bool:
    """Whether dnspython reads `reply` as the response to `sent` (id, opcode and question)."""
    import dns.exception
    import dns.message

    try:
        return sent.is_response(dns.message.from_wire(reply, question_only=True))
    except (dns.exception.DNSException, ValueError):
        return False


async def _ask_udp(wire: bytes, sent: dns.message.Message, upstream: Upstream) -> bytes:
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.connect(upstream)
        await sock.send(wire)
        while True:                         # ignore stray or spoofed datagrams
            reply = await sock.recv(65535)
            if _matches(reply, sent):
                return reply


async def _recv_exact(stream: trio.abc.ReceiveStream, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


async def _ask_tcp(wire: bytes, sent: dns.message.Message, upstream: Upstream) -> bytes | None:
    async with await trio.open_tcp_stream(*upstream) as stream:
        await stream.send_all(struct.pack("!H", len(wire)) + wire)
        head = await _recv_exact(stream, 2)
        reply = head and await _recv_exact(stream, struct.unpack("!H", head)[0])
        return reply if reply and _matches(reply, sent) else None


async def forward(query: bytes, upstreams: Sequence[Upstream], timeout: float = FORWARD_TIMEOUT,
                  *, max_size: int = 65535) -> bytes:
    """Ask the upstreams in turn, sharing `timeout` between them; SERVFAIL if none answers."""
    if (sent := _read(query)) is None:
        return error_reply(query, FORMERR) or b""
    deadline = trio.current_time() + timeout
    for i, upstream in enumerate(upstreams):
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            break
        sent.id = secrets.randbits(16)           # the client's bytes under a fresh id
        wire = struct.pack("!H", sent.id) + query[2:]
        got = None
        with trio.move_on_after(remaining / (len(upstreams) - i)):
            try:
                got = await _ask_udp(wire, sent, upstream)
                if struct.unpack_from("!H", got, 2)[0] & TC:
                    full = await _ask_tcp(wire, sent, upstream)
                    if full and len(full) <= max_size:
                        got = full
            except (OSError, trio.BrokenResourceError) as e:
                log.debug("upstream %s:%d failed: %s", *upstream, e)
        if got is not None:
            return query[:2] + got[2:]
    return error_reply(query, SERVFAIL) or b""      # read again: `sent` has our id, not the client's


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


def load_dnspython() -> None:
    """Import the parts of dnspython the server uses (some 20 ms the first time, nothing after):
    blocking, for a worker thread, before the first view is compiled or query read."""
    for name in ("dns.message", "dns.rdtypes.ANY.PTR", "dns.rdtypes.IN.A", "dns.reversename", "dns.rrset"):
        importlib.import_module(name)


def open_sockets_in_netns(netns: str, address: str = DNS_ADDRESS,
                          port: int = DNS_PORT) -> tuple[socket.socket, socket.socket]:
    """(UDP socket, listening TCP socket) bound to address:port inside the namespace.

    `netns` is a name under /run/netns or a path (/proc/PID/ns/net). A socket
    stays in the namespace it was made in, so a dedicated thread (never a
    pooled one: a failed return would poison it) enters it, brings `lo` up,
    binds, and leaves; the calling thread never changes namespace. Blocking:
    from trio, call it through trio.to_thread.run_sync. The first call also imports
    dnspython (`load_dnspython`).
    """
    load_dnspython()
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

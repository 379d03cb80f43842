"""Simulated workers: many real node identities in one process, no containers.

    python -m swarm.lab.simworker --token TOKEN --manager HOST:PORT [--manager ...]
                                  --count 100 --prefix sim [--delay 0.05] [--image demo:1]

How this works. Each `SimWorker` is a node of its own: it joins with the worker
token through the real `join` call (the CA pinned by the token's digest, a key
and CSR of its own, `swarm.daemon.bootstrap`'s join path), keeps its certificate
and key in memory, and talks to the managers over its own mutual-TLS
connections (one kept per manager, as a node daemon's pool keeps them), from
a loopback address of its own (127.1.x.y): the managers admit at most 16
connections per address before their handshake, as they would from one host,
so a thousand nodes must not all come from 127.0.0.1. It runs the agent's
three loops against the real dispatcher:
- heartbeats to the leader (following `not_leader` answers), carrying the
  facts a node reports: resources, platform and the images it "holds" (the
  image the benchmark's services use, so the scheduler's image check passes);
- the `tasks.assigned` long poll, from the last store index it saw (a full
  answer replaces what it holds; the others carry only the changes);
- `tasks.status` reports, batched as the agent batches them.
A task assigned to it moves through preparing, starting and running, `delay`
seconds apart (the tasks of one answer move together: one timer per answer,
not per task); a task whose desired state leaves "running" is reported
shut down. Nothing is written to disk.

Run as a program it joins `--count` workers (a few joins at a time: the
managers hold at most 16 unauthenticated connections per address), prints
one JSON line {"joined": N, "node_ids": [...]} on stdout, then runs them
until killed, with a JSON line {"known": tasks held to run, "running": ...} on stdout
and a progress line on stderr every `--progress` seconds.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from swarm.agent import reports
from swarm.api import spec
from swarm.ca import pki
from swarm.daemon import interpreter
from swarm.daemon.bootstrap import _join_call
from swarm.daemon.config import split_addr
from swarm.rpc.client import RPCClient
from swarm.rpc.messages import RPCError

log = logging.getLogger(__name__)

STEPS = ("preparing", "starting", "running")
POLL_WAIT = spec.POLL_WAIT  # as the agent's
JOIN_CONCURRENCY = 6        # each join holds up to 2 unauthenticated connections (cap: 16 per address)
PLATFORM = {"os": "linux", "architecture": "x86_64"}
RESOURCES = {"nano_cpus": 64 * 1_000_000_000, "memory_bytes": 256 << 30}


@dataclass(frozen=True)
class Identity:
    """What a join gives a node: its id and its credentials (kept in memory only)."""

    node_id: str
    hostname: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    managers: tuple[str, ...]


async def join(manager: str, token: str, hostname: str, addr: str) -> Identity:
    """Join the swarm as a worker through `manager` (HOST:PORT); raises RPCError."""
    parsed = pki.parse_join_token(token)
    host, port = split_addr(manager)
    key = pki.new_node_key()
    request = {"csr_pem": pki.make_csr(key, "joining"), "hostname": hostname, "addr": addr, "raft_addr": ""}
    ca_pem, answer = await _join_call(host, port, parsed, request)
    if answer["role"] != "worker":
        raise RPCError("bad_request", f"a simulated node must join as a worker, not {answer['role']}")
    return Identity(answer["node_id"], hostname, answer["cert_pem"], pki.key_to_pem(key), ca_pem,
                    tuple(answer["managers"]))


@dataclass
class Stats:
    """What the workers of one process did (for progress lines and tests)."""

    beats: int = 0
    beaten: int = 0       # nodes that have had a heartbeat answered
    polls: int = 0
    reports: int = 0      # task status updates sent
    status_calls: int = 0  # the tasks.status calls that carried them
    errors: int = 0
    incremental: int = 0  # answers that carried only the changes
    answered: int = 0     # answers that carried task records (the others: a poll's wait ran out)
    received: int = 0     # task records those answers carried
    running: int = 0      # tasks reported running and not stopped since
    last_error: str = ""


@dataclass
class _Task:
    state: str
    desired: str


def source_address(i: int) -> str:
    """The loopback address the i-th simulated node connects from (127.1.0.1 onwards)."""
    return f"127.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


@dataclass
class SimWorker:
    identity: Identity
    image: str
    delay: float = 0.05
    stats: Stats = field(default_factory=Stats)
    source: str | None = None     # the local address its connections come from

    def __post_init__(self) -> None:
        ident = self.identity
        self.ctx = pki.client_ssl_context(ident.cert_pem, ident.key_pem, ident.ca_pem)
        self.managers = list(ident.managers)
        self.leader: str | None = None
        self.heard = False            # a heartbeat of this node was answered (counted in stats.beaten)
        self.period = 1.0
        self.since = 0
        self.tasks: dict[str, _Task] = {}
        self.reports, self._inbox = trio.open_memory_channel[tuple[str, str]](100_000)
        self._clients: dict[str, RPCClient] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def run(self) -> None:
        """Heartbeat, poll and report until cancelled (cancelling is this node's death)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._heartbeats)
            nursery.start_soon(self._reporter)
            nursery.start_soon(self._assignments)

    # -- calls ---------------------------------------------------------------------
    async def _client(self, addr: str, timeout: float) -> RPCClient:
        """The kept connection to `addr`, opened (from `source`) when there is none."""
        async with self._locks.setdefault(addr, trio.Lock()):
            client = self._clients.get(addr)
            if client is not None and client._closed is None:
                return client
            host, port = split_addr(addr)
            try:
                with trio.fail_after(timeout):
                    tcp = await trio.open_tcp_stream(host, port, local_address=self.source)
                    stream = trio.SSLStream(tcp, self.ctx, server_hostname=None, https_compatible=True)
                    try:
                        await stream.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(tcp)
                        raise
            except (trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
                raise RPCError("unavailable", f"could not connect to {addr}: {exc or type(exc).__name__}") from None
            client = self._clients[addr] = RPCClient(stream, addr)
            assert self._nursery is not None
            await self._nursery.start(client.run)
            return client

    async def _call_at(self, addr: str, method: str, params: dict, timeout: float) -> dict:
        client = await self._client(addr, timeout)
        try:
            return await client.call(method, params, timeout)
        except RPCError as exc:
            if exc.code == "unavailable" and self._clients.get(addr) is client:
                # A dead link: the next call connects afresh. A late answer ("deadline") keeps
                # it: a thousand nodes reconnecting to a loaded manager would each cost it a
                # TLS handshake, and load it more.
                del self._clients[addr]
                await client.aclose()
            raise

    async def _call(self, method: str, params: dict, timeout: float) -> dict:
        """The leader if known, else any manager (as the agent's `_agent_call`)."""
        order = ([self.leader] if self.leader else []) + random.sample(self.managers, len(self.managers))
        last: RPCError | None = None
        for addr in order:
            try:
                return await self._call_at(addr, method, params, timeout)
            except RPCError as exc:
                if exc.code == "not_leader":
                    # Told where the leader is: ask it (once: a leader whose lease lapsed
                    # under load says so too, and the caller retries later).
                    self.leader = exc.message if exc.message and exc.message != addr else None
                    if self.leader:
                        return await self._call_at(self.leader, method, params, timeout)
                    last = exc
                    continue
                if exc.code not in ("unavailable", "deadline"):
                    raise
                if addr == self.leader:
                    self.leader = None
                last = exc
        raise last or RPCError("unavailable", "no manager is known")

    # -- the three loops -------------------------------------------------------------
    async def _heartbeats(self) -> None:
        facts = {"resources": RESOURCES, "images": [self.image], "platform": PLATFORM}
        await trio.sleep(random.uniform(0, self.period))  # spread the beats of many nodes
        while True:
            try:
                answer = await self._call("heartbeat", facts, max(5.0, self.period))
            except RPCError as exc:
                self._failed(f"heartbeat: {exc.message}")
                await trio.sleep(self.period / 2)
                continue
            if not self.heard:
                self.heard = True
                self.stats.beaten += 1
            self.stats.beats += 1
            self.managers = list(answer["managers"]) or self.managers
            self.period = float(answer["period"])
            await trio.sleep(self.period)

    async def _assignments(self) -> None:
        while True:
            try:
                answer = await self._call("tasks.assigned", {"since": self.since, "wait": POLL_WAIT},
                                          POLL_WAIT + 5.0)
            except RPCError as exc:
                self._failed(f"tasks.assigned: {exc.message}")
                await trio.sleep(0.5)
                continue
            self.stats.polls += 1
            self._apply(answer)

    def _apply(self, answer: dict) -> None:
        self.since = answer["index"]
        if answer["changed"]:
            self.stats.answered += 1
            self.stats.received += len(answer["changed"])
        fresh = []
        for data in answer["changed"]:
            task_id, desired = data["id"], data["desired_state"]
            observed = data["status"]["state"]
            known = self.tasks.get(task_id)
            if known is None:
                if spec.is_terminal(observed):
                    continue
                known = self.tasks[task_id] = _Task(observed, desired)
                if desired == "running":
                    fresh.append(task_id)
            known.desired = desired
            if spec.is_terminal(observed) and not spec.is_terminal(known.state):
                self._set(task_id, known, observed, report=False)  # the managers ended it (orphaned)
            elif desired != "running" and not spec.is_terminal(known.state):
                self._set(task_id, known, "shutdown")
        if "task_ids" in answer:   # the full set (a first answer, or a resync)
            assigned = set(answer["task_ids"])
            gone = [t for t in self.tasks if t not in assigned]
        else:                      # only the changes since `since`
            gone = [t for t in answer["removed"] if t in self.tasks]
            self.stats.incremental += 1
        for task_id in gone:
            known = self.tasks.pop(task_id)
            if known.state == "running":
                self.stats.running -= 1
        if fresh:
            assert self._nursery is not None
            self._nursery.start_soon(self._progress, fresh)

    async def _progress(self, task_ids: list[str]) -> None:
        """Move the tasks of one answer through STEPS, `delay` apart."""
        for state in STEPS:
            await trio.sleep(self.delay)
            for task_id in task_ids:
                known = self.tasks.get(task_id)
                if known is not None and known.desired == "running" and not spec.is_terminal(known.state):
                    self._set(task_id, known, state)

    def _set(self, task_id: str, known: _Task, state: str, report: bool = True) -> None:
        if known.state == "running":
            self.stats.running -= 1
        if state == "running":
            self.stats.running += 1
        known.state = state
        if report:
            self.reports.send_nowait((task_id, state))

    async def _reporter(self) -> None:
        """Batch reports into tasks.status calls, in order, retried until accepted; the first
        report of a call waits for others as the agent's does (`reports.batch_delay`)."""
        while True:
            batch = [await self._inbox.receive()]
            wanted = (t.state for t in self.tasks.values() if t.desired == "running")
            await trio.sleep(reports.batch_delay(reports.on_the_way(wanted)))
            while len(batch) < spec.MAX_STATUS_BATCH:
                try:
                    batch.append(self._inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            now = time.time()
            # One report per task, its latest (a simulated task only moves forward), as the agent's.
            updates = [{"id": task_id, "status": spec.to_dict(spec.TaskStatus(state, state, "", now))}
                       for task_id, state in dict(batch).items()]
            while True:
                try:
                    await self._call("tasks.status", {"updates": updates}, 10.0)
                    self.stats.reports += len(updates)
                    self.stats.status_calls += 1
                    break
                except RPCError as exc:
                    self._failed(f"tasks.status: {exc.message}")
                    if exc.code in ("bad_request", "forbidden"):
                        break   # retrying cannot help
                    await trio.sleep(0.5)

    def _failed(self, what: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = what


async def join_many(manager: str, token: str, prefix: str, count: int,
                    concurrency: int = JOIN_CONCURRENCY) -> list[Identity]:
    """Join `count` workers named PREFIX-00000...; a few at a time, each retried on `unavailable`."""
    out: list[Identity | None] = [None] * count
    limit = trio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limit:
            for attempt in range(20):
                try:
                    # Nothing listens at a simulated node's address: no manager calls the nodes here.
                    out[i] = await join(manager, token, f"{prefix}-{i:05d}", f"127.0.0.1:{20000 + i % 40000}")
                    return
                except RPCError as exc:
                    if exc.code not in ("unavailable", "deadline") or attempt == 19:
                        raise
                    await trio.sleep(0.2 + random.random() * attempt)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return [x for x in out if x is not None]


def raise_nofile() -> int:
    """Each worker holds a TLS connection per manager it talks to: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _main(args: argparse.Namespace) -> None:
    started = time.monotonic()
    identities = await join_many(args.manager[0], args.token, args.prefix, args.count)
    print(json.dumps({"joined": len(identities), "node_ids": [i.node_id for i in identities],
                      "seconds": round(time.monotonic() - started, 2)}), flush=True)
    stats = Stats()
    workers = [SimWorker(ident, args.image, args.delay, stats, source_address(args.first + i))
               for i, ident in enumerate(identities)]
    for w in workers:
        w.managers = list(dict.fromkeys([*w.managers, *args.manager]))
    async with trio.open_nursery() as nursery:
        for w in workers:
            nursery.start_soon(w.run)
        while True:
            await trio.sleep(args.progress)
            known = sum(1 for w in workers for t in w.tasks.values()
                        if t.desired == "running" and not spec.is_terminal(t.state))
            print(json.dumps({"known": known, "running": stats.running, "errors": stats.errors,
                              "beaten": stats.beaten}), flush=True)
            print(f"[{args.prefix}] known={known} running={stats.running} beats={stats.beats} polls={stats.polls} "
                  f"answered={stats.answered} received={stats.received} "
                  f"reports={stats.reports} status_calls={stats.status_calls} errors={stats.errors} {stats.last_error[:120]}",
                  file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m swarm.lab.simworker", description=__doc__.split("\n")[0])
    parser.add_argument("--token", required=True, help="the worker join token")
    parser.add_argument("--manager", action="append", required=True, help="a manager's HOST:PORT (repeatable)")
    parser.add_argument("--count", type=int, default=10, help="simulated workers to run")
    parser.add_argument("--prefix", default="sim", help="their hostnames are PREFIX-00000, ...")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between a task's states")
    parser.add_argument("--image", default="demo:1", help="the image every simulated node reports holding")
    parser.add_argument("--first", type=int, default=0,
                        help="the first loopback source address to use (127.1.0.1 + FIRST): give each process its own")
    parser.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines on stderr")
    args = parser.parse_args(argv)
    interpreter.tune()   # as the node daemons these workers stand in for
    if args.count < 1 or args.delay < 0:
        parser.error("--count must be at least 1 and --delay not negative")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    raise_nofile()
    try:
        trio.run(_main, args)
    except KeyboardInterrupt:
        pass
    except (RPCError, pki.PKIError) as exc:
        sys.exit(f"simworker: {getattr(exc, 'message', exc)}")


if __name__ == "__main__":
    main()

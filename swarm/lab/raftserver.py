"""A stand-alone Raft member process, for tests, benchmarks and chaos runs.

    python -m swarm.lab.raftserver --id ID --listen HOST:PORT --data DIR --certs DIR \
        --control SOCKET [--peer ID@HOST:PORT ...]

It runs one `RaftNode` and answers a local control socket (frames from
`raft.framing`, each request `{"id", "op", ...}`, answered out of order):
commit, get, list, status, add, remove, transfer, read (linearizable),
compact. The certificate directory holds ca.pem, node.pem, node-key.pem;
peers must present manager certificates of the same cluster CA.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

import trio

from raft import framing
from raft.cipher import DataCipher
from raft.recovery import force_new_cluster
from raft.node import RaftConfig, RaftError, RaftNode, SnapshotError
from raft.store import Op, TxnError
from raft.transport import TlsSettings
from raft.watch import LeadershipChanged


def manager_identity(cluster_id: str):
    from swarm.ca import pki

    def identify(ssl_object: Any) -> str:
        ident = pki.peer_identity(ssl_object)
        if ident.cluster_id != cluster_id:
            raise PermissionError(f"certificate of {ident.node_id} belongs to another cluster")
        if ident.role != "manager":
            raise PermissionError(f"{ident.node_id} presents a {ident.role} certificate; Raft needs a manager")
        return ident.node_id

    return identify


def load_tls(cert_dir: str) -> TlsSettings:
    from swarm.ca import pki

    def read(name: str) -> bytes:
        with open(os.path.join(cert_dir, name), "rb") as f:
            return f.read()

    ca, cert, key = read("ca.pem"), read("node.pem"), read("node-key.pem")
    cluster_id = pki.identity_from_cert(cert).cluster_id
    return TlsSettings(
        server_context=pki.server_ssl_context(cert, key, ca),
        client_context=pki.client_ssl_context(cert, key, ca),
        identify=manager_identity(cluster_id),
    )


def _ops(raw: list) -> list[Op]:
    return [Op(o[0], o[1], o[2], o[4], o[3]) for o in raw]


async def handle(node: RaftNode, request: dict) -> Any:
    op = request["op"]
    timeout = float(request.get("timeout", 5.0))
    if op == "commit":
        return (await node.commit(_ops(request["ops"]), timeout=timeout)).to_wire()
    if op == "get":
        rec = node.get(request["kind"], request["key"])
        return None if rec is None else [rec.version, rec.data]
    if op == "list":
        return {k: [r.version, r.data] for k, r in node.list(request["kind"]).items()}
    if op == "status":
        return await node.status()
    if op == "read":
        return await node.linearizable_read(timeout=timeout)
    if op == "add":
        await node.add_member(request["node_id"], request["address"], timeout=timeout)
        return node.members()
    if op == "remove":
        await node.remove_member(request["node_id"], timeout=timeout)
        return node.members()
    if op == "transfer":
        return await node.transfer_leadership(request.get("target"), timeout=timeout)
    if op == "leadership":
        return LEADERSHIP_LOG
    if op == "bench":
        return await bench(node, int(request["count"]), int(request["concurrency"]), int(request.get("size", 100)))
    if op == "compact":
        node._engine.run_in_tick(node._engine.forceLogCompaction)
        return True
    raise ValueError(f"unknown op {op!r}")


LEADERSHIP_LOG: list[dict] = []


async def record_leadership(node: RaftNode) -> None:
    """Keep what this node's watchers are told about leadership (tests read it)."""
    with node.watch(kinds=()) as watch:
        async for item in watch:
            if isinstance(item, LeadershipChanged):
                LEADERSHIP_LOG.append({"acting": item.acting, "term": item.term, "at": time.monotonic()})


async def bench(node: RaftNode, count: int, concurrency: int, size: int) -> dict:
    """Commit `count` single-op transactions, `concurrency` in flight; time each."""
    latencies: list[float] = []
    payload = b"x" * size
    next_key = iter(range(count))
    tag = os.urandom(4).hex()

    async def worker() -> None:
        for i in next_key:
            started = time.perf_counter()
            result = await node.commit([Op.create("bench", f"{tag}-{i}", payload)], timeout=30)
            if not result.ok:
                raise RaftError(result.error)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"count": count, "concurrency": concurrency, "seconds": elapsed, "tx_per_s": count / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000}


async def serve_client(node: RaftNode, stream: trio.SocketStream) -> None:
    decoder = framing.FrameDecoder()
    send_lock = trio.Lock()

    async def answer(request: dict) -> None:
        try:
            reply = {"id": request.get("id"), "ok": True, "result": await handle(node, request)}
        except (RaftError, TxnError, ValueError, KeyError) as exc:
            reply = {"id": request.get("id"), "ok": False, "error": type(exc).__name__, "message": str(exc)}
        async with send_lock:
            try:
                await stream.send_all(framing.encode_frame(reply))
            except trio.BrokenResourceError:
                pass

    async with trio.open_nursery() as nursery:
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not data:
                break
            try:
                requests = decoder.feed(data)
            except framing.FrameError:
                break
            for request in requests:
                if isinstance(request, dict):
                    nursery.start_soon(answer, request)


async def main(args: argparse.Namespace) -> int:
    cipher = None
    if args.data_key_file:
        with open(args.data_key_file) as f:
            cipher = DataCipher(bytes.fromhex(f.read().strip()))
    if args.force_new_cluster:
        summary = force_new_cluster(args.data, args.id, args.listen, cipher)
        print(f"swarm.lab.raftserver: forced a new single-member group: {summary}", file=sys.stderr)
        args.peer = []
    config = RaftConfig(
        node_id=args.id,
        address=args.listen,
        data_dir=args.data,
        tls=load_tls(args.certs),
        peers=list(args.peer or []),
        election_timeout=(args.election_min, args.election_max),
        compaction_entries=args.compaction_entries,
        compaction_min_time=args.compaction_min_time,
        cipher=cipher,
    )
    node = RaftNode(config)
    try:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(node.run)
            except (SnapshotError, RaftError, RuntimeError) as exc:
                print(f"swarm.lab.raftserver: {exc}", file=sys.stderr)
                return 1
            if os.path.exists(args.control):
                os.unlink(args.control)
            sock = trio.socket.socket(trio.socket.AF_UNIX)
            await sock.bind(args.control)
            os.chmod(args.control, 0o600)
            sock.listen(64)
            listener = trio.SocketListener(sock)
            nursery.start_soon(record_leadership, node)
            with open(args.control + ".ready", "w") as f:
                f.write(str(os.getpid()))
            while True:
                stream = await listener.accept()
                nursery.start_soon(serve_client, node, stream)
    finally:
        if os.path.exists(args.control):
            os.unlink(args.control)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m swarm.lab.raftserver", description=__doc__.splitlines()[0])
    p.add_argument("--id", required=True)
    p.add_argument("--listen", required=True, help="HOST:PORT for Raft traffic")
    p.add_argument("--data", required=True)
    p.add_argument("--certs", required=True)
    p.add_argument("--control", required=True, help="unix socket for the control API")
    p.add_argument("--peer", action="append", help="ID@HOST:PORT of another initial member")
    p.add_argument("--election-min", type=float, default=0.3)
    p.add_argument("--election-max", type=float, default=0.6)
    p.add_argument("--compaction-entries", type=int, default=20_000)
    p.add_argument("--compaction-min-time", type=float, default=600.0)
    p.add_argument("--data-key-file", help="a file holding the 32-byte Raft data key in hex: "
                                           "journal and snapshots encrypted at rest (raft/cipher.py)")
    p.add_argument("--force-new-cluster", action="store_true",
                   help="rewrite this member's data as a one-member group first")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=arguments.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(trio.run(main, arguments))

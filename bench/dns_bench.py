"""Embedded DNS throughput and latency, from a client inside a task namespace.

    .venv/bin/python bench/dns_bench.py [--seconds 5] [--runs 1]      (as root)

Creates a network namespace (only `lo`, no traffic leaves it), binds the
embedded DNS at 127.0.0.11:53 inside it and serves it from this process's trio
loop, as the node daemon does. A client process runs inside the namespace
(`ip netns exec`), with one connected UDP socket and pre-built A queries for
the service name `web`: first 1 query outstanding, then 16, each for
--seconds after a 0.5 s warm-up. Prints one JSON document: per phase queries/s,
p50/p99 latency in ms, lost queries, the client's and the server's CPU use
(percent of one CPU) and the server's CPU microseconds per answered query (its
capacity when the client, or other load, is the limit), the machine's load
average, and the Docker 20.10 figures measured on this machine kind
(NOTES-docker-anchor.md). Repeated queries hit the view's reply cache, as a
real client's repeated lookups would. The namespace is deleted on the way
out, also on failure.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DOCKER_ANCHOR = {   # A queries to 127.0.0.11 from a task namespace, 5 runs of 5 s, dockerd 20.10
    "1_outstanding": {"qps": "29.5k-57k", "p99_ms": "0.04-0.06"},
    "16_outstanding": {"qps": "81k-115k", "p99_ms": "1.0-1.3"},
    "server_cpu_percent": "85-130",
    "unknown_name_no_upstream": "no answer at all; client waits its full timeout",
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- the client, run inside the namespace ---------------------------------------------------
def client(outstanding: int, seconds: float, warmup: float = 0.5) -> dict:
    question = b"\x03web\x00\x00\x01\x00\x01"
    wires = [struct.pack("!6H", i, 0x0100, 1, 0, 0, 0) + question for i in range(65536)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.11", 53))
    sock.settimeout(1.0)
    send, recv, clock = sock.send, sock.recv, time.perf_counter_ns
    sent_at = [0] * 65536                  # by query id; a reply whose slot is 0 is late or stray
    latencies: list[int] = []
    seq = lost = total = 0
    cpu0 = cpu_seconds()
    measure_from = clock() + int(warmup * 1e9)
    end = measure_from + int(seconds * 1e9)
    for seq in range(outstanding):
        sent_at[seq] = clock()
        send(wires[seq])
    seq = outstanding
    while True:
        try:
            reply = recv(512)
        except socket.timeout:             # refill the window; what was in flight is lost
            lost += sum(1 for t in sent_at if t)
            sent_at = [0] * 65536
            for _ in range(outstanding):
                qid = seq & 0xFFFF
                seq += 1
                sent_at[qid] = clock()
                send(wires[qid])
            continue
        now = clock()
        qid = reply[0] << 8 | reply[1]
        t0 = sent_at[qid]
        if not t0:
            continue
        sent_at[qid] = 0
        total += 1
        if now >= measure_from:
            latencies.append(now - t0)
            if now >= end:
                break
        qid = seq & 0xFFFF
        seq += 1
        sent_at[qid] = now
        send(wires[qid])
    client_cpu = cpu_seconds() - cpu0
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6  # noqa: E731
    return {"outstanding": outstanding, "queries": len(latencies), "qps": round(len(latencies) / seconds),
            "p50_ms": round(pick(0.50), 4), "p99_ms": round(pick(0.99), 4),
            "mean_ms": round(statistics.fmean(latencies) / 1e6, 4), "lost": lost, "total_answered": total,
            "client_cpu_percent": round(100 * client_cpu / (seconds + warmup))}


# -- the server side -------------------------------------------------------------------------
async def run(ns: str, seconds: float, runs: int) -> dict:
    import trio

    from overlay import dns as edns

    records = edns.Records({"front": edns.NetworkRecords(services=(
        edns.ServiceRecord("web", "vip", vip="10.0.1.2", task_ips=("10.0.1.3", "10.0.1.4")),))})
    view = records.view(["front"])
    socks = await trio.to_thread.run_sync(edns.open_sockets_in_netns, ns)
    phases: dict[str, list] = {"1_outstanding": [], "16_outstanding": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: edns.serve(list(socks), lambda: view, [],
                                                           rng=random.Random(1), task_status=task_status))
        for _ in range(runs):
            for outstanding, key in ((1, "1_outstanding"), (16, "16_outstanding")):
                cpu0 = cpu_seconds()
                done = await trio.run_process(
                    ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--client",
                     "--outstanding", str(outstanding), "--seconds", str(seconds)],
                    capture_stdout=True, check=True)
                result = json.loads(done.stdout)
                cpu = cpu_seconds() - cpu0
                # CPU over the measured window, assuming the warm-up ran at the same rate per query
                result["server_cpu_percent"] = round(100 * cpu * result["queries"] / result["total_answered"]
                                                     / seconds)
                result["server_us_per_query"] = round(1e6 * cpu / result["total_answered"], 1)
                phases[key].append(result)
        nursery.cancel_scope.cancel()
    return phases


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--outstanding", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client(args.outstanding, args.seconds)))
        return
    import trio

    load_before = os.getloadavg()[0]
    ns = f"swarm-dnsbench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        phases = trio.run(run, ns, args.seconds, args.runs)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    print(json.dumps({"seconds_per_phase": args.seconds, "runs": args.runs, "cpus": os.cpu_count(),
                      "load_average_1min": [load_before, os.getloadavg()[0]],
                      **phases, "docker_20_10": DOCKER_ANCHOR}, indent=2))


if __name__ == "__main__":
    main()

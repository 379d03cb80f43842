"""Raft store benchmark: 3 managers on loopback, in one run, next to stock pysyncobj.

    .venv/bin/python bench/raft_bench.py [--quick]

Prints one JSON document:
- ours: our RaftNode (mTLS 1.3 transport, durable journal with fdatasync,
  journal and snapshots encrypted at rest with AES-256-GCM as managers run it,
  group commit): committed single-op transactions/s with 64 in flight,
  p50/p99 commit latency one at a time, both measured inside the leader
  process (the `bench` op of swarm.lab.raftserver), and leader kill -9 to the first
  committed write through a survivor (median of N trials);
- stock_no_journal / stock_journal: plain pysyncobj 0.3.17 (pickle over
  TCP, no fsync), without and with its FileJournal, same workload shape;
- ours_plain: the same RaftNode with its journal in the clear (no data key),
  to price encryption at rest: `encryption_cost` is encrypted over plain
  (latency) and plain over encrypted (throughput), so 1.10 means 10 % slower;
  the two runs alternate (--encryption-rounds, median of each);
- ratios of ours to each anchor.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from swarm.lab.raftharness import ControlError, RaftCluster, free_port, put  # noqa: E402


def ours(base: str, count: int, latency_count: int, failovers: int, encrypted: bool = True) -> dict:
    base = tempfile.mkdtemp(prefix="ours-", dir=base)
    cluster = RaftCluster(base, 3)
    if encrypted:       # one data key for the three members, as a cluster's managers share it
        key_path = os.path.join(base, "data-key")
        with open(key_path, "w") as f:
            f.write(os.urandom(32).hex())
        cluster.extra_args = ["--data-key-file", key_path]
    try:
        cluster.start_all()
        leader = cluster.leader()
        client = cluster.client(leader, timeout=300)
        latency = client.call("bench", count=latency_count, concurrency=1)
        throughput = client.call("bench", count=count, concurrency=64)
        batched = client.call("bench", count=count, concurrency=512)
        client.close()
        times = []
        for _ in range(failovers):
            leader = cluster.leader()
            survivor = next(m for m in cluster.members if m is not leader)
            cluster.kill(leader)
            killed = time.monotonic()
            while True:
                c = cluster.client(survivor, timeout=5)
                try:
                    if c.call("commit", ops=[put("f", str(time.monotonic()), b"x")], timeout=0.5)["ok"]:
                        break
                except ControlError:
                    pass
                finally:
                    c.close()
            times.append(time.monotonic() - killed)
            cluster.start(leader)
            cluster.wait_caught_up()  # each trial starts from a healthy three-member group
        return {
            "tx_per_s_64_in_flight": throughput["tx_per_s"],
            "tx_per_s_512_in_flight": batched["tx_per_s"],
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "failover_s_median": statistics.median(times) if times else None,
            "failover_s_all": times,
        }
    finally:
        cluster.stop_all()


def stock(base: str, journal: bool, count: int, latency_count: int) -> dict:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    result = os.path.join(base, f"stock-{journal}.json")
    procs = []
    try:
        for i, addr in enumerate(addrs):
            cmd = [sys.executable, os.path.join(ROOT, "bench", "stock_pysyncobj_node.py"), "--self", addr,
                   "--result", result, "--count", str(count), "--latency-count", str(latency_count)]
            for other in addrs:
                if other != addr:
                    cmd += ["--peer", other]
            if journal:
                cmd += ["--journal", os.path.join(base, f"stock-journal-{i}")]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 300
        while not os.path.exists(result):
            if time.monotonic() > deadline:
                raise TimeoutError("stock pysyncobj run did not finish")
            time.sleep(0.1)
        with open(result) as f:
            return json.load(f)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def encryption_cost(base: str, count: int, latency_count: int, rounds: int) -> dict:
    """Our RaftNode with and without a data key, alternating, no failovers: what encryption costs."""
    runs: dict[str, list[dict]] = {"plain": [], "encrypted": []}
    for _ in range(rounds):
        runs["plain"].append(ours(base, count, latency_count, 0, encrypted=False))
        runs["encrypted"].append(ours(base, count, latency_count, 0, encrypted=True))
    medians = {kind: {key: statistics.median(r[key] for r in rs)
                      for key in ("tx_per_s_64_in_flight", "tx_per_s_512_in_flight", "p50_ms", "p99_ms")}
               for kind, rs in runs.items()}
    plain, enc = medians["plain"], medians["encrypted"]
    return {"rounds": rounds, "ours_plain": plain, "ours_encrypted": enc, "runs": runs,
            "encryption_cost": {"p50": enc["p50_ms"] / plain["p50_ms"], "p99": enc["p99_ms"] / plain["p99_ms"],
                                "tx_per_s_64": plain["tx_per_s_64_in_flight"] / enc["tx_per_s_64_in_flight"],
                                "tx_per_s_512": plain["tx_per_s_512_in_flight"] / enc["tx_per_s_512_in_flight"]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--encryption-rounds", type=int, default=3,
                        help="plain/encrypted pairs of runs pricing encryption at rest (0: skip)")
    args = parser.parse_args()
    count, latency_count, failovers = (3000, 500, 3) if args.quick else (20000, 2000, 10)
    base = tempfile.mkdtemp(prefix="raft-bench-")
    try:
        figures = {
            "machine": {"cpus": os.cpu_count()},
            "workload": {"members": 3, "transport": "loopback", "command_bytes": 100,
                         "count": count, "latency_count": latency_count, "failover_trials": failovers},
            "ours": ours(base, count, latency_count, failovers),
            "stock_no_journal": stock(base, False, count, latency_count),
            "stock_journal": stock(base, True, count, latency_count),
        }
        o = figures["ours"]
        figures["ratios"] = {
            f"ours_vs_{name}": {
                "tx_per_s": o["tx_per_s_64_in_flight"] / figures[name]["tx_per_s"],
                "p50": o["p50_ms"] / figures[name]["p50_ms"],
            }
            for name in ("stock_no_journal", "stock_journal")
        }
        if args.encryption_rounds:
            figures["encryption"] = encryption_cost(base, count, latency_count, args.encryption_rounds)
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

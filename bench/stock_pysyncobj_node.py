"""One member of a stock pysyncobj group (the anchor of bench/raft_bench.py).

Plain pysyncobj 0.3.17 as its README shows it: TCPTransport (pickle, no TLS),
a @replicated dict setter, `appendEntriesUseBatch=False` (its low-latency
setting) and, with --journal, its FileJournal + full dump (no fsync).
Each member waits for a leader; the leader runs the workload and writes its
figures as JSON to --result.
"""
import argparse
import json
import os
import sys
import threading
import time

from pysyncobj import SyncObj, SyncObjConf, replicated


class KV(SyncObj):
    def __init__(self, self_addr, peers, conf):
        super().__init__(self_addr, peers, conf)
        self.data = {}

    @replicated
    def set(self, key, value):
        self.data[key] = value
        return True


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--self", required=True)
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--journal")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--latency-count", type=int, default=1000)
    p.add_argument("--result", required=True)
    args = p.parse_args()
    conf = SyncObjConf(appendEntriesUseBatch=False, raftMinTimeout=0.3, raftMaxTimeout=0.6,
                       appendEntriesPeriod=0.09, dynamicMembershipChange=True)
    if args.journal:
        os.makedirs(args.journal, exist_ok=True)
        conf.journalFile = os.path.join(args.journal, "journal")
        conf.fullDumpFile = os.path.join(args.journal, "dump")
    kv = KV(args.self, args.peer, conf)
    while kv._getLeader() is None:
        time.sleep(0.01)
    time.sleep(0.5)
    if not kv._isLeader():
        while not os.path.exists(args.result):
            time.sleep(0.05)
        time.sleep(0.2)
        return 0
    payload = "x" * 100
    latencies = []
    for i in range(args.latency_count):
        started = time.perf_counter()
        kv.set(f"l{i}", payload, sync=True, timeout=10)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    done = threading.Event()
    remaining = [args.count]
    lock = threading.Lock()

    def callback(result, error):
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    started = time.perf_counter()
    for i in range(args.count):
        kv.set(f"p{i}", payload, callback=callback)
    done.wait(120)
    elapsed = time.perf_counter() - started
    result = {
        "tx_per_s": args.count / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }
    with open(args.result + ".tmp", "w") as f:
        json.dump(result, f)
    os.rename(args.result + ".tmp", args.result)
    time.sleep(0.3)
    return 0


if __name__ == "__main__":
    sys.exit(main())

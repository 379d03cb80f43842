"""Scheduler throughput: place S services x R replicas on N simulated nodes in one pass.

    .venv/bin/python bench/scheduler_bench.py [--services 1000] [--replicas 100] [--nodes 1000] [--seed 1]

Nodes carry a zone label (4 zones) and a rack label; one in ten is a manager. Services mix
constraints (none, a zone, not a manager, zone and rack) and reservations (none, CPU, memory,
both). Prints one JSON line: tasks, nodes, placed, unplaced, seconds, placements_per_s.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from swarm.manager.scheduler import NodeInfo, schedule  # noqa: E402
from swarm.api.spec import ContainerSpec, Resources, Service, ServiceSpec, Task  # noqa: E402

CPU, MiB, GiB = 10 ** 9, 1 << 20, 1 << 30


def build(n_services: int, replicas: int, n_nodes: int, rng: random.Random):
    nodes = [NodeInfo(f"node{i:05d}", f"host{i}", role="manager" if i % 10 == 0 else "worker",
                      labels={"zone": f"z{i % 4}", "rack": f"r{i % 25}"},
                      resources=Resources(32 * CPU, 128 * GiB)) for i in range(n_nodes)]
    constraint_sets = [(), (), ("node.labels.zone==z1",), ("node.role!=manager",),
                       ("node.labels.zone==z2", "node.labels.rack!=r3")]
    reservation_sets = [Resources(), Resources(CPU // 10, 0), Resources(0, 256 * MiB),
                        Resources(CPU // 4, 512 * MiB)]
    services, pending = {}, []
    container = ContainerSpec("bench")
    for s in range(n_services):
        sid = f"svc{s:05d}"
        spec = ServiceSpec(sid, container, replicas=replicas, constraints=rng.choice(constraint_sets),
                           reservations=rng.choice(reservation_sets))
        services[sid] = Service(sid, spec)
        pending.extend(Task(f"{sid}.{r}", sid, sid, r, "", "running", container, 1) for r in range(1, replicas + 1))
    return nodes, services, pending


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    nodes, services, pending = build(args.services, args.replicas, args.nodes, random.Random(args.seed))
    start = time.perf_counter()
    plan = schedule(pending, nodes, [], services, random.Random(args.seed))
    seconds = time.perf_counter() - start
    print(json.dumps({"tasks": len(pending), "nodes": len(nodes), "placed": len(plan.assignments),
                      "unplaced": len(plan.unplaced), "seconds": round(seconds, 3),
                      "placements_per_s": round(len(plan.assignments) / seconds)}))


if __name__ == "__main__":
    main()

"""What a reconcile round costs the leader before its first write: the plan of a new service
and its records' encoding, in this process (no daemon, no Raft).

    .venv/bin/python bench/plan_cost.py [--nodes 1000] [--tasks 100000] [--runs 3] [--src TREE]

Builds the snapshot a round reads right after `service create --replicas TASKS` on NODES ready
nodes (no task yet), then times `planner.plan_round` (placement, ids, the tasks' values) and
`reconciler.plan_ops` (each task's record encoded as the store keeps it), then a round over the
same service once every task runs (`steady_plan_s`: nothing to do), each with CPython's
garbage collector as configured in the process and with the node daemon's thresholds. `--src
TREE` runs another tree (a `git archive` of an older commit) for a before/after in the same run.
Prints one JSON document: the median of the runs, in seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import itertools
import json
import random
import statistics
import sys
import time


def measure(nodes: int, tasks: int) -> dict[str, float]:
    from swarm.api import model, spec
    from swarm.manager.controlapi.specparams import spec_from_params
    from swarm.manager.planner import Snapshot, plan_round
    from swarm.manager.reconciler import plan_ops

    created = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    records = [dict(model.new_node(f"n{i:024d}", f"h{i}", "worker", f"127.1.{i // 250}.{i % 250 + 1}:2377",
                                   "", 1, created),
                    resources={"nano_cpus": 4_000_000_000, "memory_bytes": 1 << 34})
               for i in range(nodes)]
    service = spec.Service("s" * 25, spec_from_params({"name": "web", "image": "demo:1", "replicas": tasks}),
                           1, 1.0, 1.0)
    snapshot = Snapshot(services={service.id: (service, 1)}, nodes={n["id"]: (n, 1) for n in records})
    ids = itertools.count()
    started = time.process_time()
    plan = plan_round(snapshot, time.time(), random.Random(1), lambda: f"{next(ids):025d}")
    planned = time.process_time()
    ops = plan_ops(snapshot, plan)
    encoded = time.process_time()
    assert len(plan.create) == tasks and len(ops) == tasks
    # The same service a moment later, every task running where it was placed: a round that
    # finds nothing to do (what the leader runs again and again while nodes come and go).
    now = time.time()
    running = {}
    for task in plan.create:
        status = dataclasses.replace(task.status, state="running", timestamp=now)
        running[task.id] = (dataclasses.replace(task, status=status, running_at=now), 3)
    steady = Snapshot(services=snapshot.services, nodes=snapshot.nodes, tasks=running)
    before = time.process_time()
    again = plan_round(steady, now + 1, random.Random(2), lambda: f"{next(ids):025d}")
    after = time.process_time()
    assert not (again.create or again.update or again.delete)
    return {"plan_s": planned - started, "encode_s": encoded - planned, "steady_plan_s": after - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--src", help="the tree to measure (default: this checkout)")
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    else:
        sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
    default = gc.get_threshold()
    out: dict = {"nodes": args.nodes, "tasks": args.tasks, "runs": args.runs, "src": args.src or "."}
    for label, thresholds in (("gc_default", default), ("gc_daemon", (10_000, 50, 100))):
        gc.set_threshold(*thresholds)
        runs = []
        for _ in range(args.runs):
            gc.collect()
            runs.append(measure(args.nodes, args.tasks))
        out[label] = {"thresholds": list(thresholds),
                      **{key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}}
    gc.set_threshold(*default)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

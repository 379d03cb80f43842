"""The interpreter's settings for a node daemon: how often its garbage collector runs, and how
soon a thread that holds the interpreter hands it over.

The collector. CPython runs a young pass every 700 allocations, and a full pass, over every
object, as the long-lived ones grow by a quarter. A manager holding 100,000 tasks holds
millions of objects, and during a create those passes were a third of the leader's CPU
(bench/scale.py, 1,000 nodes x 100,000 tasks: 65.7 CPU-s and 85 s to converge with
CPython's thresholds, 37.4 to 46.6 CPU-s and 54 to 66 s with these; docs/benchmarks.md,
"Fifth look"). The records and typed tasks hold no reference cycles and are freed by their
reference counts as before; only cyclic garbage (trio's tracebacks and the like) waits
longer for a pass, and the managers' memory stayed the same.

The switch interval. A large reconcile round plans in a worker thread (seconds at 100,000
tasks) so that the trio thread keeps serving the nodes' calls meanwhile. But every socket call
of the trio thread gives the interpreter up, and getting it back from a thread that computes
takes up to the switch interval: at CPython's 5 ms, a thousand nodes' calls crawled while a
round planned, heartbeats waited unread, and the dispatcher gave the nodes that time again
before marking any down (docs/benchmarks.md, "Sixth look"). At 0.5 ms the trio thread gets the
interpreter back ten times sooner; the computing thread pays a few more switches.
"""
from __future__ import annotations

import gc
import sys

THRESHOLDS = (10_000, 50, 100)   # CPython's: (700, 10, 10)
SWITCH_INTERVAL = 0.0005         # seconds; CPython's: 0.005


def tune() -> None:
    """Use `THRESHOLDS` and `SWITCH_INTERVAL` in this process (the node daemon, and the
    simulated workers standing in for it)."""
    gc.set_threshold(*THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)

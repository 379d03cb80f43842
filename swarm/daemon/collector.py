"""How often a node daemon's garbage collector runs.

CPython's collector runs a young pass every 700 allocations, and a full pass, over every
object, as the long-lived ones grow by a quarter. A manager holding 100,000 tasks holds
millions of objects, and during a create those passes were a third of the leader's CPU
(bench/scale.py, 1,000 nodes x 100,000 tasks: 65.7 CPU-s and 85 s to converge with
CPython's thresholds, 37.4 to 46.6 CPU-s and 54 to 66 s with these; docs/benchmarks.md,
"Fifth look"). The records and typed tasks hold no reference cycles and are freed by their
reference counts as before; only cyclic garbage (trio's tracebacks and the like) waits
longer for a pass, and the managers' memory stayed the same.
"""
from __future__ import annotations

import gc

THRESHOLDS = (10_000, 50, 100)   # CPython's: (700, 10, 10)


def tune() -> None:
    """Use `THRESHOLDS` in this process (the node daemon, and the simulated workers standing in for it)."""
    gc.set_threshold(*THRESHOLDS)

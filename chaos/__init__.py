"""The chaos suite: fault injection on a lab cluster, and the invariants checked afterwards.

linearizability  the register checker (Wing-Gong search with memoization), pure
scenarios        named fault schedules drawn from a seeded RNG, pure
invariants       the five invariants as functions of what was recorded, pure
cluster          a lab's daemons and the fault primitives (signals, nftables in host namespaces)
faults           one scheduled fault: inject, hold, heal (also disk-full)
workload         client threads (writes and reads of node labels) and observers
runner           one scenario end to end: lab up, workload + faults, heal, checks, lab down
report           the verdict table and the JSON report
Entry points: `swarm chaos list|run` (swarm/cli_chaos.py) and `python -m chaos`.
"""

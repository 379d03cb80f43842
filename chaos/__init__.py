"""The chaos suite: fault injection on a lab cluster, and the invariants checked afterwards.

linearizability  the register checker (Wing-Gong search with memoization), pure
scenarios        named fault schedules drawn from a seeded RNG, pure
invariants       the five invariants as functions of what was recorded, pure
cluster          a lab's daemons and the fault primitives (signals, nftables in host namespaces)
faults           one scheduled fault: inject, hold, heal (also disk-full)
payloads         what the attacks send: malformed calls, odd names and labels, bad frames, pure
attacks          the attack scenarios' bodies beside a canary service (poison, big service, floods, names)
attack_checks    the attack scenarios' invariants (canary, memory, logs, elections, ...), pure
workload         client threads (writes and reads of node labels) and observers
runner           one scenario end to end: lab up, workload + faults, heal, checks, lab down
report           the verdict table and the JSON report
Entry points: `swarm chaos list|run` (swarm/cli/chaos.py) and `python -m chaos`.
"""

"""The replicated record store: pysyncobj made safe (see docs/architecture.md).

Modules that import pysyncobj import raft.inet_fix first (see there)."""

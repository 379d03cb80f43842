"""The names of task states and service modes, apart from the object model
(swarm.api.spec re-exports them) so that a client, such as the CLI waiting
for a service to converge, can read them without loading msgspec and every
spec type."""
from __future__ import annotations

# SwarmKit's task states, in order. A task only moves forward.
TASK_STATES = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
               "complete", "shutdown", "failed", "rejected", "remove", "orphaned")
TERMINAL_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
STATE_ORDER = {s: i for i, s in enumerate(TASK_STATES)}

JOB_MODES = frozenset({"replicated-job", "global-job"})
GLOBAL_MODES = frozenset({"global", "global-job"})

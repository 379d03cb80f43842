"""pyroute2 is loaded when a node first works on a network namespace, not with the daemon
(issue 16: its package imports all of its ~240 modules, 12 MiB, whatever one takes from it).

Each check runs in a fresh interpreter, since this test process may have loaded pyroute2
already. Netlink is only read here (the links of this process's namespace): nothing is made."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The daemon's module and the agent's networking imported; then a node whose tasks use no
# network: an empty network view, and a task without a sandbox removed.
NO_NETWORK = """
import json, sys
import trio
import swarm.daemon.host
from swarm.agent.networking import NodeNetworking

async def main():
    async with trio.open_nursery() as nursery:
        net = NodeNetworking("zz9lazynetlink", "127.0.0.1", nursery)
        await net.update({})
        await net.remove("task-without-networks")
        nursery.cancel_scope.cancel()

imported = "pyroute2" in sys.modules
trio.run(main)
print(json.dumps({"at_import": imported, "after_use": "pyroute2" in sys.modules}))
"""

# Raft's engine first (pysyncobj replaces socket.inet_ntop; raft.inet_fix puts it back), then
# the first netlink use: pyroute2 loads then, decodes addresses and its errors are translated.
FIRST_USE = """
import json, sys
import raft.node
from overlay import _rtnl
from overlay.errors import DatapathError

before = "pyroute2" in sys.modules
with _rtnl.iproute(None, "read lo") as ipr:
    lo = _rtnl.require_index(ipr, "lo")
    has_lo_address = _rtnl.has_address(ipr, lo, "127.0.0.1", 8)
    missing = _rtnl.delete_link(ipr, "zz9-no-such0")
try:
    with _rtnl.iproute(None, "read a missing link") as ipr:
        _rtnl.link_info(ipr, 2**31 - 1)
    error = None
except DatapathError as exc:
    error = str(exc)
print(json.dumps({"before": before, "after": "pyroute2" in sys.modules, "lo": has_lo_address,
                  "deleted_missing": missing, "error": error}))
"""


def run(script: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd="/", env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_node_whose_tasks_use_no_network_never_loads_pyroute2() -> None:
    assert run(NO_NETWORK) == {"at_import": False, "after_use": False}


def test_the_first_netlink_use_loads_pyroute2_and_works() -> None:
    out = run(FIRST_USE)
    assert out["before"] is False and out["after"] is True
    assert out["lo"] is True                 # 127.0.0.1/8 decoded (inet_ntop is the C one)
    assert out["deleted_missing"] is False
    # A NetlinkError raised in the block is caught by its lazily named class and translated.
    assert out["error"].startswith("Failed to read a missing link in this namespace: ")

"""A restarted node keeps no namespace of a network it no longer has, on a 3-host lab.

The bug: h2's daemon is killed (kill -9) while a task of `web` on `appnet` runs there; the
managers mark h2 down and start the task on h3. When h2's daemon comes back, its agent
removes the orphaned task, but its networking, which keeps in memory which networks it
holds, had forgotten appnet's namespace: it stayed, with its vxlan0. After `network rm
appnet`, the next network gets appnet's VNI again and every task placed on h2 was rejected
("Failed to create the VXLAN device for VNI 4097 ...: File exists"), again and again.

Here the leftover must go as soon as the orphan has gone (the service still runs on h3:
the network exists, h2 no longer needs it), and a task of a new network that reuses the
VNI must run on h2. Likewise for a network removed while the node was down (h3). A worker
is the node killed: a restarted manager may first answer from its own store, not caught up
yet, and re-adopt the task, which hides the bug. The lab's `lab down` always runs (the `lab`
fixture). The last test drives the node's networking directly in a host namespace of its
own: a leftover holding the VNI of a network being created goes even with a sandbox still
plugged in, one with a sandbox otherwise stays until that sandbox goes, another node's stays.
"""
import json
import os
import secrets
import subprocess

import pytest

from overlay import netns as ns
from overlay.network import remove_datapath
from overlay.testing import Underlay
from swarm.agent.networking import prefix_for
from swarm.lab.localcluster import eventually
from tests.integration.test_networking import ENV, PY, lab, on  # noqa: F401 (lab: fixture)
from tests.integration.test_stack_lab import js, namespaces

pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)


def node_ids(lab) -> dict[str, str]:
    return {n["hostname"]: n["id"] for n in js(lab, "h1", "node", "ls")}


def tasks_by_node(lab, service: str) -> dict[str, list[dict]]:
    """node -> the service's tasks meant to run there (desired running), with their state."""
    out: dict[str, list[dict]] = {}
    for row in js(lab, "h1", "service", "ps", service):
        if row["desired_state"] == "running":
            out.setdefault(row["node"], []).append(row)
    return out


def running_on(lab, service: str) -> list[str]:
    return sorted(r["node"] for rows in tasks_by_node(lab, service).values() for r in rows if r["state"] == "running")


def network(lab, name: str) -> dict:
    found = js(lab, "h1", "network", "inspect", name)
    return found[0] if isinstance(found, list) else found


def test_a_restarted_node_removes_the_namespace_of_a_network_it_no_longer_needs(lab):
    ids = node_ids(lab)
    prefix = prefix_for(ids["h2"])
    on(lab, "h1", "network", "create", "appnet")
    appnet = network(lab, "appnet")
    on(lab, "h1", "service", "create", "--name", "web", "--replicas", "2", "--network", "appnet",
       "--constraint", "node.hostname!=h1", "demo:1", "sleep", "100000", timeout=120)
    eventually(lambda: running_on(lab, "web") == ["h2", "h3"], 60, "web running on h2 and h3")
    appnet_ns = f"{prefix}-ov-{appnet['id'][:10]}"
    assert appnet_ns in namespaces()

    os.kill(int(open(os.path.join(lab[1]["h2"]["state_dir"], "swarm.pid")).read()), 9)
    eventually(lambda: running_on(lab, "web") == ["h3", "h3"], 90, "web's task of h2 started again on h3")
    on(lab, "h2", "daemon", "--detach", timeout=60)
    eventually(lambda: next(n for n in js(lab, "h1", "node", "ls") if n["hostname"] == "h2")["status"] == "ready",
               60, "h2 ready again")
    # The orphan goes (its task namespace), and with it appnet's namespace: nothing on h2 uses it.
    eventually(lambda: not [n for n in namespaces() if n.startswith(f"{prefix}-t-")], 60, "h2's orphan removed")
    eventually(lambda: appnet_ns not in namespaces(), 30, f"{appnet_ns} removed from h2")
    assert running_on(lab, "web") == ["h3", "h3"]

    # The VNI comes back with the next network, and h2 can run its tasks.
    on(lab, "h1", "service", "rm", "web")
    on(lab, "h1", "network", "rm", "appnet")
    eventually(lambda: not [n for n in namespaces() if n.endswith(appnet["id"][:10])], 60,
               "appnet's namespaces removed everywhere")
    on(lab, "h1", "network", "create", "appnet2")
    assert network(lab, "appnet2")["vni"] == appnet["vni"]
    on(lab, "h1", "service", "create", "--name", "web2", "--network", "appnet2", "--constraint",
       "node.hostname==h2", "--detach", "demo:1", "sleep", "100000", timeout=120)
    try:
        eventually(lambda: running_on(lab, "web2") == ["h2"], 60, "web2 running on h2")
        rejected = [r for r in js(lab, "h1", "service", "ps", "web2") if r["state"] == "rejected"]
        assert rejected == [], rejected
    finally:
        on(lab, "h1", "service", "rm", "web2", check=False)
        on(lab, "h1", "network", "rm", "appnet2", check=False)



def test_a_network_removed_while_a_node_was_down_leaves_nothing_there(lab):
    prefix = prefix_for(node_ids(lab)["h3"])
    on(lab, "h1", "network", "create", "downnet")
    downnet = network(lab, "downnet")
    on(lab, "h1", "service", "create", "--name", "pinned", "--network", "downnet", "--constraint",
       "node.hostname==h3", "demo:1", "sleep", "100000", timeout=120)
    downnet_ns = f"{prefix}-ov-{downnet['id'][:10]}"
    assert downnet_ns in namespaces()
    os.kill(int(open(os.path.join(lab[1]["h3"]["state_dir"], "swarm.pid")).read()), 9)
    on(lab, "h1", "service", "rm", "pinned")
    on(lab, "h1", "network", "rm", "downnet")
    on(lab, "h3", "daemon", "--detach", timeout=60)
    eventually(lambda: not [n for n in namespaces() if n.startswith(f"{prefix}-t-")], 60, "h3's old task removed")
    eventually(lambda: downnet_ns not in namespaces(), 30, f"{downnet_ns} removed from h3")


# The node's networking itself, in a host namespace of the test's own (an `Underlay` host): what an
# earlier run left, the first view of a restarted daemon, then the removal of an orphan's sandbox.
RESTARTED = r"""
import json, sys
import trio
from overlay.network import NetworkDatapath
from overlay.sandbox import Attachment, TaskSandbox
from swarm.agent.networking import NodeNetworking, prefix_for
from swarm.api import netview

node, other, vtep = sys.argv[1:4]
mine, theirs = prefix_for(node), prefix_for(other)
# The earlier run: A idle, B (VNI 4097) and C with a task sandbox still plugged in; D is another node's.
nets = {"A": (f"{mine}-ov-aaaaaaaaaa", 4100), "B": (f"{mine}-ov-bbbbbbbbbb", 4097),
        "C": (f"{mine}-ov-cccccccccc", 4101), "D": (f"{theirs}-ov-dddddddddd", 4102)}
for key, (name, vni) in nets.items():
    dp = NetworkDatapath(name, vni, f"10.0.{vni - 4000}.0/24", vtep)
    dp.create()
    if key in "BC":
        TaskSandbox(f"{mine}-t-{key * 10}", [Attachment.on(dp, f"10.0.{vni - 4000}.5")]).create()

def present():
    from overlay import netns
    return {key: netns.ns_exists(name) for key, (name, _) in nets.items()}

async def main():
    out = {}
    async with trio.open_nursery() as nursery:
        net = NodeNetworking(node, vtep, nursery)
        # The restarted daemon's first view: a new network that got B's VNI back.
        view = netview.NetworkView(networks={"newnetwork1": netview.Network(
            "newnetwork1", "new", "10.0.1.0/24", "10.0.1.1", 4097)})
        await net.update(view)
        out["after_view"] = present()
        out["new_network"] = sorted(net.datapaths)
        await net.remove("C" * 10)   # the orphan of C goes: so does C
        out["after_orphan"] = present()
        await net.teardown()
        nursery.cancel_scope.cancel()
    print(json.dumps(out))

trio.run(main)
"""


def test_leftovers_go_when_unused_or_when_their_vni_is_needed_and_another_nodes_stay():
    tag = secrets.token_hex(3)
    node, other = f"{tag}zzzzzzzzzzzzzzzzzzz", f"{tag[::-1]}yyyyyyyyyyyyyyyyyyy"
    underlay = Underlay(f"lo{tag}")
    try:
        host, ip = underlay.add_host("h", 1)
        proc = subprocess.run(["ip", "netns", "exec", host, PY, "-c", RESTARTED, node, other, ip],
                              capture_output=True, text=True, timeout=120, env=ENV)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.splitlines()[-1])
        # B held the VNI the new network needed: replaced, though a sandbox was still plugged in.
        # A was idle: gone. C still has a task plugged in: kept until that task's sandbox goes.
        assert out["after_view"] == {"A": False, "B": False, "C": True, "D": True}
        assert out["new_network"] == ["newnetwork1"]
        assert out["after_orphan"] == {"A": False, "B": False, "C": False, "D": True}
    finally:
        for name in ns.list_ns():
            if name.startswith((prefix_for(node) + "-", prefix_for(other) + "-")):
                remove_datapath(name)
        underlay.remove()
        assert [n for n in ns.list_ns() if tag in n or n.startswith(prefix_for(node))] == []

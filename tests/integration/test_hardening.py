"""One bad input must never stall the cluster: real daemons (a manager and a
worker), a worker's own certificate over real mutual TLS, and the real CLI."""
import json

import pytest
import trio

from swarm.ca import pki
from swarm.daemon.config import Paths, split_addr
from swarm.lab.localcluster import Swarm, eventually
from swarm.rpc.client import RPCClient
from swarm.rpc.messages import RPCError


@pytest.fixture
def cluster(tmp_path, demo_tar):
    swarm = Swarm(str(tmp_path))
    try:
        m1 = swarm.init("m1")
        w1 = swarm.join("w1", m1, "worker")
        for node in (m1, w1):
            swarm.run(node, "image", "import", demo_tar, "demo:1")
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 20, "nodes ready")
        # The managers learn a node's images from its next heartbeat.
        eventually(lambda: swarm.run(m1, "service", "create", "--name", "probe", "--detach", "demo:1", "true",
                                     check=False).returncode == 0, 20, "demo:1 known to the managers")
        swarm.run(m1, "service", "rm", "probe")
        yield swarm, m1, w1
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def call_as(node, target, method, params):
    """`method` on `target`'s node API with `node`'s own certificate."""
    paths = Paths(node.state_dir)
    ctx = pki.client_ssl_context(paths.read(paths.cert), paths.read(paths.key), paths.read(paths.ca))

    async def run():
        host, port = split_addr(target.addr)
        async with await RPCClient.connect_tls(host, port, ctx, timeout=10) as client:
            return await client.call(method, params, timeout=10)

    return trio.run(run)


def replicas(swarm, m1, name):
    return {r["name"]: r["replicas"] for r in swarm.json(m1, "service", "ls")}[name]


def test_a_worker_cannot_poison_the_store_with_its_own_certificate(cluster):
    swarm, m1, w1 = cluster
    swarm.run(m1, "service", "create", "--name", "web", "--replicas", "2", "--detach", "demo:1", "sleep", "1000")
    eventually(lambda: replicas(swarm, m1, "web") == "2/2", 60, "web running")
    mine = [t for t in swarm.json(m1, "service", "ps", "web") if t["node"] == "w1"]
    assert mine, "the spread puts one task on w1"
    for status in ({"state": "failed", "timestamp": "not-a-time"}, {"state": "nonsense", "timestamp": 1.0},
                   {"state": "failed", "err": "x" * 100_000}):
        with pytest.raises(RPCError) as err:
            call_as(w1, m1, "tasks.status", {"updates": [{"id": mine[0]["id"], "status": status}]})
        assert err.value.code == "bad_request"
    with pytest.raises(RPCError) as err:
        call_as(w1, m1, "heartbeat", {"resources": {"nano_cpus": "lots"}})
    assert err.value.code == "bad_request"
    # Orchestration goes on, for the poisoned service and for new ones; ps still answers.
    swarm.run(m1, "service", "create", "--name", "db", "--replicas", "2", "--detach", "demo:1", "sleep", "1000")
    swarm.run(m1, "service", "scale", "--detach", "web=3")
    eventually(lambda: replicas(swarm, m1, "db") == "2/2" and replicas(swarm, m1, "web") == "3/3", 60,
               "db and web converging after the attack")
    assert len(swarm.json(m1, "service", "ps", "web")) >= 3
    assert swarm.ls(m1)["w1"]["status"] == "ready"


def test_bad_names_and_port_clashes_are_refused_in_one_sentence(cluster):
    swarm, m1, _ = cluster
    for name in ("ünï", ".", "..", "-rf", "x" * 64):
        proc = swarm.run(m1, "service", "create", "--name", name, "--detach", "demo:1", "sleep", "1", check=False)
        assert proc.returncode != 0 and "invalid service name" in proc.stderr and "Traceback" not in proc.stderr
    swarm.run(m1, "service", "create", "--name", "web", "--publish", "8080:80", "--detach", "demo:1",
              "sleep", "1000")
    proc = swarm.run(m1, "service", "create", "--name", "web2", "--publish", "8080:80", "--detach", "demo:1",
                     "sleep", "1000", check=False)
    assert proc.returncode != 0 and "port '8080' is already in use by service 'web'" in proc.stderr
    assert [r["name"] for r in swarm.json(m1, "service", "ls")] == ["web"]
    # Nothing stalled: a new service converges, and inspect speaks RFC 3339.
    swarm.run(m1, "service", "create", "--name", "db", "--detach", "demo:1", "sleep", "1000")
    eventually(lambda: replicas(swarm, m1, "db") == "1/1", 60, "db running")
    [view] = json.loads(swarm.run(m1, "service", "inspect", "db").stdout)
    assert view["created_at"].endswith("Z") and "T" in view["created_at"]

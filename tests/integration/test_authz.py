"""Who may call what on the node API: real daemons, real mutual TLS, real certificates.

The role matrix is docs/daemon-api.md's "Roles"; a caller's rights follow its
node record in the managers' store, not only the OU of the certificate it
shows (a demoted manager may keep a copy of its old one)."""
import os

import trio

from swarm.ca import pki
from swarm.daemon.config import split_addr
from swarm.daemon.daemon import Daemon
from swarm.daemon.routing import NOT_MANAGER
from swarm.lab.localcluster import eventually
from swarm.rpc.client import RPCClient
from swarm.rpc.messages import RPCError

# What a worker node needs, as Docker's: its membership, its dispatcher calls
# and the reads the docs allow. Nothing of services, networks, logs or Raft.
WORKER_ALLOWED = {"ca.bundle", "join", "heartbeat", "cert.renew", "control.left", "tasks.assigned",
                  "tasks.status", "control.info", "control.node.ls", "control.node.inspect"}
ANONYMOUS_ALLOWED = {"ca.bundle", "join"}


def read_certs(state_dir: str) -> tuple[bytes, bytes, bytes]:
    def read(name: str) -> bytes:
        with open(os.path.join(state_dir, "certs", name), "rb") as f:
            return f.read()
    return read("node.pem"), read("node-key.pem"), read("ca.pem")


def node_context(certs: tuple[bytes, bytes, bytes]):
    cert, key, ca = certs
    return pki.client_ssl_context(cert, key, ca)


def call(addr: str, ctx, method: str, params: dict | None = None, timeout: float = 10.0):
    """One call over real TLS; returns ("ok", result) or (code, message)."""
    async def go():
        host, port = split_addr(addr)
        try:
            async with await RPCClient.connect_tls(host, port, ctx, timeout=timeout) as client:
                return "ok", await client.call(method, params or {}, timeout=timeout)
        except RPCError as exc:
            return exc.code, exc.message
    return trio.run(go)


def test_a_demoted_managers_old_certificate_has_no_manager_rights(swarm):
    m1 = swarm.init("m1")
    m2 = swarm.join("m2", m1, "manager")
    m3 = swarm.join("m3", m1, "manager")
    eventually(lambda: swarm.ls(m1)["m2"]["manager_status"] == "reachable", 15, "m2 reachable")
    saved = read_certs(m2.state_dir)  # m2's manager certificate, kept before the demotion
    old = node_context(saved)
    # While m2 is a manager its certificate works (the test's calls are sound).
    code, token = call(m1.addr, old, "control.join_token", {"role": "manager"})
    assert code == "ok" and token["token"].startswith("SWMTKN-1-")

    assert "demoted" in swarm.run(m1, "node", "demote", "m2").stdout
    eventually(lambda: swarm.json(m2, "info")["role"] == "worker", 15, "m2 to run as a worker")
    eventually(lambda: len(swarm.json(m1, "info")["raft"]["members"]) == 2, 10, "Raft down to 2 members")
    m2_raft = f"{split_addr(m2.addr)[0]}:{split_addr(m2.addr)[1] + 1}"
    for method, params in [("control.join_token", {"role": "manager"}),
                           ("control.node.update", {"ref": "m2", "availability": "drain"}),
                           ("control.node.promote", {"refs": ["m2"]}),
                           ("raft.join", {"raft_addr": m2_raft})]:
        for manager in (m1, m3):
            code, message = call(manager.addr, old, method, params)
            assert code == "forbidden", (manager.name, method, code, message)
            assert "worker" in message
    assert swarm.ls(m1)["m2"]["role"] == "worker" and swarm.ls(m1)["m2"]["availability"] == "active"
    assert len(swarm.json(m3, "info")["raft"]["members"]) == 2
    # A current manager still can.
    current = node_context(read_certs(m3.state_dir))
    code, token = call(m1.addr, current, "control.join_token", {"role": "manager"})
    assert code == "ok" and token["token"].startswith("SWMTKN-1-")
    code, _ = call(m1.addr, current, "control.node.update", {"ref": "m2", "label_add": {"k": "v"}})
    assert code == "ok"
    # Once the node is removed, its old certificate is refused altogether.
    swarm.kill(m2)
    eventually(lambda: swarm.ls(m1)["m2"]["status"] == "down", 10, "m2 down")
    swarm.run(m1, "node", "rm", "m2")
    code, _ = call(m1.addr, old, "control.info", timeout=5)
    assert code in ("forbidden", "unavailable")


def test_worker_and_anonymous_callers_get_exactly_the_documented_methods(swarm):
    m1 = swarm.init("m1")
    w1 = swarm.join("w1", m1, "worker")
    eventually(lambda: swarm.ls(m1)["w1"]["status"] == "ready", 10, "w1 ready")
    methods = Daemon(m1.state_dir).node_router().methods
    assert WORKER_ALLOWED < set(methods)  # the matrix names real methods
    secret = swarm.token(m1, "worker").split("-")[3]
    # A join with the right secret and nothing else is refused as bad input, not as
    # forbidden: what is checked here is the role, and nothing is created.
    params = {"join": {"secret": secret}}
    ca = read_certs(w1.state_dir)[2]
    worker = node_context(read_certs(w1.state_dir))
    anonymous = pki.pinning_client_context(ca)
    for ctx, allowed in ((worker, WORKER_ALLOWED), (anonymous, ANONYMOUS_ALLOWED)):
        answers = {m: call(m1.addr, ctx, m, params.get(m, {})) for m in methods}
        refused = {m for m, (code, _) in answers.items() if code == "forbidden"}
        assert set(methods) - refused == allowed, answers
        for m in refused:
            assert "may not be called by" in answers[m][1]
    assert len(swarm.ls(m1)) == 2  # the join probes created nothing


def test_a_worker_forwards_no_service_network_or_log_reads(swarm):
    m1 = swarm.init("m1")
    w1 = swarm.join("w1", m1, "worker")
    for args in (("service", "ls"), ("service", "ps", "web"), ("service", "inspect", "web"),
                 ("service", "logs", "web"), ("network", "ls"), ("network", "inspect", "ingress")):
        proc = swarm.run(w1, *args, check=False)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert proc.stderr == f"Error: {NOT_MANAGER}\n", args
    # the reads the docs allow a worker still go through a manager
    assert sorted(swarm.ls(w1)) == ["m1", "w1"]
    assert swarm.json(w1, "node", "inspect", "m1")[0]["role"] == "manager"
    assert swarm.json(w1, "info")["managers"] == 1

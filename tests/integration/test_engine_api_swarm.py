"""`docker swarm init/join/leave` through the Engine API, as with dockerd: daemons started
outside any swarm (`swarm daemon --detach` on empty state directories) answer `docker info`
with "Swarm: inactive", become a manager and a worker, and go back to inactive when they
leave, one process throughout. The real docker CLI (28.x) and Debian's docker.io 20.10
client, two nodes on loopback (swarm.lab.localcluster's addresses)."""
import os

import pytest

from swarm.engineapi import swarmops
from swarm.lab.localcluster import Swarm, data_path_port_args, eventually
from tests.integration.test_engine_api import OLD_DOCKER, docker, post, raw_request


@pytest.fixture
def idle(tmp_path):
    """Two daemons, m1 and w1, started on empty state directories; every one is killed by PID
    afterwards (the same process serves before, during and after the swarm) and the
    containers they started are removed."""
    swarm = Swarm(str(tmp_path))
    try:
        m1, w1 = swarm.node("m1"), swarm.node("w1")
        for node in (m1, w1):
            swarm.run(node, "daemon", "--detach")
            assert node.pid is not None and not os.path.exists(os.path.join(node.state_dir, "node.json"))
        yield swarm, m1, w1
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def host(node) -> str:
    return node.addr.rsplit(":", 1)[0]


def state(node, binary=None) -> str:
    return docker(node, "info", "--format", "{{.Swarm.LocalNodeState}}", binary=binary).stdout.strip()


def docker_init(node, *extra):
    # Two nodes share this machine: each listens on its own address (docker's default is 0.0.0.0:2377).
    port_args = data_path_port_args(os.environ.get("PYTEST_XDIST_WORKER", ""))
    return docker(node, "swarm", "init", "--advertise-addr", host(node), "--listen-addr", node.addr,
                  *port_args, *extra)


def docker_join(node, token, manager, binary=None, check=True):
    return docker(node, "swarm", "join", "--token", token, "--advertise-addr", host(node), "--listen-addr",
                  node.addr, manager.addr, binary=binary, check=check)


def test_docker_swarm_init_join_leave_on_daemons_started_outside_a_swarm(idle):
    swarm, m1, w1 = idle
    pids = {n.name: n.pid for n in (m1, w1)}
    for node in (m1, w1):
        assert "Swarm: inactive" in docker(node, "info").stdout
        assert state(node) == "inactive"
        refused = docker(node, "node", "ls", check=False)
        assert refused.returncode == 1 and refused.stderr.strip() == f"Error response from daemon: {swarmops.NO_SWARM}"
    assert swarm.run(m1, "info").stdout.startswith("Swarm: inactive\n")

    out = docker_init(m1).stdout
    m1_id = docker(m1, "info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
    assert out.startswith(f"Swarm initialized: current node ({m1_id}) is now a manager.\n\n")
    token = docker(m1, "swarm", "join-token", "-q", "worker").stdout.strip()
    assert f"    docker swarm join --token {token} {m1.addr}\n" in out
    assert "To add a manager to this swarm, run 'docker swarm join-token manager'" in out
    assert state(m1) == "active"

    # Debian's docker.io 20.10 client joins (API 1.41), the newer one reads the result
    assert docker_join(w1, token, m1, binary=OLD_DOCKER).stdout == "This node joined a swarm as a worker.\n"
    w1_id = docker(w1, "info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
    assert state(w1, binary=OLD_DOCKER) == "active"
    rows = eventually(lambda: dict(line.split() for line in docker(m1, "node", "ls", "--format",
                                                                   "{{.ID}} {{.Status}}").stdout.splitlines()),
                      15, "both nodes listed")
    assert rows == {m1_id: "Ready", w1_id: "Ready"}

    # the worker leaves: inactive again, the same daemon still answers
    assert docker(w1, "swarm", "leave").stdout == "Node left the swarm.\n"
    assert state(w1) == "inactive" and w1.pid == pids["w1"]
    assert not os.path.exists(os.path.join(w1.state_dir, "node.json"))
    eventually(lambda: "Down" in docker(m1, "node", "ls", "--filter", f"id={w1_id}", "--format",
                                        "{{.Status}}").stdout, 15, "w1 down on the manager")
    refused = docker(w1, "swarm", "leave", check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == "Error response from daemon: This node is not part of a swarm"

    # the manager: refused without --force (dockerd's sentence), then leaves
    refused = docker(m1, "swarm", "leave", check=False)
    assert refused.returncode == 1 and "You are attempting to leave the swarm on a node that is participating as a " \
        "manager." in refused.stderr
    assert state(m1) == "active"
    assert docker(m1, "swarm", "leave", "--force").stdout == "Node left the swarm.\n"
    assert state(m1) == "inactive" and m1.pid == pids["m1"]

    # and again, through the swarm CLI this time (it asks the running daemons over swarm.sock)
    swarm.init("m1")
    assert state(m1) == "active" and docker(m1, "info", "--format", "{{.Name}}").stdout.strip()
    swarm.join("w1", m1, "worker")
    eventually(lambda: {r["status"] for r in swarm.ls(m1).values()} == {"ready"} and len(swarm.ls(m1)) == 2, 15,
               "both nodes ready again")
    assert {n.name: n.pid for n in (m1, w1)} == pids


def test_bad_swarm_requests_are_refused_as_dockerd_and_change_nothing(idle):
    swarm, m1, w1 = idle
    # malformed or mistyped bodies: 400, the node stays inactive
    for path, body in (("/v1.50/swarm/init", b'{"AdvertiseAddr":'), ("/v1.50/swarm/init", b'{"AdvertiseAddr": 7}'),
                       ("/v1.50/swarm/join", b'{"ListenAddr": "0.0.0.0:2377", "JoinToken": "x"}')):
        status, answer = raw_request(w1, post(path, body))
        assert status == 400 and answer["message"].startswith("invalid JSON"), answer
    status, answer = raw_request(w1, post("/v1.50/swarm/init", b'{"ListenAddr": "0.0.0.0:2377"}'))
    assert status == 400 and "could not choose an IP address to advertise" in answer["message"]
    assert state(w1) == "inactive"

    docker_init(m1)
    # init on an active node: dockerd's 503
    refused = docker(m1, "swarm", "init", "--advertise-addr", host(m1), check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == f"Error response from daemon: {swarmops.SWARM_EXISTS}"
    status, answer = raw_request(m1, post("/v1.50/swarm/init", f'{{"AdvertiseAddr": "{host(m1)}"}}'.encode()))
    assert (status, answer) == (503, {"message": swarmops.SWARM_EXISTS})

    # join with a bad token: one sentence, a 400 as dockerd's InvalidArgument; nothing written
    token = docker(m1, "swarm", "join-token", "-q", "worker").stdout.strip()
    wrong_secret = token[:-25] + "a" * 25
    for bad, words in ((wrong_secret, "the join token is not valid for this swarm"), ("SWMTKN-1-nope", "join token")):
        refused = docker_join(w1, bad, m1, check=False)
        assert refused.returncode == 1 and words in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
        body = (f'{{"ListenAddr": "{w1.addr}", "AdvertiseAddr": "{w1.addr}", "RemoteAddrs": ["{m1.addr}"], '
                f'"JoinToken": "{bad}"}}').encode()
        assert raw_request(w1, post("/v1.50/swarm/join", body))[0] == 400
        assert state(w1) == "inactive" and not os.path.exists(os.path.join(w1.state_dir, "node.json"))
    # a field this daemon cannot honour is named, never dropped
    refused = docker(w1, "swarm", "join", "--token", token, "--data-path-addr", "127.0.0.1", m1.addr, check=False)
    assert refused.returncode == 1 and "DataPathAddr is not supported" in refused.stderr
    # the worker still joins with the right token afterwards
    assert docker_join(w1, token, m1).stdout == "This node joined a swarm as a worker.\n"
    log = open(os.path.join(w1.state_dir, "daemon.log")).read()
    assert "Traceback" not in log


def test_docker_py_from_swarm_init_to_removal(idle, demo_tar):
    """docker-py 7 alone: swarm init and join, a network, a secret, a config, a service using
    the secret and the config, running on both nodes; then everything removed and both left."""
    import docker as docker_py

    swarm, m1, w1 = idle
    manager = docker_py.DockerClient(base_url=f"unix://{m1.state_dir}/docker.sock", version="auto")
    worker = docker_py.DockerClient(base_url=f"unix://{w1.state_dir}/docker.sock", version="auto")
    try:
        assert manager.info()["Swarm"]["LocalNodeState"] == "inactive"
        port_args = data_path_port_args(os.environ.get("PYTEST_XDIST_WORKER", ""))
        port = int(port_args[1]) if port_args else None
        node_id = manager.swarm.init(advertise_addr=host(m1), listen_addr=m1.addr, data_path_port=port)
        assert manager.info()["Swarm"]["NodeID"] == node_id
        manager.swarm.reload()
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        assert worker.swarm.join(remote_addrs=[m1.addr], join_token=token, advertise_addr=host(w1),
                                 listen_addr=w1.addr) is True
        eventually(lambda: sorted(n.attrs["Status"]["State"] for n in manager.nodes.list()) == ["ready", "ready"],
                   15, "both nodes ready")
        for node in (m1, w1):
            swarm.run(node, "image", "import", demo_tar, "demo:1")

        net = manager.networks.create("pyback", driver="overlay", attachable=True)
        secret = manager.secrets.create(name="pypw", data=b"hunter2")
        config = manager.configs.create(name="pyconf", data=b"key=value")
        types = docker_py.types
        # Two loopback nodes share this machine's namespace, where a VXLAN device (an overlay
        # network's, the ingress one's) exists once: tasks on overlay networks and published
        # ports across nodes are the lab's (tests/integration/test_engine_api_lab.py).
        spec = dict(name="pyweb", mode=types.ServiceMode("replicated", 2),
                    secrets=[types.SecretReference(secret.id, "pypw")],
                    configs=[types.ConfigReference(config.id, "pyconf", filename="/etc/app.conf")],
                    maxreplicas=1)
        command = ["sh", "-c", 'echo "pw=$(cat /run/secrets/pypw) conf=$(cat /etc/app.conf)"; exec sleep 1000']
        # The managers learn a node's images from its next report: until then a create is refused.
        service = eventually(lambda: _create(manager, command, spec), 30, "the service created")
        eventually(lambda: sorted(t["NodeID"] for t in service.tasks(filters={"desired-state": "running"})
                                  if t["Status"]["State"] == "running") ==
                   sorted(n.id for n in manager.nodes.list()), 60, "a task running on each node")
        got = manager.services.get("pyweb").attrs["Spec"]
        assert got["TaskTemplate"]["Placement"]["MaxReplicas"] == 1
        assert [s["SecretName"] for s in got["TaskTemplate"]["ContainerSpec"]["Secrets"]] == ["pypw"]
        eventually(lambda: b"".join(service.logs(stdout=True)).count(b"pw=hunter2 conf=key=value") == 2, 30,
                   "both tasks reading the secret and the config")

        service.remove()
        eventually(lambda: _gone(secret), 30, "the secret free to remove")
        config.remove()
        eventually(lambda: _gone(net), 30, "the network free to remove")
        assert manager.services.list() == [] and manager.secrets.list() == [] and manager.configs.list() == []
        assert worker.swarm.leave() is True
        assert manager.swarm.leave(force=True) is True
        assert manager.info()["Swarm"]["LocalNodeState"] == "inactive"
        assert worker.info()["Swarm"]["LocalNodeState"] == "inactive"
    finally:
        manager.close()
        worker.close()


def _create(client, command, spec):
    import docker as docker_py

    try:
        return client.services.create("demo:1", command, **spec)
    except docker_py.errors.APIError as exc:
        if "not found on any node" in str(exc):
            return None
        raise


def _gone(obj) -> bool:
    import docker as docker_py

    try:
        obj.remove()
        return True
    except docker_py.errors.APIError:
        return False

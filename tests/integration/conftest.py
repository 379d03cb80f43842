import os
import subprocess

import pytest

from swarm.lab.localcluster import ROOT, Swarm, eventually
from swarm.lab.raftharness import RaftCluster


@pytest.fixture(scope="session")
def demo_tar(tmp_path_factory):
    """The busybox demo image as a rootfs tarball, built once per test run."""
    out = tmp_path_factory.mktemp("image") / "demo.tar"
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), str(out)], check=True,
                   capture_output=True)
    return str(out)


@pytest.fixture
def swarm(tmp_path):
    """Swarm nodes as real daemon processes; every one is killed afterwards, and the
    containers they started (which outlive their daemons by design) stopped and removed."""
    s = Swarm(str(tmp_path))
    try:
        yield s
    finally:
        s.stop_all()
        s.stop_containers()


@pytest.fixture
def three_nodes(swarm, demo_tar):
    """(swarm, m1, (w1, w2)): a manager and two workers, each holding demo:1, all ready."""
    m1 = swarm.init("m1")
    w1 = swarm.join("w1", m1, "worker")
    w2 = swarm.join("w2", m1, "worker")
    for node in (m1, w1, w2):
        swarm.run(node, "image", "import", demo_tar, "demo:1")
    eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 20, "nodes ready")
    return swarm, m1, (w1, w2)


@pytest.fixture
def image_node(swarm, demo_tar):
    """One node, manager and worker, whose image demo:1 the manager already knows."""
    m1 = swarm.init("m1")
    swarm.run(m1, "image", "import", demo_tar, "demo:1")
    # The manager learns the node's images with its next report.
    eventually(lambda: swarm.run(m1, "service", "create", "--detach", "--name", "probe", "--replicas", "0",
                                 "demo:1", check=False).returncode == 0, 30, "the image known to the manager")
    swarm.run(m1, "service", "rm", "probe")
    return m1


@pytest.fixture
def make_cluster(tmp_path):
    """Start Raft groups of real processes; every process is killed afterwards."""
    clusters = []

    def make(size=3, start=True, **kwargs):
        cluster = RaftCluster(str(tmp_path / f"c{len(clusters)}"), size, **kwargs)
        clusters.append(cluster)
        if start:
            cluster.start_all()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop_all()


# ---- registries on loopback (tests/integration/registry.py) ----

@pytest.fixture
def registry_plain(tmp_path):
    """docker-registry over plain HTTP on 127.0.0.1 (insecure by default, as Docker's 127.0.0.0/8)."""
    from tests.integration.registry import RegistryServer
    server = RegistryServer(str(tmp_path / "registry-plain")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry_tls(tmp_path):
    """docker-registry over TLS (server.pki is its CA) with htpasswd basic auth (REGISTRY_USER/PASSWORD)."""
    from tests.integration.registry import Pki, RegistryServer
    server = RegistryServer(str(tmp_path / "registry-tls"), pki=Pki(), htpasswd=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry_token(tmp_path):
    """docker-registry over plain HTTP behind a token server (server.token) that knows REGISTRY_USER."""
    from tests.integration.registry import RegistryServer, TokenServer
    token = TokenServer(str(tmp_path / "token")).start()
    server = RegistryServer(str(tmp_path / "registry-token"), token=token)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        token.stop()

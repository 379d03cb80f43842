import os
import subprocess

import pytest

from swarm.lab.localcluster import ROOT, Swarm
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
    """Swarm nodes as real daemon processes; every one is killed afterwards."""
    s = Swarm(str(tmp_path))
    try:
        yield s
    finally:
        s.stop_all()


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

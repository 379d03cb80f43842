import pytest

from swarm.lab.raftharness import RaftCluster


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

import pytest

from raft.memory import MemoryStore
from raft.node import RaftNode
from raft.store import Op
from raft.watch import LeadershipChanged


@pytest.mark.trio
async def test_memory_store_commits_with_compare_and_set_and_publishes_events_in_order():
    store = MemoryStore()
    with store.watch(kinds=["svc"]) as watch:
        first = await store.commit([Op.create("svc", "web", b"1")])
        assert first.ok and store.index == 1
        second = await store.commit([Op.update("svc", "web", b"2", expect=first.versions[0])])
        assert second.ok
        stale = await store.commit([Op.update("svc", "web", b"3", expect=first.versions[0])])
        assert not stale.ok and stale.error_code == "conflict"
        assert store.get("svc", "web").data == b"2"
        events = [await watch.next(), await watch.next()]
        assert [(e.id, e.action) for e in events] == [("web", "create"), ("web", "update")]
        store.set_leader(False)
        assert await watch.next() == LeadershipChanged(False, 2)
        assert not store.is_leader()


def test_memory_store_offers_what_the_raft_node_offers():
    for name in ("commit", "get", "list", "index", "watch", "linearizable_read", "is_leader"):
        assert hasattr(MemoryStore, name) and hasattr(RaftNode, name), name

"""RaftNode driven in-process from trio (one or three members in this
process, each with its own tick thread, real TLS on loopback): apply errors,
interrupted compaction on restart, watches and fencing signals."""
import os

import pytest
import trio

from swarm.lab.raftharness import RaftCluster
from raft.node import RaftConfig, encode_snapshot, open_raft_node
from swarm.lab.raftserver import load_tls
from raft.store import Op, RecordStore, decode_batch
from raft.watch import LeadershipChanged, Resync


def config_for(member, cluster, **kwargs):
    peers = [m.name for m in cluster.members if m is not member]
    return RaftConfig(member.node_id, member.address, member.data_dir, load_tls(member.cert_dir), peers=peers,
                      **kwargs)


async def wait_leader(nodes, timeout=10):
    with trio.fail_after(timeout):
        while True:
            for node in nodes:
                if node.is_leader():
                    return node
            await trio.sleep(0.02)


@pytest.mark.trio
async def test_an_operation_that_raises_in_apply_returns_an_error_and_the_next_write_commits(tmp_path):
    cluster = RaftCluster(str(tmp_path), 3)
    async with open_raft_node(config_for(cluster.members[0], cluster)) as n0, \
            open_raft_node(config_for(cluster.members[1], cluster)) as n1, \
            open_raft_node(config_for(cluster.members[2], cluster)) as n2:
        nodes = [n0, n1, n2]
        for node in nodes:
            original = node.state.apply_batch

            def exploding(txns, index, original=original):
                if any(not isinstance(t, Exception) and any(op.id == "boom" for op in t) for t in txns):
                    raise RuntimeError("disk on fire")
                return original(txns, index)

            node.state.apply_batch = exploding
        leader = await wait_leader(nodes)
        result = await leader.commit([Op.create("k", "boom", b"x")])
        assert not result.ok and result.error_code == "internal" and "disk on fire" in result.error
        ok = await leader.commit([Op.create("k", "fine", b"y")])
        assert ok.ok
        with trio.fail_after(5):
            while not all(n.get("k", "fine") for n in nodes):
                await trio.sleep(0.02)
        assert all(n.get("k", "boom") is None for n in nodes)


@pytest.mark.trio
async def test_restart_after_an_interrupted_compaction_keeps_entries_past_the_snapshot(tmp_path):
    cluster = RaftCluster(str(tmp_path), 1)
    member = cluster.members[0]
    async with open_raft_node(config_for(member, cluster)) as node:
        await wait_leader([node])
        for i in range(100):
            assert (await node.commit([Op.create("k", str(i), b"v")])).ok
    # The crash happened after the snapshot was renamed into place but before
    # the journal was compacted: build exactly that state on disk.
    from raft.journal import DurableJournal

    journal = DurableJournal(member.data_dir)
    entries = list(journal)
    journal._destroy()
    cut = len(entries) // 2
    state = RecordStore()
    for command, idx, _term in entries[: cut + 1]:
        if command[:1] == b"\x00":
            state.apply_batch(decode_batch(command[1:]), idx)
        else:
            state.advance(idx)
    snap = encode_snapshot(entries[cut], entries[cut - 1], [member.name], state.dump())
    with open(os.path.join(member.data_dir, "snapshot"), "wb") as f:
        f.write(snap)
    async with open_raft_node(config_for(member, cluster)) as node:
        await wait_leader([node])
        assert len(node.list("k")) == 100  # nothing after the snapshot point was dropped
        assert (await node.commit([Op.create("k", "after", b"v")])).ok


@pytest.mark.trio
async def test_watchers_get_ordered_events_resync_when_behind_and_leadership_changes(tmp_path):
    cluster = RaftCluster(str(tmp_path), 1)
    async with open_raft_node(config_for(cluster.members[0], cluster)) as node:
        with node.watch(kinds=["k"]) as watch, node.watch(kinds=["k"], maxlen=3) as slow:
            first = await watch.next()
            assert first == LeadershipChanged(True, first.term)
            await wait_leader([node])
            for i in range(10):
                await node.commit([Op.create("k", str(i), b"v")])
            seen = []
            while len(seen) < 10:
                item = await watch.next()
                seen.append(item.id)
            assert seen == [str(i) for i in range(10)]
            items = [await slow.next()]
            assert isinstance(items[0], Resync)  # it fell behind: told, not skipped
            assert node.linearizable_read is not None
            index = await node.linearizable_read()
            assert index >= node.index - 1

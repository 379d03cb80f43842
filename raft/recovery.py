"""Force a new single-member Raft group from a surviving manager's data.

When a majority of managers is lost for good, the group can never elect a
leader again. Like `docker swarm init --force-new-cluster`, this rewrites one
survivor's data (offline, with its daemon stopped) so that it starts as the
only member, keeping every record it holds:

1. load its snapshot and replay every journal entry after it (the survivor's
   whole log counts as committed: nobody is left to say otherwise);
2. write a snapshot of the result whose member list is this node alone, and a
   journal holding just the two entries that snapshot names, so pysyncobj
   loads them as a matching pair;
3. write the member list and the meta file (term kept, vote cleared).

Each file is replaced atomically, the snapshot first: a crash midway leaves
either the old data or a consistent new single-member state.
"""
from __future__ import annotations

import os

import msgpack

from raft.cipher import DataCipher
from raft.fsutil import atomic_write
from raft.journal import DurableJournal
from raft.node import encode_snapshot, member_name, read_snapshot
from raft.store import RecordStore, TxnError, decode_batch
from raft.transport import NO_OP, REGULAR


def force_new_cluster(data_dir: str, node_id: str, address: str, cipher: DataCipher | None = None) -> dict:
    """Rewrite `data_dir` as a one-member group (sealed with `cipher`, the cluster's data key,
    when given); returns a summary."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"no Raft data at {data_dir}")
    snapshot = read_snapshot(os.path.join(data_dir, "snapshot"), cipher)
    journal = DurableJournal(data_dir, cipher=cipher)
    state = RecordStore()
    if snapshot is not None:
        state.load(snapshot["state"])
    replayed = 0
    for command, idx, _term in list(journal):
        if idx <= state.index:
            continue
        if command[:1] == bytes([REGULAR]):
            try:
                state.apply_batch(decode_batch(command[1:]), idx)
            except TxnError:
                state.advance(idx)
        else:
            state.advance(idx)
        replayed += 1
    term = journal.getCurrentTerm()
    entries = list(journal)
    if len(entries) >= 2 and entries[-1][1] == state.index:
        prev, last = entries[-2], entries[-1]
    else:
        last_idx = max(state.index, 2)
        last_term = max(term, entries[-1][2] if entries else 0)
        prev = (bytes([NO_OP]), last_idx - 1, last_term)
        last = (bytes([NO_OP]), last_idx, last_term)
        state.advance(last_idx)
    name = member_name(node_id, address)
    blob = encode_snapshot(last, prev, [name], state.dump(), cipher)
    atomic_write(os.path.join(data_dir, "snapshot"), blob)
    journal._rewrite([prev, last])
    journal.setRaftCommitIndex(last[1])
    journal._voted_for = None
    journal._persist_meta()
    journal._destroy()
    atomic_write(os.path.join(data_dir, "members"), msgpack.packb([name]))
    return {"index": state.index, "replayed_entries": replayed,
            "records": sum(len(v) for v in state.records.values()), "member": name}

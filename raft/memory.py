"""The record store with no Raft behind it, for unit tests and simulation.

`MemoryStore` offers the same API as `RaftNode` to the layers above (commit,
get, list, index, watch, linearizable_read, is_leader), applying each
transaction at once at the next index, so orchestrators and schedulers can be
tested and simulated without consensus, threads or sockets. Leadership can
be flipped by the test (`set_leader`) to exercise fencing paths.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from raft.store import Op, Record, RecordStore, TxnResult, pack_txn
from raft.watch import LeadershipChanged, Watch, WatchHub


class Store(Protocol):
    """What the layers above Raft may use of a store."""

    async def commit(self, ops: Sequence[Op], timeout: float = 5.0) -> TxnResult: ...
    def get(self, kind: str, id: str) -> Record | None: ...
    def list(self, kind: str) -> dict[str, Record]: ...
    def changed_at(self, kind: str) -> int: ...
    @property
    def index(self) -> int: ...
    def watch(self, kinds: Sequence[str] | None = None, maxlen: int = 4096) -> Watch: ...
    async def linearizable_read(self, timeout: float = 5.0) -> int: ...
    def is_leader(self) -> bool: ...
    @property
    def term(self) -> int: ...


class MemoryStore:
    def __init__(self, leader: bool = True) -> None:
        self.state = RecordStore()
        self.hub = WatchHub()
        self._leader = leader
        self._term = 1

    async def commit(self, ops: Sequence[Op], timeout: float = 5.0) -> TxnResult:
        pack_txn(ops)  # the same size limit as a Raft log entry
        result, events = self.state.apply(list(ops), self.state.index + 1)
        if events:
            self.hub.publish(events)
        return result

    def get(self, kind: str, id: str) -> Record | None:
        return self.state.get(kind, id)

    def list(self, kind: str) -> dict[str, Record]:
        return self.state.list(kind)

    def changed_at(self, kind: str) -> int:
        return self.state.changed_at(kind)

    @property
    def index(self) -> int:
        return self.state.index

    def watch(self, kinds: Sequence[str] | None = None, maxlen: int = 4096) -> Watch:
        return self.hub.subscribe(kinds, maxlen)

    async def linearizable_read(self, timeout: float = 5.0) -> int:
        return self.state.index

    def is_leader(self) -> bool:
        return self._leader

    @property
    def term(self) -> int:
        return self._term

    def set_leader(self, acting: bool) -> None:
        if acting != self._leader:
            self._leader = acting
            self._term += 1
            self.hub.publish_leadership(LeadershipChanged(acting, self._term), self.state.index)

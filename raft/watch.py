"""Ordered change events delivered into trio, with an explicit resync signal.

How it works. A `WatchHub` lives in the trio thread. Whoever applies
transactions hands it batches of events in log order (`publish`, called in
the trio thread: the Raft thread reaches it through
`TrioToken.run_sync_soon`, which keeps order). Each `Watch` has a bounded
buffer; a watcher that falls so far behind that its buffer is full is not
skipped silently: its buffer is replaced by one `Resync` marker, and the
watcher must re-read the state it cares about (a fresh list at the store's
current index) before it continues. Leadership changes are delivered the
same way, as `LeadershipChanged`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Iterable, Union

import trio

from raft.store import Event


@dataclass(frozen=True)
class Resync:
    """The watcher fell behind; re-read the store (it is at least at `index`)."""

    index: int


@dataclass(frozen=True)
class LeadershipChanged:
    """This node started (`acting=True`) or stopped acting as leader."""

    acting: bool
    term: int


WatchItem = Union[Event, Resync, LeadershipChanged]


class Watch:
    def __init__(self, hub: "WatchHub", kinds: frozenset[str] | None, maxlen: int) -> None:
        self._hub = hub
        self.kinds = kinds
        self.maxlen = maxlen
        self._items: deque[WatchItem] = deque()
        self._wakeup = trio.Event()
        self.closed = False
        self.resyncs = 0

    def _push(self, item: WatchItem, index: int) -> None:
        if len(self._items) >= self.maxlen:
            self._items.clear()
            self._items.append(Resync(index))
            self.resyncs += 1
        elif not (self._items and isinstance(self._items[-1], Resync) and isinstance(item, Event)):
            self._items.append(item)
        self._wakeup.set()

    async def next(self) -> WatchItem:
        while not self._items:
            if self.closed:
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        return self._items.popleft()

    def __aiter__(self) -> AsyncIterator[WatchItem]:
        return self

    async def __anext__(self) -> WatchItem:
        try:
            return await self.next()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        self.closed = True
        self._hub._watches.discard(self)
        self._wakeup.set()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WatchHub:
    def __init__(self) -> None:
        self._watches: set[Watch] = set()

    def subscribe(self, kinds: Iterable[str] | None = None, maxlen: int = 4096) -> Watch:
        watch = Watch(self, frozenset(kinds) if kinds is not None else None, maxlen)
        self._watches.add(watch)
        return watch

    def publish(self, events: list[Event]) -> None:
        for watch in list(self._watches):
            for event in events:
                if watch.kinds is None or event.kind in watch.kinds:
                    watch._push(event, event.index)

    def publish_resync(self, index: int) -> None:
        """The store was replaced whole (a snapshot installed): every watcher re-reads it."""
        for watch in list(self._watches):
            watch._push(Resync(index), index)

    def publish_leadership(self, change: LeadershipChanged, index: int) -> None:
        for watch in list(self._watches):
            watch._push(change, index)

    def close(self) -> None:
        for watch in list(self._watches):
            watch.close()

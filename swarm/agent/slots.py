"""A limit on concurrent work that serves its waiters round-robin by key.

How this works. At most `limit` holders at once. A caller that finds every
slot taken waits in its key's queue (the key is the task's service); when a
holder leaves, its slot goes straight to the first waiter of the key at the
head of the rotation, and that key moves to the back if it still has
waiters. So a service with a thousand tasks to start takes one turn in each
round, and another service's three tasks start within a few turns instead of
after the thousand (a plain FIFO semaphore would serve them last).
"""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import trio


class FairSlots:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a limit of at least one slot is needed")
        self.limit = limit
        self.busy = 0
        self._queues: OrderedDict[Hashable, deque[trio.Event]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold one slot for the body; waits its turn (round-robin by key) when all are taken."""
        if self.busy < self.limit and not self._queues:
            self.busy += 1
            await trio.lowlevel.checkpoint()
        else:
            turn = trio.Event()
            self._queues.setdefault(key, deque()).append(turn)
            try:
                await turn.wait()
            except BaseException:
                if turn.is_set():
                    self._release()  # the slot was handed over as we were cancelled: pass it on
                else:
                    queue = self._queues[key]
                    queue.remove(turn)
                    if not queue:
                        del self._queues[key]
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        if not self._queues:
            self.busy -= 1
            return
        key, queue = next(iter(self._queues.items()))
        turn = queue.popleft()
        if queue:
            self._queues.move_to_end(key)
        else:
            del self._queues[key]
        turn.set()  # the slot changes hands: busy stays as it is

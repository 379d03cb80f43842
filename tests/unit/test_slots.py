"""FairSlots: a concurrency limit whose waiters are served round-robin by key."""
import pytest
import trio
import trio.testing

from swarm.agent.slots import FairSlots

pytestmark = pytest.mark.trio


async def test_at_most_limit_holders_and_a_small_service_is_not_served_last(autojump_clock):
    slots = FairSlots(2)
    order, holding, peak = [], [0], [0]

    async def work(key, i):
        async with slots.hold(key):
            holding[0] += 1
            peak[0] = max(peak[0], holding[0])
            order.append((key, i))
            await trio.sleep(1)
            holding[0] -= 1

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(work, "big", i)
            await trio.testing.wait_all_tasks_blocked()
        for i in range(2):
            nursery.start_soon(work, "small", i)
            await trio.testing.wait_all_tasks_blocked()
    assert peak[0] == 2 and slots.busy == 0 and slots.waiting == 0
    assert len(order) == 22
    # The two "small" tasks arrived last but take turns with "big": both run within the
    # first few slots freed, not after the twenty.
    small = [n for n, (key, _) in enumerate(order) if key == "small"]
    assert max(small) < 6, order   # a FIFO semaphore would give [20, 21]
    assert sorted(i for key, i in order if key == "big") == list(range(20))


async def test_a_cancelled_waiter_leaves_its_queue_and_a_cancelled_handover_passes_the_slot_on(autojump_clock):
    slots = FairSlots(1)
    got = []

    async def work(key):
        async with slots.hold(key):
            got.append(key)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(work, "a")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                async with slots.hold("b"):
                    pass
        assert slots.waiting == 0
        nursery.start_soon(work, "c")
    assert got == ["a", "c"] and slots.busy == 0


async def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError):
        FairSlots(0)

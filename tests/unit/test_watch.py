"""raft.watch.WatchHub: ordered delivery, filtering, explicit resync on overflow."""
import pytest
import trio
import trio.testing

from raft.store import Event
from raft.watch import LeadershipChanged, Resync, WatchHub


def ev(index: int, kind: str = "service", id: str = "web", action: str = "update") -> Event:
    return Event(index, kind, id, action)


async def take(watch, n: int) -> list:
    with trio.fail_after(5):
        return [await watch.next() for _ in range(n)]


@pytest.mark.trio
async def test_events_arrive_in_publish_order(autojump_clock):
    hub = WatchHub()
    watch = hub.subscribe()
    hub.publish([ev(1), ev(2, id="db")])
    hub.publish([ev(3, action="delete")])
    assert await take(watch, 3) == [ev(1), ev(2, id="db"), ev(3, action="delete")]


@pytest.mark.trio
async def test_waiting_watcher_is_woken_by_publish(autojump_clock):
    hub = WatchHub()
    watch = hub.subscribe()
    got = []

    async def consume():
        got.extend(await take(watch, 2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        hub.publish([ev(1)])
        await trio.testing.wait_all_tasks_blocked()
        hub.publish([ev(2)])
    assert got == [ev(1), ev(2)]


@pytest.mark.trio
async def test_kinds_filter_delivers_only_matching_kinds(autojump_clock):
    hub = WatchHub()
    services = hub.subscribe(kinds=["service"])
    everything = hub.subscribe()
    hub.publish([ev(1, "node"), ev(2, "service"), ev(3, "task"), ev(4, "service")])
    hub.close()
    assert [e async for e in services] == [ev(2, "service"), ev(4, "service")]
    assert [e.index async for e in everything] == [1, 2, 3, 4]


@pytest.mark.trio
async def test_overflowing_watcher_gets_exactly_one_resync_then_later_events(autojump_clock):
    hub = WatchHub()
    slow = hub.subscribe(maxlen=3)
    hub.publish([ev(i) for i in range(1, 7)])  # 1..3 fill it, 4 overflows, 5..6 are covered

    assert await take(slow, 1) == [Resync(4)]
    assert slow.resyncs == 1
    hub.publish([ev(7)])
    assert await take(slow, 1) == [ev(7)]  # not 5, 6 or a second Resync
    assert slow.resyncs == 1


@pytest.mark.trio
async def test_overflow_of_one_watcher_leaves_others_unaffected(autojump_clock):
    hub = WatchHub()
    slow = hub.subscribe(maxlen=3)
    fast = hub.subscribe(maxlen=100)
    hub.publish([ev(i) for i in range(1, 7)])
    assert await take(slow, 1) == [Resync(4)]
    hub.publish([ev(7)])
    assert await take(fast, 7) == [ev(i) for i in range(1, 8)]
    assert fast.resyncs == 0
    assert await take(slow, 1) == [ev(7)]


@pytest.mark.trio
async def test_events_published_while_resync_is_pending_are_covered_by_it(autojump_clock):
    hub = WatchHub()
    slow = hub.subscribe(maxlen=3)
    hub.publish([ev(i) for i in range(1, 5)])  # overflow at 4
    for i in range(5, 40):
        hub.publish([ev(i)])  # the watcher will re-read the store; no second Resync
    assert slow.resyncs == 1
    assert await take(slow, 1) == [Resync(4)]
    hub.publish([ev(40)])
    assert await take(slow, 1) == [ev(40)]


@pytest.mark.trio
async def test_watcher_that_keeps_up_never_resyncs(autojump_clock):
    hub = WatchHub()
    watch = hub.subscribe(maxlen=2)
    for i in range(1, 50):
        hub.publish([ev(i)])
        assert await take(watch, 1) == [ev(i)]
    assert watch.resyncs == 0


@pytest.mark.trio
async def test_leadership_change_is_delivered_to_every_watcher_in_order(autojump_clock):
    hub = WatchHub()
    services = hub.subscribe(kinds=["service"])
    everything = hub.subscribe()
    hub.publish([ev(1)])
    hub.publish_leadership(LeadershipChanged(True, 3), index=1)
    hub.publish([ev(2)])
    hub.publish_leadership(LeadershipChanged(False, 4), index=2)
    expected = [ev(1), LeadershipChanged(True, 3), ev(2), LeadershipChanged(False, 4)]
    assert await take(services, 4) == expected
    assert await take(everything, 4) == expected


@pytest.mark.trio
async def test_hub_close_ends_iteration_after_buffered_items(autojump_clock):
    hub = WatchHub()
    watch = hub.subscribe()
    hub.publish([ev(1), ev(2)])
    hub.close()
    with trio.fail_after(5):
        assert [e async for e in watch] == [ev(1), ev(2)]
        with pytest.raises(trio.EndOfChannel):
            await watch.next()


@pytest.mark.trio
async def test_hub_close_wakes_a_blocked_iterator(autojump_clock):
    hub = WatchHub()
    watch = hub.subscribe()
    got = []

    async def consume():
        async for item in watch:
            got.append(item)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            hub.publish([ev(1)])
            await trio.testing.wait_all_tasks_blocked()
            hub.close()
    assert got == [ev(1)]
    assert trio.current_time() == 0  # nothing waited on the clock


@pytest.mark.trio
async def test_closed_watch_receives_no_further_events(autojump_clock):
    hub = WatchHub()
    with hub.subscribe() as watch:
        hub.publish([ev(1)])
    hub.publish([ev(2)])
    with trio.fail_after(5):
        assert [e async for e in watch] == [ev(1)]

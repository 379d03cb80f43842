"""The leader's lease: a quorum's answers, stamped on pysyncobj's clock, against ours."""
import time

import pysyncobj.syncobj
import pytest

from raft import node
from raft.node import quorum_lease

TIMEOUT = 0.3


def test_the_engine_stamps_answers_on_the_clock_the_lease_reads():
    # pysyncobj stamps `__lastResponseTime` with its own monotonic(): CLOCK_MONOTONIC_RAW, not
    # time.monotonic(). If it ever changes clocks, the lease must read the new one.
    assert pysyncobj.syncobj.monotonicTime is node.engine_clock


@pytest.mark.parametrize("engine_behind", [0.0, 0.35, 10.0, -10.0])
def test_an_answer_just_heard_gives_a_full_lease_whatever_the_clocks_offset(engine_behind):
    local_now = 1000.0
    engine_now = local_now - engine_behind
    lease = quorum_lease([engine_now - 0.05, engine_now - 0.05], engine_now, local_now, TIMEOUT)
    assert lease == pytest.approx(local_now + TIMEOUT - 0.05)
    assert lease > local_now     # a leader that heard its quorum 50 ms ago acts


def test_the_quorum_s_latest_answer_sets_the_lease():
    # Five members: our vote and two answers make a quorum, so the second most recent counts.
    engine_now, local_now = 50.0, 7000.0
    heard = [engine_now - 0.9, engine_now - 0.1, engine_now - 2.0, engine_now - 0.2]
    assert quorum_lease(heard, engine_now, local_now, TIMEOUT) == pytest.approx(local_now + TIMEOUT - 0.2)


def test_a_quorum_not_heard_within_the_timeout_gives_no_lease():
    engine_now, local_now = 50.0, 7000.0
    assert quorum_lease([engine_now - 1.0, 0.0], engine_now, local_now, TIMEOUT) < local_now
    assert quorum_lease([0.0, 0.0], engine_now, local_now, TIMEOUT) < local_now   # never answered


def test_a_single_member_is_its_own_quorum():
    assert quorum_lease([], 5.0, 100.0, TIMEOUT) == pytest.approx(100.0 + TIMEOUT)


def test_the_clocks_are_read_where_they_are_used():
    # The real clocks: an answer stamped now gives a lease about TIMEOUT from now.
    lease = quorum_lease([node.engine_clock()] * 2, node.engine_clock(), time.monotonic(), TIMEOUT)
    assert time.monotonic() < lease <= time.monotonic() + TIMEOUT

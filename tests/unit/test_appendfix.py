"""raft.appendfix.plan_append: a follower never deletes an entry it holds with the leader's term.

The rewritten message is run through a model of pysyncobj 0.3.17's
AppendEntries handler (syncobj.py:991-1019): if prevLogIdx is held with
prevLogTerm, delete every local entry after it, append the entries, and
acknowledge the last one; a message without prevLogIdx only moves the
commit index.
"""
import copy
import random

import pytest

from raft.appendfix import AppendPlan, Backup, plan_append

TERM = 5


class FakeLog:
    """A follower's log: index -> term, contiguous from `first`."""

    def __init__(self, terms: dict[int, int]) -> None:
        self.terms = dict(terms)

    @classmethod
    def of(cls, first: int, terms: list[int]) -> "FakeLog":
        return cls({first + n: t for n, t in enumerate(terms)})

    def term_at(self, idx):
        return self.terms.get(idx)

    @property
    def last_index(self) -> int:
        return max(self.terms) if self.terms else 0


def append_entries(prev_idx, prev_term, entries, *, term=TERM, commit=0) -> dict:
    return {
        "type": "append_entries",
        "term": term,
        "commit_index": commit,
        "entries": [[b"\x00cmd", idx, t] for idx, t in entries],
        "prevLogIdx": prev_idx,
        "prevLogTerm": prev_term,
    }


def plan(message: dict, log: FakeLog, current_term: int = TERM) -> AppendPlan:
    return plan_append(message, current_term, log.term_at, log.last_index)


def pysyncobj_handle(log: FakeLog, message: dict):
    """Model of pysyncobj's handler. Returns (new log, acked index or None, deleted from or None)."""
    terms = dict(log.terms)
    if "prevLogIdx" not in message:
        return FakeLog(terms), None, None
    prev = message["prevLogIdx"]
    if terms.get(prev) != message["prevLogTerm"]:
        return FakeLog(terms), None, None  # "reset", nothing deleted
    deleted_from = None
    if terms and max(terms) > prev:
        deleted_from = prev + 1
        for idx in [i for i in terms if i > prev]:
            del terms[idx]
    entries = message.get("entries") or []
    for _, idx, term in entries:
        terms[idx] = term
    acked = entries[-1][1] if entries else prev
    return FakeLog(terms), acked, deleted_from


def deliver(message: dict, log: FakeLog, current_term: int = TERM):
    """plan_append, then pysyncobj; the ack is ours if we answered ourselves."""
    p = plan(message, log, current_term)
    after, acked, deleted_from = pysyncobj_handle(log, p.message)
    if p.reply is not None and not p.reply["success"]:
        # Fast backup: pysyncobj refused (prev conflicts) and we name an earlier index to try.
        assert acked is None and deleted_from is None and p.message is message
        assert p.reply["reset"] is True and 1 <= p.reply["next_node_idx"] < message["prevLogIdx"]
    elif p.reply is not None:
        assert acked is None, "both pysyncobj and the rewrite acknowledged"
        assert p.reply["success"] is True and p.reply["reset"] is False
        acked = p.reply["next_node_idx"] - 1
    return p, after, acked, deleted_from


def removed(before: FakeLog, after: FakeLog) -> set[tuple[int, int]]:
    return {(i, t) for i, t in before.terms.items() if after.terms.get(i) != t}


# -- the cases of the module docstring -----------------------------------------------------------


def test_all_entries_held_and_local_log_longer_becomes_heartbeat_plus_success_reply():
    log = FakeLog.of(1, [1, 1, 2, 2, 2, 2, 2, 2, 2, 2])  # 1..10
    message = append_entries(3, 2, [(4, 2), (5, 2), (6, 2)], commit=9)

    p = plan(message, log)

    assert p.skipped == 3
    assert p.message == {"type": "append_entries", "term": TERM, "commit_index": 6}
    assert p.reply == {"type": "next_node_idx", "next_node_idx": 7, "reset": False, "success": True}


def test_heartbeat_commit_index_is_clamped_to_verified_prefix_only_when_above_it():
    log = FakeLog.of(1, [1] * 10)
    message = append_entries(3, 1, [(4, 1), (5, 1)], commit=4)
    assert plan(message, log).message["commit_index"] == 4
    message = append_entries(3, 1, [(4, 1), (5, 1)], commit=10)
    assert plan(message, log).message["commit_index"] == 5


def test_fully_held_resend_deletes_nothing_and_acks_last_sent_entry():
    log = FakeLog.of(1, [1, 1, 2, 2, 2, 2, 2, 2, 2, 2])
    message = append_entries(3, 2, [(4, 2), (5, 2), (6, 2)], commit=9)

    p, after, acked, deleted_from = deliver(message, log)

    assert deleted_from is None
    assert after.terms == log.terms
    assert acked == 6


def test_stock_pysyncobj_would_delete_held_entries_on_the_same_message():
    # Why the rewrite exists: the unmodified message truncates 7..10.
    log = FakeLog.of(1, [1, 1, 2, 2, 2, 2, 2, 2, 2, 2])
    message = append_entries(3, 2, [(4, 2), (5, 2), (6, 2)])
    after, _, deleted_from = pysyncobj_handle(log, message)
    assert deleted_from == 4
    assert removed(log, after) == {(i, 2) for i in range(7, 11)}


def test_all_entries_held_and_log_ends_there_becomes_empty_append_at_last_entry():
    log = FakeLog.of(1, [1, 1, 2, 2, 2])
    message = append_entries(2, 1, [(3, 2), (4, 2), (5, 2)], commit=5)

    p = plan(message, log)

    assert p.reply is None and p.skipped == 3
    assert p.message == dict(message, prevLogIdx=5, prevLogTerm=2, entries=[])
    _, after, acked, deleted_from = deliver(message, log)
    assert (deleted_from, acked, after.terms) == (None, 5, log.terms)


def test_partial_overlap_moves_prev_log_idx_past_held_entries():
    log = FakeLog.of(1, [1, 1, 2, 2, 2])
    message = append_entries(2, 1, [(3, 2), (4, 2), (5, 2), (6, 3), (7, 3), (8, 3)], commit=4)

    p = plan(message, log)

    assert p.skipped == 3 and p.reply is None
    assert p.message["prevLogIdx"] == 5 and p.message["prevLogTerm"] == 2
    assert [e[1] for e in p.message["entries"]] == [6, 7, 8]
    assert {k: v for k, v in p.message.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")} == {
        "type": "append_entries", "term": TERM, "commit_index": 4,
    }
    _, after, acked, deleted_from = deliver(message, log)
    assert deleted_from is None and acked == 8
    assert after.terms == {**log.terms, 6: 3, 7: 3, 8: 3}


def test_conflict_at_entry_k_makes_pysyncobj_delete_from_exactly_that_index():
    log = FakeLog.of(1, [1, 1, 1, 2, 2, 2, 2, 2])  # 1..8
    message = append_entries(3, 1, [(4, 2), (5, 2), (6, 3), (7, 3), (8, 3), (9, 3)])

    p = plan(message, log)

    assert p.skipped == 2
    assert (p.message["prevLogIdx"], p.message["prevLogTerm"]) == (5, 2)
    assert [e[1] for e in p.message["entries"]] == [6, 7, 8, 9]
    _, after, acked, deleted_from = deliver(message, log)
    assert deleted_from == 6
    assert removed(log, after) == {(6, 2), (7, 2), (8, 2)}
    assert acked == 9


def test_conflict_at_first_entry_leaves_message_unchanged():
    log = FakeLog.of(1, [1, 1, 1, 2, 2])
    message = append_entries(3, 1, [(4, 3), (5, 3)])
    p = plan(message, log)
    assert p == AppendPlan(message, None, 0)
    assert p.message is message


@pytest.mark.parametrize("prev_idx, prev_term", [(1, 2), (12, 2), (0, 0), (None, None)])
def test_prev_mismatch_or_prev_not_held_leaves_message_unchanged(prev_idx, prev_term):
    log = FakeLog.of(1, [1, 1, 1, 2, 2])
    message = append_entries(prev_idx, prev_term, [])
    if prev_idx is not None:
        message["entries"] = [[b"\x00", prev_idx + 1, 2]]
    p = plan(message, log)
    assert p.message is message and p.reply is None and p.skipped == 0


def test_a_conflicting_stale_term_is_skipped_in_one_step():
    # A cut-off leader appended entries 4..9 in term 2; the new leader (term 3) has other entries there.
    log = FakeLog.of(1, [1, 1, 1, 2, 2, 2, 2, 2, 2])
    message = append_entries(8, 3, [(9, 3)], term=3)
    p, after, acked, deleted_from = deliver(message, log, current_term=3)
    assert p.message is message                               # pysyncobj still sees it (term, leader)
    assert p.reply == {"type": "next_node_idx", "next_node_idx": 4, "reset": True, "success": False}
    assert after.terms == log.terms and acked is None           # nothing deleted, nothing acknowledged
    # The leader then tries 4 (prev 3, held with term 1): the whole stale term is replaced at once.
    p, after, acked, deleted_from = deliver(append_entries(3, 1, [(4, 3), (5, 3)], term=3), log, current_term=3)
    assert deleted_from == 4 and acked == 5


def test_a_conflict_at_the_first_entry_of_its_term_is_left_to_pysyncobj():
    log = FakeLog.of(1, [1, 1, 2, 3])
    message = append_entries(3, 1, [(4, 4)])
    assert plan(message, log) == AppendPlan(message, None, 0, Backup(TERM, 3))   # pysyncobj's own "try 3" sticks


# -- a pipelining leader: the hint sticks until a message matches ---------------------------------


def test_the_rest_of_a_burst_after_a_conflict_repeats_the_hint():
    log = FakeLog.of(1, [1, 1, 1, 2, 2, 2, 2, 2, 2])           # 4..9 from a cut-off leader of term 2
    first = plan_append(append_entries(9, 3, [(10, 3), (11, 3)], term=3), 3, log.term_at, log.last_index)
    assert first.reply == {"type": "next_node_idx", "next_node_idx": 4, "reset": True, "success": False}
    assert first.backup == Backup(3, 4)
    # The same burst's next batch starts beyond our log: pysyncobj answers "try 10"; we answer 4 again.
    after = plan_append(append_entries(11, 3, [(12, 3)], term=3), 3, log.term_at, log.last_index, first.backup)
    assert after.reply == {"type": "next_node_idx", "next_node_idx": 4, "reset": True, "success": False}
    assert after.backup == first.backup and after.message["prevLogIdx"] == 11


def test_a_match_or_another_leader_ends_the_hint():
    log = FakeLog.of(1, [1, 1, 1, 2, 2])
    hint = Backup(3, 4)
    matched = plan_append(append_entries(3, 1, [(4, 3)], term=3), 3, log.term_at, log.last_index, hint)
    assert matched.backup is None and matched.reply is None
    other = plan_append(append_entries(9, 4, [], term=4), 4, log.term_at, log.last_index, hint)
    assert other.backup is None and other.reply is None       # a new leader: pysyncobj's own "reset" only
    shrunk = FakeLog.of(1, [1, 1])
    assert plan_append(append_entries(9, 3, [], term=3), 3, shrunk.term_at, shrunk.last_index, hint).reply is None


def pipelined_catch_up(leader_terms: list[int], follower: FakeLog, batch: int, *, keep_hint: bool,
                       rounds: int = 50) -> int | None:
    """Rounds of pysyncobj's leader (syncobj.py __sendAppendEntries: everything from next index to
    its last entry, `batch` entries per message, next index advanced as it sends; each answer's
    "reset" sets next index, the last one wins) until the follower's log equals the leader's."""
    term = max(leader_terms)
    last = len(leader_terms)
    next_index = last + 1                  # optimistic, as after a partition
    backup = None
    for round_no in range(1, rounds + 1):
        answers = []
        idx = next_index
        while True:
            entries = [(i, leader_terms[i - 1]) for i in range(idx, min(last, idx + batch - 1) + 1)]
            prev = idx - 1
            message = append_entries(prev, leader_terms[prev - 1] if prev else 0, entries, term=term, commit=last)
            p = plan_append(message, term, follower.term_at, follower.last_index, backup if keep_hint else None)
            backup = p.backup
            follower_before = follower
            follower, acked, _ = pysyncobj_handle(follower, p.message)
            if acked is None:                      # pysyncobj's "reset": the prev index, or our end + 1
                held = follower_before.term_at(p.message["prevLogIdx"])
                answers.append(p.message["prevLogIdx"] if held is not None else follower_before.last_index + 1)
            else:
                answers.append(acked + 1)
            if p.reply is not None:
                answers.append(p.reply["next_node_idx"])
            if not entries:
                break
            idx = entries[-1][0] + 1
            if idx > last:
                break
        next_index = answers[-1]
        if [follower.term_at(i) for i in range(1, last + 1)] == leader_terms and follower.last_index == last:
            return round_no
    return None


def test_a_healed_leader_with_a_stale_tail_catches_up_through_a_pipelining_leader():
    # The cut-off old leader holds 1..5 committed and 6..30 of its lost term 2; the new leader has
    # 6..120 of term 3: more than one batch beyond the follower's end.
    leader_terms = [1] * 5 + [3] * 115
    follower = FakeLog.of(1, [1] * 5 + [2] * 25)
    assert pipelined_catch_up(leader_terms, follower, batch=20, keep_hint=True) is not None
    # Without the sticky hint the burst's later answers ("try 31") undo the back-up every round.
    assert pipelined_catch_up(leader_terms, follower, batch=20, keep_hint=False) is None


def test_prev_below_compacted_start_leaves_message_unchanged():
    log = FakeLog.of(10, [3, 3, 3])  # 10..12
    message = append_entries(8, 3, [(9, 3), (10, 3), (11, 3)])
    p = plan(message, log)
    assert p.message is message and p.reply is None


def test_stale_term_leaves_message_unchanged_even_when_entries_are_held():
    log = FakeLog.of(1, [1, 1, 2, 2, 2, 2])
    message = append_entries(2, 1, [(3, 2), (4, 2)], term=TERM - 1)
    p = plan(message, log, current_term=TERM)
    assert p.message is message and p.reply is None and p.skipped == 0


@pytest.mark.parametrize("extra", [{}, {"serialized": [b"snap", True, False]}])
def test_message_without_prev_log_idx_is_unchanged(extra):
    log = FakeLog.of(1, [1, 1, 2])
    message = {"type": "append_entries", "term": TERM, "commit_index": 2, **extra}
    p = plan(message, log)
    assert p.message is message and p.reply is None


def test_empty_append_at_local_end_is_unchanged():
    log = FakeLog.of(1, [1, 1, 2])
    message = append_entries(3, 2, [])
    assert plan(message, log).message is message


def test_empty_append_behind_local_end_becomes_heartbeat_and_keeps_the_tail():
    log = FakeLog.of(1, [1, 1, 2, 2, 2])
    message = append_entries(3, 2, [], commit=5)

    p, after, acked, deleted_from = deliver(message, log)

    assert p.message == {"type": "append_entries", "term": TERM, "commit_index": 3}
    assert p.reply["next_node_idx"] == 4
    assert deleted_from is None and after.terms == log.terms and acked == 3


def test_plan_append_never_mutates_the_incoming_message():
    log = FakeLog.of(1, [1, 1, 2, 2, 2])
    message = append_entries(2, 1, [(3, 2), (4, 2), (5, 2), (6, 3)])
    snapshot = copy.deepcopy(message)
    plan(message, log)
    assert message == snapshot


@pytest.mark.parametrize(
    "prev, entries",
    [
        pytest.param(3, [(5, 1), (4, 1)], id="gap-inside-held-prefix"),
        pytest.param(3, [(5, 1), (6, 1)], id="first-entry-not-after-prev"),
        pytest.param(3, [(4, 1), (4, 1)], id="repeated-held-index"),
        pytest.param(3, [(4, 1), (5, 1), (7, 2)], id="gap-at-first-entry-after-held-prefix"),
        pytest.param(3, [(4, 2), (6, 2)], id="gap-after-a-conflicting-entry"),
        pytest.param(3, [(4, 1), (5, 2), (5, 2)], id="repeat-after-a-conflicting-entry"),
        pytest.param(6, [(7, 2), (8, 2), (10, 2)], id="gap-in-pure-append-past-local-end"),
    ],
)
def test_non_contiguous_entry_indexes_raise_value_error(prev, entries):
    # An unrefused gap reaches pysyncobj, which appends by position: the
    # entry lands at the wrong index, and the journal's index-gap check
    # drops it and everything after it on the next restart.
    log = FakeLog.of(1, [1, 1, 1, 1, 1, 1])  # 1..6, all term 1
    message = append_entries(prev, 1, entries)
    with pytest.raises(ValueError):
        plan(message, log)


# -- properties ------------------------------------------------------------------------------


def random_log(rng: random.Random, length: int, start_term: int = 1) -> list[int]:
    terms, term = [], start_term
    for _ in range(length):
        term += rng.random() < 0.25
        terms.append(term)
    return terms


def test_property_same_term_overlap_never_removes_a_held_entry():
    """Leader and follower agree wherever both hold an index: nothing is deleted,
    every sent entry ends up held, and the ack covers exactly what was sent."""
    rng = random.Random(20240601)
    accepted = rewritten = 0
    for _ in range(600):
        truth = random_log(rng, rng.randint(2, 30))  # terms of idx 1..n
        first = rng.randint(1, min(4, len(truth)))
        local_last = rng.randint(first, len(truth))
        leader_last = rng.randint(1, len(truth))
        log = FakeLog({i: truth[i - 1] for i in range(first, local_last + 1)})
        prev = rng.randint(0, leader_last)
        count = rng.randint(0, leader_last - prev)
        prev_term = truth[prev - 1] if prev else 0
        entries = [(i, truth[i - 1]) for i in range(prev + 1, prev + 1 + count)]
        message = append_entries(prev, prev_term, entries, commit=rng.randint(0, leader_last))

        p, after, acked, _ = deliver(message, log)

        assert removed(log, after) == set(), (log.terms, message, p)
        if log.term_at(prev) == prev_term:
            accepted += 1
            rewritten += p.message is not message
            for idx, term in entries:
                assert after.term_at(idx) == term
            assert acked == prev + count
            for i in range(first, acked + 1):
                assert after.term_at(i) == truth[i - 1]
        else:
            assert acked is None and after.terms == log.terms
        if p.reply is not None:
            assert p.message["commit_index"] <= prev + count
    assert accepted > 200 and rewritten > 50  # the generator exercises the rewrite


def test_property_conflicting_logs_delete_only_from_the_first_conflict():
    """After a divergence at c+1 (different terms), entries up to c are never
    removed, and a deletion happens only when the message carries index c+1."""
    rng = random.Random(77)
    deletions = 0
    for _ in range(600):
        common = random_log(rng, rng.randint(1, 15))
        c = len(common)
        top = common[-1]
        local_tail = random_log(rng, rng.randint(1, 8), start_term=top)
        leader_tail = random_log(rng, rng.randint(1, 8), start_term=max(local_tail) + 1)
        local_terms = common + local_tail
        leader_terms = common + leader_tail
        first = rng.randint(1, c)
        log = FakeLog({i: local_terms[i - 1] for i in range(first, len(local_terms) + 1)})
        prev = rng.randint(0, len(leader_terms))
        count = rng.randint(0, len(leader_terms) - prev)
        prev_term = leader_terms[prev - 1] if prev else 0
        entries = [(i, leader_terms[i - 1]) for i in range(prev + 1, prev + 1 + count)]
        message = append_entries(prev, prev_term, entries)

        p, after, acked, deleted_from = deliver(message, log)

        for i in range(first, c + 1):
            assert after.term_at(i) == local_terms[i - 1], (log.terms, message, p)
        if deleted_from is not None:
            deletions += 1
            assert deleted_from == c + 1, (log.terms, message, p)
            assert any(idx == c + 1 for idx, _ in entries)
        if acked is not None:
            for i in range(first, acked + 1):
                assert after.term_at(i) == leader_terms[i - 1]
    assert deletions > 50

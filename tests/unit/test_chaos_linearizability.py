"""The register linearizability checker (chaos/linearizability.py) on hand-made
histories, and against a brute-force permutation search on random small ones."""
import random

import pytest

from chaos.linearizability import CAS, FAIL, OK, READ, UNKNOWN, WRITE, Op, brute_force, check, check_register


def w(client, value, start, end, outcome=OK, key=""):
    return Op(client, WRITE, value, start, end, outcome, key)


def r(client, value, start, end, outcome=OK, key=""):
    return Op(client, READ, value, start, end, outcome, key)


def cas(client, expected, new, start, end, outcome=OK, key=""):
    return Op(client, CAS, (expected, new), start, end, outcome, key)


def assert_ok(history, init=None):
    result = check(history, init)
    assert result.ok, result.explanation
    assert brute_force(history, init)


def assert_violation(history, bad, init=None):
    result = check(history, init)
    assert not result.ok
    assert result.op == bad, result.explanation
    assert result.explanation
    assert not brute_force(history, init)
    return result


# -- sequential histories ------------------------------------------------------------------


def test_empty_history_is_linearizable():
    assert check([]).ok


def test_sequential_writes_and_reads():
    assert_ok([w(1, "a", 0, 1), r(2, "a", 2, 3), w(2, "b", 4, 5), r(1, "b", 6, 7)])


def test_tuples_are_accepted():
    assert check([(1, "write", "a", 0, 1, "ok"), (2, "read", "a", 2, 3, "ok")]).ok
    assert not check([(1, "write", "a", 0, 1, "ok"), (2, "read", None, 2, 3, "ok")]).ok


def test_reading_the_initial_value():
    assert_ok([r(1, None, 0, 1), w(1, 1, 2, 3)])
    assert_ok([r(1, 0, 0, 1)], init=0)


def test_stale_read_names_the_read_and_the_value_it_should_have_seen():
    bad = r(3, 1, 4, 5)
    result = assert_violation([w(1, 1, 0, 1), w(2, 2, 2, 3), bad], bad)
    assert result.states == (2,)
    assert "returned 1" in result.explanation and "only hold 2" in result.explanation
    assert "write 2" in result.explanation


def test_lost_write_is_a_read_of_the_old_value():
    bad = r(2, None, 2, 3)
    result = assert_violation([w(1, "x", 0, 1), bad], bad)
    assert result.states == ("x",)


def test_read_of_a_value_nobody_wrote():
    bad = r(1, "ghost", 0, 1)
    result = assert_violation([w(2, "x", 0, 2), bad], bad)
    assert "no operation ever wrote 'ghost'" in result.explanation


def test_read_of_a_value_before_its_write_began():
    bad = r(1, "x", 0, 1)
    assert_violation([bad, w(2, "x", 2, 3)], bad)


# -- concurrency ---------------------------------------------------------------------------


def test_a_read_concurrent_with_a_write_may_see_either_value():
    assert_ok([w(1, 1, 0, 10), r(2, None, 1, 2)])
    assert_ok([w(1, 1, 0, 10), r(2, 1, 1, 2)])


def test_reads_during_a_write_may_flip_once_but_not_back():
    assert_ok([w(1, 1, 0, 10), r(2, None, 1, 2), r(2, 1, 3, 4)])
    bad = r(3, None, 3, 4)
    assert_violation([w(1, 1, 0, 10), r(2, 1, 1, 2), bad], bad)


def test_concurrent_writes_may_land_in_either_order():
    assert_ok([w(1, "a", 0, 5), w(2, "b", 1, 6), r(3, "a", 7, 8)])
    assert_ok([w(1, "a", 0, 5), w(2, "b", 1, 6), r(3, "b", 7, 8)])


def test_two_readers_must_agree_on_the_order_of_concurrent_writes():
    history = [w(1, "a", 0, 10), w(2, "b", 0, 10), r(3, "a", 11, 12), r(4, "b", 13, 14), r(3, "a", 15, 16)]
    assert not check(history).ok
    assert not brute_force(history)


def test_touching_intervals_count_as_overlapping():
    assert_ok([w(1, 1, 0, 1), r(2, None, 1, 2)])


def test_several_clients_interleaved_correctly():
    history = [w(1, 1, 0, 2), r(2, 1, 1, 3), w(3, 2, 2.5, 4), r(1, 2, 4.5, 5), r(2, 2, 3.5, 6), w(1, 3, 6, 7),
               r(3, 3, 7.5, 8)]
    assert_ok(history)


# -- unknown and failed outcomes -----------------------------------------------------------


def test_an_unknown_write_may_take_effect_late():
    assert_ok([w(1, 1, 0, None, UNKNOWN), r(2, None, 1, 2), r(2, 1, 50, 51)])


def test_an_unknown_write_may_never_take_effect():
    assert_ok([w(1, 1, 0, 3, UNKNOWN), r(2, None, 10, 11)])


def test_an_unknown_write_cannot_take_effect_before_it_was_invoked():
    bad = r(2, 1, 0, 1)
    assert_violation([bad, w(1, 1, 2, None, UNKNOWN)], bad)


def test_an_unknown_write_that_took_effect_stays():
    bad = r(2, None, 4, 5)
    assert_violation([w(1, 1, 0, None, UNKNOWN), r(2, 1, 2, 3), bad], bad)


def test_a_failed_write_must_never_be_seen():
    bad = r(2, 1, 2, 3)
    assert_violation([w(1, 1, 0, 1, FAIL), bad], bad)


def test_unknown_and_failed_reads_constrain_nothing():
    assert_ok([w(1, 1, 0, 1), r(2, "junk", 2, None, UNKNOWN), r(2, "junk", 3, 4, FAIL)])


def test_many_unknown_writes_stay_cheap():
    history = [w(c, f"lost{c}", c, None, UNKNOWN) for c in range(60)]
    history += [w(99, "seen", 100, None, UNKNOWN), r(98, "seen", 200, 201)]
    result = check(history)
    assert result.ok and result.operations == 2


# -- compare-and-set -----------------------------------------------------------------------


def test_cas_chain():
    assert_ok([cas(1, 0, 1, 0, 1), cas(2, 1, 2, 2, 3), r(1, 2, 4, 5)], init=0)


def test_cas_that_succeeds_on_the_wrong_value():
    bad = cas(2, 0, 2, 2, 3)
    result = assert_violation([cas(1, 0, 1, 0, 1), bad], bad, init=0)
    assert "not 0" in result.explanation


def test_two_concurrent_cas_from_the_same_value_cannot_both_succeed():
    history = [cas(1, 0, 1, 0, 5), cas(2, 0, 2, 1, 6)]
    assert not check(history, init=0).ok
    assert not brute_force(history, init=0)


def test_concurrent_cas_may_chain_in_either_order():
    assert_ok([cas(1, 0, 1, 0, 5), cas(2, 1, 2, 1, 6), r(3, 2, 7, 8)], init=0)


def test_a_failed_cas_has_no_effect():
    assert_ok([cas(1, 0, 1, 0, 1, FAIL), r(2, 0, 2, 3)], init=0)


def test_an_unknown_cas_may_apply_if_its_value_was_observed():
    assert_ok([cas(1, 0, 1, 0, None, UNKNOWN), r(2, 1, 2, 3)], init=0)
    bad = r(2, 1, 2, 3)
    assert_violation([w(3, 5, 0, 0.5), cas(1, 0, 1, 1, None, UNKNOWN), bad], bad, init=0)


# -- several registers ---------------------------------------------------------------------


def test_registers_are_checked_independently_and_the_key_is_reported():
    history = [w(1, 1, 0, 1, key="a"), w(1, 2, 0, 1, key="b"), r(2, 1, 2, 3, key="a"), r(2, 1, 2, 3, key="b")]
    result = check(history)
    assert not result.ok and result.key == "b"
    assert "register 'b'" in result.explanation


def test_bad_operations_are_refused():
    with pytest.raises(ValueError):
        Op(1, "append", 1, 0, 1, OK)
    with pytest.raises(ValueError):
        Op(1, WRITE, 1, 0, 1, "maybe")
    with pytest.raises(ValueError):
        Op(1, WRITE, 1, 0, None, OK)
    with pytest.raises(ValueError):
        Op(1, WRITE, 1, 2, 1, OK)


# -- property: the search agrees with brute force -----------------------------------------


def random_history(rng: random.Random, size: int) -> list[Op]:
    ops = []
    for i in range(size):
        start = rng.randint(0, 12)
        end = start + rng.randint(0, 6)
        kind = rng.choice([READ, READ, WRITE, WRITE, CAS])
        outcome = rng.choice([OK, OK, OK, FAIL, UNKNOWN])
        complete = None if outcome == UNKNOWN and rng.random() < 0.5 else end
        if kind == CAS:
            value = (rng.randint(0, 2), rng.randint(0, 2))
        else:
            value = rng.randint(0, 2)
        ops.append(Op(rng.randint(1, 3), kind, value, float(start), None if complete is None else float(complete),
                      outcome))
    return ops


@pytest.mark.parametrize("seed", range(8))
def test_property_search_agrees_with_brute_force_on_small_histories(seed):
    rng = random.Random(seed)
    verdicts = set()
    for _ in range(250):
        history = random_history(rng, rng.randint(1, 6))
        init = rng.choice([None, 0])
        expected = brute_force(history, init)
        result = check_register(history, init)
        assert result.ok == expected, (history, init, result.explanation)
        verdicts.add(expected)
    assert verdicts == {True, False}  # both kinds were exercised


def simulated_history(rng: random.Random, clients: int, per_client: int, unknown: float = 0.1) -> list[Op]:
    """Clients of a real atomic register: each operation takes effect at one instant inside
    its interval; some answers are lost (unknown outcome, whether or not they took effect)."""
    events = []
    for c in range(clients):
        t = rng.random()
        for i in range(per_client):
            start, end = t, t + rng.uniform(0.1, 2.0)
            events.append((rng.uniform(start, end), c, i, start, end))
            t = end + rng.uniform(0.0, 0.5)
    state, ops = None, []
    for at, c, i, start, end in sorted(events):
        kind = rng.choice([READ, WRITE])
        lost = rng.random() < unknown
        if kind == WRITE:
            state = f"{c}.{i}"
            ops.append(Op(c, WRITE, state, start, None if lost else end, UNKNOWN if lost else OK))
        else:
            ops.append(Op(c, READ, state, start, end, OK))
    return ops


def test_property_a_real_register_is_linearizable_and_the_search_is_fast():
    import time
    history = simulated_history(random.Random(7), clients=6, per_client=400)
    started = time.monotonic()
    result = check(history)
    assert result.ok, result.explanation
    assert time.monotonic() - started < 10


def test_property_a_corrupted_real_history_is_caught():
    rng = random.Random(11)
    history = simulated_history(rng, clients=4, per_client=100, unknown=0.0)
    reads = [i for i, o in enumerate(history) if o.kind == READ and o.value is not None]
    i = reads[len(reads) // 2]
    history[i] = Op(history[i].client, READ, "never-written", history[i].invoke, history[i].complete, OK)
    result = check(history)
    assert not result.ok and result.op == history[i]

"""raft.store: transactions apply all or nothing, versions are unique, apply never raises."""
import random

import msgpack
import pytest

from raft.store import (
    Event,
    Op,
    Record,
    RecordStore,
    TxnError,
    TxnResult,
    decode_batch,
    encode_batch,
    txn_to_wire,
    version_of,
)


def v(index: int, seq: int = 0) -> int:
    return index << 16 | seq


def store_with(*records: tuple[str, str, bytes], index: int = 1) -> RecordStore:
    store = RecordStore()
    result, _ = store.apply([Op.create(k, i, d) for k, i, d in records], index)
    assert result.ok
    return store


# -- single transactions ---------------------------------------------------------------------


def test_create_writes_record_at_version_of_its_log_index():
    store = RecordStore()
    result, events = store.apply([Op.create("service", "web", b"spec")], 3)
    assert result == TxnResult(True, 3, (v(3),))
    assert store.get("service", "web") == Record(v(3), b"spec")
    assert events == [Event(3, "service", "web", "create")]
    assert store.index == 3


def test_version_is_index_shifted_by_16_or_seq():
    assert version_of(5, 0) == 5 * 65536
    assert version_of(5, 7) == 5 * 65536 + 7
    assert version_of(1, 65535) < version_of(2, 0)


def test_create_of_existing_record_is_a_conflict():
    store = store_with(("service", "web", b"a"))
    result, events = store.apply([Op.create("service", "web", b"b")], 2)
    assert (result.ok, result.error_code, events) == (False, "conflict", [])
    assert store.get("service", "web") == Record(v(1), b"a")


def test_update_with_matching_expect_succeeds_and_bumps_version():
    store = store_with(("service", "web", b"a"))
    result, events = store.apply([Op.update("service", "web", b"b", expect=v(1))], 2)
    assert result.ok
    assert store.get("service", "web") == Record(v(2), b"b")
    assert events == [Event(2, "service", "web", "update")]


def test_update_with_stale_expect_is_a_conflict_and_changes_nothing():
    store = store_with(("service", "web", b"a"))
    store.apply([Op.update("service", "web", b"b")], 2)
    result, _ = store.apply([Op.update("service", "web", b"c", expect=v(1))], 3)
    assert (result.ok, result.error_code) == (False, "conflict")
    assert store.get("service", "web") == Record(v(2), b"b")


def test_update_without_expect_is_unconditional():
    store = store_with(("service", "web", b"a"))
    assert store.apply([Op.update("service", "web", b"b")], 2)[0].ok


@pytest.mark.parametrize("op", [Op.update("service", "ghost", b"x"), Op.delete("service", "ghost")])
def test_update_or_delete_of_missing_record_is_a_conflict(op):
    store = store_with(("service", "web", b"a"))
    result, _ = store.apply([op], 2)
    assert (result.ok, result.error_code) == (False, "conflict")


def test_delete_with_matching_expect_removes_record():
    store = store_with(("service", "web", b"a"))
    result, events = store.apply([Op.delete("service", "web", expect=v(1))], 2)
    assert result.ok
    assert store.get("service", "web") is None
    assert store.list("service") == {}
    assert store.kinds() == []
    assert events == [Event(2, "service", "web", "delete")]


def test_delete_with_wrong_expect_keeps_record():
    store = store_with(("service", "web", b"a"))
    result, _ = store.apply([Op.delete("service", "web", expect=v(1) + 1)], 2)
    assert (result.ok, result.error_code) == (False, "conflict")
    assert store.get("service", "web") == Record(v(1), b"a")


def test_failing_op_leaves_earlier_ops_of_the_txn_unapplied():
    store = store_with(("service", "web", b"a"))
    result, events = store.apply(
        [
            Op.create("service", "db", b"new"),
            Op.update("service", "web", b"changed"),
            Op.delete("service", "ghost"),  # fails
        ],
        2,
    )
    assert not result.ok and events == []
    assert store.get("service", "db") is None
    assert store.get("service", "web") == Record(v(1), b"a")


def test_duplicate_create_in_one_txn_fails_whole_txn():
    store = RecordStore()
    result, _ = store.apply([Op.create("node", "n1", b"a"), Op.create("node", "n1", b"b")], 1)
    assert (result.ok, result.error_code) == (False, "conflict")
    assert store.get("node", "n1") is None


def test_ops_in_one_txn_see_earlier_ops_of_the_same_txn():
    store = store_with(("service", "web", b"a"))
    ok, _ = store.apply([Op.delete("service", "web"), Op.create("service", "web", b"again")], 2)
    assert ok.ok and store.get("service", "web") == Record(v(2), b"again")
    bad, _ = store.apply([Op.delete("service", "web"), Op.update("service", "web", b"x")], 3)
    assert not bad.ok and store.get("service", "web") == Record(v(2), b"again")


def test_every_op_of_a_txn_gets_the_txn_version():
    store = RecordStore()
    result, _ = store.apply([Op.create("a", "1", b""), Op.create("b", "2", b"")], 4)
    assert result.versions == (v(4), v(4))


# -- batches ---------------------------------------------------------------------------------


def test_apply_batch_gives_each_txn_its_own_version():
    store = RecordStore()
    results, _ = store.apply_batch(
        [[Op.create("task", "t1", b"")], [Op.create("task", "t2", b"")], [Op.create("task", "t3", b"")]],
        7,
    )
    assert [r.versions for r in results] == [(v(7, 0),), (v(7, 1),), (v(7, 2),)]
    assert store.get("task", "t3").version == v(7, 2)


def test_later_txn_in_batch_sees_earlier_writes_and_cas_on_old_version_fails():
    store = store_with(("task", "t1", b"old"))
    results, events = store.apply_batch(
        [
            [Op.update("task", "t1", b"first", expect=v(1))],
            [Op.update("task", "t1", b"second", expect=v(1))],  # old version: must fail
            [Op.update("task", "t1", b"third", expect=v(5, 0))],  # sees the first txn
        ],
        5,
    )
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error_code == "conflict"
    assert store.get("task", "t1") == Record(v(5, 2), b"third")
    assert [e.action for e in events] == ["update", "update"]


def test_stale_index_returns_stale_for_every_txn_and_changes_nothing():
    store = store_with(("task", "t1", b"a"), index=10)
    before = store.dump()
    for index in (10, 9, 1):
        results, events = store.apply_batch(
            [[Op.create("task", "t2", b"")], [Op.delete("task", "t1")]], index
        )
        assert [(r.ok, r.error_code, r.index) for r in results] == [(False, "stale", 10)] * 2
        assert events == []
    assert store.dump() == before


def test_failing_txn_still_advances_store_index():
    store = store_with(("task", "t1", b"a"))
    result, _ = store.apply([Op.create("task", "t1", b"dup")], 2)
    assert not result.ok
    assert store.index == 2
    assert store.apply([Op.create("task", "t9", b"")], 2)[0].error_code == "stale"


def test_txn_error_slot_in_batch_becomes_error_result_and_others_apply():
    store = RecordStore()
    results, _ = store.apply_batch(
        [[Op.create("a", "1", b"")], TxnError("invalid", "bad"), [Op.create("a", "2", b"")]], 3
    )
    assert [(r.ok, r.error_code) for r in results] == [(True, ""), (False, "invalid"), (True, "")]
    assert results[2].versions == (v(3, 2),)


def test_advance_moves_index_forward_only():
    store = RecordStore()
    store.advance(5)
    store.advance(3)
    assert store.index == 5


def test_dump_load_round_trip_through_msgpack():
    store = store_with(("service", "web", b"a"), ("node", "n1", b"\x00\xff"))
    store.apply([Op.update("service", "web", b"b")], 2)
    store.apply([Op.create("secret", "s", b"")], 3)
    wire = msgpack.unpackb(msgpack.packb(store.dump(), use_bin_type=True), raw=False)

    copy = RecordStore()
    copy.load(wire)

    assert copy.index == 3
    assert copy.dump() == store.dump()
    assert copy.get("service", "web") == Record(v(2), b"b")
    assert copy.kinds() == ["node", "secret", "service"]


def test_txn_result_wire_round_trip():
    result = TxnResult(False, 4, (1, 2), "conflict", "why")
    assert TxnResult.from_wire(msgpack.unpackb(msgpack.packb(result.to_wire()))) == result


# -- decoding log entries ----------------------------------------------------------------------


def test_encode_decode_batch_round_trip():
    txns = [
        txn_to_wire([Op.create("a", "1", b"x"), Op.update("a", "2", b"y", expect=v(3))]),
        txn_to_wire([Op.delete("b", "3", expect=v(1, 4))]),
    ]
    assert decode_batch(encode_batch(txns)) == [
        [Op.create("a", "1", b"x"), Op.update("a", "2", b"y", expect=v(3))],
        [Op.delete("b", "3", expect=v(1, 4))],
    ]


GOOD = ["create", "k", "id", None, b"d"]


@pytest.mark.parametrize(
    "bad_txn",
    [
        pytest.param([["upsert", "k", "id", None, b"d"]], id="bad-action"),
        pytest.param([["create", "k", "id", None, None]], id="create-missing-data"),
        pytest.param([["update", "k", "id", None, "text"]], id="update-str-data"),
        pytest.param([["update", "k", "id", True, b"d"]], id="bool-as-expect"),
        pytest.param([["update", "k", "id", 1.0, b"d"]], id="float-as-expect"),
        pytest.param([["create", "", "id", None, b"d"]], id="empty-kind"),
        pytest.param([["create", "k", 7, None, b"d"]], id="int-id"),
        pytest.param([["create", "k", "id", None]], id="four-fields"),
        pytest.param([{"action": "create"}], id="op-not-a-list"),
        pytest.param("create", id="txn-not-a-list"),
        pytest.param({"ops": []}, id="txn-a-map"),
        pytest.param(None, id="txn-nil"),
    ],
)
def test_decode_batch_refuses_malformed_txn_in_its_own_slot(bad_txn):
    decoded = decode_batch(msgpack.packb([[GOOD], bad_txn, [GOOD]], use_bin_type=True))
    assert decoded[0] == decoded[2] == [Op.create("k", "id", b"d")]
    assert isinstance(decoded[1], TxnError) and decoded[1].code == "invalid"


def test_decode_batch_ignores_data_of_delete():
    (ops,) = decode_batch(msgpack.packb([[["delete", "k", "id", None, "anything"]]]))
    assert ops == [Op.delete("k", "id")]


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"\x91", msgpack.packb([[]]) + b"\x00", msgpack.packb({1: 2}, strict_types=False)],
)
def test_decode_batch_raises_txn_error_on_undecodable_bytes(payload):
    with pytest.raises(TxnError) as info:
        decode_batch(payload)
    assert info.value.code == "invalid"


@pytest.mark.parametrize("payload", [msgpack.packb({"a": 1}), msgpack.packb(5), msgpack.packb(b"x")])
def test_decode_batch_raises_txn_error_when_entry_is_not_a_list(payload):
    with pytest.raises(TxnError):
        decode_batch(payload)


def random_value(rng: random.Random, depth: int = 0):
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, v(1), v(2, 1), 2**63, -(2**63), rng.randrange(1 << 20)])
    if choice == 3:
        return rng.random()
    if choice == 4:
        return rng.choice(["create", "update", "delete", "k", "id", "", "x" * 40])
    if choice == 5:
        return rng.randbytes(rng.randrange(4))
    if choice == 6:
        return msgpack.ExtType(rng.randrange(128), b"e")
    if choice == 7:
        return rng.choice(["k", "id", "other"])
    if choice in (8, 9):  # an op-shaped list, often nearly valid
        return [random_value(rng, depth + 1) if rng.random() < 0.3 else good
                for good in (rng.choice(["create", "update", "delete"]), "k", rng.choice(["id", "id2"]),
                             rng.choice([None, v(1), v(2)]), b"d")]
    if choice == 10:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(["a", "b"]): random_value(rng, depth + 1) for _ in range(rng.randrange(3))}


def test_apply_never_raises_on_random_garbage_entries():
    rng = random.Random(5150)
    store = store_with(("k", "id", b"seed"))
    index = 1
    applied = 0
    for n in range(400):
        if n % 2:
            payload = rng.randbytes(rng.randrange(1, 40))
        else:
            batch = [[random_value(rng, 1) for _ in range(rng.randrange(4))] for _ in range(rng.randrange(4))]
            if rng.random() < 0.2:
                batch = random_value(rng)
            payload = msgpack.packb(batch, use_bin_type=True)
        index += 1
        try:
            txns = decode_batch(payload)
        except TxnError:
            store.advance(index)
            continue
        results, events = store.apply_batch(txns, index)
        assert len(results) == len(txns)
        assert all(isinstance(r, TxnResult) and r.index == index for r in results)
        assert store.index == index
        applied += sum(r.ok for r in results)
    assert applied > 10  # some garbage was close enough to valid to apply

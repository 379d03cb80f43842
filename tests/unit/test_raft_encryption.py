"""Encryption at rest of the Raft journal and snapshots (raft/cipher.py, raft/journal.py, raft/node.py)."""
from __future__ import annotations

import os

import pytest

from raft.cipher import DataCipher, DecryptError, new_data_key
from raft.journal import MAGIC, SEALED_MAGIC, DurableJournal, JournalKeyError
from raft.node import SEALED_SNAPSHOT_MAGIC, SnapshotError, decode_snapshot, encode_snapshot

SECRET = b"s3cret-db-password-value"


def entry(idx: int, term: int = 1) -> tuple[bytes, int, int]:
    return (b"\x01" + SECRET + str(idx).encode(), idx, term)


def write_journal(directory: str, cipher: DataCipher | None, n: int = 5) -> None:
    journal = DurableJournal(directory, cipher=cipher)
    for i in range(1, n + 1):
        journal.add(*entry(i))
    journal.flush()
    journal._destroy()


def raw(directory: str) -> bytes:
    with open(os.path.join(directory, "journal"), "rb") as f:
        return f.read()


def test_sealed_records_hide_the_command_and_read_back(tmp_path):
    cipher = DataCipher(new_data_key())
    write_journal(str(tmp_path), cipher)
    data = raw(str(tmp_path))
    assert data.startswith(SEALED_MAGIC)
    assert SECRET not in data
    reopened = DurableJournal(str(tmp_path), cipher=cipher)
    assert [reopened[i] for i in range(len(reopened))] == [entry(i) for i in range(1, 6)]


def test_a_journal_in_the_clear_holds_the_command(tmp_path):
    """The control for the test above: without a key the bytes are readable."""
    write_journal(str(tmp_path), None)
    assert raw(str(tmp_path)).startswith(MAGIC) and SECRET in raw(str(tmp_path))


def test_another_key_or_no_key_refuses_to_open_and_keeps_the_file(tmp_path):
    write_journal(str(tmp_path), DataCipher(new_data_key()))
    before = raw(str(tmp_path))
    with pytest.raises(JournalKeyError, match="cannot be opened with this data key"):
        DurableJournal(str(tmp_path), cipher=DataCipher(new_data_key()))
    with pytest.raises(JournalKeyError, match="no data key"):
        DurableJournal(str(tmp_path))
    assert raw(str(tmp_path)) == before          # a wrong key never truncates anything


def test_a_torn_sealed_tail_is_cut_at_the_last_whole_record(tmp_path):
    cipher = DataCipher(new_data_key())
    write_journal(str(tmp_path), cipher)
    path = os.path.join(str(tmp_path), "journal")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 5)
    reopened = DurableJournal(str(tmp_path), cipher=cipher)
    assert len(reopened) == 4 and reopened[3] == entry(4)


def test_a_journal_in_the_clear_is_rewritten_sealed_when_opened_with_a_key(tmp_path):
    write_journal(str(tmp_path), None)
    cipher = DataCipher(new_data_key())
    reopened = DurableJournal(str(tmp_path), cipher=cipher)
    assert len(reopened) == 5
    reopened.add(*entry(6))
    reopened.flush()
    data = raw(str(tmp_path))
    assert data.startswith(SEALED_MAGIC) and SECRET not in data
    assert len(DurableJournal(str(tmp_path), cipher=cipher)) == 6


def test_a_changed_byte_in_a_sealed_record_does_not_open():
    cipher = DataCipher(new_data_key())
    sealed = bytearray(cipher.seal(b"payload", b"journal"))
    sealed[-1] ^= 1
    with pytest.raises(DecryptError):
        cipher.open(bytes(sealed), b"journal")
    with pytest.raises(DecryptError):           # the purpose is bound to the bytes
        cipher.open(cipher.seal(b"payload", b"journal"), b"snapshot")


def test_sealed_snapshots_round_trip_and_refuse_a_wrong_key():
    cipher = DataCipher(new_data_key())
    state = {"index": 7, "records": {"secret": {"a": SECRET}}}
    blob = encode_snapshot(entry(7), entry(6), ["n1@h:1"], state, cipher)
    assert blob.startswith(SEALED_SNAPSHOT_MAGIC) and SECRET not in blob
    assert decode_snapshot(blob, cipher)["state"]["records"]["secret"]["a"] == SECRET
    with pytest.raises(SnapshotError, match="cannot be opened"):
        decode_snapshot(blob, DataCipher(new_data_key()))
    with pytest.raises(SnapshotError, match="no data key"):
        decode_snapshot(blob)
    plain = encode_snapshot(entry(7), entry(6), ["n1@h:1"], state)
    assert SECRET in plain and decode_snapshot(plain, cipher)["members"] == ["n1@h:1"]


def test_a_data_key_has_32_bytes():
    with pytest.raises(ValueError, match="32 bytes"):
        DataCipher(b"short")

"""raft.journal.DurableJournal: what survives a reopen, and what a torn file becomes."""
import os
import subprocess
import struct
import zlib

import msgpack
import pytest

from raft.journal import MAGIC, RECORD_HEADER, DurableJournal, JournalIOError, decode_records, encode_record


def entry(idx: int, term: int = 1) -> tuple[bytes, int, int]:
    return (b"\x00cmd-%04d" % idx, idx, term)


_OPEN: list[DurableJournal] = []


@pytest.fixture(autouse=True)
def _close_journals():
    yield
    while _OPEN:
        crash(_OPEN.pop())


def open_journal(directory) -> DurableJournal:
    journal = DurableJournal(str(directory))
    _OPEN.append(journal)
    return journal


def filled(directory, entries) -> DurableJournal:
    journal = open_journal(directory)
    for e in entries:
        journal.add(*e)
    journal.flush()
    return journal


def crash(journal: DurableJournal) -> None:
    """Drop the journal as kill -9 would: no flush of meta, no clean shutdown."""
    if journal._fd is not None:
        os.close(journal._fd)
        journal._fd = None


def reopen(journal: DurableJournal) -> DurableJournal:
    crash(journal)
    return open_journal(journal.directory)


def entries_of(journal: DurableJournal) -> list:
    return [journal[i] for i in range(len(journal))]


def file_size(journal: DurableJournal) -> int:
    return os.path.getsize(journal.path)


def expected_size(entries) -> int:
    return len(MAGIC) + sum(len(encode_record(*e)) for e in entries)


def read_meta(journal: DurableJournal) -> dict:
    with open(journal.meta_path, "rb") as f:
        raw = f.read()
    return msgpack.unpackb(raw[4:], raw=False)


# -- round trips -------------------------------------------------------------------


def test_added_entries_survive_reopen_in_order(tmp_path):
    entries = [entry(i, 1 + i // 4) for i in range(1, 11)]
    journal = filled(tmp_path, entries)
    assert entries_of(journal) == entries
    journal = reopen(journal)
    assert entries_of(journal) == entries
    assert journal[0] == entries[0] and journal[-1] == entries[-1]
    assert journal[2:4] == entries[2:4]
    assert journal.last_index() == 10
    assert file_size(journal) == expected_size(entries)


def test_new_journal_file_starts_with_magic_and_nothing_else(tmp_path):
    journal = open_journal(tmp_path)
    assert len(journal) == 0
    with open(journal.path, "rb") as f:
        assert f.read() == MAGIC


def test_appends_after_reopen_follow_the_existing_records(tmp_path):
    journal = filled(tmp_path, [entry(1), entry(2)])
    journal = reopen(journal)
    journal.add(*entry(3))
    journal.flush()
    journal = reopen(journal)
    assert entries_of(journal) == [entry(1), entry(2), entry(3)]


def test_term_and_vote_survive_reopen(tmp_path):
    journal = open_journal(tmp_path)
    journal.setCurrentTerm(5, "node-b")
    journal = reopen(journal)
    assert journal.getCurrentTerm() == 5
    assert journal.getVotedForNodeId() == "node-b"
    journal.setCurrentTerm(6, None)
    journal = reopen(journal)
    assert journal.getCurrentTerm() == 6
    assert journal.getVotedForNodeId() is None


def test_commit_index_is_not_persisted_before_the_one_second_timer(tmp_path):
    journal = filled(tmp_path, [entry(i) for i in range(1, 6)])
    journal.setRaftCommitIndex(3)
    assert journal.getRaftCommitIndex() == 3
    journal = reopen(journal)
    assert journal.getRaftCommitIndex() == 0


def test_commit_index_is_persisted_by_one_second_timer(tmp_path):
    journal = filled(tmp_path, [entry(i) for i in range(1, 6)])
    journal.setRaftCommitIndex(3)
    journal.onOneSecondTimer()
    journal = reopen(journal)
    assert journal.getRaftCommitIndex() == 3


def test_persisted_commit_index_is_clamped_to_last_entry(tmp_path):
    journal = filled(tmp_path, [entry(i) for i in range(1, 6)])
    journal.setRaftCommitIndex(100)
    assert journal.getRaftCommitIndex() == 5
    journal.onOneSecondTimer()
    assert read_meta(journal)["commit"] == 5
    journal = reopen(journal)
    assert journal.getRaftCommitIndex() == 5


def test_one_second_timer_flushes_unsynced_entries_before_persisting_commit(tmp_path):
    journal = filled(tmp_path, [entry(1)])
    journal.add(*entry(2))
    assert journal.dirty
    journal.setRaftCommitIndex(2)
    journal.onOneSecondTimer()
    assert not journal.dirty
    assert read_meta(journal)["commit"] == 2


# -- torn and corrupt files -----------------------------------------------------------

ENTRIES = [entry(i, 2) for i in range(1, 6)]
RECORD = len(encode_record(*ENTRIES[-1]))


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 7, 8, 9, RECORD - 1, RECORD, RECORD + 1, 2 * RECORD + 3])
def test_torn_tail_is_cut_back_to_last_whole_record_on_open(tmp_path, cut):
    journal = filled(tmp_path, ENTRIES)
    crash(journal)
    size = os.path.getsize(journal.path)
    with open(journal.path, "r+b") as f:
        f.truncate(size - cut)
    whole = [e for n, e in enumerate(ENTRIES) if expected_size(ENTRIES[: n + 1]) <= size - cut]

    journal = open_journal(tmp_path)

    assert entries_of(journal) == whole
    assert os.path.getsize(journal.path) == expected_size(whole)


def test_appends_after_torn_tail_repair_survive_reopen(tmp_path):
    journal = filled(tmp_path, ENTRIES)
    crash(journal)
    with open(journal.path, "r+b") as f:
        f.truncate(os.path.getsize(journal.path) - 3)
    journal = open_journal(tmp_path)
    journal.add(*entry(5, 3))
    journal.add(*entry(6, 3))
    journal.flush()
    journal = reopen(journal)
    assert entries_of(journal) == ENTRIES[:4] + [entry(5, 3), entry(6, 3)]


@pytest.mark.parametrize("offset_in_payload", [0, 3, -1])
def test_flipped_byte_in_last_record_payload_drops_only_that_record(tmp_path, offset_in_payload):
    journal = filled(tmp_path, ENTRIES)
    crash(journal)
    last_start = expected_size(ENTRIES[:-1])
    payload_start = last_start + RECORD_HEADER.size
    pos = payload_start + offset_in_payload if offset_in_payload >= 0 else last_start + RECORD + offset_in_payload
    with open(journal.path, "r+b") as f:
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0x40]))

    journal = open_journal(tmp_path)

    assert entries_of(journal) == ENTRIES[:-1]
    assert os.path.getsize(journal.path) == last_start


def test_file_not_starting_with_magic_refuses_to_open(tmp_path):
    with open(tmp_path / "journal", "wb") as f:
        f.write(b"NOT-A-JOURNAL" + encode_record(*entry(1)))
    with pytest.raises(RuntimeError):
        open_journal(tmp_path)
    with open(tmp_path / "journal", "rb") as f:
        assert f.read().startswith(b"NOT-A-JOURNAL")  # left for a human to inspect


def test_file_shorter_than_magic_is_a_torn_header_and_starts_empty(tmp_path):
    with open(tmp_path / "journal", "wb") as f:
        f.write(MAGIC[:3])
    journal = open_journal(tmp_path)
    assert len(journal) == 0
    with open(journal.path, "rb") as f:
        assert f.read() == MAGIC


@pytest.mark.parametrize("damage", ["flip_body", "flip_crc", "truncate", "empty"])
def test_corrupt_meta_file_refuses_to_open(tmp_path, damage):
    journal = open_journal(tmp_path)
    journal.setCurrentTerm(4, "node-a")
    crash(journal)
    with open(journal.meta_path, "rb") as f:
        raw = bytearray(f.read())
    if damage == "flip_body":
        raw[-1] ^= 0x01
    elif damage == "flip_crc":
        raw[0] ^= 0x01
    elif damage == "truncate":
        raw = raw[: len(raw) - 2]
    else:
        raw = bytearray()
    with open(journal.meta_path, "wb") as f:
        f.write(raw)
    with pytest.raises(RuntimeError):
        open_journal(tmp_path)


# -- truncation, compaction, clear ----------------------------------------------------------


def test_delete_entries_from_then_reopen_keeps_only_the_prefix(tmp_path):
    entries = [entry(i) for i in range(1, 9)]
    journal = filled(tmp_path, entries)
    journal.deleteEntriesFrom(5)  # a position: drops idx 6, 7, 8
    assert entries_of(journal) == entries[:5]
    assert file_size(journal) == expected_size(entries[:5])
    journal = reopen(journal)
    assert entries_of(journal) == entries[:5]


def test_delete_entries_from_past_the_end_changes_nothing(tmp_path):
    entries = [entry(i) for i in range(1, 4)]
    journal = filled(tmp_path, entries)
    journal.deleteEntriesFrom(3)
    journal.deleteEntriesFrom(10)
    assert entries_of(reopen(journal)) == entries


def test_appends_after_delete_entries_from_replace_the_cut_tail(tmp_path):
    journal = filled(tmp_path, [entry(i, 1) for i in range(1, 6)])
    journal.deleteEntriesFrom(2)
    journal.add(*entry(3, 2))
    journal.add(*entry(4, 2))
    journal.flush()
    journal = reopen(journal)
    assert entries_of(journal) == [entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)]


def test_delete_entries_from_clamps_in_memory_commit_index(tmp_path):
    journal = filled(tmp_path, [entry(i) for i in range(1, 9)])
    journal.setRaftCommitIndex(7)
    journal.deleteEntriesFrom(4)
    assert journal.getRaftCommitIndex() == 4


def test_delete_entries_to_then_reopen_keeps_the_suffix_and_no_temp_files(tmp_path):
    entries = [entry(i) for i in range(1, 9)]
    journal = filled(tmp_path, entries)
    journal.setCurrentTerm(1, None)
    journal.deleteEntriesTo(5)  # a position: keeps idx 6, 7, 8
    assert entries_of(journal) == entries[5:]
    assert journal.term_at(6) == 1 and journal.term_at(5) is None
    journal = reopen(journal)
    assert entries_of(journal) == entries[5:]
    assert file_size(journal) == expected_size(entries[5:])
    assert sorted(os.listdir(tmp_path)) == ["journal", "meta"]


def test_truncate_after_compaction_uses_rewritten_offsets(tmp_path):
    entries = [entry(i) for i in range(1, 9)]
    journal = filled(tmp_path, entries)
    journal.deleteEntriesTo(3)  # keeps 4..8
    journal.add(*entry(9))
    journal.deleteEntriesFrom(2)  # keeps 4, 5
    journal = reopen(journal)
    assert entries_of(journal) == entries[3:5]
    assert file_size(journal) == expected_size(entries[3:5])


def test_clear_empties_the_journal_durably(tmp_path):
    journal = filled(tmp_path, [entry(i) for i in range(1, 5)])
    journal.clear()
    assert len(journal) == 0
    journal = reopen(journal)
    assert len(journal) == 0
    with open(journal.path, "rb") as f:
        assert f.read() == MAGIC
    assert [n for n in os.listdir(tmp_path) if ".tmp" in n] == []


def test_flush_clears_dirty(tmp_path):
    journal = open_journal(tmp_path)
    assert not journal.dirty
    journal.add(*entry(1))
    assert journal.dirty
    journal.flush()
    assert not journal.dirty
    journal.flush()  # nothing pending: a no-op
    assert not journal.dirty


# -- acknowledged-entry truncation counter --------------------------------------------------


def acked_journal(tmp_path, *, term: int, acked_term: int, acked_index: int) -> DurableJournal:
    journal = filled(tmp_path, [entry(i, 1) for i in range(1, 9)])
    journal.setCurrentTerm(term, None)
    journal.acked_term = acked_term
    journal.acked_index = acked_index
    return journal


def test_deleting_acked_entry_in_acked_term_counts_a_truncation(tmp_path):
    journal = acked_journal(tmp_path, term=3, acked_term=3, acked_index=5)
    journal.deleteEntriesFrom(4)  # position 4 is idx 5, which was acked
    assert journal.acked_truncations == 1


def test_deleting_well_below_acked_index_counts_one_truncation(tmp_path):
    journal = acked_journal(tmp_path, term=3, acked_term=3, acked_index=5)
    journal.deleteEntriesFrom(1)
    assert journal.acked_truncations == 1


def test_deleting_only_unacked_entries_counts_nothing(tmp_path):
    journal = acked_journal(tmp_path, term=3, acked_term=3, acked_index=5)
    journal.deleteEntriesFrom(5)  # idx 6 onwards
    journal.deleteEntriesFrom(20)  # past the end
    assert journal.acked_truncations == 0


def test_deleting_entries_acked_in_an_older_term_counts_nothing(tmp_path):
    journal = acked_journal(tmp_path, term=4, acked_term=3, acked_index=5)
    journal.deleteEntriesFrom(2)
    assert journal.acked_truncations == 0


def test_on_delete_from_hook_gets_first_deleted_log_index(tmp_path):
    journal = filled(tmp_path, [entry(i) for i in range(3, 9)])
    seen = []
    journal.on_delete_from = seen.append
    journal.deleteEntriesFrom(2)
    assert seen == [5]


# -- decode_records on crafted bytes ----------------------------------------------------------


def records(*entries) -> bytes:
    return b"".join(encode_record(*e) for e in entries)


def test_decode_records_parses_contiguous_records_with_offsets():
    data = MAGIC + records(entry(7), entry(8), entry(9))
    entries, offsets, end, reason = decode_records(data, len(MAGIC))
    assert entries == [entry(7), entry(8), entry(9)]
    assert offsets == [len(MAGIC), len(MAGIC) + RECORD, len(MAGIC) + 2 * RECORD]
    assert (end, reason) == (len(data), "")


@pytest.mark.parametrize("bad_idx", [4, 2, 1])
def test_decode_records_stops_at_index_gap(bad_idx):
    good = records(entry(1), entry(2))
    data = good + records(entry(bad_idx), entry(bad_idx + 1))
    entries, offsets, end, reason = decode_records(data)
    assert entries == [entry(1), entry(2)]
    assert offsets == [0, RECORD]
    assert (end, reason) == (len(good), "index gap")


def test_decode_records_stops_at_short_header():
    good = records(entry(1))
    entries, _, end, reason = decode_records(good + b"\x00\x00\x00")
    assert (entries, end, reason) == ([entry(1)], len(good), "short record header")


def test_decode_records_stops_at_short_body():
    good = records(entry(1))
    entries, _, end, reason = decode_records(good + records(entry(2))[:-1])
    assert (entries, end, reason) == ([entry(1)], len(good), "short record body")


def test_decode_records_stops_at_checksum_mismatch():
    good = records(entry(1))
    bad = bytearray(records(entry(2)))
    bad[-1] ^= 0xFF
    entries, _, end, reason = decode_records(good + bytes(bad))
    assert (entries, end, reason) == ([entry(1)], len(good), "checksum mismatch")


@pytest.mark.parametrize("payload", [b"\xc1", msgpack.packb([b"x", 2]), msgpack.packb({"a": 1}),
                                     msgpack.packb(["text", 2, 1])])
def test_decode_records_stops_at_undecodable_record_with_valid_crc(payload):
    good = records(entry(1))
    bad = RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload
    entries, _, end, reason = decode_records(good + bad)
    assert (entries, end, reason) == ([entry(1)], len(good), "undecodable record")


def test_record_layout_is_length_crc_msgpack():
    rec = encode_record(b"\x00ab", 3, 2)
    payload = msgpack.packb([b"\x00ab", 3, 2], use_bin_type=True)
    assert rec == struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


# -- a full disk stops the node; the unsafe in-memory option ------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (real ENOSPC, no mocks); unmounted also when the test fails."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        while _OPEN:
            crash(_OPEN.pop())
        subprocess.run(["umount", str(mount)], check=True)


def fill(directory) -> None:
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as f:
        for size in (4096, 1):
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                continue


def test_a_full_disk_stops_the_journal_loudly_and_for_good(small_disk):
    reasons: list[str] = []
    journal = DurableJournal(str(small_disk / "raft"), on_io_error=reasons.append)
    _OPEN.append(journal)
    journal.add(*entry(1))
    journal.flush()
    fill(small_disk)
    big = (b"\x00" + os.urandom(10000), 2, 1)  # bigger than any space left: a short write, then ENOSPC
    with pytest.raises(JournalIOError, match="cannot be written"):
        journal.add(*big)
    assert len(reasons) == 1 and "No space left on device" in reasons[0] and "never be acknowledged" in reasons[0]
    assert journal.broken == reasons[0]
    with pytest.raises(JournalIOError):           # no later change gets through, even with room again
        os.unlink(small_disk / "filler")
        journal.add(*entry(2))
    with pytest.raises(JournalIOError):
        journal.flush()
    with pytest.raises(JournalIOError):
        journal.setCurrentTerm(5, "x")
    assert len(journal) == 1
    crash(_OPEN.pop())
    reopened = open_journal(small_disk / "raft")   # the torn tail is cut back: only what was flushed
    assert [reopened[i] for i in range(len(reopened))] == [entry(1)]


def test_a_failed_term_write_stops_the_journal(small_disk):
    reasons: list[str] = []
    journal = DurableJournal(str(small_disk / "raft"), on_io_error=reasons.append)
    _OPEN.append(journal)
    fill(small_disk)
    with pytest.raises(JournalIOError):
        journal.setCurrentTerm(3, "peer")
    assert reasons and journal.broken


def test_a_volatile_journal_keeps_new_entries_in_memory_only(tmp_path):
    base = filled(tmp_path, [entry(1), entry(2)])
    base.setCurrentTerm(2, "a")
    crash(_OPEN.pop())
    size = os.path.getsize(tmp_path / "journal")
    volatile = DurableJournal(str(tmp_path), volatile=True)
    _OPEN.append(volatile)
    assert [volatile[i] for i in range(len(volatile))] == [entry(1), entry(2)]   # loads what is on disk
    for i in (3, 4, 5):
        volatile.add(*entry(i, 2))
    volatile.flush()
    volatile.deleteEntriesFrom(4)                  # truncation and compaction stay in memory too
    volatile.deleteEntriesTo(1)
    assert [volatile[i] for i in range(len(volatile))] == [entry(2), entry(3, 2), entry(4, 2), entry(5, 2)][:3]
    volatile.setCurrentTerm(3, "b")                # term and vote stay durable
    assert os.path.getsize(tmp_path / "journal") == size
    crash(_OPEN.pop())
    again = open_journal(tmp_path)
    assert [again[i] for i in range(len(again))] == [entry(1), entry(2)]             # the restart rolls back
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (3, "b")

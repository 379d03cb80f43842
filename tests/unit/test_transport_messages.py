"""raft.transport.check_message: every message pysyncobj 0.3.17 sends passes, nothing else does.

Messages are built as pysyncobj builds them (syncobj.py: request_vote :644,
response_vote :941, append_entries :1286-1320, next_node_idx :1102,
apply_command :557, apply_command_response :535/549/569/1091, timeout_now
:450) and then sent through our msgpack codec, so tuples arrive as lists,
exactly as the transport sees them.
"""
import pytest

from raft.framing import pack, unpack
from raft.transport import MEMBERSHIP, NO_OP, REGULAR, check_message

VERSION = 3  # pysyncobj's _COMMAND_TYPE.VERSION: its payload is unpickled


def wire(message):
    return unpack(pack(message))


def append_entries(**extra) -> dict:
    message = {"type": "append_entries", "term": 4, "commit_index": 9,
               "entries": [], "prevLogIdx": 10, "prevLogTerm": 3}
    message.update(extra)
    return message


ENTRIES = [
    (bytes([REGULAR]) + b"\x91\x91\x95\xa6create\xa1k\xa1i\xc0\xc4\x00", 11, 4),
    (bytes([NO_OP]), 12, 4),
    (bytes([MEMBERSHIP]) + b"\x92\xa3add\xa4n1@h", 13, 4),
]

ACCEPTED = {
    "request_vote": {"type": "request_vote", "term": 5, "last_log_index": 12, "last_log_term": 4},
    "response_vote": {"type": "response_vote", "term": 5},
    "append_entries_with_entries": append_entries(entries=ENTRIES),
    "heartbeat_with_prev": append_entries(),
    "heartbeat_without_prev": {"type": "append_entries", "term": 4, "commit_index": 9},
    "snapshot_first_chunk": {"type": "append_entries", "term": 4, "commit_index": 9,
                             "serialized": (b"\x00" * 64, True, False)},
    "snapshot_last_chunk": {"type": "append_entries", "term": 4, "commit_index": 9,
                            "serialized": (b"tail", False, True)},
    "snapshot_not_ready": {"type": "append_entries", "term": 4, "commit_index": 9, "serialized": None},
    "next_node_idx_success": {"type": "next_node_idx", "next_node_idx": 14, "reset": False, "success": True},
    "next_node_idx_reset": {"type": "next_node_idx", "next_node_idx": 10, "reset": True, "success": False},
    "apply_command": {"type": "apply_command", "command": bytes([REGULAR]) + b"\x91\x90", "request_id": 7},
    "apply_command_no_callback": {"type": "apply_command", "command": bytes([REGULAR]) + b"\x90"},
    "apply_command_membership": {"type": "apply_command", "command": bytes([MEMBERSHIP]) + b"\x90"},
    "apply_command_response_ok": {"type": "apply_command_response", "request_id": 7, "log_idx": 14,
                                  "log_term": 4},
    "apply_command_response_error": {"type": "apply_command_response", "request_id": 7, "error": 3},
    "timeout_now": {"type": "timeout_now", "term": 5},
}


@pytest.mark.parametrize("message", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_every_message_pysyncobj_sends_is_accepted(message):
    assert check_message(wire(message)) == ""


REFUSED = {
    # not a Raft message at all
    "list": ["add", "n1@h:1"],
    "str_peer_name": "n1@h:1",
    "none": None,
    "int": 3,
    "bytes": b"\x80\x04",
    "dict_without_type": {"term": 1},
    "non_str_type": {"type": 1, "term": 1},
    # unknown types
    "unknown_type": {"type": "install_snapshot", "term": 1},
    "utility_status": {"type": "status"},
    # pysyncobj's chunked entries: reassembled then pickle.loads'd
    "transmission_start": append_entries(transmission="start", data=b"\x80\x04"),
    "transmission_process": append_entries(transmission="process", data=b"."),
    "transmission_finish": append_entries(transmission="finish", data=b"."),
    # VERSION entries and commands: pysyncobj unpickles their payload
    "entry_version_command": append_entries(entries=[(bytes([VERSION]) + b"\x80\x04K\x01.", 11, 4)]),
    "entry_unknown_command": append_entries(entries=[(b"\x09", 11, 4)]),
    "entry_empty_command": append_entries(entries=[(b"", 11, 4)]),
    "apply_command_no_op": {"type": "apply_command", "command": bytes([NO_OP])},
    "apply_command_version": {"type": "apply_command", "command": bytes([VERSION]) + b"\x80\x04K\x01."},
    "apply_command_empty": {"type": "apply_command", "command": b""},
    "apply_command_str": {"type": "apply_command", "command": "\x00"},
    "apply_command_request_id_str": {"type": "apply_command", "command": b"\x00", "request_id": "7"},
    # missing or mistyped fields
    "request_vote_missing_last_log_term": {"type": "request_vote", "term": 5, "last_log_index": 12},
    "response_vote_term_str": {"type": "response_vote", "term": "5"},
    "append_entries_commit_none": append_entries(commit_index=None),
    "append_entries_prev_str": append_entries(prevLogIdx="10"),
    "next_node_idx_reset_int": {"type": "next_node_idx", "next_node_idx": 3, "reset": 0, "success": True},
    "apply_command_response_log_idx_str": {"type": "apply_command_response", "request_id": 1,
                                           "log_idx": "14", "log_term": 4},
    "apply_command_response_error_none": {"type": "apply_command_response", "request_id": 1, "error": None},
    # malformed entry tuples
    "entries_a_map": append_entries(entries={"0": ENTRIES[0]}),
    "entries_none": append_entries(entries=None),
    "entry_two_fields": append_entries(entries=[(b"\x00", 11)]),
    "entry_four_fields": append_entries(entries=[(b"\x00", 11, 4, 0)]),
    "entry_command_str": append_entries(entries=[("\x00x", 11, 4)]),
    "entry_idx_str": append_entries(entries=[(b"\x00", "11", 4)]),
    "entry_idx_none": append_entries(entries=[(b"\x00", None, 4)]),
    "entry_term_float": append_entries(entries=[(b"\x00", 11, 4.0)]),
    "entry_a_map": append_entries(entries=[{"command": b"\x00", "idx": 11, "term": 4}]),
    "entry_bytes": append_entries(entries=[b"\x00"]),
    # malformed snapshot chunks
    "snapshot_two_fields": append_entries(serialized=(b"x", True)),
    "snapshot_int_flags": append_entries(serialized=(b"x", 1, 0)),
    "snapshot_str_data": append_entries(serialized=("x", True, True)),
    "snapshot_bytes": append_entries(serialized=b"x"),
}


@pytest.mark.parametrize("message", REFUSED.values(), ids=REFUSED.keys())
def test_malformed_or_dangerous_message_is_refused(message):
    assert check_message(wire(message)) != ""


BOOL_FOR_INT = {
    "request_vote_term": {"type": "request_vote", "term": True, "last_log_index": 1, "last_log_term": 1},
    "request_vote_last_log_index": {"type": "request_vote", "term": 2, "last_log_index": True,
                                    "last_log_term": 1},
    "response_vote_term": {"type": "response_vote", "term": True},
    "timeout_now_term": {"type": "timeout_now", "term": False},
    "append_entries_term": append_entries(term=True),
    "append_entries_commit_index": append_entries(commit_index=False),
    "next_node_idx": {"type": "next_node_idx", "next_node_idx": True, "reset": False, "success": True},
    "apply_command_response_request_id": {"type": "apply_command_response", "request_id": True},
    "apply_command_request_id": {"type": "apply_command", "command": b"\x00", "request_id": True},
    "append_entries_prevLogIdx": append_entries(prevLogIdx=True),
    "append_entries_prevLogTerm": append_entries(prevLogTerm=False),
    "entry_idx": append_entries(prevLogIdx=0, prevLogTerm=0, entries=[(b"\x00", True, 4)]),
    "entry_term": append_entries(entries=[(b"\x00", 11, True)]),
    "apply_command_response_log_idx": {"type": "apply_command_response", "request_id": 1,
                                       "log_idx": True, "log_term": 4},
    "apply_command_response_error": {"type": "apply_command_response", "request_id": 1, "error": True},
}


@pytest.mark.parametrize("message", BOOL_FOR_INT.values(), ids=BOOL_FOR_INT.keys())
def test_bool_is_refused_where_an_int_is_expected(message):
    assert check_message(wire(message)) != ""


def test_check_message_does_not_modify_the_message():
    message = wire(ACCEPTED["append_entries_with_entries"])
    before = wire(message)
    check_message(message)
    assert message == before

"""raft.framing: the wire codec, checked byte for byte."""
import os
import pickle
import random
import struct

import msgpack
import pytest

from raft.framing import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    TruncatedFrame,
    encode_frame,
)

# (value, exact frame bytes: 4-byte big-endian length, then msgpack)
GOLDEN = [
    ({"a": 1}, b"\x00\x00\x00\x04" + b"\x81\xa1a\x01"),
    ([1, "x", b"\x00", None, True], b"\x00\x00\x00\x09" + b"\x95\x01\xa1x\xc4\x01\x00\xc0\xc3"),
    (1.5, b"\x00\x00\x00\x09" + b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"),
    (-1, b"\x00\x00\x00\x01" + b"\xff"),
    (300, b"\x00\x00\x00\x03" + b"\xcd\x01\x2c"),
    ("", b"\x00\x00\x00\x01" + b"\xa0"),
    (b"", b"\x00\x00\x00\x02" + b"\xc4\x00"),
    (
        {"type": "next_node_idx", "success": False},
        b"\x00\x00\x00\x1d"
        + b"\x82"
        + b"\xa4type" + b"\xadnext_node_idx"
        + b"\xa7success" + b"\xc2",
    ),
]

PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))


def frame_of(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def assert_plain(value) -> None:
    """Only dict-with-str-keys, list and plain scalars may come out of a frame."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, f"non-str map key {key!r}"
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert type(value) in PLAIN_SCALARS, f"non-plain value {value!r}"


@pytest.mark.parametrize("value, expected", GOLDEN)
def test_encode_frame_produces_exact_header_and_msgpack_bytes(value, expected):
    assert encode_frame(value) == expected


@pytest.mark.parametrize("value, frame", GOLDEN)
def test_decoder_fed_whole_frame_returns_the_value(value, frame):
    decoder = FrameDecoder()
    assert decoder.feed(frame) == [value]
    decoder.close()


def test_decoder_fed_one_byte_at_a_time_yields_same_messages_in_order():
    stream = b"".join(frame for _, frame in GOLDEN)
    decoder = FrameDecoder()
    got = []
    for i in range(len(stream)):
        got.extend(decoder.feed(stream[i : i + 1]))
    assert got == [value for value, _ in GOLDEN]
    assert decoder.buffered == 0
    decoder.close()


def test_decoder_returns_every_frame_of_one_chunk():
    stream = b"".join(frame for _, frame in GOLDEN)
    decoder = FrameDecoder()
    assert decoder.feed(stream) == [value for value, _ in GOLDEN]


def test_decoder_keeps_partial_frame_after_whole_ones_in_a_chunk():
    first, second = GOLDEN[0][1], GOLDEN[1][1]
    decoder = FrameDecoder()
    assert decoder.feed(first + second[:6]) == [GOLDEN[0][0]]
    assert decoder.buffered == 6
    assert decoder.feed(second[6:]) == [GOLDEN[1][0]]
    assert decoder.buffered == 0


def test_header_over_cap_raises_frame_too_large_before_any_payload_arrives():
    decoder = FrameDecoder(max_frame=16)
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">I", 17))


def test_default_cap_refuses_announced_length_one_over_it():
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(struct.pack(">I", DEFAULT_MAX_FRAME + 1))


def test_header_over_cap_is_refused_even_when_fed_byte_by_byte():
    decoder = FrameDecoder(max_frame=16)
    header = struct.pack(">I", 0xFFFFFFFF)
    for b in header[:3]:
        assert decoder.feed(bytes([b])) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(header[3:])


def test_frame_exactly_at_cap_is_accepted():
    payload = msgpack.packb(b"x" * 14, use_bin_type=True)  # c4 0e + 14 bytes = 16
    assert len(payload) == 16
    decoder = FrameDecoder(max_frame=16)
    assert decoder.feed(frame_of(payload)) == [b"x" * 14]


def test_encode_frame_over_cap_raises_frame_too_large():
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 14, max_frame=15)
    assert encode_frame(b"x" * 14, max_frame=16)[:4] == b"\x00\x00\x00\x10"


def test_zero_length_frame_is_malformed():
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_invalid_msgpack_payload_is_malformed():
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(frame_of(b"\xc1"))  # 0xc1 is never used by msgpack


def test_payload_with_trailing_bytes_is_malformed():
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(frame_of(b"\x01\x02"))


def test_random_bytes_only_ever_raise_frame_error():
    rng = random.Random(1234)
    for _ in range(300):
        data = rng.randbytes(rng.randint(1, 64))
        decoder = FrameDecoder(max_frame=1024)
        with pytest.raises(FrameError):
            decoder.feed(data)
            decoder.close()


def test_random_payload_in_valid_header_decodes_to_plain_data_or_malformed():
    rng = random.Random(4321)
    for _ in range(1000):
        payload = rng.randbytes(rng.randint(1, 48))
        try:
            messages = FrameDecoder().feed(frame_of(payload))
        except MalformedFrame:
            continue
        assert len(messages) == 1
        assert_plain(messages[0])


@pytest.mark.parametrize("code", [0, 5, 127])
def test_msgpack_ext_type_is_refused(code):
    payload = msgpack.packb({"x": msgpack.ExtType(code, b"data")}, use_bin_type=True)
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(frame_of(payload))


def test_msgpack_timestamp_ext_type_minus_one_decodes_to_a_plain_integer():
    # msgpack decodes ext type -1 itself (ext_hook never sees it); the frame
    # must still decode to plain data only: nanoseconds as an int.
    payload = msgpack.packb({"type": msgpack.Timestamp(5, 0)}, use_bin_type=True)
    assert payload == b"\x81\xa4type\xd6\xff\x00\x00\x00\x05"
    [message] = FrameDecoder().feed(frame_of(payload))
    assert message == {"type": 5_000_000_000}
    assert type(message["type"]) is int


@pytest.mark.parametrize("value", [{1: "a"}, {"outer": {2: "b"}}, {None: 1}, {1.5: 1}])
def test_map_with_non_str_keys_is_refused(value):
    payload = msgpack.packb(value, use_bin_type=True, strict_types=False)
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(frame_of(payload))


def test_map_with_bytes_keys_is_refused():
    # The module promises "maps must have str keys".
    payload = msgpack.packb({b"type": "ping"}, use_bin_type=True)
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(frame_of(payload))


def test_close_inside_a_frame_raises_truncated_frame():
    frame = GOLDEN[0][1]
    for cut in range(1, len(frame)):
        decoder = FrameDecoder()
        assert decoder.feed(frame[:cut]) == []
        with pytest.raises(TruncatedFrame):
            decoder.close()


def test_close_on_a_frame_boundary_is_clean():
    decoder = FrameDecoder()
    decoder.close()
    decoder.feed(GOLDEN[0][1] + GOLDEN[1][1])
    decoder.close()


class _RunsShell:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_payload_never_executes_and_decodes_to_plain_data_or_malformed(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(str(marker)), protocol=protocol)
    decoder = FrameDecoder()
    try:
        messages = decoder.feed(frame_of(payload))
    except MalformedFrame:
        messages = []
    for message in messages:
        assert_plain(message)
    assert not marker.exists()


def test_pickle_canary_fires_when_unpickled(tmp_path):
    # Control for the test above: the payload really runs a command if unpickled.
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_RunsShell(str(marker))))
    assert marker.exists()


# -- decoding cost is bounded by the frame, not by what it announces -------------------


def _array_of(item: bytes, size: int) -> bytes:
    """A msgpack array32 of `size` bytes in all, made of copies of `item`."""
    count = (size - 5) // len(item)
    return b"\xdd" + struct.pack(">I", count) + item * count


def test_tiny_frame_announcing_huge_containers_or_strings_is_refused_without_allocating():
    # 5-9 bytes that claim 4 G items or bytes: msgpack must not believe them.
    for payload in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                    b"\xc6\xff\xff\xff\xff", b"\x91\xdd\xff\xff\xff\xff"):
        with pytest.raises(MalformedFrame):
            FrameDecoder().feed(frame_of(payload))


def test_decoding_many_small_containers_does_not_run_the_cyclic_collector():
    # The cause of a 2 s stall per 4 MiB frame: each young container counted
    # towards a collection, and the collector walked millions of them again
    # and again while the frame was still being built (about 1500 collections,
    # 8 of them full, for this 1 MiB frame). Once the collector is back on,
    # one young collection sees the decoded objects once.
    import gc

    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        assert gc.isenabled()
        FrameDecoder().feed(frame_of(_array_of(b"\x90", 1024 * 1024)))
    finally:
        gc.callbacks.remove(count)
    assert len(collections) <= 1
    assert gc.isenabled()  # and it is on again afterwards


def test_collector_stays_off_when_the_caller_had_turned_it_off():
    import gc

    gc.disable()
    try:
        FrameDecoder().feed(frame_of(_array_of(b"\x90", 1024)))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_collector_is_on_again_after_a_malformed_frame():
    import gc

    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(frame_of(_array_of(b"\x90", 1024) + b"\xc1"))
    assert gc.isenabled()


def test_a_4_mib_frame_of_empty_containers_decodes_in_linear_time():
    import time

    # Two million objects: about 0.6 s of CPU here. A decoder that is worse than linear in them
    # takes minutes; the bound leaves room for a loaded machine (CPU time still grows there).
    frame = frame_of(_array_of(b"\x91\x80", DEFAULT_MAX_FRAME))
    started = time.process_time()  # CPU time: other processes on the machine count less
    FrameDecoder().feed(frame)
    assert time.process_time() - started < 5.0


def test_small_cap_bounds_the_objects_a_frame_can_become():
    # 64 KiB (the cap for unauthenticated peers) is at most 64 K objects.
    cap = 64 * 1024
    decoder = FrameDecoder(cap)
    (value,) = decoder.feed(frame_of(_array_of(b"\x90", cap)))
    assert len(value) == cap - 5
    with pytest.raises(FrameTooLarge):
        FrameDecoder(cap).feed(frame_of(_array_of(b"\x90", cap + 1))[:4])

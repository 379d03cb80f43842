"""Length-prefixed msgpack frames: the one wire format of every node-to-node
and CLI-to-daemon byte.

A frame is a 4-byte big-endian payload length followed by that many bytes of
msgpack. The decoder reads the length first and refuses a frame larger than
its cap *before* buffering the payload, so a peer cannot make us allocate
more than the cap. msgpack extension types are refused (the timestamp type, which msgpack
decodes itself, becomes a plain integer), and maps must have str keys: a
frame can only ever decode to plain data (dict, list, str, bytes,
int, float, bool, None), never to an object that runs code.

Decoding cost is bounded by the cap, not by what the bytes announce: msgpack
refuses a length larger than the payload itself (a 5-byte "array of 2**32
items" fails at once), so the worst a frame can do is one small container per
byte, about 75 bytes of Python objects per byte of frame. Those millions of
young containers used to trigger the cyclic garbage collector again and again
while they were built (a 4 MiB frame of empty arrays took 2 s instead of 0.2 s,
all of it with the event loop stopped); decoded data can hold no reference
cycle, so `unpack` pauses the collector for the duration. Servers keep the cap
small for peers that have not authenticated (swarm.rpc.limits).

This module does no I/O: callers feed it bytes and send the bytes it returns.
"""
from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 4 * 1024 * 1024


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame; drop the connection."""


class FrameTooLarge(FrameError):
    pass


class MalformedFrame(FrameError):
    pass


class TruncatedFrame(FrameError):
    pass


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedFrame(f"msgpack extension type {code} is not allowed")


def _str_keys_only(d: dict) -> dict:
    for key in d:
        if type(key) is not str:
            raise MalformedFrame("map keys must be strings")
    return d


def pack(obj: Any) -> bytes:
    """msgpack bytes of plain data (no framing)."""
    return msgpack.packb(obj, use_bin_type=True)


@contextmanager
def _collector_paused() -> Iterator[None]:
    # gc.isenabled/enable are process-wide: only the caller that found the
    # collector on turns it back on, so nested or concurrent decodes (threads)
    # never leave it off.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def unpack(data: bytes) -> Any:
    """Decode one msgpack document of plain data, refusing anything else."""
    try:
        with _collector_paused():
            return msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                object_hook=_str_keys_only,
                ext_hook=_refuse_ext,
                timestamp=2,  # msgpack decodes ext -1 itself; make it a plain int (ns)
            )
    except MalformedFrame:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedFrame(f"undecodable frame: {exc}") from None


def encode_frame(obj: Any, max_frame: int = DEFAULT_MAX_FRAME,
                 packer: Callable[[Any], bytes] = pack) -> bytes:
    payload = packer(obj)
    if len(payload) > max_frame:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds the {max_frame}-byte cap")
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: feed() bytes as they arrive, get whole messages."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # payload length of the frame being read

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages: list[Any] = []
        while True:
            if self._need is None:
                if len(self._buffer) < HEADER.size:
                    return messages
                (length,) = HEADER.unpack_from(self._buffer)
                if length > self.max_frame:
                    raise FrameTooLarge(
                        f"peer announced a frame of {length} bytes, over the {self.max_frame}-byte cap"
                    )
                if length == 0:
                    raise MalformedFrame("empty frame")
                del self._buffer[: HEADER.size]
                self._need = length
            if len(self._buffer) < self._need:
                return messages
            payload = bytes(self._buffer[: self._need])
            del self._buffer[: self._need]
            self._need = None
            messages.append(unpack(payload))

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held so far."""
        return len(self._buffer) + (HEADER.size if self._need is not None else 0)

    def close(self) -> None:
        """Call at end of stream: a half-received frame is an error."""
        if self.buffered:
            raise TruncatedFrame(f"connection closed inside a frame ({self.buffered} bytes pending)")

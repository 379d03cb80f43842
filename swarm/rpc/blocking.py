"""The CLI's one blocking call to its node's daemon over the unix socket.

It needs neither trio nor ssl (the command line imports this module alone, so
that a command starts quickly); swarm.rpc.client re-exports it.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any

from raft.framing import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, encode_frame
from swarm.rpc.messages import RECV_SIZE, RPCError, check_response, result_of


def call_unix_sync(path: str | os.PathLike[str], method: str, params: dict | None = None,
                   timeout: float = 5.0, *, max_frame: int = DEFAULT_MAX_FRAME) -> Any:
    """One blocking call to the local daemon, for the CLI (no trio needed)."""
    path = os.fspath(path)
    try:
        frame = encode_frame({"id": 1, "method": method, "params": params or {}, "deadline": timeout}, max_frame)
    except FrameError as exc:
        raise RPCError("bad_request", f"cannot send {method}: {exc}") from None
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise RPCError("unavailable", f"the swarm daemon is not running (no socket at {path})") from None
        sock.sendall(frame)
        decoder = FrameDecoder(max_frame)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not (data := sock.recv(RECV_SIZE)):
                decoder.close()
                raise RPCError("unavailable", f"the swarm daemon at {path} closed the connection without answering")
            for msg in decoder.feed(data):
                if (resp := check_response(msg))["id"] == 1:
                    return result_of(resp)
        raise TimeoutError
    except TimeoutError:
        raise RPCError("deadline", f"{method} got no answer from the swarm daemon within {timeout:g} s") from None
    except FrameError as exc:
        raise RPCError("unavailable", f"the swarm daemon at {path} sent a bad reply: {exc}") from None
    except OSError as exc:
        raise RPCError("unavailable", f"cannot reach the swarm daemon at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()

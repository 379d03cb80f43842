"""The RPC wire messages: a request {"id", "method", "params", "deadline"},
an answer {"id", "ok": true, "result"} or {"id", "ok": false, "error":
{"code", "message"}}, the error a call raises, and the Peer a server
serves. Frames are raft.framing's length-prefixed msgpack."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raft.framing import MalformedFrame

RECV_SIZE = 65536


class RPCError(Exception):
    """An error answer: raised by handlers, and by clients when a call fails."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BadMessage(MalformedFrame):
    """A frame that decoded but is not a well-formed request or response."""


@dataclass(frozen=True)
class Peer:
    node_id: str
    role: str  # "manager" | "worker" | "local"
    cluster_id: str


LOCAL_PEER = Peer(node_id="local", role="local", cluster_id="")


def cause_of(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return str(cause) or type(cause).__name__


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def error_answer(call_id: int, code: str, message: str) -> dict:
    return {"id": call_id, "ok": False, "error": {"code": code, "message": message}}


def check_response(msg: Any) -> dict:
    if not isinstance(msg, dict) or not is_int(msg.get("id")) or not isinstance(msg.get("ok"), bool):
        raise BadMessage("a response must be a map with an integer id and a boolean ok")
    err = msg.get("error")
    if not msg["ok"] and not (isinstance(err, dict) and isinstance(err.get("code"), str)
                              and isinstance(err.get("message"), str)):
        raise BadMessage("an error response must carry a code and a message")
    return msg


def result_of(resp: dict) -> Any:
    if resp["ok"]:
        return resp.get("result")
    raise RPCError(resp["error"]["code"], resp["error"]["message"])


def as_peer(who: Any) -> Peer:
    # identify may return a Peer or anything shaped like one (pki.NodeIdentity).
    if isinstance(who, Peer):
        return who
    return Peer(node_id=str(who.node_id), role=str(who.role), cluster_id=str(who.cluster_id))

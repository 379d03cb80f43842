"""The control API's error codes as Docker's HTTP statuses, in one table.

The docker CLI and docker-py branch on the status (404: "no such ...", 409: a name taken or
an update out of sequence, 503: not a manager), and print the JSON body's "message". Pure.
"""
from __future__ import annotations

# RPC error code (docs/daemon-api.md) -> HTTP status, as dockerd answers the same failures.
STATUS = {
    "bad_request": 400,
    "not_found": 404,
    "conflict": 409,
    "forbidden": 403,
    "not_manager": 503,      # "This node is not a swarm manager. ..."
    "unavailable": 503,      # no quorum, no leader, a node down: retry
    "deadline": 503,
    "unknown_method": 501,
    "internal": 500,
}


class EngineError(Exception):
    """An answer other than success: its HTTP status and Docker's {"message": ...}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def from_rpc(code: str, message: str) -> EngineError:
    return EngineError(STATUS.get(code, 500), message)

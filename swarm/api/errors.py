"""The project's own errors: what a user did wrong vs. what failed (retry)."""


class SwarmError(Exception):
    """One clear sentence for the user; the CLI prints it and exits 1."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ApiError(Exception):
    """An error of the control API, for its caller: a code and one sentence.

    Codes: bad_request (the input is wrong: do not retry), not_found, conflict
    (someone wrote first, or the name is taken), forbidden, not_leader (the
    message holds the leader's address), unavailable (retry). The daemon maps
    them onto the RPC wire at its edge; the manager knows nothing of the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

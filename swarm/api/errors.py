"""The project's own errors: what a user did wrong vs. what failed (retry)."""


class SwarmError(Exception):
    """One clear sentence for the user; the CLI prints it and exits 1."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

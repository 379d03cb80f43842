"""Errors of the overlay datapath.

Two kinds, kept apart as everywhere in the project: `InvalidRequest` means the
desired state handed to us is wrong (fix the input, do not retry);
`DatapathError` means the kernel or a tool refused something (retry may help).
"""

from __future__ import annotations


class OverlayError(Exception):
    """Base of every error raised by `overlay`; carries one readable sentence."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(OverlayError, ValueError):
    """The caller's input is wrong: a bad subnet, name, port or address."""


class PoolExhausted(OverlayError):
    """No free address, VNI or port is left in a pool."""


class AlreadyAllocated(InvalidRequest):
    """A reservation asked for something that is already taken."""


class DatapathError(OverlayError):
    """The kernel or a tool failed to apply a change; retrying may help."""


class NftablesUnavailable(DatapathError):
    """`nft` is missing or cannot list the ruleset."""

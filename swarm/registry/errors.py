"""Errors of a registry operation, each one sentence in Docker's words.

`RegistryError` is the base; the subclasses tell apart what a caller may
retry (`RegistryUnreachable`, `RegistryProtocolError`, `DigestMismatch`)
from what will fail the same way again (`ImageNotFound`, `Unauthorized`,
`NoMatchingPlatform`). An agent may still retry both under a restart policy:
a tag can appear and a password can be fixed.
"""
from __future__ import annotations

from swarm.api.errors import SwarmError


class RegistryError(SwarmError):
    """A registry operation failed; the message is one sentence for the user."""

    retryable = True


class ImageNotFound(RegistryError):
    """The registry has no manifest (or no repository) for the reference."""

    retryable = False

    def __init__(self, ref: str) -> None:
        super().__init__(f"No such image: {ref}")
        self.ref = ref


class Unauthorized(RegistryError):
    """The registry or its token server refused the credentials (or their absence)."""

    retryable = False

    def __init__(self, detail: str = "authentication required") -> None:
        super().__init__(f"unauthorized: {detail}")


class RegistryUnreachable(RegistryError):
    """No connection to the registry (refused, unresolvable, timed out)."""

    def __init__(self, host: str) -> None:
        super().__init__(f"registry {host} unreachable")
        self.host = host


class DigestMismatch(RegistryError):
    """A blob or manifest whose bytes do not hash to the digest asked for."""

    def __init__(self, expected: str = "", actual: str = "") -> None:
        super().__init__("digest mismatch")
        self.expected, self.actual = expected, actual


class NoMatchingPlatform(RegistryError):
    """An index (manifest list) without an entry this node can run."""

    retryable = False

    def __init__(self, platform: str) -> None:
        super().__init__(f"no matching manifest for {platform} in the manifest list entries")


class RegistryProtocolError(RegistryError):
    """The registry answered something the protocol does not allow (or an error status we do not map)."""


class TLSError(RegistryError):
    """The registry's certificate is not trusted (or TLS failed)."""

    retryable = False

"""Errors of the runtime layer, each carrying one sentence for the user.

`ImageError`: an image is missing or an archive is refused (input is wrong).
`ContainerError`: a container could not be prepared, started or stopped
(something failed; retrying may help). `SpecError` is the "your input is
wrong" kind of ContainerError: retrying the same spec fails the same way, so
an agent rejects the task instead of restarting it.
"""
from __future__ import annotations

from swarm.api.errors import SwarmError


class ImageError(SwarmError):
    """An image reference, archive or layer that the store refuses or cannot find."""


class ContainerError(SwarmError):
    """A container operation failed; the message is one sentence for the user."""


class SpecError(ContainerError):
    """The task's container spec or limits cannot run on this node as given."""

"""The registry client: pull, push, login (see client.py, pull.py, push.py)."""
from swarm.registry.client import Fetched, RegistryClient
from swarm.registry.config import RegistryConfig
from swarm.registry.errors import (DigestMismatch, ImageNotFound, NoMatchingPlatform, RegistryError,
                                   RegistryProtocolError, RegistryUnreachable, TLSError, Unauthorized)
from swarm.registry.media import Platform, host_platform
from swarm.registry.pull import LayerProgress, Puller, PullResult, PullStore
from swarm.registry.push import PushResult, PushSource, push

__all__ = [
    "DigestMismatch", "Fetched", "ImageNotFound", "LayerProgress", "NoMatchingPlatform", "Platform", "PullResult",
    "PullStore", "Puller", "PushResult", "PushSource", "RegistryClient", "RegistryConfig", "RegistryError",
    "RegistryProtocolError", "RegistryUnreachable", "TLSError", "Unauthorized", "host_platform", "push",
]

"""The registry client: pull, push, login (see client.py, pull.py, push.py).

The names below are loaded from their modules when first asked for (PEP 562), so that
importing a light part (swarm.registry.config, errors, media, credentials) does not import
the client and httpx with it (about 150 modules and 6 MiB: swarm/engineapi/lazy.py says why
a node daemon cares).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# httpx's package imports its command line (httpx._main) and with it click, rich and pygments
# when they are installed (rich is, for import-linter): 5.6 MiB in every daemon, for a program
# it never runs. An empty module in its place makes httpx define its own stand-in `main` (which
# says "install httpx[cli]"), as it does where rich is missing; the client is the same.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))

if TYPE_CHECKING:
    from swarm.registry.client import Fetched, RegistryClient
    from swarm.registry.config import RegistryConfig
    from swarm.registry.errors import (DigestMismatch, ImageNotFound, NoMatchingPlatform, RegistryError,
                                       RegistryProtocolError, RegistryUnreachable, TLSError, Unauthorized)
    from swarm.registry.media import Platform, host_platform
    from swarm.registry.pull import LayerProgress, Puller, PullResult, PullStore
    from swarm.registry.push import PushResult, PushSource, push

_HOMES = {
    "client": ("Fetched", "RegistryClient"),
    "config": ("RegistryConfig",),
    "errors": ("DigestMismatch", "ImageNotFound", "NoMatchingPlatform", "RegistryError", "RegistryProtocolError",
               "RegistryUnreachable", "TLSError", "Unauthorized"),
    "media": ("Platform", "host_platform"),
    "pull": ("LayerProgress", "Puller", "PullResult", "PullStore"),
    "push": ("PushResult", "PushSource", "push"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "DigestMismatch", "Fetched", "ImageNotFound", "LayerProgress", "NoMatchingPlatform", "Platform", "PullResult",
    "PullStore", "Puller", "PushResult", "PushSource", "RegistryClient", "RegistryConfig", "RegistryError",
    "RegistryProtocolError", "RegistryUnreachable", "TLSError", "Unauthorized", "host_platform", "push",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value         # asked once: later lookups find it without this function
    return value

"""Request/response RPC over raft.framing frames, on trio.

How this works: the caller sends {"id", "method", "params", "deadline"} and
the server answers {"id", "ok": true, "result"} or {"id", "ok": false,
"error": {"code", "message"}} (swarm.rpc.messages). A server dispatches each
request to a Router (swarm.rpc.router), which checks the caller's role, under
the limits of swarm.rpc.limits; swarm.rpc.server serves it over mutual TLS
(the node API) or a 0600 unix socket (the local API, role "local"). The
client (swarm.rpc.client) multiplexes many calls on one connection and keeps
one connection per manager (ClientPool); the CLI makes one blocking call.

The public names are re-exported here: `from swarm.rpc import RPCError`. They
are loaded on first use (PEP 562), so that importing one light module, such as
swarm.rpc.blocking for the CLI, does not import trio with the server.
"""
from __future__ import annotations

import importlib
from typing import Any

# Each public name, by the module it lives in.
_HOMES = {
    "swarm.rpc.blocking": ("call_unix_sync",),
    "swarm.rpc.client": ("ClientPool", "RPCClient", "open_client_tls", "open_client_unix"),
    "swarm.rpc.limits": ("HANDSHAKE_TIMEOUT", "MAX_DEADLINE", "MAX_IN_FLIGHT", "MAX_UNAUTHENTICATED_PER_ADDRESS",
                         "UNAUTHENTICATED", "Admission", "StreamLimits", "connection_caps"),
    "swarm.rpc.messages": ("LOCAL_PEER", "BadMessage", "Peer", "RPCError"),
    "swarm.rpc.router": ("ALL_ROLES", "Handler", "Router"),
    "swarm.rpc.server": ("serve_tls", "serve_unix"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'swarm.rpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value

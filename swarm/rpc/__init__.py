"""Request/response RPC over raft.framing frames, on trio.

How this works: the caller sends {"id", "method", "params", "deadline"} and
the server answers {"id", "ok": true, "result"} or {"id", "ok": false,
"error": {"code", "message"}} (swarm.rpc.messages). A server dispatches each
request to a Router (swarm.rpc.router), which checks the caller's role, under
the limits of swarm.rpc.limits; swarm.rpc.server serves it over mutual TLS
(the node API) or a 0600 unix socket (the local API, role "local"). The
client (swarm.rpc.client) multiplexes many calls on one connection and keeps
one connection per manager (ClientPool); the CLI makes one blocking call.

The public names are re-exported here: `from swarm.rpc import RPCError`.
"""
from swarm.rpc.client import ClientPool, RPCClient, call_unix_sync, open_client_tls, open_client_unix
from swarm.rpc.limits import (HANDSHAKE_TIMEOUT, MAX_DEADLINE, MAX_IN_FLIGHT, MAX_UNAUTHENTICATED_PER_ADDRESS,
                              UNAUTHENTICATED, Admission, StreamLimits, connection_caps)
from swarm.rpc.messages import LOCAL_PEER, BadMessage, Peer, RPCError
from swarm.rpc.router import ALL_ROLES, Handler, Router
from swarm.rpc.server import serve_tls, serve_unix

__all__ = [
    "ALL_ROLES", "HANDSHAKE_TIMEOUT", "LOCAL_PEER", "MAX_DEADLINE", "MAX_IN_FLIGHT", "MAX_UNAUTHENTICATED_PER_ADDRESS",
    "UNAUTHENTICATED", "Admission", "BadMessage", "ClientPool", "Handler", "Peer", "RPCClient", "RPCError", "Router",
    "StreamLimits", "call_unix_sync", "connection_caps", "open_client_tls", "open_client_unix", "serve_tls",
    "serve_unix",
]

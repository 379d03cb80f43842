"""Method name -> handler and the roles allowed to call it: what a server dispatches to."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from swarm.rpc.messages import Peer, RPCError

ALL_ROLES = frozenset({"manager", "worker", "local"})
Handler = Callable[[Peer, dict], Awaitable[Any]]


class Router:
    """Method name -> (handler, roles allowed to call it)."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[Handler, frozenset[str]]] = {}

    def route(self, name: str, handler: Handler | None = None, roles: Any = ALL_ROLES) -> Any:
        """Register `handler` for `name`; without a handler, return a decorator."""
        def register(fn: Handler) -> Handler:
            if name in self._routes:
                raise ValueError(f"method {name!r} is already registered")
            self._routes[name] = (fn, frozenset(roles))
            return fn
        return register if handler is None else register(handler)

    @property
    def methods(self) -> list[str]:
        return sorted(self._routes)

    async def dispatch(self, peer: Peer, method: str, params: dict) -> Any:
        if method not in self._routes:
            raise RPCError("unknown_method", f"unknown method {method!r}")
        handler, roles = self._routes[method]
        if peer.role not in roles:
            raise RPCError("forbidden", f"method {method!r} may not be called by a {peer.role} node")
        return await handler(peer, params)


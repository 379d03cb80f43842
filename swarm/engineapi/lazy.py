"""The Engine API's stack loaded at its first request, not at the daemon's start.

Every daemon serves the Engine API, and most never get a request on it: the stack behind it
(hypercorn with h11/h2/wsproto, Starlette with anyio, the app and its converters, jsonschema
and, before, yaml and the whole swagger file) is about 150 modules and 6 MiB resident that a
node daemon would hold for nothing. So the sockets are made and listened on at the start, as
before (a client sees no difference but the first connection's imports, 0.07 to 0.13 s here),
and what serves a connection is imported when the first one is accepted (server.py), the app
when hypercorn first calls it (`LazyApp`), jsonschema at the first body checked (schema.py).
The daemon's own modules must not import swarm.engineapi.app or hypercorn at module level:
tests/unit/test_engineapi_lazy.py checks it in a fresh interpreter.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# An ASGI application: (scope, receive, send) -> None.
ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class LazyApp:
    """An ASGI application that is `build()` on its first call and that app from then on
    (trio runs one task at a time and the build does not wait, so it is built once)."""

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None

    @property
    def built(self) -> bool:
        return self._app is not None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)

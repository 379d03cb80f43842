"""Reading a Docker JSON object field by field, so that nothing a client sends is dropped unseen.

How this works. A converter reads an object through a `Fields` view: every key it reads is
marked, `sub` opens a nested object as a child view. `done()` on the root then walks the
views: a key that no converter read and that holds more than Go's zero value ("" / 0 /
false / {} / [], what Go clients send for fields they never set) is a field this daemon
cannot honour, and the request is refused with `Unsupported` naming its path
("TaskTemplate.ContainerSpec.Privileges"), never silently dropped. Keys match without regard
to case, as Go's encoding/json reads them (docker/cli sends "Healthcheck" where the swagger
file spells "HealthCheck"). Pure.
"""
from __future__ import annotations

from typing import Any


class Unsupported(ValueError):
    """A field of Docker's API that this daemon cannot honour; the message names its path."""


def is_zero(value: Any) -> bool:
    """Go's zero value; an object of zero members too (docker/cli's compose converter sends
    `"Privileges": {"NoNewPrivileges": false}` for a service that sets none)."""
    if isinstance(value, dict):
        return all(is_zero(v) for v in value.values())
    return value is None or value is False or value == 0 or value == "" or value == []


class Fields:
    def __init__(self, data: Any, where: str = "") -> None:
        self.data: dict = data if isinstance(data, dict) else {}
        self._keys = {k.lower(): k for k in self.data}
        self.where = where
        self._read: set[str] = set()
        self._children: list[Fields] = []

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key.lower() in self._keys

    def raw(self, key: str) -> Any:
        """The value at `key` as sent (None if absent), marked read."""
        self._read.add(key.lower())
        found = self._keys.get(key.lower())
        return None if found is None else self.data[found]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.raw(key)
        return default if value is None else value

    def sub(self, key: str) -> Fields:
        """The object at `key` (empty if absent), checked with this one."""
        child = Fields(self.get(key, {}), self.path(key))
        self._children.append(child)
        return child

    def each(self, key: str) -> list[Fields]:
        """The objects of the array at `key`, each checked with this one."""
        items = []
        for i, item in enumerate(self.get(key, [])):
            child = Fields(item, f"{self.path(key)}.{i}")
            self._children.append(child)
            items.append(child)
        return items

    def ignore(self, *keys: str) -> None:
        """Keys read elsewhere or harmless to the daemon (documented at the call)."""
        self._read.update(k.lower() for k in keys)

    def refuse(self, key: str, allowed: tuple = ()) -> None:
        """`key` must be absent, zero or one of `allowed`."""
        value = self.get(key)
        if not is_zero(value) and value not in allowed:
            raise Unsupported(f"{self.path(key)} is not supported by this daemon")

    def done(self) -> None:
        for key, value in self.data.items():
            if key.lower() not in self._read and not is_zero(value):
                raise Unsupported(f"{_first_set(value, self.path(key))} is not supported by this daemon")
        for child in self._children:
            child.done()


def _first_set(value: Any, where: str) -> str:
    """The path of the first non-zero leaf under `value` (the field the user actually set)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if not is_zero(inner):
                return _first_set(inner, f"{where}.{key}")
    return where

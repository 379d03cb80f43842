"""The one error of a compose file: a sentence naming the file, the line and the key."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from swarm.api.errors import SwarmError

Path = tuple  # keys and list indexes from the top of the file: ("services", "web", "ports", 0)
# Where each key of a file came from: path -> (file name, 1-based line).
Where = Mapping[Path, tuple[str, int]]


class ComposeError(SwarmError):
    """Input that cannot be deployed: one sentence, printed as it is."""


def dotted(path: Sequence[object]) -> str:
    """("services", "web", "ports", 0) -> "services.web.ports[0]"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def locate(where: Where, path: Sequence[object], default_file: str = "") -> tuple[str, int]:
    """The file and line of `path`, else of its nearest parent that has one (line 0: none known)."""
    path = tuple(path)
    while path:
        if path in where:
            return where[path]
        path = path[:-1]
    return where.get((), (default_file, 0))


def error_at(where: Where, path: Sequence[object], message: str, default_file: str = "") -> ComposeError:
    """"FILE, line N: KEY MESSAGE" (the key left out at the top of the file)."""
    file, line = locate(where, path, default_file)
    place = f"{file}, line {line}" if line else file
    key = dotted(path)
    return ComposeError(f"{place}: {key} {message}" if key else f"{place}: {message}")

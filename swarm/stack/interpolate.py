"""Variables in a compose file: ${VAR}, $VAR, ${VAR:-default}, ${VAR-default},
${VAR:?error}, ${VAR?error} and $$ (a literal $), as docker/cli's
cli/compose/template and interpolation packages substitute them.

How this works: every string of the file (not its keys) goes through
`substitute`; a value whose whole text changed at a path of docker's cast table
(replicas, ports, booleans...) becomes an int, a float or a bool again, as
docker's interpolateTypeCastMapping does, so that "${REPLICAS}" validates as a
number. A bad template or a missing required variable is a ComposeError naming
the file, the line and the key. Pure: the variables come in as a mapping.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from swarm.stack.errors import Path, Where, error_at

Lookup = Callable[[str], "str | None"]

# docker's pattern: $$, $name, ${name[op arg]}, or a lone $ (invalid).
_PATTERN = re.compile(r"\$(?:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)|\{(?P<braced>[^}]*)\}|(?P<invalid>))",
                      re.IGNORECASE)
_BRACED = re.compile(r"(?P<name>[_a-z][_a-z0-9]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>.*))?", re.IGNORECASE | re.DOTALL)


class TemplateError(ValueError):
    """A string that is not a valid template, or a required variable without a value."""


def substitute(text: str, lookup: Lookup) -> str:
    """`text` with its variables replaced (an unset ${VAR} is "", as docker's)."""
    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return lookup(match["named"]) or ""
        braced = _BRACED.fullmatch(match["braced"] or "") if match["braced"] is not None else None
        if braced is None:
            raise TemplateError(f"invalid interpolation format {text!r}; you may need to escape any $ with another $")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        value = lookup(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise TemplateError(f"required variable {name} is missing a value" + (f": {arg}" if arg else ""))
        return value or ""

    return _PATTERN.sub(replace, text)


# docker's interpolateTypeCastMapping: "*" is any key, "[]" any list item.
_INT, _FLOAT, _BOOL = "int", "float", "bool"
_CASTS: list[tuple[tuple[str, ...], str]] = [
    (("services", "*", "configs", "[]", "mode"), _INT),
    (("services", "*", "secrets", "[]", "mode"), _INT),
    (("services", "*", "healthcheck", "retries"), _INT),
    (("services", "*", "healthcheck", "disable"), _BOOL),
    (("services", "*", "deploy", "replicas"), _INT),
    (("services", "*", "deploy", "update_config", "parallelism"), _INT),
    (("services", "*", "deploy", "update_config", "max_failure_ratio"), _FLOAT),
    (("services", "*", "deploy", "rollback_config", "parallelism"), _INT),
    (("services", "*", "deploy", "rollback_config", "max_failure_ratio"), _FLOAT),
    (("services", "*", "deploy", "restart_policy", "max_attempts"), _INT),
    (("services", "*", "deploy", "placement", "max_replicas_per_node"), _INT),
    (("services", "*", "ports", "[]", "target"), _INT),
    (("services", "*", "ports", "[]", "published"), _INT),
    (("services", "*", "ulimits", "*"), _INT),
    (("services", "*", "ulimits", "*", "hard"), _INT),
    (("services", "*", "ulimits", "*", "soft"), _INT),
    (("services", "*", "privileged"), _BOOL),
    (("services", "*", "oom_score_adj"), _INT),
    (("services", "*", "pids_limit"), _INT),
    (("services", "*", "read_only"), _BOOL),
    (("services", "*", "init"), _BOOL),
    (("services", "*", "stdin_open"), _BOOL),
    (("services", "*", "tty"), _BOOL),
    (("services", "*", "volumes", "[]", "read_only"), _BOOL),
    (("services", "*", "volumes", "[]", "volume", "nocopy"), _BOOL),
    (("networks", "*", "external"), _BOOL),
    (("networks", "*", "internal"), _BOOL),
    (("networks", "*", "attachable"), _BOOL),
    (("volumes", "*", "external"), _BOOL),
    (("secrets", "*", "external"), _BOOL),
    (("configs", "*", "external"), _BOOL),
]


def _cast_of(path: Path) -> str | None:
    for pattern, kind in _CASTS:
        if len(pattern) == len(path) and all(
                p == "*" and not isinstance(x, int) or p == "[]" and isinstance(x, int) or p == x
                for p, x in zip(pattern, path)):
            return kind
    return None


def _cast(kind: str, text: str) -> Any:
    if kind == _INT:
        return int(text, 10)
    if kind == _FLOAT:
        return float(text)
    lowered = text.lower()           # YAML 1.1's booleans, as docker's toBoolean
    if lowered in ("y", "yes", "true", "on"):
        return True
    if lowered in ("n", "no", "false", "off"):
        return False
    raise ValueError(f"invalid boolean: {text}")


def interpolate(data: Mapping[str, Any], lookup: Lookup, where: Where, filename: str) -> dict[str, Any]:
    """The file's data with every string substituted (and cast where docker casts)."""
    def walk(value: Any, path: Path) -> Any:
        if isinstance(value, str):
            try:
                new = substitute(value, lookup)
            except TemplateError as exc:
                raise error_at(where, path, f"cannot be interpolated: {exc}", filename) from None
            kind = _cast_of(path) if new != value else None
            if kind is None:
                return new
            try:
                return _cast(kind, new)
            except ValueError:
                raise error_at(where, path, f"is {new!r} after interpolation, which is not "
                                            f"{'an integer' if kind == _INT else 'a number' if kind == _FLOAT else 'a boolean'}",
                               filename) from None
        if isinstance(value, Mapping):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    return walk(data, ())


def env_lookup(environ: Mapping[str, str]) -> Lookup:
    return environ.get

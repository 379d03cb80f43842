"""Validation against the Compose Specification's own JSON schema (schema/compose-spec.json,
its version and licence in schema/README.md), with the `jsonschema` library.

How this works: the file's data (after interpolation, as docker/cli validates it) is
checked with a draft-7 validator; of the errors, jsonschema's `best_match` picks
the most relevant one, which becomes one sentence naming the file, the line and
the key ("stack.yml, line 7: services.web.deploy.replicas must be an integer, not
'three'"). An unknown key is named itself, at its own line. Pure.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path as FilePath
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from swarm.stack.errors import Where, error_at

SCHEMA_FILE = FilePath(__file__).parent / "schema" / "compose-spec.json"
_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "empty"}


@functools.cache
def validator() -> jsonschema.Draft7Validator:
    with open(SCHEMA_FILE, encoding="utf-8") as f:
        return jsonschema.Draft7Validator(json.load(f))


def validate(data: Mapping[str, Any], where: Where, filename: str) -> None:
    """Raise a ComposeError for the most relevant way `data` breaks the schema, if any."""
    error = best_match(validator().iter_errors(data))
    if error is None:
        return
    path, message = describe(error)
    raise error_at(where, path, message, filename)


def _types(schema: Any) -> list[str]:
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return [kind] if isinstance(kind, str) else list(kind or ())


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def _either(names: Sequence[str]) -> str:
    names = list(dict.fromkeys(names))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def describe(error: ValidationError) -> tuple[tuple, str]:
    """(the path of the offending key, what is wrong with it)."""
    path = tuple(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        schema = error.schema
        allowed = set(schema.get("properties") or ())
        patterns = [re.compile(p) for p in schema.get("patternProperties") or ()]
        extra = [k for k in error.instance if k not in allowed and not any(p.search(k) for p in patterns)]
        key = extra[0] if extra else "?"
        if not path:
            return (key,), f"is not a top-level key of a compose file (use {', '.join(sorted(allowed))}, or x-*)"
        if "properties" not in schema:   # a name that does not match the names' pattern
            return (*path, key), "is not a valid name (use letters, digits, '.', '_' and '-')"
        return (*path, key), "is not a key of this section"
    if kind == "type":
        wanted = _either([_TYPE_NAMES.get(t, t) for t in _types(error.schema)])
        return path, f"must be {wanted}, not {_shown(error.instance)}"
    if kind in ("oneOf", "anyOf"):
        wanted = _either([_TYPE_NAMES.get(t, t) for sub in error.validator_value for t in _types(sub)] or ["valid"])
        if error.context and all(e.validator != "type" for e in error.context if not e.relative_path):
            inner = best_match(error.context)
            if inner is not None:
                return describe(inner)
        return path, f"must be {wanted}, not {_shown(error.instance)}"
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return path, f"needs the key {missing[0] if missing else error.message}"
    if kind == "enum":
        return path, f"must be one of {', '.join(map(str, error.validator_value))}, not {_shown(error.instance)}"
    if kind == "minimum":
        return path, f"must be {error.validator_value} or more, not {_shown(error.instance)}"
    if kind == "maximum":
        return path, f"must be {error.validator_value} or less, not {_shown(error.instance)}"
    if kind == "uniqueItems":
        return path, "has the same item twice"
    if kind == "pattern":
        return path, f"{_shown(error.instance)} does not match the pattern {error.validator_value}"
    return path, f"is not valid: {error.message}"

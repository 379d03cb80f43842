"""Request bodies checked against moby's own swagger definition (schema/README.md).

How this works. The swagger 2.0 file is read once (`_spec`); an operation's body schema is
its `body` parameter's `schema`, whose `#/definitions/X` references are rewritten to
JSON-schema `#/$defs/X` so that `jsonschema` resolves them inside one document. Swagger's
own keywords (`x-nullable`, `example`, `format: int64`) are ignored by the validator. A JSON
`null` is Go's zero value for the daemon, so nulls are dropped before validation (docker/cli
sends `"Labels": null` for a map it never filled). Pure: no I/O beyond reading the file.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jsonschema
import yaml

SWAGGER = os.path.join(os.path.dirname(__file__), "schema", "swagger-v1.50.yaml")


class BadBody(ValueError):
    """A body that does not match its swagger schema; the message names the field."""


@functools.cache
def _spec() -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(SWAGGER, encoding="utf-8") as f:
        return yaml.load(f, Loader=loader)


def _to_defs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (v.replace("#/definitions/", "#/$defs/") if k == "$ref" and isinstance(v, str) else _to_defs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_to_defs(v) for v in node]
    return node


@functools.cache
def _defs() -> dict:
    return _to_defs(_spec()["definitions"])


@functools.cache
def validator(path: str, method: str) -> jsonschema.Draft202012Validator:
    """The validator of the body of `method` `path` (a swagger path template: "/services/create")."""
    params = _spec()["paths"][path][method]["parameters"]
    body = next(p for p in params if p.get("in") == "body")
    schema = dict(_to_defs(body["schema"]), **{"$defs": _defs()})
    return jsonschema.Draft202012Validator(schema)


def without_nulls(value: Any) -> Any:
    """`value` with every null member of an object dropped (Go reads null as the zero value)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number"}


def _what(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "null")


def check(path: str, method: str, body: Any) -> Any:
    """The body without nulls, if it matches the operation's schema; else BadBody naming the
    first field that does not (the deepest error, as the user's mistake is there)."""
    body = without_nulls(body)
    errors = list(validator(path, method).iter_errors(body))
    if not errors:
        return body
    error = max(errors, key=lambda e: len(e.absolute_path))
    while error.context:                                  # anyOf/allOf: the branch that went deepest
        error = max(error.context, key=lambda e: len(e.absolute_path))
    where = ".".join(str(p) for p in error.absolute_path) or "the body"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        raise BadBody(f"invalid JSON: {where} must be of type {wanted} (got {_what(error.instance)})")
    if error.validator == "required":
        raise BadBody(f"invalid JSON: {where}: {error.message}")
    if error.validator == "enum":
        raise BadBody(f"invalid JSON: {where} must be one of {', '.join(map(str, error.validator_value))}")
    raise BadBody(f"invalid JSON: {where}: {error.message[:200]}")

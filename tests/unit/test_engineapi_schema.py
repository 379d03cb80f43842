"""The Engine API's body schemas as the daemon keeps them (swarm/engineapi/swagger_bodies.py,
extracted from moby's swagger file without annotations and unreached definitions) are the
file's, and check every body exactly as the whole file did: the same errors, in the same
order, for bodies made wrong at every property of every operation, two levels deep."""
from __future__ import annotations

import os

import jsonschema
import pytest

from swarm.engineapi import schema, swagger_bodies

SPEC = schema.load_swagger()
OPERATIONS = sorted(swagger_bodies.BODIES)
WRONG = (1, "x", True, [1], {"Zz": 1}, None)


def whole_file_validator(path: str, method: str) -> jsonschema.Draft202012Validator:
    # The check as it was made from the whole file: the body's schema and every definition,
    # annotations included, references made #/$defs/.
    def to_defs(node):
        if isinstance(node, dict):
            return {k: (v.replace("#/definitions/", "#/$defs/") if k == "$ref" else to_defs(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [to_defs(v) for v in node]
        return node

    body = next(p for p in SPEC["paths"][path][method]["parameters"] if p.get("in") == "body")
    return jsonschema.Draft202012Validator(dict(to_defs(body["schema"]), **{"$defs": to_defs(SPEC["definitions"])}))


def properties(node: dict, depth: int = 0) -> dict[str, dict]:
    """The properties a schema names (through $ref and allOf), with their schemas."""
    if "$ref" in node and depth < 8:
        return properties(SPEC["definitions"][node["$ref"].rpartition("/")[2]], depth + 1)
    found = dict(node.get("properties", {}))
    for part in node.get("allOf", ()):
        found.update(properties(part, depth + 1))
    return found


def wrong_bodies(top: dict) -> list:
    bodies: list = [{}, [], "x", 1]
    for name, sub in properties(top).items():
        bodies += [{name: value} for value in WRONG]
        for inner in list(properties(sub))[:12]:
            bodies += [{name: {inner: value}} for value in WRONG[:5]]
    return bodies


def errors(validator: jsonschema.Draft202012Validator, body) -> list:
    return [(list(e.absolute_path), e.validator, e.message, [(list(c.absolute_path), c.message) for c in e.context])
            for e in validator.iter_errors(body)]


def test_the_kept_schemas_are_the_ones_extracted_from_the_swagger_file():
    with open(os.path.join(os.path.dirname(schema.__file__), "swagger_bodies.py"), encoding="utf-8") as f:
        assert f.read() == schema.render(*schema.body_schemas(SPEC)), "run: python -m swarm.engineapi.schema"
    assert ("/services/create", "post") in swagger_bodies.BODIES
    assert len(swagger_bodies.DEFS) < len(SPEC["definitions"])


@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_bodies_are_checked_as_against_the_whole_file(operation):
    path, method = operation
    whole, kept = whole_file_validator(path, method), schema.validator(path, method)
    body_param = next(p for p in SPEC["paths"][path][method]["parameters"] if p.get("in") == "body")
    bodies = wrong_bodies(body_param["schema"])
    for body in bodies:
        assert errors(kept, body) == errors(whole, body), body
    if path == "/services/create":
        assert len(bodies) > 150 and any(errors(kept, b) for b in bodies)     # the bodies are wrong indeed


def test_annotations_go_and_property_names_stay():
    node = {"type": "object", "description": "d", "example": {"description": 1}, "x-nullable": True,
            "properties": {"description": {"type": "string", "title": "t"}, "Spec": {"$ref": "#/definitions/S"}},
            "items": [{"description": "i", "type": "integer"}], "enum": [{"description": "kept: a value"}]}
    assert schema.bare(node) == {"type": "object", "properties": {"description": {"type": "string"},
                                                                  "Spec": {"$ref": "#/$defs/S"}},
                                 "items": [{"type": "integer"}], "enum": [{"description": "kept: a value"}]}

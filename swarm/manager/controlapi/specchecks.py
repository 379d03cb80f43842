"""The field checks every part of a service's params goes through (specparams and its
helpers): a number, a list of strings, a list of maps, a string, a bool, a map of strings,
a nested record decoded by msgspec, an IP address, a map of known fields. Each bounds the
size of what a client may send and raises ApiError bad_request with one sentence naming
the field or flag. Pure: no store, no clock.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import msgspec

from swarm.api.errors import ApiError

MAX_LIST = 1000          # env entries, mounts, constraints, ports, networks, labels, command words
MAX_TEXT = 64 * 1024     # one string of a spec


def bad(message: str) -> ApiError:
    return ApiError("bad_request", message)


def number(p: Mapping, key: str, default: float, kind: type = int) -> Any:
    value = p.get(key)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise bad(f"invalid {key.replace('_', ' ')} {value!r}: expected a {'whole ' if kind is int else ''}number")
    if value != value or value in (float("inf"), float("-inf")) or abs(value) > 1 << 62:
        raise bad(f"invalid {key.replace('_', ' ')} {value!r}: out of range")
    return kind(value)


def strings(p: Mapping, key: str) -> tuple[str, ...]:
    value = p.get(key, ())
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST:
        raise bad(f"invalid {key}: expected a list of at most {MAX_LIST} strings")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_TEXT:
            raise bad(f"invalid {key}: every item must be a string of at most {MAX_TEXT} characters")
    return tuple(value)


def maps(p: Mapping, key: str) -> list[dict]:
    value = p.get(key, ())
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST or not all(isinstance(m, dict) for m in value):
        raise bad(f"invalid {key}: expected a list of at most {MAX_LIST} maps")
    return list(value)


def text(p: Mapping, key: str, flag: str, limit: int = 4096) -> str:
    value = p.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise bad(f"invalid {flag}: expected a string of at most {limit} characters")
    return value


def boolean(p: Mapping, key: str, flag: str) -> bool:
    value = p.get(key, False)
    if not isinstance(value, bool):
        raise bad(f"invalid {flag}: expected true or false")
    return value


def string_map(p: Mapping, key: str, what: str) -> dict[str, str]:
    value = p.get(key, {})
    if (not isinstance(value, dict) or len(value) > MAX_LIST
            or not all(isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 1024 and len(v) <= MAX_TEXT
                       for k, v in value.items())):
        raise bad(f"invalid {what}: a map of at most {MAX_LIST} non-empty names to strings")
    return dict(value)


def decode(cls: type, data: Any, flag: str) -> Any:
    """A nested record (a mount, a ulimit) decoded with every field's type checked."""
    try:
        return msgspec.convert(data, cls)
    except (msgspec.ValidationError, TypeError) as exc:
        raise bad(f"invalid {flag}: {exc}") from None


def ip(text: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise bad(f"invalid {flag}: {text!r} is not an IP address") from None


def fields_map(value: Any, key: str, fields: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise bad(f"invalid {key}: expected a map of {', '.join(fields)}")
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        raise bad(f"invalid {key}: unknown field {unknown[0][:40]!r} (the fields are {', '.join(fields)})")
    return value

"""Docker's list filters (`ls -f KEY=VALUE`, repeatable): which keys a list takes and what matches.

How this works: a filter set is a dict of key -> values (one value per -f the
user gave). `check` refuses a key the list does not take with Docker's
sentence ("invalid filter 'x'") and a value an enumerated key cannot have
("Invalid role filter: 'boss'"), before anything is listed. `matches` applies
each key's rule to one object, given as a dict of key -> that object's value:
the values of one key are alternatives (any may match), different keys must
all match. Labels are the exception, as SwarmKit's: every `label=K` or
`label=K=V` given must hold. Names and IDs match by prefix (SwarmKit's
NamePrefixes/IDPrefixes), network names by substring (Docker's Args.Match).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from swarm.api.errors import ApiError
from swarm.api.spec import TASK_STATES

Filters = Mapping[str, Sequence[str]]

MAX_FILTERS = 100        # values in one filter set (a client's junk is refused, not looped over)
MAX_VALUE = 1024


class FilterError(ValueError):
    """A filter the list does not take, or a value it cannot have: one sentence."""


# key -> rule, per list. Rules: prefix, exact, labels, search (regexp or substring), any (set by the caller)
SERVICE_FILTERS = {"id": "prefix", "name": "prefix", "label": "labels", "mode": "exact"}
TASK_FILTERS = {"id": "prefix", "name": "prefix", "label": "labels", "service": "exact", "node": "exact",
                "desired-state": "exact"}
NODE_FILTERS = {"id": "prefix", "name": "prefix", "label": "labels", "node.label": "labels", "role": "exact",
                "membership": "exact"}
NETWORK_FILTERS = {"id": "prefix", "name": "search", "driver": "exact", "scope": "exact", "label": "labels",
                   "type": "exact"}

# What an enumerated key may be (compared lower-case, as Docker upper-cases them for SwarmKit).
_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("replicated", "global", "replicated-job", "global-job"),
    "role": ("manager", "worker"),
    "membership": ("accepted", "pending"),
    "desired-state": TASK_STATES,
    "scope": ("swarm", "global", "local"),
    "type": ("custom", "builtin"),
}
_CASELESS = frozenset({"role", "membership", "desired-state"})


def parse(items: Iterable[str]) -> dict[str, list[str]]:
    """`-f KEY=VALUE` flags as docker's opts.FilterOpt reads them (key lower-cased, both trimmed)."""
    out: dict[str, list[str]] = {}
    for item in items:
        if not item:
            continue
        if "=" not in item:
            raise FilterError(f"bad format of filter {item!r} (expected name=value)")
        key, _, value = item.partition("=")
        out.setdefault(key.strip().lower(), []).append(value.strip())
    return out


def check(filters: Any, accepted: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """The filter set a client sent, validated for one list (FilterError names the bad key or value)."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise FilterError("filters must be a map of filter names to lists of values")
    out: dict[str, tuple[str, ...]] = {}
    total = 0
    for key, values in filters.items():
        if not isinstance(key, str) or key not in accepted:
            raise FilterError(f"invalid filter '{key}'")
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and len(v) <= MAX_VALUE
                                                             for v in values):
            raise FilterError(f"invalid filter '{key}': expected a list of strings")
        total += len(values)
        if total > MAX_FILTERS:
            raise FilterError(f"too many filter values (at most {MAX_FILTERS})")
        if key in _CHOICES:
            values = [v.lower() if key in _CASELESS else v for v in values if v != ""]
            for value in values:
                if value not in _CHOICES[key]:
                    raise FilterError(_bad_choice(key, value))
        out[key] = tuple(values)
    return out


def _bad_choice(key: str, value: str) -> str:
    if key in _CASELESS:
        return f"Invalid {key} filter: '{value}'"     # moby's daemon/cluster/filters.go wording
    return f"invalid filter '{key}={value}' (use {', '.join(_CHOICES[key])})"


def label_holds(labels: Mapping[str, str], wanted: str) -> bool:
    """`K` (the label is set) or `K=V` (set to V)."""
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _search(text: str, pattern: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text


def _match_one(rule: str, actual: Any, values: Sequence[str]) -> bool:
    if rule == "labels":
        return all(label_holds(actual or {}, v) for v in values)
    if not values:
        return True       # only empty values given (role=""): Docker ignores them
    candidates = actual if isinstance(actual, (set, frozenset, list, tuple)) else (actual,)
    for have in candidates:
        have = "" if have is None else str(have)
        for want in values:
            if rule == "prefix" and have.startswith(want):
                return True
            if rule == "exact" and have == want:
                return True
            if rule == "search" and (have == want or _search(have, want)):
                return True
    return False


def matches(filters: Mapping[str, Sequence[str]], rules: Mapping[str, str], obj: Mapping[str, Any]) -> bool:
    """Does one object pass? `obj` gives each filter key's value(s) for it: a string, a set of
    strings (any may match: a node's ID and hostname for `node`), or a label dict."""
    if not filters:
        return True      # the usual listing, with no filter: no pass over the keys at all
    return all(_match_one(rules[key], obj.get(key), values) for key, values in filters.items())


def from_params(params: Mapping[str, Any], accepted: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """A control API request's "filters", checked: ApiError (bad_request) with the sentence."""
    try:
        return check(params.get("filters"), accepted)
    except FilterError as exc:
        raise ApiError("bad_request", str(exc)) from None

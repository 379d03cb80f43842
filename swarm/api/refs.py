"""The one way a user's reference names an object (a node, a service, a network).

How this works. Docker's rules, in this order: the full ID; then the exact
name (a name two objects share is an error that asks for an ID, never the
first match); then a unique ID prefix (a prefix two IDs share is an error
too). Nothing else matches, and the empty reference matches nothing.
"""
from __future__ import annotations

from typing import Callable, Mapping, TypeVar

from swarm.api.errors import ApiError

T = TypeVar("T")


def resolve_ref(kind: str, items: Mapping[str, T], ref: str, name: Callable[[T], str]) -> T:
    """The object of `items` (ID -> object) that `ref` names; `name` gives an object's name.

    Raises ApiError "not_found" when nothing matches and "bad_request" (the
    message says "ambiguous") when a name or an ID prefix matches several."""
    if ref in items:
        return items[ref]
    named = [item for item in items.values() if name(item) == ref]
    if len(named) == 1:
        return named[0]
    if named:
        raise ApiError("bad_request", f"{kind} {ref} is ambiguous ({len(named)} {kind}s are named {ref}): use an ID")
    prefixed = sorted(i for i in items if i.startswith(ref)) if ref else []
    if len(prefixed) == 1:
        return items[prefixed[0]]
    if prefixed:
        raise ApiError("bad_request", f"{kind} {ref} is ambiguous ({len(prefixed)} IDs start with it): "
                                      "give more characters")
    raise ApiError("not_found", f"{kind} {ref} not found")

"""What a service's spec refers to by name: its networks (with their DNS aliases, Docker's
NetworkAttachmentConfig) and its secrets and configs (--secret, --config). `resolve_files`
turns the names a client gives into references by id, from the names in the store the
control API passes in; `parse_file_refs` checks the resolved references as SwarmKit's
validateSecretRefsSpec does. Pure: this module reads no store.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from swarm.api import secrets, spec
from swarm.manager.controlapi.specchecks import MAX_LIST, MAX_TEXT, bad, decode, maps, strings

MAX_ALIASES = 100                         # DNS aliases of a service on one network
_ALIAS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_ALIAS = re.compile(rf"{_ALIAS_LABEL}(?:\.{_ALIAS_LABEL})*")   # a DNS name the embedded DNS can serve


def network_attachments(p: Mapping) -> list[tuple[str, tuple[str, ...]]]:
    """The "networks" param as (network name or ID, its aliases) pairs. Each item is a
    network's name or ID, or {"target": name or ID, "aliases": [alias, ...]} (Docker's
    NetworkAttachmentConfig): the aliases resolve, as the service's name does, on that
    network only."""
    value = p.get("networks", ())
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LIST:
        raise bad(f"invalid networks: expected a list of at most {MAX_LIST} networks")
    attachments = []
    for item in value:
        if isinstance(item, str):
            item = {"target": item}
        if not isinstance(item, dict) or not set(item) <= {"target", "aliases"}:
            raise bad('invalid networks: every item must be a network name or ID, '
                      'or {"target": NETWORK, "aliases": [ALIAS, ...]}')
        target = item.get("target")
        if not isinstance(target, str) or not target.strip() or len(target) > MAX_TEXT:
            raise bad("invalid networks: a network name or ID is required")
        aliases = strings(item, "aliases")
        if len(aliases) > MAX_ALIASES:
            raise bad(f"invalid network aliases: at most {MAX_ALIASES} per network")
        for alias in aliases:
            if len(alias) > 253 or not _ALIAS.fullmatch(alias):
                raise bad(f"invalid network alias {alias[:80]!r}: use a DNS name (letters, digits, '-' and '_', "
                          "labels separated by dots)")
        attachments.append((target, tuple(dict.fromkeys(aliases))))
    return attachments


def parse_networks(p: Mapping) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """(network IDs, network ID -> aliases) of the resolved "networks" param."""
    attachments = network_attachments(p)
    seen: set[str] = set()
    for target, _ in attachments:
        if target in seen:
            raise bad(f"network {target} is given twice")
        seen.add(target)
    return tuple(t for t, _ in attachments), {t: aliases for t, aliases in attachments if aliases}


# -- secrets and configs (--secret, --config) ---------------------------------------------------


FILE_KINDS = {"secrets": secrets.SECRET, "configs": secrets.CONFIG}
_FILE_FIELDS = frozenset({"source", "target", "uid", "gid", "mode"})


def _file_ref(item: Any, kind: str, names: Mapping[str, str], ids: set[str]) -> dict[str, Any]:
    """One reference as a client gives it ({"source": NAME, "target", "uid", "gid", "mode"}:
    the name resolved to its id, "secret not found: NAME" as docker/cli's ParseSecrets) or as
    a stored spec holds it ({"id", "name", ...}: the object must still exist)."""
    flag = f"--{kind}"
    if not isinstance(item, dict):
        raise bad(f"invalid {flag}: expected a map of source, target, uid, gid and mode")
    if "source" in item:
        if not set(item) <= _FILE_FIELDS:
            raise bad(f"invalid {flag}: unknown field {sorted(set(item) - _FILE_FIELDS)[0]!r}")
        name = item["source"]
        if not isinstance(name, str) or not name:
            raise bad(f"invalid {flag}: source is required")
        if name not in names:
            raise bad(f"{kind} not found: {name}")
        ref = {"id": names[name], "name": name, "target": item.get("target") or secrets.default_target(name)}
        for key in ("uid", "gid", "mode"):
            if key in item:
                ref[key] = item[key]
        return ref
    if item.get("id") not in ids:
        raise bad(f"{kind} not found: {item.get('name') or item.get('id')}")
    return item


def resolve_files(p: dict, known: Mapping[str, Mapping[str, str]]) -> dict:
    """The params with their "secrets", "configs", "secrets_add" and "configs_add" references
    resolved: `known` is kind -> name -> id of the objects in the store. (The control API calls
    it before spec_from_params or apply_update: this module reads no store.)"""
    out = dict(p)
    for key, kind in FILE_KINDS.items():
        names = known.get(kind, {})
        ids = set(names.values())
        for param in (key, f"{key}_add"):
            if param in p:
                out[param] = [_file_ref(item, kind, names, ids) for item in maps(p, param)]
    return out


def parse_file_refs(p: Mapping, key: str) -> tuple[spec.FileReference, ...]:
    """The resolved references of "secrets" or "configs", checked as SwarmKit's
    validateSecretRefsSpec: uid and gid are numbers (the runtime chowns the file), a mode is
    permission bits, and no two files share a target."""
    kind = FILE_KINDS[key]
    refs: list[spec.FileReference] = []
    targets: dict[str, str] = {}
    for item in maps(p, key):
        ref = decode(spec.FileReference, item, f"--{kind}")
        if not ref.id or not ref.name:
            raise bad(f"malformed {kind} reference")
        try:
            secrets.check_target(kind, ref.target)
        except secrets.InvalidObject as exc:
            raise bad(str(exc)) from None
        for what, value in (("uid", ref.uid), ("gid", ref.gid)):
            if not value.isdigit() or int(value) >= 1 << 32:
                raise bad(f"invalid --{kind} {ref.name}: {what} {value!r} is not a number")
        if not 0 <= ref.mode <= 0o7777:
            raise bad(f"invalid --{kind} {ref.name}: mode {ref.mode:o} is not permission bits")
        path = secrets.target_path(kind, ref.target)
        if path in targets:     # SwarmKit's sentence
            raise bad(f"{kind} references '{targets[path]}' and '{ref.name}' have a conflicting target: "
                      f"'{ref.target}'")
        targets[path] = ref.name
        refs.append(ref)
    return tuple(refs)

"""Cluster and node records, and the pure decisions made about them.

Records live in the Raft store as msgpack maps: kind "cluster" (one record,
id "default": CA, join-token secrets, settings), "node" (one per node) and
"revoked" (certificate serials of removed nodes). Nothing here does I/O or
reads a clock: callers pass `now`.
"""
from __future__ import annotations

import datetime
from typing import Any

import msgpack

from swarm.api.refs import resolve_ref

CLUSTER, NODE, REVOKED = "cluster", "node", "revoked"
CLUSTER_ID = "default"
ROLES = ("manager", "worker")
AVAILABILITIES = ("active", "pause", "drain")


def encode(record: dict) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes) -> dict:
    return msgpack.unpackb(data, raw=False)


def timestamp(now: datetime.datetime) -> str:
    """RFC 3339 in UTC with nanoseconds, as Docker prints every time."""
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def rfc3339(seconds: float) -> str:
    """`seconds` since the epoch as RFC 3339 in UTC with nanoseconds ("" for 0: never)."""
    if not seconds:
        return ""
    ns = round(seconds * 1e9)
    whole, frac = divmod(ns, 1_000_000_000)
    day = datetime.datetime.fromtimestamp(whole, datetime.timezone.utc)
    return day.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


MAX_IMAGES = 10_000
MAX_REF = 512
MAX_RESOURCE = 1 << 62


def check_address(what: str, addr: Any, *, optional: bool = False) -> str:
    """A HOST:PORT a node gives for itself (its own address, or its Raft address)."""
    if optional and addr == "":
        return ""
    if not isinstance(addr, str) or len(addr) > 260 or ":" not in addr or not addr.isprintable() or " " in addr:
        raise BadFacts(f"{what} must be HOST:PORT, not {str(addr)[:80]!r}")
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadFacts(f"{what} must be HOST:PORT with a port from 1 to 65535, not {addr!r}")
    return addr


def check_hostname(hostname: Any) -> str:
    if (not isinstance(hostname, str) or not 0 < len(hostname) <= 253 or not hostname.isprintable()
            or any(c.isspace() for c in hostname)):
        raise BadFacts(f"invalid hostname {str(hostname)[:80]!r}: 1 to 253 printable characters, no spaces")
    return hostname


class BadFacts(ValueError):
    """A heartbeat's facts about its node that do not fit the node record."""


def node_facts(params: Any) -> dict:
    """What a heartbeat may record about its node (resources, images), checked:
    whatever else it carries is ignored; a malformed value refuses the whole beat."""
    if not isinstance(params, dict):
        raise BadFacts("heartbeat parameters must be a map")
    facts: dict[str, Any] = {}
    if "resources" in params:
        res = params["resources"]
        if not isinstance(res, dict):
            raise BadFacts("resources must be a map")
        clean = {}
        for key in ("nano_cpus", "memory_bytes"):
            value = res.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RESOURCE:
                raise BadFacts(f"resources.{key} must be a whole number from 0 to {MAX_RESOURCE}, not {value!r}")
            clean[key] = value
        facts["resources"] = clean
    if "images" in params:
        images = params["images"]
        if not isinstance(images, list) or len(images) > MAX_IMAGES:
            raise BadFacts(f"images must be a list of at most {MAX_IMAGES} references")
        for ref in images:
            if not isinstance(ref, str) or not 0 < len(ref) <= MAX_REF or not ref.isprintable():
                raise BadFacts(f"images holds an invalid reference {str(ref)[:80]!r}")
        facts["images"] = sorted(set(images))
    return facts


def new_node(node_id: str, hostname: str, role: str, addr: str, raft_addr: str, cert_serial: int,
             now: datetime.datetime) -> dict:
    return {
        "id": node_id, "hostname": hostname, "role": role, "availability": "active", "labels": {},
        "addr": addr, "raft_addr": raft_addr if role == "manager" else "",
        "status": "ready", "status_message": "", "cert_serial": format(cert_serial, "x"),
        "created_at": timestamp(now), "updated_at": timestamp(now),
    }


def resolve(nodes: dict[str, dict], ref: str) -> dict:
    """A node by full ID, hostname, or unique ID prefix (Docker's rules: `refs.resolve_ref`)."""
    return resolve_ref("node", nodes, ref, lambda n: n["hostname"])


def updated(node: dict, now: datetime.datetime, *, availability: str | None = None,
            label_add: dict[str, str] | None = None, label_rm: list[str] | None = None) -> dict:
    """The node with the given changes; only what was given changes."""
    out = dict(node, labels=dict(node.get("labels", {})))
    if availability is not None:
        if availability not in AVAILABILITIES:
            raise ValueError(f"invalid availability {availability!r}: use active, pause or drain")
        out["availability"] = availability
    for key in label_rm or []:
        if key not in out["labels"]:
            raise ValueError(f"label {key} does not exist on node {node['hostname']}")
        del out["labels"][key]
    for key, value in (label_add or {}).items():
        if not key:
            raise ValueError("a label key cannot be empty")
        out["labels"][key] = value
    out["updated_at"] = timestamp(now)
    return out


def manager_status(node: dict, leader_id: str | None, reachable: set[str]) -> str:
    if node["role"] != "manager":
        return ""
    if node["id"] == leader_id:
        return "leader"
    return "reachable" if node["id"] in reachable else "unreachable"


def row(node: dict, leader_id: str | None, reachable: set[str]) -> dict:
    return {
        "id": node["id"], "hostname": node["hostname"], "role": node["role"], "status": node["status"],
        "availability": node["availability"], "manager_status": manager_status(node, leader_id, reachable),
        "addr": node["addr"],
    }


def inspect_view(node: dict, leader_id: str | None, reachable: set[str]) -> dict:
    view = row(node, leader_id, reachable)
    view.update({k: node.get(k) for k in ("labels", "created_at", "updated_at", "status_message",
                                          "cert_serial", "raft_addr")})
    return view


def removal_keeps_quorum(members: int, reachable: int, target_reachable: bool) -> bool:
    """Would removing one manager leave a reachable majority of the rest?"""
    remaining = members - 1
    if remaining <= 0:
        return False
    reachable_after = reachable - (1 if target_reachable else 0)
    return reachable_after > remaining / 2

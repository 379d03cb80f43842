"""Cluster and node records, and the pure decisions made about them.

Records live in the Raft store as msgpack maps: kind "cluster" (one record,
id "default": CA, join-token secrets, settings), "node" (one per node) and
"revoked" (certificate serials of removed nodes). Nothing here does I/O or
reads a clock: callers pass `now`.
"""
from __future__ import annotations

import datetime
import ipaddress
import re
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


_RFC3339_CACHE: dict[float, str] = {}
_RFC3339_CACHE_MAX = 16384     # two times per task of a listing; cleared whole when full


def rfc3339(seconds: float) -> str:
    """`seconds` since the epoch as RFC 3339 in UTC with nanoseconds ("" for 0: never).

    A task list formats two times per task, and they are the same floats from one request
    to the next (a task's times change only when its state does): each is formatted once."""
    text = _RFC3339_CACHE.get(seconds)
    if text is None:
        text = _format_rfc3339(seconds)
        if len(_RFC3339_CACHE) >= _RFC3339_CACHE_MAX:
            _RFC3339_CACHE.clear()
        _RFC3339_CACHE[seconds] = text
    return text


def _format_rfc3339(seconds: float) -> str:
    if not seconds:
        return ""
    whole, frac = divmod(round(seconds * 1e9), 1_000_000_000)
    d = datetime.datetime.fromtimestamp(whole, datetime.timezone.utc)
    # %-formatting of the fields: half the cost of strftime
    return "%04d-%02d-%02dT%02d:%02d:%02d.%09dZ" % (d.year, d.month, d.day, d.hour, d.minute, d.second, frac)


MAX_IMAGES = 10_000
MAX_REF = 512
MAX_PLATFORM = 64
_PLATFORM_RE = re.compile(r"[A-Za-z0-9_.-]*")
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
    if "platform" in params:
        # what node.platform.os / node.platform.arch constraints match: "linux", "x86_64"
        platform = params["platform"]
        if not isinstance(platform, dict):
            raise BadFacts("platform must be a map of os and architecture")
        clean = {}
        for key in ("os", "architecture"):
            value = platform.get(key, "")
            if not isinstance(value, str) or len(value) > MAX_PLATFORM or not _PLATFORM_RE.fullmatch(value):
                raise BadFacts(f"platform.{key} must be a short name of letters, digits, '.', '_' and '-', "
                               f"not {str(value)[:80]!r}")
            clean[key] = value
        facts["platform"] = clean
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


# -- cluster settings (`swarm init` flags, `swarm update`) -------------------------------
#
# The cluster record carries them beside the CA and the tokens; a record made before a
# setting existed lacks it, so readers go through `cluster_settings` (defaults filled in).

DEFAULT_HEARTBEAT = 1.0                      # seconds (Docker's is 5 s; ours is shorter for labs)
DEFAULT_CERT_EXPIRY = 90 * 24 * 3600.0       # Docker's 2160h
DEFAULT_TASK_HISTORY = 5
DEFAULT_ADDR_POOLS = ("10.0.0.0/8",)         # Docker's default-addr-pool
DEFAULT_POOL_MASK = 24
DEFAULT_DATA_PATH_PORT = 4789                # IANA's VXLAN port
DATA_PATH_PORTS = (1024, 49151)              # Docker's range for --data-path-port
MIN_CERT_EXPIRY = 10.0                       # seconds; lower than Docker's 1h so tests can renew
HEARTBEAT_RANGE = (0.05, 3600.0)
MAX_ADDR_POOLS = 64
SETTINGS = ("heartbeat", "cert_expiry", "task_history_limit", "default_addr_pools",
            "default_addr_pool_mask_length", "data_path_port", "autolock")
UPDATABLE = ("heartbeat", "cert_expiry", "task_history_limit", "autolock")   # the rest are fixed at init, as Docker's


class BadSetting(ValueError):
    """A cluster setting out of range; the message names the flag."""


def cluster_settings(cluster: dict) -> dict:
    """The cluster's settings, with Docker's defaults for those its record lacks."""
    return {
        "heartbeat": float(cluster.get("heartbeat", DEFAULT_HEARTBEAT)),
        "cert_expiry": float(cluster.get("cert_expiry", DEFAULT_CERT_EXPIRY)),
        "task_history_limit": int(cluster.get("task_history_limit", DEFAULT_TASK_HISTORY)),
        "default_addr_pools": list(cluster.get("default_addr_pools") or DEFAULT_ADDR_POOLS),
        "default_addr_pool_mask_length": int(cluster.get("default_addr_pool_mask_length", DEFAULT_POOL_MASK)),
        "data_path_port": int(cluster.get("data_path_port") or DEFAULT_DATA_PATH_PORT),
        "autolock": bool(cluster.get("autolock", False)),
    }


def _number(flag: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise BadSetting(f"{flag} must be a {'whole ' if integer else ''}number, not {value!r}")
    return value


def check_heartbeat(value: Any) -> float:
    low, high = HEARTBEAT_RANGE
    if not low <= _number("--dispatcher-heartbeat", value) <= high:
        raise BadSetting("--dispatcher-heartbeat must be between 50ms and 1h")
    return float(value)


def check_cert_expiry(value: Any) -> float:
    if _number("--cert-expiry", value) < MIN_CERT_EXPIRY:
        raise BadSetting(f"--cert-expiry must be at least {MIN_CERT_EXPIRY:g}s")
    return float(value)


def check_task_history(value: Any) -> int:
    """Docker's task history retention limit: a negative one keeps every task."""
    if not -1 <= _number("--task-history-limit", value, integer=True) <= 1_000_000:
        raise BadSetting("--task-history-limit must be a whole number from -1 (keep all) to 1000000")
    return int(value)


def check_autolock(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadSetting(f"--autolock must be true or false, not {value!r}")
    return value


def check_data_path_port(value: Any) -> int:
    """Docker's rule: 0 means the default (4789), otherwise 1024-49151."""
    port = _number("--data-path-port", value, integer=True)
    if port == 0:
        return DEFAULT_DATA_PATH_PORT
    low, high = DATA_PATH_PORTS
    if not low <= port <= high:
        raise BadSetting(f"--data-path-port must be from {low} to {high} (0: the default {DEFAULT_DATA_PATH_PORT}), "
                         f"not {port}")
    return int(port)


def check_addr_pools(pools: Any, mask: Any) -> tuple[list[str], int]:
    """--default-addr-pool CIDRs (IPv4, not overlapping) and the subnet size cut from them
    (at least as long as every pool's prefix, at most /29 so a subnet has room for tasks).
    No pool given: Docker's default 10.0.0.0/8."""
    if not isinstance(pools, (list, tuple)) or len(pools) > MAX_ADDR_POOLS:
        raise BadSetting(f"--default-addr-pool takes at most {MAX_ADDR_POOLS} CIDRs")
    mask = _number("--default-addr-pool-mask-length", mask, integer=True)
    nets = []
    for text in pools or DEFAULT_ADDR_POOLS:
        try:
            net = ipaddress.ip_network(str(text), strict=True)
        except ValueError as exc:
            raise BadSetting(f"--default-addr-pool {text!r} is not a network in CIDR form (like 10.20.0.0/16): "
                             f"{exc}") from None
        if net.version != 4:
            raise BadSetting(f"--default-addr-pool {text} is not IPv4 (overlay networks are IPv4 here)")
        clash = next((n for n in nets if n.overlaps(net)), None)
        if clash is not None:
            raise BadSetting(f"--default-addr-pool {text} overlaps {clash}")
        nets.append(net)
    widest = max(n.prefixlen for n in nets)
    if not widest <= mask <= 29:
        raise BadSetting(f"--default-addr-pool-mask-length must be from {widest} (the longest pool prefix) to 29, "
                         f"not {mask}")
    return [str(n) for n in nets], int(mask)


def init_settings(*, heartbeat: Any = DEFAULT_HEARTBEAT, cert_expiry: Any = DEFAULT_CERT_EXPIRY,
                  task_history_limit: Any = DEFAULT_TASK_HISTORY, default_addr_pools: Any = (),
                  default_addr_pool_mask_length: Any = DEFAULT_POOL_MASK,
                  data_path_port: Any = DEFAULT_DATA_PATH_PORT, autolock: Any = False) -> dict:
    """The settings `swarm init` writes into the new cluster record, checked (BadSetting names the flag)."""
    pools, mask = check_addr_pools(list(default_addr_pools), default_addr_pool_mask_length)
    return {"heartbeat": check_heartbeat(heartbeat), "cert_expiry": check_cert_expiry(cert_expiry),
            "task_history_limit": check_task_history(task_history_limit), "default_addr_pools": pools,
            "default_addr_pool_mask_length": mask, "data_path_port": check_data_path_port(data_path_port),
            "autolock": check_autolock(autolock)}


def settings_update(params: Any) -> dict:
    """The settings a `swarm update` changes, checked: only those given; a setting fixed at
    init (address pools, data path port) is refused with one sentence."""
    if not isinstance(params, dict):
        raise BadSetting("cluster.update takes a map of settings")
    fixed = sorted(k for k in params if k in SETTINGS and k not in UPDATABLE)
    if fixed:
        raise BadSetting(f"{fixed[0]} is chosen at swarm init and cannot be changed")
    unknown = sorted(k for k in params if k not in SETTINGS and k != "version")
    if unknown:
        raise BadSetting(f"unknown cluster setting {unknown[0]!r}")
    checks = {"heartbeat": check_heartbeat, "cert_expiry": check_cert_expiry,
              "task_history_limit": check_task_history, "autolock": check_autolock}
    return {k: checks[k](params[k]) for k in UPDATABLE if params.get(k) is not None}

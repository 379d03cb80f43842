"""`docker swarm init/join/leave` and a daemon outside any swarm, as dockerd answers them.

How this works. dockerd runs before any swarm exists: `docker info` says "Swarm: inactive"
and /swarm/init or /swarm/join make the node a manager or a worker. Here the daemon process
(swarm/daemon/host.py) does the same; this module holds the pure part: Docker's
SwarmInitRequest and SwarmJoinRequest (already checked against the swagger schema) read
field by field (`fields`: a field this daemon cannot honour is a 400 naming it) into the
params of the local API's `swarm.init` and `swarm.join` (docs/daemon-api.md), the /info
of an inactive node, and dockerd's sentences for a node in the wrong state. Pure.
"""
from __future__ import annotations

from typing import Any

from swarm.api import model
from swarm.engineapi import objects
from swarm.engineapi.errors import EngineError
from swarm.engineapi.fields import Fields

# dockerd's sentences (moby daemon/cluster/errors.go and helpers.go), with their statuses.
NO_SWARM = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this '
            'node to swarm and try again.')
NOT_PART = "This node is not part of a swarm"
SWARM_EXISTS = ('This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join '
                'another one.')
LOCKED = ('Swarm is encrypted and needs to be unlocked before it can be used. Please use "docker swarm unlock" '
          'to unlock it.')
# docker/cli adds " - specify one with --advertise-addr" to an error holding these words.
NO_ADVERTISE = "could not choose an IP address to advertise: this daemon does not guess one"
FORCE_NEW_CLUSTER = ("ForceNewCluster is not supported through the Engine API: stop this node's daemon and run "
                     "`swarm init --force-new-cluster`")
DEFAULT_PORT = 2377


def _addr(text: str, what: str) -> str:
    """HOST[:PORT] as sent; an interface name (dockerd's eth0:2377) is not resolved here."""
    if not isinstance(text, str) or not text.strip():
        raise EngineError(400, f"invalid {what}: an address HOST[:PORT] is required")
    return text.strip()


def _with_port(addr: str, port: int) -> str:
    """`addr` with `port` if it names none (dockerd: an advertise address without a port takes
    the listen address's)."""
    host, sep, tail = addr.rpartition(":")
    if sep and tail.isdigit() and not host.endswith(":"):
        return addr
    return f"{addr}:{port}"


def _port_of(addr: str) -> int:
    _, sep, tail = addr.rpartition(":")
    return int(tail) if sep and tail.isdigit() else DEFAULT_PORT


def _availability(f: Fields) -> str:
    value = f.get("Availability", "") or "active"
    if value not in model.AVAILABILITIES:
        raise EngineError(400, f"invalid Availability {value!r}: must be active, pause or drain")
    return value


def _spec_settings(spec: Fields) -> dict[str, Any]:
    """The cluster settings of a SwarmSpec sent with an init (zero: this daemon's default)."""
    name = spec.get("Name", "")
    if name not in ("", "default"):
        raise EngineError(400, 'invalid Spec.Name: swarm spec must be named "default"')
    spec.refuse("Labels")
    settings = objects.swarm_spec_settings(spec)
    if not settings.get("autolock"):
        settings.pop("autolock", None)      # off is the default of an init
    # Raft's ticks and snapshots are this daemon's own: zero (what docker/cli sends) is accepted.
    raft = spec.sub("Raft")
    for key in ("SnapshotInterval", "KeepOldSnapshots", "LogEntriesForSlowFollowers", "ElectionTick", "HeartbeatTick"):
        raft.refuse(key)
    return settings


def init_params(body: dict) -> dict:
    """The local API's `swarm.init` params of a SwarmInitRequest."""
    f = Fields(body)
    if f.get("ForceNewCluster"):
        raise EngineError(400, FORCE_NEW_CLUSTER)
    f.refuse("DataPathAddr")
    listen = _addr(f.get("ListenAddr") or f"0.0.0.0:{DEFAULT_PORT}", "ListenAddr")
    listen = _with_port(listen, DEFAULT_PORT)
    if not f.get("AdvertiseAddr"):
        raise EngineError(400, NO_ADVERTISE)
    advertise = _with_port(_addr(f.get("AdvertiseAddr"), "AdvertiseAddr"), _port_of(listen))
    settings = _spec_settings(f.sub("Spec"))
    heartbeat = settings.pop("heartbeat", model.DEFAULT_HEARTBEAT)
    cert_expiry = settings.pop("cert_expiry", model.DEFAULT_CERT_EXPIRY)
    if f.get("AutoLockManagers"):
        settings["autolock"] = True
    if f.get("DefaultAddrPool"):
        settings["default_addr_pools"] = list(f.get("DefaultAddrPool"))
    if f.get("SubnetSize"):
        settings["default_addr_pool_mask_length"] = f.get("SubnetSize")
    if f.get("DataPathPort"):
        settings["data_path_port"] = f.get("DataPathPort")
    params = {"advertise_addr": advertise, "listen_addr": listen, "heartbeat": heartbeat,
              "cert_expiry": cert_expiry, "availability": _availability(f), "settings": settings}
    f.done()
    return params


def join_params(body: dict) -> dict:
    """The local API's `swarm.join` params of a SwarmJoinRequest."""
    f = Fields(body)
    f.refuse("DataPathAddr")
    remotes = f.get("RemoteAddrs") or []
    if not remotes:
        raise EngineError(400, "at least 1 RemoteAddr is required to join")
    token = f.get("JoinToken", "")
    if not token.strip():
        raise EngineError(400, "invalid join token: JoinToken is empty")
    listen = _with_port(_addr(f.get("ListenAddr") or f"0.0.0.0:{DEFAULT_PORT}", "ListenAddr"), DEFAULT_PORT)
    params: dict[str, Any] = {"token": token.strip(), "remote_addr": _with_port(_addr(remotes[0], "RemoteAddrs"),
                                                                               DEFAULT_PORT),
                              "listen_addr": listen, "advertise_addr": None}
    if f.get("AdvertiseAddr"):
        params["advertise_addr"] = _with_port(_addr(f.get("AdvertiseAddr"), "AdvertiseAddr"), _port_of(listen))
    # A node joins as the managers make it: pause or drain is set afterwards (`docker node update`).
    f.refuse("Availability", ("active",))
    f.done()
    return params


def idle_info_view(info: dict, host: dict, now: str) -> dict:
    """/info of a daemon outside any swarm (info's state "inactive") or of a locked manager
    ("locked"): dockerd's, with Swarm.LocalNodeState saying which."""
    view = objects.info_view(info, host, now)
    view["Swarm"] = {"NodeID": info.get("node_id", ""), "NodeAddr": "", "LocalNodeState": info["state"],
                     "ControlAvailable": False, "Error": "", "RemoteManagers": None}
    return view


def ping_swarm_header(state: str) -> str:
    """The /_ping Swarm header for `state` ("inactive", "locked", "manager" or "worker")."""
    return state if state in ("inactive", "locked", "pending", "error") else f"active/{state}"

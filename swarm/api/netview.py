"""The network view: what a node's agent needs to wire its tasks.

The managers' dispatcher builds one `NetworkView` per node and sends it with
every `tasks.assigned` answer as plain data (`encode`); the agent turns that
back into the typed value (`decode`) before any of it reaches the kernel, so
a malformed view is refused whole, with the path of the bad field, and the
agent keeps the view it had.

On the wire (msgpack maps, the same keys as the fields below):

    {"networks":   {network id: {"id", "name", "subnet", "gateway", "vni", "ingress"}},
     "peers":      {network id: [{"ip", "vtep"}, ...]},
     "services":   {network id: [{"name", "mode", "vip", "tasks": [ip, ...], "aliases": [name, ...]}, ...]},
     "ingress_ip": "10.0.0.3",
     "published":  [{"published", "target", "protocol", "service", "tasks": [ip, ...]}, ...],
     "data_path_port": 4789}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from swarm.api import spec

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Vni = Annotated[int, msgspec.Meta(ge=0, lt=1 << 24)]


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    subnet: str                      # "10.0.1.0/24"
    gateway: str
    vni: Vni
    ingress: bool = False


@dataclass(frozen=True)
class Peer:
    ip: str                          # an address on the network, behind...
    vtep: str                        # ...this node's VXLAN endpoint


@dataclass(frozen=True)
class ServiceEntry:
    """One service on one network: what its name resolves to and what its VIP balances over."""
    name: str
    mode: Literal["vip", "dnsrr"]
    vip: str                         # "" in dnsrr mode (or before the allocator gave one)
    tasks: tuple[str, ...] = ()      # running tasks' addresses on this network
    aliases: tuple[str, ...] = ()    # the service's other names on this network (answer as `name` does)


@dataclass(frozen=True)
class PublishedPort:
    published: Port
    target: Port
    protocol: Literal["tcp", "udp"]
    service: str
    tasks: tuple[str, ...] = ()      # backends' ingress addresses (host mode: this node's tasks only)


@dataclass(frozen=True)
class NetworkView:
    networks: dict[str, Network] = field(default_factory=dict)            # the networks this node uses
    peers: dict[str, tuple[Peer, ...]] = field(default_factory=dict)      # per network: the other nodes' addresses
    services: dict[str, tuple[ServiceEntry, ...]] = field(default_factory=dict)  # per network: its service table
    ingress_ip: str = ""             # this node's ingress sandbox address ("" if none yet)
    published: tuple[PublishedPort, ...] = ()
    data_path_port: Annotated[int, msgspec.Meta(ge=1024, le=49151)] = 4789   # VXLAN's UDP port (swarm init)

    def ingress_network(self) -> Network | None:
        return next((n for n in self.networks.values() if n.ingress), None)


class InvalidView(ValueError):
    """A network view that does not decode; the message names the field."""


def encode(view: NetworkView) -> dict:
    """Plain data for the wire."""
    return spec.to_dict(view)


def decode(data: Any) -> NetworkView:
    """The typed view from plain data (every field's type and range checked); InvalidView names the fault."""
    try:
        view = msgspec.convert(data, NetworkView)
    except (msgspec.ValidationError, TypeError) as exc:
        raise InvalidView(f"invalid network view: {exc}") from None
    for net_id, net in view.networks.items():
        if net.id != net_id:
            raise InvalidView(f"invalid network view: network {net_id!r} carries the id {net.id!r}")
    return view

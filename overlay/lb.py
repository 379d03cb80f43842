"""nftables load balancing: service VIPs and the ingress routing mesh.

How this works: the ruleset generators are pure functions from desired state
(services, backends, published ports) to the text of an `nft -f` script; the
only I/O is `apply_ruleset`, which pipes a script into `nft -f -` inside a
named namespace. Each script re-creates its whole table in one transaction:

    table ip T          # make sure it exists, so that ...
    delete table ip T   # ... this cannot fail
    table ip T { ... }  # the complete new content

nft applies a file atomically, so a connection never sees half a table.
Conntrack keeps established connections on their backend when the set
changes; only new connections follow the new set.

Service VIPs (table `ip swarm_lb` in every task namespace, kube-proxy's
nftables way): a verdict map `service-ips` sends a VIP to a per-service chain
that picks an endpoint chain with `numgen random mod N vmap {...}`; each
endpoint chain DNATs to its task's address and leaves the port alone. As
with Docker's VIPs, every port and protocol is forwarded (the task decides
what it answers), so a service reaches its peers on any port, published or
not. Services with no backend are rejected at once instead of timing out on
ARP for the VIP.

Ingress routing mesh: in the host namespace (table `ip swarm_ingress`) a
packet to any local address on a published port is DNATed to the node's
ingress sandbox; in the sandbox (same table name) it is DNATed to a task on
the ingress overlay, chosen as above, and SNATed to the sandbox's own overlay
address so the reply comes back through it (why Docker loses the client IP).

nft 1.0.6 quirks (verified): the output hook rejects `priority dstnat`, so
numeric priorities are used throughout, and `dnat to IP:PORT` needs a
transport protocol match (`meta l4proto tcp`) before it.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from overlay import netns as ns
from overlay.errors import DatapathError, InvalidRequest, NftablesUnavailable

VIP_TABLE = "swarm_lb"
INGRESS_TABLE = "swarm_ingress"
PROTOCOLS = ("tcp", "udp")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class Backend:
    """One endpoint: a task address and the port it listens on."""

    ip: str
    port: int


@dataclass(frozen=True)
class VipService:
    """The VIP of a service on one network and its tasks' addresses there.

    `name` becomes part of chain names: letters, digits and `_` only (a
    service id does).
    """

    name: str
    vip: str
    backends: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PublishedPort:
    """A port published through the routing mesh and the tasks behind it."""

    port: int
    protocol: str = "tcp"
    backends: tuple[Backend, ...] = field(default_factory=tuple)


def _ip(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError as exc:
        raise InvalidRequest(f"The {what} {value!r} is not an IPv4 address.") from exc


def _port(value: int, what: str) -> int:
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidRequest(f"The {what} {value!r} is not a port number (1-65535).")
    return value


def _proto(value: str) -> str:
    if value not in PROTOCOLS:
        raise InvalidRequest(f"Unknown protocol {value!r}: use tcp or udp.")
    return value


def _balance(chain: str, targets: Sequence[str]) -> list[str]:
    """A chain choosing one endpoint chain at random, plus the endpoint chains.

    `targets` are what follows `dnat to`: an address (keep the port) or, after
    a transport protocol match, address:port.
    """
    ends = [(f"{chain}-{k}".replace("svc-", "ep-", 1), t) for k, t in enumerate(targets)]
    picks = ", ".join(f"{k} : goto {name}" for k, (name, _) in enumerate(ends))
    lines = [
        f"\tchain {chain} {{",
        f"\t\tnumgen random mod {len(ends)} vmap {{ {picks} }}",
        "\t}",
    ]
    for name, target in ends:
        lines += [f"\tchain {name} {{", f"\t\t{target}", "\t}"]
    return lines


def _port_targets(protocol: str, backends: Sequence[Backend]) -> list[str]:
    # nft 1.0.6 wants a transport protocol match before `dnat to IP:PORT`.
    return [f"meta l4proto {protocol} dnat to {_ip(b.ip, 'backend address')}:{_port(b.port, 'backend port')}"
            for b in backends]


def _elements(items: Sequence[str]) -> list[str]:
    if not items:
        return []
    return ["\t\telements = { " + ",\n\t\t\t     ".join(items) + " }"]


def _header(table: str) -> list[str]:
    return [f"table ip {table}", f"delete table ip {table}", f"table ip {table} {{"]


def vip_ruleset(services: Iterable[VipService]) -> str:
    """The `ip swarm_lb` table of a task namespace, as one atomic nft script."""
    entries: dict[str, VipService] = {}
    for svc in services:
        if not _NAME_RE.match(svc.name):
            raise InvalidRequest(f"The service name {svc.name!r} may hold only letters, digits and _.")
        vip = _ip(svc.vip, "VIP")
        if vip in entries:
            raise InvalidRequest(f"The VIP {vip} is listed twice.")
        entries[vip] = svc
    ordered = sorted(entries.items(), key=lambda kv: int(ipaddress.IPv4Address(kv[0])))
    live = [(vip, s) for vip, s in ordered if s.backends]
    dead = [vip for vip, s in ordered if not s.backends]

    def chain(svc: VipService) -> str:
        return f"svc-{svc.name}"

    lines = _header(VIP_TABLE)
    lines += ["\tmap service-ips {", "\t\ttype ipv4_addr : verdict"]
    lines += _elements([f"{vip} : goto {chain(s)}" for vip, s in live])
    lines += ["\t}", "\tset no-endpoints {", "\t\ttype ipv4_addr"]
    lines += _elements(dead)
    lines += [
        "\t}",
        "\tchain output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        "\t\tip daddr vmap @service-ips",
        "\t}",
        "\tchain reject-no-endpoints {",
        "\t\ttype filter hook output priority 0; policy accept;",
        "\t\tip daddr @no-endpoints reject",
        "\t}",
    ]
    for _, svc in live:
        lines += _balance(chain(svc), [f"dnat to {_ip(ip, 'backend address')}" for ip in svc.backends])
    lines.append("}")
    return "\n".join(lines) + "\n"


def _published(ports: Iterable[PublishedPort]) -> list[PublishedPort]:
    seen: dict[tuple[str, int], PublishedPort] = {}
    for p in ports:
        key = (_proto(p.protocol), _port(p.port, "published port"))
        if key in seen:
            raise InvalidRequest(f"The {key[0]} port {key[1]} is published twice.")
        seen[key] = p
    return [seen[k] for k in sorted(seen)]


def ingress_host_ruleset(ports: Iterable[PublishedPort], sandbox_ip: str) -> str:
    """The host side of the routing mesh: local address + published port -> ingress sandbox.

    Loopback destinations are left alone (they would need route_localnet).
    """
    target = _ip(sandbox_ip, "ingress sandbox address")
    matches = [f"{p.protocol} dport {p.port}" for p in _published(ports)]
    lines = _header(INGRESS_TABLE)
    lines += ["\tchain prerouting {", "\t\ttype nat hook prerouting priority -100; policy accept;"]
    lines += [f"\t\tfib daddr type local {m} dnat to {target}" for m in matches]
    lines += ["\t}", "\tchain output {", "\t\ttype nat hook output priority -100; policy accept;"]
    lines += [f"\t\tip daddr != 127.0.0.0/8 fib daddr type local {m} dnat to {target}" for m in matches]
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def ingress_sandbox_ruleset(ports: Iterable[PublishedPort], overlay_ip: str) -> str:
    """The ingress sandbox side: published port -> a task on the ingress overlay, SNAT to us."""
    source = _ip(overlay_ip, "ingress sandbox overlay address")
    live = [p for p in _published(ports) if p.backends]

    def chain(p: PublishedPort) -> str:
        return f"svc-{p.protocol}-{p.port}"

    lines = _header(INGRESS_TABLE)
    lines += ["\tmap published {", "\t\ttype inet_proto . inet_service : verdict"]
    lines += _elements([f"{p.protocol} . {p.port} : goto {chain(p)}" for p in live])
    lines += [
        "\t}",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority -100; policy accept;",
        "\t\tmeta l4proto . th dport vmap @published",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority 100; policy accept;",
        f"\t\tct status dnat snat to {source}",
        "\t}",
    ]
    for p in live:
        lines += _balance(chain(p), _port_targets(p.protocol, p.backends))
    lines.append("}")
    return "\n".join(lines) + "\n"


def delete_table_script(table: str) -> str:
    """A script removing `table` whether or not it exists."""
    return f"table ip {table}\ndelete table ip {table}\n"


def apply_ruleset(netns: str | None, script: str, *, allow_initial: bool = False, timeout: float = 30.0) -> None:
    """Load `script` with `nft -f -` inside `netns` (one transaction: all or nothing)."""
    ns.guard_initial(netns, "load nftables rules", allow_initial)
    try:
        ns.exec_in(netns, ["nft", "-f", "-"], input=script, timeout=timeout)
    except DatapathError as exc:
        raise DatapathError(f"nftables refused the ruleset: {exc.message}") from exc


def list_table(netns: str | None, table: str) -> str:
    """`nft list table ip TABLE` inside `netns` ("" if there is no such table)."""
    proc = ns.exec_in(netns, ["nft", "list", "table", "ip", table], check=False)
    return proc.stdout if proc.returncode == 0 else ""


def check_nftables() -> None:
    """Raise NftablesUnavailable unless `nft` is installed and can list tables."""
    try:
        proc = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise NftablesUnavailable("The nft command is missing: install nftables (Debian: apt-get install nftables).") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftablesUnavailable(f"nft could not be run: {exc}.") from exc
    if proc.returncode != 0:
        reason = proc.stderr.strip() or f"exit status {proc.returncode}"
        raise NftablesUnavailable(f"nft cannot list tables (needs root and nf_tables in the kernel): {reason}")

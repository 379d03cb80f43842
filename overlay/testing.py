"""Test helpers beside the real thing: a fake underlay and tiny TCP servers.

How this works: `Underlay` builds "hosts" as network namespaces on a bridge
that lives in a namespace of its own, so every address it hands out exists
only inside namespaces it created; hosts start hostile like the machines
checked in NOTES-datapath (ip_forward=0, rp_filter=1). `NameServer` listens
inside a namespace (the socket is created by a thread that setns()-es, then
served from an ordinary thread) and answers every connection with its name;
`request` connects from inside a namespace and returns what it read.
Everything has a `close()`/`remove()` that is safe to call twice.
"""

from __future__ import annotations

import socket
import threading

from overlay import netns as ns
from overlay._rtnl import iproute, require_index

UNDERLAY_BRIDGE = "ul0"


class Underlay:
    """An underlay L2 segment (bridge in namespace `<prefix>ul`) with hosts on it."""

    def __init__(self, prefix: str, subnet_prefix: str = "198.18.0", prefixlen: int = 24) -> None:
        self.prefix = prefix
        self.netns = f"{prefix}ul"
        self.subnet_prefix = subnet_prefix
        self.prefixlen = prefixlen
        self.hosts: dict[str, str] = {}  # host namespace -> underlay IP
        ns.create(self.netns)
        with iproute(self.netns, "create the underlay bridge") as ipr:
            ipr.link("set", index=require_index(ipr, "lo"), state="up")
            ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge")
            ipr.link("set", index=require_index(ipr, UNDERLAY_BRIDGE), state="up")

    def add_host(self, name: str, last_octet: int) -> tuple[str, str]:
        """A host namespace `<prefix><name>` with eth0 on the underlay; returns (netns, ip)."""
        host = f"{self.prefix}{name}"
        ip = f"{self.subnet_prefix}.{last_octet}"
        ns.create(host)
        self.hosts[host] = ip
        port = f"p{last_octet}"
        ns.set_sysctl(host, "net.ipv4.conf.all.rp_filter", 1)
        ns.set_sysctl(host, "net.ipv4.conf.default.rp_filter", 1)
        ns.set_sysctl(host, "net.ipv6.conf.all.disable_ipv6", 1)
        with iproute(self.netns, "plug a host into the underlay") as ul:
            ul.link("add", ifname=port, kind="veth", peer="hosttmp")
            ul.link("set", index=require_index(ul, "hosttmp"), net_ns_fd=host, ifname="eth0")
            ul.link("set", index=require_index(ul, port), master=require_index(ul, UNDERLAY_BRIDGE), state="up")
        with iproute(host, "configure the host's eth0") as h:
            h.link("set", index=require_index(h, "lo"), state="up")
            eth0 = require_index(h, "eth0")
            h.addr("add", index=eth0, address=ip, prefixlen=self.prefixlen)
            h.link("set", index=eth0, state="up")
        return host, ip

    def remove(self) -> None:
        for host in list(self.hosts):
            ns.remove(host)
        ns.remove(self.netns)


class NameServer:
    """A TCP server inside a namespace answering every connection with `name`."""

    def __init__(self, netns: str, ip: str, port: int, name: str, payload: bytes = b"") -> None:
        self.name = name
        self.payload = payload
        self.sock = ns.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.served = 0
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"nameserver-{name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.sendall(self.name.encode() + b"\n" + self.payload)
                    self.served += 1
                    self.peers.append(addr[0])
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def request(netns: str, ip: str, port: int, timeout: float = 5.0) -> bytes:
    """Connect from inside `netns`, read until EOF, return the bytes."""
    sock = ns.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

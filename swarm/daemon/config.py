"""A node's state directory: paths, node.json, certificates, TLS contexts."""
from __future__ import annotations

import json
import os
import ssl
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from raft.fsutil import atomic_write

DEFAULT_STATE_DIR = "/var/lib/swarm"
DEFAULT_PORT = 2377


def state_dir_from_env(value: str | None = None) -> str:
    return value or os.environ.get("SWARM_STATE_DIR") or DEFAULT_STATE_DIR


def split_addr(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """HOST[:PORT] -> (host, port); raises ValueError with a user sentence."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {text!r}: expected HOST[:PORT] with a port from 1 to 65535")
    return host, int(port)


@dataclass
class NodeConfig:
    node_id: str
    cluster_id: str
    role: str
    hostname: str
    addr: str                 # advertised HOST:PORT of the node API
    listen_addr: str          # HOST:PORT the node API binds
    raft_addr: str            # HOST:PORT of Raft (managers)
    managers: list[str] = field(default_factory=list)  # known manager API addresses
    heartbeat: float = 1.0
    cert_expiry: float = 90 * 24 * 3600.0

    @staticmethod
    def load(state_dir: str) -> "NodeConfig":
        with open(os.path.join(state_dir, "node.json")) as f:
            return NodeConfig(**json.load(f))

    def save(self, state_dir: str) -> None:
        atomic_write(os.path.join(state_dir, "node.json"), json.dumps(asdict(self), indent=2).encode())


class Paths:
    def __init__(self, state_dir: str) -> None:
        self.root = os.path.abspath(state_dir)
        self.certs = os.path.join(self.root, "certs")
        self.ca = os.path.join(self.certs, "ca.pem")
        self.cert = os.path.join(self.certs, "node.pem")
        self.key = os.path.join(self.certs, "node-key.pem")
        self.raft = os.path.join(self.root, "raft")
        self.socket = os.path.join(self.root, "swarm.sock")
        self.pid = os.path.join(self.root, "swarm.pid")
        self.log = os.path.join(self.root, "daemon.log")
        self.node = os.path.join(self.root, "node.json")
        self.bootstrap = os.path.join(self.root, "bootstrap.json")

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()


def load_cert_into(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """(Re)load a certificate into an existing context: new connections use it."""
    fd, path = tempfile.mkstemp(prefix="swarm-cert-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, cert_pem + b"\n" + key_pem)
        os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)

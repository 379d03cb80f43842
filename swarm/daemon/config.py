"""A node's state directory: paths, node.json, certificates, TLS contexts."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from raft.fsutil import atomic_write
from swarm.api.errors import SwarmError
from swarm.engineapi.tls import TcpApi, parse_address

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
    # dockerd's --insecure-registry (HOST[:PORT] or CIDR) and --registry-mirror (URL), as given to
    # swarm init/join/daemon; Docker's defaults (127.0.0.0/8) are added when the daemon starts.
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    # the Engine API over TCP (--docker-api tcp://HOST:PORT and its TLS files, absolute paths;
    # swarm/engineapi/tls.py): "" serves it on STATE_DIR/docker.sock only
    docker_api: str = ""
    docker_api_tlscacert: str = ""
    docker_api_tlscert: str = ""
    docker_api_tlskey: str = ""
    docker_api_insecure: bool = False

    @staticmethod
    def load(state_dir: str) -> "NodeConfig":
        with open(os.path.join(state_dir, "node.json")) as f:
            return NodeConfig(**json.load(f))

    def save(self, state_dir: str) -> None:
        atomic_write(os.path.join(state_dir, "node.json"), json.dumps(asdict(self), indent=2).encode())

    def docker_api_setting(self) -> TcpApi | None:
        """The Engine API over TCP as kept here (None: on STATE_DIR/docker.sock only)."""
        if not self.docker_api:
            return None
        host, port = parse_address(self.docker_api)
        return TcpApi(host, port, self.docker_api_tlscacert, self.docker_api_tlscert, self.docker_api_tlskey,
                      self.docker_api_insecure)


def save_registry_settings(state_dir: str, insecure: list[str] | None, mirrors: list[str] | None) -> None:
    """Keep the node's registry settings in node.json (None: leave that list as it is)."""
    config = NodeConfig.load(state_dir)
    if insecure is not None:
        config.insecure_registries = list(insecure)
    if mirrors is not None:
        config.registry_mirrors = list(mirrors)
    config.save(state_dir)


def save_docker_api_settings(state_dir: str, setting: TcpApi) -> None:
    """Keep the node's Engine API over TCP in node.json (given again, it replaces the old one)."""
    config = NodeConfig.load(state_dir)
    config.docker_api, config.docker_api_insecure = setting.addr, setting.insecure
    config.docker_api_tlscacert, config.docker_api_tlscert = setting.tlscacert, setting.tlscert
    config.docker_api_tlskey = setting.tlskey
    config.save(state_dir)


class BadSetting(SwarmError):
    """A registry setting of the node (--insecure-registry, --registry-mirror) that is malformed."""


def check_insecure_registry(text: str) -> str:
    """--insecure-registry HOST[:PORT] or CIDR (dockerd's rules); the value, or BadSetting."""
    text = text.strip()
    if "://" in text:
        raise BadSetting(f"insecure registry {text} should not contain '://'")
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise BadSetting(f"insecure registry {text} is neither HOST[:PORT] nor a CIDR (like 10.1.0.0/16)") from None
    return check_server_host(text, what="insecure registry")


def check_mirror(text: str) -> str:
    """--registry-mirror URL (dockerd's ValidateMirror): http(s)://HOST[:PORT], no user, query or path."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https"):
        raise BadSetting(f"invalid mirror: unsupported scheme {parts.scheme!r} in {text!r}")
    if parts.query or parts.fragment:
        raise BadSetting(f"invalid mirror: query or fragment at end of the URI {text!r}")
    if parts.username is not None or parts.password is not None:
        raise BadSetting(f"invalid mirror: username/password not allowed in URI {parts.scheme}://{parts.hostname}")
    if parts.path not in ("", "/"):
        raise BadSetting(f"invalid mirror: a mirror is a registry's root URL, without the path {parts.path!r}")
    check_server_host(parts.netloc, what="mirror")
    return f"{parts.scheme}://{parts.netloc}"


_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                      r"|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$")


def check_server_host(host: str, *, what: str = "registry") -> str:
    """HOST[:PORT] as a reference's domain may be written; the host, or BadSetting."""
    if not host or not _HOST_RE.match(host) or (":" in host.rsplit("]", 1)[-1]
                                                 and not 0 < int(host.rsplit(":", 1)[1]) < 65536):
        raise BadSetting(f"invalid {what} address {host!r}: expected HOST[:PORT]")
    return host


class Paths:
    def __init__(self, state_dir: str) -> None:
        self.root = os.path.abspath(state_dir)
        self.certs = os.path.join(self.root, "certs")
        self.ca = os.path.join(self.certs, "ca.pem")
        self.cert = os.path.join(self.certs, "node.pem")
        self.key = os.path.join(self.certs, "node-key.pem")
        self.data_key = os.path.join(self.certs, "raft-key.json")   # managers: swarm/ca/keyring.py
        self.raft = os.path.join(self.root, "raft")
        self.socket = os.path.join(self.root, "swarm.sock")
        self.docker_socket = os.path.join(self.root, "docker.sock")   # the Engine API (swarm/engineapi)
        self.pid = os.path.join(self.root, "swarm.pid")
        self.log = os.path.join(self.root, "daemon.log")
        self.node = os.path.join(self.root, "node.json")
        self.bootstrap = os.path.join(self.root, "bootstrap.json")
        self.credentials = os.path.join(self.root, "config.json")   # registry logins, Docker's shape
        self.certs_d = os.path.join(self.root, "certs.d")           # per-registry CAs, Docker's layout

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

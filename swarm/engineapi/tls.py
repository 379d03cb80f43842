"""The Engine API over TCP: `--docker-api tcp://ADDR[:PORT]` with mutual TLS, as dockerd's --tlsverify.

How this works. The flags of `swarm init`, `join` and `daemon` are checked here, all
together, before anything is written (`tcp_api`): the address is tcp:// only (2376 by default,
as dockerd's TLS port), and TCP is served either with all three files (the CA that signs the
clients' certificates, the server's certificate and its key) or, plain, only with an explicit
`--docker-api-insecure`. The files are loaded into the very context the daemon will serve with
(`server_context`: TLS 1.2 or later, a client certificate required and verified against the
CA), so a CA file that is not PEM or a key that does not match its certificate is one sentence
at the CLI, not a daemon that starts without its listener. The node keeps the setting (node.json);
the daemon builds the context again at each start (swarm/engineapi/server.py serves it).
"""
from __future__ import annotations

import ipaddress
import os
import re
import ssl
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

from swarm.api.errors import SwarmError

DEFAULT_PORT = 2376     # dockerd's TLS port
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$")


class BadApiSetting(SwarmError):
    """A --docker-api* flag that cannot be served: one sentence for the user."""


@dataclass(frozen=True)
class TcpApi:
    """Where and how the Engine API is served over TCP. The paths are absolute (the daemon runs
    in /); all three are "" when `insecure` (plain TCP)."""
    host: str
    port: int
    tlscacert: str = ""
    tlscert: str = ""
    tlskey: str = ""
    insecure: bool = False

    @property
    def addr(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(text: str) -> tuple[str, int]:
    """tcp://HOST[:PORT] -> (host, port); BadApiSetting names what is wrong."""
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise BadApiSetting(f"invalid --docker-api {text!r}: expected tcp://HOST[:PORT]")
    if scheme != "tcp":
        raise BadApiSetting(f"invalid --docker-api {text!r}: only tcp:// is served "
                            "(the unix socket is always STATE_DIR/docker.sock)")
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
        raise BadApiSetting(f"invalid --docker-api {text!r}: expected tcp://HOST[:PORT], without a path or user")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is None:
        port = DEFAULT_PORT
    if not 0 < port < 65536:
        raise BadApiSetting(f"invalid --docker-api {text!r}: the port must be from 1 to 65535")
    host = parts.hostname or ""
    if not _HOSTNAME.match(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise BadApiSetting(f"invalid --docker-api {text!r}: expected tcp://HOST[:PORT] "
                                "with a host name or an IP address") from None
    return host, port


def tcp_api(addr: str | None, tlscacert: str | None = None, tlscert: str | None = None,
            tlskey: str | None = None, insecure: bool = False) -> TcpApi | None:
    """The flags of init/join/daemon as a setting (None: no --docker-api), after checking they can
    be served: the files exist and load together. BadApiSetting otherwise."""
    files = {"--docker-api-tlscacert": tlscacert, "--docker-api-tlscert": tlscert, "--docker-api-tlskey": tlskey}
    given = [flag for flag, path in files.items() if path]
    if addr is None:
        if given or insecure:
            flag = given[0] if given else "--docker-api-insecure"
            raise BadApiSetting(f"{flag} needs --docker-api tcp://ADDR[:PORT] (where to serve the Engine API)")
        return None
    host, port = parse_address(addr)
    if insecure:
        if given:
            raise BadApiSetting(f"--docker-api-insecure serves plain TCP: give it without {', '.join(given)}")
        return TcpApi(host, port, insecure=True)
    if not given:
        raise BadApiSetting(f"the Engine API on {addr} needs mutual TLS: give --docker-api-tlscacert, "
                            "--docker-api-tlscert and --docker-api-tlskey, or --docker-api-insecure for plain "
                            "TCP (anyone who reaches it controls this node)")
    missing = [flag for flag in files if flag not in given]
    if missing:
        raise BadApiSetting(f"mutual TLS on {addr} also needs {' and '.join(missing)}")
    setting = TcpApi(host, port, os.path.abspath(tlscacert or ""), os.path.abspath(tlscert or ""),
                     os.path.abspath(tlskey or ""))
    server_context(setting)
    return setting


def server_context(setting: TcpApi) -> ssl.SSLContext:
    """The daemon's side of mutual TLS, as dockerd's --tlsverify: TLS 1.2 or later, the client's
    certificate required and verified against `tlscacert`, the server's own from `tlscert`/`tlskey`.
    BadApiSetting, in one sentence, if a file is missing or does not load."""
    for flag, path in (("--docker-api-tlscacert", setting.tlscacert), ("--docker-api-tlscert", setting.tlscert),
                       ("--docker-api-tlskey", setting.tlskey)):
        if not os.path.isfile(path):
            raise BadApiSetting(f"{flag} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])     # served by hypercorn's HTTP/1.1 (the docker CLI's protocol)
    try:
        context.load_verify_locations(cafile=setting.tlscacert)
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise BadApiSetting(f"--docker-api-tlscacert {setting.tlscacert} is not a PEM file of CA certificates") \
            from None
    except OSError as exc:
        raise BadApiSetting(f"--docker-api-tlscacert {setting.tlscacert} cannot be read: {exc.strerror}") from None

    def encrypted() -> NoReturn:
        # OpenSSL would otherwise ask for the passphrase on the terminal (dockerd takes no passphrase either)
        raise BadApiSetting(f"--docker-api-tlskey {setting.tlskey} is encrypted: give a key without a passphrase")

    try:
        context.load_cert_chain(setting.tlscert, setting.tlskey, password=encrypted)
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise BadApiSetting(f"--docker-api-tlskey {setting.tlskey} is not the key of the certificate "
                                f"{setting.tlscert}") from None
        raise BadApiSetting(f"--docker-api-tlscert {setting.tlscert} and --docker-api-tlskey {setting.tlskey} are "
                            f"not a PEM certificate and its key ({getattr(exc, 'reason', None) or exc})") from None
    except OSError as exc:
        raise BadApiSetting(f"--docker-api-tlscert {setting.tlscert} or --docker-api-tlskey {setting.tlskey} "
                            f"cannot be read: {exc.strerror}") from None
    return context


def insecure_warning(setting: TcpApi) -> str:
    """dockerd's warning for -H tcp:// without --tlsverify, in one line."""
    return (f"WARNING: the Engine API on {setting.addr} is served over plain TCP without TLS "
            "(--docker-api-insecure): anyone who can reach it controls this node, and root on it")

"""Where a registry is reached and how far it is trusted.

How this works, as Docker decides it. A registry is secure unless the
operator lists it as insecure (`host[:port]` or a CIDR; 127.0.0.0/8 and ::1
are listed by default). A secure registry is reached over HTTPS verified
against the system's roots plus every `*.crt` in `certs.d/HOST/` (HOST with
its port, as Docker's /etc/docker/certs.d), with the client certificate
`*.cert` + `*.key` found there. An insecure registry is tried over HTTPS
without verification first, then over plain HTTP. Docker Hub (`docker.io`)
is reached at registry-1.docker.io, after the configured mirrors for pulls.
A host name the list does not name is insecure when it resolves to an
address in a listed range, as Docker decides (`myhost:5000` naming
127.0.1.1 in /etc/hosts is insecure by default): the caller resolves it once
(`needs_lookup` says when: never for an IP, `localhost`, Docker Hub, or a
list without ranges) and passes the addresses; `localhost` counts as
127.0.0.1.
"""
from __future__ import annotations

import glob
import ipaddress
import os
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from swarm.api.reference import DEFAULT_DOMAIN
from swarm.registry.media import Platform, host_platform

DOCKER_HUB_HOST = "registry-1.docker.io"
DEFAULT_INSECURE = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class RegistryConfig:
    insecure_registries: tuple[str, ...] = DEFAULT_INSECURE
    mirrors: tuple[str, ...] = ()            # URLs of docker.io mirrors, tried in order for pulls
    certs_dir: str | None = None             # STATE_DIR/certs.d
    platform: Platform = field(default_factory=host_platform)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_concurrent_downloads: int = 3        # Docker's default
    max_concurrent_uploads: int = 5          # Docker's default


@dataclass(frozen=True)
class Endpoint:
    base_url: str        # "https://host:5000" (no trailing slash)
    host: str            # the registry as the user named it, for messages ("host:5000")
    verify: bool         # verify the server's certificate
    mirror: bool = False


def split_host(host: str) -> tuple[str, str]:
    """'h:5000' -> ('h', '5000'); '[::1]:5000' -> ('::1', '5000')."""
    if host.startswith("["):
        inside, _, rest = host[1:].partition("]")
        return inside, rest.lstrip(":")
    name, _, port = host.partition(":")
    return name, port


def _networks(insecure: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for entry in insecure:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return nets


def _literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address("127.0.0.1" if name == "localhost" else name)
    except ValueError:
        return None


def needs_lookup(host: str, insecure: tuple[str, ...]) -> bool:
    """Whether `is_insecure(host, ...)` depends on the addresses `host`'s name resolves to: a
    name (not an IP, not `localhost`, not Docker Hub) the list does not name, with ranges listed."""
    name, _ = split_host(host)
    if host in insecure or name in insecure or _literal(name) is not None or name == DOCKER_HUB_HOST:
        return False
    return bool(_networks(insecure))


def is_insecure(host: str, insecure: tuple[str, ...], addresses: tuple[str, ...] = ()) -> bool:
    """Whether `host` ('h:port') is an insecure registry under the `insecure` list; `addresses`:
    what its name resolved to (see needs_lookup)."""
    name, _ = split_host(host)
    if host in insecure or name in insecure:
        return True
    literal = _literal(name)
    found = [literal] if literal is not None else [a for a in map(_literal, addresses) if a is not None]
    nets = _networks(insecure)
    return any(address in net for address in found for net in nets if address.version == net.version)


def endpoints(domain: str, config: RegistryConfig, *, push: bool = False,
              addresses: tuple[str, ...] = ()) -> list[Endpoint]:
    """The URLs to try for a registry domain, in order; `addresses`: what the registry's host
    name resolved to, when `needs_lookup` said so."""
    found: list[Endpoint] = []
    if domain == DEFAULT_DOMAIN:
        if not push:
            for mirror in config.mirrors:
                parts = urlsplit(mirror if "://" in mirror else "https://" + mirror)
                secure = parts.scheme == "https" and not is_insecure(parts.netloc, config.insecure_registries)
                found.append(Endpoint(f"{parts.scheme}://{parts.netloc}", parts.netloc, secure, mirror=True))
        host = DOCKER_HUB_HOST
    else:
        host = domain
    if is_insecure(host, config.insecure_registries, addresses):
        found.append(Endpoint(f"https://{host}", domain, False))
        found.append(Endpoint(f"http://{host}", domain, False))
    else:
        found.append(Endpoint(f"https://{host}", domain, True))
    return found


def ssl_context(config: RegistryConfig, host: str, verify: bool) -> ssl.SSLContext:
    """A TLS context for `host`: system roots + certs.d/HOST/*.crt, client pairs *.cert/*.key.
    Unverified (an insecure registry), it loads no roots: reading the system's took 25-45 ms,
    on every pull and every tag resolved from a registry on 127.0.0.0/8, tried in TLS first."""
    if verify:
        ctx = ssl.create_default_context()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.certs_dir:
        directory = os.path.join(config.certs_dir, host)
        for ca in sorted(glob.glob(os.path.join(directory, "*.crt"))):
            ctx.load_verify_locations(cafile=ca)
        for cert in sorted(glob.glob(os.path.join(directory, "*.cert"))):
            key = cert[:-len(".cert")] + ".key"
            if os.path.exists(key):
                ctx.load_cert_chain(cert, key)
    return ctx

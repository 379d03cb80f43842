"""The node's registry credentials: STATE_DIR/config.json in Docker's shape.

    {"auths": {"HOST": {"auth": base64("USER:PASSWORD")}}}

Docker Hub's key is "https://index.docker.io/v1/", as docker login writes it.
The file is written whole and atomically with mode 0600 (a crash leaves the
old or the new file); keys other than ours are kept as they were.
"""
from __future__ import annotations

import base64
import binascii
import json
import os

from raft.fsutil import atomic_write
from swarm.api.reference import DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN
from swarm.registry.errors import RegistryError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


class CredentialsError(RegistryError):
    """The credentials file cannot be read or written."""

    retryable = False


def credential_key(domain: str) -> str:
    """The config.json key of a registry domain."""
    if domain in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN, "registry-1.docker.io", DOCKER_HUB_KEY):
        return DOCKER_HUB_KEY
    return domain


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read the credentials file {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise CredentialsError(f"the credentials file {path} is not in Docker's config.json shape")
    return doc


def lookup(path: str, domain: str) -> tuple[str, str] | None:
    """(user, password) stored for `domain`, or None."""
    entry = _read(path).get("auths", {}).get(credential_key(domain))
    if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
        return None
    try:
        user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"the credentials for {domain} in {path} are not base64 of USER:PASSWORD") from None
    return (user, password) if sep else None


def store(path: str, domain: str, username: str, password: str) -> None:
    """Keep (username, password) for `domain`, replacing what was there."""
    if not username or ":" in username:
        raise CredentialsError("a username must be non-empty and hold no ':'")
    doc = _read(path)
    auths = doc.setdefault("auths", {})
    auths[credential_key(domain)] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _write(path, doc)


def erase(path: str, domain: str) -> bool:
    """Forget the credentials of `domain`; False when there were none."""
    doc = _read(path)
    if doc.get("auths", {}).pop(credential_key(domain), None) is None:
        return False
    _write(path, doc)
    return True


def _write(path: str, doc: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    try:
        atomic_write(path, json.dumps(doc, indent="\t").encode() + b"\n", mode=0o600)
    except OSError as exc:
        raise CredentialsError(f"cannot write the credentials file {path}: {exc.strerror or exc}") from None

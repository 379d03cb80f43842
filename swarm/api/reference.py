"""Image references as Docker parses them (distribution/reference).

How this works. The grammar is distribution's, as one anchored regular
expression: `name [":" tag] ["@" digest]`, a name being `[domain "/"]
path-component ("/" path-component)*`. `parse` reads a reference as written;
`parse_normalized` first applies Docker's domain rule: the first component
of a name with a '/' is a registry domain only when it holds a '.' or a ':',
is 'localhost', or has an upper-case letter; otherwise the name lives on
Docker Hub (`docker.io`), where a one-component name is an official image
under `library/`. `parse_image` adds the tag `latest` when neither tag nor
digest is given, as `docker pull` does. `familiar` undoes the
normalization for display (`docker.io/library/busybox:latest` ->
`busybox:latest`).

Only sha256 digests are supported (the store is content-addressed by
sha256). Every error is one sentence that starts with "invalid reference
format", as Docker's does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from swarm.api.errors import SwarmError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_REMOTE_NAME}"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$", re.ASCII)
_NAME_RE = re.compile(rf"^(?:({_DOMAIN})/)?({_REMOTE_NAME})$", re.ASCII)
_TAG_RE = re.compile(rf"^{_TAG}$", re.ASCII)
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class InvalidReference(SwarmError):
    """A reference that does not follow Docker's grammar; the message says why."""


@dataclass(frozen=True)
class Reference:
    """A parsed reference. `domain` is "" only for a reference read by `parse`
    without a domain; after `parse_normalized` it is always set."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name with its domain (`docker.io/library/busybox`)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        return _join(self.name, self.tag, self.digest)

    @property
    def familiar_name(self) -> str:
        """The name as Docker shows it (`busybox`, `team/app`, `host:5000/app`)."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        rest = self.path[len(OFFICIAL_PREFIX):] if self.path.startswith(OFFICIAL_PREFIX) else None
        if rest is not None and "/" not in rest:
            return rest
        return self.path

    def familiar(self) -> str:
        """The whole reference as Docker shows it (`busybox:latest`)."""
        return _join(self.familiar_name, self.tag, self.digest)

    def with_tag(self, tag: str) -> "Reference":
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid tag format: {tag!r}")
        return replace(self, tag=tag)

    def with_digest(self, digest: str) -> "Reference":
        check_digest(digest)
        return replace(self, digest=digest)

    def name_only(self) -> "Reference":
        return replace(self, tag=None, digest=None)

    @property
    def pull_ref(self) -> str:
        """What a registry is asked for: the digest when there is one (a
        pinned reference never follows its tag), else the tag."""
        return self.digest or self.tag or DEFAULT_TAG


def _join(name: str, tag: str | None, digest: str | None) -> str:
    text = name
    if tag:
        text += ":" + tag
    if digest:
        text += "@" + digest
    return text


def check_digest(digest: str) -> str:
    """`digest` when it is a well-formed sha256 digest, else InvalidReference."""
    if _SHA256_RE.match(digest):
        return digest
    algorithm, _, hex_part = digest.partition(":")
    if algorithm != "sha256" or not re.fullmatch(_DIGEST, digest, re.ASCII):
        raise InvalidReference(f"invalid reference format: unsupported digest algorithm in {digest!r}")
    if len(hex_part) != 64:
        raise InvalidReference("invalid reference format: invalid checksum digest length")
    raise InvalidReference("invalid reference format: invalid checksum digest format")


def parse(text: str) -> Reference:
    """A reference exactly as written (no default domain, tag or `library/`)."""
    if not text:
        raise InvalidReference("invalid reference format: repository name must have at least one component")
    match = _REFERENCE_RE.match(text)
    if match is None:
        lowered = text.lower()
        if lowered != text and _REFERENCE_RE.match(lowered):
            raise InvalidReference("invalid reference format: repository name must be lowercase")
        raise InvalidReference("invalid reference format")
    name, tag, digest = match.groups()
    name_match = _NAME_RE.match(name)
    assert name_match is not None  # the reference pattern contains the name pattern
    domain, path = name_match.group(1) or "", name_match.group(2)
    if len(path) > NAME_MAX:
        raise InvalidReference(f"invalid reference format: repository name must not be more than {NAME_MAX} characters")
    if digest is not None:
        check_digest(digest)
    return Reference(domain, path, tag, digest)


def split_domain(name: str) -> tuple[str, str]:
    """Docker's rule for where the registry domain ends (see the module doc)."""
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + name
    if first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse_normalized(text: str) -> Reference:
    """A reference with Docker's defaults for the domain (`docker.io`) and
    `library/`; the tag stays absent when not given."""
    if _IDENTIFIER_RE.match(text):
        raise InvalidReference(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = split_domain(text)
    remote = remainder.split(":", 1)[0].split("@", 1)[0]
    if remote.lower() != remote:
        raise InvalidReference("invalid reference format: repository name must be lowercase")
    return parse(f"{domain}/{remainder}")


def parse_image(text: str) -> Reference:
    """What `docker pull TEXT` pulls: normalized, tag `latest` unless a tag or digest is given."""
    ref = parse_normalized(text.strip())
    if ref.tag is None and ref.digest is None:
        ref = replace(ref, tag=DEFAULT_TAG)
    return ref


def is_digest(text: str) -> bool:
    return bool(_SHA256_RE.match(text))

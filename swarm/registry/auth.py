"""Registry authentication decisions: challenges, scopes and tokens. Pure.

How this works. A registry that wants credentials answers 401 with a
`WWW-Authenticate` challenge. `Basic realm=...` asks for the user's password
on every request. `Bearer realm=URL,service=S[,scope=...]` sends the client to
a token server: GET URL?service=S&scope=repository:NAME:pull[,push] (with the
user's password as Basic auth when there is one, anonymously otherwise)
answers {"token": JWT, "expires_in": seconds}, and the JWT goes back to the
registry as `Authorization: Bearer JWT` until it expires. This is the flow
Docker Hub, GHCR and distribution's `auth.token` use.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from swarm.registry.errors import RegistryProtocolError, Unauthorized

MIN_TOKEN_SECONDS = 60   # the token spec's default and floor for expires_in

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SPACE = re.compile(r"[ \t]*")
_BARE = re.compile(r"[^,\s\"]+")


@dataclass(frozen=True)
class Challenge:
    scheme: str            # lower case: "basic" or "bearer"
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(headers: list[str]) -> list[Challenge]:
    """Every challenge of the WWW-Authenticate header values (RFC 7235 grammar,
    leniently: a challenge the parser cannot read ends the header, not the list)."""
    found: list[Challenge] = []
    for header in headers:
        pos, n = 0, len(header)
        while pos < n:
            pos = _skip(header, pos, ", \t")
            scheme = _TOKEN.match(header, pos)
            if scheme is None:
                break
            pos = scheme.end()
            params: dict[str, str] = {}
            while True:
                start = _skip(header, pos, ", \t")
                key = _TOKEN.match(header, start)
                after = _SPACE.match(header, key.end()).end() if key else start
                if key is None or after >= n or header[after] != "=":
                    pos = start   # the next token is a new scheme (or the end)
                    break
                value_start = _SPACE.match(header, after + 1).end()
                value, pos = _value(header, value_start)
                if value is None:
                    pos = n
                    break
                params[key.group().lower()] = value
            found.append(Challenge(scheme.group().lower(), params))
    return found


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _value(text: str, pos: int) -> tuple[str | None, int]:
    if pos < len(text) and text[pos] == '"':
        out, pos = [], pos + 1
        while pos < len(text):
            c = text[pos]
            if c == "\\" and pos + 1 < len(text):
                out.append(text[pos + 1])
                pos += 2
            elif c == '"':
                return "".join(out), pos + 1
            else:
                out.append(c)
                pos += 1
        return None, pos
    bare = _BARE.match(text, pos)   # leniently: an unquoted URL is not a token, yet servers send them
    return (bare.group(), bare.end()) if bare else (None, pos)


def repository_scope(name: str, push: bool = False) -> str:
    """The token scope for a repository path (`library/busybox`)."""
    return f"repository:{name}:{'pull,push' if push else 'pull'}"


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def token_request(challenge: Challenge, scopes: list[str], username: str | None = None) -> tuple[str, str]:
    """(URL, query string) of the token request a Bearer challenge asks for."""
    realm = challenge.realm
    if not realm.startswith(("https://", "http://")):
        raise RegistryProtocolError(f"the registry's token realm {realm!r} is not an http(s) URL")
    query: list[tuple[str, str]] = []
    if "service" in challenge.params:
        query.append(("service", challenge.params["service"]))
    query.extend(("scope", s) for s in scopes)
    if username:
        query.append(("account", username))
    return realm, urlencode(query)


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float


def parse_token_response(body: bytes, now: float) -> Token:
    """The token of a token server's 200 answer (`token` or OAuth's `access_token`)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RegistryProtocolError("the token server answered something that is not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryProtocolError("the token server answered something that is not a JSON object")
    value = doc.get("token") or doc.get("access_token")
    if not isinstance(value, str) or not value:
        raise RegistryProtocolError("the token server answered without a token")
    expires_in = doc.get("expires_in")
    seconds = expires_in if isinstance(expires_in, int) and expires_in >= MIN_TOKEN_SECONDS else MIN_TOKEN_SECONDS
    return Token(value, now + seconds)


def error_message(body: bytes) -> str | None:
    """The first message of a registry's error body ({"errors": [{"code", "message"}]})
    or of a token server's ({"details": ...}), lower case as Docker prints it."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    errors = doc.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        message = errors[0].get("message")
        if isinstance(message, str) and message:
            return message
    details = doc.get("details")
    if isinstance(details, str) and details:
        return details
    return None


def error_code(body: bytes) -> str | None:
    """The first error code of a registry's error body (MANIFEST_UNKNOWN, NAME_UNKNOWN, ...)."""
    try:
        doc = json.loads(body)
        code = doc["errors"][0]["code"]
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        return None
    return code if isinstance(code, str) else None


def unauthorized(body: bytes) -> Unauthorized:
    return Unauthorized(error_message(body) or "authentication required")

"""The OCI distribution (v2 API) client, on httpx under trio.

How this works. One `RegistryClient` serves any number of registries; for
each registry domain it tries the endpoints `config.endpoints` lists (mirrors,
HTTPS, and for an insecure registry HTTP too) and keeps the first that
answers. Every request goes out with what the registry last asked for: none
at first, then Basic credentials or a Bearer token for the request's scope
(`repository:NAME:pull[,push]`), fetched from the token server when a 401
names one and kept until it expires; a 401 is retried once with fresh
authorization. Transport failures are mapped at this boundary: connect
errors and timeouts become `RegistryUnreachable`, certificate failures
`TLSError`, a 404 on a manifest `ImageNotFound`, a 401 after authorization
`Unauthorized` with the registry's own message.

Blobs are streamed: each chunk is hashed and handed to the caller's sink as
it arrives, and the digest is compared at the end (and the size all along),
so the sink's owner must keep what it got aside until the call returns
(the store writes to a temp file and renames it only after the digest matched).
A caller that hashes what its sink gets anyway (the puller) passes
`verify=False`; the size is still checked here.
"""
from __future__ import annotations

import hashlib
import inspect
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Union
from urllib.parse import urljoin

import httpcore
import httpx
import trio

from swarm.api.reference import DEFAULT_DOMAIN, Reference
from swarm.registry import auth
from swarm.registry.config import (DOCKER_HUB_HOST, Endpoint, RegistryConfig, endpoints, needs_lookup, split_host,
                                   ssl_context)
from swarm.registry.errors import (DigestMismatch, ImageNotFound, RegistryError, RegistryProtocolError,
                                   RegistryUnreachable, TLSError, Unauthorized)
from swarm.registry.media import ACCEPT, MAX_MANIFEST_BYTES

Credentials = Callable[[str], "tuple[str, str] | None"]   # registry domain -> (user, password)
Sink = Callable[[bytes], Union[None, Awaitable[None]]]
Progress = Callable[[int, int], None]                     # (bytes done, bytes total)
Content = Callable[[], "bytes | AsyncIterator[bytes]"]    # called again when a request is retried
Resolver = Callable[[str], Awaitable["tuple[str, ...]"]]  # host name -> its addresses (none: unknown)
LOOKUP_TIMEOUT = 5.0     # a name that does not resolve by then counts as not on an insecure range

_TRANSPORT_ERRORS = (httpx.TransportError,)
CHUNK = 1 << 16
# A blob goes to its sink in pieces this large: each piece crosses to the store's thread and
# costs a Python call on both sides; in 64 KiB pieces those calls cost more than the bytes.
BLOB_CHUNK = 1 << 20
# httpcore reads a response 64 KiB at a time (a class attribute of its HTTP/1.1 connection), and
# each read is a trip through trio, httpcore and h11 that costs more than its bytes: 3,200 trips
# for a 210 MB pull, the largest part of the daemon's CPU for it. A read returns what the socket
# holds, up to this, and never waits for more, so small answers are not slowed. Reads of 1 MiB
# took 0.52 s of CPU per 210 MB pull where 64 KiB reads took 0.65 s. This process uses httpx
# for registries only.
READ_BYTES = 1 << 20
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = max(httpcore.AsyncHTTP11Connection.READ_NUM_BYTES, READ_BYTES)


@dataclass(frozen=True)
class Fetched:
    """A manifest as the registry sent it."""
    data: bytes
    media_type: str
    digest: str


@dataclass
class _Site:
    """One endpoint of one registry, with what it asked for so far."""
    endpoint: Endpoint
    client: httpx.AsyncClient
    challenge: auth.Challenge | None = None
    tokens: dict[str, auth.Token] = field(default_factory=dict)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class RegistryClient:
    """Use as `async with RegistryClient(config, credentials) as client:`."""

    def __init__(self, config: RegistryConfig | None = None, credentials: Credentials | None = None,
                 *, clock: Callable[[], float] = time.monotonic,
                 transport: httpx.AsyncBaseTransport | None = None, resolver: Resolver | None = None) -> None:
        self.config = config or RegistryConfig()
        self._transport = transport   # tests put a fake registry here
        self._resolver = resolver or lookup
        self._addresses: dict[str, tuple[str, ...]] = {}   # host name -> addresses, looked up once per client
        self._credentials = credentials or (lambda domain: None)
        self._clock = clock
        self._sites: dict[str, _Site] = {}          # base_url -> site
        self._preferred: dict[str, str] = {}        # domain -> base_url that answered last

    async def __aenter__(self) -> "RegistryClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for site in self._sites.values():
            await site.client.aclose()
        self._sites.clear()

    # ---- the protocol operations ----

    async def get_manifest(self, ref: Reference, *, accept: str = ACCEPT) -> Fetched:
        """The manifest (or index) `ref` names; its digest is verified when `ref` pins one."""
        target = ref.pull_ref
        async with self._open(ref, "GET", f"manifests/{target}", headers={"Accept": accept},
                              not_found=lambda: ImageNotFound(ref.familiar())) as resp:
            data = await _read_bounded(resp, MAX_MANIFEST_BYTES)
            media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if target.startswith("sha256:") and digest != target:
            raise DigestMismatch(target, digest)
        return Fetched(data, media_type, digest)

    async def head_manifest(self, ref: Reference, *, accept: str = ACCEPT) -> str:
        """The digest `ref`'s tag resolves to, without fetching the manifest
        (falls back to a GET when the registry sends no Docker-Content-Digest)."""
        async with self._open(ref, "HEAD", f"manifests/{ref.pull_ref}", headers={"Accept": accept},
                              not_found=lambda: ImageNotFound(ref.familiar())) as resp:
            digest = resp.headers.get("docker-content-digest", "")
        if digest.startswith("sha256:") and len(digest) == 71:
            return digest
        return (await self.get_manifest(ref, accept=accept)).digest

    async def fetch_blob(self, ref: Reference, digest: str, sink: Sink, *, size: int | None = None,
                         progress: Progress | None = None, verify: bool = True) -> int:
        """Stream blob `digest` of `ref`'s repository into `sink`; verified (see the module doc).
        `verify=False`: the size is still held to `size`, but the caller hashes what the sink got
        (the puller does it in the store's thread, off this event loop)."""
        hasher, done = (hashlib.sha256() if verify else None), 0
        total = size if size is not None else 0
        async with self._open(ref, "GET", f"blobs/{digest}", follow_redirects=True,
                              not_found=lambda: RegistryProtocolError(
                                  f"registry {ref.domain} has no blob {digest} for {ref.familiar_name}")) as resp:
            if size is None:
                total = int(resp.headers.get("content-length", "0") or 0)
            try:
                async for chunk in _pieces(resp.aiter_raw(), BLOB_CHUNK):
                    done += len(chunk)
                    if size is not None and done > size:
                        raise DigestMismatch(digest, "")
                    if hasher is not None:
                        hasher.update(chunk)
                    result = sink(chunk)
                    if inspect.isawaitable(result):
                        await result
                    if progress is not None:
                        progress(done, total)
            except _TRANSPORT_ERRORS:
                raise RegistryUnreachable(ref.domain) from None
        if size is not None and done != size:
            raise DigestMismatch(digest, "")
        if hasher is not None and (actual := "sha256:" + hasher.hexdigest()) != digest:
            raise DigestMismatch(digest, actual)
        return done

    async def blob_exists(self, ref: Reference, digest: str, *, push: bool = False) -> bool:
        try:
            async with self._open(ref, "HEAD", f"blobs/{digest}", push=push, follow_redirects=True,
                                  not_found=lambda: _Missing()):
                return True
        except _Missing:
            return False

    async def upload_blob(self, ref: Reference, digest: str, size: int, content: Content,
                          *, progress: Progress | None = None) -> None:
        """Upload one blob monolithically: POST an upload session, PUT its bytes with ?digest=."""
        async with self._open(ref, "POST", "blobs/uploads/", push=True, ok=(202,)) as resp:
            location = resp.headers.get("location")
            base = str(resp.url)
        if not location:
            raise RegistryProtocolError(f"registry {ref.domain} started an upload without a Location")
        url = urljoin(base, location)
        url += ("&" if "?" in url else "?") + "digest=" + digest

        def counted() -> "bytes | AsyncIterator[bytes]":
            body = content()
            if isinstance(body, bytes) or progress is None:
                return body
            return _counting(body, size, progress)

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with self._open(ref, "PUT", url, push=True, headers=headers, content=counted, ok=(201, 204),
                              absolute=True) as resp:
            pass

    async def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> str:
        """PUT a manifest under `ref`'s tag (or digest); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        async with self._open(ref, "PUT", f"manifests/{ref.tag or digest}", push=True,
                              headers={"Content-Type": media_type}, content=lambda: data, ok=(201, 202)):
            pass
        return digest

    async def ping(self, domain: str) -> None:
        """GET /v2/ with authorization (what `login` checks); raises what fails."""
        probe = Reference(domain, "")
        async with self._open(probe, "GET", "", push=False, ok=(200,), root=True):
            pass

    # ---- the machinery ----

    def _site(self, endpoint: Endpoint) -> _Site:
        site = self._sites.get(endpoint.base_url)
        if site is None:
            name = endpoint.base_url.split("://", 1)[1]
            verify: ssl.SSLContext | bool = False
            if endpoint.base_url.startswith("https://"):
                verify = ssl_context(self.config, name, endpoint.verify)
            timeout = httpx.Timeout(self.config.read_timeout, connect=self.config.connect_timeout)
            client = httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=False, transport=self._transport,
                                       headers={"User-Agent": "swarm-py"})
            site = self._sites[endpoint.base_url] = _Site(endpoint, client)
        return site

    async def endpoints(self, domain: str, *, push: bool = False) -> list[Endpoint]:
        """The URLs to try for `domain` (config.endpoints); a host name whose insecurity depends on
        its addresses is resolved the first time only (Docker resolves it for its decision too)."""
        host = DOCKER_HUB_HOST if domain == DEFAULT_DOMAIN else domain
        addresses: tuple[str, ...] = ()
        if needs_lookup(host, self.config.insecure_registries):
            name = split_host(host)[0]
            if name not in self._addresses:
                self._addresses[name] = await self._resolver(name)
            addresses = self._addresses[name]
        return endpoints(domain, self.config, push=push, addresses=addresses)

    def _open(self, ref: Reference, method: str, path: str, **kwargs: object) -> "_Exchange":
        return _Exchange(self, ref, method, path, **kwargs)   # type: ignore[arg-type]

    async def _authorization(self, site: _Site, domain: str, scope: str) -> dict[str, str]:
        challenge = site.challenge
        if challenge is None:
            return {}
        creds = self._credentials(domain)
        if challenge.scheme == "basic":
            return {"Authorization": auth.basic_header(*creds)} if creds else {}
        if challenge.scheme != "bearer":
            return {}
        token = site.tokens.get(scope)
        if token is None or token.expires_at <= self._clock():
            token = await self._fetch_token(site, challenge, scope, creds)
            site.tokens[scope] = token
        return {"Authorization": f"Bearer {token.value}"}

    async def _fetch_token(self, site: _Site, challenge: auth.Challenge, scope: str,
                           creds: tuple[str, str] | None) -> auth.Token:
        url, query = auth.token_request(challenge, [scope] if scope else [], creds[0] if creds else None)
        headers = {"Authorization": auth.basic_header(*creds)} if creds else {}
        host = url.split("://", 1)[1].split("/", 1)[0]
        try:
            resp = await site.client.get(f"{url}{'&' if '?' in url else '?'}{query}", headers=headers)
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc, host, self.config) from None
        if resp.status_code in (401, 403):
            raise auth.unauthorized(resp.content)
        if resp.status_code != 200:
            raise RegistryProtocolError(f"the token server {host} answered HTTP {resp.status_code}")
        return auth.parse_token_response(resp.content, self._clock())


class _Missing(Exception):
    pass


async def lookup(name: str) -> tuple[str, ...]:
    """The addresses `name` resolves to (the system's resolver, /etc/hosts first); () when it
    does not resolve within LOOKUP_TIMEOUT (then the connection reports what is wrong)."""
    with trio.move_on_after(LOOKUP_TIMEOUT):
        try:
            infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            return ()
        return tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    return ()


def _transport_error(exc: BaseException, host: str, config: RegistryConfig) -> RegistryError:
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        where = f"{config.certs_dir}/{host}/ca.crt" if config.certs_dir else f"certs.d/{host}/ca.crt"
        reason = cause.verify_message or cause.reason or "verification failed"
        return TLSError(f"registry {host}: TLS certificate not trusted ({reason}); put its CA in {where} "
                        "or list the registry as insecure")
    if cause is not None:
        return TLSError(f"registry {host}: TLS handshake failed ({cause.reason or cause})")
    return RegistryUnreachable(host)


async def _read_bounded(resp: httpx.Response, limit: int) -> bytes:
    parts, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise RegistryProtocolError(f"the registry sent a manifest larger than {limit >> 20} MiB")
        parts.append(chunk)
    return b"".join(parts)


async def _pieces(body: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """The body in pieces of at least `size` bytes (the last one shorter), each joined once:
    httpx's own chunker (aiter_raw(size)) copies every byte three times, a quarter of a
    download's CPU at loopback speed."""
    parts: list[bytes] = []
    held = 0
    async for data in body:
        parts.append(data)
        held += len(data)
        if held >= size:
            yield b"".join(parts)
            parts, held = [], 0
    if parts:
        yield b"".join(parts)


async def _counting(body: AsyncIterator[bytes], total: int, progress: Progress) -> AsyncIterator[bytes]:
    done = 0
    async for chunk in body:
        done += len(chunk)
        progress(done, total)
        yield chunk


class _Exchange:
    """One request to a registry, tried at each endpoint and authorized as asked;
    an async context manager yielding the streamed response (closed on exit)."""

    def __init__(self, client: RegistryClient, ref: Reference, method: str, path: str, *, push: bool = False,
                 headers: dict[str, str] | None = None, content: Content | None = None,
                 ok: tuple[int, ...] = (200,), not_found: Callable[[], Exception] | None = None,
                 follow_redirects: bool = False, absolute: bool = False, root: bool = False) -> None:
        self.client, self.ref, self.method, self.path = client, ref, method, path
        self.push, self.headers, self.content, self.ok = push, headers or {}, content, ok
        self.not_found, self.follow_redirects, self.absolute, self.root = not_found, follow_redirects, absolute, root
        self.response: httpx.Response | None = None

    def _url(self, site: _Site) -> str:
        if self.absolute:
            return self.path
        if self.root:
            return f"{site.endpoint.base_url}/v2/"
        return f"{site.endpoint.base_url}/v2/{self.ref.path}/{self.path}"

    async def __aenter__(self) -> httpx.Response:
        owner, domain = self.client, self.ref.domain
        candidates = await owner.endpoints(domain, push=self.push)
        if self.absolute:   # an upload URL belongs to the endpoint that gave it
            candidates = [c for c in candidates if self.path.startswith(c.base_url + "/")] or candidates[-1:]
        preferred = owner._preferred.get(domain)
        candidates.sort(key=lambda e: e.base_url != preferred)
        last: RegistryError | None = None
        for index, endpoint in enumerate(candidates):
            site = owner._site(endpoint)
            is_last = index == len(candidates) - 1
            try:
                self.response = await self._send(site)
            except RegistryError as exc:
                last = exc
                fallback = isinstance(exc, (RegistryUnreachable, TLSError)) and not endpoint.verify
                if endpoint.mirror or (fallback and not is_last):
                    continue
                raise
            owner._preferred[domain] = endpoint.base_url
            return self.response
        assert last is not None
        raise last

    async def __aexit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if self.response is not None:
            await self.response.aclose()
        if isinstance(exc, _TRANSPORT_ERRORS):   # the body broke off while the caller read it
            raise _transport_error(exc, self.ref.domain, self.client.config) from None

    async def _send(self, site: _Site) -> httpx.Response:
        owner, domain = self.client, self.ref.domain
        scope = auth.repository_scope(self.ref.path, self.push) if self.ref.path else ""
        for attempt in range(2):
            headers = dict(self.headers)
            headers.update(await owner._authorization(site, domain, scope))
            body = self.content() if self.content is not None else None
            request = site.client.build_request(self.method, self._url(site), headers=headers, content=body)
            try:
                resp = await site.client.send(request, stream=True, follow_redirects=self.follow_redirects)
            except _TRANSPORT_ERRORS as exc:
                raise _transport_error(exc, site.endpoint.host, owner.config) from None
            if resp.status_code in self.ok:
                return resp
            try:
                body_bytes = await _read_bounded(resp, 1 << 20)
            except (RegistryError, *_TRANSPORT_ERRORS):
                body_bytes = b""
            finally:
                await resp.aclose()
            if resp.status_code == 401:
                challenges = auth.parse_challenges(resp.headers.get_list("www-authenticate"))
                usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
                # Retry once with what the challenge asks for: concurrent requests may all have
                # gone out before the first 401 taught us the scheme.
                if attempt == 0 and usable:
                    site.challenge = usable[0]
                    site.tokens.pop(scope, None)
                    if usable[0].scheme == "basic" and owner._credentials(domain) is None:
                        raise auth.unauthorized(body_bytes)
                    continue
                raise auth.unauthorized(body_bytes)
            if resp.status_code == 403:
                raise Unauthorized(auth.error_message(body_bytes) or "access denied")
            if resp.status_code == 404 and self.not_found is not None:
                raise self.not_found()
            code = auth.error_code(body_bytes)
            if code == "DIGEST_INVALID":
                raise DigestMismatch()
            if code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN") and self.not_found is not None:
                raise self.not_found()
            message = auth.error_message(body_bytes)
            raise RegistryProtocolError(f"registry {site.endpoint.host} answered HTTP {resp.status_code} to "
                                        f"{self.method} {self.path or '/v2/'}" + (f": {message}" if message else ""))
        raise AssertionError("unreachable")

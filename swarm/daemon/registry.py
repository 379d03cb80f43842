"""The node's registry service: pull, resolve, push, login, for the agent, the manager and the CLI.

How this works. One `NodeRegistry` per daemon holds the node's registry
settings (`RegistryConfig`: the insecure registries and docker.io mirrors
of the node's config, STATE_DIR/certs.d) and one `Puller` on the node's
image store, so every pull of the node (the CLI's, the agent's) shares one
single-flight. Credentials come from the caller when it gives Docker's
encoded auth config (`--with-registry-auth` sends the caller's credentials
with a task; they stay in memory), else from the node's own
STATE_DIR/config.json (what `swarm login` stored).

The settings' checks (dockerd's rules for --insecure-registry and
--registry-mirror) live in swarm/daemon/config.py, which the CLI imports
without the HTTP client. The CLI's pulls and pushes are `Transfer`s (swarm/daemon/transfers.py) that
run in this object's nursery, so they outlive the call that started them.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import trio

if TYPE_CHECKING:
    from swarm.registry import LayerProgress, Puller, PullResult

from swarm.api.reference import InvalidReference, Reference, parse_image
from swarm.daemon.config import BadSetting, check_insecure_registry, check_mirror, check_server_host
# The client and its HTTP stack (httpx, httpcore, h11, h2, anyio: about 5 MiB) are imported
# at a node's first pull, push, login or image resolution, not at its start: a node whose
# images are already here never loads them. swarm.registry's light parts are imported here.
from swarm import registry as client_lib
from swarm.registry import credentials as stored
from swarm.registry.config import DEFAULT_INSECURE, RegistryConfig
from swarm.registry.errors import RegistryError
from swarm.runtime.errors import ImageError

log = logging.getLogger(__name__)

Progress = Callable[["LayerProgress"], None]
Credentials = Callable[[str], "tuple[str, str] | None"]

MAX_AUTH_CHARS = 16 << 10      # an encoded auth config is a few hundred bytes; refuse what is not
DOCKER_HUB_SERVER = stored.DOCKER_HUB_KEY


class BadAuth(RegistryError):
    """An encoded auth config that is not Docker's (base64url of a JSON object)."""

    retryable = False


@dataclass(frozen=True)
class AuthConfig:
    """Docker's registry auth config (the fields this node uses)."""
    username: str
    password: str
    server: str = ""       # "serveraddress": the registry the credentials are for

    def pair(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username or self.password else None


# -- Docker's encoded auth config ---------------------------------------------------------------


def encode_auth(username: str, password: str, server: str = "") -> str:
    """Docker's encoded auth config (registry.EncodeAuthConfig): base64url of
    {"username", "password", "serveraddress"}."""
    doc = {"username": username, "password": password, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def decode_auth(text: str) -> AuthConfig:
    """The credentials of an encoded auth config (base64url or standard base64, padded or not,
    as Docker's clients send it); BadAuth with one sentence when malformed. "" is anonymous."""
    if not text:
        return AuthConfig("", "")
    if not isinstance(text, str) or len(text) > MAX_AUTH_CHARS:
        raise BadAuth(f"invalid registry credentials: an encoded auth config is at most {MAX_AUTH_CHARS} characters")
    cleaned = text.strip().replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        doc = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadAuth("invalid registry credentials: not base64 of a JSON auth config") from None
    if not isinstance(doc, dict):
        raise BadAuth("invalid registry credentials: the auth config is not a JSON object")
    fields = {}
    for key in ("username", "password", "serveraddress", "auth"):
        value = doc.get(key, "")
        if not isinstance(value, str):
            raise BadAuth(f"invalid registry credentials: {key} must be a string")
        fields[key] = value
    username, password = fields["username"], fields["password"]
    if not username and fields["auth"]:     # the config.json form: "auth": base64("user:pass")
        try:
            username, sep, password = base64.b64decode(fields["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise BadAuth("invalid registry credentials: auth is not base64 of USER:PASSWORD")
    return AuthConfig(username, password, fields["serveraddress"])


# -- the node's settings ---------------------------------------------------------------------------


def registry_config(insecure: list[str] | tuple[str, ...], mirrors: list[str] | tuple[str, ...],
                    state_dir: str) -> RegistryConfig:
    """The RegistryConfig of a node: Docker's default insecure ranges plus the operator's."""
    return RegistryConfig(insecure_registries=DEFAULT_INSECURE + tuple(i for i in insecure if i not in DEFAULT_INSECURE),
                          mirrors=tuple(mirrors), certs_dir=os.path.join(os.path.abspath(state_dir), "certs.d"))


def server_domain(server: str) -> tuple[str, str]:
    """A `login`/`logout` SERVER -> (the registry domain to reach, the key and name Docker shows).

    As docker's ConvertToHostname: a URL gives its host; Docker Hub's names all mean
    https://index.docker.io/v1/."""
    server = (server or DOCKER_HUB_SERVER).strip()
    host = server
    for scheme in ("http://", "https://"):
        if host.startswith(scheme):
            host = host[len(scheme):]
    host = host.split("/", 1)[0]
    key = stored.credential_key(host)
    if key == DOCKER_HUB_SERVER:
        return "docker.io", DOCKER_HUB_SERVER
    check_server_host(host)
    return host, host


# -- the service -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pulled:
    """What a pull did, for `image pull`'s last lines."""
    image_id: str
    ref: Reference
    digest: str
    fresh: bool          # the name now points at another image than before ("Downloaded newer image")


@dataclass(frozen=True)
class Pushed:
    ref: Reference
    digest: str
    size: int            # of the manifest
    config_digest: str   # the configuration blob (`docker push` lists only layers)


class NodeRegistry:
    """One per daemon, made in Daemon.__init__ (see the module doc). `run` (in the daemon's
    nursery) gives the transfers the CLI starts a nursery that outlives their calls."""

    def __init__(self, store: Any, config: RegistryConfig, credentials_path: str, *,
                 transport: object = None) -> None:
        self.store = store
        self.config = config
        self.credentials_path = credentials_path
        self._transport = transport          # an httpx transport (unit tests: a fake registry)
        self._puller: Puller | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def puller(self) -> Puller:
        """The node's puller, made (and the client imported) when first needed."""
        if self._puller is None:
            self._puller = client_lib.Puller(self.store, self.config, transport=self._transport,
                                             background=self._in_background)
        return self._puller

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._finish_unpacking)
            task_status.started()
            await trio.sleep_forever()

    def _in_background(self, fn: Callable[..., Any], *args: Any) -> bool:
        """The puller's `background`: a pull's unpacking outlives the pull, in this nursery."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    async def _finish_unpacking(self) -> None:
        """At the daemon's start: the images whose unpacking a stopped daemon interrupted (or that
        failed) are unpacked again, from their verified blobs, one image at a time."""
        try:
            pending = await trio.to_thread.run_sync(self.store.pending_images)
        except (ImageError, OSError) as exc:
            log.warning("listing the images left to unpack failed: %s", exc)
            return
        for image_id in pending:
            await self.puller.unpack_or_log(image_id)

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run background work (a CLI's transfer) that outlives the call that started it."""
        if self._nursery is None:
            raise RuntimeError("the node's registry service is not running")
        self._nursery.start_soon(fn, *args)

    # -- credentials --

    def credentials(self, auth: str = "") -> Credentials:
        """Who to be at a registry: the decoded `auth` (any registry this call reaches), or the
        node's stored credentials for each domain."""
        if auth:
            pair = decode_auth(auth).pair()
            return lambda domain: pair
        return lambda domain: stored.lookup(self.credentials_path, domain)

    def encoded_auth(self, ref: str) -> str:
        """This node's stored credentials for `ref`'s registry, encoded ("" when none)."""
        domain = parse_image(ref).domain
        pair = stored.lookup(self.credentials_path, domain)
        if pair is None:
            return ""
        return encode_auth(pair[0], pair[1], stored.credential_key(domain))

    # -- pull, resolve, push --

    async def pull(self, ref: str, auth: str = "", progress: Progress | None = None) -> str:
        """Pull `ref` into the node's store; the image id. `auth`: an encoded auth config,
        "" for the node's own credentials. Raises RegistryError subclasses (and InvalidReference)."""
        return (await self.pull_image(ref, auth, progress)).image_id

    async def pull_image(self, ref: str, auth: str = "", progress: Progress | None = None, *,
                         unpacked: bool = True) -> Pulled:
        """`unpacked=False` (`swarm image pull`): done once the blobs are stored, verified and the
        image registered; its layers are unpacked in the background (swarm/registry/pull.py)."""
        parsed = parse_image(ref)
        creds = self.credentials(auth)
        before = await trio.to_thread.run_sync(self._image_of, parsed.familiar())
        result: PullResult = await self.puller.pull(parsed, progress=progress, credentials=creds, unpacked=unpacked)
        image_id = result.image if isinstance(result.image, str) else None
        if image_id is None:
            image_id = await trio.to_thread.run_sync(self.store.has_digest, parsed.familiar_name, result.digest)
        if image_id is None:
            raise ImageError(f"No such image: {parsed.familiar()}")
        return Pulled(str(image_id), parsed, result.digest, fresh=result.downloaded and before != image_id)

    def _image_of(self, ref: str) -> str | None:
        try:
            return self.store.image_id(ref)
        except ImageError:
            return None

    async def resolve(self, ref: str, auth: str = "") -> str:
        """`ref` pinned: "name:tag@sha256:..." (familiar name; the manifest's or index's digest),
        as Docker's manager writes into a service spec. RegistryError when the registry cannot say."""
        parsed = parse_image(ref)
        if parsed.digest:
            return parsed.familiar()
        async with client_lib.RegistryClient(self.config, self.credentials(auth), transport=self._transport) as client:  # type: ignore[arg-type]
            digest = await client.head_manifest(parsed)
        return parsed.with_digest(digest).familiar()

    async def push(self, ref: str, auth: str = "", progress: Progress | None = None) -> str:
        """Push `ref` from the node's store; the pushed manifest's digest."""
        return (await self.push_image(ref, auth, progress)).digest

    async def push_image(self, ref: str, auth: str = "", progress: Progress | None = None) -> Pushed:
        parsed = parse_image(ref)
        if parsed.digest and not parsed.tag:
            raise ImageError(f"cannot push a digest reference ({parsed.familiar()}): push a tag")
        name = parsed.familiar()
        try:
            source = await trio.to_thread.run_sync(self.store.push_source, name)
        except ImageError as exc:
            if str(exc).startswith("No such image"):
                raise ImageError(f"An image does not exist locally with the tag: {parsed.familiar_name}") from None
            raise
        config_short = source.blobs[0].digest.split(":", 1)[-1][:12]

        def layers_only(event: LayerProgress) -> None:     # docker lists the layers, not the configuration
            if progress is not None and event.layer != config_short:
                progress(event)

        result = await client_lib.push(parsed, source, self.config, self.credentials(auth), progress=layers_only,
                            transport=self._transport)
        await trio.to_thread.run_sync(self.store.add_digest, name, result.digest)
        return Pushed(parsed, result.digest, result.size, source.blobs[0].digest)

    # -- login, logout --

    async def login(self, server: str, username: str, password: str) -> str:
        """Check the credentials at the registry (GET /v2/ with them, as docker login), then keep
        them; the key they are kept under. Unauthorized (nothing stored) when refused."""
        domain, key = server_domain(server)
        if not username:
            raise BadAuth("Username is required")
        if not password:
            raise BadAuth("Password is required")
        pair = (username, password)
        config = dataclasses.replace(self.config, mirrors=())     # the registry itself says yes, not a mirror
        async with client_lib.RegistryClient(config, lambda d: pair, transport=self._transport) as client:  # type: ignore[arg-type]
            await client.ping(domain)
        await trio.to_thread.run_sync(stored.store, self.credentials_path, domain, username, password)
        return key

    async def logout(self, server: str) -> tuple[str, bool]:
        """Forget the credentials of `server`: (the name docker shows, whether there were any)."""
        domain, key = server_domain(server)
        return key, await trio.to_thread.run_sync(stored.erase, self.credentials_path, domain)


def check_reference(ref: str) -> Reference:
    """A reference as `docker pull` reads it, or InvalidReference (re-exported for the handlers)."""
    if not isinstance(ref, str):
        raise InvalidReference("invalid reference format")
    return parse_image(ref)


__all__ = ["AuthConfig", "BadAuth", "BadSetting", "NodeRegistry", "Pulled", "Pushed", "check_insecure_registry",
           "check_mirror", "check_reference", "decode_auth", "encode_auth", "registry_config",
           "server_domain"]

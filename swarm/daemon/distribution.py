"""The local method `image.distribution`: what a registry says of an image reference, as
Docker's GET /distribution/{name}/json answers it (docker/cli asks it before a `service
create` to pin the image's digest, docker-py's `images.get_registry_data`).

How this works. The manifest (or index) the reference names is fetched with the node's
registry settings and credentials (or the caller's encoded auth): its descriptor is the
media type, digest and size of what the registry sent, and the platforms are the index's
entries, or, for a single manifest, the OS and architecture of its image configuration
(one more small fetch, as dockerd does). The registry's errors become the local API's
codes: an unknown image `not_found`, a refusal `forbidden`, a bad reference `bad_request`,
anything else `unavailable` (retry).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from swarm.api.reference import InvalidReference, Reference, parse_image
from swarm.daemon.registry import BadAuth, NodeRegistry
from swarm import registry as client_lib   # its client loaded at the first call (swarm/daemon/registry.py)
from swarm.registry.errors import ImageNotFound, RegistryError, Unauthorized
from swarm.registry.media import Index, Platform, parse_manifest
from swarm.rpc.messages import Peer, RPCError

if TYPE_CHECKING:
    from swarm.registry import RegistryClient

MAX_CONFIG_BYTES = 8 << 20      # an image configuration is a few KiB; a registry sending more is wrong

# encoded auth ("" for the node's own credentials) -> a client of the node's registry settings
ClientFor = Callable[[str], "RegistryClient"]


def platform_view(p: Platform) -> dict[str, str]:
    out = {"architecture": p.architecture, "os": p.os}
    if p.variant:
        out["variant"] = p.variant
    return out


async def inspect(client: RegistryClient, ref: Reference) -> dict[str, Any]:
    """Docker's DistributionInspect of `ref`: {"Descriptor": {mediaType, digest, size}, "Platforms"}."""
    fetched = await client.get_manifest(ref)
    parsed = parse_manifest(fetched.data, fetched.media_type)
    descriptor = {"mediaType": parsed.media_type or fetched.media_type, "digest": fetched.digest,
                  "size": len(fetched.data)}
    if isinstance(parsed, Index):
        platforms = [platform_view(m.platform) for m in parsed.manifests if m.platform is not None]
    else:
        chunks: list[bytes] = []
        await client.fetch_blob(ref, parsed.config.digest, chunks.append,
                                size=min(parsed.config.size, MAX_CONFIG_BYTES))
        try:
            config = json.loads(b"".join(chunks))
            platforms = [{"architecture": str(config["architecture"]), "os": str(config["os"]),
                          **({"variant": str(config["variant"])} if config.get("variant") else {})}]
        except (ValueError, KeyError, TypeError):
            platforms = []       # a configuration without its platform: dockerd says nothing either
    return {"Descriptor": descriptor, "Platforms": platforms}


def client_for(registry: NodeRegistry) -> ClientFor:
    """Clients with the node's registry settings; credentials as its pulls take them."""
    return lambda auth: client_lib.RegistryClient(registry.config, registry.credentials(auth))


def handler(client_for: ClientFor) -> Callable[[Peer, dict], Any]:
    """The local method: {"ref", "registry_auth"?} -> DistributionInspect."""
    async def distribution(peer: Peer, params: dict) -> dict[str, Any]:
        auth = params.get("registry_auth") or ""
        if not isinstance(params.get("ref"), str) or not isinstance(auth, str):
            raise RPCError("bad_request", "ref must be an image reference")
        try:
            ref = parse_image(params["ref"])
            async with client_for(auth) as client:
                return await inspect(client, ref)
        except (InvalidReference, BadAuth) as exc:
            raise RPCError("bad_request", str(exc)) from None
        except ImageNotFound as exc:
            raise RPCError("not_found", str(exc)) from None
        except Unauthorized as exc:
            raise RPCError("forbidden", str(exc)) from None
        except RegistryError as exc:
            raise RPCError("unavailable", str(exc)) from None
    return distribution

"""Manifests, indexes and platforms: what a registry's JSON documents mean.

How this works. A manifest GET may return one image manifest (Docker schema
2 or OCI) or an index (Docker manifest list or OCI index) of per-platform
manifests. `parse_manifest` turns the bytes into `ImageManifest` or `Index`
with every descriptor checked (digest syntax, size). `select_platform` picks
the entry this node runs, as Docker does with containerd's matcher: the same
OS and architecture, and a variant that is equal or one the node can also
run (an arm/v7 node runs v6 and v5 images; arm64 and arm64/v8 are one);
exact variants are preferred, and attestation entries (os "unknown") never
match. Pure: no I/O.
"""
from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field

from swarm.api.reference import InvalidReference, check_digest
from swarm.registry.errors import NoMatchingPlatform, RegistryProtocolError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
# What a manifest GET accepts, in Docker's order of preference.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, OCI_MANIFEST))
MAX_MANIFEST_BYTES = 4 << 20   # distribution's own limit for a manifest PUT

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386"}


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @staticmethod
    def parse(text: str) -> "Platform":
        """'linux/arm/v7' -> Platform('linux', 'arm', 'v7'), normalized."""
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return normalize_platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def normalize_platform(os_name: str, arch: str, variant: str = "") -> Platform:
    """containerd's normalization: aliases of architectures, arm64's v8 is no variant."""
    os_name, arch, variant = os_name.lower(), arch.lower(), variant.lower()
    if arch.startswith("armv") and arch[4:5].isdigit():   # armv7l -> arm/v7
        arch, variant = "arm", variant or "v" + arch[4]
    if arch in ("armhf", "armel"):
        arch, variant = "arm", variant or ("v7" if arch == "armhf" else "v6")
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch == "arm64" and variant in ("8", "v8"):
        variant = ""
    if arch == "arm" and not variant:
        variant = "v7"
    if variant and variant.isdigit():
        variant = "v" + variant
    return Platform(os_name, arch, variant)


def host_platform() -> Platform:
    """The platform of this node (only Linux runs tasks)."""
    return normalize_platform("linux", _platform.machine() or "amd64")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def _descriptor(raw: object, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise RegistryProtocolError(f"invalid manifest: {what} is not an object")
    digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType", "")
    if not isinstance(digest, str):
        raise RegistryProtocolError(f"invalid manifest: {what} has no digest")
    try:
        check_digest(digest)
    except InvalidReference:
        raise RegistryProtocolError(f"invalid manifest: {what} has an unsupported digest {digest!r}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryProtocolError(f"invalid manifest: {what} has no valid size")
    plat = raw.get("platform")
    parsed: Platform | None = None
    if isinstance(plat, dict) and isinstance(plat.get("os"), str) and isinstance(plat.get("architecture"), str):
        variant = plat.get("variant") if isinstance(plat.get("variant"), str) else ""
        parsed = normalize_platform(plat["os"], plat["architecture"], variant)
    urls = raw.get("urls") if isinstance(raw.get("urls"), list) else []
    annotations = raw.get("annotations") if isinstance(raw.get("annotations"), dict) else {}
    return Descriptor(str(media_type), digest, size, parsed, tuple(str(u) for u in urls), annotations)


def parse_manifest(data: bytes, content_type: str = "") -> ImageManifest | Index:
    """The manifest or index in `data`; its own mediaType wins over the Content-Type header."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise RegistryProtocolError("invalid manifest: larger than 4 MiB")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryProtocolError("invalid manifest: not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryProtocolError("invalid manifest: not a JSON object")
    media_type = doc.get("mediaType") or content_type.split(";")[0].strip()
    if media_type in SCHEMA1 or doc.get("schemaVersion") == 1:
        raise RegistryProtocolError("unsupported manifest format: Docker schema 1 (push the image again with a "
                                    "current client)")
    if not media_type:   # an OCI document may omit mediaType: its shape tells
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise RegistryProtocolError("invalid manifest list: no manifests")
        return Index(media_type, tuple(_descriptor(e, f"manifests[{i}]") for i, e in enumerate(entries)))
    if media_type in MANIFEST_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise RegistryProtocolError("invalid manifest: no layers")
        return ImageManifest(media_type, _descriptor(doc.get("config"), "config"),
                             tuple(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)))
    raise RegistryProtocolError(f"unsupported manifest media type {media_type!r}")


def _compatible_variants(want: Platform) -> list[str]:
    """Variants a node of platform `want` runs, best first."""
    if want.architecture == "arm" and want.variant[1:].isdigit():
        return [f"v{n}" for n in range(int(want.variant[1:]), 4, -1)]
    if want.architecture == "amd64" and want.variant[1:].isdigit():
        return [f"v{n}" for n in range(int(want.variant[1:]), 0, -1)] + [""]
    if want.architecture == "amd64" and not want.variant:
        return ["", "v1"]
    return [want.variant]


def select_platform(index: Index, want: Platform) -> Descriptor:
    """The index entry `want` runs (see the module doc), or NoMatchingPlatform."""
    ranking = _compatible_variants(want)
    best: tuple[int, int, Descriptor] | None = None
    for position, entry in enumerate(index.manifests):
        p = entry.platform
        if p is None or p.os != want.os or p.architecture != want.architecture or p.variant not in ranking:
            continue
        if entry.media_type and entry.media_type not in MANIFEST_TYPES:
            continue
        key = (ranking.index(p.variant), position)
        if best is None or key < best[:2]:
            best = (*key, entry)
    if best is None:
        raise NoMatchingPlatform(str(want))
    return best[2]


def diff_ids(config: bytes) -> list[str]:
    """The uncompressed layer digests of an image configuration, bottom first."""
    try:
        doc = json.loads(config)
        ids = doc["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise RegistryProtocolError("invalid image configuration: no rootfs.diff_ids") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise RegistryProtocolError("invalid image configuration: rootfs.diff_ids is not a list of digests")
    return ids

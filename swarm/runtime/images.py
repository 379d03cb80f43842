"""A node's content-addressed image store (STATE_DIR/images).

Layout under the root:

    blobs/sha256/<hex>     registry blobs (compressed layers, configurations, manifests) and
                           the uncompressed tars of imported layers (blobstore.BlobStore)
    layers/<diff_id>/      one unpacked layer (overlayfs form: whiteouts are 0/0
                           character devices, opaque directories carry
                           trusted.overlay.opaque=y), named by the sha256 of its
                           uncompressed tar
    images/<id>.json       {id, layers: [diff_id, ... bottom first], layer_sizes, unpacking
                           (the diff_ids of a pulled image not unpacked yet, if any),
                           config: {Cmd, Entrypoint, Env, WorkingDir, User, StopSignal,
                           ExposedPorts, Volumes, Labels, Healthcheck}, created, size,
                           layer_blobs: [{digest, mediaType, size, tar_size}] (the blob each
                           layer's tar comes from), manifest: {digest, mediaType} (what a push
                           sends again), digests: [manifest or index digests naming it]}
    tags.json              {"NAME:TAG" | "NAME@sha256:HEX": id} (imagerefs: RepoTags, RepoDigests)
    lock                   flock'ed by every writer (CLI and daemon may both write)

An image id is the sha256 of its configuration, as Docker computes it, and the
configuration is the blob of that digest. Every layer is unpacked once, by
diff_id, whatever image or registry brought it, and its compressed blob is
stored once, by digest. Layers stay separate; a container's rootfs stacks
them with one overlay mount.

Imports and loads extract into layers/.tmp-* directories (and write blobs
through temporary files) first, and move them into place under the lock only
when every layer was accepted, so a refused archive leaves nothing behind. A
pull registers its image as soon as its blobs are stored, the layers the
store lacks listed in the record's "unpacking" (`add_pulled(unpack=False)`),
and unpacks them after (`unpack_image`, layerstage.PullLayers: staged and
renamed into place one by one, under a lease); `resolve`, what a task start
uses, first unpacks what is still listed (or waits for the thread doing it),
and a store opened again finds what an interrupted unpack left
(`pending_images`). Garbage collection (after `remove`, in `prune`) keeps
every blob and layer a remaining image reaches, the blobs a pull downloaded
and has not registered yet, the layers being unpacked, and the layers
mounted by a container; the images tasks use (`in_use`) are never removed.

Imports are bounded: only regular files are read (a device or fifo would never
end); what an import expands to may not pass `max_import_bytes` nor the free
space of the store's filesystem less a reserve (extract.Budget); and an import
takes a cancel flag (`run_cancellable` sets it when the trio caller is
cancelled), so a daemon shutting down is not held by one.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import trio

from raft.fsutil import atomic_write
from swarm.api.model import rfc3339
from swarm.runtime import imagerefs
from swarm.runtime.blobstore import BlobStore, DigestMismatch, check_digest
from swarm.runtime.errors import ImageError
from swarm.runtime.extract import Budget, format_bytes, open_layer_stream
from swarm.runtime.imagearchive import (MAX_METADATA_BYTES, PLATFORM, ParsedImage, SaveImage, SaveLayer, diff_ids,
                                        open_source, read_archive, write_docker_save)
from swarm.runtime.imageconfig import Healthcheck, Image, image_config, parse_time
from swarm.runtime.layerstage import DOCKER_LAYER_GZIP, LAYER_TAR, GzipSink, LayerLeases, PullLayers, StagedLayers

__all__ = ["Healthcheck", "Image", "ImageError", "ImageStore", "PushSource", "Blob", "normalize_ref",
           "run_cancellable", "MAX_IMPORT_BYTES"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_IMPORT_BYTES = 20 << 30      # what one import or load may expand to, at most
RESERVE_BYTES = 1 << 30          # free space an import leaves on the store's filesystem: the smaller
RESERVE_FRACTION = 0.05          # of these two, so that a small disk can still take images
CHUNK = 1 << 20
T = TypeVar("T")

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (DOCKER_MANIFEST, "application/vnd.oci.image.manifest.v1+json")


def normalize_ref(ref: str) -> str:
    """'NAME[:TAG][@DIGEST]' -> the store's key, 'NAME:TAG' (tag defaults to latest) or 'NAME@DIGEST';
    raises ImageError when malformed."""
    return imagerefs.store_key(ref)


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str
    path: str           # the file in the store holding exactly the blob's bytes


@dataclass(frozen=True)
class PushSource:
    """What `push` uploads (swarm.registry.push.PushSource): the blobs, configuration first, then
    the manifest, whose digest becomes the RepoDigest (`add_digest`)."""
    image_id: str
    manifest: bytes
    media_type: str
    digest: str
    blobs: tuple[Blob, ...]

    @property
    def config(self) -> Blob:
        return self.blobs[0]

    @property
    def layers(self) -> tuple[Blob, ...]:
        return self.blobs[1:]


@dataclass
class _Pending:
    """An image read from an archive or a registry, its layers extracted but not yet in the store."""
    id: str
    doc: dict
    refs: list[str]
    blobs: list[bytes]        # the configuration (and manifest) to store with it


class ImageStore:
    def __init__(self, root: str, *, max_import_bytes: int = MAX_IMPORT_BYTES,
                 in_use: Callable[[], Iterable[str]] | None = None) -> None:
        """`in_use` gives the ids of the images task bundles use: they are never removed."""
        self.root = os.path.abspath(root)
        self.max_import_bytes = max_import_bytes
        self.in_use: Callable[[], Iterable[str]] = in_use or (lambda: ())
        self.layers_dir = os.path.join(self.root, "layers")
        self.images_dir = os.path.join(self.root, "images")
        self.tags_path = os.path.join(self.root, "tags.json")
        for d in (self.root, self.layers_dir, self.images_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.blobs = BlobStore(os.path.join(self.root, "blobs"))
        self.layer_leases = LayerLeases()      # layers pulls unpacked that no image reaches yet
        self._clean_stale_tmp()

    # -- reading -------------------------------------------------------------------------
    def layer_path(self, diff_id: str) -> str:
        return os.path.join(self.layers_dir, diff_id)

    def resolve(self, ref: str) -> Image:
        """An image by NAME[:TAG], NAME@DIGEST, id, 'sha256:'id, or unique id prefix, its layers
        in place: a pulled layer still to unpack is unpacked first, or waited for when another
        thread unpacks it (what a task start uses; a failed unpack raises its ImageError here)."""
        doc = self._record(ref)
        if doc.get("unpacking"):
            self.unpack_image(doc["id"])
            doc = self._read_image(doc["id"])
        return Image.from_json(doc)

    def image_id(self, ref: str) -> str:
        return self._lookup(ref, self._tags())[0]

    def _lookup(self, ref: str, tags: dict[str, str]) -> tuple[str, str | None]:
        """(image id, the store key `ref` named, None when named by id)."""
        try:
            key = normalize_ref(ref)
        except ImageError:
            key = None
        if key is not None and key in tags:
            return tags[key], key
        hexd = ref[len("sha256:"):] if ref.startswith("sha256:") else ref
        if re.fullmatch(r"[0-9a-f]{1,64}", hexd):
            matches = [i for i in self._image_ids() if i.startswith(hexd)]
            if len(matches) > 1:
                raise ImageError(f"The image id prefix {ref!r} is ambiguous; give more characters.")
            if matches:
                return matches[0], None
        if key is None:
            normalize_ref(ref)      # raises its sentence: a malformed reference, not a missing image
        raise ImageError(f"No such image: {ref}")

    def _record(self, ref: str) -> dict:
        image_id, _ = self._lookup(ref, self._tags())
        try:
            return self._read_image(image_id)
        except FileNotFoundError:
            raise ImageError(f"No such image: {ref}") from None

    def list(self) -> list[dict]:
        """One row per reference, tag or digest (images without any once, ref '<none>'):
        {ref, id, size, created}."""
        by_id: dict[str, list[str]] = {}
        for ref, image_id in self._tags().items():
            by_id.setdefault(image_id, []).append(ref)
        rows = []
        for doc in self.records():
            for ref in sorted(by_id.get(doc["id"], ["<none>"])):
                rows.append({"ref": ref, "id": doc["id"], "size": int(doc.get("size", 0)),
                             "created": float(doc.get("created", 0.0))})
        rows.sort(key=lambda r: (r["ref"] == "<none>", r["ref"], r["id"]))
        return rows

    def summaries(self) -> list[dict]:
        """Docker's ImageSummary per image: {Id, RepoTags, RepoDigests, Created (epoch), Size, Labels}."""
        by_id: dict[str, list[str]] = {}
        for ref, image_id in self._tags().items():
            by_id.setdefault(image_id, []).append(ref)
        out = []
        for doc in self.records():
            refs = sorted(by_id.get(doc["id"], []))
            out.append({"Id": f"sha256:{doc['id']}", "RepoTags": [r for r in refs if "@" not in r],
                        "RepoDigests": [r for r in refs if "@" in r], "Created": float(doc.get("created", 0.0)),
                        "Size": int(doc.get("size", 0)), "Labels": dict((doc.get("config") or {}).get("Labels") or {})})
        return out

    def inspect(self, ref: str) -> dict:
        """Docker's `image inspect` document of one image."""
        doc = self._record(ref)
        config = self._config_doc(doc)
        refs = imagerefs.references(self._tags(), doc["id"])
        out = {"Id": f"sha256:{doc['id']}", "RepoTags": [r for r in refs if "@" not in r],
               "RepoDigests": [r for r in refs if "@" in r], "Parent": "", "Comment": config.get("comment", ""),
               "Created": rfc3339(float(doc.get("created", 0.0))) or "0001-01-01T00:00:00Z",
               "DockerVersion": config.get("docker_version", ""), "Author": config.get("author", ""),
               "Config": config.get("config") or {}, "Architecture": config.get("architecture", PLATFORM[1]),
               "Os": config.get("os", PLATFORM[0]), "Size": int(doc.get("size", 0)),
               "RootFS": {"Type": "layers", "Layers": [f"sha256:{d}" for d in doc["layers"]]}}
        if config.get("variant"):
            out["Variant"] = config["variant"]
        return out

    def has_digest(self, name: str, digest: str) -> str | None:
        """The id of the image `digest` (a manifest's or an index's) names, if this node holds it:
        NAME@DIGEST is a reference here, or an image of another name was pulled by it."""
        check_digest(digest)
        key = imagerefs.Ref(imagerefs.parse(name).name, digest=digest).key()
        image_id = self._tags().get(key)
        if image_id is not None and os.path.exists(self._image_path(image_id)):
            return image_id
        for doc in self.records():
            if digest in (doc.get("digests") or ()):
                return doc["id"]
        return None

    def has_blob(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def ingest_blob(self, digest: str, chunks: Iterable[bytes]) -> str:
        """Store a downloaded blob, kept only when it hashes to `digest` (blobstore.BlobStore.ingest);
        it is spared by garbage collection until an image registers it (add_pulled) or for an hour.
        Returns the digest of the bytes received: a caller (the puller) refuses any other, in its
        own words; this hash is the only one the download needs."""
        try:
            return self.blobs.ingest(digest, chunks, fresh=True)
        except DigestMismatch as exc:
            if exc.actual is None:
                raise
            return exc.actual

    def pull_layers(self) -> PullLayers:
        """Layers unpacked from stored blobs under leases (layerstage.PullLayers, what
        `unpack_image` uses); `close` it at the end, whatever the outcome."""
        return PullLayers(self)

    def has_layer(self, diff_id: str) -> bool:
        """Whether the layer is unpacked here (a puller need not download its blob then)."""
        return bool(_HEX64.match(diff_id)) and os.path.isdir(self.layer_path(diff_id))

    def _config_doc(self, doc: dict) -> dict:
        """The image's whole configuration; an image stored before blobs were kept has only the subset."""
        try:
            return _json(self.blobs.read(f"sha256:{doc['id']}", MAX_METADATA_BYTES), "The image configuration")
        except ImageError:
            return {"config": doc.get("config") or {}, "rootfs": {"type": "layers",
                                                                  "diff_ids": [f"sha256:{d}" for d in doc["layers"]]}}

    # -- writing: import, load, pull ------------------------------------------------------
    def import_rootfs(self, src: str | BinaryIO, ref: str | None, cmd: list[str] | tuple[str, ...] | None = None,
                      *, now: float | None = None, cancel: threading.Event | None = None) -> str:
        """Import a root filesystem tar (maybe compressed) as a one-layer image, like `docker import`.
        `src` is the path of a regular file or an open stream; `cancel` stops it (ImageError)."""
        norm = normalize_ref(ref) if ref else None
        created = time.time() if now is None else now
        with self._tmp_layers(cancel) as tmp:
            with open_source(src) as raw:
                diff_id, size = tmp.extract(raw)
            iso = datetime.datetime.fromtimestamp(created, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            cfg = {"Cmd": list(cmd) if cmd else None, "Entrypoint": None, "Env": [DEFAULT_PATH], "WorkingDir": ""}
            config_doc = {"architecture": PLATFORM[1], "os": PLATFORM[0], "created": iso, "config": cfg,
                          "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}
            blob = json.dumps(config_doc, sort_keys=True, separators=(",", ":")).encode()
            image_id = hashlib.sha256(blob).hexdigest()
            doc = {"id": image_id, "layers": [diff_id], "layer_sizes": [size], "config": cfg,
                   "created": created, "size": size, "layer_blobs": [tmp.sources[diff_id]]}
            self._commit(tmp, [_Pending(image_id, doc, [norm] if norm else [], [blob])])
        return image_id

    def load_archive(self, path: str, *, cancel: threading.Event | None = None) -> list[str]:
        """Load a `docker save` archive or an OCI image layout archive (a regular file, maybe
        compressed); returns the refs loaded (an image without a name is returned as its id)."""
        with open_source(path) as f, self._tmp_layers(cancel) as tmp:
            parsed = read_archive(path, f, tmp.budget, tmp.ensure)
            pending = [self._pending(p, tmp) for p in parsed]
            self._commit(tmp, pending)
        refs: list[str] = []
        for p in pending:
            refs.extend(p.refs or [p.id])
        return refs

    def _pending(self, p: ParsedImage, tmp: "StagedLayers") -> _Pending:
        image_id = hashlib.sha256(p.config_blob).hexdigest()
        doc = {"id": image_id, "layers": p.diff_ids, "layer_sizes": p.sizes,
               "config": image_config(p.config.get("config") or {}), "created": parse_time(p.config.get("created")),
               "size": sum(p.sizes), "layer_blobs": [tmp.sources.get(d) for d in p.diff_ids]}
        return _Pending(image_id, doc, [normalize_ref(r) for r in p.refs], [p.config_blob])

    def add_pulled(self, ref: str, manifest_digest: str, manifest_bytes: bytes, config_bytes: bytes, *,
                   cancel: threading.Event | None = None, unpack: bool = True) -> str:
        """Register an image pulled as `ref`: its layer blobs are in the store already (the puller
        stored them with `ingest_blob`). `manifest_digest` is what `ref` resolved to (the index's
        digest for a multi-platform image, else the manifest's): it becomes the RepoDigest
        NAME@DIGEST. Returns the image id.

        With `unpack`, the layers not yet unpacked are unpacked first (each diff_id once). Without
        it the image is registered at once and its missing layers are listed in the record's
        "unpacking" (their blob sizes standing for their sizes meanwhile): `unpack_image` unpacks
        them, and `resolve` (what a task start uses) does it first when nobody has yet."""
        parsed = imagerefs.parse(ref)
        check_digest(manifest_digest)
        manifest = _json(manifest_bytes, f"The manifest of {ref}")
        config = _json(config_bytes, f"The configuration of {ref}")
        if manifest.get("mediaType", MANIFEST_TYPES[1]) not in MANIFEST_TYPES:
            raise ImageError(f"The manifest of {ref} has the unsupported media type {manifest.get('mediaType')!r}.")
        image_id = hashlib.sha256(config_bytes).hexdigest()
        if (manifest.get("config") or {}).get("digest") != f"sha256:{image_id}":
            raise ImageError(f"digest mismatch: the configuration of {ref} is not the one its manifest names.")
        ids = diff_ids(config)
        layers = manifest.get("layers") or []
        if len(layers) != len(ids):
            raise ImageError(f"The manifest of {ref} lists {len(layers)} layers but its configuration {len(ids)}.")
        manifest_hex = hashlib.sha256(manifest_bytes).hexdigest()
        with self._tmp_layers(cancel) as tmp:
            later: list[str] = []
            if unpack:
                sizes = [tmp.ensure_from_blob(d, layer, i) for i, (d, layer) in enumerate(zip(ids, layers))]
            else:
                sizes = [tmp.note_pulled(d, layer, later) for d, layer in zip(ids, layers)]
            doc = {"id": image_id, "layers": ids, "layer_sizes": sizes,
                   "config": image_config(config.get("config") or {}), "created": parse_time(config.get("created")),
                   "size": sum(sizes), "layer_blobs": [tmp.sources.get(d) for d in ids],
                   "manifest": {"digest": f"sha256:{manifest_hex}",
                                "mediaType": manifest.get("mediaType", MANIFEST_TYPES[1])},
                   "digests": sorted({manifest_digest, f"sha256:{manifest_hex}"})}
            if later:
                doc["unpacking"] = sorted(set(later))
            refs = [imagerefs.Ref(parsed.name, digest=manifest_digest).key()]
            if parsed.digest is None:
                refs.append(parsed.key())
            self._commit(tmp, [_Pending(image_id, doc, refs, [config_bytes, manifest_bytes])])
        self.blobs.settle(str(layer.get("digest")) for layer in layers)
        return image_id

    def pending_images(self) -> list[str]:
        """The ids of images registered with layers still to unpack (an unpack that a daemon
        stopping interrupted, or one that failed and waits for a retry)."""
        return [doc["id"] for doc in self.records() if doc.get("unpacking")]

    def unpack_image(self, image_id: str, *, cancel: threading.Event | None = None, workers: int = 2) -> None:
        """Unpack the layers of a registered image still listed as "unpacking" (`add_pulled`
        without `unpack`), `workers` at a time, each from its verified blob into a staging
        directory renamed into place (layerstage.PullLayers: one unpack per diff_id in this
        process, a lease keeping garbage collection off it meanwhile). The record then gets the
        real sizes. An image removed meanwhile is not an error: what it left unreached goes.
        Raises ImageError (a layer that does not unpack to its diff_id, a full disk, `cancel`)."""
        try:
            doc = self._read_image(image_id)
        except FileNotFoundError:
            return
        pending = [(i, d) for i, d in enumerate(doc["layers"]) if d in set(doc.get("unpacking") or ())]
        if not pending:
            return
        blobs = doc.get("layer_blobs") or [None] * len(doc["layers"])
        layers = PullLayers(self, cancel)
        try:
            layers.unpack_all([(i, d, blobs[i] or {}) for i, d in pending], workers,
                              lambda diff_id, size: self._unpacked(image_id, diff_id, size))
        finally:
            layers.close()

    def _unpacked(self, image_id: str, diff_id: str, size: int) -> None:
        """Record that a layer of the image is in place: its real size and its tar's length."""
        known = self.layer_leases.known(diff_id)
        with self._lock():
            try:
                doc = self._read_image(image_id)
            except FileNotFoundError:
                return
            pending = [d for d in doc.get("unpacking") or () if d != diff_id]
            for i, d in enumerate(doc["layers"]):
                if d != diff_id:
                    continue
                doc["layer_sizes"][i] = size
                blobs = doc.get("layer_blobs") or []
                if known is not None and i < len(blobs) and blobs[i] and known[1].get("tar_size"):
                    blobs[i] = {**blobs[i], "tar_size": known[1]["tar_size"]}
            doc["size"] = sum(int(s) for s in doc["layer_sizes"])
            if pending:
                doc["unpacking"] = pending
            else:
                doc.pop("unpacking", None)
            self._write_image(doc)

    def add_digest(self, ref: str, digest: str) -> None:
        """After a push: NAME@DIGEST (NAME of `ref`) becomes a RepoDigest of the image `ref` names."""
        check_digest(digest)
        with self._lock():
            tags = self._tags()
            image_id, _ = self._lookup(ref, tags)
            tags[imagerefs.Ref(imagerefs.parse(ref).name, digest=digest).key()] = image_id
            doc = self._read_image(image_id)
            doc["digests"] = sorted({*(doc.get("digests") or ()), digest})
            self._write_image(doc)
            self._write_tags(tags)

    # -- push and save ---------------------------------------------------------------------
    def push_source(self, ref: str) -> PushSource:
        """The manifest, configuration and layer blobs a push of `ref` uploads. A pulled image's
        manifest is sent again as it was; an imported or loaded one gets gzip blobs made
        deterministically (mtime 0) once, kept, and a Docker schema 2 manifest."""
        doc = self._record(ref)
        config = self._blob(f"sha256:{doc['id']}", DOCKER_CONFIG)
        kept = doc.get("manifest")
        if kept and self.blobs.has(kept["digest"]):
            manifest = self.blobs.read(kept["digest"], MAX_METADATA_BYTES)
            descs = _json(manifest, "The stored manifest").get("layers") or []
            if all(self.blobs.has(d["digest"]) for d in descs):
                return PushSource(doc["id"], manifest, kept["mediaType"], kept["digest"],
                                  (config, *(self._blob(d["digest"], d["mediaType"]) for d in descs)))
        sources = [self._compressed(doc, i) for i in range(len(doc["layers"]))]
        manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                               "config": {"mediaType": DOCKER_CONFIG, "size": config.size, "digest": config.digest},
                               "layers": [{"mediaType": s["mediaType"], "size": s["size"], "digest": s["digest"]}
                                          for s in sources]}, indent=3).encode()
        with self._lock():
            digest = self.blobs.put(manifest)
            fresh = self._read_image(doc["id"])
            fresh["layer_blobs"] = sources
            fresh["manifest"] = {"digest": digest, "mediaType": DOCKER_MANIFEST}
            self._write_image(fresh)
        return PushSource(doc["id"], manifest, DOCKER_MANIFEST, digest,
                          (config, *(self._blob(s["digest"], s["mediaType"]) for s in sources)))

    def _blob(self, digest: str, media_type: str) -> Blob:
        return Blob(digest, self.blobs.size(digest), media_type, self.blobs.path(digest))

    def _compressed(self, doc: dict, index: int) -> dict:
        """The gzip blob of layer `index`, made from its tar when the store has no compressed form."""
        source = self.layer_source(doc, index)
        if source["mediaType"] != LAYER_TAR:
            return source
        with self.blobs.open(source["digest"]) as tar, self.blobs.writer() as w:
            gz = GzipSink(w)
            while chunk := tar.read(CHUNK):
                gz.write(chunk)
            gz.close()
            digest = w.commit()
        return {"digest": digest, "mediaType": DOCKER_LAYER_GZIP, "size": w.written, "tar_size": source["size"]}

    def layer_source(self, doc: dict, index: int) -> dict:
        diff_id = doc["layers"][index]
        own = (doc.get("layer_blobs") or [None] * len(doc["layers"]))[index]
        for candidate in [own, *self._sources_of(diff_id)]:
            if candidate and self.blobs.has(candidate["digest"]):
                return candidate
        raise ImageError(f"The content of layer sha256:{diff_id[:12]} of image {doc['id'][:12]} is not kept "
                         f"(it was imported by an older version); import or load the image again.")

    def _sources_of(self, diff_id: str) -> list[dict]:
        found = []
        for doc in self.records():
            for d, src in zip(doc["layers"], doc.get("layer_blobs") or []):
                if d == diff_id and src:
                    found.append(src)
        if self.blobs.has(f"sha256:{diff_id}"):
            found.append({"digest": f"sha256:{diff_id}", "mediaType": LAYER_TAR,
                          "size": self.blobs.size(f"sha256:{diff_id}"), "tar_size": self.blobs.size(f"sha256:{diff_id}")})
        return found

    def save(self, refs: list[str], out: str | BinaryIO) -> None:
        """Write the images `refs` name as a `docker save` archive to the path or stream `out`.
        A path is written through a temporary file beside it and renamed: an existing file is
        replaced, as docker does, and a failure leaves it as it was."""
        tags = self._tags()
        chosen: dict[str, list[str]] = {}
        for ref in refs:
            image_id, key = self._lookup(ref, tags)
            named = chosen.setdefault(image_id, [])
            if key is not None and "@" not in key:
                bare = imagerefs.parse(ref)
                if bare.tag is None and bare.digest is None:   # a bare NAME saves every tag of that repository
                    named += [k for k, v in sorted(tags.items()) if v == image_id and imagerefs.name_of(k) == bare.name
                              and "@" not in k]
                else:
                    named.append(key)
        images = [self._save_image(image_id, list(dict.fromkeys(keys))) for image_id, keys in chosen.items()]
        if not isinstance(out, str):
            write_docker_save(out, images)
            return
        if os.path.isdir(out):
            raise ImageError(f"{out} is a directory; name a file to write the images to.")
        tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "xb") as f:
                os.fchmod(f.fileno(), 0o600)
                write_docker_save(f, images)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, out)
        except OSError as exc:
            raise ImageError(f"Writing {out} failed: {exc.strerror or exc}.") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _save_image(self, image_id: str, keys: list[str]) -> SaveImage:
        doc = self._read_image(image_id)
        config_blob = self.blobs.read(f"sha256:{image_id}", MAX_METADATA_BYTES)
        layers = []
        for i, diff_id in enumerate(doc["layers"]):
            source = self.layer_source(doc, i)
            layers.append(SaveLayer(diff_id, self._tar_size(source), functools.partial(self._open_tar, source)))
        return SaveImage(config_blob, layers, [(k, imagerefs.full_name(k)) for k in keys])

    @contextlib.contextmanager
    def _open_tar(self, source: dict) -> Iterator[BinaryIO]:
        with self.blobs.open(source["digest"]) as f:
            if source["mediaType"] == LAYER_TAR:
                yield f
                return
            _, tar = open_layer_stream(f)
            yield tar  # type: ignore[misc]

    def _tar_size(self, source: dict) -> int:
        if source.get("tar_size"):
            return int(source["tar_size"])
        with self._open_tar(source) as tar:      # a blob pulled before sizes were kept: count once
            total = 0
            while chunk := tar.read(CHUNK):
                total += len(chunk)
            return total

    # -- references, removal and garbage collection ----------------------------------------
    def tag(self, source: str, ref: str) -> None:
        target = imagerefs.parse(ref)
        if target.digest is not None:
            raise ImageError(f"refusing to create a tag with a digest reference: {ref}")
        with self._lock():
            tags = self._tags()
            image_id, _ = self._lookup(source, tags)
            tags[target.key()] = image_id
            self._write_tags(tags)

    def remove(self, ref: str, *, force: bool = False) -> list[dict]:
        """`docker rmi REF`: untag, and delete the image once its last reference went (imagerefs.plan_remove);
        then collect what no image reaches. Returns Docker's records, {"Untagged": REF} / {"Deleted": ID}."""
        with self._lock():
            tags = self._tags()
            image_id, key = self._lookup(ref, tags)
            plan = imagerefs.plan_remove(tags, image_id, key, force=force, in_use=image_id in set(self.in_use()))
            out: list[dict] = []
            for k in plan.untag:
                del tags[k]
                out.append({"Untagged": k})
            self._write_tags(tags)
            if plan.delete:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._image_path(image_id))
                out.append({"Deleted": f"sha256:{image_id}"})
            out.extend(self._collect()[0])
        return out

    def prune(self, *, all: bool = False) -> dict:
        """`docker image prune`: delete images without any reference (with `all`: every image no task
        uses, untagging it first), then collect. Returns {"deleted": records, "reclaimed": bytes}."""
        out: list[dict] = []
        with self._lock():
            tags = self._tags()
            used = set(self.in_use())
            for doc in self.records():
                keys = imagerefs.references(tags, doc["id"])
                if doc["id"] in used or (keys and not all):
                    continue
                for k in keys:
                    del tags[k]
                    out.append({"Untagged": k})
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._image_path(doc["id"]))
                out.append({"Deleted": f"sha256:{doc['id']}"})
            self._write_tags(tags)
            records, reclaimed = self._collect()
        return {"deleted": out + records, "reclaimed": reclaimed}

    def _collect(self) -> tuple[list[dict], int]:
        """Remove layers and blobs no remaining image reaches (the lock is held). A layer still
        mounted by a container stays until the next collection."""
        used_layers, keep = set(), set()
        sizes: dict[str, int] = {}
        for doc in self.records():
            used_layers.update(doc["layers"])
            keep.add(f"sha256:{doc['id']}")
            keep.update(src["digest"] for src in doc.get("layer_blobs") or [] if src)
            if doc.get("manifest"):
                keep.add(doc["manifest"]["digest"])
            sizes.update(zip(doc["layers"], doc.get("layer_sizes") or []))
        used_layers |= self.layer_leases.held()    # unpacked by a pull that has not registered yet
        mounted = _mount_options_text()
        records, reclaimed = [], 0
        for name in os.listdir(self.layers_dir):
            if not _HEX64.match(name) or name in used_layers:
                continue
            path = self.layer_path(name)
            if _mounted(path, mounted):
                continue  # still a lower layer of a container's overlay: keep it until the next removal
            reclaimed += _tree_size(path)
            shutil.rmtree(path, ignore_errors=True)
            records.append({"Deleted": f"sha256:{name}"})
        reclaimed += sum(size for _, size in self.blobs.collect(keep))
        return records, reclaimed

    # -- commit ----------------------------------------------------------------------------
    def _commit(self, tmp: "StagedLayers", pending: list[_Pending]) -> None:
        with self._lock():
            for p in pending:
                later = set(p.doc.get("unpacking") or ())
                for diff_id in p.doc["layers"]:
                    if diff_id not in tmp.dirs and diff_id not in later and not os.path.isdir(self.layer_path(diff_id)):
                        raise ImageError(f"The layer sha256:{diff_id[:12]} was removed meanwhile; try again.")
            for p in pending:
                for blob in p.blobs:
                    self.blobs.put(blob)   # before any layer moves: a full disk here leaves nothing half-done
            tmp.move_into_place()
            for p in pending:
                with contextlib.suppress(FileNotFoundError):   # the image is here already: keep what it knew
                    known = self._read_image(p.id)
                    p.doc["digests"] = sorted({*(known.get("digests") or ()), *(p.doc.get("digests") or ())})
                    p.doc.setdefault("manifest", known.get("manifest"))
                self._write_image(p.doc)
            tags = self._tags()
            for p in pending:
                for ref in p.refs:
                    tags[ref] = p.id
            self._write_tags(tags)

    # -- files ---------------------------------------------------------------------------
    def _image_path(self, image_id: str) -> str:
        return os.path.join(self.images_dir, f"{image_id}.json")

    def _image_ids(self) -> list[str]:
        return sorted(n[:-5] for n in os.listdir(self.images_dir) if n.endswith(".json") and _HEX64.match(n[:-5]))

    def _read_image(self, image_id: str) -> dict:
        with open(self._image_path(image_id)) as f:
            return json.load(f)

    def records(self) -> list[dict]:
        out = []
        for image_id in self._image_ids():
            with contextlib.suppress(FileNotFoundError):
                out.append(self._read_image(image_id))
        return out

    def _write_image(self, doc: dict) -> None:
        atomic_write(self._image_path(doc["id"]), json.dumps(doc, indent=1).encode(), mode=0o644)

    def _tags(self) -> dict[str, str]:
        try:
            with open(self.tags_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _write_tags(self, tags: dict[str, str]) -> None:
        atomic_write(self.tags_path, json.dumps(dict(sorted(tags.items())), indent=1).encode(), mode=0o644)

    def remove_unreached_layers(self, diff_ids: Iterable[str]) -> None:
        """Remove these unpacked layers (hex diff_ids) unless an image reaches them or a pull still
        holds them: what a failed pull had unpacked (layerstage.PullLayers.close)."""
        with self._lock():
            held = self.layer_leases.held()
            reached = {d for doc in self.records() for d in doc["layers"]}
            mounted = _mount_options_text()
            for diff_id in diff_ids:
                path = self.layer_path(diff_id)
                if _HEX64.match(diff_id) and diff_id not in reached | held and not _mounted(path, mounted):
                    shutil.rmtree(path, ignore_errors=True)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The store's lock (every writer takes it), for the layer staging of pulls."""
        return self._lock()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def import_budget(self, cancel: threading.Event | None = None) -> Budget:
        """The most one import may expand to now: max_import_bytes, and never past the free space of
        the store's filesystem less a reserve (the smaller of RESERVE_BYTES and RESERVE_FRACTION)."""
        fs = os.statvfs(self.layers_dir)
        reserve = min(RESERVE_BYTES, int(fs.f_blocks * fs.f_frsize * RESERVE_FRACTION))
        room = fs.f_bavail * fs.f_frsize - reserve
        if room < self.max_import_bytes:
            return Budget(max(room, 0), f"the free space of {self.root} less a reserve of "
                                        f"{format_bytes(reserve)}", cancel)
        return Budget(self.max_import_bytes, "the import size limit of this node", cancel)

    @contextlib.contextmanager
    def _tmp_layers(self, cancel: threading.Event | None = None) -> Iterator["StagedLayers"]:
        tmp = StagedLayers(self, self.import_budget(cancel))
        try:
            yield tmp
        finally:
            tmp.cleanup()

    def _clean_stale_tmp(self) -> None:
        """Remove temporary layer directories of extractions whose process is gone."""
        for name in os.listdir(self.layers_dir):
            if not name.startswith(".tmp-"):
                continue
            pid = name.split("-")[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(self.layers_dir, name), ignore_errors=True)


def _json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except ValueError:
        raise ImageError(f"{what} is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object.")
    return doc


def _tree_size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


async def run_cancellable(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run `fn(*args, cancel=event)` (an import or load) in a worker thread. When the calling trio
    task is cancelled (a daemon shutting down) it returns at once and sets the event: the thread
    stops at its next chunk and removes what it extracted, instead of holding the daemon."""
    cancel = threading.Event()
    try:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs, cancel=cancel),
                                             abandon_on_cancel=True)
    finally:
        cancel.set()


def _mounted(layer: str, mount_options: str) -> bool:
    """Whether the layer is a lower directory of an overlay mount (in /proc/self/mountinfo's text)."""
    return layer + ":" in mount_options or layer + "," in mount_options


def _mount_options_text() -> str:
    try:
        with open("/proc/self/mountinfo") as f:
            return f.read()
    except OSError:
        return ""

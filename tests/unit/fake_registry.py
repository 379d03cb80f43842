"""An in-memory registry (an httpx transport) and an in-memory image store, for the
registry client's and the puller's unit tests."""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import threading
from collections import Counter

import httpx

from swarm.registry import media


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """(gzipped tar, diff_id) of a layer holding `files`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), digest_of(raw.getvalue())


class FakeRegistry:
    """Serves /v2/ from dicts; optionally demands Basic or Bearer auth; counts requests."""

    def __init__(self, auth: str | None = None, users: dict[str, str] | None = None) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}   # (repo, tag|digest) -> (bytes, type)
        self.blobs: dict[str, bytes] = {}
        self.corrupt: set[str] = set()
        self.auth, self.users = auth, users or {}
        self.requests: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.down: set[str] = set()          # hosts whose manifests answer 404 (a mirror without the image)
        self.held: dict[str, object] = {}    # blob digest -> a trio.Event its body waits for
        self.lock = threading.Lock()

    def add_image(self, repo: str, tag: str, layers: list[bytes], diff_ids: list[str],
                  arch: str = "amd64") -> tuple[str, bytes]:
        config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["sh"]},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        self.blobs[digest_of(config)] = config
        for blob in layers:
            self.blobs[digest_of(blob)] = blob
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
            "config": {"mediaType": media.OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [{"mediaType": media.OCI_LAYER_GZIP, "digest": digest_of(b), "size": len(b)} for b in layers],
        }).encode()
        self.put_manifest(repo, tag, manifest, media.OCI_MANIFEST)
        return digest_of(manifest), manifest

    def add_index(self, repo: str, tag: str, entries: list[tuple[str, int, str, str, str]]) -> str:
        """entries: (digest, size, os, architecture, variant)."""
        index = json.dumps({"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [
            {"mediaType": media.OCI_MANIFEST, "digest": d, "size": s,
             "platform": {"os": o, "architecture": a, **({"variant": v} if v else {})}}
            for d, s, o, a, v in entries]}).encode()
        self.put_manifest(repo, tag, index, media.OCI_INDEX)
        return digest_of(index)

    def put_manifest(self, repo: str, tag: str, data: bytes, media_type: str) -> None:
        self.manifests[(repo, tag)] = (data, media_type)
        self.manifests[(repo, digest_of(data))] = (data, media_type)

    # ---- the transport ----

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _authorized(self, request: httpx.Request) -> httpx.Response | None:
        header = request.headers.get("authorization", "")
        if self.auth is None:
            return None
        if self.auth == "basic":
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if self.users.get(user) == password:
                    return None
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="fake"'},
                                  json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
        if header == "Bearer good-token":
            return None
        return httpx.Response(401, headers={"WWW-Authenticate":
                                            'Bearer realm="https://auth.fake/token",service="fake-registry"'},
                              json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        with self.lock:
            self.requests[f"{request.method} {path}"] += 1
            self.hosts.append(request.url.netloc.decode())
        if request.url.host == "auth.fake":
            header = request.headers.get("authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if self.users.get(user) != password:
                    return httpx.Response(401, json={"details": "incorrect username or password"})
                return httpx.Response(200, json={"token": "good-token", "expires_in": 300})
            return httpx.Response(200, json={"token": "anonymous-token"})
        denied = self._authorized(request)
        if denied is not None:
            return denied
        if path == "/v2/":
            return httpx.Response(200, json={})
        repo, kind, ref = path[len("/v2/"):].rsplit("/", 2)
        if kind == "manifests":
            found = None if request.url.netloc.decode() in self.down else self.manifests.get((repo, ref))
            if found is None:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
            data, media_type = found
            body = b"" if request.method == "HEAD" else data
            return httpx.Response(200, content=body, headers={"Content-Type": media_type,
                                                              "Docker-Content-Digest": digest_of(data)})
        if kind == "blobs":
            blob = self.blobs.get(ref)
            if blob is None:
                return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]})
            if ref in self.corrupt:
                blob = blob[:-1] + bytes([blob[-1] ^ 0xFF])
            if request.method == "HEAD":
                return httpx.Response(200, headers={"Content-Length": str(len(blob))})
            return httpx.Response(200, headers={"Content-Length": str(len(blob))},
                                  content=_chunks(blob, held=self.held.get(ref)))
        return httpx.Response(404)


async def _chunks(data: bytes, size: int = 1000, held=None):
    """A streamed body, as a real connection gives one (a bytes body counts as read already);
    `held`: an event the body waits for before its first byte."""
    if held is not None:
        await held.wait()
    for i in range(0, len(data), size):
        yield data[i:i + size]


class MemoryStore:
    """The puller's store, in memory: keeps a blob only when its digest matched. `unpacked` lists
    each image unpack with the blobs stored and the images registered at that moment (which
    shows that it came after the last download and the registration)."""

    def __init__(self) -> None:
        self.unpacked: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        self.on_unpack = None          # called with each image id unpacked (in the unpacking thread)
        self.blobs: dict[str, bytes] = {}
        self.images: dict[str, tuple[str, bytes, bytes]] = {}   # ref -> (digest, manifest, config)
        self.pending: set[str] = set()                          # refs registered, not unpacked yet
        self.digests: dict[tuple[str, str], str] = {}             # (name, digest) -> the image (its ref)
        self.aborted: list[str] = []
        self._unpacking = threading.Lock()                      # one unpack at a time, as the store's

    def has_digest(self, name: str, digest: str) -> str | None:
        return self.digests.get((name, digest))

    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs

    def ingest_blob(self, digest: str, chunks) -> str:
        buf = bytearray()
        try:
            for chunk in chunks:
                buf += chunk
        except BaseException:
            self.aborted.append(digest)
            raise
        actual = digest_of(bytes(buf))
        if actual != digest:
            self.aborted.append(digest)
            return actual
        self.blobs[digest] = bytes(buf)
        return digest

    def add_pulled(self, ref: str, manifest_digest: str, manifest_bytes: bytes, config_bytes: bytes, *,
                   unpack: bool = True) -> str:
        doc = json.loads(manifest_bytes)
        missing = [entry["digest"] for entry in doc["layers"] if entry["digest"] not in self.blobs]
        assert not missing, missing
        self.images[ref] = (manifest_digest, manifest_bytes, config_bytes)
        name = ref.split("@", 1)[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        self.digests[(name, manifest_digest)] = ref
        self.pending.add(ref)
        if unpack:
            self.unpack_image(ref)
        return ref

    def unpack_image(self, image_id: str, *, cancel=None, workers: int = 2) -> None:
        with self._unpacking:
            if image_id not in self.pending:
                return
            self.unpacked.append((image_id, tuple(sorted(self.blobs)), tuple(sorted(self.images))))
            if self.on_unpack is not None:
                self.on_unpack(image_id)
            self.pending.discard(image_id)

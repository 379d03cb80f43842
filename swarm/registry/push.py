"""Push: the blobs of an image the registry lacks, then its manifest.

How this works, as `docker push`: for each blob (the configuration and every
compressed layer) a HEAD asks whether the repository already has it; the
missing ones are uploaded (POST an upload session, PUT the bytes with
?digest=, streamed from the store's file), at most
`max_concurrent_uploads` at a time; last the manifest is PUT under the tag,
which makes the image visible only once everything it names is there.
Cross-repository mounts are not attempted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol, Sequence

import trio

from swarm.api.reference import Reference, parse_image
from swarm.registry.client import CHUNK, Credentials, RegistryClient
from swarm.registry.config import RegistryConfig
from swarm.registry.pull import LayerProgress, ProgressCallback, _short, _unwrap


class BlobSource(Protocol):
    digest: str
    size: int
    path: str        # a file holding exactly the blob's bytes


class PushSource(Protocol):
    """What the store gives for a push (`ImageStore.push_source(ref)`)."""
    manifest: bytes
    media_type: str
    blobs: Sequence[BlobSource]   # the configuration and the layers


@dataclass(frozen=True)
class PushResult:
    ref: Reference
    digest: str
    size: int          # of the manifest, as `docker push` prints "digest: ... size: N"


async def push(ref: Reference | str, source: PushSource, config: RegistryConfig | None = None,
               credentials: Credentials | None = None, *, progress: ProgressCallback | None = None,
               transport: object = None) -> PushResult:
    ref = parse_image(ref) if isinstance(ref, str) else ref
    config = config or RegistryConfig()
    emit = progress or (lambda event: None)
    limiter = trio.CapacityLimiter(max(1, config.max_concurrent_uploads))
    async with RegistryClient(config, credentials, transport=transport) as client:  # type: ignore[arg-type]
        async def one(blob: BlobSource) -> None:
            short = _short(blob.digest)
            async with limiter:
                if await client.blob_exists(ref, blob.digest, push=True):
                    emit(LayerProgress(short, "Layer already exists", blob.size, blob.size))
                    return
                await client.upload_blob(ref, blob.digest, blob.size, lambda: _file_chunks(blob.path),
                                         progress=lambda done, total: emit(LayerProgress(short, "Pushing",
                                                                                         done, total)))
                emit(LayerProgress(short, "Pushed", blob.size, blob.size))

        try:
            async with trio.open_nursery() as nursery:
                for blob in source.blobs:
                    emit(LayerProgress(_short(blob.digest), "Preparing", 0, blob.size))
                    nursery.start_soon(one, blob)
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
        digest = await client.put_manifest(ref, source.manifest, source.media_type)
    return PushResult(ref, digest, len(source.manifest))


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as f:
        while chunk := await f.read(CHUNK):
            yield chunk

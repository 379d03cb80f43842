"""The puller: a reference in, an image in the node's store out.

How this works. `Puller.pull(ref)` first asks the store whether it holds
the digest a pinned reference names: then nothing touches the network.
Otherwise it resolves the manifest (an index resolves further to this
node's platform), fetches the image configuration, and downloads the layer
blobs the store lacks, at most `max_concurrent_downloads` at a time, each
streamed into `store.ingest_blob`, which hashes the chunks as it writes them
and keeps a blob only when the digest matched (the one hash a download
needs: the puller refuses a blob whose digest the store found different).
A layer's byte count is reported at most every 100 ms, as Docker does.
Each layer is unpacked as soon as its blob is stored, while the others still
download (`store.pull_layers().unpack` in a worker thread, at most
`max_concurrent_unpacks` at once: gunzip, sha256 and the writes release the
GIL); a layer the store or another pull has unpacked already is not unpacked
again. Last, `store.add_pulled` registers the image, its layers in place.

Single flight: callers pulling the same reference at once share one pull
(each gets the progress events and the outcome), and two pulls that need the
same blob share its download. If the caller leading a flight is cancelled,
a waiting caller takes the work over instead of failing.

The store is anything with the `PullStore` methods (swarm/runtime/images.py
in the daemon, an in-memory fake in the tests). Its methods are blocking
(they take the store's file lock), so they run in worker threads; a blob's
chunks cross from the network task to the thread through a bounded channel.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import trio

from swarm.api.reference import Reference, parse_image
from swarm.registry.client import Credentials, RegistryClient
from swarm.registry.config import RegistryConfig
from swarm.registry.errors import DigestMismatch, RegistryError, RegistryProtocolError
from swarm.registry.media import Descriptor, ImageManifest, Index, parse_manifest, select_platform

MAX_CONFIG_BYTES = 8 << 20
# A layer's byte count is reported at most this often (Docker's progress reader: every 100 ms):
# each report wakes whoever follows the pull (a CLI polling the daemon), and a count per
# received chunk made the followers use more CPU than the download itself.
PROGRESS_INTERVAL = 0.1


class PullStore(Protocol):
    """What the puller needs of a node's image store (all blocking calls).

    `has_digest(name, digest)`: an image NAME@DIGEST is registered (name familiar,
    e.g. "busybox" or "127.0.0.1:5000/team/app"; digest the one a tag resolved to).
    `has_blob(digest)`: the compressed blob is in the store, whole and verified.
    `ingest_blob(digest, chunks)`: write the chunks, hashing them, and keep the blob only
    when they hash to `digest`; returns the digest they hash to (the puller refuses any
    other); an exception raised by `chunks` aborts and leaves nothing.
    `pull_layers()`: an object whose `unpack(index, diff_id, layer)` (layer: the manifest's
    descriptor as a dict) unpacks one layer from its stored blob, or finds it unpacked,
    called from several threads at once, and whose `close()` ends the pull's hold on them
    (a layer no image reaches is removed then).
    `add_pulled(ref, manifest_digest, manifest_bytes, config_bytes)`: unpack the
    missing layers and register the image; `ref` is familiar ("busybox:latest",
    "host:5000/app:1" or "NAME@sha256:..." for a digest-only pull),
    `manifest_digest` the digest the reference resolved to (an index's digest for
    a multi-platform image, as Docker's RepoDigests), `manifest_bytes` this
    platform's image manifest."""

    def has_digest(self, name: str, digest: str) -> bool: ...

    def has_blob(self, digest: str) -> bool: ...

    def ingest_blob(self, digest: str, chunks: Iterable[bytes]) -> str: ...

    def pull_layers(self) -> "LayerUnpacker": ...

    def add_pulled(self, ref: str, manifest_digest: str, manifest_bytes: bytes, config_bytes: bytes) -> object: ...


class LayerUnpacker(Protocol):
    """One pull's layers (PullStore.pull_layers); blocking calls."""

    def unpack(self, index: int, diff_id: str, layer: dict) -> object: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LayerProgress:
    """One step of one layer, as `docker pull` shows it: status is one of
    "Pulling fs layer", "Already exists", "Downloading", "Download complete",
    "Pull complete"."""
    layer: str        # the blob digest's first 12 hex digits, as Docker shows it
    status: str
    current: int = 0
    total: int = 0


ProgressCallback = Callable[[LayerProgress], None]


@dataclass(frozen=True)
class PullResult:
    ref: Reference          # the reference pulled, normalized
    digest: str             # what it resolved to (index digest for a multi-platform image)
    downloaded: bool        # False when the store already held the digest (no network)
    image: object = None    # what store.add_pulled returned


class _Flight:
    """One piece of work several callers wait for."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.listeners: list[ProgressCallback] = []

    def emit(self, event: LayerProgress) -> None:
        for listener in list(self.listeners):
            listener(event)


class Puller:
    def __init__(self, store: PullStore, config: RegistryConfig | None = None,
                 credentials: Credentials | None = None, *, transport: object = None,
                 clock: Callable[[], float] = time.monotonic, max_concurrent_unpacks: int = 2) -> None:
        self.store = store
        self._clock = clock           # paces the byte counts of progress (PROGRESS_INTERVAL)
        self._transport = transport   # an httpx transport (tests: a fake registry)
        self.config = config or RegistryConfig()
        self.credentials = credentials
        self._pulls: dict[str, _Flight] = {}
        self._blobs: dict[str, _Flight] = {}
        self._limiter = trio.CapacityLimiter(max(1, self.config.max_concurrent_downloads))
        # Unpacking is CPU work in threads: as many as the cores a node lends it, not one per download.
        self._unpack_limiter = trio.CapacityLimiter(max(1, max_concurrent_unpacks))

    async def pull(self, ref: Reference | str, *, progress: ProgressCallback | None = None,
                   credentials: Credentials | None = None) -> PullResult:
        """Pull `ref` into the store (see the module doc); raises RegistryError subclasses."""
        ref = parse_image(ref) if isinstance(ref, str) else ref
        if ref.digest and await trio.to_thread.run_sync(self.store.has_digest, ref.familiar_name, ref.digest):
            return PullResult(ref, ref.digest, False)
        key = str(ref)
        while True:
            flight = self._pulls.get(key)
            if flight is None:
                break
            if progress is not None:
                flight.listeners.append(progress)
            await flight.done.wait()
            if progress is not None and progress in flight.listeners:
                flight.listeners.remove(progress)
            if flight.abandoned:
                continue   # its leader was cancelled: lead the next try
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]
        flight = self._pulls[key] = _Flight()
        if progress is not None:
            flight.listeners.append(progress)
        try:
            flight.result = await self._pull(ref, flight, credentials or self.credentials)
            return flight.result  # type: ignore[return-value]
        except BaseException as exc:
            error = _unwrap(exc)
            if isinstance(error, trio.Cancelled):
                flight.abandoned = True
                raise
            flight.error = error
            if error is exc:
                raise
            raise error from None
        finally:
            del self._pulls[key]
            flight.done.set()

    async def _pull(self, ref: Reference, flight: _Flight, credentials: Credentials | None) -> PullResult:
        async with RegistryClient(self.config, credentials, transport=self._transport) as client:  # type: ignore[arg-type]
            top = await client.get_manifest(ref)
            doc = parse_manifest(top.data, top.media_type)
            manifest_bytes = top.data
            if isinstance(doc, Index):
                entry = select_platform(doc, self.config.platform)
                platform_ref = ref.name_only().with_digest(entry.digest)
                fetched = await client.get_manifest(platform_ref)
                doc = parse_manifest(fetched.data, fetched.media_type)
                manifest_bytes = fetched.data
                if not isinstance(doc, ImageManifest):
                    raise RegistryProtocolError(f"the manifest list of {ref.familiar()} names another list")
            assert isinstance(doc, ImageManifest)
            if doc.config.size > MAX_CONFIG_BYTES:
                raise RegistryProtocolError(f"the image configuration of {ref.familiar()} is larger than 8 MiB")
            config_parts: list[bytes] = []
            await client.fetch_blob(ref, doc.config.digest, config_parts.append, size=doc.config.size)
            config_bytes = b"".join(config_parts)
            diff_ids = _diff_ids(config_bytes, len(doc.layers))
            for layer in doc.layers:
                flight.emit(LayerProgress(_short(layer.digest), "Pulling fs layer", 0, layer.size))
            layers = await trio.to_thread.run_sync(self.store.pull_layers)
            try:
                async with trio.open_nursery() as nursery:
                    for i, layer in enumerate(doc.layers):
                        nursery.start_soon(self._layer, client, ref, i, layer, diff_ids[i], layers, flight)
                name_ref = ref.familiar() if not ref.tag else ref.name_only().with_tag(ref.tag).familiar()
                image = await trio.to_thread.run_sync(self.store.add_pulled, name_ref, top.digest, manifest_bytes,
                                                      config_bytes)
            finally:
                with trio.CancelScope(shield=True):    # a failed or cancelled pull leaves no layer behind
                    await trio.to_thread.run_sync(layers.close)
        return PullResult(ref, top.digest, True, image)

    async def _layer(self, client: RegistryClient, ref: Reference, index: int, layer: Descriptor,
                     diff_id: str | None, layers: LayerUnpacker, flight: _Flight) -> None:
        """Download one layer's blob (unless the store or another pull has it), then unpack it."""
        exists = await self._blob(client, ref, layer, flight)
        if diff_id is not None:      # None: a configuration add_pulled refuses in its own words
            desc = {"digest": layer.digest, "mediaType": layer.media_type, "size": layer.size}
            await trio.to_thread.run_sync(layers.unpack, index, diff_id, desc, limiter=self._unpack_limiter)
        if not exists:
            flight.emit(LayerProgress(_short(layer.digest), "Pull complete", layer.size, layer.size))

    async def _blob(self, client: RegistryClient, ref: Reference, layer: Descriptor, flight: _Flight) -> bool:
        """Bring the layer's blob into the store; True when it was there already."""
        short = _short(layer.digest)
        if await trio.to_thread.run_sync(self.store.has_blob, layer.digest):
            flight.emit(LayerProgress(short, "Already exists", layer.size, layer.size))
            return True
        blob = self._blobs.get(layer.digest)
        while blob is not None:       # another pull downloads it: wait for that one
            await blob.done.wait()
            if not blob.abandoned:
                if blob.error is not None:
                    raise blob.error
                flight.emit(LayerProgress(short, "Download complete", layer.size, layer.size))
                return False
            blob = self._blobs.get(layer.digest)
        blob = self._blobs[layer.digest] = _Flight()
        try:
            async with self._limiter:
                await self._download(client, ref, layer, flight)
            flight.emit(LayerProgress(short, "Download complete", layer.size, layer.size))
            return False
        except BaseException as exc:
            error = _unwrap(exc)
            if isinstance(error, trio.Cancelled):
                blob.abandoned = True
            else:
                blob.error = error
            raise
        finally:
            del self._blobs[layer.digest]
            blob.done.set()

    async def _download(self, client: RegistryClient, ref: Reference, layer: Descriptor, flight: _Flight) -> None:
        """Network in this task, disk and hashing in a worker thread (the store's ingest_blob), a
        bounded channel between: hashing here held up the event loop, which receives every
        download of the node."""
        send, receive = trio.open_memory_channel[object](4)    # chunks of BLOB_CHUNK: 4 MiB in flight at most
        failure: list[BaseException] = []
        short = _short(layer.digest)
        last_report = [-PROGRESS_INTERVAL]

        def progress(done: int, total: int) -> None:
            now = self._clock()
            if done != total and now - last_report[0] < PROGRESS_INTERVAL:
                return
            last_report[0] = now
            flight.emit(LayerProgress(short, "Downloading", done, total))

        async def fetch() -> None:
            async with send:
                try:
                    await client.fetch_blob(ref, layer.digest, send.send, size=layer.size, progress=progress,
                                            verify=False)
                except RegistryError as exc:
                    failure.append(exc)
                    await send.send(_Abort(exc))

        def chunks() -> Iterator[bytes]:
            while True:
                try:
                    item = trio.from_thread.run(receive.receive)
                except trio.EndOfChannel:
                    return
                if isinstance(item, _Abort):
                    raise item.error
                yield item  # type: ignore[misc]

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                actual = await trio.to_thread.run_sync(self.store.ingest_blob, layer.digest, chunks())
                await receive.aclose()   # a store that stopped reading early must not hold the fetch
        except BaseException as exc:
            error = _unwrap(exc)
            if isinstance(error, trio.Cancelled):
                raise
            if failure:
                raise failure[0] from None
            if isinstance(error, trio.BrokenResourceError):
                raise RegistryProtocolError(f"the store stopped reading blob {layer.digest}") from None
            raise error from None
        if failure:   # a store that swallowed the abort: the blob is still refused
            raise failure[0]
        if actual != layer.digest:    # the store kept nothing of it
            raise DigestMismatch(layer.digest, str(actual))


def _diff_ids(config: bytes, count: int) -> list[str | None]:
    """The configuration's rootfs.diff_ids, one per layer; Nones when they are not `count` digests
    (add_pulled refuses such a configuration with its own sentence, after the downloads)."""
    try:
        ids = json.loads(config)["rootfs"]["diff_ids"]
    except (ValueError, TypeError, KeyError):
        return [None] * count
    if not isinstance(ids, list) or len(ids) != count or not all(isinstance(d, str) for d in ids):
        return [None] * count
    return ids


class _Abort:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _unwrap(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups: the one the user should read."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)] or list(exc.exceptions)
        registry = [e for e in inner if isinstance(e, RegistryError)]
        exc = (registry or inner)[0]
    return exc

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
When every blob is stored, `store.add_pulled(..., unpack=False)` registers
the image at once, its layers listed as still to unpack, and the pull is
done for a caller that asked for no more (`unpacked=False`: `swarm image
pull`, as skopeo and containerd's fetch end with the blobs). The layers are
then unpacked (`store.unpack_image`, 2 at a time, in worker threads) in the
background when the puller was given a nursery's `background` to run it in,
else before the pull returns; a caller with `unpacked=True` (a task about to
start) waits for them either way. Unpacking only after the last download
keeps the downloads off the CPU the unpacking wants: on 2 cores, unpacking
under the downloads made them take about twice as long. A layer the store
holds unpacked already (another image's) is not unpacked again, and one that
another thread is unpacking is waited for.

Single flight: callers pulling the same reference at once share one pull
(each gets the progress events and the outcome), and two pulls that need the
same blob share its download; a layer is unpacked once per process (the
store's lock per diff_id). If the caller leading a flight is cancelled, a
waiting caller takes the work over instead of failing.

The store is anything with the `PullStore` methods (swarm/runtime/images.py
in the daemon, an in-memory fake in the tests). Its methods are blocking
(they take the store's file lock), so they run in worker threads; a blob's
chunks cross from the network task to the thread through a bounded channel.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import trio

from swarm.api.reference import Reference, parse_image
from swarm.registry.client import Credentials, RegistryClient
from swarm.registry.config import RegistryConfig
from swarm.registry.errors import DigestMismatch, RegistryError, RegistryProtocolError
from swarm.registry.media import Descriptor, ImageManifest, Index, parse_manifest, select_platform

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 8 << 20
# A layer's byte count is reported at most this often (Docker's progress reader: every 100 ms):
# each report wakes whoever follows the pull (a CLI polling the daemon), and a count per
# received chunk made the followers use more CPU than the download itself.
PROGRESS_INTERVAL = 0.1


class PullStore(Protocol):
    """What the puller needs of a node's image store (all blocking calls).

    `has_digest(name, digest)`: the image id when an image NAME@DIGEST is registered (name
    familiar, e.g. "busybox" or "127.0.0.1:5000/team/app"; digest the one a tag resolved to).
    `has_blob(digest)`: the compressed blob is in the store, whole and verified.
    `ingest_blob(digest, chunks)`: write the chunks, hashing them, and keep the blob only
    when they hash to `digest`; returns the digest they hash to (the puller refuses any
    other); an exception raised by `chunks` aborts and leaves nothing.
    `add_pulled(ref, manifest_digest, manifest_bytes, config_bytes, unpack=False)`: register
    the image, its layer blobs stored, the layers the store lacks listed as still to unpack;
    returns the image id. `ref` is familiar ("busybox:latest", "host:5000/app:1" or
    "NAME@sha256:..." for a digest-only pull), `manifest_digest` the digest the reference
    resolved to (an index's digest for a multi-platform image, as Docker's RepoDigests),
    `manifest_bytes` this platform's image manifest.
    `unpack_image(image_id, cancel=EVENT, workers=N)`: unpack the layers still to unpack (none:
    returns at once), N at a time; called from several threads at once; stops when `cancel`
    is set."""

    def has_digest(self, name: str, digest: str) -> object: ...

    def has_blob(self, digest: str) -> bool: ...

    def ingest_blob(self, digest: str, chunks: Iterable[bytes]) -> str: ...

    def add_pulled(self, ref: str, manifest_digest: str, manifest_bytes: bytes, config_bytes: bytes, *,
                   unpack: bool = True) -> object: ...

    def unpack_image(self, image_id: str, *, cancel: threading.Event | None = None, workers: int = 2) -> None: ...


# Runs `fn(*args)` in a nursery that outlives the pull; False when it cannot (not running).
Background = Callable[..., bool]


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
    image: object = None    # what store.add_pulled returned (the image id), or has_digest


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
                 clock: Callable[[], float] = time.monotonic, max_concurrent_unpacks: int = 2,
                 background: Background | None = None) -> None:
        self.store = store
        self._background = background  # where a pull's unpacking runs on (None: before the pull returns)
        self._clock = clock           # paces the byte counts of progress (PROGRESS_INTERVAL)
        self._transport = transport   # an httpx transport (tests: a fake registry)
        self.config = config or RegistryConfig()
        self.credentials = credentials
        self._pulls: dict[str, _Flight] = {}
        self._blobs: dict[str, _Flight] = {}
        self._limiter = trio.CapacityLimiter(max(1, self.config.max_concurrent_downloads))
        # Unpacking is CPU work in threads: as many as the cores a node lends it, not one per download.
        self._unpack_workers = max(1, max_concurrent_unpacks)

    async def pull(self, ref: Reference | str, *, progress: ProgressCallback | None = None,
                   credentials: Credentials | None = None, unpacked: bool = True) -> PullResult:
        """Pull `ref` into the store (see the module doc); raises RegistryError subclasses, and
        the store's errors. `unpacked`: return only once the image's layers are unpacked too."""
        result = await self._pull_shared(ref, progress, credentials)
        if unpacked and isinstance(result.image, str):
            await self.unpack(result.image)
        return result

    async def unpack(self, image_id: str) -> None:
        """Unpack what the image still lacks (nothing: at once), or wait for whoever unpacks it.
        Cancelled, the worker threads stop at their next piece and leave nothing half-done."""
        cancel = threading.Event()
        try:
            await trio.to_thread.run_sync(functools.partial(self.store.unpack_image, image_id, cancel=cancel,
                                                            workers=self._unpack_workers),
                                          abandon_on_cancel=True)
        finally:
            cancel.set()

    async def unpack_or_log(self, image_id: str) -> None:
        """The background unpacking of a pull that returned: a failure is logged, and told again
        (and retried) when a task needs the image (the store's resolve)."""
        try:
            await self.unpack(image_id)
        except Exception as exc:     # noqa: BLE001 - nobody waits for this one: said in the log
            log.warning("unpacking the layers of image %s failed: %s", image_id[:12], exc)

    async def _pull_shared(self, ref: Reference | str, progress: ProgressCallback | None,
                           credentials: Credentials | None) -> PullResult:
        ref = parse_image(ref) if isinstance(ref, str) else ref
        if ref.digest:
            found = await trio.to_thread.run_sync(self.store.has_digest, ref.familiar_name, ref.digest)
            if found:
                return PullResult(ref, ref.digest, False, found)
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
            for layer in doc.layers:
                flight.emit(LayerProgress(_short(layer.digest), "Pulling fs layer", 0, layer.size))
            async with trio.open_nursery() as nursery:
                for layer in doc.layers:
                    nursery.start_soon(self._blob, client, ref, layer, flight)
            name_ref = ref.familiar() if not ref.tag else ref.name_only().with_tag(ref.tag).familiar()
            image = await trio.to_thread.run_sync(functools.partial(
                self.store.add_pulled, name_ref, top.digest, manifest_bytes, config_bytes, unpack=False))
        for layer in doc.layers:      # stored, verified and registered; unpacked after (the module doc)
            flight.emit(LayerProgress(_short(layer.digest), "Pull complete", layer.size, layer.size))
        if isinstance(image, str):
            later = self._background is not None and self._background(self.unpack_or_log, image)
            if not later:
                await self.unpack(image)
        return PullResult(ref, top.digest, True, image)

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
                    # The limit holds the network part only: the next download starts while this
                    # one's last chunks are hashed, written and fsync'ed (its slot held through
                    # those, 5 blobs took two rounds of network and disk one after the other).
                    async with self._limiter:
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

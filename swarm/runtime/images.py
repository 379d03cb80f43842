"""A node's content-addressed image store (STATE_DIR/images).

Layout under the root:

    layers/<diff_id>/      one unpacked layer (overlayfs form: whiteouts are 0/0
                           character devices, opaque directories carry
                           trusted.overlay.opaque=y), named by the sha256 of its
                           uncompressed tar
    images/<id>.json       {id, layers: [diff_id, ... bottom first], layer_sizes,
                           config: {Cmd, Entrypoint, Env, WorkingDir, User, StopSignal,
                           ExposedPorts, Volumes, Labels, Healthcheck}, created, size}
    tags.json              {"NAME:TAG": id}
    lock                   flock'ed by every writer (CLI and daemon may both write)

An image id is the sha256 of its config document, as Docker computes it.
Layers stay separate; a container's rootfs stacks them with one overlay mount.
Archives are extracted into layers/.tmp-* directories first and moved into
place only when every layer of the archive was accepted, so a refused archive
leaves nothing behind.

Imports are bounded: only regular files are read (a device or fifo would never
end); what an import expands to may not pass `max_import_bytes` nor the free
space of the store's filesystem less a reserve (extract.Budget); and an import
takes a cancel flag (`run_cancellable` sets it when the trio caller is
cancelled), so a daemon shutting down is not held by one.
"""
from __future__ import annotations

import bz2
import contextlib
import datetime
import fcntl
import functools
import gzip
import hashlib
import json
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Callable, Iterator, TypeVar

import trio

from raft.fsutil import atomic_write
from swarm.runtime.errors import ImageError
from swarm.api.options import parse_signal
from swarm.runtime.extract import Budget, extract_layer, format_bytes

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PLATFORM = ("linux", "amd64")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_IMPORT_BYTES = 20 << 30      # what one import or load may expand to, at most
RESERVE_BYTES = 1 << 30          # free space an import leaves on the store's filesystem: the smaller
RESERVE_FRACTION = 0.05          # of these two, so that a small disk can still take images
MAX_METADATA_BYTES = 64 << 20    # a manifest, index or configuration read into memory
T = TypeVar("T")


def normalize_ref(ref: str) -> str:
    """'NAME[:TAG]' -> 'NAME:TAG' (tag defaults to latest); raises ImageError when malformed."""
    name, tag = ref, "latest"
    colon, slash = ref.rfind(":"), ref.rfind("/")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1:]
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if not _NAME.match(name) or not _TAG.match(tag):
        raise ImageError(f"{ref!r} is not a valid image reference (expected NAME[:TAG], lowercase).")
    return f"{name}:{tag}"


@dataclass(frozen=True)
class Healthcheck:
    """The image's HEALTHCHECK, as Docker stores it (durations in nanoseconds; 0 = the default)."""
    test: tuple[str, ...] = ()        # ["NONE"] | ["CMD", arg...] | ["CMD-SHELL", command]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Image:
    id: str
    layers: tuple[str, ...]           # diff_ids, bottom layer first
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    created: float = 0.0
    size: int = 0
    user: str = ""                    # USER: "name", "uid", "name:group", "uid:gid"; "" = root
    stop_signal: str = ""             # STOPSIGNAL as written ("SIGQUIT", "3"); "" = SIGTERM
    exposed_ports: tuple[str, ...] = ()   # EXPOSE: "80/tcp", "53/udp"
    volumes: tuple[str, ...] = ()     # VOLUME: container paths
    healthcheck: Healthcheck | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def from_json(data: dict) -> "Image":
        cfg = data.get("config") or {}
        health = cfg.get("Healthcheck")
        return Image(id=data["id"], layers=tuple(data["layers"]), cmd=tuple(cfg.get("Cmd") or ()),
                     entrypoint=tuple(cfg.get("Entrypoint") or ()), env=tuple(cfg.get("Env") or ()),
                     working_dir=cfg.get("WorkingDir") or "", created=float(data.get("created", 0.0)),
                     size=int(data.get("size", 0)), user=cfg.get("User") or "",
                     stop_signal=cfg.get("StopSignal") or "", exposed_ports=tuple(cfg.get("ExposedPorts") or ()),
                     volumes=tuple(cfg.get("Volumes") or ()),
                     healthcheck=Healthcheck(**{k: tuple(v) if k == "test" else v for k, v in health.items()})
                     if health else None,
                     labels=dict(cfg.get("Labels") or {}))


@dataclass
class _Pending:
    """An image read from an archive, its layers extracted but not yet in the store."""
    id: str
    doc: dict
    refs: list[str]


def _parse_time(text: object) -> float:
    if not isinstance(text, str) or not text:
        return 0.0
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", text)
    if not m:
        return 0.0
    base = datetime.datetime.fromisoformat(m.group(1) + (m.group(3) or "Z").replace("Z", "+00:00"))
    return base.timestamp() + (float(m.group(2)) if m.group(2) else 0.0)


_EXPOSED_PORT = re.compile(r"^\d{1,5}(-\d{1,5})?(/(tcp|udp|sctp))?$", re.IGNORECASE)
_HEALTH_DURATIONS = {"Interval": "interval", "Timeout": "timeout", "StartPeriod": "start_period",
                     "StartInterval": "start_interval"}


def _image_config(cfg: dict) -> dict:
    """The parts of an image's config the runtime uses, checked: a malformed one refuses the import."""
    def bad(what: str) -> ImageError:
        return ImageError(f"The image configuration is malformed ({what}).")

    def strings(value: object, name: str) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(f"{name} must be a list of strings")
        return value

    def text(value: object, name: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str) or "\n" in value or "\0" in value:
            raise bad(f"{name} must be one line of text")
        return value

    def keys(value: object, name: str) -> list[str]:
        # ExposedPorts and Volumes are sets written as objects whose values are {}.
        if value is None:
            return []
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad(f"{name} must be an object")
        return sorted(value)

    out: dict = {"Cmd": strings(cfg.get("Cmd"), "Cmd"), "Entrypoint": strings(cfg.get("Entrypoint"), "Entrypoint"),
                 "Env": strings(cfg.get("Env"), "Env"), "WorkingDir": text(cfg.get("WorkingDir"), "WorkingDir")}
    out["User"] = text(cfg.get("User"), "User")
    stop_signal = text(cfg.get("StopSignal"), "StopSignal")
    if stop_signal:
        try:
            parse_signal(stop_signal)
        except ValueError as exc:
            raise bad(f"StopSignal: {exc}") from None
    out["StopSignal"] = stop_signal
    ports = keys(cfg.get("ExposedPorts"), "ExposedPorts")
    for port in ports:
        if not _EXPOSED_PORT.match(port):
            raise bad(f"the exposed port {port!r} is not PORT[/PROTOCOL]")
    out["ExposedPorts"] = [p if "/" in p else p + "/tcp" for p in ports]
    volumes = keys(cfg.get("Volumes"), "Volumes")
    for volume in volumes:
        if not volume.startswith("/") or "\0" in volume:
            raise bad(f"the volume {volume!r} is not an absolute path")
    out["Volumes"] = volumes
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise bad("Labels must map strings to strings")
    out["Labels"] = dict(labels)
    out["Healthcheck"] = _healthcheck(cfg.get("Healthcheck"), bad)
    return out


def _healthcheck(value: object, bad: Callable[[str], ImageError]) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad("Healthcheck must be an object")
    test = value.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise bad("Healthcheck.Test must be a list of strings")
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise bad(f"Healthcheck.Test starts with {test[0]!r}, not NONE, CMD or CMD-SHELL")
    out: dict = {"test": list(test)}
    for name, key in (*_HEALTH_DURATIONS.items(), ("Retries", "retries")):
        number = value.get(name) or 0
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise bad(f"Healthcheck.{name} must be a whole number, not negative")
        out[key] = number
    return out


class ImageStore:
    def __init__(self, root: str, *, max_import_bytes: int = MAX_IMPORT_BYTES) -> None:
        self.root = os.path.abspath(root)
        self.max_import_bytes = max_import_bytes
        self.layers_dir = os.path.join(self.root, "layers")
        self.images_dir = os.path.join(self.root, "images")
        self.tags_path = os.path.join(self.root, "tags.json")
        for d in (self.root, self.layers_dir, self.images_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self._clean_stale_tmp()

    # -- reading -------------------------------------------------------------------------
    def layer_path(self, diff_id: str) -> str:
        return os.path.join(self.layers_dir, diff_id)

    def resolve(self, ref: str) -> Image:
        """An image by NAME[:TAG], id, 'sha256:'id, or unique id prefix."""
        tags = self._tags()
        try:
            image_id = tags.get(normalize_ref(ref))
        except ImageError:
            image_id = None
        if image_id is None:
            key = ref[len("sha256:"):] if ref.startswith("sha256:") else ref
            if re.fullmatch(r"[0-9a-f]{1,64}", key):
                matches = [i for i in self._image_ids() if i.startswith(key)]
                if len(matches) > 1:
                    raise ImageError(f"The image id prefix {ref!r} is ambiguous; give more characters.")
                image_id = matches[0] if matches else None
        if image_id is None:
            raise ImageError(f"image {ref} not found")
        try:
            return Image.from_json(self._read_image(image_id))
        except FileNotFoundError:
            raise ImageError(f"image {ref} not found") from None

    def list(self) -> list[dict]:
        """One row per tag (untagged images once, ref '<none>'): {ref, id, size, created}."""
        by_id: dict[str, list[str]] = {}
        for ref, image_id in self._tags().items():
            by_id.setdefault(image_id, []).append(ref)
        rows = []
        for image_id in self._image_ids():
            try:
                doc = self._read_image(image_id)
            except FileNotFoundError:
                continue
            for ref in sorted(by_id.get(image_id, ["<none>"])):
                rows.append({"ref": ref, "id": image_id, "size": int(doc.get("size", 0)),
                             "created": float(doc.get("created", 0.0))})
        rows.sort(key=lambda r: (r["ref"] == "<none>", r["ref"], r["id"]))
        return rows

    # -- writing -------------------------------------------------------------------------
    def import_rootfs(self, src: str | BinaryIO, ref: str | None, cmd: list[str] | tuple[str, ...] | None = None,
                      *, now: float | None = None, cancel: threading.Event | None = None) -> str:
        """Import a root filesystem tar (maybe compressed) as a one-layer image, like `docker import`.
        `src` is the path of a regular file or an open stream; `cancel` stops it (ImageError)."""
        norm = normalize_ref(ref) if ref else None
        created = time.time() if now is None else now
        with self._tmp_layers(cancel) as tmp:
            with _open_source(src) as raw:
                diff_id, size = tmp.extract(raw)
            iso = datetime.datetime.fromtimestamp(created, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            cfg = {"Cmd": list(cmd) if cmd else None, "Entrypoint": None, "Env": [DEFAULT_PATH], "WorkingDir": ""}
            config_doc = {"architecture": _PLATFORM[1], "os": _PLATFORM[0], "created": iso, "config": cfg,
                          "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}
            blob = json.dumps(config_doc, sort_keys=True, separators=(",", ":")).encode()
            image_id = hashlib.sha256(blob).hexdigest()
            doc = {"id": image_id, "layers": [diff_id], "layer_sizes": [size], "config": cfg,
                   "created": created, "size": size}
            self._commit(tmp, [_Pending(image_id, doc, [norm] if norm else [])])
        return image_id

    def load_archive(self, path: str, *, cancel: threading.Event | None = None) -> list[str]:
        """Load a `docker save` archive or an OCI image layout archive (a regular file, maybe
        compressed); returns the refs loaded (an image without a name is returned as its id)."""
        with _open_source(path) as f, self._tmp_layers(cancel) as tmp:
            try:
                outer = tarfile.open(fileobj=_GuardedFile(_decompressed(f), tmp.budget), mode="r:")
            except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
                raise ImageError(f"{path} is not a readable image archive ({exc}).") from None
            with outer:
                return self._load(path, outer, tmp)

    def _load(self, path: str, outer: tarfile.TarFile, tmp: "_TmpLayers") -> list[str]:
        try:
            members = {_member_key(m.name): m for m in outer.getmembers()}
            reader = _ArchiveReader(outer, members, path)
            if "manifest.json" in members:
                pending = self._read_docker_save(reader, tmp)
            elif "index.json" in members and "oci-layout" in members:
                pending = self._read_oci_layout(reader, tmp)
            else:
                raise ImageError(f"{path} is neither a docker save archive nor an OCI image layout archive.")
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
            raise ImageError(f"{path} is not a readable image archive ({exc}).") from None
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            raise ImageError(f"{path} has a malformed manifest or configuration ({exc!r}).") from None
        if not pending:
            raise ImageError(f"{path} contains no image.")
        self._commit(tmp, pending)
        refs: list[str] = []
        for p in pending:
            refs.extend(p.refs or [p.id])
        return refs

    def tag(self, source: str, ref: str) -> None:
        image = self.resolve(source)
        norm = normalize_ref(ref)
        with self._lock():
            tags = self._tags()
            tags[norm] = image.id
            self._write_tags(tags)

    def remove(self, ref: str) -> list[str]:
        """Untag `ref` (or, given an id, every tag of that image); delete images left without
        a tag and layers no image uses. Returns Docker-style 'Untagged: X' / 'Deleted: ID' lines."""
        image = self.resolve(ref)
        out: list[str] = []
        with self._lock():
            tags = self._tags()
            try:
                norm = normalize_ref(ref)
            except ImageError:
                norm = None
            if norm is not None and tags.get(norm) == image.id:
                del tags[norm]
                out.append(f"Untagged: {norm}")
            else:
                for t in [t for t, i in tags.items() if i == image.id]:
                    del tags[t]
                    out.append(f"Untagged: {t}")
            self._write_tags(tags)
            if image.id not in tags.values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._image_path(image.id))
                out.append(f"Deleted: {image.id}")
            out.extend(self._collect_layers())
        return out

    def prune(self) -> list[str]:
        """Delete layers that no image uses and no container has mounted any more."""
        with self._lock():
            return self._collect_layers()

    # -- archives ------------------------------------------------------------------------
    def _read_docker_save(self, reader: "_ArchiveReader", tmp: "_TmpLayers") -> list[_Pending]:
        manifest = reader.json("manifest.json")
        if not isinstance(manifest, list):
            raise ImageError(f"{reader.path}: manifest.json is not a list of images.")
        pending = []
        for entry in manifest:
            config_blob = reader.bytes(entry.get("Config", ""))
            config = _loads(config_blob, "the image configuration")
            diff_ids = _diff_ids(config)
            layer_names = entry.get("Layers") or []
            if len(layer_names) != len(diff_ids):
                raise ImageError(f"{reader.path}: the manifest lists {len(layer_names)} layers "
                                 f"but the image configuration {len(diff_ids)}.")
            sizes = []
            for i, (name, diff_id) in enumerate(zip(layer_names, diff_ids)):
                sizes.append(tmp.ensure(diff_id, lambda name=name: reader.open(name), i))
            refs = [normalize_ref(r) for r in entry.get("RepoTags") or []]
            pending.append(self._pending(config_blob, config, diff_ids, sizes, refs))
        return pending

    def _read_oci_layout(self, reader: "_ArchiveReader", tmp: "_TmpLayers") -> list[_Pending]:
        index = reader.json("index.json")
        pending = []
        for desc in index.get("manifests") or []:
            desc = self._pick_manifest(reader, desc)
            if desc is None:
                continue
            manifest = _loads(reader.blob(desc), "an image manifest")
            config_blob = reader.blob(manifest.get("config") or {})
            config = _loads(config_blob, "the image configuration")
            diff_ids = _diff_ids(config)
            layers = manifest.get("layers") or []
            if len(layers) != len(diff_ids):
                raise ImageError(f"{reader.path}: the manifest lists {len(layers)} layers "
                                 f"but the image configuration {len(diff_ids)}.")
            sizes = []
            for i, (layer, diff_id) in enumerate(zip(layers, diff_ids)):
                blob_name = reader.blob_name(layer)
                sizes.append(tmp.ensure(diff_id, lambda n=blob_name: reader.open(n), i,
                                        raw_digest=blob_name.rsplit("/", 1)[-1]))
            annotations = {**(desc.get("annotations") or {})}
            name = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
            refs = [normalize_ref(name)] if name and (":" in name or "/" in name) else []
            pending.append(self._pending(config_blob, config, diff_ids, sizes, refs))
        return pending

    def _pick_manifest(self, reader: "_ArchiveReader", desc: dict) -> dict | None:
        media = desc.get("mediaType", "")
        if media.endswith("image.index.v1+json") or media.endswith("manifest.list.v2+json"):
            nested = _loads(reader.blob(desc), "an image index").get("manifests") or []
            for sub in nested:
                plat = sub.get("platform") or {}
                if (plat.get("os"), plat.get("architecture")) == _PLATFORM:
                    return {**sub, "annotations": {**(desc.get("annotations") or {}), **(sub.get("annotations") or {})}}
            return None
        return desc

    @staticmethod
    def _pending(config_blob: bytes, config: dict, diff_ids: list[str], sizes: list[int], refs: list[str]) -> _Pending:
        image_id = hashlib.sha256(config_blob).hexdigest()
        cfg = _image_config(config.get("config") or {})
        doc = {"id": image_id, "layers": diff_ids, "layer_sizes": sizes, "config": cfg,
               "created": _parse_time(config.get("created")), "size": sum(sizes)}
        return _Pending(image_id, doc, refs)

    # -- commit and garbage collection ---------------------------------------------------
    def _commit(self, tmp: "_TmpLayers", pending: list[_Pending]) -> None:
        with self._lock():
            tmp.move_into_place()
            for p in pending:
                atomic_write(self._image_path(p.id), json.dumps(p.doc, indent=1).encode(), mode=0o644)
            tags = self._tags()
            for p in pending:
                for ref in p.refs:
                    tags[ref] = p.id
            self._write_tags(tags)

    def _collect_layers(self) -> list[str]:
        used = set()
        for image_id in self._image_ids():
            with contextlib.suppress(FileNotFoundError):
                used.update(self._read_image(image_id)["layers"])
        mounted = _mount_options_text()
        out = []
        for name in os.listdir(self.layers_dir):
            if not _HEX64.match(name) or name in used:
                continue
            path = self.layer_path(name)
            if path + ":" in mounted or path + "," in mounted:
                continue  # still a lower layer of a container's overlay: keep it until the next removal
            shutil.rmtree(path, ignore_errors=True)
            out.append(f"Deleted: sha256:{name}")
        return out

    # -- files ---------------------------------------------------------------------------
    def _image_path(self, image_id: str) -> str:
        return os.path.join(self.images_dir, f"{image_id}.json")

    def _image_ids(self) -> list[str]:
        return sorted(n[:-5] for n in os.listdir(self.images_dir) if n.endswith(".json") and _HEX64.match(n[:-5]))

    def _read_image(self, image_id: str) -> dict:
        with open(self._image_path(image_id)) as f:
            return json.load(f)

    def _tags(self) -> dict[str, str]:
        try:
            with open(self.tags_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _write_tags(self, tags: dict[str, str]) -> None:
        atomic_write(self.tags_path, json.dumps(dict(sorted(tags.items())), indent=1).encode(), mode=0o644)

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
    def _tmp_layers(self, cancel: threading.Event | None = None) -> Iterator["_TmpLayers"]:
        tmp = _TmpLayers(self, self.import_budget(cancel))
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


class _TmpLayers:
    """Layers extracted by one import/load, moved into the store only on commit."""

    def __init__(self, store: ImageStore, budget: Budget) -> None:
        self.store = store
        self.budget = budget
        self.dirs: dict[str, str] = {}     # diff_id -> temporary directory
        self.sizes: dict[str, int] = {}
        self.made: list[str] = []

    def new_dir(self) -> str:
        path = os.path.join(self.store.layers_dir, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        os.mkdir(path, 0o755)
        self.made.append(path)
        return path

    def extract(self, raw: BinaryIO) -> tuple[str, int]:
        path = self.new_dir()
        info = extract_layer(raw, path, self.budget)
        if info.diff_id not in self.dirs:
            self.dirs[info.diff_id] = path
        self.sizes[info.diff_id] = info.size
        return info.diff_id, info.size

    def ensure(self, diff_id: str, opener, index: int, raw_digest: str | None = None) -> int:
        """Extract a layer unless the store or this load already has it; verify its digests."""
        if diff_id in self.sizes:
            return self.sizes[diff_id]
        if os.path.isdir(self.store.layer_path(diff_id)):
            size = self._size_from_images(diff_id)
            if size is not None:
                self.sizes[diff_id] = size
                return size
        path = self.new_dir()
        with opener() as raw:
            info = extract_layer(raw, path, self.budget)
        if info.diff_id != diff_id:
            raise ImageError(f"Layer {index + 1} of the archive does not match its digest "
                             f"(expected sha256:{diff_id[:12]}, got sha256:{info.diff_id[:12]}).")
        if raw_digest is not None and info.raw_digest != raw_digest:
            raise ImageError(f"Layer {index + 1} of the archive does not match its blob digest.")
        self.dirs[diff_id] = path
        self.sizes[diff_id] = info.size
        return info.size

    def _size_from_images(self, diff_id: str) -> int | None:
        for image_id in self.store._image_ids():
            with contextlib.suppress(FileNotFoundError, KeyError, ValueError):
                doc = self.store._read_image(image_id)
                return int(doc["layer_sizes"][doc["layers"].index(diff_id)])
        return None

    def move_into_place(self) -> None:
        for diff_id, path in self.dirs.items():
            final = self.store.layer_path(diff_id)
            if os.path.isdir(final):
                continue  # another import brought the same layer: ours is removed in cleanup
            os.rename(path, final)
            self.made.remove(path)

    def cleanup(self) -> None:
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)
        self.made.clear()


class _ArchiveReader:
    """Members of an outer image archive by normalized name; never touches the filesystem."""

    def __init__(self, tf: tarfile.TarFile, members: dict[str, tarfile.TarInfo], path: str) -> None:
        self.tf, self.members, self.path = tf, members, path

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(_member_key(str(name))) if name else None
        try:
            f = self.tf.extractfile(member) if member is not None else None
        except KeyError:      # a link member whose target is not in the archive
            f = None
        if f is None:
            raise ImageError(f"{self.path} lacks the file {name!r} that its manifest names.")
        return f

    def bytes(self, name: str) -> bytes:
        member = self.members.get(_member_key(str(name))) if name else None
        if member is not None and member.size > MAX_METADATA_BYTES:
            raise ImageError(f"{self.path}: {name} is larger than {format_bytes(MAX_METADATA_BYTES)}, "
                             f"too large for image metadata.")
        with self.open(name) as f:
            return f.read(MAX_METADATA_BYTES + 1)

    def json(self, name: str):
        return _loads(self.bytes(name), name)

    def blob_name(self, desc: dict) -> str:
        digest = str(desc.get("digest", ""))
        alg, _, hexd = digest.partition(":")
        if alg != "sha256" or not _HEX64.match(hexd):
            raise ImageError(f"{self.path}: unsupported or malformed blob digest {digest!r}.")
        return f"blobs/sha256/{hexd}"

    def blob(self, desc: dict) -> bytes:
        name = self.blob_name(desc)
        data = self.bytes(name)
        if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1]:
            raise ImageError(f"{self.path}: the blob {name} does not match its digest.")
        return data


def _member_key(name: str) -> str:
    """An archive member name without leading '/' or './' and with '.' and '..' folded."""
    return posixpath.normpath("/" + name).lstrip("/")


def _loads(data: bytes, what: str):
    try:
        return json.loads(data)
    except ValueError:
        raise ImageError(f"The archive's {what} is not valid JSON.") from None


def _diff_ids(config: dict) -> list[str]:
    rootfs = config.get("rootfs") or {}
    out = []
    for d in rootfs.get("diff_ids") or []:
        alg, _, hexd = str(d).partition(":")
        if alg != "sha256" or not _HEX64.match(hexd):
            raise ImageError(f"The image configuration names an unsupported layer digest {d!r}.")
        out.append(hexd)
    if not out:
        raise ImageError("The image configuration lists no layers.")
    return out


_FILE_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a fifo"),
               (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


@contextlib.contextmanager
def _open_source(src: str | BinaryIO) -> Iterator[BinaryIO]:
    """A path is opened only as a regular file: a device (/dev/zero) or fifo never ends."""
    if not isinstance(src, (str, os.PathLike)):
        yield src
        return
    try:
        # O_NONBLOCK: opening a fifo must not wait for a writer before fstat can refuse it
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ImageError(f"Cannot read {src}: {exc.strerror}.") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise ImageError(f"{src} is {kind}; images are imported from regular files only.")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        yield f


def _decompressed(f: BinaryIO) -> BinaryIO:
    """The outer archive, uncompressed (docker load takes gzip, bzip2 and xz archives too)."""
    head = f.read(6)
    f.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(f, mode="rb")  # type: ignore[return-value]
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(f, mode="rb")  # type: ignore[return-value]
    return f


class _GuardedFile:
    """The outer archive as tarfile reads it: every read checks the cancel flag, and reading past
    the budget's limit (a compressed bomb) is refused."""

    def __init__(self, f: BinaryIO, budget: Budget) -> None:
        self._f, self._budget = f, budget

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK_LIMIT), b""))
        data = self._f.read(n)
        self._budget.check_stream(self._f.tell())
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._budget.check_cancel()
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


CHUNK_LIMIT = 1 << 20


async def run_cancellable(fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args, cancel=event)` (an import or load) in a worker thread. When the calling trio
    task is cancelled (a daemon shutting down) it returns at once and sets the event: the thread
    stops at its next chunk and removes what it extracted, instead of holding the daemon."""
    cancel = threading.Event()
    try:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, cancel=cancel), abandon_on_cancel=True)
    finally:
        cancel.set()


def _mount_options_text() -> str:
    try:
        with open("/proc/self/mountinfo") as f:
            return f.read()
    except OSError:
        return ""

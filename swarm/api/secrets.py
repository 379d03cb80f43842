"""Secrets and configs: the records, their rules, and where their files go in a task.

How this works. A secret and a config are the same kind of object (Docker's
Secret and Config): a name, labels and a value. Each is one record of kind
"secret" or "config" in the store (id -> `FileObject`). A store transaction
must fit one Raft log entry (raft.store.MAX_COMMAND, 48 KiB) while Docker
allows values up to 500 KiB (a secret) and 1000 KiB (a config), so a value is
split (`split`): its first INLINE bytes stay in the record ("data"), the rest
goes to `chunks` records of kind "secret-chunk"/"config-chunk", ids
"ID.1", "ID.2"..., written before the record itself, so a record in the store
always has its whole value. Most values (passwords, small files) fit the
record alone.

Names follow SwarmKit's rule for secrets and configs (not the one for
services: a '.' may appear, and the name need not be a DNS label). A
task's files: a secret's target is a file name under /run/secrets (or an
absolute path), a config's an absolute path ("/NAME" when relative), as
Docker's daemon resolves them (`target_path`). Pure: no I/O.
"""
from __future__ import annotations

import base64
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

SECRET, CONFIG = "secret", "config"
KINDS = (SECRET, CONFIG)
CHUNK_KIND = {SECRET: "secret-chunk", CONFIG: "config-chunk"}
# Docker's limits (SwarmKit's MaxSecretSize and MaxConfigSize): the value must be shorter.
MAX_SIZE = {SECRET: 500 * 1024, CONFIG: 1000 * 1024}
INLINE = 24 * 1024           # value bytes kept in the record itself
CHUNK = 32 * 1024            # value bytes per chunk record (one transaction each, under 48 KiB)
MAX_LABELS_BYTES = 8 * 1024  # keys and values together: the record (with INLINE bytes) must fit one entry
SECRETS_DIR = "/run/secrets"
# SwarmKit's isValidConfigOrSecretName, at most 64 characters.
_NAME = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?")
# `secret ls -f` / `config ls -f`: the keys moby's daemon takes (names: exact, name: prefix).
FILTERS = {"id": "prefix", "name": "prefix", "names": "exact", "label": "labels"}


class InvalidObject(ValueError):
    """A secret or config the rules refuse: one sentence, as Docker's."""


@dataclass(frozen=True)
class FileObject:
    """A secret or a config as the store keeps it (its value: `data` and `chunks` more records)."""
    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    data: bytes = b""           # the value's first INLINE bytes
    chunks: int = 0             # chunk records holding the rest
    size: int = 0               # the whole value's length
    created_at: float = 0.0
    updated_at: float = 0.0


def check_name(name: Any) -> str:
    """SwarmKit's validateConfigOrSecretAnnotations, its sentences."""
    if not isinstance(name, str) or name == "":
        raise InvalidObject("name must be provided")
    if len(name) > 64 or not _NAME.fullmatch(name):
        raise InvalidObject("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end "
                            "character must be [a-zA-Z0-9]")
    return name


def check_labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and k and isinstance(v, str)
                                                  for k, v in labels.items()):
        raise InvalidObject("labels must be a map of non-empty names to strings")
    if sum(len(k.encode()) + len(v.encode()) for k, v in labels.items()) > MAX_LABELS_BYTES:
        raise InvalidObject(f"labels may hold at most {MAX_LABELS_BYTES} bytes of names and values")
    return dict(labels)


def check_data(kind: str, data: Any) -> bytes:
    """SwarmKit's ValidateSecretPayload (and its config twin), its sentence."""
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidObject(f"{kind} data must be bytes (msgpack bin), not {type(data).__name__}")
    if not 0 < len(data) < MAX_SIZE[kind]:
        raise InvalidObject(f"{kind} data must be larger than 0 and less than {MAX_SIZE[kind]} bytes")
    return bytes(data)


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """(the bytes kept in the record, the chunk records' bytes in order)."""
    rest = data[INLINE:]
    return data[:INLINE], [rest[i:i + CHUNK] for i in range(0, len(rest), CHUNK)]


def chunk_ids(obj_id: str, chunks: int) -> Iterator[str]:
    return (f"{obj_id}.{n}" for n in range(1, chunks + 1))


def new_object(obj_id: str, name: str, labels: Mapping[str, str], data: bytes, now: float) -> tuple[
        FileObject, list[bytes]]:
    """A new record and its chunks (checked by the callers: name, labels, data)."""
    head, chunks = split(data)
    return FileObject(obj_id, name, dict(labels), head, len(chunks), len(data), now, now), chunks


def object_from_dict(data: Any) -> FileObject:
    try:
        obj = msgspec.convert(data, FileObject)
    except (msgspec.ValidationError, TypeError) as exc:
        raise InvalidObject(f"invalid record: {exc}") from None
    if obj.chunks < 0 or obj.size < len(obj.data):
        raise InvalidObject("invalid record: its size and chunks disagree")
    return obj


def to_dict(obj: FileObject) -> dict[str, Any]:
    return {"id": obj.id, "name": obj.name, "labels": dict(obj.labels), "data": obj.data, "chunks": obj.chunks,
            "size": obj.size, "created_at": obj.created_at, "updated_at": obj.updated_at}


def join(obj: FileObject, chunks: Sequence[bytes]) -> bytes | None:
    """The whole value, or None when the chunks do not add up (a record written half)."""
    if len(chunks) != obj.chunks:
        return None
    data = obj.data + b"".join(chunks)
    return data if len(data) == obj.size else None


def view(kind: str, obj: FileObject, version: int, created: str, updated: str, value: bytes | None) -> dict[str, Any]:
    """What `inspect` shows, Docker's shape with our snake_case keys: a config's value as
    Spec.Data (base64, as Docker's JSON shows []byte); a secret's never."""
    spec: dict[str, Any] = {"name": obj.name, "labels": dict(obj.labels)}
    if kind == CONFIG and value is not None:
        spec["data"] = base64.b64encode(value).decode()
    return {"id": obj.id, "version": {"index": version}, "created_at": created, "updated_at": updated, "spec": spec}


def default_target(name: str) -> str:
    """A reference without target= gets the object's name (docker/cli's SecretOpt and ConfigOpt)."""
    return name


def target_path(kind: str, target: str) -> str:
    """Where a task sees the file: an absolute target as it is, else under /run/secrets (a
    secret) or / (a config), as moby's getSecretTargetPath and getConfigTargetPath."""
    if target.startswith("/"):
        return posixpath.normpath(target)
    return posixpath.normpath(posixpath.join(SECRETS_DIR if kind == SECRET else "/", target))


def check_target(kind: str, target: Any) -> str:
    if not isinstance(target, str) or not target.strip() or "\0" in target or len(target) > 4096:
        raise InvalidObject(f"malformed file {kind} reference, invalid target file name provided")
    path = target_path(kind, target)
    if path == "/" or (kind == SECRET and path == SECRETS_DIR):
        raise InvalidObject(f"malformed file {kind} reference, invalid target file name provided")
    return target

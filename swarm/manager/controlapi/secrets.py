"""The control API for secrets and configs: `swarm secret|config create|ls|inspect|rm`.

How this works. One class serves both kinds (`FileObjectAPI(manager, kind)`),
as their rules are the same but for the value's limit and whether inspect
shows it. A create checks everything (SwarmKit's name rule, labels, Docker's
size limit, a name no other object of the kind has), then writes the value's
chunk records (swarm.api.secrets: a value above INLINE bytes does not fit one
Raft entry), one transaction each, and the record last: the record is what
makes the object exist, so a reader never sees half a value. A failure on the
way removes what was written. An rm refuses an object a service's spec uses
(SwarmKit's sentence, naming the services), then deletes the record, then
its chunks.

A secret's value never leaves this module but through `read_value`, which
only the dispatcher calls (for the node whose tasks use it); `inspect` and
`ls` never carry it. A config's value is shown by inspect (Docker's Spec.Data).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import trio

from raft.store import VERSION_SHIFT, Op
from swarm.api import filters, model, records, secrets, spec
from swarm.api.errors import ApiError
from swarm.api.refs import resolve_ref
from swarm.ca import pki
from swarm.manager.membership import Manager

RM_RETRIES = 5   # a delete that lost a race with a service taking the object is checked again

MAX_REFS = 1000


def _bad(message: str) -> ApiError:
    return ApiError("bad_request", message)


def _secret(data: dict) -> secrets.FileObject:
    return secrets.object_from_dict(data)


def _config(data: dict) -> secrets.FileObject:
    return secrets.object_from_dict(data)


# records.decode_all keeps one cache per build function: one function per kind, so that
# listing one kind does not throw away the other's cache.
_BUILD = {secrets.SECRET: _secret, secrets.CONFIG: _config}


def objects(raft: Any, kind: str) -> dict[str, tuple[secrets.FileObject, int]]:
    """id -> (object, record version) of every secret (or config) that decodes."""
    return records.decode_all(raft.list(kind), _BUILD[kind])


def read_value(raft: Any, kind: str, obj: secrets.FileObject) -> bytes | None:
    """The whole value of `obj` from the local store (None when a chunk is missing)."""
    chunks = []
    for chunk_id in secrets.chunk_ids(obj.id, obj.chunks):
        rec = raft.get(secrets.CHUNK_KIND[kind], chunk_id)
        if rec is None:
            return None
        chunks.append(rec.data)
    return secrets.join(obj, chunks)


def names_to_ids(raft: Any) -> dict[str, dict[str, str]]:
    """kind -> name -> id, for a service's --secret/--config references (specrefs.resolve_files)."""
    return {kind: {o.name: o.id for o, _ in objects(raft, kind).values()} for kind in secrets.KINDS}


def users(services: Any, kind: str, obj_id: str) -> list[str]:
    """The names of the services whose spec uses the object (SwarmKit's ByReferencedSecretID)."""
    out = []
    for service in services:
        refs = service.spec.container.secrets if kind == secrets.SECRET else service.spec.container.configs
        if any(r.id == obj_id for r in refs):
            out.append(service.spec.name)
    return sorted(out)


class FileObjectAPI:
    """secret.* (kind "secret") or config.* (kind "config")."""

    def __init__(self, manager: Manager, kind: str) -> None:
        if kind not in secrets.KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.m = manager
        self.kind = kind

    def objects(self) -> dict[str, tuple[secrets.FileObject, int]]:
        return objects(self.m.raft, self.kind)

    def find(self, ref: str) -> tuple[secrets.FileObject, int]:
        return resolve_ref(self.kind, self.objects(), ref, lambda o: o[0].name)

    async def handle(self, method: str, params: dict) -> Any:
        handler = {f"{self.kind}.create": self.create, f"{self.kind}.ls": self.ls,
                   f"{self.kind}.inspect": self.inspect, f"{self.kind}.rm": self.rm,
                   f"{self.kind}.update": self.update}.get(method)
        if handler is None:
            raise ApiError("unknown_method", f"unknown {self.kind} method {method}")
        return await handler(params)

    async def create(self, params: dict) -> dict:
        for key, what in (("driver", f"{self.kind} drivers"), ("template_driver", "template drivers")):
            if params.get(key):
                raise _bad(f"{what} are not supported: give the value itself")
        try:
            name = secrets.check_name(params.get("name"))
            labels = secrets.check_labels(params.get("labels"))
            data = secrets.check_data(self.kind, params.get("data"))
        except secrets.InvalidObject as exc:
            raise _bad(str(exc)) from None
        if any(o.name == name for o, _ in self.objects().values()):
            raise ApiError("conflict", f"{self.kind} {name} already exists")   # SwarmKit's AlreadyExists
        obj, chunks = secrets.new_object(pki.new_id(), name, labels, data, time.time())
        chunk_kind = secrets.CHUNK_KIND[self.kind]
        written: list[str] = []
        try:
            for chunk_id, chunk in zip(secrets.chunk_ids(obj.id, obj.chunks), chunks):
                await self.m.commit([Op.create(chunk_kind, chunk_id, chunk)])
                written.append(chunk_id)
            await self.m.commit([Op.create(self.kind, obj.id, model.encode(secrets.to_dict(obj)))])
        except BaseException:
            await self._forget_chunks(written)
            raise
        return {"id": obj.id, "name": name}

    async def update(self, params: dict) -> dict:
        """SwarmKit's UpdateSecret/UpdateConfig: only the labels change. The name and the value
        may be given (docker stack deploy sends the whole spec again) but must be the same;
        `version` (Docker's Version.Index) makes it a compare-and-set."""
        if not isinstance(params.get("ref"), str):
            raise _bad(f"ref must be a {self.kind} name or ID")
        obj, version = self.find(params["ref"])
        given = params.get("version")
        if given is not None and given != version >> VERSION_SHIFT:
            raise ApiError("conflict", f"update out of sequence: {self.kind} {obj.name} is at version "
                                       f"{version >> VERSION_SHIFT}, not {given}")
        data = params.get("data")
        if params.get("name", obj.name) != obj.name or (
                data is not None and data != read_value(self.m.raft, self.kind, obj)):
            raise _bad("only updates to Labels are allowed")          # SwarmKit's sentence
        try:
            labels = secrets.check_labels(params.get("labels"))
        except secrets.InvalidObject as exc:
            raise _bad(str(exc)) from None
        new = dataclasses.replace(obj, labels=labels, updated_at=time.time())
        try:
            await self.m.commit([Op.update(self.kind, obj.id, model.encode(secrets.to_dict(new)), expect=version)])
        except ApiError as exc:
            if exc.code != "conflict":
                raise
            raise ApiError("conflict", f"update out of sequence: {self.kind} {obj.name} changed") from None
        return {"id": obj.id, "name": obj.name}

    async def _forget_chunks(self, chunk_ids: list[str]) -> None:
        for chunk_id in chunk_ids:
            try:
                await self.m.commit([Op.delete(secrets.CHUNK_KIND[self.kind], chunk_id)])
            except ApiError:
                pass    # left over: a chunk no record names, never read (the value is not whole)

    async def ls(self, params: dict) -> list[dict]:
        wanted = filters.from_params(params, secrets.FILTERS)
        rows = []
        for obj, _ in sorted(self.objects().values(), key=lambda o: (o[0].name, o[0].id)):
            if filters.matches(wanted, secrets.FILTERS, {"id": obj.id, "name": obj.name, "names": obj.name,
                                                         "label": obj.labels}):
                rows.append({"id": obj.id, "name": obj.name, "driver": "", "labels": dict(obj.labels),
                             "created_at": model.rfc3339(obj.created_at),
                             "updated_at": model.rfc3339(obj.updated_at)})
        return rows

    async def inspect(self, params: dict) -> list[dict]:
        out = []
        for ref in _refs(params, self.kind):
            obj, version = self.find(ref)
            value = read_value(self.m.raft, self.kind, obj) if self.kind == secrets.CONFIG else None
            out.append(secrets.view(self.kind, obj, version >> 16, model.rfc3339(obj.created_at),
                                    model.rfc3339(obj.updated_at), value))
        return out

    async def rm(self, params: dict) -> list[str]:
        removed = []
        for ref in _refs(params, self.kind):
            for attempt in range(RM_RETRIES):
                obj, version = self.find(ref)
                services = [s for s, _ in records.decode_all(self.m.raft.list(spec.SERVICE),
                                                             spec.service_from_dict).values()]
                using = users(services, self.kind, obj.id)
                if using:
                    # SwarmKit's sentence (InvalidArgument)
                    raise _bad(f"{self.kind} '{obj.name}' is in use by the following "
                               f"{'service' if len(using) == 1 else 'services'}: {', '.join(using)}")
                # The record first (then no reader finds the object), its chunks after it. Expecting
                # the version read before the check: a service that took this object since rewrote
                # the record in its own transaction (services.py `_claim_files`), so this delete
                # fails and the check runs again.
                try:
                    await self.m.commit([Op.delete(self.kind, obj.id, expect=version)])
                except ApiError as exc:
                    if exc.code != "conflict" or attempt == RM_RETRIES - 1:
                        raise
                    await trio.sleep(0.01)
                    continue
                await self._forget_chunks(list(secrets.chunk_ids(obj.id, obj.chunks)))
                removed.append(ref)
                break
        return removed


def _refs(params: dict, kind: str) -> list[str]:
    refs = params.get("refs") or []
    if not isinstance(refs, list) or len(refs) > MAX_REFS or not all(isinstance(r, str) and len(r) <= 256
                                                                     for r in refs):
        raise _bad(f"refs must be a list of {kind} names or IDs")
    return refs

"""The control API for services: create, ls, ps, inspect, update, rollback, scale, rm.

Handlers validate the user's input completely before writing anything (a
service is created whole or not at all), then write the Service record; the
leader's reconcile loop (`swarm.manager.reconciler`) turns it into tasks. Any manager
answers: reads come from its local copy of the store.

Versions. An update that changes the task template (anything but the replica
count and the update and rollback configs; `force` bumps
container.force_update so that every task rolls) gives the spec the next
version (above every version given so far: `last_spec_version`), keeps the
spec before as `previous_spec` (and its version), and starts an update
(UpdateStatus updating): the orchestrator's update supervisor rolls the tasks.
A rollback swaps the spec and the previous spec with their versions, as
SwarmKit's controlapi does: tasks that never left the previous spec are
current again, and only the updated ones roll back.

Images. As Docker's, create (and update with --image) pins the image's tag to
the digest its registry gives now (the daemon's resolver, `resolve_image`),
so that every task runs the same bytes even when the tag moves: the spec
keeps "name:tag@sha256:..." (`service ls` shows "name:tag"). With
--no-resolve-image the reference is kept as given. When the registry cannot
answer and some node already holds the image (a locally imported one), the
reference is kept as given, with Docker's warning; otherwise the registry's
sentence refuses the request ("No such image: ...", "unauthorized: ...";
"image X not found on any node (registry H unreachable)" when no registry
answered) and nothing is written. `registry_auth`
(--with-registry-auth: the caller's encoded credentials) is used for that
resolution, kept in the Service record for the dispatcher to hand to the
nodes with their tasks, and never shown by inspect.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable
from typing import Any, Callable

import trio

from raft.store import Op
from swarm.api import filters, model, records, reference, secrets, spec
from swarm.ca import pki
from swarm.manager.controlapi.networks import NetworkAPI
from swarm.manager.controlapi.secrets import names_to_ids
from swarm.manager.membership import Manager
from swarm.manager.planner import node_infos
from swarm.manager.scheduler import NodeInfo, eligible_nodes
from swarm.api.errors import ApiError, SwarmError
from swarm.api.refs import resolve_ref
from swarm.registry.errors import RegistryUnreachable
from swarm.manager.controlapi.specchecks import MAX_LIST
from swarm.manager.controlapi.specparams import MAX_REPLICAS, registry_options, spec_from_params
from swarm.manager.controlapi.specrefs import network_attachments, resolve_files
from swarm.manager.controlapi.specupdate import REPLACEABLE, apply_update
from swarm.manager.updater import MANUAL_ROLLBACK, PAUSED, UPDATE_STARTED

__all__ = ["ServiceAPI", "apply_update", "spec_from_params"]


def _bad(message: str) -> ApiError:
    return ApiError("bad_request", message)


def replicas_column(service: spec.Service, tasks: list[spec.Task]) -> str:
    """`service ls`'s REPLICAS as docker prints it: "2/3", "2/3 (max 1 per node)"; a job
    "1/2 (3/5 completed)": running of max-concurrent, completed of the completions wanted
    (a global job: of its nodes), counting only the tasks of the job's current iteration."""
    mode = service.spec.mode
    mine = [t for t in tasks if t.service_id == service.id
            and (mode not in spec.JOB_MODES or t.job_iteration == service.job_iteration)]
    running = sum(1 for t in mine if t.status.state == "running" and t.desired_state == "running")
    completed = sum(1 for t in mine if t.status.state == "complete")
    if mode == "replicated-job":
        concurrent = service.spec.max_concurrent or service.spec.replicas
        return f"{running}/{concurrent} ({completed}/{service.spec.replicas} completed)"
    if mode == "global-job":
        # SwarmKit's: desired are the tasks still to complete; the whole is those and the completed ones
        desired = sum(1 for t in mine if t.desired_state == "running" and t.status.state != "complete")
        return f"{running}/{desired} ({completed}/{desired + completed} completed)"
    if mode == "global":
        # One per node still meant to run: an ended task here keeps desired state running (its
        # replacement, if any, is counted instead), where Docker sets it to shutdown.
        nodes = {t.node_id for t in mine if t.desired_state == "running" and not spec.is_terminal(t.status.state)}
        return f"{running}/{len(nodes)}"
    if service.spec.max_replicas_per_node > 0:
        return f"{running}/{service.spec.replicas} (max {service.spec.max_replicas_per_node} per node)"
    return f"{running}/{service.spec.replicas}"


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{seconds} second{'s' if seconds != 1 else ''} ago"


# The daemon's: ask the nodes that could run the spec's tasks about what only they can judge
# (bind sources, --user in their copy of the image); raises ApiError (swarm/daemon/speccheck.py).
NodeCheck = Callable[[spec.ServiceSpec, list[NodeInfo]], Awaitable[None]]
# The daemon's: (image reference, encoded auth or "") -> the reference pinned to the digest its
# registry names now ("name:tag@sha256:..."); raises a SwarmError with the registry's sentence.
ImageResolver = Callable[[str, str], Awaitable[str]]
RESOLVE_TIMEOUT = 6.0     # seconds a registry has to answer (the CLI's call waits 10)


class ServiceAPI:
    def __init__(self, manager: Manager, check_on_nodes: NodeCheck | None = None,
                 resolve_image: ImageResolver | None = None) -> None:
        self.m = manager
        self.check_on_nodes = check_on_nodes
        self.resolve_image = resolve_image

    async def _check_on_nodes(self, s: spec.ServiceSpec) -> None:
        if self.check_on_nodes is not None:
            await self.check_on_nodes(s, eligible_nodes(s.constraints, node_infos(self.m.nodes())))

    def services(self) -> dict[str, spec.Service]:
        return {k: s for k, (s, _) in records.decode_all(self.m.raft.list(spec.SERVICE), spec.service_from_dict).items()}

    def tasks(self) -> list[spec.Task]:
        return [t for t, _ in records.decode_all(self.m.raft.list(spec.TASK), spec.task_from_dict).values()]

    def find(self, ref: str) -> spec.Service:
        return resolve_ref("service", self.services(), ref, lambda s: s.spec.name)

    async def handle(self, method: str, params: dict) -> Any:
        handler = {
            "service.create": self.create, "service.ls": self.ls, "service.ps": self.ps,
            "service.inspect": self.inspect, "service.update": self.update, "service.scale": self.scale,
            "service.rm": self.rm, "service.rollback": self.rollback,
        }.get(method)
        if handler is None:
            raise ApiError("unknown_method", f"unknown service method {method}")
        return await handler(params)

    def _resolve_networks(self, params: dict) -> dict:
        """The params with each network's name replaced by its ID (its aliases kept)."""
        if "networks" not in params:
            return params
        api = NetworkAPI(self.m)
        resolved: list[str | dict] = []
        seen: set[str] = set()
        for ref, aliases in network_attachments(params):
            try:
                net = api.find(ref)
            except ApiError:
                raise _bad(f"network {ref} not found") from None
            if net["ingress"]:
                raise _bad("the ingress network is attached by publishing a port, not with --network")
            if net["id"] in seen:
                raise _bad(f"network {ref} is given twice")
            seen.add(net["id"])
            resolved.append({"target": net["id"], "aliases": list(aliases)} if aliases else net["id"])
        return dict(params, networks=resolved)

    def _resolve_files(self, params: dict) -> dict:
        """The params with the secrets and configs they name resolved to their ids (specrefs.resolve_files)."""
        if not any(key in params for key in ("secrets", "configs", "secrets_add", "configs_add")):
            return params
        return resolve_files(params, names_to_ids(self.m.raft))

    def _node_images(self) -> set[str]:
        """The image references the nodes reported in their last heartbeats."""
        return {i for node in self.m.nodes().values() for i in node.get("images", [])}

    async def _pin_image(self, image: str, auth: str, no_resolve: bool) -> tuple[str, list[str]]:
        """(the image reference to store, warnings): pinned to its registry's digest, or as given
        (see the module doc); ApiError bad_request with the registry's sentence when no registry
        answers for it and no node holds it."""
        if no_resolve:
            return image, []
        if self.resolve_image is None:      # no registry client (a manager without a daemon)
            if not _image_known(image, self._node_images()):
                raise _bad(f"image {image} not found on any node (import it with swarm image import)")
            return image, []
        try:
            with trio.fail_after(RESOLVE_TIMEOUT):
                return await self.resolve_image(image, auth), []
        except RegistryUnreachable as exc:
            # No registry could say: the image is only a local one, if anything.
            failure = f"image {image} not found on any node ({exc.message})"
        except SwarmError as exc:
            failure = exc.message          # the registry's own answer: no such image, unauthorized...
        except trio.TooSlowError:
            failure = f"image {image} not found on any node (registry {_domain(image)} unreachable)"
        if _image_known(image, self._node_images()):
            # Docker's warning: the nodes run what they hold under that name.
            return image, [f"image {image} could not be accessed on a registry to record its digest. Each node "
                           f"will access {image} independently, possibly leading to different nodes running "
                           f"different versions of the image."]
        raise _bad(failure)

    async def create(self, params: dict) -> dict:
        s = spec_from_params(self._resolve_files(self._resolve_networks(params)))
        auth, no_resolve = registry_options(params)
        if any(x.spec.name == s.name for x in self.services().values()):
            raise ApiError("conflict", f"a service named {s.name} already exists")
        image, warnings = await self._pin_image(s.container.image, auth or "", no_resolve)
        s = dataclasses.replace(s, container=dataclasses.replace(s.container, image=image))
        self._check_ports_free(s, None)
        await self._check_on_nodes(s)
        now = time.time()
        service = spec.Service(pki.new_id(), s, 1, now, now, registry_auth=auth or "")
        try:
            await self.m.commit([Op.create(spec.SERVICE, service.id, model.encode(spec.to_dict(service))),
                                 *self._claim_files(s, None)])
        except ApiError as exc:
            if exc.code == "conflict":
                raise ApiError("conflict", f"a service named {s.name} already exists") from None
            raise
        answer: dict = {"id": service.id, "name": s.name}
        if warnings:
            answer["warnings"] = warnings
        return answer

    async def ls(self, params: dict) -> list[dict]:
        wanted = filters.from_params(params, filters.SERVICE_FILTERS)
        rows = []
        by_service: dict[str, list[spec.Task]] = {}     # one pass over the tasks, not one per service
        for t in self.tasks():
            by_service.setdefault(t.service_id, []).append(t)
        for s in sorted(self.services().values(), key=lambda x: x.spec.name):
            if not filters.matches(wanted, filters.SERVICE_FILTERS, {"id": s.id, "name": s.spec.name,
                                                                     "label": s.spec.labels, "mode": s.spec.mode}):
                continue
            ports = ", ".join(f"*:{p.published}->{p.target}/{p.protocol}" for p in s.ports)
            rows.append({"id": s.id, "name": s.spec.name, "mode": s.spec.mode,
                         "replicas": replicas_column(s, by_service.get(s.id, [])), "image": listed_image(s.spec.container.image),
                         "ports": ports})
        return rows

    async def ps(self, params: dict) -> list[dict]:
        """Tasks of the services in "refs" (all without), passing "filters" (`service ps`, `node ps`)."""
        refs = _refs(params)
        wanted = {self.find(r).id for r in refs} if refs else None
        chosen = filters.from_params(params, filters.TASK_FILTERS)
        # Nodes and services are named as the user likes (ID, prefix, name): match on their IDs.
        if "node" in chosen:
            chosen = dict(chosen, node=tuple(self.m.find(ref)["id"] for ref in chosen["node"]))
        if "service" in chosen:
            chosen = dict(chosen, service=tuple(self.find(ref).id for ref in chosen["service"]))
        nodes = self.m.nodes()
        jobs = {sid for sid, s in self.services().items() if s.spec.mode in spec.JOB_MODES}
        now = time.time()
        rows = []
        # A slot (global: a node) together; its current task first, then its history newest first.
        def order(t: spec.Task) -> tuple:
            return (t.service_name, t.service_id, t.slot, "" if t.slot else t.node_id, t.desired_state != "running",
                    -t.created_at)

        for t in sorted(self.tasks(), key=order):
            if wanted is not None and t.service_id not in wanted:
                continue
            if not filters.matches(chosen, filters.TASK_FILTERS, {
                    "id": t.id, "name": f"{t.name}.{t.id}", "label": t.service_labels, "service": t.service_id,
                    "node": t.node_id, "desired-state": t.desired_state}):
                continue
            rows.append({
                "id": t.id, "name": t.name, "image": t.spec.image,
                "node": nodes.get(t.node_id, {}).get("hostname", t.node_id),
                "desired_state": t.desired_state,
                "current_state": f"{t.status.state} {age(now - t.status.timestamp)}" if t.status.timestamp
                else t.status.state,
                "error": t.status.err, "message": t.status.message,   # "pulling image" while a node pulls
                "service_id": t.service_id, "slot": t.slot, "node_id": t.node_id,
                "state": t.status.state, "exit_code": t.status.exit_code, "spec_version": t.spec_version,
                "job": t.service_id in jobs, "job_iteration": t.job_iteration,
                # the Engine API's Task (swarm/engineapi): its times as times, not as "5 seconds ago"
                "timestamp": model.rfc3339(t.status.timestamp or t.created_at), "created_at": model.rfc3339(t.created_at),
            })
        return rows

    async def inspect(self, params: dict) -> list[dict]:
        out = []
        for ref in _refs(params):
            service = self.find(ref)
            view = spec.to_dict(service)
            view.pop("registry_auth", None)     # credentials: handed to the nodes, never shown
            rec = self.m.raft.get(spec.SERVICE, service.id)
            view["version"] = rec.version if rec is not None else 0   # Docker's Version.Index: what update's version compares
            view["created_at"] = model.rfc3339(view["created_at"])
            view["updated_at"] = model.rfc3339(view["updated_at"])
            if view.get("update_status"):     # the update's times too: one time format in every answer
                for key in ("started_at", "completed_at"):
                    view["update_status"][key] = model.rfc3339(view["update_status"][key])
            out.append(view)
        return out

    def _check_ports_free(self, new: spec.ServiceSpec, service_id: str | None) -> None:
        """Refuse a published port another service holds, as Docker does at create and update."""
        for other in self.services().values():
            if other.id == service_id:
                continue
            # SwarmKit's rule: an ingress port is the cluster's; host-mode ports may repeat
            # (the scheduler keeps them apart per node) but never clash with an ingress one.
            held = {(p.published, p.protocol): p.mode for p in (*other.spec.ports, *other.ports) if p.published}
            for port in new.ports:
                mode = held.get((port.published, port.protocol))
                if port.published and mode is not None and "ingress" in (mode, port.mode):
                    raise ApiError("conflict", f"port '{port.published}' is already in use by service "
                                               f"'{other.spec.name}' ({other.id}) as an {mode} port")

    def _claim_files(self, new: spec.ServiceSpec, old: spec.ServiceSpec | None) -> list[Op]:
        """The secrets and configs `new` references and `old` did not, each rewritten unchanged
        with compare-and-set, in the service's own transaction. A `secret rm` checks the
        services, then deletes the record expecting the version it saw: a service that took the
        secret in between moved that version, so the delete fails and is checked again (and
        a service write after the delete fails: the record is gone). SwarmKit gets the same
        from one store transaction over both; here the record's version carries it."""
        def refs_of(s: spec.ServiceSpec) -> tuple[tuple[str, tuple[spec.FileReference, ...]], ...]:
            return (secrets.SECRET, s.container.secrets), (secrets.CONFIG, s.container.configs)
        had = set() if old is None else {(kind, r.id) for kind, refs in refs_of(old) for r in refs}
        ops = []
        for kind, refs in refs_of(new):
            for ref in refs:
                if (kind, ref.id) in had:
                    continue
                had.add((kind, ref.id))
                rec = self.m.raft.get(kind, ref.id)
                if rec is None:
                    raise ApiError("bad_request", f"{kind} not found: {ref.name}")
                ops.append(Op.update(kind, ref.id, rec.data, expect=rec.version))
        return ops

    async def _respec(self, service_id: str, respec: Callable[[spec.Service], spec.ServiceSpec],
                      resume: bool = False, registry_auth: str | None = None, version: int | None = None) -> dict:
        """Write the spec `respec` makes of the service as stored, with compare-and-set:
        a write in between (the allocator's, another update) is read again and
        `respec` applied to it. A new task template gets the next spec version and
        starts an update; `resume`: an update paused on failures goes on (SwarmKit
        resets the UpdateStatus on every update, so `service update` resumes one).
        `registry_auth` (not None): the service's credentials are replaced (they do not
        roll tasks: SwarmKit's IsTaskDirty ignores pull options)."""
        def change(service: spec.Service) -> spec.Service:
            new_spec = respec(service)
            now = time.time()
            # A job runs again after every update (SwarmKit's controlapi bumps JobIteration on each).
            reruns = new_spec.mode in spec.JOB_MODES
            new = dataclasses.replace(service, spec=new_spec, updated_at=now,
                                      job_iteration=service.job_iteration + (1 if reruns else 0),
                                      registry_auth=service.registry_auth if registry_auth is None else registry_auth)
            if rolls(service.spec, new_spec):
                version = max(service.last_spec_version, service.spec_version) + 1
                new = dataclasses.replace(new, spec_version=version, last_spec_version=version,
                                          previous_spec=service.spec, previous_spec_version=service.spec_version)
            elif not (resume and service.update_status is not None and service.update_status.state in PAUSED):
                return new
            if reruns:
                return new      # jobs have no rolling update
            return dataclasses.replace(new, update_status=spec.UpdateStatus("updating", now, 0.0, UPDATE_STARTED))

        service, _ = await self.m.compare_and_set(spec.SERVICE, service_id, change, what=f"service {service_id}",
                                                  version=version, decode=_decode_service, encode=_encode_service,
                                                  also=lambda old, new: self._claim_files(new.spec, old.spec))
        return {"id": service.id, "name": service.spec.name, "mode": service.spec.mode}

    async def update(self, params: dict) -> dict:
        service = self.find(str(params.get("ref", "")))
        force, rollback = _flag(params, "force"), _flag(params, "rollback")
        # Docker's ?version=N: the record's version as inspect showed it (compare-and-set)
        version = params.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            raise _bad("version must be a record version (an integer from service.inspect)")
        if rollback:
            if force or any(key in params for key in REPLACEABLE):
                raise _bad("other flags may not be combined with --rollback")
            return await self.rollback({"ref": service.id})
        params = self._resolve_files(self._resolve_networks(params))
        auth, no_resolve = registry_options(params)
        warnings: list[str] = []
        if "image" in params:
            # As docker's update: only a new --image is resolved (a moved tag changes nothing until then).
            apply_update(service.spec, params)      # the input checked before a registry is asked
            image, warnings = await self._pin_image(str(params["image"]), service.registry_auth if auth is None
                                                    else auth, no_resolve)
            params = dict(params, image=image)

        new_spec = apply_update(service.spec, params)
        if new_spec.container != service.spec.container or new_spec.constraints != service.spec.constraints:
            await self._check_on_nodes(new_spec)    # before the write: a check waits on the nodes

        def respec(current: spec.Service) -> spec.ServiceSpec:
            new_spec = apply_update(current.spec, params)
            self._check_ports_free(new_spec, current.id)
            # --force: a new task template with the same values, so that every task rolls
            bump = current.spec.container.force_update + (1 if force else 0)
            return dataclasses.replace(new_spec, container=dataclasses.replace(new_spec.container, force_update=bump))

        answer = await self._respec(service.id, respec, resume=True, registry_auth=auth, version=version)
        return {**answer, "warnings": warnings} if warnings else answer

    async def rollback(self, params: dict) -> dict:
        """`service rollback` (and `service update --rollback`): back to the previous spec,
        swapped with the current one as SwarmKit's controlapi does (a second rollback
        returns), rolled out with the rollback config."""
        service = self.find(str(params.get("ref", "")))

        def change(current: spec.Service) -> spec.Service:
            if current.previous_spec is None:
                raise _bad(f"service {current.id} does not have a previous spec")
            self._check_ports_free(current.previous_spec, current.id)
            now = time.time()
            reruns = current.previous_spec.mode in spec.JOB_MODES
            return dataclasses.replace(
                current, spec=current.previous_spec, spec_version=current.previous_spec_version,
                previous_spec=current.spec, previous_spec_version=current.spec_version, updated_at=now,
                last_spec_version=max(current.last_spec_version, current.spec_version),
                job_iteration=current.job_iteration + (1 if reruns else 0),
                update_status=None if reruns else spec.UpdateStatus("rollback_started", now, 0.0, MANUAL_ROLLBACK))

        new, _ = await self.m.compare_and_set(spec.SERVICE, service.id, change, what=f"service {service.id}",
                                              decode=_decode_service, encode=_encode_service)
        return {"id": new.id, "name": new.spec.name, "mode": new.spec.mode}

    async def scale(self, params: dict) -> list[dict]:
        out = []
        scales = params.get("scales") or {}
        if not isinstance(scales, dict) or len(scales) > MAX_LIST:
            raise _bad("scales must be a map of services to replica counts")
        for ref, replicas in scales.items():
            service = self.find(ref)
            if service.spec.mode not in ("replicated", "replicated-job"):
                raise _bad(f"{service.spec.name}: scale can only be used with replicated or replicated-job mode")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= MAX_REPLICAS:
                raise _bad(f"invalid replicas value for {ref}: {replicas!r}")
            out.append(await self._respec(service.id, lambda s, n=replicas: dataclasses.replace(s.spec, replicas=n)))
        return out

    async def rm(self, params: dict) -> list[str]:
        removed = []
        for ref in _refs(params):
            service = self.find(ref)
            await self.m.commit([Op.delete(spec.SERVICE, service.id)])
            removed.append(service.spec.name)
        return removed


def rolls(old: spec.ServiceSpec, new: spec.ServiceSpec) -> bool:
    """Does going from `old` to `new` change the task template, so that tasks roll? Scaling does
    not, nor do the update and rollback configs (they say how tasks roll, not what they run)."""
    def template(s: spec.ServiceSpec) -> spec.ServiceSpec:
        return dataclasses.replace(s, replicas=0, update_config=spec.UpdateConfig(),
                                   rollback_config=spec.UpdateConfig())
    return template(old) != template(new)


def _flag(params: dict, key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false")
    return value


def _refs(params: dict) -> list[str]:
    refs = params.get("refs") or []
    if not isinstance(refs, list) or len(refs) > MAX_LIST or not all(isinstance(r, str) and len(r) <= 256 for r in refs):
        raise _bad("refs must be a list of service names or IDs")
    return refs


def _decode_service(data: bytes) -> spec.Service:
    return spec.service_from_dict(model.decode(data))


def _encode_service(service: spec.Service) -> bytes:
    return model.encode(spec.to_dict(service))


def listed_image(image: str) -> str:
    """The image as `service ls` shows it, as docker/cli's: a tagged reference without its
    pinned digest ("host:5000/app:1"), anything else as it is."""
    try:
        ref = reference.parse(image)
    except reference.InvalidReference:
        return image
    return str(ref.name_only().with_tag(ref.tag)) if ref.tag and ref.digest else image


def _domain(image: str) -> str:
    try:
        return reference.parse_normalized(image).domain
    except reference.InvalidReference:
        return image


def _image_known(ref: str, images: set[str]) -> bool:
    """Does a node hold `ref`? `images` are the store keys the nodes report: "NAME:TAG" and
    "NAME@sha256:..." with NAME familiar (a pinned reference is known by its digest)."""
    if ref in images or any(i.startswith(ref) for i in images if ref.startswith("sha256:")):
        return True
    try:
        parsed = reference.parse_normalized(ref)
    except reference.InvalidReference:
        return False
    name = parsed.familiar_name
    return (f"{name}@{parsed.digest}" if parsed.digest else f"{name}:{parsed.tag or 'latest'}") in images

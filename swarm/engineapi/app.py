"""The Engine API's ASGI application: routes, request checks, and the calls to the local API.

How this works. Each request goes through `EngineApp.__call__`: a path versioned as
/v1.NN/... is checked against the versions served (1.24 to 1.50, dockerd's sentences
otherwise) and stripped, then Starlette routes it. A handler reads the query and the body
(at most MAX_BODY bytes, JSON, checked against moby's swagger schema), converts it with the
pure converters (services, objects, swarmops) into a local method's params, calls the
daemon's local router in process (`call`: the same validation, compare-and-set and errors as
the CLI's; outside any swarm, the daemon process's own: swarm/daemon/host.py) and converts
the answer back. Errors leave as Docker's {"message": ...} with its status
(errors.STATUS); anything not about swarm mode is 501.
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from swarm.api.model import rfc3339
from swarm.engineapi import events, images, logs, objects, schema, services, swarmops
from swarm.engineapi.errors import EngineError, from_rpc
from swarm.engineapi.fields import Unsupported
from swarm.engineapi.jsonbody import ListCache, encode_json
from swarm.rpc.messages import RPCError

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024        # a secret is at most 500 KiB, base64: 667 KiB; a spec far less
CALL_TIMEOUT = 60.0           # a local call (a service create waits on the nodes' checks)
LOGS_WAIT = 2.0               # seconds one follow read waits for new lines
_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
# Swarm-mode paths of which some operations are not served yet: their 501 says so, not
# "swarm mode only".
_SWARM_PATHS = frozenset({"swarm", "nodes", "services", "tasks", "networks", "secrets", "configs"})

# (method, params) -> answer, raising RPCError: the daemon's local router, in process.
Call = Callable[[str, dict], Awaitable[Any]]


def _version_error(major: int, minor: int) -> str | None:
    asked = (major, minor)
    low, high = (tuple(int(x) for x in v.split(".")) for v in (objects.MIN_API_VERSION, objects.API_VERSION))
    if asked < low:
        return (f"client version {major}.{minor} is too old. Minimum supported API version is "
                f"{objects.MIN_API_VERSION}, please upgrade your client to a newer version")
    if asked > high:
        return f"client version {major}.{minor} is too new. Maximum supported API version is {objects.API_VERSION}"
    return None


TASK_CACHE = 4096              # tasks whose JSON is kept between two task lists (about 0.6 KiB each)


def _json(data: Any, status: int = 200) -> Response:
    return _json_bytes(encode_json(data), status)


def _json_bytes(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _message(status: int, message: str) -> Response:
    return _json({"message": message}, status)


class EngineApp:
    """The ASGI application. `call`: the local API of the moment (the daemon process's:
    swarm/daemon/host.py); `role`: "inactive", "locked", "manager" or "worker" now;
    `host`: this machine's facts for /info (NCPU, MemTotal, KernelVersion, Architecture)."""

    def __init__(self, call: Call, role: Callable[[], str], host: dict | None = None) -> None:
        self._call = call
        self._role = role
        self._host = host or {}
        self._task_json = ListCache(objects.task_view, objects.TASK_VIEW_FIELDS, TASK_CACHE)
        r = Route
        routes = [
            r("/_ping", self.ping, methods=["GET", "HEAD"]),
            r("/version", self.version, methods=["GET"]),
            r("/info", self.info, methods=["GET"]),
            r("/events", self.events, methods=["GET"]),
            r("/images/create", self.image_create, methods=["POST"]),
            r("/images/json", self.image_list, methods=["GET"]),
            r("/images/{name:path}/json", self.image_inspect, methods=["GET"]),
            r("/distribution/{name:path}/json", self.distribution, methods=["GET"]),
            r("/swarm", self.swarm_inspect, methods=["GET"]),
            r("/swarm/init", self.swarm_init, methods=["POST"]),
            r("/swarm/join", self.swarm_join, methods=["POST"]),
            r("/swarm/leave", self.swarm_leave, methods=["POST"]),
            r("/swarm/update", self.swarm_update, methods=["POST"]),
            r("/swarm/unlockkey", self.swarm_unlock_key, methods=["GET"]),
            r("/swarm/unlock", self.swarm_unlock, methods=["POST"]),
            r("/nodes", self.node_list, methods=["GET"]),
            r("/nodes/{id}", self.node_inspect, methods=["GET"]),
            r("/nodes/{id}", self.node_delete, methods=["DELETE"]),
            r("/nodes/{id}/update", self.node_update, methods=["POST"]),
            r("/services", self.service_list, methods=["GET"]),
            r("/services/create", self.service_create, methods=["POST"]),
            r("/services/{id}", self.service_inspect, methods=["GET"]),
            r("/services/{id}", self.service_delete, methods=["DELETE"]),
            r("/services/{id}/update", self.service_update, methods=["POST"]),
            r("/services/{id}/logs", self.service_logs, methods=["GET"]),
            r("/tasks", self.task_list, methods=["GET"]),
            r("/tasks/{id}", self.task_inspect, methods=["GET"]),
            r("/tasks/{id}/logs", self.service_logs, methods=["GET"]),
            r("/networks", self.network_list, methods=["GET"]),
            r("/networks/create", self.network_create, methods=["POST"]),
            r("/networks/{id}", self.network_inspect, methods=["GET"]),
            r("/networks/{id}", self.network_delete, methods=["DELETE"]),
        ]
        for kind in ("secret", "config"):
            routes += [
                r(f"/{kind}s", self._file_list(kind), methods=["GET"]),
                r(f"/{kind}s/create", self._file_create(kind), methods=["POST"]),
                r(f"/{kind}s/{{id}}", self._file_inspect(kind), methods=["GET"]),
                r(f"/{kind}s/{{id}}", self._file_delete(kind), methods=["DELETE"]),
                r(f"/{kind}s/{{id}}/update", self._file_update(kind), methods=["POST"]),
            ]
        routes.append(r("/{rest:path}", self.not_served,
                        methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
        self.app = Starlette(routes=routes, exception_handlers={
            EngineError: self._engine_error, Unsupported: self._bad, schema.BadBody: self._bad,
            Exception: self._internal})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            m = _VERSIONED.match(scope["path"])
            if m:
                problem = _version_error(int(m[1]), int(m[2]))
                if problem:
                    await _message(400, problem)(scope, receive, send)
                    return
                scope = dict(scope, path=m[3], raw_path=m[3].encode(), engine_api_version=(int(m[1]), int(m[2])))
            if scope["path"] == "/_ping" and scope["method"] in ("GET", "HEAD"):
                # every docker CLI command starts with a ping: answered here, without Starlette's
                # middleware and router (a third of the request's CPU in the app), the same answer
                await self._ping_response(scope["method"])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    # -- plumbing -------------------------------------------------------------------------

    async def call(self, method: str, params: dict) -> Any:
        try:
            with trio.fail_after(CALL_TIMEOUT):
                return await self._call(method, params)
        except RPCError as exc:
            raise from_rpc(exc.code, exc.message) from None
        except trio.TooSlowError:
            raise EngineError(503, f"{method} did not finish within {CALL_TIMEOUT:g} s; retry") from None

    async def body(self, request: Request, path: str) -> dict:
        """The request's JSON body, at most MAX_BODY bytes, checked against the swagger
        schema of `path` (its template: "/services/create")."""
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
            raise EngineError(413, f"request body too large: at most {MAX_BODY} bytes")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_BODY:
                raise EngineError(413, f"request body too large: at most {MAX_BODY} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            data = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise EngineError(400, f"invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EngineError(400, "invalid JSON: the body must be a JSON object")
        return schema.check(path, "post", data)

    @staticmethod
    def filters(request: Request) -> dict:
        raw = request.query_params.get("filters")
        if not raw:
            return {}
        try:
            return objects.filters_param(json.loads(raw))
        except ValueError:
            raise EngineError(400, "invalid filter: the filters query must be JSON") from None

    @staticmethod
    def version_query(request: Request) -> int:
        raw = request.query_params.get("version", "")
        if not raw.isdigit():
            raise EngineError(400, "invalid version: the version query (Version.Index of the object) is required")
        return int(raw)

    async def _engine_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EngineError)
        return _message(exc.status, exc.message)

    async def _bad(self, request: Request, exc: Exception) -> Response:
        return _message(400, str(exc))

    async def _internal(self, request: Request, exc: Exception) -> Response:
        log.exception("Engine API %s %s failed", request.method, request.url.path, exc_info=exc)
        return _message(500, f"internal error while handling {request.method} {request.url.path}")

    async def not_served(self, request: Request) -> Response:
        what = f"{request.method} {request.url.path}"
        if request.url.path.split("/")[1] in _SWARM_PATHS:
            return _message(501, f"{what} is not served by this daemon yet: use the swarm CLI for it")
        return _message(501, f"{what} is not served: {objects.SWARM_MODE_ONLY}")

    # -- system ---------------------------------------------------------------------------

    def _ping_headers(self) -> dict:
        return {"Api-Version": objects.API_VERSION, "OSType": "linux", "Docker-Experimental": "false",
                "Swarm": swarmops.ping_swarm_header(self._role()), "Cache-Control": "no-cache, no-store, must-revalidate",
                "Pragma": "no-cache"}

    def _ping_response(self, method: str) -> Response:
        body = b"" if method == "HEAD" else b"OK"
        return Response(body, media_type="text/plain; charset=utf-8", headers=self._ping_headers())

    async def ping(self, request: Request) -> Response:
        return self._ping_response(request.method)

    async def version(self, request: Request) -> Response:
        return _json(objects.version_view(), 200)

    async def info(self, request: Request) -> Response:
        answer = await self.call("info", {})
        view = swarmops.idle_info_view if answer.get("state") in ("inactive", "locked") else objects.info_view
        return _json(view(answer, self._host, rfc3339(time.time())))

    async def events(self, request: Request) -> Response:
        """`docker events`: the store's changes, one JSON line each, until `until` or the client goes."""
        q = request.query_params
        since, until = events.unix_nanos("since", q.get("since")), events.unix_nanos("until", q.get("until"))
        wanted = events.check_filters(self.filters(request))
        first = await self.call("events", events.stream_params(since, time.time_ns()))

        async def lines() -> AsyncIterator[bytes]:
            answer = first
            while True:
                chunk = b"".join(events.line(e) for e in answer["events"]
                                 if events.matches(e, wanted) and (until is None or e["time_nano"] <= until))
                if chunk:
                    yield chunk
                wait = LOGS_WAIT
                if until is not None:
                    left = (until - time.time_ns()) / 1e9
                    if left <= 0:
                        return
                    wait = min(wait, left)
                answer = await self.call("events", {"after": answer["next"], "wait": wait})

        return StreamingResponse(lines(), media_type=events.MEDIA_TYPE)

    # -- images -----------------------------------------------------------------------------

    async def image_create(self, request: Request) -> Response:
        """`docker pull`: the node's pull (image.pull's long poll) as dockerd's progress stream."""
        q = request.query_params
        ref = images.pull_ref(q.get("fromImage"), q.get("tag"))
        first = await self.call("image.pull", {"ref": ref})       # a bad reference: a 400 before the 200

        async def messages() -> AsyncIterator[bytes]:
            shown: dict[str, int] = {}
            yield json.dumps(images.pulling_from(ref)).encode() + b"\r\n"
            answer = first
            while True:
                lines = images.pull_messages(answer, shown)
                if lines:
                    yield b"".join(json.dumps(m).encode() + b"\r\n" for m in lines)
                if answer.get("done"):
                    return
                answer = await self.call("image.pull", {"op": answer["op"], "version": answer["version"],
                                                        "since": answer["logged"]})

        return StreamingResponse(messages(), media_type="application/json")

    async def image_list(self, request: Request) -> Response:
        wanted = self.filters(request)
        version = request.scope.get("engine_api_version", (1, 50))
        return _json([images.summary_view(row, version) for row in await self.call("image.ls", {})
                      if images.image_matches(row, wanted)])

    async def image_inspect(self, request: Request) -> Response:
        name = request.path_params["name"]
        answer = await self.call("image.inspect", {"refs": [name]})
        if not answer.get("images"):
            raise EngineError(404, f"No such image: {name}")
        return _json(answer["images"][0])

    async def distribution(self, request: Request) -> Response:
        params = {"ref": request.path_params["name"]}
        auth = request.headers.get("x-registry-auth")
        if auth:
            params["registry_auth"] = auth
        return _json(await self.call("image.distribution", params))

    # -- swarm ----------------------------------------------------------------------------

    async def swarm_inspect(self, request: Request) -> Response:
        worker = await self.call("join_token", {"role": "worker", "rotate": False})
        manager = await self.call("join_token", {"role": "manager", "rotate": False})
        return _json(objects.swarm_view(await self.call("info", {}), worker["token"], manager["token"]))

    async def swarm_init(self, request: Request) -> Response:
        """`docker swarm init`: the node ID; the daemon serves as a manager before the answer
        (docker/cli asks for the join token and the node right after)."""
        answer = await self.call("swarm.init", swarmops.init_params(await self.body(request, "/swarm/init")))
        return _json(answer["node_id"])

    async def swarm_join(self, request: Request) -> Response:
        await self.call("swarm.join", swarmops.join_params(await self.body(request, "/swarm/join")))
        return Response(status_code=200)

    async def swarm_leave(self, request: Request) -> Response:
        """`docker swarm leave`: the node leaves and the daemon serves on, inactive (as dockerd)."""
        try:
            await self.call("leave", {"force": logs.as_bool(request.query_params.get("force"))})
        except EngineError as exc:
            if exc.status != 409:
                raise
            raise EngineError(503, exc.message) from None     # dockerd's refusals of a leave are 503s
        return Response(status_code=200)

    async def swarm_update(self, request: Request) -> Response:
        params = objects.swarm_update_params(await self.body(request, "/swarm/update"))
        if params:
            await self.call("cluster.update", params)
        for role, flag in (("worker", "rotateWorkerToken"), ("manager", "rotateManagerToken")):
            if logs.as_bool(request.query_params.get(flag)):
                await self.call("join_token", {"role": role, "rotate": True})
        if logs.as_bool(request.query_params.get("rotateManagerUnlockKey")):
            await self.call("unlock_key", {"rotate": True})
        return Response(status_code=200)

    async def swarm_unlock_key(self, request: Request) -> Response:
        try:
            key = (await self.call("unlock_key", {}))["unlock_key"]
        except EngineError as exc:
            if exc.status != 400:
                raise
            key = ""           # autolock off: docker/cli prints "no unlock key is set"
        return _json({"UnlockKey": key})

    async def swarm_unlock(self, request: Request) -> Response:
        body = await self.body(request, "/swarm/unlock")
        await self.call("unlock", {"key": body.get("UnlockKey", "")})
        return Response(status_code=200)

    # -- nodes ----------------------------------------------------------------------------

    async def _node(self, ref: str) -> dict:
        return (await self.call("node.inspect", {"refs": [ref]}))[0]

    async def node_list(self, request: Request) -> Response:
        rows = await self.call("node.ls", {"filters": self.filters(request)})
        found = await self.call("node.inspect", {"refs": [r["id"] for r in rows]}) if rows else []
        return _json([objects.node_view(n) for n in found])

    async def node_inspect(self, request: Request) -> Response:
        return _json(objects.node_view(await self._node(request.path_params["id"])))

    async def node_update(self, request: Request) -> Response:
        version = self.version_query(request)
        body = await self.body(request, "/nodes/{id}/update")
        current = await self._node(request.path_params["id"])
        params, change = objects.node_update_params(body, current)
        await self.call("node.update", dict(params, version=version))     # compare-and-set, even with no change
        if change:
            await self.call(f"node.{change}", {"refs": [current["id"]]})
        return Response(status_code=200)

    async def node_delete(self, request: Request) -> Response:
        force = logs.as_bool(request.query_params.get("force"))
        await self.call("node.rm", {"refs": [request.path_params["id"]], "force": force})
        return Response(status_code=200)

    # -- services -------------------------------------------------------------------------

    async def _services(self, refs: list[str]) -> list[dict]:
        """service.inspect of each ref, skipping one removed in between."""
        try:
            return await self.call("service.inspect", {"refs": refs}) if refs else []
        except EngineError as exc:
            if exc.status != 404:
                raise
        found = []
        for ref in refs:
            try:
                found += await self.call("service.inspect", {"refs": [ref]})
            except EngineError as exc:
                if exc.status != 404:
                    raise
        return found

    async def service_list(self, request: Request) -> Response:
        rows = await self.call("service.ls", {"filters": self.filters(request)})
        status = logs.as_bool(request.query_params.get("status"))
        replicas = {r["id"]: r["replicas"] for r in rows}
        return _json([services.service_view(v, services.service_status(replicas[v["id"]]) if status else None)
                      for v in await self._services([r["id"] for r in rows])])

    async def service_inspect(self, request: Request) -> Response:
        found = await self.call("service.inspect", {"refs": [request.path_params["id"]]})
        return _json(services.service_view(found[0]))

    async def service_create(self, request: Request) -> Response:
        params = services.spec_params(await self.body(request, "/services/create"))
        # docker/cli resolves the image's digest itself (GET /distribution) before it sends the spec:
        # dockerd keeps the reference as given, and so does this daemon.
        params["no_resolve_image"] = True
        auth = request.headers.get("x-registry-auth")
        if auth:
            params["registry_auth"] = auth
        answer = await self.call("service.create", params)
        out: dict[str, Any] = {"ID": answer["id"]}
        if answer.get("warnings"):
            out["Warnings"] = answer["warnings"]
        return _json(out, 201)

    async def service_update(self, request: Request) -> Response:
        version = self.version_query(request)
        body = await self.body(request, "/services/{id}/update")
        current = (await self.call("service.inspect", {"refs": [request.path_params["id"]]}))[0]
        if request.query_params.get("rollback") == "previous":
            if current.get("version") != version:
                raise EngineError(409, f"update out of sequence: service {current['id']} is at version "
                                       f"{current.get('version')}, not {version}")
            answer = await self.call("service.update", {"ref": current["id"], "rollback": True})
        else:
            params = services.update_params(body, current)
            params.update(ref=current["id"], version=version, no_resolve_image=True)
            auth = request.headers.get("x-registry-auth")
            if auth:
                params["registry_auth"] = auth
            answer = await self.call("service.update", params)
        return _json({"Warnings": answer.get("warnings") or None})

    async def service_delete(self, request: Request) -> Response:
        await self.call("service.rm", {"refs": [request.path_params["id"]]})
        return Response(status_code=200)

    async def service_logs(self, request: Request) -> Response:
        q = request.query_params
        stdout, stderr = logs.as_bool(q.get("stdout")), logs.as_bool(q.get("stderr"))
        if not (stdout or stderr):
            raise EngineError(400, "Bad parameters: you must choose at least one stream")
        params: dict[str, Any] = {"ref": request.path_params["id"], "tail": logs.tail_param(q.get("tail")),
                                  "follow": logs.as_bool(q.get("follow")), "cursors": None, "wait": LOGS_WAIT,
                                  "details": logs.as_bool(q.get("details"))}
        for name in ("since", "until"):
            value = logs.time_param(name, q.get(name))
            if value:
                params[name] = value
        timestamps, with_details = logs.as_bool(q.get("timestamps")), params["details"]
        first = await self.call("service.logs", params)     # errors (no such service) before the 200

        async def frames() -> AsyncIterator[bytes]:
            answer = first
            while True:
                chunk = b"".join(logs.frame(line, timestamps=timestamps, with_details=with_details) for line in answer["lines"]
                                 if logs.wanted(line, stdout, stderr))
                if chunk:
                    yield chunk
                if answer.get("done"):
                    return
                answer = await self.call("service.logs", dict(params, cursors=answer["cursors"]))

        return StreamingResponse(frames(), media_type=logs.MULTIPLEXED)

    # -- tasks ----------------------------------------------------------------------------

    async def task_list(self, request: Request) -> Response:
        wanted = self.filters(request)
        # docker/cli's progress display asks for the tasks of the service's current spec only
        up_to_date = [v.lower() in ("1", "true") for v in wanted.pop("_up-to-date", [])]
        rows = await self.call("service.ps", {"refs": [], "filters": wanted})
        if any(up_to_date):
            versions = {v["id"]: v["spec_version"] for v in await self._services(sorted({t["service_id"] for t in rows}))}
            rows = [t for t in rows if t["spec_version"] == versions.get(t["service_id"])]
        return _json_bytes(self._task_json.encode(rows))

    async def task_inspect(self, request: Request) -> Response:
        ref = request.path_params["id"]
        rows = await self.call("service.ps", {"refs": [], "filters": {"id": [ref]}})
        exact = [t for t in rows if t["id"] == ref] or rows
        if len(exact) != 1:
            raise EngineError(404 if not exact else 400, f"no such task: {ref}" if not exact
                              else f"task {ref} is ambiguous ({len(exact)} matches)")
        return _json(objects.task_view(exact[0]))

    # -- networks -------------------------------------------------------------------------

    async def network_list(self, request: Request) -> Response:
        rows = await self.call("network.ls", {"filters": self.filters(request)})
        found = await self.call("network.inspect", {"refs": [r["id"] for r in rows]}) if rows else []
        return _json([objects.network_view(n) for n in found])

    async def network_inspect(self, request: Request) -> Response:
        found = await self.call("network.inspect", {"refs": [request.path_params["id"]]})
        return _json(objects.network_view(found[0]))

    async def network_create(self, request: Request) -> Response:
        params = objects.network_create_params(await self.body(request, "/networks/create"))
        answer = await self.call("network.create", params)
        return _json({"Id": answer["id"], "Warning": ""}, 201)

    async def network_delete(self, request: Request) -> Response:
        await self.call("network.rm", {"refs": [request.path_params["id"]]})
        return Response(status_code=204)

    # -- secrets and configs ------------------------------------------------------------------

    def _file_list(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            rows = await self.call(f"{kind}.ls", {"filters": self.filters(request)})
            found = await self.call(f"{kind}.inspect", {"refs": [r["id"] for r in rows]}) if rows else []
            return _json([objects.file_object_view(o, kind) for o in found])
        return handler

    def _file_create(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            params = objects.file_object_params(await self.body(request, f"/{kind}s/create"))
            answer = await self.call(f"{kind}.create", params)
            return _json({"ID": answer["id"]}, 201)
        return handler

    def _file_inspect(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            found = await self.call(f"{kind}.inspect", {"refs": [request.path_params["id"]]})
            return _json(objects.file_object_view(found[0], kind))
        return handler

    def _file_update(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            version = self.version_query(request)
            params = objects.file_object_params(await self.body(request, f"/{kind}s/{{id}}/update"))
            if not params["data"]:
                del params["data"]            # Go's omitempty: no Data is "the same value"
            await self.call(f"{kind}.update", dict(params, ref=request.path_params["id"], version=version))
            return Response(status_code=200)
        return handler

    def _file_delete(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            await self.call(f"{kind}.rm", {"refs": [request.path_params["id"]]})
            return Response(status_code=204)
        return handler

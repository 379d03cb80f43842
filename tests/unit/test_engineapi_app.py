"""The Engine API's application over a recording fake of the local API: version negotiation,
Docker's error shapes and statuses, and bad input refused before any local call is made."""
import json

import httpx
import pytest

from swarm.engineapi.app import MAX_BODY, EngineApp
from swarm.rpc.messages import RPCError

INFO = {"node_id": "n1", "hostname": "m1", "role": "manager", "cluster_id": "c1", "addr": "10.0.0.1:2377",
        "managers": 1, "nodes": 1, "manager_addrs": ["10.0.0.1:2377"], "heartbeat_period": 1.0,
        "cert_expiry_period": 3600.0, "task_history_limit": 5, "default_addr_pools": ["10.0.0.0/8"]}
SERVICE = {"id": "s1", "version": 12, "created_at": "2026-01-01T00:00:00.000000000Z",
           "updated_at": "2026-01-01T00:00:00.000000000Z", "spec_version": 1, "vips": {}, "ports": [],
           "spec": None}


class FakeLocalAPI:
    """The daemon's local router: records calls, answers from a table or raises RPCError."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict]] = []

    async def __call__(self, method: str, params: dict):
        self.calls.append((method, params))
        answer = self.answers.get(method)
        if isinstance(answer, RPCError):
            raise answer
        if answer is None:
            raise RPCError("unknown_method", f"unknown method {method!r}")
        return answer


def client(api: FakeLocalAPI, role: str = "manager") -> httpx.AsyncClient:
    app = EngineApp(api, lambda: role, {"NCPU": 2, "MemTotal": 1, "KernelVersion": "6", "Architecture": "x86_64"})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://docker")


@pytest.mark.trio
async def test_ping_negotiates_like_dockerd():
    async with client(FakeLocalAPI({}), role="worker") as c:
        for method in ("GET", "HEAD"):
            r = await c.request(method, "/_ping")
            assert r.status_code == 200
            assert r.headers["api-version"] == "1.50" and r.headers["ostype"] == "linux"
            assert r.headers["swarm"] == "active/worker" and r.headers["docker-experimental"] == "false"
            assert "no-cache" in r.headers["cache-control"]
        assert (await c.get("/_ping")).text == "OK"
        assert (await c.get("/v1.24/version")).json()["MinAPIVersion"] == "1.24"
        r = await c.get("/v1.51/version")
        assert r.status_code == 400 and r.json()["message"] == (
            "client version 1.51 is too new. Maximum supported API version is 1.50")
        r = await c.get("/v1.23/version")
        assert r.status_code == 400 and "client version 1.23 is too old" in r.json()["message"]


@pytest.mark.trio
async def test_endpoints_outside_swarm_mode_are_501_with_a_json_message():
    api = FakeLocalAPI({})
    async with client(api) as c:
        for method, path in (("GET", "/v1.50/containers/json"), ("POST", "/build"), ("POST", "/containers/x/exec"),
                             ("GET", "/volumes"), ("GET", "/plugins")):
            r = await c.request(method, path)
            assert r.status_code == 501 and "serves swarm mode only" in r.json()["message"]
        for method, path in (("GET", "/swarm/init"), ("PUT", "/v1.50/swarm/leave")):
            r = await c.request(method, path)
            assert r.status_code == 501 and "not served by this daemon yet" in r.json()["message"]
    assert api.calls == []


@pytest.mark.parametrize("code, status", [("not_found", 404), ("conflict", 409), ("bad_request", 400),
                                          ("not_manager", 503), ("unavailable", 503), ("internal", 500)])
@pytest.mark.trio
async def test_rpc_errors_become_dockers_statuses_with_the_same_sentence(code, status):
    api = FakeLocalAPI({"service.inspect": RPCError(code, "the sentence")})
    async with client(api) as c:
        r = await c.get("/v1.50/services/web")
    assert r.status_code == status and r.json() == {"message": "the sentence"}


BAD_BODIES = [
    (b"{not json", 400, "invalid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"Name": "w", "TaskTemplate": {"ContainerSpec": {"Image": 7}}}).encode(), 400,
     "TaskTemplate.ContainerSpec.Image must be of type string"),
    (json.dumps({"Name": "w", "TaskTemplate": {"ContainerSpec": {"Image": "x", "Privileges": {
        "Seccomp": {"Mode": "unconfined"}}}}}).encode(), 400, "TaskTemplate.ContainerSpec.Privileges.Seccomp.Mode"),
    (b"{" + b" " * (MAX_BODY + 1) + b"}", 413, "request body too large"),
]


@pytest.mark.parametrize("body, status, message", BAD_BODIES)
@pytest.mark.trio
async def test_bad_bodies_are_refused_before_any_local_call(body, status, message):
    api = FakeLocalAPI({"service.create": {"id": "s1", "name": "w"}})
    async with client(api) as c:
        r = await c.post("/v1.50/services/create", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["message"]
    assert api.calls == []


@pytest.mark.trio
async def test_service_create_sends_the_converted_params_and_keeps_the_image_as_given():
    api = FakeLocalAPI({"service.create": {"id": "s1", "name": "w", "warnings": ["careful"]}})
    body = {"Name": "w", "TaskTemplate": {"ContainerSpec": {"Image": "demo:1", "Args": ["sleep", "9"]}},
            "Mode": {"Replicated": {"Replicas": 2}}}
    async with client(api) as c:
        r = await c.post("/v1.41/services/create", json=body, headers={"X-Registry-Auth": "e30="})
    assert r.status_code == 201 and r.json() == {"ID": "s1", "Warnings": ["careful"]}
    method, params = api.calls[0]
    assert method == "service.create"
    assert (params["name"], params["image"], params["command"], params["replicas"]) == ("w", "demo:1", ["sleep", "9"], 2)
    assert params["no_resolve_image"] is True and params["registry_auth"] == "e30="


@pytest.mark.trio
async def test_service_update_needs_a_version_and_passes_it_for_compare_and_set():
    spec = {"name": "w", "mode": "replicated"}
    api = FakeLocalAPI({"service.inspect": [dict(SERVICE, spec=spec)], "service.update": {"id": "s1"}})
    body = {"Name": "w", "TaskTemplate": {"ContainerSpec": {"Image": "demo:2"}}, "Mode": {"Replicated": {"Replicas": 1}}}
    async with client(api) as c:
        r = await c.post("/services/s1/update", json=body)
        assert r.status_code == 400 and "version" in r.json()["message"]
        r = await c.post("/services/s1/update?version=12", json=body)
    assert r.status_code == 200
    method, params = api.calls[-1]
    assert method == "service.update" and params["version"] == 12 and params["image"] == "demo:2"


@pytest.mark.trio
async def test_list_filters_are_passed_in_the_control_apis_shape():
    api = FakeLocalAPI({"node.ls": [], "service.ps": []})
    async with client(api) as c:
        assert (await c.get('/nodes?filters={"role":{"manager":true}}')).json() == []
        assert (await c.get('/tasks?filters={"service":["web"],"desired-state":["running"]}')).json() == []
        r = await c.get("/nodes?filters=nope")
    assert r.status_code == 400
    assert api.calls == [("node.ls", {"filters": {"role": ["manager"]}}),
                         ("service.ps", {"refs": [], "filters": {"service": ["web"], "desired-state": ["running"]}})]

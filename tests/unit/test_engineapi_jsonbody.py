"""The Engine API's JSON: msgspec's bytes are the stdlib's (as Starlette wrote them), and the
task list's cache gives the bytes an uncached encoding gives, re-encoding what changed."""
import json
import math

import httpx
import pytest

from swarm.engineapi import objects
from swarm.engineapi.app import EngineApp
from swarm.engineapi.jsonbody import ListCache, encode_json


def stdlib(data) -> bytes:
    """What starlette.responses.JSONResponse.render wrote."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def row(i: int, **changes) -> dict:
    """A service.ps row, every field it has."""
    out = {"id": f"t{i:024d}", "name": f"web.{i}", "image": "busybox:1", "node": "m1", "desired_state": "running",
           "current_state": "running 5 seconds ago", "error": "", "message": "started", "service_id": "s1",
           "slot": i, "node_id": "n1", "state": "running", "exit_code": None, "spec_version": 3, "job": False,
           "job_iteration": 0, "timestamp": "2026-12-07T13:00:00.000000001Z",
           "created_at": "2026-12-07T12:59:59.500000000Z"}
    out.update(changes)
    return out


def test_encode_json_writes_the_stdlib_bytes():
    for data in ([objects.task_view(row(1)), objects.task_view(row(2, error="no suitable node", exit_code=3,
                                                                       job=True, job_iteration=2))],
                 {"message": "é \u2028 \x00 \" \\ \n"}, {"n": 1 << 62, "m": -(1 << 63), "f": 0.25, "z": None},
                 {1: "int keys"}, [], {}):
        assert encode_json(data) == stdlib(data)
    assert encode_json({True: 1, None: 2}) == stdlib({True: 1, None: 2})      # msgspec refuses: the stdlib writes it
    assert encode_json({"x": math.nan}) == b'{"x":null}'      # the stdlib refused it (a 500): none is ever sent


def test_task_view_fields_are_all_it_reads():
    """A field of the row outside TASK_VIEW_FIELDS never changes the view: else the cache would
    answer a changed task with its old JSON."""
    base = row(1)
    for key in base:
        if key in objects.TASK_VIEW_FIELDS:
            continue
        for value in ("changed", 7, None, True):
            assert objects.task_view(dict(base, **{key: value})) == objects.task_view(base), key
    assert set(objects.TASK_VIEW_FIELDS) <= set(base)


class CountingView:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, r: dict) -> dict:
        self.calls += 1
        return objects.task_view(r)


def test_list_cache_gives_the_uncached_bytes_and_encodes_only_what_changed():
    view = CountingView()
    cache = ListCache(view, objects.TASK_VIEW_FIELDS, 100)
    rows = [row(i) for i in range(1, 11)]
    assert cache.encode(rows) == stdlib([objects.task_view(r) for r in rows])
    assert view.calls == 10
    rows[3] = row(4, state="failed", error="exit 1", exit_code=1)        # one task changed
    rows[5] = dict(rows[5], current_state="running 6 seconds ago")      # a field the view does not show
    assert cache.encode(rows) == stdlib([objects.task_view(r) for r in rows])
    assert view.calls == 11
    assert cache.encode([]) == b"[]"


def test_list_cache_is_bounded_and_takes_any_row():
    view = CountingView()
    cache = ListCache(view, objects.TASK_VIEW_FIELDS, 5)
    rows = [row(i) for i in range(1, 6)]
    cache.encode(rows)
    assert len(cache) == 5
    more = [row(i) for i in range(6, 9)]
    assert cache.encode(more) == stdlib([objects.task_view(r) for r in more])
    assert len(cache) <= 5                                      # started again when full
    longer = [row(i) for i in range(1, 9)]                      # longer than the cache: encoded whole
    assert cache.encode(longer) == stdlib([objects.task_view(r) for r in longer])
    odd = [{k: v for k, v in row(1).items() if k != "slot"}, row(2, slot=[1])]   # no slot; unhashable
    assert cache.encode(odd) == stdlib([objects.task_view(r) for r in odd])


@pytest.mark.trio
async def test_task_list_answers_the_same_json_each_time_and_after_a_change():
    rows = [row(i) for i in range(1, 4)]

    async def call(method: str, params: dict):
        assert method == "service.ps"
        return [dict(r) for r in rows]

    app = EngineApp(call, lambda: "manager", {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://docker") as c:
        for _ in range(2):
            r = await c.get("/v1.41/tasks")
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert r.content == stdlib([objects.task_view(t) for t in rows])
        rows[0] = row(1, state="shutdown", desired_state="shutdown")
        assert (await c.get("/tasks")).json()[0]["Status"]["State"] == "shutdown"


@pytest.mark.trio
async def test_ping_is_answered_before_the_router_with_the_routes_headers():
    app = EngineApp(lambda m, p: None, lambda: "manager", {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://docker") as c:
        for path in ("/_ping", "/v1.41/_ping"):
            r = await c.get(path)
            assert r.content == b"OK" and r.headers["content-length"] == "2"
            assert r.headers["content-type"] == "text/plain; charset=utf-8" and r.headers["swarm"] == "active/manager"
        r = await c.head("/_ping")
        assert r.status_code == 200 and r.content == b"" and r.headers["api-version"] == objects.API_VERSION
        assert (await c.post("/_ping")).status_code == 501            # other methods: the router's answer, as before

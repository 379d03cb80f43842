"""swarm.api.filters: Docker's list filters (keys, values, OR within a key, AND across keys)."""
from __future__ import annotations

import pytest

from swarm.api import filters
from swarm.api.errors import ApiError
from swarm.api.filters import (FilterError, NETWORK_FILTERS, NODE_FILTERS, SERVICE_FILTERS, TASK_FILTERS, check,
                               matches, parse)

WEB = {"id": "k5k3v6l9lqr8", "name": "web", "label": {"env": "prod", "tier": "front"}, "mode": "replicated"}
API = {"id": "a1b2c3", "name": "api", "label": {"env": "dev"}, "mode": "global"}


def names(wanted: dict, objs=(WEB, API), rules=SERVICE_FILTERS) -> list[str]:
    return [o["name"] for o in objs if matches(check(wanted, rules), rules, o)]


def test_parse_reads_docker_s_flags() -> None:
    assert parse(["name=web", " Label = env=prod ", "name=api", ""]) == \
        {"name": ["web", "api"], "label": ["env=prod"]}
    with pytest.raises(FilterError, match=r"bad format of filter 'name' \(expected name=value\)"):
        parse(["name"])


@pytest.mark.parametrize("wanted, expected", [
    ({}, ["web", "api"]),
    ({"name": ["we"]}, ["web"]),                           # a name matches by prefix
    ({"name": ["web", "api"]}, ["web", "api"]),            # one key's values: any may match
    ({"name": ["eb"]}, []),
    ({"id": ["a1"]}, ["api"]),
    ({"mode": ["global"]}, ["api"]),
    ({"name": ["web"], "mode": ["global"]}, []),           # different keys: all must match
    ({"label": ["env"]}, ["web", "api"]),
    ({"label": ["env=prod"]}, ["web"]),
    ({"label": ["env=prod", "tier"]}, ["web"]),            # labels: every one given must hold
    ({"label": ["env=prod", "tier=back"]}, []),
])
def test_service_filters(wanted: dict, expected: list[str]) -> None:
    assert names(wanted) == expected


def test_task_filters() -> None:
    tasks = [{"name": "web.1.t1", "id": "t1", "node": "n1", "desired-state": "running", "service": "s1", "label": {}},
             {"name": "web.2.t2", "id": "t2", "node": "n2", "desired-state": "shutdown", "service": "s1", "label": {}}]
    assert names({"desired-state": ["Running"]}, tasks, TASK_FILTERS) == ["web.1.t1"]   # caseless, as Docker's
    assert names({"node": ["n2", "n9"]}, tasks, TASK_FILTERS) == ["web.2.t2"]
    assert names({"name": ["web.2"]}, tasks, TASK_FILTERS) == ["web.2.t2"]


def test_node_and_network_filters() -> None:
    nodes = [{"name": "node-a", "role": "manager", "membership": "accepted", "label": {"zone": "a"},
              "node.label": {"zone": "a"}, "id": "m1"},
             {"name": "node-b", "role": "worker", "membership": "accepted", "label": {}, "node.label": {}, "id": "w1"}]
    assert names({"role": ["Worker"]}, nodes, NODE_FILTERS) == ["node-b"]
    assert names({"node.label": ["zone=a"]}, nodes, NODE_FILTERS) == ["node-a"]
    assert names({"membership": ["pending"]}, nodes, NODE_FILTERS) == []
    assert names({"role": [""]}, nodes, NODE_FILTERS) == ["node-a", "node-b"]     # Docker ignores an empty role
    nets = [{"name": "backend", "id": "q2m6", "driver": "overlay", "scope": "swarm", "label": {}, "type": "custom"},
            {"name": "ingress", "id": "i8h0", "driver": "overlay", "scope": "swarm", "label": {}, "type": "custom"}]
    assert names({"name": ["ack"]}, nets, NETWORK_FILTERS) == ["backend"]         # substring, as Docker's Match
    assert names({"name": ["^in"]}, nets, NETWORK_FILTERS) == ["ingress"]        # ... or a regexp
    assert names({"type": ["builtin"]}, nets, NETWORK_FILTERS) == []


@pytest.mark.parametrize("wanted, rules, message", [
    ({"nope": ["x"]}, SERVICE_FILTERS, "invalid filter 'nope'"),
    ({"node": ["x"]}, SERVICE_FILTERS, "invalid filter 'node'"),
    ({"role": ["boss"]}, NODE_FILTERS, "Invalid role filter: 'boss'"),
    ({"membership": ["maybe"]}, NODE_FILTERS, "Invalid membership filter: 'maybe'"),
    ({"desired-state": ["sleeping"]}, TASK_FILTERS, "Invalid desired-state filter: 'sleeping'"),
    ({"mode": ["both"]}, SERVICE_FILTERS,
     "invalid filter 'mode=both' (use replicated, global, replicated-job, global-job)"),
    ({"scope": ["planet"]}, NETWORK_FILTERS, "invalid filter 'scope=planet' (use swarm, global, local)"),
    ({"name": "web"}, SERVICE_FILTERS, "invalid filter 'name': expected a list of strings"),
    (["name=web"], SERVICE_FILTERS, "filters must be a map of filter names to lists of values"),
    ({"name": ["x"] * 101}, SERVICE_FILTERS, "too many filter values (at most 100)"),
])
def test_check_refuses_what_docker_refuses(wanted, rules, message: str) -> None:
    with pytest.raises(FilterError) as info:
        check(wanted, rules)
    assert str(info.value) == message


def test_from_params_is_a_bad_request() -> None:
    assert filters.from_params({}, SERVICE_FILTERS) == {}
    with pytest.raises(ApiError) as info:
        filters.from_params({"filters": {"colour": ["red"]}}, SERVICE_FILTERS)
    assert (info.value.code, info.value.message) == ("bad_request", "invalid filter 'colour'")


# -- the control API's list handlers, against the in-memory store ------------------


@pytest.mark.trio
async def test_handlers_filter_and_refuse_unknown_keys():
    from raft.store import Op
    from swarm.api import model, spec
    from swarm.manager.controlapi.networks import NetworkAPI
    from swarm.manager.controlapi.nodes import ControlAPI
    from swarm.manager.controlapi.services import ServiceAPI
    from tests.unit.test_controlapi import cluster

    store, manager = await cluster()
    services, networks, control = ServiceAPI(manager), NetworkAPI(manager), ControlAPI(manager)
    web = await services.create({"name": "web", "image": "demo:1", "labels": {"env": "prod"}})
    await services.create({"name": "api", "image": "demo:1"})
    await networks.create({"name": "front"})
    assert [r["name"] for r in await services.ls({"filters": {"label": ["env=prod"]}})] == ["web"]
    assert [r["name"] for r in await services.ls({"filters": {"name": ["a", "w"]}})] == ["api", "web"]
    assert [r["hostname"] for r in await control.node_ls({"filters": {"name": ["h1", "h2"], "role": ["worker"]}})] \
        == ["h1", "h2"]
    assert await control.node_ls({"filters": {"role": ["manager"]}}) == []
    assert [r["name"] for r in await networks.ls({"filters": {"name": ["fro"]}})] == ["front"]
    tasks = [spec.Task(id=f"t{slot}", service_id=web["id"], service_name="web", slot=slot, node_id=node,
                       desired_state=desired, spec=spec.ContainerSpec(image="demo:1"), spec_version=1)
             for slot, node, desired in ((1, "n1aaaa", "running"), (2, "n2bbbb", "running"), (3, "n2bbbb", "shutdown"))]
    await store.commit([Op.create(spec.TASK, t.id, model.encode(spec.to_dict(t))) for t in tasks])
    # nodes by hostname or ID prefix, services by name: matched on their IDs
    rows = await services.ps({"filters": {"node": ["h1"], "desired-state": ["running"], "service": ["web"]}})
    assert [r["id"] for r in rows] == ["t2"]
    assert [r["id"] for r in await services.ps({"refs": ["web"], "filters": {"name": ["web.1"]}})] == ["t1"]
    assert [r["id"] for r in await services.ps({"filters": {"node": ["n1", "h1"]}})] == ["t1", "t2", "t3"]
    for call, key in ((services.ls, "node"), (services.ps, "mode"), (control.node_ls, "desired-state"),
                      (networks.ls, "role")):
        with pytest.raises(ApiError) as info:
            await call({"filters": {key: ["x"]}})
        assert (info.value.code, info.value.message) == ("bad_request", f"invalid filter '{key}'")
    with pytest.raises(ApiError, match="node nope not found"):
        await services.ps({"filters": {"node": ["nope"]}})

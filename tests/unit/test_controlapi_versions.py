"""Spec versions, the previous spec, --force and rollback through the control API
(in-memory store): what `service update` and `service rollback` write."""
import dataclasses

import pytest

from raft.store import Op
from swarm.api import model, spec
from swarm.api.errors import ApiError
from swarm.manager.controlapi.services import ServiceAPI
from tests.unit.test_controlapi import cluster

pytestmark = pytest.mark.trio


async def test_a_new_template_gets_the_next_version_keeps_the_previous_spec_and_starts_an_update():
    _, manager = await cluster()
    services = ServiceAPI(manager)
    await services.create({"name": "web", "image": "demo:1", "replicas": 2})
    first = services.find("web")
    assert (first.spec_version, first.previous_spec, first.update_status) == (1, None, None)
    await services.update({"ref": "web", "env": ["A=1"]})
    web = services.find("web")
    assert (web.spec_version, web.last_spec_version, web.previous_spec, web.previous_spec_version) == (
        2, 2, first.spec, 1)
    assert (web.update_status.state, web.update_status.message) == ("updating", "update in progress")
    assert web.update_status.started_at >= web.created_at
    # what does not change the template rolls nothing: replicas, the update and rollback configs
    await services.scale({"scales": {"web": 3}})
    await services.update({"ref": "web", "update_config": {"parallelism": 2}})
    after = services.find("web")
    assert (after.spec_version, after.previous_spec) == (2, first.spec)
    assert after.spec.update_config.parallelism == 2 and after.spec.replicas == 3


async def test_force_bumps_the_template_so_every_task_rolls():
    _, manager = await cluster()
    services = ServiceAPI(manager)
    await services.create({"name": "web", "image": "demo:1"})
    await services.update({"ref": "web", "force": True})
    web = services.find("web")
    assert (web.spec.container.force_update, web.spec_version, web.update_status.state) == (1, 2, "updating")
    await services.update({"ref": "web", "env": ["B=2"]})      # another update keeps the counter
    assert services.find("web").spec.container.force_update == 1
    with pytest.raises(ApiError, match="force must be true or false"):
        await services.update({"ref": "web", "force": "yes"})


async def test_rollback_swaps_the_spec_and_the_previous_spec_with_their_versions():
    _, manager = await cluster()
    services = ServiceAPI(manager)
    await services.create({"name": "web", "image": "demo:1"})
    one = services.find("web").spec
    await services.update({"ref": "web", "env": ["V=2"]})
    two = services.find("web").spec
    assert await services.rollback({"ref": "web"}) == {"id": services.find("web").id, "name": "web",
                                                       "mode": "replicated"}
    web = services.find("web")
    assert (web.spec, web.spec_version, web.previous_spec, web.previous_spec_version) == (one, 1, two, 2)
    assert (web.update_status.state, web.update_status.message) == ("rollback_started", "manually requested rollback")
    await services.update({"ref": "web", "rollback": True})    # update --rollback: the same, back again
    web = services.find("web")
    assert (web.spec, web.spec_version, web.previous_spec, web.previous_spec_version) == (two, 2, one, 1)
    # a new spec after rollbacks takes a version above every one given so far
    await services.update({"ref": "web", "env": ["V=3"]})
    assert (services.find("web").spec_version, services.find("web").previous_spec_version) == (3, 2)


async def test_rollback_without_a_previous_spec_changes_nothing():
    store, manager = await cluster()
    services = ServiceAPI(manager)
    created = await services.create({"name": "web", "image": "demo:1"})
    before = store.get("service", created["id"])
    with pytest.raises(ApiError) as err:
        await services.rollback({"ref": "web"})
    assert (err.value.code, err.value.message) == ("bad_request",
                                                   f"service {created['id']} does not have a previous spec")
    assert store.get("service", created["id"]).version == before.version
    with pytest.raises(ApiError, match="other flags may not be combined with --rollback"):
        await services.update({"ref": "web", "rollback": True, "image": "demo:1"})


async def test_an_update_resumes_a_paused_update():
    store, manager = await cluster()
    services = ServiceAPI(manager)
    await services.create({"name": "web", "image": "demo:1"})
    await services.update({"ref": "web", "env": ["V=2"]})
    web = services.find("web")
    paused = dataclasses.replace(web, update_status=spec.UpdateStatus("paused", 5.0, 0.0, "update paused due to x"))
    await store.commit([Op.update(spec.SERVICE, web.id, model.encode(spec.to_dict(paused)))])
    await services.scale({"scales": {"web": 2}})       # scaling does not resume it
    assert services.find("web").update_status.state == "paused"
    await services.update({"ref": "web"})              # `service update web`: it goes on, counting afresh
    status = services.find("web").update_status
    assert status.state == "updating" and status.started_at > 5.0 and services.find("web").spec_version == 2

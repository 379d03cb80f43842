"""secret.update and config.update (what `docker stack deploy` calls on a second deploy):
only the labels change, the same name and value are accepted back, a stale version is
"update out of sequence", and a refused update writes nothing."""
from __future__ import annotations

import base64

import pytest

from swarm.api.errors import ApiError
from tests.unit.test_secrets import VALUE, apis


@pytest.mark.trio
async def test_only_labels_change_and_the_same_spec_is_accepted_back():
    store, secret_api, config_api, _, _, _ = await apis()
    for api, value in ((secret_api, VALUE), (config_api, b"key=value\n")):
        created = await api.create({"name": "app_x", "data": value, "labels": {"com.docker.stack.namespace": "app"}})
        [before] = await api.inspect({"refs": ["app_x"]})
        version = before["version"]["index"]
        await api.update({"ref": "app_x", "version": version, "name": "app_x", "data": value,
                          "labels": {"com.docker.stack.namespace": "app", "v": "2"}})
        [after] = await api.inspect({"refs": [created["id"]]})
        assert after["spec"]["labels"] == {"com.docker.stack.namespace": "app", "v": "2"}
        assert after["version"]["index"] > version and after["created_at"] == before["created_at"]
        if api is config_api:
            assert base64.b64decode(after["spec"]["data"]) == value
        # no value given: "the same value" (Go's omitempty)
        await api.update({"ref": "app_x", "version": after["version"]["index"], "labels": {}})
        assert (await api.ls({}))[0]["labels"] == {}


@pytest.mark.trio
async def test_a_new_value_a_new_name_or_a_stale_version_is_refused_and_writes_nothing():
    store, secret_api, _, _, _, _ = await apis()
    await secret_api.create({"name": "pw", "data": VALUE})
    [doc] = await secret_api.inspect({"refs": ["pw"]})
    version = doc["version"]["index"]
    index = store.index
    for params, code, sentence in (
            ({"data": b"other"}, "bad_request", "only updates to Labels are allowed"),
            ({"name": "renamed"}, "bad_request", "only updates to Labels are allowed"),
            ({"version": version - 1}, "conflict", "update out of sequence"),
            ({"labels": {"": "x"}}, "bad_request", "labels must be a map"),
            ({"ref": "nosuch"}, "not_found", "nosuch")):
        with pytest.raises(ApiError) as err:
            await secret_api.update({"ref": "pw", "version": version, **params})
        assert (err.value.code, sentence in err.value.message) == (code, True), err.value.message
    assert store.index == index

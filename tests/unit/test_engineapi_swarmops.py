"""`docker swarm init/join/leave` and a daemon outside any swarm: the pure converters of
swarm/engineapi/swarmops.py, and the app's endpoints over a recording fake of the local API."""
import json

import pytest

from swarm.api import model
from swarm.engineapi import swarmops
from swarm.engineapi.errors import EngineError
from swarm.engineapi.fields import Unsupported
from swarm.rpc.messages import RPCError
from tests.unit.test_engineapi_app import FakeLocalAPI, client

# What docker/cli 28.2 sends for `docker swarm init --advertise-addr 127.0.0.5` (captured).
CLI_INIT = {"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "127.0.0.5", "DataPathAddr": "", "DataPathPort": 0,
            "ForceNewCluster": False, "Spec": {"Labels": None, "Orchestration": {}, "Raft": {"ElectionTick": 0,
                                                                                           "HeartbeatTick": 0},
                                               "Dispatcher": {}, "CAConfig": {}, "TaskDefaults": {},
                                               "EncryptionConfig": {"AutoLockManagers": False}},
            "AutoLockManagers": False, "Availability": "", "DefaultAddrPool": [], "SubnetSize": 24}
CLI_JOIN = {"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": "", "DataPathAddr": "", "RemoteAddrs": ["10.0.0.1:2377"],
            "JoinToken": "SWMTKN-1-abc", "Availability": ""}


def test_the_clis_init_body_becomes_swarm_init_with_this_daemons_defaults():
    params = swarmops.init_params(json.loads(json.dumps(CLI_INIT)))
    # an advertise address without a port takes the listen address's (dockerd's rule)
    assert params == {"advertise_addr": "127.0.0.5:2377", "listen_addr": "0.0.0.0:2377",
                      "heartbeat": model.DEFAULT_HEARTBEAT, "cert_expiry": model.DEFAULT_CERT_EXPIRY,
                      "availability": "active", "settings": {"default_addr_pool_mask_length": 24}}


def test_init_flags_reach_the_settings():
    body = dict(CLI_INIT, ListenAddr="127.0.0.5:4000", AdvertiseAddr="127.0.0.5", DataPathPort=4800,
                DefaultAddrPool=["10.20.0.0/16"], SubnetSize=26, AutoLockManagers=True, Availability="drain",
                Spec={"Orchestration": {"TaskHistoryRetentionLimit": 0}, "Dispatcher": {"HeartbeatPeriod": 2_000_000_000},
                      "CAConfig": {"NodeCertExpiry": 3_600_000_000_000}})
    params = swarmops.init_params(body)
    assert params["advertise_addr"] == "127.0.0.5:4000" and params["listen_addr"] == "127.0.0.5:4000"
    assert params["heartbeat"] == 2.0 and params["cert_expiry"] == 3600.0 and params["availability"] == "drain"
    # an explicit 0 (keep no ended task) is a value, not "unset"
    assert params["settings"] == {"task_history_limit": 0, "autolock": True, "default_addr_pools": ["10.20.0.0/16"],
                                  "default_addr_pool_mask_length": 26, "data_path_port": 4800}


@pytest.mark.parametrize("change, words", [
    ({"AdvertiseAddr": ""}, "could not choose an IP address to advertise"),
    ({"ForceNewCluster": True}, "ForceNewCluster is not supported"),
    ({"Availability": "asleep"}, "invalid Availability 'asleep'"),
    ({"Spec": {"Name": "other"}}, 'swarm spec must be named "default"'),
])
def test_init_refusals_are_one_sentence(change, words):
    with pytest.raises(EngineError) as caught:
        swarmops.init_params(dict(CLI_INIT, **change))
    assert caught.value.status == 400 and words in caught.value.message


@pytest.mark.parametrize("change, field", [
    ({"DataPathAddr": "10.0.0.5"}, "DataPathAddr"),
    ({"Spec": {"Raft": {"SnapshotInterval": 10}}}, "Spec.Raft.SnapshotInterval"),
    ({"Spec": {"CAConfig": {"ExternalCAs": [{"URL": "https://ca"}]}}}, "Spec.CAConfig.ExternalCAs"),
    ({"Spec": {"Labels": {"a": "b"}}}, "Spec.Labels"),
    ({"Shiny": 1}, "Shiny"),
])
def test_init_fields_this_daemon_cannot_honour_are_named(change, field):
    with pytest.raises(Unsupported, match=f"^{field} is not supported"):
        swarmops.init_params(dict(CLI_INIT, **change))


def test_the_clis_join_body_becomes_swarm_join():
    assert swarmops.join_params(dict(CLI_JOIN)) == {"token": "SWMTKN-1-abc", "remote_addr": "10.0.0.1:2377",
                                                    "listen_addr": "0.0.0.0:2377", "advertise_addr": None}
    params = swarmops.join_params(dict(CLI_JOIN, RemoteAddrs=["m1"], ListenAddr="127.0.0.6:2400",
                                       AdvertiseAddr="127.0.0.6", Availability="active"))
    assert params["remote_addr"] == "m1:2377" and params["advertise_addr"] == "127.0.0.6:2400"


@pytest.mark.parametrize("change, words", [({"RemoteAddrs": []}, "at least 1 RemoteAddr is required to join"),
                                           ({"JoinToken": " "}, "invalid join token")])
def test_join_refusals_are_one_sentence(change, words):
    with pytest.raises(EngineError) as caught:
        swarmops.join_params(dict(CLI_JOIN, **change))
    assert caught.value.status == 400 and words in caught.value.message


def test_join_with_an_availability_is_refused_by_name():
    with pytest.raises(Unsupported, match="^Availability is not supported"):
        swarmops.join_params(dict(CLI_JOIN, Availability="drain"))


def test_info_and_ping_of_an_idle_daemon():
    host = {"NCPU": 2, "MemTotal": 1, "KernelVersion": "6", "Architecture": "x86_64"}
    view = swarmops.idle_info_view({"state": "inactive", "hostname": "h", "state_dir": "/s"}, host, "now")
    assert view["Swarm"]["LocalNodeState"] == "inactive" and view["Swarm"]["NodeID"] == ""
    assert view["Name"] == "h" and view["NCPU"] == 2 and view["Swarm"]["ControlAvailable"] is False
    assert swarmops.idle_info_view({"state": "locked", "node_id": "n1"}, host, "now")["Swarm"]["LocalNodeState"] == \
        "locked"
    assert [swarmops.ping_swarm_header(s) for s in ("inactive", "locked", "manager", "worker")] == \
        ["inactive", "locked", "active/manager", "active/worker"]


# -- the endpoints ----------------------------------------------------------------------------------


@pytest.mark.trio
async def test_init_answers_the_node_id_as_a_json_string():
    api = FakeLocalAPI({"swarm.init": {"node_id": "n1", "cluster_id": "c1", "addr": "127.0.0.5:2377"}})
    async with client(api, role="inactive") as c:
        r = await c.post("/v1.50/swarm/init", json=CLI_INIT)
    assert r.status_code == 200 and r.json() == "n1"
    assert api.calls == [("swarm.init", swarmops.init_params(CLI_INIT))]


@pytest.mark.trio
async def test_join_and_leave_reach_the_local_api():
    api = FakeLocalAPI({"swarm.join": {"node_id": "w1", "role": "worker"}, "leave": {"left": True}})
    async with client(api) as c:
        assert (await c.post("/v1.41/swarm/join", json=CLI_JOIN)).status_code == 200
        assert (await c.post("/swarm/leave?force=1")).status_code == 200
    assert [m for m, _ in api.calls] == ["swarm.join", "leave"] and api.calls[1][1] == {"force": True}


@pytest.mark.trio
async def test_bad_bodies_are_400_before_any_call():
    api = FakeLocalAPI({})
    async with client(api, role="inactive") as c:
        for path, body in (("/swarm/init", b'{"AdvertiseAddr":'), ("/swarm/join", b'{"ListenAddr": "x"}'),
                           ("/swarm/join", b'{"ListenAddr":"x","RemoteAddrs":"a","JoinToken":"t"}'),
                           ("/swarm/init", b'{"AdvertiseAddr": 5}')):
            r = await c.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["message"].startswith("invalid JSON"), (path, r.text)
    assert api.calls == []


@pytest.mark.trio
async def test_a_refused_leave_is_dockerds_503():
    refusal = "You are attempting to leave the swarm on a node that is participating as a manager."
    api = FakeLocalAPI({"leave": RPCError("conflict", refusal)})
    async with client(api) as c:
        r = await c.post("/swarm/leave")
    assert r.status_code == 503 and r.json() == {"message": refusal}


@pytest.mark.trio
async def test_an_inactive_daemon_says_so_as_dockerd():
    api = FakeLocalAPI({"info": {"state": "inactive", "hostname": "h", "state_dir": "/s"},
                        "node.ls": RPCError("not_manager", swarmops.NO_SWARM),
                        "swarm.init": RPCError("unavailable", swarmops.SWARM_EXISTS)})
    async with client(api, role="inactive") as c:
        assert (await c.get("/_ping")).headers["swarm"] == "inactive"
        assert (await c.get("/info")).json()["Swarm"]["LocalNodeState"] == "inactive"
        r = await c.get("/nodes")
        assert r.status_code == 503 and r.json()["message"] == swarmops.NO_SWARM
        r = await c.post("/swarm/init", json=CLI_INIT)
        assert r.status_code == 503 and r.json()["message"] == swarmops.SWARM_EXISTS

"""Cluster settings (`swarm init` flags, `swarm update`): their checks (swarm/api/model.py),
the address pools (allocator.pool_subnet), the history limit the orchestrator reads, and
`cluster.update` writing the cluster record with compare-and-set (against the in-memory store)."""
from __future__ import annotations

import pytest

from overlay.errors import PoolExhausted
from overlay.ipam import Allocator
from raft.store import Op
from swarm.api import model
from swarm.api.errors import ApiError
from swarm.api.model import BadSetting, init_settings, settings_update
from swarm.manager.allocator import pool_subnet
from swarm.manager.controlapi.networks import NetworkAPI
from swarm.manager.controlapi.nodes import ControlAPI
from swarm.manager.orchestrator import reconcile
from swarm.manager.planner import Snapshot
from swarm.manager.reconciler import read_snapshot
from tests.unit.test_controlapi import cluster
from tests.unit.test_orchestrator import failed, ids, nodes, run, service, task


def test_init_settings_have_dockers_defaults():
    assert init_settings() == {"heartbeat": 1.0, "cert_expiry": 90 * 24 * 3600.0, "task_history_limit": 5,
                               "default_addr_pools": ["10.0.0.0/8"], "default_addr_pool_mask_length": 24,
                               "data_path_port": 4789, "autolock": False}
    assert init_settings(data_path_port=0)["data_path_port"] == 4789            # 0: the default, as Docker's
    assert init_settings(default_addr_pools=["10.20.0.0/16", "192.168.0.0/20"], default_addr_pool_mask_length=26,
                         data_path_port=7789, task_history_limit=-1) == {
        "heartbeat": 1.0, "cert_expiry": 90 * 24 * 3600.0, "task_history_limit": -1,
        "default_addr_pools": ["10.20.0.0/16", "192.168.0.0/20"], "default_addr_pool_mask_length": 26,
        "data_path_port": 7789, "autolock": False}
    # A record from before the settings existed reads with the defaults.
    assert model.cluster_settings({"heartbeat": 0.5})["task_history_limit"] == 5


@pytest.mark.parametrize("kwargs, flag", [
    ({"data_path_port": 80}, "--data-path-port"), ({"data_path_port": 49152}, "--data-path-port"),
    ({"default_addr_pools": ["10.0.0.0/33"]}, "--default-addr-pool"),
    ({"default_addr_pools": ["10.1.2.3/16"]}, "--default-addr-pool"),             # host bits set
    ({"default_addr_pools": ["fd00::/64"]}, "--default-addr-pool"),
    ({"default_addr_pools": ["10.0.0.0/8", "10.5.0.0/16"]}, "--default-addr-pool"),   # overlapping
    ({"default_addr_pools": ["10.20.0.0/16"], "default_addr_pool_mask_length": 8},
     "--default-addr-pool-mask-length"),                                           # wider than the pool
    ({"default_addr_pool_mask_length": 31}, "--default-addr-pool-mask-length"),
    ({"task_history_limit": -2}, "--task-history-limit"), ({"task_history_limit": 1.5}, "--task-history-limit"),
    ({"heartbeat": 0.001}, "--dispatcher-heartbeat"), ({"cert_expiry": 1.0}, "--cert-expiry")])
def test_bad_settings_are_one_sentence_naming_the_flag(kwargs, flag):
    with pytest.raises(BadSetting) as err:
        init_settings(**kwargs)
    assert str(err.value).startswith(flag) and "\n" not in str(err.value)


def test_update_changes_only_what_is_given_and_refuses_what_init_fixed():
    assert settings_update({"task_history_limit": 2}) == {"task_history_limit": 2}
    assert settings_update({"autolock": False}) == {"autolock": False}
    assert settings_update({"heartbeat": 2.0, "cert_expiry": 3600.0, "task_history_limit": None}) == \
        {"heartbeat": 2.0, "cert_expiry": 3600.0}
    for params, words in (({"data_path_port": 5000}, "chosen at swarm init"),
                          ({"default_addr_pools": []}, "chosen at swarm init"), ({"autopilot": True}, "unknown"),
                          ({"autolock": "yes"}, "--autolock must be true or false"),
                          ({"heartbeat": -1.0}, "--dispatcher-heartbeat")):
        with pytest.raises(BadSetting, match=words):
            settings_update(params)


def test_subnets_come_from_the_pools_in_order():
    alloc = Allocator()
    pools = ["192.168.10.0/25", "10.50.0.0/16"]
    got = []
    for i in range(4):
        subnet = pool_subnet(alloc, pools, 26)
        alloc.add_pool(f"n{i}", subnet)
        got.append(subnet)
    assert got == ["192.168.10.0/26", "192.168.10.64/26", "10.50.0.0/26", "10.50.0.64/26"]
    alloc.add_pool("taken", "10.50.0.128/25")            # a user's --subnet inside a pool is skipped
    assert pool_subnet(alloc, pools, 26) == "10.50.1.0/26"
    with pytest.raises(PoolExhausted, match="default address pools"):
        pool_subnet(full(), ["192.168.0.0/29"], 29)


def full() -> Allocator:
    alloc = Allocator()
    alloc.add_pool("all", "192.168.0.0/29")
    return alloc


def test_the_orchestrator_keeps_the_history_the_cluster_asks_for():
    tasks = [failed(f"h{i}", attempt=i, created=float(i), ended=float(i)) for i in range(8)]
    tasks += [task("live", 1, created=100.0, attempt=8)]
    # the default, 5 a slot, the live task included (SwarmKit's reaper)
    assert sorted(run(service(), tasks).delete) == ["h0", "h1", "h2", "h3"]
    keep2 = reconcile(service(), tasks, nodes("n1"), 1000.0, ids(), history_limit=2)
    assert sorted(keep2.delete) == [f"h{i}" for i in range(7)]
    assert reconcile(service(), tasks, nodes("n1"), 1000.0, ids(), history_limit=-1).delete == []   # keep all
    assert Snapshot().history_limit == 5


@pytest.mark.trio
async def test_a_round_reads_the_history_limit_from_the_cluster_record():
    store, manager = await cluster()
    assert read_snapshot(store).history_limit == 5
    await manager.modify_cluster(lambda c: dict(c, task_history_limit=1))
    assert read_snapshot(store).history_limit == 1


@pytest.mark.trio
async def test_cluster_update_writes_the_record_with_compare_and_set():
    store, manager = await cluster()
    control = ControlAPI(manager)

    def meanwhile(op: Op) -> Op:                         # someone rotates a token between read and write
        record = model.decode(store.get(model.CLUSTER, model.CLUSTER_ID).data)
        return Op.update(model.CLUSTER, model.CLUSTER_ID,
                         model.encode(dict(record, tokens={"worker": "x" * 25, "manager": "m" * 25})),
                         expect=op.expect)
    store.before_update = meanwhile
    view = await control.cluster_update({"task_history_limit": 2, "heartbeat": 0.5})
    record = manager.cluster()
    assert record["task_history_limit"] == 2 and record["heartbeat"] == 0.5
    assert record["tokens"]["worker"] == "x" * 25        # the other write was read again, not lost
    assert view["task_history_limit"] == 2 and view["heartbeat_period"] == 0.5
    with pytest.raises(ApiError) as err:
        await control.cluster_update({"data_path_port": 5000})
    assert err.value.code == "bad_request" and "chosen at swarm init" in err.value.message


@pytest.mark.trio
async def test_networks_take_their_subnet_from_the_clusters_pools():
    store, manager = await cluster()
    await manager.modify_cluster(lambda c: dict(c, default_addr_pools=["172.30.0.0/16"],
                                                default_addr_pool_mask_length=28))
    networks = NetworkAPI(manager)
    await networks.create({"name": "front"})
    await networks.create({"name": "back"})
    assert [n["subnet"] for n in sorted(networks.networks().values(), key=lambda n: n["name"])] == \
        ["172.30.0.16/28", "172.30.0.0/28", "10.0.0.0/24"]

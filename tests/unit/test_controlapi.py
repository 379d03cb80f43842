"""The control API's handlers against the in-memory store: every kind resolves
references with the one resolver, and every read-modify-write goes through the
manager's compare-and-set helper (a write in between is read again, never lost)."""
import dataclasses
import datetime
import random

import pytest

from raft.memory import MemoryStore
from raft.store import Op
from swarm.api import model, spec
from swarm.api.errors import ApiError
from swarm.manager.allocator import INGRESS_SUBNET, NETWORK, new_network
from swarm.manager.controlapi.networks import NetworkAPI
from swarm.manager.controlapi.nodes import ControlAPI
from swarm.manager.controlapi.services import ServiceAPI
from swarm.manager.membership import Manager

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
pytestmark = pytest.mark.trio


class Store(MemoryStore):
    """The in-memory store; `before_update(op)` runs (once) before an update commits:
    another writer getting there first."""

    before_update = None

    def members(self) -> list[str]:
        return []

    @property
    def leader_id(self) -> str:
        return "n1"

    def peer_links(self) -> dict[str, bool]:
        return {}

    async def commit(self, ops, timeout=5.0):
        meddle, self.before_update = self.before_update, None
        if meddle is not None and ops and ops[0].action == "update":
            await super().commit([meddle(ops[0])])
        return await super().commit(ops, timeout)


async def cluster():
    store = Store()
    ops = [Op.create(model.CLUSTER, model.CLUSTER_ID, model.encode(
        {"id": "c1", "heartbeat": 1.0, "ca_cert_pem": b"", "tokens": {"worker": "w" * 25, "manager": "m" * 25}}))]
    for i, nid in enumerate(("n1aaaa", "n2bbbb", "n3cccc")):
        node = dict(model.new_node(nid, f"h{i}", "worker", f"127.0.0.{i + 2}:2377", "", 1, NOW), images=["demo:1"])
        ops.append(Op.create(model.NODE, nid, model.encode(node)))
    ingress = new_network("ingress", INGRESS_SUBNET, 4096, ingress=True)
    ops.append(Op.create(NETWORK, ingress["id"], model.encode(ingress)))
    await store.commit(ops)
    manager = Manager(store, "n1aaaa", None, None)
    manager.rng = random.Random(3)
    return store, manager


async def test_every_kind_resolves_references_the_same_way():
    store, manager = await cluster()
    services, networks, control = ServiceAPI(manager), NetworkAPI(manager), ControlAPI(manager)
    web = await services.create({"name": "web", "image": "demo:1"})
    front = await networks.create({"name": "front"})
    assert services.find("web").id == web["id"] == services.find(web["id"][:12]).id
    assert networks.find("front")["id"] == front["id"] == networks.find(front["id"][:12])["id"]
    assert manager.find("h1")["id"] == "n2bbbb" == manager.find("n2")["id"]
    for what, find in (("service", services.find), ("network", networks.find), ("node", manager.find)):
        with pytest.raises(ApiError) as err:
            find("nope")
        assert (err.value.code, err.value.message) == ("not_found", f"{what} nope not found")
    [row] = await control.node_inspect({"refs": ["h2"]})
    assert row["id"] == "n3cccc"


async def test_a_name_two_objects_share_is_ambiguous_for_every_kind():
    store, manager = await cluster()
    services, networks = ServiceAPI(manager), NetworkAPI(manager)
    await services.create({"name": "web", "image": "demo:1"})
    twin = dataclasses.replace(services.find("web"), id="twin" + "0" * 21)
    await store.commit([Op.create(spec.SERVICE, twin.id, model.encode(spec.to_dict(twin)))])
    net = dict(new_network("front", "10.0.9.0/24", 4200), id="twinnet")
    await store.commit([Op.create(NETWORK, "twinnet", model.encode(net)),
                        Op.create(NETWORK, "twinnet2", model.encode(dict(net, id="twinnet2")))])
    node = model.decode(store.get(model.NODE, "n3cccc").data)
    await store.commit([Op.update(model.NODE, "n3cccc", model.encode(dict(node, hostname="h1")))])
    for find, ref in ((services.find, "web"), (networks.find, "front"), (manager.find, "h1")):
        with pytest.raises(ApiError) as err:
            find(ref)
        assert err.value.code == "bad_request" and "ambiguous" in err.value.message
    with pytest.raises(ApiError, match="ambiguous"):
        await services.update({"ref": "web", "image": "demo:1"})


async def test_a_service_update_keeps_a_write_that_came_first():
    store, manager = await cluster()
    services = ServiceAPI(manager)
    created = await services.create({"name": "web", "image": "demo:1", "replicas": 2})

    def allocator_writes_first(op):  # the leader's allocator sets the service's VIP in between
        service = spec.service_from_dict(model.decode(store.get(spec.SERVICE, created["id"]).data))
        return Op.update(spec.SERVICE, service.id, model.encode(spec.to_dict(
            dataclasses.replace(service, vips={"net": "10.0.0.5/24"}))))

    store.before_update = allocator_writes_first
    await services.update({"ref": "web", "env": ["A=1"]})
    service = services.find("web")
    assert service.vips == {"net": "10.0.0.5/24"} and service.spec.container.env == ("A=1",)
    assert service.spec_version == 2 and service.spec.replicas == 2

    store.before_update = allocator_writes_first
    await services.scale({"scales": {"web": 5}})
    service = services.find("web")
    assert service.spec.replicas == 5 and service.spec_version == 2  # scaling rolls nothing


async def test_node_update_and_token_rotation_retry_on_conflict():
    store, manager = await cluster()
    control = ControlAPI(manager)

    def someone_labels(op):
        node = model.decode(store.get(op.kind, op.id).data)
        return Op.update(op.kind, op.id, model.encode(dict(node, labels={"zone": "a"})))

    store.before_update = someone_labels
    view = await control.node_update({"ref": "h1", "availability": "drain"})
    assert view["availability"] == "drain" and view["labels"] == {"zone": "a"}

    def someone_renames(op):
        return Op.update(op.kind, op.id, model.encode(dict(manager.cluster(), heartbeat=2.0)))

    before = manager.cluster()["tokens"]["worker"]
    store.before_update = someone_renames
    await manager.modify_cluster(lambda c: dict(c, tokens=dict(c["tokens"], worker="x" * 25)))
    assert manager.cluster()["tokens"]["worker"] == "x" * 25 != before
    assert manager.cluster()["heartbeat"] == 2.0


async def test_a_node_update_at_a_version_is_not_retried():
    store, manager = await cluster()
    control = ControlAPI(manager)
    version = manager.node_version("n2bbbb")
    store.before_update = lambda op: Op.update(op.kind, op.id, store.get(op.kind, op.id).data)
    with pytest.raises(ApiError) as err:
        await control.node_update({"ref": "h1", "label_add": {"a": "b"}, "version": version})
    assert err.value.code == "conflict" and "out of sequence" in err.value.message
    assert manager.nodes()["n2bbbb"]["labels"] == {}


async def test_service_networks_with_aliases_are_resolved_to_ids_and_kept_on_update():
    store, manager = await cluster()
    services, networks = ServiceAPI(manager), NetworkAPI(manager)
    back, front = (await networks.create({"name": "back"}))["id"], (await networks.create({"name": "front"}))["id"]
    await services.create({"name": "db", "image": "demo:1",
                           "networks": [{"target": "back", "aliases": ["database"]}, front[:12]]})
    s = services.find("db").spec
    assert (s.networks, s.network_aliases) == ((back, front), {back: ("database",)})
    [view] = await services.inspect({"refs": ["db"]})
    assert view["spec"]["networks"] == [back, front] and view["spec"]["network_aliases"] == {back: ["database"]}
    # the CLI's --network-add sends the whole list, the others with their aliases
    await services.update({"ref": "db", "networks": [{"target": back, "aliases": ["database"]},
                                                     {"target": "front", "aliases": ["www"]}]})
    assert services.find("db").spec.network_aliases == {back: ("database",), front: ("www",)}
    for networks_param, message in (([{"target": "nope", "aliases": ["x"]}], "network nope not found"),
                                    (["back", {"target": back, "aliases": ["x"]}], "network .* is given twice"),
                                    ([{"target": "ingress", "aliases": ["x"]}], "ingress network")):
        with pytest.raises(ApiError, match=message) as err:
            await services.update({"ref": "db", "networks": networks_param})
        assert err.value.code == "bad_request"
    assert services.find("db").spec.network_aliases == {back: ("database",), front: ("www",)}

"""The dispatcher: task status batches refused or applied at the boundary, the
assignment long-poll, and the network view it builds for each node."""
import dataclasses
import time
import types

import msgpack
import pytest
import trio

from raft.node import RaftUnavailable
from swarm.api import model, netview, spec
from swarm.api.errors import ApiError
from swarm.manager import reconciler as reconciler_module
from swarm.manager.controlapi.networks import NetworkAPI
from swarm.manager.dispatcher import build_network_view
from tests.unit.test_reconciler import cluster, create, report, settle, tasks_of
from raft.framing import unpack
from swarm.rpc.server import pack_answer

pytestmark = pytest.mark.trio


# -- tasks.status ---------------------------------------------------------------------------------

async def test_a_poisoned_task_status_is_refused_and_nothing_is_written():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=1)
    await settle(reconciler)
    task = tasks_of(store, "web")[0]
    index = store.index
    for status in ({"state": "failed", "timestamp": "not-a-time"}, {"state": "exploded", "timestamp": 1.0},
                   {"state": "failed", "timestamp": float("nan")}, {"state": "failed", "err": "x" * 100_000},
                   {"state": "failed", "exit_code": "1"}, "failed", None):
        with pytest.raises(ApiError) as err:
            await dispatcher.status(task.node_id, {"updates": [{"id": task.id, "status": status}]})
        assert err.value.code == "bad_request" and task.id in err.value.message
    for params in ({"updates": "all"}, {"updates": [{"id": 5}]}, {"updates": [{"id": "t"}] * 5000}):
        with pytest.raises(ApiError, match="bad_request"):
            await dispatcher.status(task.node_id, params)
    assert store.index == index  # nothing written
    # ...and orchestration goes on: another service converges
    await create(api, "db", replicas=2)
    await settle(reconciler)
    assert sum(t.status.state == "assigned" for t in tasks_of(store, "db")) == 2


async def test_a_timestamp_from_the_future_is_clamped_not_trusted():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web")
    await settle(reconciler)
    task = tasks_of(store, "web")[0]
    now = 1_800_000_000.0
    parsed = spec.status_from_wire({"state": "running", "timestamp": now + 10 ** 9}, now)
    assert parsed.timestamp == now
    assert spec.status_from_wire({"state": "running", "timestamp": now + 1}, now).timestamp == now + 1
    await dispatcher.status(task.node_id, {"updates": [
        {"id": task.id, "status": {"state": "running", "timestamp": 1e15}}]})
    assert tasks_of(store, "web")[0].status.timestamp < 1e10


async def test_a_report_a_lagging_manager_cannot_place_is_applied_after_a_quorum_read_not_dropped(monkeypatch):
    # A follower (or a leader cut off from the others) may not hold a task yet, or hold it on no
    # node yet: acknowledging its report without applying it left the task "preparing" for ever.
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=2)
    await settle(reconciler)
    lagging, placed_later = tasks_of(store, "web")
    hidden = {lagging.id: None, placed_later.id: dataclasses.replace(placed_later, node_id="")}
    real_get, reads = store.get, []

    def get(kind, id):
        if kind == spec.TASK and id in hidden:
            older = hidden[id]
            return None if older is None else dataclasses.replace(
                real_get(kind, id), data=model.encode(spec.to_dict(older)))
        return real_get(kind, id)

    async def linearizable_read(timeout=5.0):
        reads.append(timeout)
        hidden.clear()   # caught up with the leader
        return store.index

    monkeypatch.setattr(store, "get", get)
    monkeypatch.setattr(store, "linearizable_read", linearizable_read)
    store.set_leader(False)
    for task in (lagging, placed_later):
        await dispatcher.status(task.node_id, {"updates": [{"id": task.id, "status": {
            "state": "accepted", "timestamp": 1.0}}]})
    assert len(reads) == 1 and {t.status.state for t in tasks_of(store, "web")} == {"accepted"}
    # Confirmed current, a task the store does not hold is gone, and one on another node is refused.
    monkeypatch.setattr(store, "get", lambda kind, id: None if id == lagging.id else real_get(kind, id))
    index = store.index
    assert await dispatcher.status(lagging.node_id, {"updates": [{"id": lagging.id, "status": {
        "state": "preparing", "timestamp": 2.0}}]}) == {"applied": 0}
    with pytest.raises(ApiError, match="not assigned to this node"):
        await dispatcher.status("someone-else", {"updates": [{"id": placed_later.id, "status": {
            "state": "preparing", "timestamp": 2.0}}]})
    assert len(reads) == 3 and store.index == index


async def test_a_report_no_quorum_can_confirm_is_unavailable_so_the_agent_retries(monkeypatch):
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web")
    await settle(reconciler)
    task = tasks_of(store, "web")[0]
    monkeypatch.setattr(store, "get", lambda kind, id: None)

    async def no_quorum(timeout=5.0):
        raise RaftUnavailable("no commit within 5 s (no quorum?); the outcome is unknown")

    monkeypatch.setattr(store, "linearizable_read", no_quorum)
    store.set_leader(False)
    with pytest.raises(ApiError) as err:
        await dispatcher.status(task.node_id, {"updates": [{"id": task.id, "status": {
            "state": "accepted", "timestamp": 1.0}}]})
    assert err.value.code == "unavailable"


# -- tasks.assigned --------------------------------------------------------------------------------

async def test_the_long_poll_waits_for_a_change_and_answers_at_once_after_one(autojump_clock):
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web", replicas=3)
    await settle(reconciler)
    node = tasks_of(store, "web")[0].node_id
    first = await polled(dispatcher, node, {"since": 0, "wait": 1.0})
    mine = sorted(t.id for t in tasks_of(store, "web") if t.node_id == node)
    assert sorted(first["task_ids"]) == mine and sorted(d["id"] for d in first["changed"]) == mine
    assert first["index"] == store.index
    # nothing new: the poll waits its full time (capped at 5 s) and reports no change
    before = trio.current_time()
    idle = await polled(dispatcher, node, {"since": first["index"], "wait": 60})
    assert trio.current_time() - before == pytest.approx(5.0) and idle["changed"] == []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher.run)
        await trio.sleep(0.1)

        async def stop_one() -> None:
            await trio.sleep(0.5)
            await api.scale({"scales": {"web": 0}})
            await reconciler.round()

        nursery.start_soon(stop_one)
        before = trio.current_time()
        woken = await polled(dispatcher, node, {"since": first["index"], "wait": 5})
        assert trio.current_time() - before < 1.0
        assert woken["changed"] and all(d["desired_state"] == "shutdown" for d in woken["changed"])
        nursery.cancel_scope.cancel()
    for params in ({"since": -1}, {"since": "0"}, {"since": True}, {"wait": 61}, {"wait": "1"}):
        with pytest.raises(ApiError, match="bad_request"):
            await polled(dispatcher, node, params)


async def test_a_task_is_sent_once_placed_not_when_born_with_its_node(monkeypatch):
    # A global task has its node from birth; a restarted one waits out its restart delay
    # unplaced, without addresses. Sent then, the agent would start it with no networks (and no delay).
    store, manager, reconciler, dispatcher, api = await cluster()
    back = await NetworkAPI(manager).create({"name": "back"})
    await create(api, "agent", mode="global", networks=[back["id"]])
    await settle(reconciler)
    first = tasks_of(store, "agent")[0]
    rejected = spec.TaskStatus("rejected", "preparing failed", "no VXLAN", time.time())
    await dispatcher.status(first.node_id, {"updates": [{"id": first.id, "status": spec.to_dict(rejected)}]})
    await settle(reconciler)
    (waiting,) = [t for t in tasks_of(store, "agent") if t.node_id == first.node_id and t.id != first.id]
    assert waiting.status.state == "new" and waiting.networks == ()
    answer = await polled(dispatcher, first.node_id, {"since": 0, "wait": 0})
    assert waiting.id not in answer["task_ids"] and waiting.id not in [d["id"] for d in answer["changed"]]
    assert first.id in answer["task_ids"]

    later = time.time() + 60      # past the restart delay: placed, with its address on back
    monkeypatch.setattr(reconciler_module, "time", types.SimpleNamespace(time=lambda: later, monotonic=time.monotonic))
    await settle(reconciler)
    answer = await polled(dispatcher, first.node_id, {"since": answer["index"], "wait": 0})
    (sent,) = [d for d in answer["changed"] if d["id"] == waiting.id]
    assert sent["status"]["state"] == "assigned" and [a["network_id"] for a in sent["networks"]] == [back["id"]]


# -- the network view ------------------------------------------------------------------------------

async def networked_cluster():
    store, manager, reconciler, dispatcher, api = await cluster()
    front = await NetworkAPI(manager).create({"name": "front"})
    await create(api, "web", replicas=3, networks=[front["id"]], ports=[{"target": 80, "published": 8080}])
    await create(api, "db", replicas=2, networks=[front["id"]], endpoint_mode="dnsrr")
    await settle(reconciler)
    await report(dispatcher, store, "running")
    return store, manager, reconciler, dispatcher, api, front["id"]


async def test_a_node_sees_its_networks_peers_service_tables_and_published_ports():
    store, manager, reconciler, dispatcher, api, front = await networked_cluster()
    tasks = tasks_of(store)
    node = next(t.node_id for t in tasks if t.service_name == "db")
    view = dispatcher.network_view(node)
    ingress = view.ingress_network()
    assert ingress is not None and set(view.networks) == {front, ingress.id}
    assert view.networks[front].name == "front" and not view.networks[front].ingress
    assert view.ingress_ip == manager.nodes()[node]["ingress_ip"] != ""

    def ips(name, net):
        return sorted(a.address.split("/")[0] for t in tasks if t.service_name == name
                      for a in t.networks if a.network_id == net)
    table = {s.name: s for s in view.services[front]}
    assert table["web"].mode == "vip" and table["web"].vip and table["web"].tasks == tuple(ips("web", front))
    assert table["db"].mode == "dnsrr" and table["db"].vip == "" and table["db"].tasks == tuple(ips("db", front))
    assert view.services[ingress.id] == ()   # the routing mesh balances ingress, no names there
    # peers: every task address on another node (with that node's VTEP), never this node's own
    others = {(a.address.split("/")[0], manager.nodes()[t.node_id]["addr"].rsplit(":", 1)[0])
              for t in tasks if t.node_id != node for a in t.networks if a.network_id == front}
    assert {(p.ip, p.vtep) for p in view.peers[front]} == others
    assert {p.ip for p in view.peers[ingress.id]} >= {n["ingress_ip"] for nid, n in manager.nodes().items()
                                                        if nid != node}
    [port] = view.published
    assert (port.published, port.target, port.protocol, port.service) == (8080, 80, "tcp", "web")
    assert port.tasks == tuple(ips("web", ingress.id))


async def test_a_service_alias_is_in_the_table_of_its_network_only():
    store, manager, reconciler, dispatcher, api = await cluster()
    back = (await NetworkAPI(manager).create({"name": "back"}))["id"]
    front = (await NetworkAPI(manager).create({"name": "front"}))["id"]
    # by name, as the CLI sends them: the control API stores IDs and the aliases under the ID
    await create(api, "app_db", networks=[{"target": "back", "aliases": ["db", "primary"]}, "front"])
    await create(api, "client", replicas=2, networks=["back", "front"], endpoint_mode="dnsrr")
    await settle(reconciler)
    await report(dispatcher, store, "running")
    [db] = tasks_of(store, "app_db")
    assert api.find("app_db").spec.network_aliases == {back: ("db", "primary")}
    view = dispatcher.network_view(db.node_id)
    table = {net: {s.name: s for s in view.services[net]} for net in (back, front)}
    assert table[back]["app_db"].aliases == ("db", "primary") and table[back]["app_db"].vip
    assert table[front]["app_db"].aliases == ()
    assert table[back]["client"].aliases == table[front]["client"].aliases == ()
    wire = msgpack.unpackb(msgpack.packb(netview.encode(view)), raw=False)
    assert {s["name"]: s["aliases"] for s in wire["services"][back]} == {"app_db": ["db", "primary"], "client": []}
    assert netview.decode(wire) == view


async def test_the_view_goes_over_the_wire_in_the_shape_agents_read():
    store, manager, reconciler, dispatcher, api, front = await networked_cluster()
    node = tasks_of(store, "web")[0].node_id
    answer = await polled(dispatcher, node, {"since": 0, "wait": 0})
    wire = msgpack.unpackb(msgpack.packb(answer["network"]), raw=False)
    assert set(wire) == {"networks", "peers", "services", "ingress_ip", "published", "data_path_port"}
    for net_id, net in wire["networks"].items():   # what agents read of a network record
        assert net["id"] == net_id and isinstance(net["vni"], int) and {"subnet", "gateway", "name"} <= set(net)
    assert all(set(p) == {"ip", "vtep"} for ps in wire["peers"].values() for p in ps)
    assert all(set(s) == {"name", "mode", "vip", "tasks", "aliases"} for ss in wire["services"].values() for s in ss)
    assert all(set(p) == {"published", "target", "protocol", "service", "tasks"} for p in wire["published"])
    assert netview.decode(wire) == dispatcher.network_view(node)


async def test_a_stopping_task_leaves_the_tables_at_once_but_stays_a_peer_until_stopped():
    store, manager, reconciler, dispatcher, api, front = await networked_cluster()
    nodes = manager.nodes()
    tasks = tasks_of(store)
    victim = next(t for t in tasks if t.service_name == "web")
    here = next(nid for nid in nodes if nid != victim.node_id)
    ip = next(a.address.split("/")[0] for a in victim.networks if a.network_id == front)
    stopping = [t if t.id != victim.id else
                dataclasses.replace(t, desired_state="shutdown") for t in tasks]
    services = {s.id: s for s in api.services().values()}
    networks = {k: model.decode(r.data) for k, r in store.list("network").items()}
    view = build_network_view(here, networks, nodes, services, stopping)
    assert ip in {p.ip for p in view.peers[front]}
    assert ip not in {a for s in view.services[front] for a in s.tasks}
    stopped = [t if t.id != victim.id else dataclasses.replace(t, status=spec.TaskStatus("shutdown"))
               for t in stopping]
    view = build_network_view(here, networks, nodes, services, stopped)
    assert ip not in {p.ip for p in view.peers[front]}


async def test_a_node_with_no_networked_tasks_gets_an_empty_view_unless_ports_are_published():
    store, manager, reconciler, dispatcher, api = await cluster()
    await create(api, "plain", replicas=1)
    await settle(reconciler)
    view = dispatcher.network_view("n1")
    assert view == netview.NetworkView(ingress_ip="")
    await create(api, "pub", replicas=1, ports=[{"target": 80, "published": 9000}])
    await settle(reconciler)
    view = dispatcher.network_view("n1")
    assert list(view.networks.values()) == [view.ingress_network()] and view.ingress_ip
    assert [p.published for p in view.published] == [9000]



async def test_a_running_task_whose_health_changes_is_recorded_and_a_repeat_is_not():
    store, _, reconciler, dispatcher, api = await cluster()
    await create(api, "web")
    await settle(reconciler)
    task = tasks_of(store, "web")[0]
    for state in ("accepted", "preparing", "ready", "starting", "running"):
        await dispatcher.status(task.node_id, {"updates": [{"id": task.id, "status": {
            "state": state, "timestamp": 1.0, "health": "healthy" if state == "running" else "starting"}}]})
    index = store.index
    await dispatcher.status(task.node_id, {"updates": [{"id": task.id, "status": {
        "state": "running", "timestamp": 2.0, "health": "healthy"}}]})
    assert store.index == index                         # the same state and health: a duplicate
    await dispatcher.status(task.node_id, {"updates": [{"id": task.id, "status": {
        "state": "running", "timestamp": 3.0, "health": "unhealthy"}}]})
    assert tasks_of(store, "web")[0].status.health == "unhealthy"


async def test_a_poll_wakes_for_its_own_node_and_for_network_views_changed_since_its_last_answer():
    store, manager, reconciler, dispatcher, api = await cluster()
    front = (await NetworkAPI(manager).create({"name": "front"}))["id"]
    await create(api, "plain", replicas=3)                       # no network: in no view
    await create(api, "web", replicas=1, networks=[front])       # in the views of the nodes on front
    await create(api, "peer", replicas=3, networks=[front])
    await settle(reconciler)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher.run)
        await trio.sleep(0.1)
        plain = tasks_of(store, "plain")
        node = plain[0].node_id
        first = await polled(dispatcher, node, {"since": 0, "wait": 0})
        # Another node's plain task moving on changes nothing for this node: the poll waits.
        other = next(t for t in plain if t.node_id != node)
        await report(dispatcher, store, "running", "plain")
        index = (await polled(dispatcher, node, {"since": first["index"], "wait": 0}))["index"]
        with trio.move_on_after(0.5) as waited:
            await polled(dispatcher, node, {"since": index, "wait": 5})
        assert waited.cancelled_caught, f"woken by {other.id}'s report, which changes nothing here"
        # A networked task running changes the network views: a poll from before that change
        # answers at once, even when it arrives after the change (between two polls).
        await report(dispatcher, store, "running", "web")
        await trio.sleep(0.1)                 # the dispatcher has seen it before the poll comes
        started = trio.current_time()
        answer = await polled(dispatcher, node, {"since": index, "wait": 5})
        assert trio.current_time() - started < 0.5
        [web] = tasks_of(store, "web")
        table = {s.name: s for s in netview.decode(answer["network"]).services.get(front, ())}
        if node in {t.node_id for t in tasks_of(store) if t.networks}:
            assert table["web"].tasks == tuple(a.address.split("/")[0] for a in web.networks
                                               if a.network_id == front)
        nursery.cancel_scope.cancel()


async def polled(dispatcher, node, params):
    """A tasks.assigned answer as the agent reads it: through the wire's encoding (records go
    in as the store holds them, msgspec.Raw)."""
    return unpack(pack_answer(await dispatcher.assigned(node, params)))

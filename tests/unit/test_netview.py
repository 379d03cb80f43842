"""The network view's codec (swarm.api.netview): plain data in, a typed view out,
or a refusal that names the field; and the agent keeping its last good view."""
import copy

import pytest
import trio

from overlay import dns
from swarm.agent.networking import NodeNetworking, dns_records
from swarm.api import netview

WIRE = {
    "networks": {"net1": {"id": "net1", "name": "front", "subnet": "10.0.1.0/24", "gateway": "10.0.1.1",
                          "vni": 4097, "ingress": False,
                          # fields of the full record an older manager sent: ignored
                          "driver": "overlay", "scope": "swarm", "attachable": False, "created_at": 1.0}},
    "peers": {"net1": [{"ip": "10.0.1.5", "vtep": "192.168.0.3"}]},
    "services": {"net1": [{"name": "web", "mode": "vip", "vip": "10.0.1.2", "tasks": ["10.0.1.5", "10.0.1.6"]}]},
    "ingress_ip": "10.0.0.3",
    "published": [{"published": 8080, "target": 80, "protocol": "tcp", "service": "web", "tasks": ["10.0.0.7"]}],
}


def test_a_view_decodes_into_typed_values_and_encodes_back():
    view = netview.decode(WIRE)
    assert view.networks["net1"] == netview.Network("net1", "front", "10.0.1.0/24", "10.0.1.1", 4097)
    assert view.peers["net1"] == (netview.Peer("10.0.1.5", "192.168.0.3"),)
    assert view.services["net1"][0].tasks == ("10.0.1.5", "10.0.1.6")
    assert view.published[0].target == 80 and view.ingress_network() is None
    assert netview.decode(netview.encode(view)) == view
    assert netview.decode({}) == netview.NetworkView()


@pytest.mark.parametrize("path, value, named", [
    (("networks", "net1", "vni"), "4097", "vni"),
    (("networks", "net1", "vni"), 1 << 24, "vni"),
    (("networks", "net1", "id"), "other", "carries the id"),
    (("services", "net1", 0, "mode"), "roundrobin", "mode"),
    (("services", "net1", 0, "tasks"), "10.0.1.5", "tasks"),
    (("published", 0, "published"), 70000, "published"),
    (("published", 0, "protocol"), "sctp", "protocol"),
    (("peers", "net1"), {"ip": "10.0.1.5"}, "peers"),
    (("ingress_ip",), None, "ingress_ip"),
    (("services", "net1", 0, "aliases"), "db", "aliases"),
    (("services", "net1", 0, "aliases"), [7], "aliases"),
])
def test_a_malformed_view_is_refused_with_the_field_named(path, value, named):
    data = copy.deepcopy(WIRE)
    at = data
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    with pytest.raises(netview.InvalidView, match=named):
        netview.decode(data)


@pytest.mark.trio
async def test_the_agent_refuses_a_malformed_view_and_keeps_the_last_one():
    async with trio.open_nursery() as nursery:
        net = NodeNetworking("node0000000000000000000001", "127.0.0.1", nursery)
        before = net.view
        await net.update({"networks": {"x": {"id": "x", "vni": "lots"}}})
        assert net.view is before and net.datapaths == {}


def test_a_service_alias_becomes_a_dns_record_of_its_network_only():
    data = copy.deepcopy(WIRE)   # a view without "aliases" (an older manager's) has none
    assert netview.decode(data).services["net1"][0].aliases == ()
    data["networks"]["net2"] = dict(data["networks"]["net1"], id="net2", name="back", vni=4098)
    data["services"]["net2"] = [{"name": "web", "mode": "vip", "vip": "10.0.2.2", "tasks": ["10.0.2.5"],
                                 "aliases": ["www", "site"]}]
    records = dns_records(netview.decode(data))
    assert records.networks["net2"] == dns.NetworkRecords(
        (dns.ServiceRecord("web", "vip", "10.0.2.2", ("10.0.2.5",), ("www", "site")),), {}, "back")
    assert records.networks["net1"].services[0].aliases == ()

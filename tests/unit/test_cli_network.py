"""`swarm network ...` and the network/port flags of `swarm service create/update`,
against the fake daemon of test_cli (exact params sent, exact output)."""
from __future__ import annotations

import json

import pytest

from swarm.cli import progress as cli_progress
from swarm.rpc.messages import RPCError
from tests.unit.test_cli import failed, ok
from tests.unit.test_cli_service import INSPECTED, SID, ServiceFake

NET_METHODS = ("network.create", "network.ls", "network.inspect", "network.rm")
NID = "q2m6x0b8d4ejv7w1k9t3ryzpa"
INGRESS_ID = "i8h0c5u2n7w4e1r9t6y3o0pal"
ROWS = [
    {"id": NID, "name": "backend", "driver": "overlay", "scope": "swarm", "subnet": "10.0.1.0/24"},
    {"id": INGRESS_ID, "name": "ingress", "driver": "overlay", "scope": "swarm", "subnet": "10.0.0.0/24"},
]
RECORD = {**ROWS[0], "gateway": "10.0.1.1", "vni": 4097, "ingress": False, "attachable": False,
          "created_at": 1714557600.0}
NETS = {"backend": {"id": NID}, "front": {"id": "f1r2o3n4t5"}, "old": {"id": "o1l2d3"}}


class NetworkFake(ServiceFake):
    def _router(self):
        router = super()._router()
        for method in NET_METHODS:
            router.route(method, self._handler(method))
        return router


@pytest.fixture
def fake(state_dir):
    daemon = NetworkFake(state_dir)
    daemon.answers.update({
        "service.create": {"id": SID, "name": "web"}, "service.update": {"id": SID, "name": "web"},
        "network.create": {"id": NID, "name": "backend"}, "network.ls": ROWS, "network.inspect": [RECORD],
        "network.rm": ["backend"],
    })
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(cli_progress, "POLL_INTERVAL", 0.01)


def port(target: int, published: int = 0, protocol: str = "tcp", mode: str = "ingress") -> dict:
    return {"target": target, "published": published, "protocol": protocol, "mode": mode}


# -- swarm network -------------------------------------------------------------


def test_network_create(fake, run):
    assert ok(run("network", "create", "backend")) == f"{NID}\n"
    assert ok(run("network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "--attachable", "backend"))
    assert ok(run("network", "create", "--driver", "overlay", "--subnet", " 10.1.0.0/16", "b.e-n_d"))
    assert fake.params("network.create") == [
        {"name": "backend", "driver": "overlay", "attachable": False},
        {"name": "backend", "driver": "overlay", "attachable": True, "subnet": "10.0.9.0/24"},
        {"name": "b.e-n_d", "driver": "overlay", "attachable": False, "subnet": "10.1.0.0/16"},
    ]


def test_network_create_daemon_error(fake, run):
    fake.answers["network.create"] = RPCError("conflict", "a network named backend already exists")
    assert failed(run("network", "create", "backend"), 1) == "Error: a network named backend already exists\n"


def test_network_ls_table_quiet_and_json(fake, run):
    fake.answers["network.ls"] = list(reversed(ROWS))  # printed by name
    assert ok(run("network", "ls")) == (
        "NETWORK ID     NAME      DRIVER    SCOPE\n"
        f"{NID[:12]}   backend   overlay   swarm\n"
        f"{INGRESS_ID[:12]}   ingress   overlay   swarm\n")
    assert ok(run("network", "ls", "-q")) == f"{NID[:12]}\n{INGRESS_ID[:12]}\n"
    assert ok(run("network", "ls", "-q", "--no-trunc")) == f"{NID}\n{INGRESS_ID}\n"
    out = ok(run("network", "ls", "--format", "json"))
    assert json.loads(out) == ROWS
    assert [list(r) for r in json.loads(out)] == [["id", "name", "driver", "scope", "subnet"]] * 2
    assert fake.params("network.ls") == [{}] * 4


def test_network_ls_json_keeps_to_the_contract(fake, run):
    fake.answers["network.ls"] = [{**ROWS[0], "vni": 4097}]
    assert json.loads(ok(run("network", "ls", "--format", "json"))) == [ROWS[0]]
    fake.answers["network.ls"] = []
    assert ok(run("network", "ls", "--format", "json")) == "[]\n"
    assert ok(run("network", "ls")) == "NETWORK ID   NAME      DRIVER    SCOPE\n"


def test_network_inspect(fake, run):
    out = ok(run("network", "inspect", "backend", "q2m"))
    assert out == json.dumps([RECORD], indent=4) + "\n"
    assert fake.params("network.inspect") == [{"refs": ["backend", "q2m"]}]
    fake.answers["network.inspect"] = RPCError("not_found", "network nope not found")
    assert failed(run("network", "inspect", "nope"), 1) == "Error: network nope not found\n"


def test_network_rm(fake, run):
    fake.answers["network.rm"] = ["backend", "front"]
    assert ok(run("network", "rm", "backend", "f1r")) == "backend\nfront\n"
    assert fake.params("network.rm") == [{"refs": ["backend", "f1r"]}]
    fake.answers["network.rm"] = RPCError("conflict", "network backend is in use by service(s) web")
    assert failed(run("network", "rm", "backend"), 1) == "Error: network backend is in use by service(s) web\n"


@pytest.mark.parametrize("args, option", [
    (["create"], "'NAME'"),
    (["create", "bad name"], "'NAME'"),
    (["create", "a/b"], "'NAME'"),
    (["create", "-d", "bridge", "backend"], "'--driver'"),
    (["create", "--subnet", "10.0.9.1/24", "backend"], "'--subnet'"),
    (["create", "--subnet", "10.0.9.0/30", "backend"], "'--subnet'"),
    (["create", "--subnet", "fd00::/64", "backend"], "'--subnet'"),
    (["create", "--subnet", "lots", "backend"], "'--subnet'"),
    (["ls", "--format", "yaml"], "'--format'"),
    (["inspect"], "'NETWORK...'"),
    (["rm"], "'NETWORK...'"),
])
def test_network_bad_input_is_a_usage_error(fake, run, args, option):
    err = failed(run("network", *args), 2)
    assert err.startswith("Usage: swarm network ")
    assert option in err.splitlines()[-1]
    assert fake.calls == []


# -- service create: --network, --endpoint-mode, --publish --------------------


CREATE_BASE = {
    "name": "web", "image": "alpine", "command": [], "mode": "replicated", "replicas": 1, "env": [], "mounts": [],
    "constraints": [], "reserve_cpu": 0, "reserve_memory": 0, "limit_cpu": 0, "limit_memory": 0,
    "restart_condition": "any", "restart_delay": 5.0, "restart_max_attempts": 0, "restart_window": 0.0,
    "stop_grace_period": 10.0,
}


def test_create_without_the_new_flags_sends_none_of_them(fake, run):
    assert ok(run("service", "create", "-d", "--name", "web", "alpine"))
    assert fake.params("service.create") == [CREATE_BASE]


def test_create_networks_endpoint_mode_and_short_publish(fake, run):
    assert ok(run("service", "create", "-d", "--name", "web", "--network", "backend", "--network", NID[:5],
                  "--endpoint-mode", "vip", "-p", "8080:80", "--publish", "53:53/udp", "-p", "443",
                  "-p", "9000/UDP", "-p", ":81/tcp", "alpine")) == f"{SID}\n"
    assert fake.params("service.create") == [{
        **CREATE_BASE, "endpoint_mode": "vip", "networks": ["backend", NID[:5]],
        "ports": [port(80, 8080), port(53, 53, "udp"), port(443), port(9000, 0, "udp"), port(81)],
    }]


def test_create_network_aliases_in_docker_syntax(fake, run):
    result = run("service", "create", "-d", "--name", "web", "--network", "name=backend,alias=db,alias=primary",
                 "--network", "front", "--network", "name=old,alias=legacy,driver-opt=com.docker.x=1", "alpine")
    assert result.exit_code == 0 and result.stdout == f"{SID}\n"
    assert fake.params("service.create") == [{**CREATE_BASE, "networks": [
        {"target": "backend", "aliases": ["db", "primary"]}, "front", {"target": "old", "aliases": ["legacy"]}]}]
    # driver-opt is accepted as docker does, and said to be ignored
    assert result.stderr == ("Warning: driver-opt is ignored in --network name=old,alias=legacy,"
                             "driver-opt=com.docker.x=1: swarm's overlay networks take no per-service driver "
                             "options or fixed addresses\n")


def test_network_option_errors_say_what_is_wrong(fake, run):
    assert "name=NETWORK is required" in failed(run("service", "create", "--network", "alias=db", "alpine"), 2)
    assert "an alias is empty" in failed(run("service", "create", "--network", "name=b,alias=", "alpine"), 2)
    assert "invalid field key 'color'" in failed(run("service", "create", "--network", "name=b,color=r", "alpine"), 2)


def test_create_long_publish_syntax(fake, run):
    assert ok(run("service", "create", "-d", "--name", "web", "--endpoint-mode", "dnsrr",
                  "--publish", "published=8080,target=80",
                  "--publish", "mode=host,target=53,published=5353,protocol=udp",
                  "--publish", "target=443,protocol=tcp,mode=ingress",
                  "-p", "published=9090,target=90,mode=host", "alpine"))
    assert fake.params("service.create") == [{
        **CREATE_BASE, "endpoint_mode": "dnsrr",
        "ports": [port(80, 8080), port(53, 5353, "udp", "host"), port(443), port(90, 9090, "tcp", "host")],
    }]


def test_same_port_on_two_protocols_is_fine(fake, run):
    assert ok(run("service", "create", "-d", "--name", "web", "-p", "53:53", "-p", "53:53/udp", "alpine"))
    assert fake.params("service.create")[0]["ports"] == [port(53, 53), port(53, 53, "udp")]


@pytest.mark.parametrize("args, option", [
    (["-p", "0:80"], "'--publish'"),
    (["-p", "8080:0"], "'--publish'"),
    (["-p", "65536"], "'--publish'"),
    (["-p", "8080:70000"], "'--publish'"),
    (["-p", "http"], "'--publish'"),
    (["-p", "8080:"], "'--publish'"),
    (["-p", "80/sctp"], "'--publish'"),
    (["-p", "80/"], "'--publish'"),
    (["-p", "127.0.0.1:8080:80"], "'--publish'"),
    (["-p", "8080-8082:80-81"], "'--publish'"),  # ranges of different sizes
    (["-p", "81-80"], "'--publish'"),
    (["-p", "published=8080"], "'--publish'"),
    (["-p", "target=80,published=0"], "'--publish'"),
    (["-p", "target=80,protocol=icmp"], "'--publish'"),
    (["-p", "target=80,mode=bridge"], "'--publish'"),
    (["-p", "target=80,mode=host"], "'--publish'"),
    (["-p", "target=80,color=red"], "'--publish'"),
    (["-p", "target=80,published"], "'--publish'"),
    (["-p", "8080:80", "-p", "published=8080,target=81"], "'--publish'"),
    (["--endpoint-mode", "rr"], "'--endpoint-mode'"),
    (["--network", ""], "'--network'"),
    (["--network", "alias=db"], "'--network'"),                   # no name=
    (["--network", "name=backend,alias="], "'--network'"),
    (["--network", "name=backend,color=red"], "'--network'"),
    (["--network", "name=backend,alias"], "'--network'"),
    (["--network", "name=back end,alias=db"], "'--network'"),
    (["--network", "name=backend,driver-opt=x"], "'--network'"),
])
def test_create_bad_ports_and_networks_are_usage_errors(fake, run, args, option):
    err = failed(run("service", "create", "-d", *args, "alpine"), 2)
    assert err.startswith("Usage: swarm service create ")
    assert option in err.splitlines()[-1]
    assert fake.calls == []


def test_publish_errors_say_what_is_wrong(fake, run):
    assert "1-65535" in failed(run("service", "create", "-p", "8080:70000", "alpine"), 2)
    assert "tcp or udp" in failed(run("service", "create", "-p", "80/sctp", "alpine"), 2)
    assert "ingress or host" in failed(run("service", "create", "-p", "target=80,mode=x", "alpine"), 2)
    assert "host mode needs its published port" in failed(
        run("service", "create", "-p", "target=80,mode=host", "alpine"), 2)
    assert "8080/tcp is given twice" in failed(run("service", "create", "-p", "8080:80", "-p", "8080:81", "alpine"), 2)


def test_create_daemon_refuses_a_network(fake, run):
    fake.answers["service.create"] = RPCError("bad_request", "network nope not found")
    assert failed(run("service", "create", "-d", "--network", "nope", "alpine"), 1) == (
        "Error: network nope not found\n")


# -- service update: --network-add/-rm, --publish-add/-rm, --endpoint-mode -----


def current(networks: list[str], ports: list[dict]) -> list[dict]:
    return [{**INSPECTED, "spec": {**INSPECTED["spec"], "networks": networks, "endpoint_mode": "vip",
                                   "ports": ports}}]


def inspect_networks(params: dict) -> list[dict]:
    out = []
    for ref in params["refs"]:
        if ref not in NETS:
            raise RPCError("not_found", f"network {ref} not found")
        out.append(NETS[ref])
    return out


def test_update_endpoint_mode_alone_needs_no_inspect(fake, run):
    assert ok(run("service", "update", "-d", "--endpoint-mode", "dnsrr", "web")) == "web\n"
    assert fake.calls == [("service.update", {"ref": "web", "endpoint_mode": "dnsrr"})]


def test_update_publish_add_and_rm_send_the_whole_list(fake, run):
    fake.answers["service.inspect"] = current([], [port(80, 8080), port(53, 0, "udp"), port(53, 5353),
                                                   port(22, 2222, "tcp", "host")])
    assert ok(run("service", "update", "-d", "--publish-rm", "53/udp", "--publish-rm", "22",
                  "--publish-add", "9090:90", "--publish-add", "published=8443,target=443,mode=host",
                  "--publish-add", "8080:80", "web")) == "web\n"
    assert fake.calls == [
        ("service.inspect", {"refs": ["web"]}),
        ("service.update", {"ref": "web", "ports": [
            port(80, 8080), port(53, 5353), port(90, 9090), port(443, 8443, "tcp", "host")]}),
    ]


def test_update_publish_rm_then_add_replaces_a_port(fake, run):
    fake.answers["service.inspect"] = current([NID], [port(80, 8080)])
    assert ok(run("service", "update", "-d", "--publish-rm", "80", "--publish-add", "9090:80", "web"))
    assert fake.params("service.update") == [{"ref": "web", "ports": [port(80, 9090)]}]
    assert ok(run("service", "update", "-d", "--publish-rm", "80/tcp", "web"))
    assert fake.params("service.update")[1] == {"ref": "web", "ports": []}


def test_update_spec_without_ports_or_networks(fake, run):
    fake.answers["service.inspect"] = [INSPECTED]  # no "ports"/"networks" keys at all
    fake.answers["network.inspect"] = inspect_networks
    assert ok(run("service", "update", "-d", "--publish-add", "80", "--network-add", "backend", "web"))
    assert fake.params("service.update") == [{"ref": "web", "networks": [NID], "ports": [port(80)]}]


def test_update_network_add_and_rm_send_ids(fake, run):
    fake.answers["service.inspect"] = current([NETS["old"]["id"], NID], [port(80, 8080)])
    fake.answers["network.inspect"] = inspect_networks
    assert ok(run("service", "update", "-d", "--network-rm", "old", "--network-add", "front", "web"))
    assert fake.calls == [
        ("service.inspect", {"refs": ["web"]}),
        ("network.inspect", {"refs": ["old", "front"]}),
        ("service.update", {"ref": "web", "networks": [NID, NETS["front"]["id"]]}),
    ]


def test_update_network_add_with_aliases_keeps_the_aliases_of_the_others(fake, run):
    spec = current([NETS["old"]["id"], NID], [])[0]
    fake.answers["service.inspect"] = [{**spec, "spec": {**spec["spec"], "network_aliases": {NID: ["db"]}}}]
    fake.answers["network.inspect"] = inspect_networks
    assert ok(run("service", "update", "-d", "--network-rm", "old", "--network-add", "name=front,alias=www", "web"))
    assert fake.params("service.update") == [{"ref": "web", "networks": [
        {"target": NID, "aliases": ["db"]}, {"target": NETS["front"]["id"], "aliases": ["www"]}]}]
    # an alias is changed as docker's: detach, then attach with the new aliases
    assert ok(run("service", "update", "-d", "--network-rm", "backend", "--network-add", "name=backend,alias=data",
                  "web"))
    assert fake.params("service.update")[1] == {"ref": "web", "networks": [
        NETS["old"]["id"], {"target": NID, "aliases": ["data"]}]}


def test_update_network_errors(fake, run):
    fake.answers["service.inspect"] = current([NID], [])
    fake.answers["network.inspect"] = inspect_networks
    assert failed(run("service", "update", "-d", "--network-add", "backend", "web"), 1) == (
        "Error: service is already attached to network backend\n")
    assert failed(run("service", "update", "-d", "--network-rm", "nope", "web"), 1) == (
        "Error: network nope not found\n")
    assert fake.params("service.update") == []


def test_update_with_lists_then_waits(fake, run):
    spec = current([], [])[0]
    fake.answers["service.inspect"] = [{**spec, "spec": {**spec["spec"], "replicas": 0}}]
    fake.answers["service.ps"] = []
    assert ok(run("service", "update", "-q", "--publish-add", "8080:80", "web")) == "web\n"
    assert [m for m, _ in fake.calls][:4] == ["service.inspect", "service.ps", "service.update", "service.inspect"]
    assert fake.params("service.update") == [{"ref": "web", "ports": [port(80, 8080)]}]


@pytest.mark.parametrize("args, option", [
    (["--publish-rm", "8080:80"], "'--publish-rm'"),
    (["--publish-rm", "target=80"], "'--publish-rm'"),
    (["--publish-rm", "0"], "'--publish-rm'"),
    (["--publish-rm", "80/sctp"], "'--publish-rm'"),
    (["--publish-add", "80/icmp"], "'--publish-add'"),
    (["--publish-add", "target=80,mode=host"], "'--publish-add'"),
    (["--publish-add", "8080:80", "--publish-add", "8080:81"], "'--publish-add'"),
    (["--network-add", " "], "'--network-add'"),
    (["--network-rm", ""], "'--network-rm'"),
    (["--network-rm", "name=backend"], "'--network-rm'"),
    (["--network-add", "name=backend,alias"], "'--network-add'"),
    (["--endpoint-mode", "round-robin"], "'--endpoint-mode'"),
    (["--publish", "80"], "No such option"),
    (["--network", "backend"], "No such option"),
])
def test_update_bad_input_is_a_usage_error(fake, run, args, option):
    err = failed(run("service", "update", "-d", *args, "web"), 2)
    assert err.startswith("Usage: swarm service update ")
    assert option in err.splitlines()[-1]
    assert fake.calls == []

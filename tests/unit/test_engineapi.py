"""The Engine API's pure converters: Docker's ServiceSpec -> our params -> our spec -> Docker's
ServiceSpec gives back what was sent; fields we cannot honour are refused by name; bodies are
checked against moby's swagger schema; the log stream's frames are Docker's, byte for byte."""
import copy
import struct

import pytest

from swarm.api import spec
from swarm.engineapi import logs, objects, schema, services
from swarm.engineapi.fields import Unsupported
from swarm.manager.controlapi.services import replicas_column
from swarm.manager.controlapi.specparams import spec_from_params

NS = 1_000_000_000

RICH = {
    "Name": "web",
    "Labels": {"com.example.team": "a"},
    "TaskTemplate": {
        "ContainerSpec": {
            "Image": "demo:1", "Labels": {"c": "d"}, "Command": ["/bin/sh", "-c"], "Args": ["exec sleep 1000"],
            "Hostname": "{{.Service.Name}}-{{.Task.Slot}}", "Env": ["A=1", "B=two words"], "Dir": "/tmp",
            "User": "1000:1000", "Groups": ["100"], "TTY": True, "ReadOnly": True, "StopSignal": "SIGINT",
            "StopGracePeriod": 7 * NS + 500_000_000, "Init": True, "OomScoreAdj": 100,
            "Hosts": ["10.1.2.3 db.local"], "Sysctls": {"net.ipv4.ip_forward": "1"},
            "CapabilityAdd": ["CAP_NET_ADMIN"], "CapabilityDrop": ["CAP_MKNOD"],
            "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
            "DNSConfig": {"Nameservers": ["10.0.0.53"], "Search": ["example.org"], "Options": ["ndots:2"]},
            "Mounts": [
                {"Type": "bind", "Source": "/srv/data", "Target": "/data", "ReadOnly": True,
                 "BindOptions": {"Propagation": "rslave"}},
                {"Type": "bind", "Source": "/srv/ro", "Target": "/ro", "ReadOnly": True,
                 "BindOptions": {"ReadOnlyNonRecursive": True}},
                {"Type": "volume", "Source": "cache", "Target": "/cache",
                 "VolumeOptions": {"NoCopy": True, "Labels": {"v": "1"},
                                   "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs"}}}},
                {"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1770}},
            ],
            "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5 * NS, "Timeout": 2 * NS,
                            "StartPeriod": 1 * NS, "StartInterval": 3 * NS, "Retries": 4},
            "Secrets": [{"File": {"Name": "db-pass", "UID": "0", "GID": "0", "Mode": 0o400},
                         "SecretID": "s3cr3tid", "SecretName": "db-pass"}],
            "Configs": [{"File": {"Name": "/etc/app.conf", "UID": "0", "GID": "0", "Mode": 0o444},
                         "ConfigID": "c0nf1gid", "ConfigName": "app-conf"}],
        },
        "Resources": {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 << 20, "Pids": 100},
                      "Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 32 << 20}},
        "RestartPolicy": {"Condition": "on-failure", "Delay": 2 * NS, "MaxAttempts": 3, "Window": 60 * NS},
        "Placement": {"Constraints": ["node.role==manager", "node.labels.zone!=b"],
                      "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}], "MaxReplicas": 2,
                      "Platforms": [{"Architecture": "amd64", "OS": "linux"}, {"Architecture": "arm64", "OS": "linux"}]},
        "Networks": [{"Target": "netid1", "Aliases": ["api"]}, {"Target": "netid2"}],
        "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "3"}},
        "ForceUpdate": 2,
    },
    "Mode": {"Replicated": {"Replicas": 3}},
    "UpdateConfig": {"Parallelism": 2, "Delay": 3 * NS, "FailureAction": "rollback", "Monitor": 10 * NS,
                     "MaxFailureRatio": 0.25, "Order": "start-first"},
    "RollbackConfig": {"Parallelism": 1, "Delay": 1 * NS, "FailureAction": "continue", "Monitor": 4 * NS,
                       "MaxFailureRatio": 0.5, "Order": "stop-first"},
    "EndpointSpec": {"Mode": "vip", "Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
        {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 5353, "PublishMode": "host"}]},
}


def round_trip(body: dict) -> dict:
    """Docker spec -> our params -> our validated spec -> Docker spec (what inspect shows)."""
    stored = spec.to_dict(spec_from_params(services.spec_params(schema.check("/services/create", "post", body))))
    return services.spec_view(stored)


def contains(got, sent, where="Spec") -> None:
    """Every non-zero value sent is in `got`, equal (lists item by item)."""
    if isinstance(sent, dict):
        for key, value in sent.items():
            if value in (None, "", 0, False, [], {}):
                continue
            assert key in got, f"{where}.{key} is missing from {sorted(got)}"
            contains(got[key], value, f"{where}.{key}")
    elif isinstance(sent, list):
        assert len(got) == len(sent), f"{where}: {got!r} != {sent!r}"
        for i, (g, s) in enumerate(zip(got, sent)):
            contains(g, s, f"{where}.{i}")
    else:
        assert got == sent, f"{where}: {got!r} != {sent!r}"


def test_a_rich_spec_round_trips_with_nanosecond_durations():
    got = round_trip(copy.deepcopy(RICH))
    contains(got, RICH)
    assert got["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 7_500_000_000
    assert got["UpdateConfig"]["Delay"] == 3 * NS and got["TaskTemplate"]["RestartPolicy"]["Window"] == 60 * NS


@pytest.mark.parametrize("mode, back", [
    ({"Global": {}}, {"Global": {}}),
    ({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}, {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}),
    ({"GlobalJob": {}}, {"GlobalJob": {}}),
    ({"Replicated": {"Replicas": 0}}, {"Replicated": {"Replicas": 0}}),
])
def test_every_mode_round_trips(mode, back):
    body = {"Name": "m", "TaskTemplate": {"ContainerSpec": {"Image": "demo:1"}}, "Mode": mode}
    assert round_trip(body)["Mode"] == back


def test_absent_fields_take_dockers_defaults():
    got = round_trip({"Name": "d", "TaskTemplate": {"ContainerSpec": {"Image": "demo:1"}}})
    assert got["Mode"] == {"Replicated": {"Replicas": 1}}
    assert got["TaskTemplate"]["RestartPolicy"] == {"Condition": "any", "Delay": 5 * NS, "MaxAttempts": 0, "Window": 0}
    assert got["UpdateConfig"] == {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Monitor": 5 * NS,
                                   "MaxFailureRatio": 0.0, "Order": "stop-first"}
    assert got["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 10 * NS
    assert "Init" not in got["TaskTemplate"]["ContainerSpec"]          # None: the node's default
    assert "Healthcheck" not in got["TaskTemplate"]["ContainerSpec"]   # the image's


def test_go_zero_values_and_nulls_are_accepted_and_keys_match_without_case():
    body = {"Name": "z", "Labels": None, "TaskTemplate": {"ContainerSpec": {
        "Image": "demo:1", "Privileges": {"CredentialSpec": None, "SELinuxContext": None, "NoNewPrivileges": False},
        "OpenStdin": False,
        "Isolation": "default", "healthcheck": {"Test": ["NONE"]}}, "Runtime": "", "PluginSpec": None},
        "EndpointSpec": {"Ports": []}}
    got = round_trip(body)
    assert got["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {"Test": ["NONE"]}
    # an object of zero members is Go's zero too (docker stack deploy sends such a Privileges)
    assert "Privileges" not in got["TaskTemplate"]["ContainerSpec"]


@pytest.mark.parametrize("patch, field", [
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Privileges": {"NoNewPrivileges": True}}}},
     "TaskTemplate.ContainerSpec.Privileges.NoNewPrivileges"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "OpenStdin": True}}}, "TaskTemplate.ContainerSpec.OpenStdin"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x"}, "PluginSpec": {"Name": "p"}}}, "TaskTemplate.PluginSpec"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x"}, "Runtime": "plugin"}}, "TaskTemplate.Runtime"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Isolation": "hyperv"}}}, "TaskTemplate.ContainerSpec.Isolation"),
    ({"EndpointSpec": {"Ports": [{"Name": "http", "TargetPort": 80}]}}, "EndpointSpec.Ports.0.Name"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x", "Mounts": [
        {"Type": "volume", "Target": "/v", "VolumeOptions": {"Subpath": "sub"}}]}}},
     "TaskTemplate.ContainerSpec.Mounts.0.VolumeOptions.Subpath"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "x"}, "Resources": {"Reservations": {
        "GenericResources": [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}]}}}},
     "TaskTemplate.Resources.Reservations.GenericResources"),
    ({"Frobnicate": True}, "Frobnicate"),
])
def test_a_field_we_cannot_honour_is_refused_by_name(patch, field):
    body = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "x"}}, **patch}
    with pytest.raises(Unsupported, match=field.replace(".", r"\.")):
        services.spec_params(schema.check("/services/create", "post", body))


@pytest.mark.parametrize("body, message", [
    ({"Name": 3}, "Name must be of type string"),
    ({"Name": "w", "TaskTemplate": {"ContainerSpec": {"Env": "A=1"}}}, "TaskTemplate.ContainerSpec.Env must be of type array"),
    ({"Name": "w", "Mode": {"Replicated": {"Replicas": "2"}}}, "Mode.Replicated.Replicas must be of type integer"),
    ({"Name": "w", "EndpointSpec": {"Ports": [{"Protocol": "tcpx"}]}}, "EndpointSpec.Ports.0.Protocol must be one of"),
    ({"Name": "w", "UpdateConfig": {"Delay": 1.5}}, "UpdateConfig.Delay must be of type integer"),
])
def test_bodies_are_checked_against_the_swagger_schema(body, message):
    with pytest.raises(schema.BadBody, match=message):
        schema.check("/services/create", "post", body)


def test_update_sends_every_replaceable_param_and_refuses_a_rename_or_a_new_mode():
    current = {"spec": {"name": "web", "mode": "replicated"}}
    params = services.update_params(copy.deepcopy(RICH), current)
    assert "name" not in params and "mode" not in params
    assert params["replicas"] == 3 and params["env"] == ["A=1", "B=two words"] and params["force_update"] == 2
    with pytest.raises(Unsupported, match="renaming services is not supported"):
        services.update_params(dict(RICH, Name="other"), current)
    with pytest.raises(Unsupported, match="mode cannot be changed"):
        services.update_params(dict(RICH, Mode={"Global": {}}), current)


def test_a_secret_by_name_alone_is_resolved_by_the_control_api():
    body = {"Name": "w", "TaskTemplate": {"ContainerSpec": {"Image": "x", "Secrets": [{"SecretName": "pw"}]}}}
    assert services.spec_params(body)["secrets"] == [{"uid": "0", "gid": "0", "mode": 0o444, "source": "pw"}]


def service(mode="replicated", replicas=3, per_node=0) -> spec.Service:
    return spec.Service("svc", spec.ServiceSpec("web", spec.ContainerSpec("demo:1"), mode=mode, replicas=replicas,
                                                max_replicas_per_node=per_node))


def task(n: int, state: str, desired="running") -> spec.Task:
    return spec.Task(f"t{n}", "svc", "web", n, "node", desired, spec.ContainerSpec("demo:1"), 1,
                     spec.TaskStatus(state))


@pytest.mark.parametrize("svc, tasks, want", [
    (service(), [task(1, "running"), task(2, "running"), task(3, "pending")], (2, 3, 0)),
    (service(per_node=1), [task(1, "running")], (1, 3, 0)),
    (service("replicated-job", 5), [task(1, "complete"), task(2, "complete"), task(3, "running")], (1, 5, 2)),
])
def test_service_status_reads_the_control_apis_replicas_column(svc, tasks, want):
    status = services.service_status(replicas_column(svc, tasks))
    assert (status["RunningTasks"], status["DesiredTasks"], status["CompletedTasks"]) == want


def test_a_log_line_is_one_multiplexed_frame_with_the_swarm_details():
    line = {"node_id": "n1", "service_id": "s1", "task_id": "t1", "stream": "stderr", "line": "a b,c=d",
            "time": "2026-01-02T03:04:05.000000001Z", "details": {"env var": "x,y"}}
    data = logs.frame(line, timestamps=True)
    payload = (b"2026-01-02T03:04:05.000000001Z com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,"
               b"com.docker.swarm.task.id=t1,env%20var=x%2Cy a b,c=d\n")
    assert data == struct.pack(">BxxxL", 2, len(payload)) + payload
    raw = logs.frame(dict(line, stream="stdout"), timestamps=False, with_details=False)
    assert raw == b"\x01\x00\x00\x00\x00\x00\x00\x08a b,c=d\n"


def test_log_query_parameters():
    assert logs.tail_param("all") is None and logs.tail_param("5") == 5
    assert logs.time_param("since", "1700000000.5") == "2023-11-14T22:13:20.500000000Z"
    assert logs.time_param("since", "0") is None
    with pytest.raises(Unsupported, match="since"):
        logs.time_param("since", "yesterday")
    with pytest.raises(Unsupported, match="tail"):
        logs.tail_param("many")


def test_filters_in_both_of_dockers_shapes():
    assert objects.filters_param({"name": {"web": True, "db": False}}) == {"name": ["web"]}
    assert objects.filters_param({"label": ["a=b"]}) == {"label": ["a=b"]}
    with pytest.raises(Unsupported):
        objects.filters_param({"name": 3})


NODE = {"id": "n1", "hostname": "m1", "role": "worker", "status": "ready", "availability": "active",
        "manager_status": "", "addr": "10.0.0.1:2377", "labels": {"zone": "a", "old": "x"}, "version": 7,
        "created_at": "2026-01-01T00:00:00.000000000Z", "updated_at": ""}


def test_a_node_spec_becomes_label_changes_availability_and_a_promotion():
    params, change = objects.node_update_params(
        {"Labels": {"zone": "b", "new": "1"}, "Role": "manager", "Availability": "drain"}, NODE)
    assert params == {"ref": "n1", "label_add": {"zone": "b", "new": "1"}, "label_rm": ["old"],
                      "availability": "drain"}
    assert change == "promote"
    assert objects.node_update_params({"Labels": NODE["labels"], "Role": "worker", "Availability": "active"},
                                      NODE) == ({"ref": "n1"}, None)
    with pytest.raises(Unsupported, match="Name"):
        objects.node_update_params({"Name": "renamed"}, NODE)


def test_node_view_is_dockers_node():
    view = objects.node_view(dict(NODE, role="manager", manager_status="leader"))
    assert view["Spec"] == {"Labels": NODE["labels"], "Role": "manager", "Availability": "active"}
    assert view["ManagerStatus"] == {"Leader": True, "Reachability": "reachable", "Addr": "10.0.0.1:2377"}
    assert view["Status"]["Addr"] == "10.0.0.1" and view["Version"] == {"Index": 7}
    assert view["UpdatedAt"] == objects.ZERO_TIME      # Go cannot parse ""


def test_network_create_takes_overlay_only_and_refuses_what_it_cannot_make():
    body = {"Name": "n", "Driver": "overlay", "Attachable": True, "Labels": {"a": "b"},
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24"}], "Options": {}}, "Options": {},
            "CheckDuplicate": True}
    assert objects.network_create_params(schema.check("/networks/create", "post", body)) == {
        "name": "n", "driver": "overlay", "attachable": True, "labels": {"a": "b"}, "subnet": "10.9.0.0/24"}
    for patch, field in (({"Driver": "bridge"}, "Driver"), ({"Internal": True}, "Internal"),
                         ({"EnableIPv6": True}, "EnableIPv6"),
                         ({"IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.9"}]}}, "Gateway")):
        with pytest.raises(Unsupported, match=field):
            objects.network_create_params(dict(body, **patch))


def test_secret_bodies_decode_base64_and_refuse_drivers():
    assert objects.file_object_params({"Name": "s", "Data": "aGk="}) == {"name": "s", "labels": {}, "data": b"hi"}
    with pytest.raises(Unsupported, match="Driver.Name"):
        objects.file_object_params({"Name": "s", "Data": "aGk=", "Driver": {"Name": "vault"}})
    with pytest.raises(Unsupported, match="base64"):
        objects.file_object_params({"Name": "s", "Data": "not base64!"})


def test_swarm_spec_maps_onto_cluster_update():
    info = {"task_history_limit": 5, "heartbeat_period": 1.0, "cert_expiry_period": 3600.0, "cluster_id": "c"}
    spec_ = objects.swarm_view(info, "W", "M")
    assert spec_["JoinTokens"] == {"Worker": "W", "Manager": "M"}
    sent = copy.deepcopy(spec_["Spec"])
    sent["Orchestration"]["TaskHistoryRetentionLimit"] = 2
    assert objects.swarm_update_params(sent) == {"task_history_limit": 2, "heartbeat": 1.0, "cert_expiry": 3600.0,
                                                 "autolock": False}
    with pytest.raises(Unsupported, match="CAConfig.ExternalCAs"):
        objects.swarm_update_params(dict(sent, CAConfig={"ExternalCAs": [{"URL": "https://ca"}]}))

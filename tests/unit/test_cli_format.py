"""--format templates, -f/--filter, `node ps` and `inspect --pretty`, against the fake daemon
of test_cli (exact params sent, exact output)."""
from __future__ import annotations

import json

import pytest

from swarm.rpc.messages import RPCError
from tests.unit.test_cli import failed, ok
from tests.unit.test_cli_network import ROWS as NETWORKS, NetworkFake, RECORD
from tests.unit.test_cli_service import INSPECTED, SERVICES, SID, TASKS


@pytest.fixture
def fake(state_dir):
    daemon = NetworkFake(state_dir)
    daemon.answers.update({"service.ls": SERVICES, "service.ps": [TASKS[1], TASKS[0], TASKS[2]],
                           "service.inspect": [INSPECTED], "network.ls": NETWORKS, "network.inspect": [RECORD]})
    daemon.start()
    yield daemon
    daemon.stop()


# -- lists -----------------------------------------------------------------------


def test_table_template_has_docker_s_headers_and_aligned_columns(fake, run):
    assert ok(run("service", "ls", "--format", "table {{.Name}}\t{{.Replicas}}\t{{.Image}}")) == (
        "NAME      REPLICAS   IMAGE\n"
        "agent     3/3        busybox\n"
        "web       2/3        nginx:1.25\n"
    )
    # typed as docker users type it in a shell: a backslash and a t
    assert ok(run("service", "ls", "--format", r"table {{.ID}}\t{{.Mode | upper}}")) == (
        "ID             MODE\n"
        "k5k3v6l9lqr8   GLOBAL\n"
        "zzzzzzzzzzzz   REPLICATED\n"
    )


def test_plain_templates_print_one_line_per_row(fake, run):
    assert ok(run("service", "ls", "--format", "{{.Name}}: {{.Image}}")) == "agent: busybox\nweb: nginx:1.25\n"
    lines = ok(run("service", "ls", "--format", "{{json .}}")).splitlines()
    assert json.loads(lines[0]) == {"ID": SID[:12], "Name": "agent", "Mode": "global", "Replicas": "3/3",
                                    "Image": "busybox", "Ports": ""}
    # a custom format wins over -q, as docker's
    assert ok(run("service", "ls", "-q", "--format", "{{.Name}}")) == "agent\nweb\n"


def test_json_format_is_unchanged(fake, run):
    assert ok(run("service", "ls", "--format", "json")) == json.dumps([SERVICES[1], SERVICES[0]], indent=4) + "\n"


def test_a_bad_template_is_one_sentence(fake, run):
    assert failed(run("service", "ls", "--format", "{{.Nope}}"), 1) == \
        "Error: template parsing error: unknown field .Nope\n"
    assert failed(run("service", "ps", "--format", "{{nosuch .ID}}", "web"), 1) == \
        'Error: template parsing error: function "nosuch" not defined\n'
    err = failed(run("service", "ls", "--format", "yaml"), 2)
    assert "'yaml' is not table, json or a Go template" in err


def test_task_templates_indent_history_only_in_tables(fake, run):
    assert ok(run("service", "ps", "--format", "table {{.Name}}\t{{.CurrentState}}\t{{.Error}}", "web")) == (
        "NAME        CURRENT STATE           ERROR\n"
        "web.1       Running 2 seconds ago\n"
        ' \\_ web.1   Failed 2 seconds ago    "task: non-zero exit (1): the …"\n'
        'web.2       Pending 2 seconds ago   "no suitable node (insufficien…"\n'
    )
    assert ok(run("service", "ps", "--format", "{{.Name}} {{.Node}} {{.DesiredState}}", "web")) == (
        "web.1 node-a Running\nweb.1 node-b Shutdown\nweb.2  Running\n")


def test_filters_are_sent_and_self_is_this_node(fake, run):
    ok(run("service", "ls", "-f", "name=web", "--filter", "label=env=prod", "-f", "name=api"))
    ok(run("service", "ps", "-f", "node=self", "-f", "desired-state=running", "web"))
    ok(run("service", "ls"))
    assert fake.params("service.ls") == [{"filters": {"name": ["web", "api"], "label": ["env=prod"]}}, {}]
    assert fake.params("service.ps") == [{"refs": ["web"], "filters": {"node": ["mgr1"],
                                                                       "desired-state": ["running"]}}]


def test_filter_errors(fake, run):
    err = failed(run("service", "ls", "-f", "name"), 2)
    assert "bad format of filter 'name' (expected name=value)" in err.splitlines()[-1]
    fake.answers["node.ls"] = RPCError("bad_request", "invalid filter 'colour'")
    assert failed(run("node", "ls", "-f", "colour=red"), 1) == "Error: invalid filter 'colour'\n"


def test_node_ls_templates_and_filters(fake, run):
    out = ok(run("node", "ls", "-f", "role=worker", "--format", "{{.Hostname}} {{.Status}}{{if .Self}} (me){{end}}"))
    assert out == "node-a Ready (me)\nnode-b Ready\nnode-b Down\n"    # the fake does not filter
    assert fake.params("node.ls") == [{"filters": {"role": ["worker"]}}]
    assert ok(run("node", "ls", "--format", "table {{.ID}}\t{{.Self}}\t{{.ManagerStatus}}")) == (
        "ID                  MANAGER STATUS\n"     # docker's Self column has no title
        "mgr1      true      Leader\n"
        "wrk1      false\n"
        "wrk2      false\n"
    )


# -- node ps ---------------------------------------------------------------------


def test_node_ps_lists_this_node_s_tasks_by_default(fake, run):
    out = ok(run("node", "ps"))
    assert out.splitlines()[0].split() == ["ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE",
                                           "ERROR"]
    assert fake.params("service.ps") == [{"refs": [], "filters": {"node": ["mgr1"]}}]


def test_node_ps_of_named_nodes_with_filters_and_formats(fake, run):
    assert ok(run("node", "ps", "-q", "node-b", "self")) == "".join(t["id"] + "\n" for t in (TASKS[1], TASKS[0],
                                                                                                TASKS[2]))
    assert ok(run("node", "ps", "-f", "desired-state=running", "--format", "{{.ID}}", "--no-trunc", "node-a")) == \
        "".join(t["id"] + "\n" for t in (TASKS[0], TASKS[1], TASKS[2]))
    assert fake.params("service.ps") == [
        {"refs": [], "filters": {"node": ["node-b", "mgr1"]}},
        {"refs": [], "filters": {"desired-state": ["running"], "node": ["node-a"]}}]


# -- inspect ---------------------------------------------------------------------


def test_inspect_templates_read_the_json_document(fake, run):
    assert ok(run("service", "inspect", "--format", "{{.spec.name}} {{.Spec.Replicas}} {{.ID}}", "web")) == \
        f"web 3 {SID}\n"
    assert ok(run("service", "inspect", "-f", "{{range .spec.container.mounts}}{{.Source}}:{{.target}}{{end}}",
                  "web")) == "/srv:/data\n"
    assert ok(run("node", "inspect", "-f", "{{.hostname}} {{index .labels \"zone\"}}", "mgr1")) == "node-a a\n"
    assert ok(run("network", "inspect", "--format", "{{.Subnet}}/{{.vni}}", "backend")) == "10.0.1.0/24/4097\n"
    assert failed(run("service", "inspect", "-f", "{{.spec.nope}}", "web"), 1) == \
        "Error: template parsing error: unknown field .spec.nope\n"


def test_pretty_flag_is_format_pretty(fake, run):
    assert ok(run("service", "inspect", "--pretty", "web")) == ok(run("service", "inspect", "--format", "pretty",
                                                                     "web"))
    assert ok(run("node", "inspect", "--pretty", "mgr1")).startswith("ID:                   mgr1\n")
    assert failed(run("service", "inspect", "--pretty", "-f", "{{.id}}", "web"), 1) == \
        "Error: --format is incompatible with human friendly format\n"


FULL = {
    "id": SID, "created_at": "2024-05-01T10:00:00.000000000Z", "updated_at": "2024-05-01T10:01:00.500000000Z",
    "ports": [{"target": 80, "published": 30080, "protocol": "tcp", "mode": "ingress"}],
    "spec": {"name": "web", "mode": "replicated-job", "replicas": 4, "max_concurrent": 2,
             "labels": {"team": "a", "flag": ""}, "constraints": [], "placement_prefs": ["spread=node.labels.zone"],
             "max_replicas_per_node": 2, "networks": ["q2m6x0b8d4ejv7w1k9t3ryzpa"], "endpoint_mode": "vip",
             "reservations": {"nano_cpus": 0, "memory_bytes": 0}, "limits": {"nano_cpus": 0, "memory_bytes": 0},
             "container": {
                 "image": "alpine", "entrypoint": ["/bin/sh", "-c"], "command": ["echo hi"], "env": [],
                 "hostname": "{{.Node.Hostname}}-{{.Task.Slot}}", "user": "nobody", "groups": ["wheel"],
                 "workdir": "/srv", "init": True, "tty": True, "read_only": True, "stop_signal": "SIGINT",
                 "stop_grace_period": 10.0, "cap_add": ["CAP_NET_ADMIN"], "cap_drop": ["CAP_CHOWN"],
                 "sysctls": {"net.core.somaxconn": "1024"}, "ulimits": [{"name": "nofile", "soft": 100, "hard": 200}],
                 "pids_limit": 50, "oom_score_adj": 0, "labels": {}, "hosts": ["10.0.0.9 db"],
                 "dns": {"nameservers": ["1.1.1.1"], "search": ["example.org"], "options": []},
                 "log_driver": {"name": "local", "options": {"max-size": "1m"}},
                 "mounts": [{"type": "tmpfs", "target": "/tmp", "source": "", "readonly": False,
                             "tmpfs_size": 67108864, "tmpfs_mode": 0o700},
                            {"type": "bind", "target": "/data", "source": "/srv", "readonly": True,
                             "bind_propagation": "rshared", "bind_recursive": "enabled"}]}},
}


def test_pretty_prints_every_option_the_service_has(fake, run):
    fake.answers["service.inspect"] = [FULL]
    assert ok(run("service", "inspect", "--pretty", "web")) == (
        f"ID:                   {SID}\n"
        "Name:                 web\n"
        "Labels:\n"
        " flag\n"
        " team=a\n"
        "Service Mode:         Replicated job\n"
        " Total Completions:   4\n"
        " Max Concurrent:      2\n"
        "Created at:           2024-05-01T10:00:00.000000000Z\n"
        "Updated at:           2024-05-01T10:01:00.500000000Z\n"
        "Placement:\n"
        " Preferences:         [spread=node.labels.zone]\n"
        " Max Replicas Per Node: 2\n"
        "ContainerSpec:\n"
        " Image:               alpine\n"
        " Command:             /bin/sh -c\n"
        " Args:                'echo hi'\n"
        " Dir:                 /srv\n"
        " User:                nobody\n"
        " Hostname:            {{.Node.Hostname}}-{{.Task.Slot}}\n"
        " Stop Signal:         SIGINT\n"
        " Groups:              wheel\n"
        " Init:                true\n"
        " TTY:                 true\n"
        " Read Only:           true\n"
        " StopGracePeriod:     10s\n"
        " DNS:                 1.1.1.1\n"
        " DNS Search:          example.org\n"
        " Hosts:\n"
        "  10.0.0.9 db\n"
        "Capabilities:\n"
        " Add:                 CAP_NET_ADMIN\n"
        " Drop:                CAP_CHOWN\n"
        "SysCtls:\n"
        " net.core.somaxconn: 1024\n"
        "Ulimits:\n"
        " nofile: 100:200\n"
        "Mounts:\n"
        " Target:              /tmp\n"
        "  Source:             \n"
        "  ReadOnly:           false\n"
        "  Type:               tmpfs\n"
        "  Size:               64MiB\n"
        "  Mode:               700\n"
        " Target:              /data\n"
        "  Source:             /srv\n"
        "  ReadOnly:           true\n"
        "  Type:               bind\n"
        "  Propagation:        rshared\n"
        "Log Driver:\n"
        " Name:                local\n"
        " LogOpts:\n"
        "  max-size:           1m\n"
        "Resources:\n"
        " Limits:\n"
        "  PIDs:               50\n"
        "Networks: backend\n"
        "Endpoint Mode:        vip\n"
        "Ports:\n"
        " PublishedPort = 30080\n"
        "  Protocol = tcp\n"
        "  TargetPort = 80\n"
        "  PublishMode = ingress\n"
    )


# -- networks --------------------------------------------------------------------


def test_network_ls_templates_and_filters(fake, run):
    assert ok(run("network", "ls", "-f", "driver=overlay", "--format", "table {{.ID}}\t{{.Name}}\t{{.Subnet}}")) == (
        "NETWORK ID     NAME      SUBNET\n"
        "q2m6x0b8d4ej   backend   10.0.1.0/24\n"
        "i8h0c5u2n7w4   ingress   10.0.0.0/24\n"
    )
    assert fake.params("network.ls") == [{"filters": {"driver": ["overlay"]}}]

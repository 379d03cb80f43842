"""Docker's service options through a real daemon and real runc containers: create and
update round trips (`service inspect` shows the fields), bad input refused in one sentence
with nothing created, and a task whose own output shows its user, workdir, hostname
template and read-only root."""
from __future__ import annotations

import pytest

from swarm.lab.localcluster import eventually


@pytest.fixture
def node(image_node):
    return image_node


def inspect(swarm, m1, name):
    return swarm.json(m1, "service", "inspect", name)[0]["spec"]


def test_create_and_update_round_trip(swarm, node, tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text("# settings\nLEVEL=debug\n")
    swarm.run(node, "service", "create", "--detach", "--name", "opts", "--replicas", "0",
              "--entrypoint", "/bin/sh -c", "-u", "nobody", "--group", "tty", "-w", "/tmp", "--init", "-t",
              "--read-only", "--stop-signal", "SIGUSR1", "--cap-add", "net_admin", "--cap-drop", "mknod",
              "--sysctl", "net.ipv4.ip_forward=1", "--ulimit", "nofile=1024:2048", "--limit-pids", "20",
              "--oom-score-adj", "100", "--hostname", "{{.Service.Name}}-{{.Task.Slot}}", "--dns", "10.0.0.2",
              "--dns-search", "example.org", "--dns-option", "ndots:2", "--host", "db:10.0.0.5",
              "-l", "tier=front", "--container-label", "c=1", "--env-file", str(env_file),
              "--log-driver", "local", "--log-opt", "max-size=1m", "--log-opt", "max-file=2",
              "--placement-pref", "spread=node.labels.zone", "--replicas-max-per-node", "2",
              "--mount", "type=tmpfs,target=/scratch,tmpfs-size=16m,tmpfs-mode=1770",
              "--mount", "type=volume,source=cache,target=/cache,volume-nocopy,volume-label=a=b",
              "-p", "18080-18081:80-81", "demo:1", "echo hi")
    spec = inspect(swarm, node, "opts")
    c = spec["container"]
    assert (c["entrypoint"], c["command"], c["user"], c["groups"], c["workdir"]) == (
        ["/bin/sh", "-c"], ["echo hi"], "nobody", ["tty"], "/tmp")
    assert (c["init"], c["tty"], c["read_only"], c["stop_signal"]) == (True, True, True, "SIGUSR1")
    assert (c["cap_add"], c["cap_drop"], c["sysctls"]) == (["CAP_NET_ADMIN"], ["CAP_MKNOD"],
                                                          {"net.ipv4.ip_forward": "1"})
    assert c["ulimits"] == [{"name": "nofile", "soft": 1024, "hard": 2048}]
    assert (c["pids_limit"], c["oom_score_adj"], c["hostname"]) == (20, 100, "{{.Service.Name}}-{{.Task.Slot}}")
    assert c["dns"] == {"nameservers": ["10.0.0.2"], "search": ["example.org"], "options": ["ndots:2"]}
    assert (c["hosts"], c["labels"], c["env"]) == (["10.0.0.5 db"], {"c": "1"}, ["LEVEL=debug"])
    assert c["log_driver"] == {"name": "local", "options": {"max-size": "1m", "max-file": "2"}}
    assert [(m["type"], m["target"]) for m in c["mounts"]] == [("tmpfs", "/scratch"), ("volume", "/cache")]
    assert (c["mounts"][0]["tmpfs_size"], c["mounts"][0]["tmpfs_mode"]) == (16 << 20, 0o1770)
    assert (c["mounts"][1]["volume_nocopy"], c["mounts"][1]["volume_labels"]) == (True, {"a": "b"})
    assert (spec["labels"], spec["placement_prefs"], spec["max_replicas_per_node"]) == (
        {"tier": "front"}, ["spread=node.labels.zone"], 2)
    assert [(p["published"], p["target"]) for p in spec["ports"]] == [(18080, 80), (18081, 81)]

    swarm.run(node, "service", "update", "--detach", "--entrypoint", "", "--read-only=false", "--no-tty",
              "--cap-add", "mknod", "--cap-drop", "net_admin", "--sysctl-rm", "net.ipv4.ip_forward",
              "--ulimit-add", "nproc=64", "--ulimit-rm", "nofile", "--dns-add", "10.0.0.3", "--host-rm", "db",
              "--host-add", "cache:10.0.0.6", "--label-add", "v=2", "--label-rm", "tier",
              "--mount-rm", "/cache", "--mount-add", "type=tmpfs,target=/scratch", "--group-rm", "tty",
              "--placement-pref-rm", "spread=node.labels.zone", "--log-opt", "max-size=2m", "opts")
    spec = inspect(swarm, node, "opts")
    c = spec["container"]
    assert (c["entrypoint"], c["read_only"], c["tty"], c["init"], c["user"]) == ([], False, False, True, "nobody")
    assert (c["cap_add"], c["cap_drop"], c["sysctls"], c["groups"]) == ([], [], {}, [])
    assert c["ulimits"] == [{"name": "nproc", "soft": 64, "hard": 64}]
    assert c["dns"]["nameservers"] == ["10.0.0.2", "10.0.0.3"] and c["hosts"] == ["10.0.0.6 cache"]
    assert [(m["type"], m["target"], m["tmpfs_size"]) for m in c["mounts"]] == [("tmpfs", "/scratch", 0)]
    assert c["log_driver"] == {"name": "local", "options": {"max-size": "2m"}}
    assert (spec["labels"], spec["placement_prefs"]) == ({"v": "2"}, [])


@pytest.mark.parametrize("args, code, sentence", [
    (["--cap-add", "NET_ADMN"], 2, "unknown capability 'NET_ADMN'"),
    (["--sysctl", "kernel.panic=1"], 2, "sysctl 'kernel.panic' is not allowed"),
    (["--ulimit", "nofile=2048:1024"], 2, "the soft limit 2048 is above the hard limit 1024"),
    (["--ulimit", "nofile"], 2, "invalid ulimit 'nofile'"),
    (["--hostname", "{{.Task.Foo}}"], 1, "invalid template in --hostname"),
    (["-e", "X={{.Service.Nope}}"], 1, "invalid template in --env X"),
    (["--mount", "type=volume,source=v-{{.Nope}},target=/v"], 1, "invalid template in --mount source"),
    (["--log-opt", "max-file=0"], 1, "invalid --log-opt: max-file cannot be less than 1"),
    (["--placement-pref", "spread=zone"], 1, "--placement-pref: invalid placement preference"),
    (["--user", "ghost"], 1, "invalid --user: unable to find user ghost: no matching entries in passwd file"),
    (["--group", "wheel"], 1, "invalid --group: unable to find group wheel: no matching entries in group file"),
])
def test_bad_input_is_one_sentence_and_creates_nothing(swarm, node, args, code, sentence):
    proc = swarm.run(node, "service", "create", "--detach", "--name", "bad", *args, "demo:1", check=False)
    assert proc.returncode == code, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert sentence in last and "Traceback" not in proc.stderr
    assert swarm.json(node, "service", "ls") == []


def test_an_update_with_bad_input_changes_nothing(swarm, node):
    swarm.run(node, "service", "create", "--detach", "--name", "keep", "--replicas", "0", "--hostname", "h",
              "demo:1")
    before = swarm.json(node, "service", "inspect", "keep")[0]
    proc = swarm.run(node, "service", "update", "--detach", "--hostname", "{{.Node.Nope}}", "keep", check=False)
    assert proc.returncode == 1 and "invalid template in --hostname" in proc.stderr
    after = swarm.json(node, "service", "inspect", "keep")[0]
    assert (after["spec"], after["spec_version"]) == (before["spec"], before["spec_version"])


def test_a_task_runs_with_its_user_workdir_hostname_and_read_only_root(swarm, node):
    script = ("id; pwd; hostname; grep -c . /etc/resolv.conf >/dev/null; "
              "touch /probe 2>/dev/null && echo root-writable || echo root-read-only; "
              "touch /tmp/ok && echo tmpfs-writable")
    swarm.run(node, "service", "create", "--detach", "--name", "who", "--restart-condition", "none",
              "-u", "nobody", "-w", "/tmp", "--hostname", "{{.Service.Name}}-{{.Task.Slot}}", "--read-only",
              "--mount", "type=tmpfs,target=/tmp,tmpfs-mode=1777", "demo:1", "sh", "-c", script)
    eventually(lambda: [t["state"] for t in swarm.json(node, "service", "ps", "who")] == ["complete"], 60,
               "the task to complete")
    logs = swarm.run(node, "service", "logs", "who").stdout
    lines = [line.split("| ", 1)[1] for line in logs.splitlines() if "| " in line]
    assert lines[0].startswith("uid=65534(nobody) gid=65534(nogroup)"), lines
    assert lines[1:] == ["/tmp", "who-1", "root-read-only", "tmpfs-writable"]


def test_a_bind_source_missing_on_the_nodes_is_refused_before_anything_is_created(swarm, node, tmp_path):
    proc = swarm.run(node, "service", "create", "--detach", "--name", "nobind",
                     "--mount", "type=bind,source=/nonexistent/swarm-test,target=/data", "demo:1", "true", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        "Error: invalid --mount: bind source path does not exist: /nonexistent/swarm-test (on node m1)"
    assert swarm.json(node, "service", "ls") == []
    # A source that is there is fine; a constraint no node matches leaves nobody to ask.
    swarm.run(node, "service", "create", "--detach", "--name", "bind", "--replicas", "0",
              "--mount", f"type=bind,source={tmp_path},target=/data", "demo:1", "true")
    swarm.run(node, "service", "create", "--detach", "--name", "later", "--replicas", "0",
              "--constraint", "node.labels.disk==ssd",
              "--mount", "type=bind,source=/nonexistent/swarm-test,target=/data", "demo:1", "true")
    proc = swarm.run(node, "service", "update", "--detach", "--constraint-rm", "node.labels.disk==ssd", "later",
                     check=False)
    assert proc.returncode == 1 and "bind source path does not exist" in proc.stderr


def test_a_templated_bind_source_missing_on_its_node_rejects_the_task_with_a_sentence(swarm, node):
    swarm.run(node, "service", "create", "--detach", "--name", "nobind", "--restart-condition", "none",
              "--mount", "type=bind,source=/nonexistent/{{.Task.Slot}},target=/data", "demo:1", "true")
    eventually(lambda: any("does not exist" in t["error"] for t in swarm.json(node, "service", "ps", "nobind")),
               60, "the task rejected on its node")
    task = swarm.json(node, "service", "ps", "nobind")[0]
    assert task["state"] == "rejected"
    assert "The bind mount source /nonexistent/1 does not exist on this node." in task["error"]

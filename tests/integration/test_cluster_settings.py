"""Cluster settings through real daemons: `swarm init` flags (availability, address pools,
data path port, task history limit) and `swarm update` (task history limit, heartbeat
period, certificate expiry), read back from `swarm info` and from what the cluster does."""
import datetime
import json
import subprocess

import pytest

from swarm.agent.networking import prefix_for
from swarm.lab.localcluster import Swarm, eventually


@pytest.fixture
def cluster(tmp_path, demo_tar):
    swarm = Swarm(str(tmp_path))
    try:
        m1 = swarm.init("m1", "--availability", "drain", "--default-addr-pool", "10.123.0.0/16",
                        "--default-addr-pool", "172.29.0.0/16", "--default-addr-pool-mask-length", "26",
                        "--data-path-port", "7789", "--task-history-limit", "3")
        w1 = swarm.join("w1", m1, "worker")
        swarm.run(w1, "image", "import", demo_tar, "demo:1")
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 10, "nodes ready")
        yield swarm, m1, w1
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def info(swarm, node) -> dict:
    return swarm.json(node, "info")


def test_init_flags_shape_the_cluster(cluster):
    swarm, m1, w1 = cluster
    text = swarm.run(m1, "info").stdout
    for line in (" Orchestration:\n  Task History Retention Limit: 3\n",
                 " Default Address Pool: 10.123.0.0/16 172.29.0.0/16\n", " SubnetSize: 26\n",
                 " Data Path Port: 7789\n", " Dispatcher:\n  Heartbeat Period: 1s\n",
                 " CA Configuration:\n  Expiry Duration: 2160h0m0s\n"):
        assert line in text, text
    # The worker reads the same settings (through a manager).
    assert info(swarm, w1)["data_path_port"] == 7789
    # --availability drain: the first node takes no tasks.
    assert swarm.ls(m1)["m1"]["availability"] == "drain"
    # Networks take their subnets from the pools: ingress the first, then each new one the next.
    swarm.run(m1, "network", "create", "front")
    nets = {n["name"]: n["subnet"] for n in swarm.json(m1, "network", "ls")}
    assert nets == {"ingress": "10.123.0.0/26", "front": "10.123.0.64/26"}
    # The overlay datapath uses the cluster's data path port for its VXLAN device.
    eventually(lambda: swarm.run(m1, "service", "create", "--name", "web", "--detach", "--network", "front",
                                 "demo:1", "sleep", "1000", check=False).returncode == 0, 20, "the service")
    eventually(lambda: [t["node"] for t in swarm.json(m1, "service", "ps", "web") if t["state"] == "running"]
               == ["w1"], 60, "the task running on w1")
    front = next(n for n in swarm.json(m1, "network", "ls") if n["name"] == "front")
    w1_id = swarm.ls(m1)["w1"]["id"]
    link = subprocess.run(["ip", "-n", f"{prefix_for(w1_id)}-ov-{front['id'][:10]}", "-d", "-j", "link", "show",
                           "vxlan0"], capture_output=True, text=True, check=True).stdout
    [vxlan] = json.loads(link)
    assert vxlan["linkinfo"]["info_data"]["port"] == 7789


def test_swarm_update_changes_the_settings_and_what_the_cluster_does(cluster):
    swarm, m1, w1 = cluster
    # (until w1's heartbeat has told the managers it has the image)
    eventually(lambda: swarm.run(m1, "service", "create", "--name", "crash", "--detach", "--restart-delay", "100ms",
                                 "demo:1", "sh", "-c", "exit 3", check=False).returncode == 0, 20, "the service")

    def history() -> int:
        return sum(1 for t in swarm.json(m1, "service", "ps", "crash") if t["state"] == "failed")
    # The init limit, 3 a slot: the live replacement and two ended tasks (three between a failure
    # and its replacement's creation), as SwarmKit's reaper counts.
    eventually(lambda: history() == 2, 60, "two ended tasks kept beside the live one (the init limit)")
    assert history() <= 3
    assert swarm.run(m1, "update", "--task-history-limit", "1", "--dispatcher-heartbeat", "2s",
                     "--cert-expiry", "48h").stdout == "Swarm updated.\n"
    settings = info(swarm, m1)
    assert (settings["task_history_limit"], settings["heartbeat_period"], settings["cert_expiry_period"]) == \
        (1, 2.0, 48 * 3600.0)
    eventually(lambda: history() <= 1, 60, "at most one ended task kept after the update")
    for _ in range(5):                                  # and it stays so while the task keeps failing
        assert history() <= 1
    # Nodes take the new heartbeat period from their next heartbeat's answer.
    eventually(lambda: json.load(open(f"{w1.state_dir}/node.json"))["heartbeat"] == 2.0, 20, "w1's period")
    # A certificate issued from now on lasts 48h.
    w2 = swarm.join("w2", m1, "worker")
    expiry = datetime.datetime.fromisoformat(info(swarm, w2)["cert_expiry"].replace("Z", "")[:26])
    left = expiry - datetime.datetime.utcnow()
    assert datetime.timedelta(hours=47) < left <= datetime.timedelta(hours=48)
    # Only what is given changes.
    swarm.run(m1, "update", "--task-history-limit", "2")
    assert info(swarm, m1)["heartbeat_period"] == 2.0


def test_bad_settings_are_one_sentence(cluster):
    swarm, m1, w1 = cluster
    for args, words in ((["update", "--task-history-limit", "-5"], "--task-history-limit must be"),
                        (["update", "--dispatcher-heartbeat", "1ms"], "--dispatcher-heartbeat must be"),
                        (["update", "--cert-expiry", "soon"], "is not a duration"),
                        (["update", "--external-ca", "protocol=cfssl,url=https://ca"], "not supported yet"),
                        (["update", "--autolock", "maybe"], "is not a valid boolean")):
        proc = swarm.run(m1, *args, check=False)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = swarm.run(w1, "update", "--task-history-limit", "2", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: This node is not a swarm manager.")
    fresh = swarm.node("fresh")
    for args, words in ((["--data-path-port", "80"], "--data-path-port must be from 1024 to 49151"),
                        (["--default-addr-pool", "10.0.0.0/33"], "not an IPv4 network"),
                        (["--default-addr-pool", "10.9.0.0/16", "--default-addr-pool-mask-length", "8"],
                         "--default-addr-pool-mask-length must be from 16"),
                        (["--availability", "asleep"], "'asleep' is not one of")):
        proc = swarm.run(fresh, "init", "--advertise-addr", fresh.addr, *args, check=False)
        assert proc.returncode in (1, 2) and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len([line for line in proc.stderr.splitlines() if line.startswith("Error")]) == 1
    assert swarm.run(fresh, "info", check=False).returncode != 0          # nothing was created

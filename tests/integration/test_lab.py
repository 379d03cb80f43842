"""`swarm lab`: hosts as network namespaces, one daemon each, through the real CLI.

Every test builds its own lab under a unique name (and a subnet no other
lab on the machine uses); a fixture runs `swarm lab down` at teardown, also
when the test fails. Comparisons of the machine before and after are limited
to what a lab could have made (its namespaces, its links and addresses, its
processes and files), so other work running on the machine does not disturb them.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from swarm.lab import lab as labmod

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_ADDR = re.compile(r"\binet 10\.(2[0-4][0-9]|250)\.0\.\d+/")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter"),
    pytest.mark.xdist_group("netns"),     # network namespaces: one worker (tests/conftest.py)
]


def swarm(*args, check=True, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"swarm {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def lab_processes(name):
    """PIDs whose command line names the lab's state, or that run in one of its namespaces."""
    inodes = set()
    for ns in labmod.netns_names():
        if ns.startswith(f"swl-{name}-"):
            st = os.stat(os.path.join(labmod.NETNS_DIR, ns))
            inodes.add((st.st_dev, st.st_ino))
    out = []
    for pid in labmod._pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inodes or f"/swarm-lab/{name}/" in labmod._cmdline(pid).replace("\0", " "):
            out.append(pid)
    return out


def snapshot(name, prefixes=()):
    """What a lab named `name` (whose daemons name namespaces with `prefixes`) could leave on the machine."""
    links = [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").splitlines()]
    ours = (f"swl-{name}-", *prefixes)
    return {
        "netns": sorted(n for n in ip("netns", "list").split() if n.startswith(ours)),
        "links": sorted(n for n in links if re.fullmatch(r"h\d+x?|br0", n)),
        "lab_addrs": sorted(LAB_ADDR.findall(ip("-o", "addr"))),
        "run": os.path.exists(os.path.join(labmod.RUN_ROOT, name)),
        "state": os.path.exists(os.path.join(labmod.STATE_ROOT, name)),
        "processes": lab_processes(name),
        "mounts": labmod._mounts_under(os.path.join(labmod.STATE_ROOT, name)),
        "ip_forward": open("/proc/sys/net/ipv4/ip_forward").read().strip(),
    }


def fresh_name():
    """A unique lab name whose subnet no existing lab uses."""
    used = {rec.get("octet") for rec in map(labmod.load, labmod.lab_names()) if rec}
    while True:
        name = "t" + uuid.uuid4().hex[:8]
        if labmod.subnet_octet(name) not in used:
            return name


@pytest.fixture
def lab():
    name = fresh_name()
    try:
        yield name
    finally:
        swarm("lab", "down", "--name", name, check=False)


def up(name, nodes=3, managers=1):
    started = time.monotonic()
    out = swarm("lab", "up", "--nodes", str(nodes), "--managers", str(managers), "--name", name).stdout
    print(f"lab up --nodes {nodes} --managers {managers}: {time.monotonic() - started:.2f} s")
    return out


def lab_exec(name, host, *cmd, check=True):
    return swarm("lab", "exec", "--name", name, host, "--", *cmd, check=check)


def test_up_forms_a_cluster_of_hosts_in_namespaces(lab):
    before = snapshot(lab)
    out = up(lab, nodes=3, managers=1)
    assert f"swarm lab exec --name {lab} h1 -- swarm node ls" in out
    x = labmod.subnet_octet(lab)

    rows = json.loads(lab_exec(lab, "h1", "swarm", "node", "ls", "--format", "json").stdout)
    assert sorted(r["hostname"] for r in rows) == ["h1", "h2", "h3"]
    assert all(r["status"] == "ready" for r in rows)
    roles = {r["hostname"]: (r["role"], r["manager_status"], r["addr"]) for r in rows}
    assert roles == {"h1": ("manager", "leader", f"10.{x}.0.1:2377"), "h2": ("worker", "", f"10.{x}.0.2:2377"),
                     "h3": ("worker", "", f"10.{x}.0.3:2377")}

    # each host: its own address on eth0, forwarding on, and the other hosts reachable over the underlay
    probe = ("import socket, sys; s = socket.create_connection((sys.argv[1], 2377), timeout=5); "
             "print(s.getsockname()[0])")
    for i in (1, 2, 3):
        host_addrs = lab_exec(lab, f"h{i}", "ip", "-o", "-4", "addr").stdout
        assert re.search(rf"eth0\s+inet 10\.{x}\.0\.{i}/24", host_addrs), host_addrs
        assert lab_exec(lab, f"h{i}", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        peer = f"10.{x}.0.{i % 3 + 1}"
        assert lab_exec(lab, f"h{i}", sys.executable, "-c", probe, peer).stdout.strip() == f"10.{x}.0.{i}"

    # nothing of the lab in the root namespace
    during = snapshot(lab)
    assert during["lab_addrs"] == before["lab_addrs"]
    assert during["links"] == before["links"]
    assert during["ip_forward"] == before["ip_forward"]


def test_ls_json_follows_the_contract(lab):
    up(lab, nodes=3, managers=3)
    labs = {item["name"]: item for item in json.loads(swarm("lab", "ls", "--format", "json").stdout)}
    item = labs[lab]
    x = labmod.subnet_octet(lab)
    assert [h["name"] for h in item["hosts"]] == ["h1", "h2", "h3"]
    for i, host in enumerate(item["hosts"], start=1):
        assert {"name", "addr", "netns", "role", "state_dir"} <= set(host)
        assert host == {"name": f"h{i}", "addr": f"10.{x}.0.{i}", "netns": f"swl-{lab}-h{i}", "role": "manager",
                        "state_dir": os.path.join(labmod.STATE_ROOT, lab, f"h{i}")}
        assert os.path.isfile(os.path.join(host["state_dir"], "swarm.pid"))
    assert lab in swarm("lab", "ls", "-q").stdout.split()
    table = swarm("lab", "ls").stdout
    assert re.search(rf"^{lab}\s+h2\s+10\.{x}\.0\.2\s+manager\s+swl-{lab}-h2\s", table, re.M), table
    rows = json.loads(lab_exec(lab, "h3", "swarm", "node", "ls", "--format", "json").stdout)
    assert sorted(r["manager_status"] for r in rows) == ["leader", "reachable", "reachable"]


def test_exec_passes_exit_codes_and_runs_as_the_node(lab):
    up(lab, nodes=1)
    assert lab_exec(lab, "h1", "sh", "-c", "exit 7", check=False).returncode == 7
    assert lab_exec(lab, "h1", "true").returncode == 0
    env = lab_exec(lab, "h1", "sh", "-c", 'echo "$SWARM_STATE_DIR"; command -v swarm').stdout.split()
    assert env[0] == os.path.join(labmod.STATE_ROOT, lab, "h1")
    assert env[1].endswith("/swarm")
    info = json.loads(lab_exec(lab, "h1", "swarm", "info", "--format", "json").stdout)
    assert info["hostname"] == "h1"
    missing = lab_exec(lab, "h9", "true", check=False)
    assert missing.returncode == 1 and "no host 'h9'" in missing.stderr
    nolab = swarm("lab", "exec", "--name", "nosuchlab0", "h1", "--", "true", check=False)
    assert nolab.returncode == 1 and "no lab named" in nolab.stderr


def test_down_restores_the_machine_and_can_run_twice(lab):
    before = snapshot(lab)
    up(lab, nodes=3)
    assert snapshot(lab)["netns"] != before["netns"]
    out = swarm("lab", "down", "--name", lab).stdout
    assert f"removed namespace swl-{lab}-u" in out and "removed daemon h1" in out
    assert snapshot(lab) == before
    again = swarm("lab", "down", "--name", lab)
    assert again.returncode == 0 and "Nothing of lab" in again.stdout
    assert snapshot(lab) == before


def test_down_cleans_up_after_kill9_and_a_lost_record_entry(lab):
    before = snapshot(lab)
    up(lab, nodes=3)
    record = labmod.load(lab)
    node_prefixes = record["netns_prefixes"][1:]
    assert len(node_prefixes) == 3 and snapshot(lab, node_prefixes)["netns"] == sorted(
        f"swl-{lab}-{h}" for h in ("h1", "h2", "h3", "u"))
    # a stray process inside h2's namespace, not known to any daemon
    stray = subprocess.Popen([sys.executable, "-m", "swarm", "lab", "exec", "--name", lab, "h2", "--", "sleep", "300"],
                             env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, start_new_session=True)
    # a task namespace as h3's daemon names them (swarm.agent.networking), with a process inside
    from pyroute2 import netns
    task_ns = labmod.node_netns_prefix(record["hosts"][2]["state_dir"]) + "t-fake"
    netns.create(task_ns)
    in_task = subprocess.Popen(["nsenter", f"--net=/run/netns/{task_ns}", "--", "sleep", "300"], start_new_session=True)
    pids = [int(open(os.path.join(h["state_dir"], "swarm.pid")).read()) for h in record["hosts"]]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    record["hosts"] = [h for h in record["hosts"] if h["name"] != "h3"]
    labmod.save(record)
    time.sleep(0.3)  # the stray sleep has replaced nsenter by now
    out = swarm("lab", "down", "--name", lab).stdout
    assert f"removed namespace {task_ns}" in out and f"removed namespace swl-{lab}-h3" in out
    assert stray.wait(timeout=10) == -signal.SIGKILL
    assert in_task.wait(timeout=10) == -signal.SIGKILL
    assert snapshot(lab, node_prefixes) == before
    assert swarm("lab", "down", "--name", lab).returncode == 0


@pytest.mark.skipif(shutil.which("runc") is None or not os.path.exists("/usr/bin/busybox"),
                    reason="needs runc and busybox-static")
def test_down_removes_containers_of_crashed_nodes(lab, tmp_path):
    before = snapshot(lab)
    up(lab, nodes=2)
    tar = subprocess.run([os.path.join(ROOT, "scripts/build-demo-image.sh"), str(tmp_path / "demo.tar")],
                         check=True, capture_output=True, text=True).stdout.strip()
    for host in ("h1", "h2"):
        lab_exec(lab, host, "swarm", "image", "import", tar, "demo:1")
    lab_exec(lab, "h1", "swarm", "service", "create", "--name", "web", "--replicas", "2", "--timeout", "60s",
             "demo:1", "sleep", "1000")
    root = os.path.join(labmod.STATE_ROOT, lab)
    assert labmod._mounts_under(root), "the containers' root filesystems are mounted"
    containers = [int(open(path).read()) for path in glob.glob(os.path.join(root, "h*", "tasks", "*", "init.pid"))]
    assert len(containers) == 2 and all(os.path.exists(f"/proc/{p}") for p in containers)
    record = labmod.load(lab)
    for h in record["hosts"]:
        os.kill(int(open(os.path.join(h["state_dir"], "swarm.pid")).read()), signal.SIGKILL)
    out = swarm("lab", "down", "--name", lab).stdout
    assert out.count("removed container") == 2
    assert snapshot(lab, record["netns_prefixes"]) == before
    assert not [p for p in containers if os.path.exists(f"/proc/{p}")]


def test_up_refuses_bad_input_and_cleans_up_a_failed_build(lab):
    bad = swarm("lab", "up", "--nodes", "2", "--managers", "3", "--name", lab, check=False)
    assert bad.returncode == 2
    bad = swarm("lab", "up", "--nodes", "21", "--name", lab, check=False)
    assert bad.returncode == 2
    bad = swarm("lab", "up", "--name", "Bad-Name", check=False)
    assert bad.returncode == 1 and "is not a lab name" in bad.stderr
    before = snapshot(lab)
    # the state root is a file: the hosts exist by the time the build fails
    failed = swarm("lab", "up", "--nodes", "2", "--name", lab, "--state-root", "/dev/null", check=False)
    assert failed.returncode == 1 and failed.stderr.startswith("Error: lab ") and "was removed" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert snapshot(lab) == before


def test_a_daemon_that_fails_at_start_is_named_in_the_error(lab, tmp_path):
    # The machine's nftables is unusable (as in a container without CAP_NET_ADMIN): h1's `swarm init`
    # writes its state and prints "Swarm initialized: ...", then its daemon exits at start. The lab
    # names the daemon's failure, not what init printed before it failed.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nft").write_text("#!/bin/sh\necho 'Error: Could not process rule: Operation not permitted' >&2\nexit 1\n")
    (fake / "nft").chmod(0o755)
    before = snapshot(lab)
    failed = subprocess.run([sys.executable, "-m", "swarm", "lab", "up", "--nodes", "2", "--name", lab],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT, PATH=f"{fake}:{os.environ['PATH']}"))
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.startswith(f"Error: lab {lab} could not be built (swarm init on h1 failed: "
                                    "the swarm daemon exited at start: "), failed.stderr
    assert "nftables is required by the swarm daemon" in failed.stderr
    assert "Operation not permitted" in failed.stderr
    assert "Swarm initialized" not in failed.stderr
    assert failed.stderr.rstrip().endswith("; everything it made was removed")
    assert len(failed.stderr.strip().splitlines()) == 1
    assert snapshot(lab) == before


def test_the_error_of_a_failed_command_comes_from_stderr_and_the_daemons_log(tmp_path):
    assert labmod.command_error("advertising hostname h1; use --hostname to choose\n"
                                "Error: the swarm daemon exited at start: boom.\n", 1) == (
        "the swarm daemon exited at start: boom")
    assert labmod.command_error("Killed\n", 137) == "Killed"
    assert labmod.command_error("", 3) == "exit code 3"
    assert labmod.daemon_failure(str(tmp_path)) == ""  # no log: the daemon never started
    (tmp_path / "daemon.log").write_text(
        "2024-05-01 10:00:00,000 INFO swarm.daemon: starting\n"
        "Traceback (most recent call last):\n"
        '  File "/x/raft/journal.py", line 9, in open\n'
        "    os.open(path)\n"
        "PermissionError: [Errno 13] Permission denied: '/var/lib/swarm-lab/l/h1/raft'\n\n")
    assert labmod.daemon_failure(str(tmp_path)) == (
        "PermissionError: [Errno 13] Permission denied: '/var/lib/swarm-lab/l/h1/raft'")
    (tmp_path / "daemon.log").write_text("2024-05-01 10:00:00,000 INFO swarm.daemon: listening\n")
    assert labmod.daemon_failure(str(tmp_path)) == "2024-05-01 10:00:00,000 INFO swarm.daemon: listening"

"""Overlay networking end to end in a 3-host lab (hosts are network
namespaces the test creates; `lab down` always runs): DNS, VIP load
balancing, dnsrr, the routing mesh, scaling and a dead host."""
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from swarm.agent.networking import prefix_for
from swarm.lab.localcluster import ROOT, eventually

pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)

PY = sys.executable
ENV = dict(os.environ, PYTHONPATH=ROOT)


def swarm(*args, check=True, timeout=120):
    proc = subprocess.run([PY, "-m", "swarm", *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"swarm {' '.join(args)}: {proc.stderr}{proc.stdout}")
    return proc


def in_netns(netns, code, timeout=90):
    proc = subprocess.run(["ip", "netns", "exec", netns, PY, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    if proc.returncode != 0:
        raise AssertionError(f"in {netns}: {proc.stderr}")
    return proc.stdout


RESOLVE = """
import dns.resolver, json, sys
r = dns.resolver.Resolver(configure=False); r.nameservers = ['127.0.0.11']; r.lifetime = 3
out = {}
for name in sys.argv[1:] or %r:
    try: out[name] = sorted(a.address for a in r.resolve(name, 'A'))
    except Exception as e: out[name] = type(e).__name__
print(json.dumps(out))
"""

FETCH = """
import json, time, urllib.request
seen = {}
for i in range(%d):
    for attempt in range(10):  # a task that just started may not be listening yet
        try:
            body = urllib.request.urlopen('http://%s/i.html', timeout=1).read().decode().strip()
            break
        except OSError as exc:
            seen['error: ' + str(exc)[:60]] = seen.get('error: ' + str(exc)[:60], 0) + 1
            time.sleep(0.1)
    else:
        break
    seen[body] = seen.get(body, 0) + 1
print(json.dumps(seen))
"""

HTTPD = ["sh", "-c", 'echo "task $(hostname)" > /tmp/i.html; exec httpd -f -p 80 -h /tmp']


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    name = "t" + uuid.uuid4().hex[:6]
    tar = str(tmp_path_factory.mktemp("img") / "demo.tar")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), tar], check=True,
                   capture_output=True)
    try:
        swarm("lab", "up", "--nodes", "3", "--name", name, timeout=180)
        for host in ("h1", "h2", "h3"):
            swarm("lab", "exec", "--name", name, host, "--", "swarm", "image", "import", tar, "demo:1")
        labs = json.loads(swarm("lab", "ls", "--format", "json").stdout)
        hosts = {h["name"]: h for entry in labs if entry["name"] == name for h in entry["hosts"]}
        time.sleep(1.5)
        yield name, hosts
    finally:
        swarm("lab", "down", "--name", name, check=False, timeout=180)


def on(lab, host, *args, **kw):
    return swarm("lab", "exec", "--name", lab[0], host, "--", "swarm", *args, **kw)


def network(lab, name):
    """`name` exists (created here if it does not): a test must not depend on another one having
    run before it in the same lab."""
    if name not in {n["name"] for n in json.loads(on(lab, "h1", "network", "ls", "--format", "json").stdout)}:
        on(lab, "h1", "network", "create", name)


def tasks(lab, service):
    rows = json.loads(on(lab, "h1", "service", "ps", service, "--format", "json").stdout)
    return [r for r in rows if r["desired_state"] == "running" and r["state"] == "running"]


def task_netns(lab, row):
    nodes = {n["hostname"]: n["id"] for n in json.loads(on(lab, "h1", "node", "ls", "--format", "json").stdout)}
    return f"{prefix_for(nodes[row['node']])}-t-{row['id'][:10]}"


def test_names_vip_spread_dnsrr_and_the_routing_mesh(lab):
    network(lab, "appnet")
    network(lab, "other")
    on(lab, "h1", "service", "create", "--name", "web", "--replicas", "3", "--network", "appnet",
       "--publish", "8080:80", "demo:1", *HTTPD, timeout=120)
    on(lab, "h1", "service", "create", "--name", "rr", "--replicas", "2", "--network", "appnet",
       "--endpoint-mode", "dnsrr", "demo:1", "sleep", "1000", timeout=120)
    on(lab, "h1", "service", "create", "--name", "hidden", "--network", "other", "demo:1", "sleep", "1000",
       timeout=120)
    web = tasks(lab, "web")
    assert len({r["node"] for r in web}) == 3
    client = task_netns(lab, tasks(lab, "rr")[0])
    names = json.loads(in_netns(client, RESOLVE % (["web", "tasks.web", "rr", "tasks.rr", "hidden"],)))
    web_ips = names["tasks.web"]
    assert len(web_ips) == 3 and len(names["web"]) == 1 and names["web"][0] not in web_ips  # the VIP
    assert len(names["rr"]) == 2 and names["rr"] == names["tasks.rr"]  # dnsrr: all task addresses
    assert not isinstance(names["hidden"], list)  # another network's service does not resolve
    # TCP to VIP:80 from another host's task spreads over all three backends
    seen = json.loads(in_netns(client, FETCH % (60, f"{names['web'][0]}:80")))
    answers = {k: v for k, v in seen.items() if not k.startswith("error")}
    assert len(answers) == 3 and min(answers.values()) >= 5, seen
    # the routing mesh answers on every host, also on a host running no task of the service
    on(lab, "h1", "service", "scale", "web=1")
    eventually(lambda: len(tasks(lab, "web")) == 1, 20, "scale down to 1")
    only = tasks(lab, "web")[0]["node"]
    empty = next(h for h in ("h1", "h2", "h3") if h != only)
    addr = lab[1][empty]["addr"].split(":")[0]
    seen = json.loads(in_netns(f"swl-{lab[0]}-h1", FETCH % (5, f"{addr}:8080")))
    assert sum(seen.values()) == 5


def test_a_vip_forwards_ports_that_were_never_published(lab):
    # Docker's VIP balances every port: nothing about port 8000 is declared anywhere.
    on(lab, "h1", "network", "create", "backnet")
    on(lab, "h1", "service", "create", "--name", "inner", "--replicas", "2", "--network", "backnet",
       "demo:1", "sh", "-c", 'echo "task $(hostname)" > /tmp/i.html; exec httpd -f -p 8000 -h /tmp', timeout=120)
    on(lab, "h1", "service", "create", "--name", "caller", "--network", "backnet", "demo:1", "sleep", "1000",
       timeout=120)
    eventually(lambda: len(tasks(lab, "inner")) == 2 and len(tasks(lab, "caller")) == 1, 30, "tasks running")
    client = task_netns(lab, tasks(lab, "caller")[0])
    vip = json.loads(in_netns(client, RESOLVE % (["inner"],)))["inner"][0]
    seen = json.loads(in_netns(client, FETCH % (40, f"{vip}:8000")))
    answers = {k: v for k, v in seen.items() if not k.startswith("error")}
    assert len(answers) == 2 and min(answers.values()) >= 5, seen
    on(lab, "h1", "service", "rm", "inner", "caller")


def test_scaling_and_a_dead_host_update_dns_and_the_load_balancer(lab):
    network(lab, "appnet")
    on(lab, "h1", "service", "create", "--name", "api", "--replicas", "2", "--network", "appnet",
       "--publish", "8081:80", "demo:1", *HTTPD, timeout=120)
    client = task_netns(lab, next(r for r in tasks(lab, "api") if r["node"] != "h3"))

    def backends():
        return json.loads(in_netns(client, RESOLVE % (["tasks.api"],)))["tasks.api"]

    on(lab, "h1", "service", "scale", "api=4")
    started = time.monotonic()
    eventually(lambda: len(tasks(lab, "api")) == 4, 30, "four tasks")
    converged = time.monotonic()
    eventually(lambda: len(backends()) == 4, 10, "DNS to list four tasks")
    assert time.monotonic() - converged < 2.5, "DNS lagged the tasks by more than 2 s"
    seen = json.loads(in_netns(client, FETCH % (60, f"{json.loads(in_netns(client, RESOLVE % (['api'],)))['api'][0]}:80")))
    answers = {k: v for k, v in seen.items() if not k.startswith("error")}
    assert len(answers) == 4 and sum(answers.values()) == 60, seen
    # kill h3's daemon: its tasks leave DNS and the LB map
    victim = "h3"
    pid = int(open(os.path.join(lab[1][victim]["state_dir"], "swarm.pid")).read())
    os.kill(pid, 9)
    eventually(lambda: all(r["node"] != victim for r in tasks(lab, "api")) and len(tasks(lab, "api")) == 4,
               30, "api back to four tasks off the dead host")
    eventually(lambda: len(backends()) == 4, 10, "DNS without the dead host's tasks")
    assert time.monotonic() - started < 60


def test_host_mode_port_answers_only_on_the_tasks_node(lab):
    on(lab, "h1", "service", "create", "--name", "local", "--replicas", "1", "--publish",
       "published=8090,target=80,mode=host", "demo:1", *HTTPD, timeout=120)
    node = tasks(lab, "local")[0]["node"]
    probe = """
import socket, sys
s = socket.socket(); s.settimeout(2)
try:
    s.connect((sys.argv[1], 8090)); print('open')
except OSError as e:
    print('closed')
"""
    for host in ("h1", "h2", "h3"):
        addr = lab[1][host]["addr"].split(":")[0]
        out = subprocess.run(["ip", "netns", "exec", f"swl-{lab[0]}-h1", PY, "-c", probe, addr],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        assert out == ("open" if host == node else "closed"), (host, node, out)


def test_two_networks_with_the_same_subnet_on_one_host_do_not_interfere(lab):
    for net in ("same1", "same2"):
        on(lab, "h1", "network", "create", "--subnet", "10.77.0.0/24", net)
    for svc, net in (("sa", "same1"), ("sb", "same2"), ("ca", "same1"), ("cb", "same2")):
        on(lab, "h1", "service", "create", "--name", svc, "--network", net, "--constraint", "node.hostname==h1",
           "demo:1", *HTTPD, timeout=120)
    for client, target in (("ca", "sa"), ("cb", "sb")):
        ns = task_netns(lab, tasks(lab, client)[0])
        ip = json.loads(in_netns(ns, RESOLVE % ([f"tasks.{target}"],)))[f"tasks.{target}"][0]
        assert ip.startswith("10.77.0.")
        seen = json.loads(in_netns(ns, FETCH % (3, f"{ip}:80")))
        expected = f"task {tasks(lab, target)[0]['id'][:12]}"
        assert seen == {expected: 3}, (client, seen, expected)


def test_leave_removes_the_nodes_namespaces_links_and_rules(lab):
    nodes = {n["hostname"]: n["id"] for n in json.loads(on(lab, "h1", "node", "ls", "--format", "json").stdout)}
    prefix = prefix_for(nodes["h2"]) + "-"
    host_ns = f"swl-{lab[0]}-h2"

    def namespaces():
        return [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                          text=True).stdout.splitlines() if line.strip()]

    # h2 runs a task on an overlay network with a published port (the tests before may have left it
    # none: a node removes the namespaces of networks it no longer needs)
    network(lab, "appnet")
    on(lab, "h1", "service", "create", "--name", "onh2", "--network", "appnet", "--publish", "8095:80",
       "--constraint", "node.hostname==h2", "demo:1", *HTTPD, timeout=120)
    eventually(lambda: [r["node"] for r in tasks(lab, "onh2")] == ["h2"], 60, "a task running on h2")
    assert any(n.startswith(prefix) for n in namespaces())  # its task's, its network's, the ingress sandbox
    links_before = subprocess.run(["ip", "netns", "exec", host_ns, "ip", "-o", "link"], capture_output=True,
                                  text=True).stdout
    assert "swarm_ingress" in subprocess.run(["ip", "netns", "exec", host_ns, "nft", "list", "tables"],
                                             capture_output=True, text=True).stdout
    on(lab, "h2", "leave", timeout=120)
    eventually(lambda: not any(n.startswith(prefix) for n in namespaces()), 30, "h2's namespaces to go")
    links = subprocess.run(["ip", "netns", "exec", host_ns, "ip", "-o", "link"], capture_output=True,
                           text=True).stdout
    assert len(links.splitlines()) <= len(links_before.splitlines())
    assert [line for line in links.splitlines() if "@" in line and "eth0" not in line] == []  # no veth left
    assert "swarm" not in subprocess.run(["ip", "netns", "exec", host_ns, "nft", "list", "tables"],
                                         capture_output=True, text=True).stdout

"""The routing mesh keeps answering through rolling updates and drains.

A 3-host lab (namespaces the test creates; `lab down` always runs) publishes
a 3-replica HTTP service on 8080. One client per host sends a request every
50 ms to the next host's address on 8080 (so each request goes through that
host's prerouting DNAT, its ingress sandbox and the VXLAN overlay) and
records every failure with its time. The timeout (3 s) outlasts the first
SYN retransmission, so a busy machine does not fail a request, while a
backend that cannot be reached still does: conntrack sends every
retransmission of a connection to the backend its first SYN was given. Meanwhile the
service is updated (tasks replaced one by one, stop-first) and a node is
drained and activated again, several times over. Not one request may fail:
a task leaves every node's load balancer before it stops, and a new task
only joins them once it answers.

When a request fails, the assertion message lists the failures next to the
task state changes and the ingress backends each host had programmed at
that time (sampled every 100 ms), which is what finds a stale entry.
"""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from swarm.agent.networking import prefix_for
from swarm.lab.localcluster import eventually
from tests.integration.test_networking import ENV, HTTPD, PY, lab, on, swarm  # noqa: F401 (lab: fixture)

HOSTS = ("h1", "h2", "h3")
pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)

CLIENT = r"""
import json, signal, sys, time, urllib.request
url, out = sys.argv[1], sys.argv[2]
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
ok, failures = 0, []
while not stop:
    started = time.time()
    try:
        body = urllib.request.urlopen(url, timeout=3.0).read().decode().strip()
        ok += 1 if body.startswith('task ') else 0
        if not body.startswith('task '):
            failures.append([started, time.time(), 'bad body ' + body[:40]])
    except Exception as exc:
        failures.append([started, time.time(), type(exc).__name__ + ': ' + str(exc)[:80]])
    time.sleep(max(0.0, 0.05 - (time.time() - started)))
with open(out, 'w') as f:
    json.dump({'ok': ok, 'failures': failures}, f)
"""


def node_ids(lab):
    return {n["hostname"]: n["id"] for n in json.loads(on(lab, "h1", "node", "ls", "--format", "json").stdout)}


def service_rows(lab, service):
    return json.loads(on(lab, "h1", "service", "ps", service, "--format", "json").stdout)


def running(lab, service):
    return [r for r in service_rows(lab, service) if r["desired_state"] == "running" and r["state"] == "running"]


def ingress_backends(sandbox_ns):
    """The task addresses the ingress sandbox DNATs port 8080 to (its endpoint chains)."""
    out = subprocess.run(["ip", "netns", "exec", sandbox_ns, "nft", "list", "table", "ip", "swarm_ingress"],
                         capture_output=True, text=True, timeout=10).stdout
    backends, chain = [], ""
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["chain"]:
            chain = words[1]
        elif chain.startswith("ep-tcp-8080-") and "dnat to" in line:
            backends.append(line.split("dnat to ")[1].split(":")[0])
    return sorted(backends)


def vxlan_peers(network_ns):
    """vxlan0's static entries in a host's ingress network namespace: {ip: vtep}."""
    def run(*argv):
        return subprocess.run(["ip", "netns", "exec", network_ns, *argv], capture_output=True, text=True,
                              timeout=10).stdout
    macs = {}
    for line in run("bridge", "fdb", "show", "dev", "vxlan0").splitlines():
        words = line.split()
        if "dst" in words:
            macs[words[0]] = words[words.index("dst") + 1]
    out = {}
    for line in run("ip", "neigh", "show", "dev", "vxlan0").splitlines():
        words = line.split()
        if "lladdr" in words:
            out[words[0]] = macs.get(words[words.index("lladdr") + 1], "no fdb")
    return dict(sorted(out.items()))


class Recorder:
    """Samples, in a thread, the task states and every host's ingress backends and VXLAN peers."""

    def __init__(self, lab, sandboxes, networks, service="mesh"):
        self.lab, self.sandboxes, self.networks, self.service = lab, sandboxes, networks, service
        self.events: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def changed(self, last, key, value, what):
        if last.get(key) != value:
            self.events.append((time.time(), what))
            last[key] = value

    def run(self):
        last: dict[object, object] = {}
        while not self.stop.is_set():
            for host in HOSTS:
                backends = ingress_backends(self.sandboxes[host])
                self.changed(last, ("lb", host), backends, f"{host} ingress -> {backends}")
                peers = vxlan_peers(self.networks[host])
                self.changed(last, ("fdb", host), peers, f"{host} vxlan peers {peers}")
            try:
                rows = service_rows(self.lab, self.service)
            except AssertionError:
                rows = []
            for r in rows:
                self.changed(last, r["id"], (r["node"], r["desired_state"], r["state"]),
                             f"task {r['id'][:8]} on {r['node'] or '-'} desired={r['desired_state']} "
                             f"state={r['state']}")
            self.stop.wait(0.1)


def converged(lab, replicas=3, avoid=None):
    def check():
        rows = service_rows(lab, "mesh")
        live = [r for r in rows if r["desired_state"] == "running"]
        return (len(live) == replicas and all(r["state"] == "running" for r in live)
                and not any(r["desired_state"] != "running" and r["state"] not in
                            ("shutdown", "complete", "failed", "rejected", "orphaned", "remove") for r in rows)
                and (avoid is None or all(r["node"] != avoid for r in live)))
    eventually(check, 60, "the service to converge")


def test_the_mesh_answers_through_rolling_updates_and_drains(lab, tmp_path):
    on(lab, "h1", "service", "create", "--name", "mesh", "--replicas", "3", "--publish", "8080:80",
       "--stop-grace-period", "2s", "demo:1", *HTTPD, timeout=120)
    converged(lab)
    ids = node_ids(lab)
    sandboxes = {h: f"{prefix_for(ids[h])}-in-gress" for h in HOSTS}
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    networks = {h: next(n for n in namespaces if n.startswith(f"{prefix_for(ids[h])}-ov-")) for h in HOSTS}
    eventually(lambda: all(len(ingress_backends(ns)) == 3 for ns in sandboxes.values()), 20,
               "every host's ingress to list three backends")
    addr = {h: lab[1][h]["addr"].split(":")[0] for h in HOSTS}
    clients = []
    recorder = Recorder(lab, sandboxes, networks)
    try:
        for i, host in enumerate(HOSTS):
            target = HOSTS[(i + 1) % len(HOSTS)]
            out = str(tmp_path / f"client-{host}.json")
            proc = subprocess.Popen(["ip", "netns", "exec", f"swl-{lab[0]}-{host}", PY, "-c", CLIENT,
                                     f"http://{addr[target]}:8080/i.html", out], env=ENV)
            clients.append((host, target, proc, out))
        recorder.thread.start()
        time.sleep(1.0)
        steps = []
        for round_no, drained in enumerate(("h3", "h1", "h2")):
            steps.append((time.time(), f"update {round_no}"))
            on(lab, "h1", "service", "update", "--env-add", f"ROUND={round_no}", "mesh", timeout=120)
            converged(lab)
            steps.append((time.time(), f"drain {drained}"))
            on(lab, "h1", "node", "update", "--availability", "drain", drained)
            converged(lab, avoid=drained)
            steps.append((time.time(), f"activate {drained}"))
            on(lab, "h1", "node", "update", "--availability", "active", drained)
        time.sleep(1.0)
    finally:
        recorder.stop.set()
        for _, _, proc, _ in clients:
            proc.send_signal(signal.SIGTERM)
        for _, _, proc, _ in clients:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if recorder.thread.is_alive():
            recorder.thread.join(timeout=15)
    results = {}
    for host, target, _, out in clients:
        with open(out) as f:
            results[f"{host}->{target}"] = json.load(f)
    timeline = sorted(recorder.events + [(t, f"** {s}") for t, s in steps]
                      + [(f[0], f"!! {path} failed after {f[1] - f[0]:.2f} s: {f[2]}")
                         for path, res in results.items() for f in res["failures"]])
    with open(tmp_path / "timeline.txt", "w") as f:
        f.writelines(f"{t:.2f} {what}\n" for t, what in timeline)
    for host in HOSTS:  # the daemons' logs go with the lab: keep them next to the timeline
        log = os.path.join(lab[1][host]["state_dir"], "daemon.log")
        if os.path.exists(log):
            with open(log) as src, open(tmp_path / f"daemon-{host}.log", "w") as dst:
                dst.write(src.read())
    failures = [f"{path}: {len(res['failures'])} of {res['ok'] + len(res['failures'])} requests failed"
                for path, res in results.items() if res["failures"]]
    assert all(res["ok"] > 50 for res in results.values()), results  # the clients did run
    assert not failures, "\n".join(failures + [f"timeline in {tmp_path / 'timeline.txt'}"])

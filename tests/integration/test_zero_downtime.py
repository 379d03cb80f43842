"""A start-first rolling update drops no request, through the routing mesh and the VIP.

A 3-host lab (namespaces the test creates; `lab down` always runs) runs a
4-replica HTTP service published on 8080 and attached to an overlay network,
with a healthcheck that fetches the page it serves. Its two images come from
one rootfs: web:1 is the demo image, web:2 the same tar with another
www/index.html; every task answers with its id and its image's page, so each
answer says which version served it. One client per host sends a request every
50 ms to the next host's address on 8080 (prerouting DNAT, ingress sandbox,
VXLAN), and one client in a task of another service on the overlay network
sends them to the service's VIP. Meanwhile the service is updated to web:2
with `--update-order start-first --update-parallelism 2`: each new task starts
next to the old one and joins the load balancers only once its check passes,
and only then does the old task leave them and stop. Not one request may fail,
every request sent after the update completed is answered by web:2, and no
host's routing mesh ever lists fewer than four backends (stop-first would).
Each task's server listens a second after it starts, so a task that took
traffic before its check passed would refuse connections.

The clients' timeout (3 s) outlasts the first SYN retransmission, so a busy
machine does not fail a request, while a backend that cannot be reached still
does. When a request fails, the assertion names the timeline file: the
failures next to the task state changes and the ingress backends every host
had programmed (test_mesh_drain's Recorder), with the daemons' logs beside it.
"""
import calendar
import io
import json
import os
import signal
import subprocess
import tarfile
import time

import pytest

from swarm.agent.networking import prefix_for
from swarm.lab.localcluster import eventually
from tests.integration.test_mesh_drain import HOSTS, Recorder, ingress_backends, node_ids, service_rows
from tests.integration.test_networking import ENV, PY, RESOLVE, in_netns, lab, on, task_netns, tasks  # noqa: F401

pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)

V2_PAGE = b"<!DOCTYPE html>\n<html><body><h1>version 2</h1></body></html>\n"
# The task's id, then its image's page: an answer says which task and which version served it. The
# server listens a second after the task starts: a task that took traffic before its check passed
# would refuse connections.
PAGE = ["sh", "-c", '{ echo "task $(hostname)"; cat /www/index.html; } > /tmp/i.html; sleep 1; '
                    'exec httpd -f -p 80 -h /tmp']
CHECK = "wget -q -O /dev/null http://127.0.0.1:80/i.html"

CLIENT = r"""
import json, signal, sys, time, urllib.request
url, out = sys.argv[1], sys.argv[2]
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
answers = []   # [sent at, took, 'v1' | 'v2' | what went wrong]
while not stop:
    started = time.time()
    try:
        body = urllib.request.urlopen(url, timeout=3.0).read().decode()
        what = ('v2' if 'version 2' in body else 'v1') if body.startswith('task ') else 'bad body ' + body[:40]
    except Exception as exc:
        what = type(exc).__name__ + ': ' + str(exc)[:80]
    answers.append([started, time.time() - started, what])
    time.sleep(max(0.0, 0.05 - (time.time() - started)))
with open(out, 'w') as f:
    json.dump(answers, f)
"""


class CapacityRecorder(Recorder):
    """test_mesh_drain's Recorder that also keeps the fewest backends a host's ingress listed."""

    fewest = 1 << 30

    def changed(self, last, key, value, what):
        if isinstance(key, tuple) and key[0] == "lb":
            self.fewest = min(self.fewest, len(value))
        super().changed(last, key, value, what)


def image_v2(v1_tar: str, out: str) -> None:
    """A copy of the v1 rootfs tar whose www/index.html is V2_PAGE."""
    replaced = False
    with tarfile.open(v1_tar) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            if member.name.lstrip("./") == "www/index.html":
                member.size, replaced = len(V2_PAGE), True
                dst.addfile(member, io.BytesIO(V2_PAGE))
            else:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    assert replaced, "the demo image has no www/index.html"


def create(lab, *args):
    """service create once the hosts' heartbeats have reported the images just imported."""
    deadline = time.monotonic() + 20
    while True:
        proc = on(lab, "h1", "service", "create", *args, check=False, timeout=120)
        if proc.returncode == 0:
            return
        assert "not found on any node" in proc.stderr and time.monotonic() < deadline, proc.stderr
        time.sleep(0.5)


def update_status(lab, service):
    return json.loads(on(lab, "h1", "service", "inspect", service).stdout)[0].get("update_status") or {}


def epoch(rfc3339: str) -> float:
    """Seconds since the epoch of inspect's UTC time with nanoseconds (2024-05-01T10:00:00.123456789Z)."""
    whole, frac = rfc3339.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 10 ** len(frac)


def test_a_start_first_update_answers_every_request_and_then_only_from_the_new_version(lab, demo_tar, tmp_path):
    v2 = str(tmp_path / "web2.tar")
    image_v2(demo_tar, v2)
    for host in HOSTS:
        on(lab, host, "image", "import", demo_tar, "web:1")
        on(lab, host, "image", "import", v2, "web:2")
    on(lab, "h1", "network", "create", "webnet")
    create(lab, "--name", "web", "--replicas", "4", "--publish", "8080:80", "--network", "webnet",
           "--health-cmd", CHECK, "--health-interval", "500ms", "--health-start-period", "10s",
           "--health-start-interval", "200ms", "--health-timeout", "2s", "--health-retries", "3",
           "--stop-grace-period", "2s", "--update-order", "start-first", "--update-parallelism", "2",
           "--update-monitor", "2s", "web:1", *PAGE)
    create(lab, "--name", "caller", "--network", "webnet", "web:1", "sleep", "1000")
    eventually(lambda: len(tasks(lab, "web")) == 4 and len(tasks(lab, "caller")) == 1, 60, "the tasks to run")
    ids = node_ids(lab)
    sandboxes = {h: f"{prefix_for(ids[h])}-in-gress" for h in HOSTS}
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    networks = {h: next(n for n in namespaces if n.startswith(f"{prefix_for(ids[h])}-ov-")) for h in HOSTS}
    eventually(lambda: all(len(ingress_backends(ns)) == 4 for ns in sandboxes.values()), 20,
               "every host's ingress to list four backends")
    caller_ns = task_netns(lab, tasks(lab, "caller")[0])
    vip = json.loads(in_netns(caller_ns, RESOLVE % (["web"],)))["web"]
    assert isinstance(vip, list) and len(vip) == 1, vip
    addr = {h: lab[1][h]["addr"].split(":")[0] for h in HOSTS}
    paths = [(f"{h}->{HOSTS[(i + 1) % 3]}:8080", f"swl-{lab[0]}-{h}", f"http://{addr[HOSTS[(i + 1) % 3]]}:8080/i.html")
             for i, h in enumerate(HOSTS)] + [(f"caller->vip {vip[0]}", caller_ns, f"http://{vip[0]}/i.html")]
    clients = []
    recorder = CapacityRecorder(lab, sandboxes, networks, service="web")
    steps = []
    try:
        for path, netns, url in paths:
            out = str(tmp_path / f"client-{len(clients)}.json")
            clients.append((path, subprocess.Popen(["ip", "netns", "exec", netns, PY, "-c", CLIENT, url, out],
                                                   env=ENV), out))
        recorder.thread.start()
        time.sleep(1.5)
        steps.append((time.time(), "update --image web:2"))
        on(lab, "h1", "service", "update", "--detach", "--image", "web:2", "web")
        eventually(lambda: update_status(lab, "web").get("state") == "completed", 60, "the update to complete")
        completed_at = epoch(update_status(lab, "web")["completed_at"])
        steps.append((completed_at, "update completed"))
        time.sleep(1.5)
    finally:
        recorder.stop.set()
        for _, proc, _ in clients:
            proc.send_signal(signal.SIGTERM)
        for _, proc, _ in clients:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if recorder.thread.is_alive():
            recorder.thread.join(timeout=15)
    results = {}
    for path, _, out in clients:
        with open(out) as f:
            results[path] = json.load(f)
    failed = {path: [a for a in answers if a[2] not in ("v1", "v2")] for path, answers in results.items()}
    timeline = sorted(recorder.events + [(t, f"** {s}") for t, s in steps]
                      + [(a[0], f"!! {path} failed after {a[1]:.2f} s: {a[2]}") for path, bad in failed.items()
                         for a in bad]
                      + [(a[0], f"!! {path} answered by v1 after the update") for path, answers in results.items()
                         for a in answers if a[2] == "v1" and a[0] > completed_at])
    with open(tmp_path / "timeline.txt", "w") as f:
        f.writelines(f"{t:.2f} {what}\n" for t, what in timeline)
    for host in HOSTS:  # the daemons' logs go with the lab: keep them next to the timeline
        log = os.path.join(lab[1][host]["state_dir"], "daemon.log")
        if os.path.exists(log):
            with open(log) as src, open(tmp_path / f"daemon-{host}.log", "w") as dst:
                dst.write(src.read())
    report = {}
    for path, answers in results.items():
        after = [a[2] for a in answers if a[0] > completed_at]
        report[path] = {"v1": sum(a[2] == "v1" for a in answers), "v2": sum(a[2] == "v2" for a in answers),
                        "failed": len(failed[path]), "sent after the update": len(after),
                        "v1 after the update": after.count("v1")}
    summary = "".join(f"\n{path}: {r}" for path, r in report.items()) + f"\ntimeline in {tmp_path / 'timeline.txt'}"
    assert not any(r["failed"] for r in report.values()), "requests failed:" + summary
    # Once the update completed, the v1 answers stopped: every path answers from v2 only.
    assert not any(r["v1 after the update"] for r in report.values()), "v1 answered after the update:" + summary
    assert all(r["v1"] > 20 and r["sent after the update"] >= 10 for r in report.values()), \
        "a client did not run through the whole update:" + summary
    # start-first keeps the capacity: a slot's old task leaves the load balancers only once its
    # successor is in them (stop-first would drop to two backends per batch).
    assert recorder.fewest == 4, f"a host's routing mesh listed only {recorder.fewest} backends:" + summary
    live = [r for r in service_rows(lab, "web") if r["desired_state"] == "running"]
    assert len(live) == 4 and all(r["image"].split("@")[0] == "web:2" and r["state"] == "running" for r in live), live

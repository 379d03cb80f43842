"""Rolling updates and healthchecks: ours next to Docker swarm 20.10 in the same run.

    .venv/bin/python bench/update_bench.py [--runs 3] [--no-docker]      (as root, about 6.5 minutes)

Both sides run the same service: 10 replicas of an HTTP server (busybox httpd)
from one of two images, v1 and v2, built from the demo rootfs tar
(scripts/build-demo-image.sh) with a different /www/index.html ("v1" or "v2").
Each task answers "<its image's page> <its hostname>", so every answer says
which version and which task served it. The server's shell exits on SIGTERM
(a server that stops when asked, so the stop grace period is not what is
measured). The healthcheck, the same on both sides, is what a user would set
for zero downtime: `wget` of the page from inside the task, every 1 s,
timeout 2 s, 2 retries.

- ours: a 1-host lab (`swarm lab up --nodes 1`, a network namespace with its
  own address; `lab down` always runs). The service publishes 18080 -> 80; the
  client runs in the host's namespace and connects to the host's address on
  18080, so every request goes through the routing mesh (DNAT to the ingress
  sandbox, then to a task on the ingress overlay).
- Docker: a private dockerd 20.10 in a network namespace of its own (the
  machinery of bench/docker_anchor.py and bench/dns_bench.py: own data-root,
  exec-root, socket; all of it torn down after), a single-node swarm, an
  attachable overlay network. This kernel has no IPVS, so Docker's VIP and
  ingress routing mesh carry no traffic (../shared/NOTES-docker-anchor.md);
  the service is `--endpoint-mode dnsrr` and the client runs in the network
  namespace of a task of a second service on the same network, resolving the
  service name with Docker's embedded DNS (127.0.0.11) before every request
  and connecting to one of the addresses it answers. Docker adds a task to
  its DNS answers once healthy and removes it before stopping it, as ours
  does with its load balancers: the client sees what each side's control
  plane decides.

The client sends a GET every 20 ms (one connection per request, 3 s
timeout, which outlasts the first SYN retransmission) and records every
answer: ok (200 and a page) or failed (an error, a timeout, another status).

Figures:
- update: `service update --detach --image <the other image> --update-order
  ORDER --update-parallelism 2 --update-delay 0s web` (ORDER start-first,
  then stop-first; each run updates to the image the service is not on, so
  runs alternate v1 -> v2 and v2 -> v1), timed from just before the command
  to the first poll of the task list (every 50 ms, the daemon's or the
  engine's API: the data of `service ps`) seeing 10 tasks running the new
  image (`all_new_running_s`), to no task of the old image left alive
  (`old_gone_s`), and to UpdateStatus "completed" (`completed_s`, which
  includes the 5 s monitor period after the last batch, on both sides). The
  requests failed from the command to 1 s after the old tasks were gone. Per
  run also the stages, from the task states the poll saw: a new task's first
  sighting to running (start + first healthy check), an old task's desired
  shutdown to its end (load-balancer drain + stop), and the batches.
- unhealthy: one running task's page is removed inside its container (runc
  exec / docker exec `rm`), so its check fails; the time to its task failing,
  to its replacement (same slot) running, and to the first answer from the
  replacement through the client; and the requests failed meanwhile (the
  broken task answers 404 until it leaves the load balancer). The restart
  delay is the default of both (5 s), so the replacement starts 5 s after the
  failure.

Median of --runs runs each; the two sides alternate run by run (a noisy
machine slows both alike); ratios are ours / Docker (below 1: ours faster).
Prints one JSON document. Without dockerd (apt-get install docker.io) the
Docker side says why and ours is measured alone.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)
PY = sys.executable
REPLICAS = 10
PUBLISHED = 18080
SERVICE = "web"
POLL = 0.05
TERMINAL = {"complete", "shutdown", "failed", "rejected", "orphaned", "remove"}
# The task's answer: its image's page, then its hostname. The shell is PID 1 and exits on SIGTERM
# (a trap interrupts `wait`); the container's end then takes httpd with it.
SERVER = ('mkdir -p /tmp/www; echo "$(cat /www/index.html) $(hostname)" > /tmp/www/index.html; '
          'trap "exit 0" TERM; httpd -f -p 80 -h /tmp/www & wait')
CHECK = "wget -q -O /dev/null http://127.0.0.1:80/index.html"
HEALTH = ("--health-cmd", CHECK, "--health-interval", "1s", "--health-timeout", "2s", "--health-retries", "2")
UPDATE = ("--update-parallelism", "2", "--update-delay", "0s")


def log(msg: str) -> None:
    print(f"[update_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the client, run inside a network namespace --------------------------------------------------
def client(args: argparse.Namespace) -> None:
    """A GET every --period seconds until SIGTERM; one line per request, flushed as it ends:
    "SENT_AT TOOK OUTCOME HOST" (OUTCOME: v1 | v2 | !reason)."""
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    resolver = None
    if args.dns:
        import dns.resolver
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.11"]
        resolver.lifetime = 1.0
    with open(args.out, "w", buffering=1) as out:
        while not stop:
            sent = time.time()
            host = "-"
            try:
                if resolver is not None:     # Docker's dnsrr: ask before every request, pick an answer
                    addr = random.choice([a.address for a in resolver.resolve(args.dns, "A")])
                else:
                    addr = args.addr
                conn = http.client.HTTPConnection(addr, args.port, timeout=args.timeout)
                try:
                    conn.request("GET", "/index.html")
                    resp = conn.getresponse()
                    body = resp.read().decode(errors="replace").split()
                finally:
                    conn.close()
                if resp.status == 200 and len(body) == 2:
                    outcome, host = body
                else:
                    outcome = f"!HTTP{resp.status}"
            except Exception as exc:  # noqa: BLE001 - every failure is a failed request, named
                outcome = "!" + type(exc).__name__
            out.write(f"{sent:.4f} {time.time() - sent:.4f} {outcome} {host}\n")
            time.sleep(max(0.0, args.period - (time.time() - sent)))


def read_client(path: str) -> list[tuple[float, float, str, str]]:
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                rows.append((float(parts[0]), float(parts[1]), parts[2], parts[3]))
    return rows


class Client:
    """The client process of one measurement, in the side's namespace."""

    def __init__(self, prefix: list[str], args: list[str], out: str) -> None:
        self.out = out
        self.proc = subprocess.Popen([*prefix, PY, HERE, "client", "--out", out, *args],
                                     env=dict(os.environ, PYTHONPATH=ROOT), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not (os.path.exists(out) and read_client(out)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"client did not start: {self.stop_and_err()}")
            time.sleep(0.05)

    def rows(self) -> list[tuple[float, float, str, str]]:
        return read_client(self.out)

    def stop(self) -> list[tuple[float, float, str, str]]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.rows()

    def stop_and_err(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return (self.proc.communicate()[1] or "")[-500:]


# -- images ---------------------------------------------------------------------------------------
def build_images(work: str) -> dict[str, str]:
    """v1 and v2 tars: the demo rootfs with www/index.html "v1" / "v2"."""
    demo = os.path.join(work, "demo.tar")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), demo], check=True,
                   capture_output=True)
    out = {}
    for version in ("v1", "v2"):
        path = os.path.join(work, f"app-{version}.tar")
        page = f"{version}\n".encode()
        with tarfile.open(demo) as src, tarfile.open(path, "w") as dst:
            for member in src.getmembers():
                if member.name.lstrip("./") == "www/index.html":
                    member.size = len(page)
                    dst.addfile(member, io.BytesIO(page))
                else:
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        out[version] = path
    return out


# -- our side -------------------------------------------------------------------------------------
class Ours:
    name = "ours"

    def __init__(self) -> None:
        self.lab = ""
        self.images: dict[str, str] = {}
        self.current = "v1"
        self.env = dict(os.environ, PYTHONPATH=ROOT)

    def swarm(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([PY, "-m", "swarm", *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"swarm {' '.join(args)}: {proc.stderr}{proc.stdout}")
        return proc

    def on(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.swarm("lab", "exec", "--name", self.lab, "h1", "--", "swarm", *args, **kw)

    def lab_up(self) -> None:
        """`lab up --nodes 1` under a fresh name whose underlay subnet no other lab uses."""
        from swarm.lab import lab as labmod
        for _ in range(10):
            used = {entry["subnet"] for entry in labmod.labs()}
            name = "ub" + uuid.uuid4().hex[:8]
            if f"10.{labmod.subnet_octet(name)}.0.0/24" in used:
                continue
            self.lab = name
            proc = self.swarm("lab", "up", "--nodes", "1", "--name", name, check=False, timeout=300)
            if proc.returncode == 0:
                return
            if "already uses" not in proc.stderr:
                raise RuntimeError(f"swarm lab up --name {name}: {proc.stderr}{proc.stdout}")
            self.lab = ""
        raise RuntimeError("no free lab subnet")

    def setup(self, tars: dict[str, str]) -> dict:
        started = time.monotonic()
        self.lab_up()
        labs = json.loads(self.swarm("lab", "ls", "--format", "json").stdout)
        host = next(h for entry in labs if entry["name"] == self.lab for h in entry["hosts"] if h["name"] == "h1")
        self.state_dir, self.netns = host["state_dir"], host["netns"]
        self.addr = host["addr"].split(":")[0]
        self.sock = os.path.join(self.state_dir, "swarm.sock")
        self.runc_root = os.path.join(self.state_dir, "tasks", ".runc")
        self.cli_env = dict(self.env, SWARM_STATE_DIR=self.state_dir)
        for version, tar in tars.items():
            self.on("image", "import", tar, f"app:{version[1:]}")
            self.images[version] = f"app:{version[1:]}"
        deadline = time.monotonic() + 30
        while True:       # the node's heartbeat carries its image list to the manager
            proc = self.on("service", "create", "--detach", "--name", SERVICE, "--replicas", str(REPLICAS),
                           "--publish", f"{PUBLISHED}:80", *HEALTH, *UPDATE, self.images["v1"],
                           "sh", "-c", SERVER, check=False)
            if proc.returncode == 0:
                break
            if "not found on any node" not in proc.stderr + proc.stdout or time.monotonic() > deadline:
                raise RuntimeError(f"service create: {proc.stderr}{proc.stdout}")
            time.sleep(0.3)
        return {"lab": self.lab, "host_addr": self.addr, "setup_s": round(time.monotonic() - started, 1),
                "client": f"in {self.netns}, GET http://{self.addr}:{PUBLISHED}/index.html (routing mesh)"}

    def call(self, method: str, params: dict):
        from swarm.rpc.client import call_unix_sync
        return call_unix_sync(self.sock, method, params, timeout=10)

    def tasks(self) -> list[dict]:
        return [{"id": r["id"], "slot": r["slot"], "image": r["image"], "desired": r["desired_state"],
                 "state": r["state"], "host": r["id"][:12]} for r in self.call("service.ps", {"refs": [SERVICE]})]

    def update_state(self) -> str:
        return (self.call("service.inspect", {"refs": [SERVICE]})[0].get("update_status") or {}).get("state", "")

    def update(self, version: str, order: str) -> None:
        proc = subprocess.run([PY, "-m", "swarm", "service", "update", "--detach", "--image", self.images[version],
                               "--update-order", order, *UPDATE, SERVICE], capture_output=True, text=True,
                              env=self.cli_env, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"service update: {proc.stderr}{proc.stdout}")

    def break_task(self, task: dict) -> None:
        subprocess.run(["runc", "--root", self.runc_root, "exec", task["id"], "rm", "/tmp/www/index.html"],
                       check=True, capture_output=True, timeout=30)

    def client(self, out: str) -> Client:
        return Client(["nsenter", f"--net=/run/netns/{self.netns}"],
                      ["--addr", self.addr, "--port", str(PUBLISHED)], out)

    def teardown(self) -> dict:
        if self.lab:
            self.swarm("lab", "down", "--name", self.lab, check=False, timeout=300)
        return {}


# -- Docker's side --------------------------------------------------------------------------------
def docker_side_class():
    """Docker's side, built on dns_bench's DockerDNS (its start-up and its teardown, which reports
    what differs on the machine afterwards)."""
    sys.path.insert(0, ROOT)
    from bench.dns_bench import DockerDNS

    class Docker(DockerDNS):
        name = "docker"
        NETWORK = "ubnet"
        SERVICE = SERVICE

        def __init__(self, ns: str) -> None:
            super().__init__(ns)
            self.args = types.SimpleNamespace(tmp_parent="/tmp", private_containerd=False, timeout=120.0,
                                              poll_interval=POLL, keep_tmp=False, dockerd=None, docker=None)
            self.images: dict[str, str] = {}
            self.current = "v1"

        def setup(self, tars: dict[str, str]) -> dict:
            da = self.da
            t0 = time.monotonic()
            self.before = da.snapshot()
            subprocess.run(["ip", "netns", "add", self.ns], check=True)
            self.ns_made = True
            subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
            a = self.anchor = da.Anchor(self.args, *da.find_binaries(self.args))
            a.launcher = ["nsenter", f"--net=/run/netns/{self.ns}"]
            ver = a.start()
            for version, tar in tars.items():
                self.images[version] = a.import_image(tar)
            self.network_id = a.docker("network", "create", "--driver", "overlay", "--attachable",
                                       self.NETWORK).stdout.strip()
            a.services += ["probe", SERVICE]
            a.docker("service", "create", "--detach", "--no-resolve-image", "--name", "probe", "--network",
                     self.NETWORK, "--stop-grace-period", "0s", self.images["v1"], "sleep", "100000")
            a.docker("service", "create", "--detach", "--no-resolve-image", "--name", SERVICE, "--replicas",
                     str(REPLICAS), "--endpoint-mode", "dnsrr", "--network", self.NETWORK, *HEALTH, *UPDATE,
                     self.images["v1"], "sh", "-c", SERVER)
            deadline = time.monotonic() + 120
            while a.running("probe") < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"probe not running: {a.failed_tasks('probe')[:3]}")
                time.sleep(POLL)
            container = next(c for c in a.engine.containers("probe") if c.get("State") == "running")
            self.probe_pid = a.engine.request("GET", f"/containers/{container['Id']}/json")["State"]["Pid"]
            self.report.update({
                "docker_version": ver.get("Version"),
                "containerd_version": next((c.get("Version") for c in ver.get("Components", [])
                                            if c.get("Name") == "containerd"), None),
                "images": self.images,
                "client": f"in the task container of service probe (pid {self.probe_pid}), nsenter --net; "
                          f"resolves {SERVICE} (dnsrr) at 127.0.0.11 before every request",
                "setup_s": round(time.monotonic() - t0, 1)})
            return dict(self.report)

        def tasks(self) -> list[dict]:
            return [{"id": t["ID"], "slot": t.get("Slot", 0), "image": t["Spec"]["ContainerSpec"]["Image"],
                     "desired": t.get("DesiredState", ""), "state": t.get("Status", {}).get("State", ""),
                     "host": ((t.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID") or "")[:12]}
                    for t in self.anchor.engine.tasks(SERVICE)]

        def update_state(self) -> str:
            svc = self.anchor.engine.request("GET", f"/services/{SERVICE}")
            return (svc.get("UpdateStatus") or {}).get("State", "")

        def update(self, version: str, order: str) -> None:
            self.anchor.docker("service", "update", "--detach", "--no-resolve-image", "--image",
                               self.images[version], "--update-order", order, *UPDATE, SERVICE)

        def break_task(self, task: dict) -> None:
            self.anchor.docker("exec", task["host"], "rm", "/tmp/www/index.html")

        def client(self, out: str) -> Client:
            return Client(["nsenter", f"--net=/proc/{self.probe_pid}/ns/net"],
                          ["--dns", SERVICE, "--port", "80"], out)

        def teardown(self) -> dict:
            return self.stop()

    return Docker


# -- measurements ---------------------------------------------------------------------------------
def wait_steady(side, image: str, timeout: float = 120) -> None:
    """10 tasks running `image`, none of another alive, no update in progress."""
    deadline = time.monotonic() + timeout
    while True:
        rows = side.tasks()
        good = [r for r in rows if r["desired"] == "running" and r["state"] == "running" and r["image"] == image]
        stale = [r for r in rows if r["image"] != image and r["state"] not in TERMINAL]
        if len(good) == REPLICAS and not stale and side.update_state() in ("", "completed"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{side.name}: not steady after {timeout} s: "
                               f"{sorted((r['state'], r['desired'], r['image'][-12:]) for r in rows)}")
        time.sleep(0.2)


def failed_requests(rows, since: float, until: float) -> dict:
    window = [r for r in rows if since <= r[0] <= until]
    failed = [r for r in window if r[2].startswith("!")]
    kinds: dict[str, int] = {}
    for r in failed:
        kinds[r[2][1:]] = kinds.get(r[2][1:], 0) + 1
    return {"ok": len(window) - len(failed), "failed": len(failed), "kinds": kinds,
            "failed_at": [round(r[0] - since, 2) for r in failed][:20]}


def stages(history: dict[str, dict], old_ids: frozenset[str], t0: float) -> dict:
    """From the states the poll saw: new tasks' first sighting to running, old tasks' (those
    alive before the update) desired shutdown to their end, and the batches (new tasks first
    seen within 0.3 s of each other)."""
    new = [h for tid, h in history.items() if tid not in old_ids]
    old = [h for tid, h in history.items() if tid in old_ids]
    start_to_running = [h["running"] - h["seen"] for h in new if "running" in h]
    starting_to_running = [h["running"] - h["starting"] for h in new if "running" in h and "starting" in h]
    drain_to_end = [h["end"] - h["shutdown"] for h in old if "end" in h and "shutdown" in h]
    batches: list[list[float]] = []
    for seen in sorted(h["seen"] for h in new):
        if batches and seen - batches[-1][0] < 0.3:
            batches[-1].append(seen)
        else:
            batches.append([seen])

    def med(values):
        return round(statistics.median(values), 2) if values else None

    return {"new_seen_to_running_s": med(start_to_running), "new_starting_to_running_s": med(starting_to_running),
            "old_shutdown_to_end_s": med(drain_to_end),
            "batch_starts_s": [round(b[0] - t0, 2) for b in batches],
            "batch_sizes": [len(b) for b in batches],
            "new_running_s": sorted(round(h["running"] - t0, 2) for h in new if "running" in h),
            "old_shutdown_s": sorted(round(h["shutdown"] - t0, 2) for h in old if "shutdown" in h),
            "old_end_s": sorted(round(h["end"] - t0, 2) for h in old if "end" in h)}


def observe(history: dict[str, dict], rows: list[dict], now: float, ignore: frozenset[str] = frozenset()) -> None:
    """Note when each task was first seen, running, told to shut down and ended (`ignore`: the
    tasks that had ended before the update, the history of earlier runs)."""
    for r in rows:
        if r["id"] in ignore:
            continue
        h = history.setdefault(r["id"], {"image": r["image"], "seen": now})
        if r["state"] == "starting":
            h.setdefault("starting", now)
        if r["state"] == "running":
            h.setdefault("running", now)
        if r["desired"] != "running":
            h.setdefault("shutdown", now)
        if r["state"] in TERMINAL:
            h.setdefault("end", now)


def measure_update(side, order: str, work: str, run_no: int, timeout: float = 180) -> dict:
    old, new = side.current, "v2" if side.current == "v1" else "v1"
    old_image, new_image = side.images[old], side.images[new]
    wait_steady(side, old_image)
    history: dict[str, dict] = {}
    before = side.tasks()
    ended = frozenset(r["id"] for r in before if r["desired"] != "running" or r["state"] in TERMINAL)
    observe(history, before, time.time(), ended)     # the old tasks, seen before the update
    old_ids = frozenset(history)
    client = side.client(os.path.join(work, f"{side.name}-{order}-{run_no}.log"))
    time.sleep(0.5)
    t0 = time.time()
    side.update(new, order)
    t_cli = time.time() - t0
    all_new = old_gone = completed = None
    deadline = t0 + timeout
    last_status = 0.0
    while completed is None or old_gone is None or all_new is None:
        now = time.time()
        rows = side.tasks()
        observe(history, rows, now, ended)
        if all_new is None and sum(1 for r in rows if r["desired"] == "running" and r["state"] == "running"
                                   and r["image"] == new_image) >= REPLICAS:
            all_new = now
        if old_gone is None and not any(r["image"] != new_image and r["state"] not in TERMINAL for r in rows):
            old_gone = now
        if completed is None and now - last_status >= 0.2:
            last_status = now
            if side.update_state() == "completed":
                completed = time.time()
        if now > deadline:
            client.stop()
            raise RuntimeError(f"{side.name} {order}: update not done after {timeout} s")
        time.sleep(POLL)
    until = max(old_gone + 1.0, time.time())
    while time.time() < until:
        time.sleep(0.05)
    rows = client.stop()
    side.current = new
    out = {"from": old, "to": new, "cli_s": round(t_cli, 3), "all_new_running_s": round(all_new - t0, 3),
           "old_gone_s": round(old_gone - t0, 3), "completed_s": round(completed - t0, 3),
           "requests": failed_requests(rows, t0, old_gone + 1.0),
           "stages": stages(history, old_ids, t0)}
    log(f"{side.name} {order} {old}->{new}: all new running {out['all_new_running_s']} s, old gone "
        f"{out['old_gone_s']} s, completed {out['completed_s']} s; requests {out['requests']['ok']} ok, "
        f"{out['requests']['failed']} failed {out['requests']['kinds']}")
    return out


def measure_unhealthy(side, work: str, run_no: int, timeout: float = 90) -> dict:
    image = side.images[side.current]
    wait_steady(side, image)
    client = side.client(os.path.join(work, f"{side.name}-unhealthy-{run_no}.log"))
    time.sleep(1.0)
    running = sorted((r for r in side.tasks() if r["desired"] == "running" and r["state"] == "running"),
                     key=lambda r: r["slot"])
    victim = running[(run_no * 3) % len(running)]
    t0 = time.time()
    side.break_task(victim)
    failed_at = replacement = running_at = answered_at = None
    deadline = t0 + timeout
    while answered_at is None or running_at is None:
        now = time.time()
        rows = side.tasks()
        me = next((r for r in rows if r["id"] == victim["id"]), None)
        if failed_at is None and (me is None or me["state"] in TERMINAL):
            failed_at = now
        if replacement is None:
            replacement = next((r for r in rows if r["slot"] == victim["slot"] and r["id"] != victim["id"]
                                and r["desired"] == "running" and r["host"]), None)
        elif running_at is None:
            me2 = next((r for r in rows if r["id"] == replacement["id"]), None)
            if me2 and me2["state"] == "running":
                running_at = now
                replacement = me2
        if replacement is not None and replacement["host"] and answered_at is None:
            hits = [r[0] for r in client.rows() if r[3] == replacement["host"]]
            if hits:
                answered_at = hits[0]
        if now > deadline:
            client.stop()
            raise RuntimeError(f"{side.name}: no answer from a replacement {timeout} s after breaking "
                               f"{victim['id']} (failed at {failed_at}, replacement {replacement})")
        time.sleep(POLL)
    time.sleep(0.5)
    rows = client.stop()
    out = {"victim": victim["id"], "slot": victim["slot"],
           "to_task_failed_s": round(failed_at - t0, 3) if failed_at else None,
           "to_replacement_running_s": round(running_at - t0, 3) if running_at else None,
           "to_replacement_answering_s": round(answered_at - t0, 3),
           "requests": failed_requests(rows, t0, answered_at)}
    log(f"{side.name} unhealthy: failed {out['to_task_failed_s']} s, replacement running "
        f"{out['to_replacement_running_s']} s, answering {out['to_replacement_answering_s']} s; "
        f"{out['requests']['failed']} failed requests {out['requests']['kinds']}")
    return out


def summarize(runs: list[dict], keys: list[str]) -> dict:
    out: dict = {"runs": runs}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    for key in ("new_seen_to_running_s", "new_starting_to_running_s", "old_shutdown_to_end_s"):
        values = [r["stages"][key] for r in runs if "stages" in r and r["stages"][key] is not None]
        if values:
            out[key] = round(statistics.median(values), 2)
    out["failed_requests"] = [r["requests"]["failed"] for r in runs]
    out["requests"] = [r["requests"]["ok"] + r["requests"]["failed"] for r in runs]
    out["failed_requests_median"] = statistics.median(out["failed_requests"]) if runs else None
    return out


def ratios(ours: dict, docker: dict, keys: list[str]) -> dict:
    return {k: round(ours[k] / docker[k], 2) if ours.get(k) and docker.get(k) else None for k in keys}


def interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")      # SIGTERM ends the run as Ctrl-C does: teardown runs


UPDATE_KEYS = ["all_new_running_s", "old_gone_s", "completed_s", "cli_s"]
HEALTH_KEYS = ["to_task_failed_s", "to_replacement_running_s", "to_replacement_answering_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    c = sub.add_parser("client")
    c.add_argument("--out", required=True)
    c.add_argument("--addr", default="")
    c.add_argument("--dns", default="")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--period", type=float, default=0.02)
    c.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--orders", nargs="+", default=["start-first", "stop-first"])
    args = parser.parse_args()
    if args.cmd == "client":
        client(args)
        return
    if os.geteuid() != 0:
        sys.exit("update_bench.py: run as root (it creates network namespaces and runs dockerd)")
    sys.path.insert(0, ROOT)
    wall = time.monotonic()
    work = tempfile.mkdtemp(prefix="swarm-updbench.")
    os.chmod(work, 0o755)
    result: dict = {"setup": {"loadavg_before": os.getloadavg(), "cpus": os.cpu_count(), "replicas": REPLICAS,
                              "healthcheck": " ".join(HEALTH), "server": SERVER}}
    sides: list = []
    docker = None
    status = 0
    signal.signal(signal.SIGTERM, interrupt)
    try:
        tars = build_images(work)
        ours = Ours()
        sides.append(ours)
        result["setup"]["ours"] = ours.setup(tars)
        if not args.no_docker:
            Docker = docker_side_class()
            docker = Docker(f"swarm-updbench-{os.getpid()}")
            reason = docker.unavailable()
            if reason:
                result["docker"] = {"available": False, "reason": reason}
                docker = None
            else:
                try:
                    result["setup"]["docker"] = docker.setup(tars)
                    sides.append(docker)
                except Exception as exc:  # noqa: BLE001 - ours is still measured
                    docker.failed(exc)
                    log(f"Docker's side failed to start: {exc}")
        for side in sides:
            wait_steady(side, side.images["v1"])
        updates: dict = {}
        for order in args.orders:
            runs: dict[str, list] = {s.name: [] for s in sides}
            for k in range(args.runs):
                for side in (sides if k % 2 == 0 else sides[::-1]):
                    runs[side.name].append(measure_update(side, order, work, k))
            updates[order] = {name: summarize(r, UPDATE_KEYS) for name, r in runs.items()}
            if docker in sides:
                updates[order]["ours_over_docker"] = ratios(updates[order]["ours"], updates[order]["docker"],
                                                            UPDATE_KEYS)
        result["update"] = updates
        runs = {s.name: [] for s in sides}
        for k in range(args.runs):
            for side in (sides if k % 2 == 0 else sides[::-1]):
                runs[side.name].append(measure_unhealthy(side, work, k))
        result["unhealthy"] = {name: summarize(r, HEALTH_KEYS) for name, r in runs.items()}
        if docker in sides:
            result["unhealthy"]["ours_over_docker"] = ratios(result["unhealthy"]["ours"],
                                                             result["unhealthy"]["docker"], HEALTH_KEYS)
    except BaseException as exc:  # noqa: BLE001 - report what was measured, tear down, exit 1
        result["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        result["setup"]["loadavg_after"] = os.getloadavg()
        for side in sides:
            try:
                report = side.teardown()
                if side is docker:
                    result["docker"] = report
            except Exception as exc:  # noqa: BLE001
                result.setdefault("teardown_errors", []).append(f"{side.name}: {exc}")
        if docker is not None and docker not in sides:
            result["docker"] = docker.stop()
        subprocess.run(["rm", "-rf", work])
        result["wall_s"] = round(time.monotonic() - wall, 1)
        print(json.dumps(result, indent=1))
    sys.exit(status)


if __name__ == "__main__":
    main()

"""`stack deploy` of a 10-service compose file to all tasks running: ours next to Docker 20.10.

    .venv/bin/python bench/stack_bench.py [--runs 3] [--no-docker]      (as root, about 70 s)

The compose file (written by the bench to a temporary folder, the same text for both sides;
`STACK_FILE` below): 10 services of the demo image (busybox, scripts/build-demo-image.sh),
20 tasks in all (one service of 3 replicas, eight of 2, one of 1), on two overlay networks
(`front` and `back`, three services on both), and one port published in host mode (18080 ->
80 on the node running s01's task). Host mode because Docker's ingress routing mesh needs
IPVS, which this kernel lacks (../shared/NOTES-docker-anchor.md: Docker refuses an ingress
publish here); the services keep the default VIP endpoint mode on both sides (Docker
allocates the VIPs and runs the tasks; only traffic to a VIP would fail there). Each task is
a shell that exits on SIGTERM (`trap`, then `wait` on a `sleep`), so removal is not the stop
grace period.

- ours: a 3-host lab (`swarm lab up --nodes 3`: 1 manager, 2 workers, each host a network
  namespace with its own daemon; `lab down` always runs), the image imported on every host.
  `swarm stack deploy -c FILE --resolve-image never bench`, run as the manager's CLI.
- Docker: a private dockerd 20.10 in a network namespace of its own (bench/docker_anchor.py's
  Anchor through bench/dns_bench.py's DockerDNS, as bench/update_bench.py does: own data-root,
  exec-root and socket, all removed afterwards), a SINGLE-node swarm (one dockerd runs all 20
  tasks), the image imported and tagged `demo:1`. `docker stack deploy -c FILE --resolve-image
  never bench`. DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 (the anchor's) keeps its agent from
  asking a registry for the tag.

Both sides take `--resolve-image never`: the image exists only on the nodes, there is no
registry to resolve it with (Docker's default `always` would print a warning per service
and could try the network).

One run: time from just before the deploy command to the first poll (every 50 ms, the daemon's
or the engine's API: the data of `stack ps`) that sees all 20 tasks running (`all_running_s`),
and the deploy command alone (`cli_s`); then `stack rm bench`, timed to everything gone
(`rm_s`: no service, no stack network, no container left; ours: no runc container on any
host). The sides alternate run by run (a noisy machine slows both alike); medians of --runs;
ratios are ours / Docker (below 1: ours faster). Prints one JSON document with the load
average at the start and at the end. Without dockerd (apt-get install docker.io) the Docker
side says why and ours is measured alone.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
STACK = "bench"
IMAGE = "demo:1"
POLL = 0.05
REPLICAS = {"s01": 1, "s02": 3, **{f"s{i:02d}": 2 for i in range(3, 11)}}
TASKS = sum(REPLICAS.values())
# a shell that exits on SIGTERM: the trap runs once `wait` is interrupted
TASK_COMMAND = ["sh", "-c", 'trap "exit 0" TERM; sleep 100000 & wait']


def networks_of(service: str) -> list[str]:
    n = int(service[1:])
    return ["front"] if n <= 3 else ["front", "back"] if n <= 6 else ["back"]


def stack_file() -> str:
    """The compose file both sides deploy (JSON strings are YAML strings; `$$` is not needed:
    the command has no `$`)."""
    lines = ['version: "3.8"', "services:"]
    for name, replicas in REPLICAS.items():
        lines += [f"  {name}:", f"    image: {IMAGE}", f"    command: {json.dumps(TASK_COMMAND)}",
                  f"    networks: [{', '.join(networks_of(name))}]"]
        if name == "s01":
            lines += ["    ports:", "      - target: 80", "        published: 18080", "        mode: host"]
        lines += ["    deploy:", f"      replicas: {replicas}"]
    lines += ["networks:", "  front:", "  back:", ""]
    return "\n".join(lines)


STACK_FILE = stack_file()


def log(msg: str) -> None:
    print(f"[stack_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_for(what: str, check, timeout: float):
    """Poll `check` every POLL seconds until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout:g} s")
        time.sleep(POLL)


# -- our side -------------------------------------------------------------------------------------
class Ours:
    name = "ours"

    def __init__(self) -> None:
        self.lab = ""
        self.env = dict(os.environ, PYTHONPATH=ROOT)

    def swarm(self, *args: str, timeout: float = 180, check: bool = True, env: dict | None = None
              ) -> subprocess.CompletedProcess:
        proc = subprocess.run([PY, "-m", "swarm", *args], capture_output=True, text=True, env=env or self.env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"swarm {' '.join(args)}: {proc.stderr}{proc.stdout}")
        return proc

    def lab_up(self) -> None:
        """`lab up --nodes 3` under a fresh name whose underlay subnet no other lab uses."""
        from swarm.lab import lab as labmod
        for _ in range(10):
            used = {entry["subnet"] for entry in labmod.labs()}
            name = "sb" + uuid.uuid4().hex[:8]
            if f"10.{labmod.subnet_octet(name)}.0.0/24" in used:
                continue
            self.lab = name
            proc = self.swarm("lab", "up", "--nodes", "3", "--name", name, check=False, timeout=300)
            if proc.returncode == 0:
                return
            if "already uses" not in proc.stderr:
                raise RuntimeError(f"swarm lab up --name {name}: {proc.stderr}{proc.stdout}")
            self.lab = ""
        raise RuntimeError("no free lab subnet")

    def setup(self, tar: str) -> dict:
        started = time.monotonic()
        self.lab_up()
        labs = json.loads(self.swarm("lab", "ls", "--format", "json").stdout)
        self.hosts = [h for entry in labs if entry["name"] == self.lab for h in entry["hosts"]]
        manager = next(h for h in self.hosts if h["role"] == "manager")
        self.sock = os.path.join(manager["state_dir"], "swarm.sock")
        self.cli_env = dict(self.env, SWARM_STATE_DIR=manager["state_dir"])
        for host in self.hosts:
            self.swarm("lab", "exec", "--name", self.lab, host["name"], "--", "swarm", "image", "import", tar, IMAGE)
        # The nodes' heartbeats carry their image lists to the manager; a deploy before that
        # would be refused ("not found on any node"), so wait until every node reports it.
        time.sleep(1.5)
        return {"lab": self.lab, "hosts": [f"{h['name']} {h['role']} {h['addr']}" for h in self.hosts],
                "setup_s": round(time.monotonic() - started, 1)}

    def call(self, method: str, params: dict):
        from swarm.rpc.client import call_unix_sync
        return call_unix_sync(self.sock, method, params, timeout=10)

    def running(self) -> int:
        rows = self.call("service.ps", {"refs": [], "filters": {"label": [f"com.docker.stack.namespace={STACK}"]}})
        return sum(1 for r in rows if r["desired_state"] == "running" and r["state"] == "running")

    def deploy(self, path: str) -> None:
        self.swarm("stack", "deploy", "-c", path, "--resolve-image", "never", STACK, env=self.cli_env)

    def remove(self) -> None:
        self.swarm("stack", "rm", STACK, env=self.cli_env)

    def containers(self) -> list[str]:
        out = []
        for host in self.hosts:
            root = os.path.join(host["state_dir"], "tasks", ".runc")
            if os.path.isdir(root):
                out += subprocess.run(["runc", "--root", root, "list", "-q"], capture_output=True, text=True,
                                      timeout=30).stdout.split()
        return out

    def gone(self) -> bool:
        if self.call("service.ls", {}):
            return False
        if any(n["name"].startswith(f"{STACK}_") for n in self.call("network.ls", {})):
            return False
        return not self.containers()

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
        SERVICE = "none"        # DockerDNS.stop removes its own service first: there is none here

        def __init__(self, ns: str) -> None:
            super().__init__(ns)
            self.args = types.SimpleNamespace(tmp_parent="/tmp", private_containerd=False, timeout=120.0,
                                              poll_interval=POLL, keep_tmp=False, dockerd=None, docker=None)
            self.network_ids: set[str] = set()

        def setup(self, tar: str) -> dict:
            da = self.da
            t0 = time.monotonic()
            self.before = da.snapshot()
            subprocess.run(["ip", "netns", "add", self.ns], check=True)
            self.ns_made = True
            subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
            a = self.anchor = da.Anchor(self.args, *da.find_binaries(self.args))
            a.launcher = ["nsenter", f"--net=/run/netns/{self.ns}"]
            ver = a.start()
            image_id = a.import_image(tar)
            a.docker("tag", image_id, IMAGE)
            self.report.update({
                "docker_version": ver.get("Version"),
                "containerd_version": next((c.get("Version") for c in ver.get("Components", [])
                                            if c.get("Name") == "containerd"), None),
                "image": f"{IMAGE} = {image_id}",
                "dockerd": f"pid {a.dockerd.pid}, in network namespace {self.ns} (lo only), a single-node swarm",
                "setup_s": round(time.monotonic() - t0, 1)})
            return dict(self.report)

        def running(self) -> int:
            return sum(1 for t in self.anchor.engine.request("GET", "/tasks")
                       if t.get("DesiredState") == "running" and t.get("Status", {}).get("State") == "running")

        def deploy(self, path: str) -> None:
            self.anchor.docker("stack", "deploy", "-c", path, "--resolve-image", "never", STACK)
            label = json.dumps({"label": [f"com.docker.stack.namespace={STACK}"]})
            self.network_ids |= {n["Id"] for n in self.anchor.engine.request("GET", "/networks", {"filters": label})}

        def remove(self) -> None:
            self.anchor.docker("stack", "rm", STACK)

        def gone(self) -> bool:
            engine = self.anchor.engine
            label = json.dumps({"label": [f"com.docker.stack.namespace={STACK}"]})
            return not (engine.request("GET", "/services") or engine.request("GET", "/networks", {"filters": label})
                        or engine.request("GET", "/containers/json", {"all": "1", "filters": label}))

        def remove_lb_files(self, notes: list[str]) -> None:
            """One lb_ folder per overlay network the runs made; then DockerDNS's own pass (with
            no network of its own) removes the folders above them if the run created them."""
            files = "/var/lib/docker/network/files"
            for network_id in sorted(self.network_ids):
                lb = os.path.join(files, "lb_" + network_id)
                if os.path.isdir(lb) and not os.path.islink(lb):
                    shutil.rmtree(lb, ignore_errors=True)
                    notes.append(f"removed {lb} (dockerd's, outside its data-root)")
            self.network_id = None
            super().remove_lb_files(notes)

        def teardown(self) -> dict:
            return self.stop()

    return Docker


# -- measurements ---------------------------------------------------------------------------------
def measure(side, path: str, timeout: float = 180) -> dict:
    wait_for(f"{side.name}: the previous stack gone", side.gone, timeout)
    t0 = time.monotonic()
    side.deploy(path)
    cli = time.monotonic() - t0
    wait_for(f"{side.name}: {TASKS} tasks running", lambda: side.running() >= TASKS, timeout)
    running = time.monotonic() - t0
    t1 = time.monotonic()
    side.remove()
    wait_for(f"{side.name}: the stack gone after stack rm", side.gone, timeout)
    out = {"all_running_s": round(running, 3), "cli_s": round(cli, 3), "rm_s": round(time.monotonic() - t1, 3)}
    log(f"{side.name}: {TASKS} tasks running after {out['all_running_s']} s (deploy command {out['cli_s']} s); "
        f"stack rm to all gone {out['rm_s']} s")
    return out


KEYS = ["all_running_s", "cli_s", "rm_s"]


def summarize(runs: list[dict]) -> dict:
    out: dict = {"runs": runs}
    for key in KEYS:
        values = [r[key] for r in runs]
        out[key] = {"min": min(values), "median": round(statistics.median(values), 3), "max": max(values)}
    return out


def interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")      # SIGTERM ends the run as Ctrl-C does: teardown runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("stack_bench.py: run as root (it creates network namespaces and runs dockerd)")
    if args.runs < 1:
        sys.exit("stack_bench.py: --runs must be at least 1")
    sys.path.insert(0, ROOT)
    wall = time.monotonic()
    work = tempfile.mkdtemp(prefix="swarm-stackbench.")
    os.chmod(work, 0o755)
    path = os.path.join(work, "stack.yml")
    with open(path, "w") as f:
        f.write(STACK_FILE)
    result: dict = {"setup": {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count(), "services": len(REPLICAS),
                              "tasks": TASKS, "stack_file": STACK_FILE,
                              "deploy": f"stack deploy -c stack.yml --resolve-image never {STACK}"}}
    sides: list = []
    docker = None
    status = 0
    signal.signal(signal.SIGTERM, interrupt)
    try:
        tar = os.path.join(work, "demo.tar")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), tar], check=True,
                       capture_output=True)
        ours = Ours()
        sides.append(ours)
        result["setup"]["ours"] = ours.setup(tar)
        if not args.no_docker:
            docker = docker_side_class()(f"swarm-stackbench-{os.getpid()}")
            reason = docker.unavailable()
            if reason:
                result["docker"] = {"available": False, "reason": reason}
                docker = None
            else:
                try:
                    result["setup"]["docker"] = docker.setup(tar)
                    sides.append(docker)
                except Exception as exc:  # noqa: BLE001 - ours is still measured
                    docker.failed(exc)
                    log(f"Docker's side failed to start: {exc}")
        runs: dict[str, list] = {s.name: [] for s in sides}
        for k in range(args.runs):
            for side in (sides if k % 2 == 0 else sides[::-1]):
                runs[side.name].append(measure(side, path))
        result["stack_deploy"] = {name: summarize(r) for name, r in runs.items()}
        if docker in sides:
            ours_s, docker_s = result["stack_deploy"]["ours"], result["stack_deploy"]["docker"]
            result["stack_deploy"]["ours_over_docker"] = {
                k: round(ours_s[k]["median"] / docker_s[k]["median"], 2) if docker_s[k]["median"] else None
                for k in KEYS}
    except BaseException as exc:  # noqa: BLE001 - report what was measured, tear down, exit 1
        result["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        result["setup"]["loadavg_end"] = os.getloadavg()
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

"""Pulls from a registry on loopback: ours next to skopeo and Docker 20.10 in the same run.

    .venv/bin/python bench/pull_bench.py [--runs 3] [--service-runs 3] [--no-docker] [--quick]

Prints one JSON document:
- pull_s: a 200 MB image of 5 layers of random (incompressible) data, pulled
  from Debian's docker-registry on 127.0.0.1 (plain HTTP, a temporary storage
  folder; started and stopped here), median of --runs, the tools alternating
  in each round:
  * ours: `swarm image pull -q REF` on a one-node cluster (a real daemon): the
    manifest, the blobs (3 at a time, each hashed while written, fsync'ed), the
    image registered. Like skopeo to `oci:`, it ends there: the layers are
    unpacked after, in the daemon's background (2 at a time; a task start
    waits for them). `ours_pulled_and_unpacked` is the same pull until the
    last layer is unpacked too (polling the store's records), the figure to
    set next to Docker's and skopeo_storage's, which unpack. Between runs
    `image rm` and `image prune -a` empty the store (the bench checks that no
    layer blob is left), so every run really downloads;
  * skopeo: `skopeo copy docker://REF oci:DIR` into a fresh folder each run:
    the blobs downloaded, verified and written, nothing unpacked;
  * skopeo_storage: `skopeo copy docker://REF containers-storage:[overlay@ROOT]`
    into a fresh private root each run: the layers unpacked too, as Podman's
    pull does (the same job as ours and Docker's; the driver's bind mount of
    its root is unmounted after each run);
  * docker (when Debian's docker.io is installed and we are root): `docker
    pull` against a private dockerd (bench/docker_anchor.py's Anchor) that
    runs in a network namespace of its own holding only `lo`, so it never
    touches the machine's ip_forward or firewall. It reaches a second
    docker-registry process, started in that namespace on the same storage
    folder (same binary, same data); `docker rmi` between runs. Docker
    downloads 3 layers at a time and unpacks them in order into overlay2.
  `ratios`: each tool's median over ours (>1: ours is faster); the target is
  ours >= 0.8x the faster of skopeo (oci:) and docker, i.e. that ratio >= 0.8;
  `docker_over_ours_unpacked` compares Docker with ours pulled and unpacked.
  `cli_floor_s`: `swarm image ls -q` (start of the CLI + one call), part of ours;
  `ours_daemon_only`: the same pull asked of the daemon from this process (the
  one waiting call the quiet CLI makes, without starting the CLI);
  `ours_stages_in_process`: the puller in this process on a fresh store: its
  total (with the unpacking, as a task's pull), when the last blob was stored,
  when the image was registered, and the unpacking after it (unpack_image).
- service_s: a 3-node cluster (one manager, two workers, swarm.lab.localcluster),
  `service create --detach --replicas 3` of an image only the registry has
  (the demo rootfs plus a 20 MB random layer) to all 3 tasks running,
  median of --service-runs; `cold` pulls on every node (images removed and
  pruned on all nodes between runs), `warm` is the same with the image
  present on every node, so cold - warm is what the pulls cost.
The machine's load average at the start and the end is in the document: on a
shared machine the figures move with it.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from swarm.lab.localcluster import Swarm, eventually  # noqa: E402
from swarm.rpc.client import call_unix_sync  # noqa: E402
from tests.integration.registry import (RegistryServer, demo_layer, skopeo_copy, tar_layer,  # noqa: E402
                                        write_oci_layout)

LAYERS = 5
LAYER_BYTES = 40 << 20          # 5 x 40 MiB of random data: ~200 MB, gzip cannot shrink it
SERVICE_LAYER_BYTES = 20 << 20
BIG = "bench/big:1"
SMALL = "bench/svc:1"


def log(msg: str) -> None:
    print(f"[pull_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict:
    return {"runs": [round(v, 3) for v in values], "median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}


def build_images(base: str, demo_tar: str) -> dict:
    """Two OCI layouts: the big image (5 random layers) and the service's (demo rootfs + 20 MB)."""
    big = os.path.join(base, "layout-big")
    layers = [tar_layer({f"data{i}.bin": os.urandom(LAYER_BYTES)}) for i in range(LAYERS)]
    info = write_oci_layout(big, "1", layers, cmd=["sh"])
    sizes = [os.path.getsize(os.path.join(big, "blobs", "sha256", d.split(":", 1)[1])) for d in info["layer_digests"]]
    small = os.path.join(base, "layout-svc")
    write_oci_layout(small, "1", [demo_layer(demo_tar), tar_layer({"payload.bin": os.urandom(SERVICE_LAYER_BYTES)})],
                     cmd=["sleep", "1000"])
    return {"big": big, "small": small, "layer_digests": info["layer_digests"], "compressed_bytes": sum(sizes),
            "uncompressed_bytes": sum(len(layer) for layer in layers)}


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path + "/")]


def unmount_under(path: str) -> None:
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", point], check=False)


def left_behind(swarm: Swarm) -> list[str]:
    """Network namespaces and mounts of these nodes still there after the teardown (expected: none)."""
    from swarm.lab.lab import NETNS_DIR, node_netns_prefix

    prefixes = [p for p in (node_netns_prefix(n.state_dir) for n in swarm.nodes.values()) if p]
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    return sorted(n for n in names if any(n.startswith(p) for p in prefixes)) + mounts_under(swarm.base)


def teardown(swarm: Swarm) -> list[str]:
    swarm.stop_all()
    swarm.stop_containers()
    return left_behind(swarm)


# ---- ours ------------------------------------------------------------------------------

def store_blobs(node) -> set[str]:
    directory = os.path.join(node.state_dir, "images", "blobs", "sha256")
    return {"sha256:" + n for n in os.listdir(directory)} if os.path.isdir(directory) else set()


def empty_store(swarm: Swarm, node, ref: str, layer_digests: list[str]) -> None:
    swarm.run(node, "image", "rm", ref, check=False)
    swarm.run(node, "image", "prune", "-a", "-f")
    left = store_blobs(node) & set(layer_digests)
    if left:
        raise RuntimeError(f"{node.name}: image rm + prune left {len(left)} layer blobs: the next pull "
                           f"would not download")


def unpacked_at(node, timeout: float = 120.0) -> float:
    """When every image of the node's store has its layers unpacked (no record lists layers
    "unpacking"; the pull returns before, swarm/registry/pull.py): polled every 5 ms."""
    directory = os.path.join(node.state_dir, "images", "images")
    deadline = time.monotonic() + timeout
    while True:
        pending = False
        for name in os.listdir(directory):
            try:
                with open(os.path.join(directory, name)) as f:
                    pending = pending or bool(json.load(f).get("unpacking"))
            except (FileNotFoundError, ValueError):
                pending = True      # replaced while read: look again
        if not pending:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the layers were not unpacked within {timeout:.0f} s")
        time.sleep(0.005)


def pull_ours(swarm: Swarm, node, ref: str, layer_digests: list[str]) -> tuple[float, float]:
    """(the CLI's pull, the same until the layers are unpacked too), both from the CLI's start."""
    started = time.monotonic()
    swarm.run(node, "image", "pull", "-q", ref, timeout=600)
    elapsed = time.monotonic() - started
    unpacked = unpacked_at(node) - started
    missing = set(layer_digests) - store_blobs(node)
    if missing:
        raise RuntimeError(f"the pull left out {len(missing)} layer blobs")
    empty_store(swarm, node, ref, layer_digests)
    return elapsed, unpacked


def pull_rpc(swarm: Swarm, node, ref: str, layer_digests: list[str]) -> float:
    """The daemon's pull alone: the `image.pull` call the quiet CLI makes, from this process."""
    sock = os.path.join(node.state_dir, "swarm.sock")
    started = time.monotonic()
    answer = call_unix_sync(sock, "image.pull", {"ref": ref, "until": "done"}, timeout=90)
    while not answer["done"]:
        answer = call_unix_sync(sock, "image.pull", {"op": answer["op"], "version": answer["version"],
                                                     "since": answer["logged"], "until": "done"}, timeout=90)
    elapsed = time.monotonic() - started
    if answer.get("error"):
        raise RuntimeError(answer["error"])
    unpacked_at(node)
    empty_store(swarm, node, ref, layer_digests)
    return elapsed


def stages(base: str, ref: str, runs: int) -> dict:
    """The puller in this process on a fresh store, the pipeline timed from inside: when the
    last blob was stored, when the image was registered (where `image pull` ends), and how long
    the unpacking after it took (unpack_image, 2 layers at a time)."""
    import trio

    from swarm.registry import Puller, RegistryConfig
    from swarm.runtime.images import ImageStore

    total, last_blob, registered, unpacking = [], [], [], []
    for run in range(runs):
        root = os.path.join(base, f"stages-{run}")
        store = ImageStore(root)
        marks: dict[str, list[tuple[float, float]]] = {"stored": [], "unpack": [], "register": []}

        def timed(fn, mark):
            def call(*args: object, **kwargs: object) -> object:
                began = time.monotonic()
                try:
                    return fn(*args, **kwargs)
                finally:
                    marks[mark].append((began, time.monotonic()))
            return call

        store.ingest_blob = timed(store.ingest_blob, "stored")  # type: ignore[method-assign]
        store.add_pulled = timed(store.add_pulled, "register")  # type: ignore[method-assign]
        store.unpack_image = timed(store.unpack_image, "unpack")  # type: ignore[method-assign]
        started = time.monotonic()
        trio.run(Puller(store, RegistryConfig()).pull, ref)
        ended = time.monotonic()
        total.append(ended - started)
        last_blob.append(max(end for _, end in marks["stored"]) - started)
        registered.append(max(end for _, end in marks["register"]) - started)
        unpacking.append(marks["unpack"][0][1] - marks["unpack"][0][0])
        shutil.rmtree(root)
    return {"total": summary(total), "last_blob_stored_at": summary(last_blob),
            "registered_at": summary(registered), "unpack_image": summary(unpacking)}


def pull_skopeo(base: str, ref: str, registry: RegistryServer, run: int) -> float:
    dest = os.path.join(base, f"skopeo-{run}")
    started = time.monotonic()
    skopeo_copy(f"docker://{ref}", f"oci:{dest}:1", src_registry=registry)
    elapsed = time.monotonic() - started
    shutil.rmtree(dest)
    return elapsed


def pull_skopeo_storage(base: str, ref: str, registry: RegistryServer, run: int) -> float:
    """skopeo into a containers-storage of its own (overlay driver, a fresh root each run): the
    layers unpacked as Podman's pull does, so the same work as ours and Docker's."""
    root = os.path.join(base, f"storage-{run}")
    dest = f"containers-storage:[overlay@{root}/root+{root}/run]{BIG}"
    started = time.monotonic()
    try:
        skopeo_copy(f"docker://{ref}", dest, src_registry=registry)
        return time.monotonic() - started
    finally:
        unmount_under(root)    # the overlay driver bind-mounts its home
        shutil.rmtree(root)


# ---- docker ----------------------------------------------------------------------------

class DockerSide:
    """A private dockerd in network namespace `ns` (lo only) and a docker-registry in the same
    namespace serving the bench registry's storage folder."""

    def __init__(self, ns: str, registry_root: str) -> None:
        from bench import docker_anchor

        self.da = docker_anchor
        self.ns, self.registry_root = ns, registry_root
        self.args = types.SimpleNamespace(tmp_parent="/tmp", private_containerd=False, timeout=120.0,
                                          poll_interval=0.05, keep_tmp=False, dockerd=None, docker=None)
        self.anchor = None
        self.ns_made = False
        self.before: dict | None = None
        self.registry: subprocess.Popen | None = None
        self.port = 5000
        self.report: dict = {"available": True}

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root (dockerd)"
        dockerd, cli = self.da.find_binaries(self.args)
        if not dockerd:
            return "dockerd is not installed (apt-get install docker.io)"
        if not cli:
            return f"dockerd at {dockerd} but no docker CLI"
        return None

    def start(self) -> None:
        da = self.da
        t0 = time.monotonic()
        self.before = da.snapshot()
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.ns_made = True
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        a = self.anchor = da.Anchor(self.args, *da.find_binaries(self.args))
        a.launcher = ["nsenter", f"--net=/run/netns/{self.ns}"]
        ver = a.start()
        if da.read_text(f"/proc/{a.dockerd.pid}/comm") != "dockerd":    # nsenter must have exec-ed it
            raise RuntimeError(f"pid {a.dockerd.pid} is {da.cmdline(a.dockerd.pid)[:80]!r}, not dockerd")
        config = os.path.join(a.tmp, "registry.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {self.registry_root}/data\nhttp:\n  addr: 127.0.0.1:{self.port}\n")
        logf = open(os.path.join(a.tmp, "registry.log"), "wb")
        self.registry = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.ns}", "docker-registry", "serve",
                                          config], stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        probe = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{self.port}/v2/', timeout=1)")
        eventually(lambda: subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", sys.executable, "-c", probe],
                                          capture_output=True).returncode == 0, 15, "the registry in dockerd's namespace")
        driver = a.docker("info", "--format", "{{.Driver}}", check=False).stdout.strip()
        self.report.update({"docker_version": ver.get("Version"), "storage_driver": driver,
                            "dockerd": f"pid {a.dockerd.pid}, in network namespace {self.ns} (lo only)",
                            "registry": f"docker-registry pid {self.registry.pid} in the same namespace, "
                                        f"127.0.0.1:{self.port}, the same storage folder",
                            "setup_s": round(time.monotonic() - t0, 2)})

    def pull(self, repo_tag: str) -> float:
        ref = f"127.0.0.1:{self.port}/{repo_tag}"
        started = time.monotonic()
        self.anchor.docker("pull", "-q", ref, timeout=600)
        elapsed = time.monotonic() - started
        self.anchor.docker("rmi", ref, timeout=120)
        return elapsed

    def stop(self) -> dict:
        da, a = self.da, self.anchor
        notes: list[str] = []
        if self.registry is not None and self.registry.poll() is None:
            self.registry.terminate()      # nsenter exec-ed docker-registry: this PID is the registry
            try:
                self.registry.wait(10)
            except subprocess.TimeoutExpired:
                self.registry.kill()
                self.registry.wait()
        if a is not None:
            try:
                a.cleanup()
            except Exception as e:  # noqa: BLE001
                notes.append(f"cleanup error: {type(e).__name__}: {e}")
            notes += a.notes
            left = a.our_pids()
            if left:
                notes.append("processes still running: " + ", ".join(f"{p} {da.cmdline(p)[:60]}" for p in left))
        if self.ns_made:
            subprocess.run(["ip", "netns", "delete", self.ns], check=False)
        if self.before is None:
            return self.report
        da.remove_empty_trees(self.before, notes)
        diff = da.diff_snapshots(self.before, da.snapshot())
        self.report["machine"] = {"unchanged": not diff, **diff}
        if diff:
            self.report["machine"]["caveat"] = ("a before/after comparison of the whole machine: other "
                                                "programs running meanwhile show up here too")
        if notes:
            self.report["notes"] = notes
        return self.report


# ---- the pull benchmark ----------------------------------------------------------------

def pull_bench(base: str, registry: RegistryServer, images: dict, runs: int, docker: DockerSide | None) -> dict:
    ref = f"{registry.address}/{BIG}"
    swarm = Swarm(os.path.join(base, "pull-node"))
    try:
        node = swarm.init("p1")
        floor = []
        for _ in range(3):
            started = time.monotonic()
            swarm.run(node, "image", "ls", "-q")
            floor.append(time.monotonic() - started)
        tools = ["ours", "skopeo", "skopeo_storage"] + (["docker"] if docker is not None else [])
        rpc: list[float] = []
        unpacked: list[float] = []
        times: dict[str, list[float]] = {t: [] for t in tools}
        for run in range(runs):
            order = tools[run % len(tools):] + tools[:run % len(tools)]
            for tool in order:
                if tool == "ours":
                    t, t_unpacked = pull_ours(swarm, node, ref, images["layer_digests"])
                    unpacked.append(t_unpacked)
                    log(f"run {run + 1}: ours, pulled and unpacked {t_unpacked:.2f} s")
                    rpc.append(pull_rpc(swarm, node, ref, images["layer_digests"]))
                elif tool == "skopeo":
                    t = pull_skopeo(base, ref, registry, run)
                elif tool == "skopeo_storage":
                    t = pull_skopeo_storage(base, ref, registry, run)
                else:
                    t = docker.pull(BIG)
                times[tool].append(t)
                log(f"run {run + 1}: {tool} {t:.2f} s")
    finally:
        left = teardown(swarm)
    out: dict = {"image": {"layers": LAYERS, "compressed_bytes": images["compressed_bytes"],
                           "uncompressed_bytes": images["uncompressed_bytes"]},
                 "cli_floor_s": summary(floor), **{t: summary(v) for t, v in times.items()},
                 "ours_pulled_and_unpacked": summary(unpacked),
                 "ours_daemon_only": summary(rpc), "ours_stages_in_process": stages(base, ref, runs),
                 "left_behind": left}
    ours = statistics.median(times["ours"])
    out["throughput_MBps"] = {t: round(images["compressed_bytes"] / 1e6 / statistics.median(v), 1)
                              for t, v in times.items()}
    out["ratios"] = {f"{t}_over_ours": round(statistics.median(v) / ours, 3) for t, v in times.items() if t != "ours"}
    # The target names skopeo (oci:) and docker; skopeo_storage is the like-for-like extra.
    fastest = min(statistics.median(v) for t, v in times.items() if t in ("skopeo", "docker"))
    out["ratios"]["fastest_of_skopeo_docker_over_ours"] = round(fastest / ours, 3)
    out["ratios"]["target_met"] = fastest / ours >= 0.8
    # Docker's pull unpacks: next to it, ours until its layers are unpacked too.
    both = statistics.median(unpacked)
    out["ratios"]["ours_unpacked_over_ours"] = round(both / ours, 3)
    for tool in ("docker", "skopeo_storage"):
        if tool in times:
            out["ratios"][f"{tool}_over_ours_unpacked"] = round(statistics.median(times[tool]) / both, 3)
    return out


# ---- the service benchmark -------------------------------------------------------------

def running(node, name: str) -> int:
    rows = call_unix_sync(os.path.join(node.state_dir, "swarm.sock"), "service.ps", {"refs": [name]}, timeout=10)
    return sum(1 for r in rows if r["desired_state"] == "running" and r["state"] == "running")


def placement(node, name: str) -> list[str]:
    rows = call_unix_sync(os.path.join(node.state_dir, "swarm.sock"), "service.ps", {"refs": [name]}, timeout=10)
    return sorted(r["node"] for r in rows if r["state"] == "running")


def start_service(swarm: Swarm, manager, name: str, ref: str) -> tuple[float, list[str]]:
    started = time.monotonic()
    swarm.run(manager, "service", "create", "--detach", "--name", name, "--replicas", "3",
              "--stop-grace-period", "0s", ref, "sleep", "1000")
    deadline = started + 180
    while running(manager, name) < 3:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: fewer than 3 tasks running after 180 s")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    nodes = placement(manager, name)
    swarm.run(manager, "service", "rm", name)
    sock = os.path.join(manager.state_dir, "swarm.sock")
    eventually(lambda: not call_unix_sync(sock, "service.ps", {}, timeout=10), 60, "tasks to be removed")
    return elapsed, nodes


def service_bench(base: str, registry: RegistryServer, runs: int) -> dict:
    ref = f"{registry.address}/{SMALL}"
    swarm = Swarm(os.path.join(base, "svc-cluster"))
    cold, warm, spread = [], [], []
    try:
        m1 = swarm.init("m1")
        nodes = [m1] + [swarm.join(f"w{i}", m1, "worker") for i in (1, 2)]
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 30, "nodes ready")

        def clear() -> None:
            for n in nodes:
                swarm.run(n, "image", "rm", ref, check=False)
                swarm.run(n, "image", "prune", "-a", "-f")
            time.sleep(1.5)   # heartbeats carry each node's image list to the manager

        for run in range(runs):
            # a task container may outlive `service rm` by a moment: its image is in use until then
            eventually(lambda: not any(call_unix_sync(os.path.join(n.state_dir, "swarm.sock"), "service.ps", {},
                                                      timeout=10) for n in nodes[:1]), 30, "no tasks")
            clear()
            t, where = start_service(swarm, m1, f"cold{run}", ref)
            cold.append(t)
            spread.append(where)
            log(f"service run {run + 1}: cold {t:.2f} s on {where}")
            t, _ = start_service(swarm, m1, f"warm{run}", ref)
            warm.append(t)
            log(f"service run {run + 1}: warm {t:.2f} s")
    finally:
        left = teardown(swarm)
    return {"image": "demo rootfs + a 20 MiB random layer, only in the registry before each cold run",
            "cold": summary(cold), "warm": summary(warm), "placement": spread,
            "pull_cost_median": round(statistics.median(cold) - statistics.median(warm), 3), "left_behind": left}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--service-runs", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true", help="leave Docker out even when it is installed")
    parser.add_argument("--no-service", action="store_true", help="only the pull benchmark")
    parser.add_argument("--quick", action="store_true", help="one run of each")
    args = parser.parse_args()
    if args.quick:
        args.runs = args.service_runs = 1

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    wall = time.monotonic()
    figures: dict = {"load_average_at_start": round(os.getloadavg()[0], 2)}
    base = tempfile.mkdtemp(prefix="pull-bench-")
    registry = RegistryServer(os.path.join(base, "registry"), host="127.0.0.1")
    docker: DockerSide | None = None
    try:
        demo_tar = os.path.join(base, "demo.tar")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), demo_tar], check=True,
                       capture_output=True)
        log("building the images")
        images = build_images(base, demo_tar)
        registry.start()
        for layout, name in ((images["big"], BIG), (images["small"], SMALL)):
            skopeo_copy(f"oci:{layout}:1", f"docker://{registry.address}/{name}", dest_registry=registry)
        log(f"pushed to {registry.address}")
        if args.no_docker:
            figures["docker"] = {"available": False, "reason": "--no-docker"}
        else:
            docker = DockerSide(f"swarm-pull-bench-{os.getpid()}", registry.root)
            reason = docker.unavailable()
            if reason:
                figures["docker"] = {"available": False, "reason": reason}
                docker = None
            else:
                try:
                    docker.start()
                except Exception as e:  # noqa: BLE001 - measured without Docker, and said why
                    figures["docker"] = {**docker.stop(), "available": False,
                                         "reason": f"setup failed: {type(e).__name__}: {e}"}
                    docker = None
        figures["pull_s"] = pull_bench(base, registry, images, args.runs, docker)
        if not args.no_service:
            figures["service_s"] = service_bench(base, registry, args.service_runs)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if docker is not None:
            figures["docker"] = docker.stop()
        registry.stop()
        unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)
    figures["load_average_at_end"] = round(os.getloadavg()[0], 2)
    figures["wall_s"] = round(time.monotonic() - wall, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

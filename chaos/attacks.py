"""Attacks that run beside the workload, each recording what the attack invariants need.

How this works. `execute` runs one attack `Fault` (chaos/scenarios.py): the
attack's body runs in a thread of its own for about `hold` seconds while the
calling thread, `canary_after` seconds in, creates a canary service, waits
for its replicas, scales it up by one, waits again and removes it. Each body
fills a plain dict (its outcome) that chaos/attack_checks.py judges after
the run; a body that fails by itself (not the cluster) is a harness error.
Everything stays inside the lab: control calls go over the managers' unix
sockets, node API traffic starts inside a host's network namespace (through
swarm.lab.lab.in_netns, a thread that setns()-es, or nsenter) and goes only to
lab addresses, and extra attacker addresses are added to that host's own
namespace and removed afterwards.

* poison-worker: the worker's own certificate and key (STATE_DIR/certs) make
  a TLS client; from the worker's namespace it calls the leader's node API
  with each poison kind (chaos/payloads.py POISON) in the seeded order, again
  and again, counting answers that are `bad_request` and keeping the others.
* big-service: creates a service of N replicas (busybox sleep), waits until
  every slot is assigned and (as long as the bound allows) running, scales
  it through the schedule's steps down to 0, removes it and waits until no
  host keeps a container of its tasks; samples /proc/loadavg meanwhile.
* log-flood: a one-replica service running `yes` on a chosen node, followed
  by `swarm service logs -f` run on a manager; samples the sizes of the
  task's log files under STATE_DIR/tasks/<id>/ every second.
* frame-flood: from extra addresses on one host, per manager and address
  more half-open TLS connections (no client certificate, half a frame) than
  the server admits, then large frames and garbage in a loop; a probe thread
  runs `swarm node ls` on a manager and `control.node.ls` over TLS with the
  host's real certificate, timing each.
* bad-names: a shared overlay network with a DNS canary service on it; every
  odd name (and label map) is tried through the control API and the CLI; an
  accepted one must be listed and removable; the canary's name is resolved
  from inside one of its tasks before, between and after the attempts.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from chaos import payloads
from chaos.cluster import ChaosError, Cluster
from chaos.scenarios import BAD_NAMES, BIG_SERVICE, FRAME_FLOOD, LOG_FLOOD, POISON_WORKER, Fault
from swarm.lab import lab as labmod
from swarm.rpc.messages import RPCError

IMAGE = "demo:1"
SLEEP = ["sleep", "1000000"]
QUICK_STOP = {"stop_grace_period": 1.0, "restart_delay": 1.0}   # sleep ignores SIGTERM as PID 1
POLL = 0.5


@dataclass
class Context:
    cluster: Cluster
    fault: Fault
    now: Callable[[], float]
    say: Callable[[str], None]
    canary_bound: float
    seed: str
    stop: threading.Event = field(default_factory=threading.Event)

    def note(self, what: str, **detail: Any) -> None:
        self.say(f"  {self.now():7.2f} s  {what}" + "".join(f" {k}={v}" for k, v in detail.items()))


def execute(cluster: Cluster, fault: Fault, now: Callable[[], float], events: list[dict],
            say: Callable[[str], None], canary_bound: float, seed: str) -> dict:
    """Run one attack with the canary beside it; returns {"attack", "canary", "since", "until"}."""
    time.sleep(fault.wait)
    ctx = Context(cluster, fault, now, say, canary_bound, seed)
    outcome: dict[str, Any] = {}
    since = now()
    events.append({"at": round(since, 3), "action": fault.action, "host": fault.target,
                   **{k: v for k, v in fault.detail.items() if k not in ("kinds", "names", "labels", "cli")}})
    ctx.note(f"{fault.action} on", host=fault.target)

    def body() -> None:
        try:
            RUNNERS[fault.action](ctx, outcome)
        except (ChaosError, RPCError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            outcome["harness_error"] = f"{fault.action}: {type(exc).__name__}: {exc}"

    thread = threading.Thread(target=body, name=f"chaos-{fault.action}", daemon=True)
    thread.start()
    time.sleep(fault.detail.get("canary_after", 1.0))
    canary = run_canary(ctx, f"canary{random.Random(seed).randrange(10**4):04d}",
                        int(fault.detail.get("canary_replicas", 2)))
    ctx.note("canary done", steps=[(s["replicas"], s["seconds"]) for s in canary.get("steps", [])])
    limit = fault.hold * (len(fault.detail.get("steps", [])) + 2) + 120
    thread.join(limit)
    if thread.is_alive():
        ctx.stop.set()
        thread.join(60)
        if thread.is_alive():
            raise ChaosError(f"the {fault.action} attack did not end within {limit:g} s")
    if "harness_error" in outcome:
        raise ChaosError(outcome["harness_error"])
    until = now()
    ctx.note(f"{fault.action} over")
    return {"attack": outcome, "canary": canary, "since": round(since, 3), "until": round(until, 3)}


# -- control calls and waiting ------------------------------------------------------------------


def api(cluster: Cluster, method: str, params: dict, timeout: float = 15.0) -> Any:
    """One control call on the first manager that answers (over its unix socket)."""
    last: RPCError | None = None
    for host in cluster.managers:
        try:
            return cluster.call(host, method, params, timeout=timeout)
        except RPCError as exc:
            if exc.code not in ("unavailable", "deadline"):
                raise
            last = exc
    raise last or RPCError("unavailable", "no manager")


def create_service(cluster: Cluster, name: str, replicas: int, command: list[str] | None = None,
                   **extra: Any) -> str:
    params = {"name": name, "image": IMAGE, "command": command or SLEEP, "replicas": replicas, **QUICK_STOP, **extra}
    return api(cluster, "service.create", params)["id"]


def remove_service(cluster: Cluster, name: str) -> None:
    with contextlib.suppress(RPCError):
        api(cluster, "service.rm", {"refs": [name]})


def slot_counts(rows: list[dict], replicas: int) -> tuple[int, int, int]:
    """(slots assigned to a node, slots running exactly one task, tasks running at all) of a service."""
    current = [r for r in rows if r.get("desired_state") == "running"]
    assigned = {r["slot"] for r in current if r.get("node_id") and 1 <= (r.get("slot") or 0) <= replicas}
    by_slot: dict[int, int] = {}
    for r in current:
        if r.get("state") == "running":
            by_slot[r["slot"]] = by_slot.get(r["slot"], 0) + 1
    running = sum(1 for s, n in by_slot.items() if n == 1 and 1 <= s <= replicas)
    return len(assigned), running, sum(1 for r in rows if r.get("state") == "running")


def wait_replicas(ctx: Context, service: str, replicas: int, bound: float) -> dict:
    """Poll service.ps until `replicas` slots each run one task (0: until none runs)."""
    started = time.monotonic()
    step: dict[str, Any] = {"replicas": replicas, "seconds": None, "running": 0, "error": ""}
    while time.monotonic() - started < bound and not ctx.stop.is_set():
        try:
            rows = api(ctx.cluster, "service.ps", {"refs": [service]}, timeout=10)
        except RPCError as exc:
            step["error"] = f"service ps failed: {exc.message}"
            time.sleep(POLL)
            continue
        _, running, anything = slot_counts(rows, replicas)
        step["running"], step["error"] = running, ""
        if (running == replicas and anything == replicas) if replicas else not anything:
            step["seconds"] = round(time.monotonic() - started, 1)
            return step
        time.sleep(POLL)
    return step


def run_canary(ctx: Context, name: str, replicas: int) -> dict:
    """Create a canary service, wait for it, scale it up by one, wait again, remove it."""
    out: dict[str, Any] = {"service": name, "steps": []}
    try:
        create_service(ctx.cluster, name, replicas)
    except RPCError as exc:
        out["error"] = f"service create failed: {exc.code}: {exc.message}"
        return out
    try:
        for n in (replicas, replicas + 1):
            if n != replicas:
                try:
                    api(ctx.cluster, "service.scale", {"scales": {name: n}})
                except RPCError as exc:
                    out["steps"].append({"replicas": n, "seconds": None, "running": 0,
                                         "error": f"service scale failed: {exc.code}: {exc.message}"})
                    break
            step = wait_replicas(ctx, name, n, ctx.canary_bound)
            out["steps"].append(step)
            if step["seconds"] is None:
                break
    finally:
        remove_service(ctx.cluster, name)
    return out


def api_addr(cluster: Cluster, host: str) -> tuple[str, int]:
    """The node API address (host, port) the node advertises, from its node.json."""
    with open(os.path.join(cluster.hosts[host]["state_dir"], "node.json")) as f:
        addr = json.load(f)["addr"]
    ip, _, port = addr.rpartition(":")
    return ip, int(port)


def certs(cluster: Cluster, host: str) -> tuple[bytes, bytes, bytes]:
    """(ca, cert, key) PEM of the node on `host`."""
    base = os.path.join(cluster.hosts[host]["state_dir"], "certs")

    def read(name: str) -> bytes:
        with open(os.path.join(base, name), "rb") as f:
            return f.read()
    return read("ca.pem"), read("node.pem"), read("node-key.pem")


def tls_call(ssl_ctx: ssl.SSLContext, addr: tuple[str, int], calls: list[tuple[str, dict]],
             timeout: float = 10.0) -> list[tuple[str, Any]]:
    """Make `calls` on one TLS connection (run inside a host's namespace); each answer is
    ("ok", result) or (error code, message)."""
    import trio

    from swarm.rpc.client import RPCClient

    async def main() -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        client = await RPCClient.connect_tls(addr[0], addr[1], ssl_ctx, timeout=timeout)
        async with client:
            for method, params in calls:
                try:
                    out.append(("ok", await client.call(method, params, timeout=timeout)))
                except RPCError as exc:
                    out.append((exc.code, exc.message))
        return out

    try:
        return trio.run(main)
    except RPCError as exc:
        return [(exc.code, exc.message)] * len(calls)


# -- poison-worker ------------------------------------------------------------------------------------


def poison_worker(ctx: Context, out: dict) -> None:
    from swarm.ca import pki

    cluster, host = ctx.cluster, ctx.fault.target
    node_id = cluster.node_ids[host]
    rows = api(cluster, "service.ps", {"refs": ["chaos"]})
    own = [r["id"] for r in rows if r.get("node_id") == node_id and r.get("desired_state") == "running"]
    if not own:
        raise ChaosError(f"{host} runs no task of the chaos service to poison the status of")
    ca, cert, key = certs(cluster, host)
    ssl_ctx = pki.client_ssl_context(cert, key, ca)
    out.update(task=own[0], worker=host, sent={}, refused={}, other={})
    kinds, pause = ctx.fault.detail["kinds"], float(ctx.fault.detail.get("pause", 0.05))
    deadline = time.monotonic() + ctx.fault.hold
    rounds = 0
    while time.monotonic() < deadline and not ctx.stop.is_set():
        leader = cluster.leader()
        out["leader"] = leader
        calls = [payloads.poison_request(kind, own[0]) for kind in kinds]
        answers = labmod.in_netns(cluster._netns(host), lambda: tls_call(ssl_ctx, api_addr(cluster, leader), calls))
        for kind, (code, answer) in zip(kinds, answers):
            if code == "not_leader":    # leadership moved between leader() and the call: not judged, counted
                out["not_leader"] = out.get("not_leader", 0) + 1
                out["not_leader_said"] = f"{kind}: {answer!r}"[:200]
                continue
            out["sent"][kind] = out["sent"].get(kind, 0) + 1
            if code == "bad_request":
                out["refused"][kind] = out["refused"].get(kind, 0) + 1
            elif len(out["other"].setdefault(kind, [])) < 3:
                out["other"][kind].append(f"{code}: {str(answer)[:200]}")
        rounds += 1
        time.sleep(pause)
    out["rounds"] = rounds
    ctx.note("poisoned", rounds=rounds, refused=sum(out["refused"].values()), sent=sum(out["sent"].values()))


# -- big-service --------------------------------------------------------------------------------------


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def containers_of(cluster: Cluster, task_ids: set[str]) -> int:
    """How many of `task_ids` still have a container bundle on any host."""
    left = 0
    for h in cluster.hosts.values():
        tasks = os.path.join(h["state_dir"], "tasks")
        with contextlib.suppress(OSError):
            left += sum(1 for name in os.listdir(tasks) if name in task_ids)
    return left


def big_service(ctx: Context, out: dict) -> None:
    cluster, bound = ctx.cluster, ctx.fault.hold
    steps = list(ctx.fault.detail["steps"])
    name = "big"
    out.update(steps=[], load_peak=load_average(), load_start=load_average())
    seen: set[str] = set()
    create_service(cluster, name, steps[0])
    ctx.note("created", service=name, replicas=steps[0])
    for i, replicas in enumerate(steps):
        if i:
            api(cluster, "service.scale", {"scales": {name: replicas}})
            ctx.note("scaled", service=name, replicas=replicas)
        started = time.monotonic()
        step: dict[str, Any] = {"replicas": replicas, "assigned_seconds": None, "running_seconds": None,
                                "assigned": 0, "running": 0, "error": ""}
        out["steps"].append(step)
        while time.monotonic() - started < bound and not ctx.stop.is_set():
            out["load_peak"] = max(out["load_peak"], load_average())
            try:
                rows = api(cluster, "service.ps", {"refs": [name]}, timeout=15)
            except RPCError as exc:
                step["error"] = f"service ps failed: {exc.message}"
                time.sleep(1.0)
                continue
            step["error"] = ""
            seen.update(r["id"] for r in rows)
            assigned, running, anything = slot_counts(rows, replicas)
            step.update(assigned=assigned, running=running if replicas else anything)
            took = round(time.monotonic() - started, 1)
            if assigned == replicas and step["assigned_seconds"] is None:
                step["assigned_seconds"] = took
            if (running == replicas and anything == replicas) if replicas else not anything:
                step["running_seconds"] = took
                break
            time.sleep(1.0)
        ctx.note("step", replicas=replicas, assigned=step["assigned"], running=step["running"],
                 seconds=step["running_seconds"])
    api(cluster, "service.rm", {"refs": [name]})
    started = time.monotonic()
    out["removed_seconds"] = None
    while time.monotonic() - started < bound and not ctx.stop.is_set():
        out["containers_left"] = containers_of(cluster, seen)
        if not out["containers_left"]:
            out["removed_seconds"] = round(time.monotonic() - started, 1)
            break
        time.sleep(1.0)
    out["tasks_seen"] = len(seen)
    out["load_peak"] = max(out["load_peak"], load_average())
    ctx.note("removed", service=name, seconds=out["removed_seconds"], load_peak=out["load_peak"])


# -- log-flood ----------------------------------------------------------------------------------------


def log_files(task_dir: str) -> dict[str, int]:
    out = {}
    for path in glob.glob(os.path.join(task_dir, "container.log*")):
        with contextlib.suppress(OSError):
            out[os.path.basename(path)] = os.path.getsize(path)
    return out


def _drain(stream: Any, counts: dict, key: str, keep: int = 0) -> None:
    tail = b""
    for chunk in iter(lambda: stream.read1(65536), b""):
        counts[key] = counts.get(key, 0) + len(chunk)
        if keep:
            tail = (tail + chunk)[-keep:]
            counts["tail"] = tail.decode(errors="replace")


def log_flood(ctx: Context, out: dict) -> None:
    from swarm.runtime import runclog

    cluster, host = ctx.cluster, ctx.fault.target
    line = "x" * int(ctx.fault.detail.get("line", 80))
    out.update(max_size=runclog.LOG_MAX_SIZE, max_file=runclog.LOG_MAX_FILE, samples=[], follow={})
    name = "flood"
    create_service(cluster, name, 1, ["yes", line], constraints=[f"node.id=={cluster.node_ids[host]}"],
                   limit_cpu=500_000_000)
    follower = None
    try:
        step = wait_replicas(ctx, name, 1, 30.0)
        if step["seconds"] is None:
            raise ChaosError(f"the flooding task did not start within 30 s: {step['error'] or 'not running'}")
        rows = api(cluster, "service.ps", {"refs": [name]})
        task_id = next(r["id"] for r in rows if r.get("state") == "running")
        out["task"] = task_id
        task_dir = os.path.join(cluster.hosts[host]["state_dir"], "tasks", task_id)
        follow_host = cluster.hosts[ctx.fault.detail["follow_on"]]
        python = cluster.rec.get("python") or sys.executable
        cmd, env = labmod.host_command(cluster.rec, follow_host, [python, "-m", "swarm", "service", "logs", "-f",
                                                                   name])
        follower = subprocess.Popen(cmd, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        counts: dict[str, Any] = {}
        readers = [threading.Thread(target=_drain, args=(follower.stdout, counts, "bytes"), daemon=True),
                   threading.Thread(target=_drain, args=(follower.stderr, counts, "stderr_bytes", 2000), daemon=True)]
        for t in readers:
            t.start()
        ctx.note("flooding", task=task_id[:10], follow_on=ctx.fault.detail["follow_on"])
        started = time.monotonic()
        while time.monotonic() - started < ctx.fault.hold and not ctx.stop.is_set():
            out["samples"].append({"at": round(ctx.now(), 1), "files": log_files(task_dir)})
            time.sleep(1.0)
        out["follow"] = {"bytes": counts.get("bytes", 0), "running_at_end": follower.poll() is None,
                         "exit": follower.poll(), "stderr": counts.get("tail", "")[-500:]}
        last = out["samples"][-1]["files"] if out["samples"] else {}
        ctx.note("flooded", log_mib=round(sum(last.values()) / payloads.MiB, 1),
                 followed_mib=round(out["follow"]["bytes"] / payloads.MiB, 1))
    finally:
        if follower is not None:
            follower.terminate()
            try:
                follower.wait(5)
            except subprocess.TimeoutExpired:
                follower.kill()
                follower.wait(5)
        remove_service(cluster, name)


# -- frame-flood --------------------------------------------------------------------------------------


def attacker_addresses(base: str, count: int) -> list[str]:
    """`count` addresses of the host's /24 that no lab host uses (hosts are .1-.20)."""
    prefix = base.rsplit(".", 1)[0]
    return [f"{prefix}.{100 + i}" for i in range(count)]


def _ip(cluster: Cluster, host: str, *args: str) -> None:
    netns = cluster._netns(host)   # refuses any namespace that is not one of the lab's hosts
    res = subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True, timeout=10)
    if res.returncode != 0 and "File exists" not in res.stderr:
        raise ChaosError(f"ip {' '.join(args)} in {netns} failed: {res.stderr.strip()}")


def _still_open(tls: ssl.SSLSocket) -> bool:
    """Whether the server still holds a half-open connection (it should have closed it)."""
    try:
        tls.setblocking(False)
        return tls.recv(1) != b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except (OSError, ssl.SSLError):
        return False


def _flood(targets: list[tuple[str, int]], sources: list[str], per_address: int, ca: bytes,
           detail: dict, seed: str, hold: float, stop: threading.Event, out: dict) -> None:
    """Runs inside the attacker's namespace: half-open connections, then big frames and garbage."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca.decode())
    rng = random.Random(seed)
    held: list[ssl.SSLSocket] = []
    counts = out.setdefault("connections", {"opened": 0, "handshake_refused": 0, "connect_refused": 0})
    started = time.monotonic()
    try:
        for target in targets:
            for src in sources:
                for _ in range(per_address):
                    try:
                        raw = socket.create_connection(target, timeout=3, source_address=(src, 0))
                    except OSError:
                        counts["connect_refused"] += 1
                        continue
                    try:
                        tls = ctx.wrap_socket(raw)
                        tls.sendall(payloads.half_frame(1 << 20, 100))
                        held.append(tls)
                        counts["opened"] += 1
                    except (OSError, ssl.SSLError):
                        raw.close()
                        counts["handshake_refused"] += 1
        counts["open_after_setup"] = sum(1 for tls in held if _still_open(tls))
        frames = out.setdefault("frames", {"big_sent": 0, "big_bytes_taken": 0, "garbage_sent": 0})
        sizes = detail["frame_sizes"]
        while time.monotonic() - started < hold and not stop.is_set():
            for target in targets:
                src = rng.choice(sources)
                with contextlib.suppress(OSError, ssl.SSLError):     # refused early: the point
                    with socket.create_connection(target, timeout=3, source_address=(src, 0)) as raw:
                        with ctx.wrap_socket(raw) as tls:
                            size = rng.choice(sizes)
                            tls.sendall(payloads.big_frame_header(size))
                            frames["big_sent"] += 1
                            chunk = b"\x90" * 65536
                            for _ in range(size // len(chunk)):
                                tls.sendall(chunk)
                                frames["big_bytes_taken"] += len(chunk)
                with contextlib.suppress(OSError):
                    with socket.create_connection(target, timeout=3, source_address=(src, 0)) as raw:
                        raw.sendall(rng.randbytes(int(detail["garbage"])))
                        frames["garbage_sent"] += 1
            stop.wait(0.2)
        counts["still_open_at_end"] = sum(1 for tls in held if _still_open(tls))
    finally:
        for tls in held:
            with contextlib.suppress(OSError):
                tls.close()


def frame_flood(ctx: Context, out: dict) -> None:
    from swarm.ca import pki

    cluster, host, detail = ctx.cluster, ctx.fault.target, ctx.fault.detail
    sources = attacker_addresses(cluster.addr(host), int(detail["addresses"]))
    targets = [api_addr(cluster, m) for m in cluster.managers]
    ca, cert, key = certs(cluster, host)
    probe_ctx = pki.client_ssl_context(cert, key, ca)
    out.update(sources=sources, probes=[])
    for addr in sources:
        _ip(cluster, host, "addr", "add", f"{addr}/24", "dev", "eth0")
    probing = threading.Event()

    def probe() -> None:
        python = cluster.rec.get("python") or sys.executable
        n = 0
        while not probing.is_set():
            manager = cluster.managers[n % len(cluster.managers)]
            at, t0 = ctx.now(), time.monotonic()
            if n % 2 == 0:
                try:
                    res = labmod.run(cluster.rec, cluster.hosts[manager], [python, "-m", "swarm", "node", "ls"],
                                     timeout=30)
                    ok, error = res.returncode == 0, (res.stderr or res.stdout).strip()[-200:]
                except subprocess.TimeoutExpired:
                    ok, error = False, "no answer within 30 s"
                via = f"swarm node ls on {manager}"
            else:
                answers = labmod.in_netns(cluster._netns(host), lambda: tls_call(
                    probe_ctx, api_addr(cluster, manager), [("control.node.ls", {})], timeout=30))
                ok, error = answers[0][0] == "ok", "" if answers[0][0] == "ok" else f"{answers[0]}"[:200]
                via = f"control.node.ls over TLS to {manager}"
            out["probes"].append({"at": round(at, 2), "via": via, "ok": ok, "seconds": round(time.monotonic() - t0, 2),
                                  "error": "" if ok else error})
            n += 1
            probing.wait(1.0)

    prober = threading.Thread(target=probe, name="chaos-probe", daemon=True)
    prober.start()
    try:
        labmod.in_netns(cluster._netns(host), lambda: _flood(
            targets, sources, int(detail["per_address"]), ca, detail, f"{ctx.seed}:flood", ctx.fault.hold,
            ctx.stop, out))
    finally:
        probing.set()
        prober.join(60)
        for addr in sources:
            with contextlib.suppress(ChaosError):
                _ip(cluster, host, "addr", "del", f"{addr}/24", "dev", "eth0")
    ctx.note("flooded", **out.get("connections", {}), **out.get("frames", {}), probes=len(out["probes"]))


# -- bad-names ------------------------------------------------------------------------------------------

RESOLVE = """
import dns.resolver, json, sys
r = dns.resolver.Resolver(configure=False); r.nameservers = ['127.0.0.11']; r.lifetime = 3
try: print(json.dumps({"ok": True, "answer": sorted(a.address for a in r.resolve(sys.argv[1], 'A'))}))
except Exception as e: print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:200]}))
"""


def task_netns(cluster: Cluster, row: dict) -> str:
    from swarm.agent.networking import prefix_for

    name = f"{prefix_for(row['node_id'])}-t-{row['id'][:10]}"
    if row["node_id"] not in cluster.hostnames or not os.path.exists(os.path.join(labmod.NETNS_DIR, name)):
        raise ChaosError(f"no namespace {name} of a lab task")
    return name


def resolve(ctx: Context, netns: str, name: str) -> dict:
    python = ctx.cluster.rec.get("python") or sys.executable
    at = ctx.now()
    try:
        res = subprocess.run(["nsenter", f"--net={os.path.join(labmod.NETNS_DIR, netns)}", "--", python, "-c",
                              RESOLVE, name], capture_output=True, text=True, timeout=20, cwd="/")
        answer = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {
            "ok": False, "error": res.stderr.strip()[-200:]}
    except (subprocess.TimeoutExpired, ValueError) as exc:
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"at": round(at, 2), **answer}


def _listed(cluster: Cluster, what: str, ident: str) -> bool:
    rows = api(cluster, f"{what}.ls", {})
    return any(r.get("id") == ident or r.get("name") == ident for r in rows)


def _accepted(cluster: Cluster, what: str, ident: str, attempt: dict) -> None:
    """An accepted odd name: is it listed, and can it be removed again?"""
    attempt["listed"] = _listed(cluster, what, ident)
    deadline = time.monotonic() + 20
    while True:
        try:
            api(cluster, f"{what}.rm", {"refs": [ident]})
            attempt["removed"] = True
            return
        except RPCError as exc:
            attempt["remove_error"] = f"{exc.code}: {exc.message}"
            if time.monotonic() > deadline:
                attempt["removed"] = False
                return
            time.sleep(1.0)


def _try_api(cluster: Cluster, what: str, kind: str, params: dict) -> dict:
    attempt: dict[str, Any] = {"what": f"{what} via API", "kind": kind, "name": str(params.get("name"))[:80]}
    try:
        ident = api(cluster, f"{what}.create", params)["id"]
    except RPCError as exc:
        attempt.update(refused=True, code=exc.code, message=exc.message[:1000])
        return attempt
    attempt["refused"] = False
    _accepted(cluster, what, ident, attempt)
    return attempt


def _try_cli(ctx: Context, what: str, kind: str, name: str, network: str) -> dict | None:
    cluster = ctx.cluster
    if "\x00" in name:
        return None     # no argv can carry it
    python = cluster.rec.get("python") or sys.executable
    host = cluster.hosts[ctx.fault.target]
    argv = ([python, "-m", "swarm", "service", "create", "--detach", f"--name={name}", "--network", network,
             "--stop-grace-period", "1s", IMAGE, *SLEEP] if what == "service"
            else [python, "-m", "swarm", "network", "create", "--", name])
    res = labmod.run(cluster.rec, host, argv, timeout=60)
    attempt: dict[str, Any] = {"what": f"{what} via CLI", "kind": kind, "name": name[:80], "exit": res.returncode}
    if res.returncode != 0:
        attempt.update(refused=True, message=(res.stderr or res.stdout)[-2000:])
        return attempt
    attempt["refused"] = False
    ident = (res.stdout.strip().splitlines() or [name])[0].strip()
    _accepted(cluster, what, ident, attempt)
    return attempt


def bad_names(ctx: Context, out: dict) -> None:
    cluster, detail = ctx.cluster, ctx.fault.detail
    network, canary = "chaosnet", "dnscanary"
    out.update(attempts=[], dns=[])
    api(cluster, "network.create", {"name": network})
    try:
        create_service(cluster, canary, 2, networks=[network])
        step = wait_replicas(ctx, canary, 2, 45.0)
        if step["seconds"] is None:
            raise ChaosError(f"the DNS canary did not start within 45 s: {step['error'] or step['running']}")
        rows = [r for r in api(cluster, "service.ps", {"refs": [canary]}) if r.get("state") == "running"]
        netns = task_netns(cluster, rows[0])
        out["dns"].append(resolve(ctx, netns, canary))
        cli = set(detail.get("cli", []))
        for i, kind in enumerate(detail["names"]):
            name = payloads.ODD_NAMES[kind]
            out["attempts"].append(_try_api(cluster, "service", kind, {
                "name": name, "image": IMAGE, "command": SLEEP, "replicas": 1, "networks": [network], **QUICK_STOP}))
            out["attempts"].append(_try_api(cluster, "network", kind, {"name": name}))
            if kind in cli:
                for what in ("service", "network"):
                    if (attempt := _try_cli(ctx, what, kind, name, network)) is not None:
                        out["attempts"].append(attempt)
            if i % 3 == 2:
                out["dns"].append(resolve(ctx, netns, canary))
        for j, kind in enumerate(detail["labels"]):
            out["attempts"].append(_try_api(cluster, "service", kind, {
                "name": f"labels{j}", "image": IMAGE, "command": SLEEP, "replicas": 1, "networks": [network],
                "labels": payloads.ODD_LABELS[kind], **QUICK_STOP}))
        out["dns"].append(resolve(ctx, netns, canary))
        accepted = [f"{a['what']} {a['kind']}" for a in out["attempts"] if not a.get("refused")]
        ctx.note("names tried", attempts=len(out["attempts"]), accepted=accepted or "none")
    finally:
        remove_service(cluster, canary)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:     # the network goes once no task uses it
            try:
                api(cluster, "network.rm", {"refs": [network]})
                break
            except RPCError as exc:
                if exc.code == "not_found":
                    break
                time.sleep(1.0)


RUNNERS: dict[str, Callable[[Context, dict], None]] = {
    POISON_WORKER: poison_worker, BIG_SERVICE: big_service, LOG_FLOOD: log_flood, FRAME_FLOOD: frame_flood,
    BAD_NAMES: bad_names,
}

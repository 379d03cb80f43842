"""Embedded DNS throughput and latency, from a client inside a task namespace.

    .venv/bin/python bench/dns_bench.py [--seconds 5] [--runs 1] [--docker]      (as root)

Creates a network namespace (only `lo`, no traffic leaves it), binds the
embedded DNS at 127.0.0.11:53 inside it and serves it from this process's trio
loop, as the node daemon does. A client process runs inside the namespace
(`ip netns exec`), with one connected UDP socket and pre-built A queries for
the service name `web`: first 1 query outstanding, then 16, each for
--seconds after a 0.5 s warm-up. Prints one JSON document: per phase queries/s,
p50/p99 latency in ms, lost queries, the client's and the server's CPU use
(percent of one CPU) and the server's CPU microseconds per answered query (its
capacity when the client, or other load, is the limit), the machine's load
average, and the Docker 20.10 figures measured on this machine kind
(NOTES-docker-anchor.md). Repeated queries hit the view's reply cache, as a
real client's repeated lookups would. The namespace is deleted on the way
out, also on failure.

--docker measures Docker 20.10's embedded DNS in the same run, the same way,
and quotes ratios (the machines are shared and noisy, so only same-run
comparisons mean much). With bench/docker_anchor.py's machinery it starts a
private dockerd (own data-root, exec-root, socket, pidfile, config file and
cgroup parent, --bridge=none --iptables=false --ip-forward=false,
DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1) inside a second network namespace of
ours that has only `lo`: swarm puts docker_gwbridge, a veth per sandbox and a
172.17/16 route wherever dockerd runs, and there they stay out of the root
namespace, and nothing a task sends can leave the machine. Then `docker swarm
init` on a free loopback port, `docker import` of the demo rootfs
(scripts/build-demo-image.sh) used by image ID with --no-resolve-image, an
attachable overlay network, and a service `web` of 2 `sleep` tasks in VIP
mode, like our side's `web`: without IPVS a VIP carries no traffic on this
kernel, but DNS answers it as usual, one A record (the JSON shows both
answers, their sizes and whether the answer's name is compressed). The same client runs in one task container's
network namespace (nsenter --net=/proc/PID/ns/net), where dockerd's resolver
answers 127.0.0.11:53 through the container's own DNAT rules; the server CPU
on that side is dockerd's (utime+stime in /proc/PID/stat). With --runs > 1
the sides alternate, ours first in even rounds and Docker first in odd ones,
so drift in the machine's load hits both. The JSON gains "docker" (its
phases, versions, and what differs on the machine after the teardown) and
"vs_docker" (per round and median: our queries/s over Docker's, both p99s,
both server CPU per query). The teardown (services, network, swarm, dockerd
and everything it started, mounts, cgroups, the namespace, the folders
dockerd leaves in /run and /var/lib) runs in `finally`, also on Ctrl-C and
SIGTERM. Without dockerd (or when its setup fails) "docker" says why and
ours is measured alone.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import types
import uuid
from dataclasses import dataclass
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DOCKER_ANCHOR = {   # A queries to 127.0.0.11 from a task namespace, 5 runs of 5 s, dockerd 20.10
    "1_outstanding": {"qps": "29.5k-57k", "p99_ms": "0.04-0.06"},
    "16_outstanding": {"qps": "81k-115k", "p99_ms": "1.0-1.3"},
    "server_cpu_percent": "85-130",
    "unknown_name_no_upstream": "no answer at all; client waits its full timeout",
}


PHASES = ((1, "1_outstanding"), (16, "16_outstanding"))
QUESTION = b"\x03web\x00\x00\x01\x00\x01"    # web. A IN


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the client, run inside the namespace ---------------------------------------------------
def client(outstanding: int, seconds: float, warmup: float = 0.5) -> dict:
    wires = [struct.pack("!6H", i, 0x0100, 1, 0, 0, 0) + QUESTION for i in range(65536)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.11", 53))
    sock.settimeout(1.0)
    send, recv, clock = sock.send, sock.recv, time.perf_counter_ns
    sent_at = [0] * 65536                  # by query id; a reply whose slot is 0 is late or stray
    latencies: list[int] = []
    seq = lost = total = 0
    cpu0 = cpu_seconds()
    measure_from = clock() + int(warmup * 1e9)
    end = measure_from + int(seconds * 1e9)
    for seq in range(outstanding):
        sent_at[seq] = clock()
        send(wires[seq])
    seq = outstanding
    while True:
        try:
            reply = recv(512)
        except socket.timeout:             # refill the window; what was in flight is lost
            lost += sum(1 for t in sent_at if t)
            sent_at = [0] * 65536
            for _ in range(outstanding):
                qid = seq & 0xFFFF
                seq += 1
                sent_at[qid] = clock()
                send(wires[qid])
            continue
        now = clock()
        qid = reply[0] << 8 | reply[1]
        t0 = sent_at[qid]
        if not t0:
            continue
        sent_at[qid] = 0
        total += 1
        if now >= measure_from:
            latencies.append(now - t0)
            if now >= end:
                break
        qid = seq & 0xFFFF
        seq += 1
        sent_at[qid] = now
        send(wires[qid])
    client_cpu = cpu_seconds() - cpu0
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6  # noqa: E731
    return {"outstanding": outstanding, "queries": len(latencies), "qps": round(len(latencies) / seconds),
            "p50_ms": round(pick(0.50), 4), "p99_ms": round(pick(0.99), 4),
            "mean_ms": round(statistics.fmean(latencies) / 1e6, 4), "lost": lost, "total_answered": total,
            "client_cpu_percent": round(100 * client_cpu / (seconds + warmup))}


def probe() -> dict:
    """One query as the client sends it, and what came back: the answer, as both sides are
    compared on the same name and reply size."""
    import dns.message
    import dns.rcode

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.11", 53))
    sock.settimeout(2.0)
    sock.send(struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + QUESTION)
    wire = sock.recv(512)
    reply = dns.message.from_wire(wire)
    first_answer = 12 + len(QUESTION)      # the reply repeats the question as sent
    return {"reply_bytes": len(wire), "rcode": dns.rcode.to_text(reply.rcode()),
            "answers": sorted(r.address for rrset in reply.answer for r in rrset),
            "ttl": min((rrset.ttl for rrset in reply.answer), default=None),
            # a pointer to the question's name (2 bytes) or the name spelled out again
            "answer_name_compressed": len(wire) > first_answer and wire[first_answer] & 0xC0 == 0xC0}


# -- the server side -------------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """Where a phase's client runs (the command prefix that puts it in the namespace) and the
    cumulative CPU seconds of the server answering it."""
    name: str
    launcher: tuple[str, ...]
    server_cpu: Callable[[], float]


async def measure(side: Side, outstanding: int, seconds: float) -> dict:
    import trio

    cpu0 = side.server_cpu()
    done = await trio.run_process(
        [*side.launcher, sys.executable, os.path.abspath(__file__), "--client",
         "--outstanding", str(outstanding), "--seconds", str(seconds)],
        capture_stdout=True, check=True)
    result = json.loads(done.stdout)
    cpu = side.server_cpu() - cpu0
    # CPU over the measured window, assuming the warm-up ran at the same rate per query
    result["server_cpu_percent"] = round(100 * cpu * result["queries"] / result["total_answered"] / seconds)
    result["server_us_per_query"] = round(1e6 * cpu / result["total_answered"], 1)
    return result


async def probe_side(side: Side) -> dict:
    import trio

    done = await trio.run_process([*side.launcher, sys.executable, os.path.abspath(__file__), "--probe"],
                                  capture_stdout=True, check=True)
    return json.loads(done.stdout)


async def interrupt_on_sigterm(task_status) -> None:
    """While trio runs, SIGTERM ends the run as Ctrl-C does, so the caller's teardown runs."""
    import trio

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            raise KeyboardInterrupt("SIGTERM")


async def run(ns: str, seconds: float, runs: int, docker: Side | None = None) -> dict:
    """Serve our DNS in `ns` and run the phases: {side name: {phase: [result per round]}}, plus
    "answers" (one probe per side) when Docker is measured too."""
    import trio

    from overlay import dns as edns

    records = edns.Records({"front": edns.NetworkRecords(services=(
        edns.ServiceRecord("web", "vip", vip="10.0.1.2", task_ips=("10.0.1.3", "10.0.1.4")),))})
    view = records.view(["front"])
    socks = await trio.to_thread.run_sync(edns.open_sockets_in_netns, ns)
    ours = Side("ours", ("ip", "netns", "exec", ns), cpu_seconds)
    sides = [ours] if docker is None else [ours, docker]
    out: dict = {side.name: {key: [] for _, key in PHASES} for side in sides}
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: edns.serve(list(socks), lambda: view, [],
                                                           rng=random.Random(1), task_status=task_status))
        if docker is not None:
            await nursery.start(interrupt_on_sigterm)
            out["answers"] = {side.name: await probe_side(side) for side in sides}
        for round_no in range(runs):
            # ABBA: whichever side goes second in one round goes first in the next
            for side in sides if round_no % 2 == 0 else sides[::-1]:
                for outstanding, key in PHASES:
                    out[side.name][key].append(await measure(side, outstanding, seconds))
        nursery.cancel_scope.cancel()
    return out


def versus(ours: dict, docker: dict) -> dict:
    """Per phase, round by round (both sides measured in the same round): our queries/s over
    Docker's, and both p99s and server CPU per query side by side."""
    out = {}
    for _, key in PHASES:
        pairs = list(zip(ours[key], docker[key]))
        ratios = [round(o["qps"] / d["qps"], 2) if d["qps"] else None for o, d in pairs]
        known = [r for r in ratios if r is not None]
        out[key] = {"qps_ours_over_docker": ratios,
                    "qps_ours_over_docker_median": round(statistics.median(known), 2) if known else None,
                    "p99_ms": [{"ours": o["p99_ms"], "docker": d["p99_ms"]} for o, d in pairs],
                    "server_us_per_query": [{"ours": o["server_us_per_query"], "docker": d["server_us_per_query"]}
                                            for o, d in pairs]}
    return out


# -- Docker's side ---------------------------------------------------------------------------
class DockerDNS:
    """A private dockerd in network namespace `ns` with a swarm, an attachable overlay network
    and a service `web`; `start` returns the Side whose client runs in one of its task
    containers, `stop` takes all of it down and reports what differs on the machine."""

    NETWORK = "dnsbench"
    SERVICE = "web"
    REPLICAS = 2
    ENDPOINT_MODE = "vip"       # answered like ours; dnsrr would answer every task address

    def __init__(self, ns: str):
        from bench import docker_anchor

        self.da = docker_anchor
        self.ns = ns
        self.args = types.SimpleNamespace(tmp_parent="/tmp", private_containerd=False, timeout=120.0,
                                          poll_interval=0.05, keep_tmp=False, dockerd=None, docker=None)
        self.anchor = None
        self.ns_made = False
        self.before: dict | None = None
        self.network_id: str | None = None
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

    def start(self) -> Side:
        da = self.da
        t0 = time.monotonic()
        self.before = da.snapshot()
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.ns_made = True
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        a = self.anchor = da.Anchor(self.args, *da.find_binaries(self.args))
        a.launcher = ["nsenter", f"--net=/run/netns/{self.ns}"]
        tar = os.path.join(a.tmp, "rootfs.tar")
        da.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), tar], timeout=300)
        ver = a.start()
        dockerd_pid = a.dockerd.pid
        if da.read_text(f"/proc/{dockerd_pid}/comm") != "dockerd":    # nsenter must have exec-ed it
            raise RuntimeError(f"pid {dockerd_pid} is {da.cmdline(dockerd_pid)[:80]!r}, not dockerd")
        image = a.import_image(tar)
        self.network_id = a.docker("network", "create", "--driver", "overlay", "--attachable",
                                   self.NETWORK).stdout.strip()
        a.services.append(self.SERVICE)
        a.docker("service", "create", "--detach", "--no-resolve-image", "--name", self.SERVICE,
                 "--replicas", str(self.REPLICAS), "--endpoint-mode", self.ENDPOINT_MODE,
                 "--network", self.NETWORK, "--stop-grace-period", "0s", image, "sleep", "100000")
        deadline = time.monotonic() + self.args.timeout
        while a.running(self.SERVICE) < self.REPLICAS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.SERVICE}: fewer than {self.REPLICAS} tasks running after "
                                   f"{self.args.timeout:.0f} s; failed: {a.failed_tasks(self.SERVICE)[:3]}")
            time.sleep(self.args.poll_interval)
        container = next(c for c in a.engine.containers(self.SERVICE) if c.get("State") == "running")
        task_pid = a.engine.request("GET", f"/containers/{container['Id']}/json")["State"]["Pid"]
        self.report.update({
            "docker_version": ver.get("Version"),
            "containerd_version": next((c.get("Version") for c in ver.get("Components", [])
                                        if c.get("Name") == "containerd"), None),
            "image": image,
            "service": {"name": self.SERVICE, "replicas": self.REPLICAS, "endpoint_mode": self.ENDPOINT_MODE,
                        "network": "overlay, attachable",
                        "why_vip": "ours is VIP too; without IPVS the VIP carries no traffic here, but "
                                   "DNS answers it (one A record) as on any kernel"},
            "client_in": f"task container {container['Id'][:12]} (pid {task_pid}), nsenter --net",
            "dockerd": f"pid {dockerd_pid}, in network namespace {self.ns} (lo only)",
            "setup_s": round(time.monotonic() - t0, 2)})
        return Side("docker", ("nsenter", f"--net=/proc/{task_pid}/ns/net"),
                    lambda: proc_cpu_seconds(dockerd_pid))

    def failed(self, e: BaseException) -> None:
        self.report = {"available": False, "reason": f"setup failed: {type(e).__name__}: {e}"}
        tail = self.anchor.dockerd_log_tail(8) if self.anchor else ""
        if tail:
            self.report["dockerd_log_tail"] = tail

    def stop(self) -> dict:
        """Tear everything down; return the report, with "machine": what differs from before."""
        da, a = self.da, self.anchor
        notes: list[str] = []
        if a is not None:
            if a.dockerd is not None and a.dockerd.poll() is None:
                try:
                    a.remove_service(self.SERVICE, timeout=60)
                    a.docker("network", "rm", self.NETWORK, timeout=60, check=False)
                except Exception as e:  # noqa: BLE001 - the anchor's cleanup below retries
                    notes.append(f"cleanup: {e}")
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
        self.remove_lb_files(notes)
        diff = da.diff_snapshots(self.before, da.snapshot())
        self.report["machine"] = {"unchanged": not diff, **diff}
        if diff:
            self.report["machine"]["caveat"] = ("a before/after comparison of the whole machine: other "
                                                "programs running meanwhile show up here too")
        if notes:
            self.report["notes"] = notes
        return self.report

    def remove_lb_files(self, notes: list[str]) -> None:
        """dockerd writes the hosts and resolv.conf of an overlay network's load-balancer sandbox
        under /var/lib/docker/network/files whatever --data-root says, and leaves them."""
        top = "/var/lib/docker"
        files = os.path.join(top, "network", "files")
        lb = os.path.join(files, "lb_" + self.network_id) if self.network_id else None
        if lb and os.path.isdir(lb) and not os.path.islink(lb):
            shutil.rmtree(lb, ignore_errors=True)
            notes.append(f"removed {lb} (dockerd's, outside its data-root)")
        if top in self.before["paths"]:
            return
        for path in (files, os.path.dirname(files), top):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                notes.append(f"{path} was created during the run and is not empty; left in place")
                return


def interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--docker", action="store_true",
                    help="also measure Docker 20.10's embedded DNS in the same run, and quote ratios")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--outstanding", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client(args.outstanding, args.seconds)))
        return
    if args.probe:
        print(json.dumps(probe()))
        return
    import trio

    load_before = os.getloadavg()[0]
    ns = f"swarm-dnsbench-{uuid.uuid4().hex[:8]}"
    docker = DockerDNS(ns + "-docker") if args.docker else None
    if docker is not None:          # SIGTERM ends the run as Ctrl-C does, so the teardown runs
        signal.signal(signal.SIGTERM, interrupt)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    finished = False
    try:
        side = None
        if docker is not None:
            reason = docker.unavailable()
            if reason:
                docker.report = {"available": False, "reason": reason}
            else:
                try:
                    side = docker.start()
                except Exception as e:  # noqa: BLE001 - report it; ours is still measured
                    docker.failed(e)
        phases = trio.run(run, ns, args.seconds, args.runs, side)
        finished = True
    finally:
        if docker is not None:
            # A second Ctrl-C / SIGTERM must not cut the teardown short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            docker.stop()
            if not finished:        # no JSON on stdout then; what the teardown found still counts
                print(json.dumps({"docker": docker.report}, indent=2), file=sys.stderr)
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    out = {"seconds_per_phase": args.seconds, "runs": args.runs, "cpus": os.cpu_count(),
           "load_average_1min": [load_before, os.getloadavg()[0]],
           **phases["ours"], "docker_20_10": DOCKER_ANCHOR}
    if docker is not None:
        if side is not None:
            docker.report.update({"order": ["ours, docker" if r % 2 == 0 else "docker, ours"
                                            for r in range(args.runs)],
                                  "answers": phases["answers"], **phases["docker"]})
            out["vs_docker"] = versus(phases["ours"], phases["docker"])
        out["docker"] = docker.report
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Overlay network datapath: throughput and latency next to the direct underlay path, in a 3-host lab.

    .venv/bin/python bench/network_bench.py [--rounds 7] [--seconds 3] [--round-trips 2000]   (as root)

Creates a lab of 3 hosts with a unique name (`swarm lab up`; each host is a
network namespace on an underlay bridge), imports the demo image
(scripts/build-demo-image.sh), creates an overlay network and a service of 3
replicas, one per host, published on port PUBLISHED (-> TARGET). The tasks
run busybox `nc -ll -p 5002 -e cat` (an echo server, checked once from h1's
task to h2's task address). The measuring server is
this file run as a Python process inside each task's network namespace
(`ip netns exec`), listening on TARGET, so the figures are those of the
datapath, not of busybox. The client is this file run in another namespace
of the lab. Four paths:

- direct:  h1's host namespace -> a server in h2's host namespace, over the
           underlay (the anchor);
- vxlan:   the task namespace on h1 -> the task address on h2 (overlay, VXLAN);
- vip:     the task namespace on h1 -> the service VIP (nftables DNAT in the
           task namespace, then VXLAN). Load balanced: throughput uses a
           single connection that landed on h2's task (connections that land
           elsewhere are closed and retried), latency is measured over
           --conns connections held open at once, whichever tasks they land
           on (the per-task split is reported; the ratio uses the
           connections to the tasks on h2 and h3, across VXLAN);
- ingress: h1's host namespace -> h3's underlay address on the published
           port (routing mesh: DNAT in h3's host namespace, DNAT + SNAT in
           h3's ingress sandbox, VXLAN on the ingress network). Throughput
           uses a connection that landed on h2's task (h1 -> h3 -> h2),
           latency --conns connections as for vip (the ratio uses those
           to the tasks on h1 and h2, across VXLAN from h3).

Per path: throughput of one TCP stream for --seconds with 64 KiB writes
(bytes the server received / time from the first write to the server's
count after the sender's shutdown), request/response latency of 64-byte
messages (TCP_NODELAY, --round-trips after 200 warm-up; p50/p99/mean in
microseconds), the 1-byte ping-pong RTT, and the time connect() takes (SYN
to SYN-ACK; on the VIP and ingress paths the first packet of a connection
also creates the conntrack entry and picks the backend). Every round runs
the four streams back to back, then the four latency measurements (the
order of the paths rotates from round to round); each figure is the median
over --rounds rounds. Prints one JSON document {"direct", "vxlan", "vip",
"ingress", "ratios", "setup"}; ratios are path / direct. Throughput ratios
are the median of the per-round ratios (a shared machine's load drifts
between rounds more than within one), latency ratios the ratio of the
medians; throughput < 1 and latency > 1 mean slower than direct.

With iperf3 installed (Debian package iperf3), each round also runs
`iperf3 -c ADDR -t SECONDS -l 64K` (one stream) on the direct and vxlan
paths, as a check of the Python tool against the one of NOTES-datapath.md;
not on vip and ingress, where iperf3's separate control and data
connections can be balanced to different tasks.

Traffic stays between addresses in namespaces the lab created; nothing in
the root namespace is changed; the servers are stopped and `swarm lab down`
runs on the way out, also on failure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
HERE = os.path.abspath(__file__)
TARGET = 5001       # the measuring server's port (in every namespace that runs one)
PUBLISHED = 15001   # the service's published port (ingress)
ECHO = 5002         # the tasks' own busybox echo server
CHUNK = 64 * 1024
IDENT = 16          # every connection starts with the server's 16-byte name
IPERF3_PORT = 5201

# NOTES-datapath.md: iperf3, single stream 5 s, medians of six runs, same machine kind.
ANCHOR_IPERF3 = {"direct_gbit_s": 47, "vxlan_gbit_s": 38, "vip_gbit_s": 41, "ingress_gbit_s": 35,
                 "vxlan_rtt_ms": "0.02-0.06"}


# -- the server, run inside a lab namespace ---------------------------------------------------
def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("connection closed")
        buf += part
    return bytes(buf)


def serve_conn(conn: socket.socket, ident: bytes) -> None:
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(ident)
        mode = conn.recv(1)
        if mode == b"T":                        # sink: count until EOF, answer the count
            buf = memoryview(bytearray(1 << 20))
            total = 0
            n = conn.recv_into(buf)
            first = time.perf_counter()
            while n:
                total += n
                n = conn.recv_into(buf)
            elapsed = time.perf_counter() - first
            conn.sendall(total.to_bytes(8, "big") + int(elapsed * 1e9).to_bytes(8, "big"))
        elif mode == b"E":                      # echo fixed-size messages until EOF
            size = int.from_bytes(recv_exact(conn, 4), "big")
            buf = bytearray(size)
            view = memoryview(buf)
            while True:
                got = 0
                while got < size:
                    n = conn.recv_into(view[got:])
                    if not n:
                        return
                    got += n
                conn.sendall(buf)
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


def serve(port: int, name: str) -> None:
    ident = name.encode()[:IDENT].ljust(IDENT)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", port))
    lsock.listen(256)
    print("ready", flush=True)
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve_conn, args=(conn, ident), daemon=True).start()


# -- the client, run inside a lab namespace ---------------------------------------------------
def connect(addr: str, port: int) -> tuple[socket.socket, str, float]:
    started = time.perf_counter()
    sock = socket.create_connection((addr, port), timeout=10)
    took = time.perf_counter() - started    # the handshake only: connect() returns on the SYN-ACK
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ident = recv_exact(sock, IDENT).decode().strip()
    return sock, ident, took


def connect_to(addr: str, port: int, want: str | None, tries: int = 60) -> tuple[socket.socket, str, int]:
    """A connection whose server is `want` (any if None); others are closed and retried."""
    for attempt in range(1, tries + 1):
        sock, ident, _ = connect(addr, port)
        if want is None or ident == want:
            return sock, ident, attempt
        sock.close()
    raise RuntimeError(f"{tries} connections to {addr}:{port}, none to {want}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary_us(seconds: list[float]) -> dict:
    us = [s * 1e6 for s in seconds]
    return {"p50_us": round(pct(us, 0.50), 1), "p99_us": round(pct(us, 0.99), 1),
            "mean_us": round(statistics.fmean(us), 1), "n": len(us)}


def throughput(addr: str, port: int, want: str | None, seconds: float) -> dict:
    sock, ident, attempts = connect_to(addr, port, want)
    sock.settimeout(seconds + 30)
    payload = memoryview(bytearray(CHUNK))
    clock, send = time.perf_counter, sock.sendall
    sock.sendall(b"T")
    started = clock()
    end = started + seconds
    while clock() < end:
        send(payload)
    sock.shutdown(socket.SHUT_WR)
    reply = recv_exact(sock, 16)
    elapsed = clock() - started
    sock.close()
    received = int.from_bytes(reply[:8], "big")
    server_s = int.from_bytes(reply[8:], "big") / 1e9
    return {"gbit_s": round(received * 8 / elapsed / 1e9, 3), "bytes": received, "seconds": round(elapsed, 3),
            "receiver_gbit_s": round(received * 8 / server_s / 1e9, 3) if server_s else None,
            "server": ident, "connect_attempts": attempts}


def start_echo(sock: socket.socket, size: int) -> None:
    sock.sendall(b"E" + size.to_bytes(4, "big"))


def round_trips(socks: list[socket.socket], size: int, count: int, warmup: int = 200) -> list[list[float]]:
    """`count` request/responses spread round-robin over `socks`; the times per socket."""
    msg = b"x" * size
    buf = bytearray(size)
    view = memoryview(buf)
    clock = time.perf_counter
    times: list[list[float]] = [[] for _ in socks]
    for i in range(warmup + count):
        k = i % len(socks)
        sock = socks[k]
        t0 = clock()
        sock.sendall(msg)
        got = 0
        while got < size:
            n = sock.recv_into(view[got:])
            if not n:
                raise ConnectionError("echo closed")
            got += n
        if i >= warmup:
            times[k].append(clock() - t0)
    return times


def latency(addr: str, port: int, want: str | None, count: int, conns: int) -> dict:
    out: dict = {}
    # one connection (to `want`): 64-byte request/response and 1-byte ping-pong
    sock, ident, _ = connect_to(addr, port, want)
    start_echo(sock, 64)
    out["rr64"] = summary_us(round_trips([sock], 64, count)[0]) | {"server": ident}
    sock.close()
    sock, ident, _ = connect_to(addr, port, want)
    start_echo(sock, 1)
    out["rtt1"] = summary_us(round_trips([sock], 1, count)[0]) | {"server": ident}
    sock.close()
    # many connections held open at once, wherever the load balancer sends them
    setup, socks, idents = [], [], []
    for _ in range(conns):
        sock, ident, took = connect(addr, port)
        start_echo(sock, 64)
        setup.append(took)
        socks.append(sock)
        idents.append(ident)
    per_sock = round_trips(socks, 64, count)
    for sock in socks:
        sock.close()
    by_server: dict[str, list[float]] = {}
    for ident, times in zip(idents, per_sock):
        by_server.setdefault(ident, []).extend(times)
    out["connect"] = summary_us(setup)
    out["rr64_many"] = summary_us([t for times in per_sock for t in times]) | {
        "conns": conns, "conns_per_server": {s: idents.count(s) for s in sorted(set(idents))},
        "p50_us_per_server": {s: round(pct([t * 1e6 for t in v], 0.5), 1) for s, v in sorted(by_server.items())}}
    return out


def client(args: argparse.Namespace) -> None:
    out = {}
    if args.what in ("throughput", "both"):
        out["throughput"] = throughput(args.addr, args.port, args.want, args.seconds)
    if args.what in ("latency", "both"):
        out |= latency(args.addr, args.port, args.want, args.round_trips, args.conns)
    print(json.dumps(out))


def echo_check(args: argparse.Namespace) -> None:
    sock = socket.create_connection((args.addr, args.port), timeout=5)
    sock.sendall(b"ping\n")
    print(json.dumps({"reply": recv_exact(sock, 5).decode()}))


# -- the driver, in the root namespace (it only runs commands) --------------------------------
ENV = dict(os.environ, PYTHONPATH=ROOT)


def swarm(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", "swarm", *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"swarm {' '.join(args)}: {proc.stderr}{proc.stdout}")
    return proc


def in_netns(netns: str, *argv: str, timeout: float = 120) -> str:
    proc = subprocess.run(["ip", "netns", "exec", netns, PY, *argv], capture_output=True, text=True,
                          env=ENV, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"in {netns}: {' '.join(argv)}: {proc.stderr}")
    return proc.stdout


RESOLVE = """
import dns.resolver, json, sys
r = dns.resolver.Resolver(configure=False); r.nameservers = ['127.0.0.11']; r.lifetime = 3
print(json.dumps({n: sorted(a.address for a in r.resolve(n, 'A')) for n in sys.argv[1:]}))
"""


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (RuntimeError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def addresses(netns: str) -> set[str]:
    proc = subprocess.run(["ip", "-n", netns, "-j", "-4", "addr", "show"], capture_output=True, text=True,
                          check=True)
    return {a["local"] for link in json.loads(proc.stdout) for a in link.get("addr_info", [])}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lab = ""
        self.servers: list[subprocess.Popen] = []
        self.hosts: dict[str, dict] = {}
        self.iperf3: str | None = None

    def lab_up(self) -> None:
        """`lab up` under a fresh name whose underlay subnet no other lab on this machine uses."""
        from swarm.lab import lab as labmod
        for _ in range(10):
            used = {entry["subnet"] for entry in labmod.labs()}
            name = "nb" + uuid.uuid4().hex[:8]
            if f"10.{labmod.subnet_octet(name)}.0.0/24" in used:
                continue
            self.lab = name
            proc = swarm("lab", "up", "--nodes", "3", "--name", name, check=False, timeout=300)
            if proc.returncode == 0:
                return
            if "already uses" not in proc.stderr:   # another lab took the subnet meanwhile: try again
                raise RuntimeError(f"swarm lab up --name {name}: {proc.stderr}{proc.stdout}")
            self.lab = ""
        raise RuntimeError("no free lab subnet")

    def on(self, host: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return swarm("lab", "exec", "--name", self.lab, host, "--", "swarm", *args, **kw)

    def start_server(self, netns: str, name: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, PY, HERE, "serve", "--port", str(TARGET),
                                 "--name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.servers.append(proc)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"server in {netns}: {proc.stderr.read()}")

    def measure(self, what: str, netns: str, addr: str, port: int, want: str | None) -> dict:
        a = self.args
        out = in_netns(netns, HERE, "client", "--what", what, "--addr", addr, "--port", str(port),
                       "--want", want or "", "--seconds", str(a.seconds), "--round-trips", str(a.round_trips),
                       "--conns", str(a.conns))
        return json.loads(out)

    def setup(self, work: str) -> dict:
        started = time.monotonic()
        tar = os.path.join(work, "demo.tar")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-demo-image.sh"), tar], check=True,
                       capture_output=True)
        self.lab_up()
        labs = json.loads(swarm("lab", "ls", "--format", "json").stdout)
        self.hosts = {h["name"]: h for entry in labs if entry["name"] == self.lab for h in entry["hosts"]}
        for host in ("h1", "h2", "h3"):
            self.on(host, "image", "import", tar, "demo:1")
        time.sleep(1.5)  # heartbeats carry each node's image list to the manager
        self.on("h1", "network", "create", "benchnet")
        self.on("h1", "service", "create", "--name", "sink", "--replicas", "3", "--network", "benchnet",
                "--publish", f"{PUBLISHED}:{TARGET}", "demo:1", "nc", "-ll", "-p", str(ECHO), "-e", "cat",
                timeout=180)
        nodes = {n["hostname"]: n["id"] for n in json.loads(self.on("h1", "node", "ls", "--format", "json").stdout)}
        from swarm.agent.networking import prefix_for
        rows = wait_for(lambda: [r for r in json.loads(self.on("h1", "service", "ps", "sink", "--format",
                                                                 "json").stdout)
                                 if r["desired_state"] == "running" and r["state"] == "running"],
                        60, "running tasks")
        if sorted(r["node"] for r in rows) != ["h1", "h2", "h3"]:
            raise RuntimeError(f"expected one task per host, got {[r['node'] for r in rows]}")
        self.task_ns = {r["node"]: f"{prefix_for(nodes[r['node']])}-t-{r['id'][:10]}" for r in rows}
        names = wait_for(lambda: (lambda n: n if len(n["tasks.sink"]) == 3 and len(n["sink"]) == 1 else None)(
            json.loads(in_netns(self.task_ns["h1"], "-c", RESOLVE, "sink", "tasks.sink"))), 30, "DNS")
        self.vip = names["sink"][0]
        self.task_ip = {}
        for host, ns in self.task_ns.items():
            mine = addresses(ns) & set(names["tasks.sink"])
            if len(mine) != 1:
                raise RuntimeError(f"task on {host}: addresses {addresses(ns)} vs DNS {names['tasks.sink']}")
            self.task_ip[host] = mine.pop()
        self.host_ip = {h: self.hosts[h]["addr"].split(":")[0] for h in ("h1", "h2", "h3")}
        # measuring servers: one per task namespace (named after the host) and one in h2's host namespace
        for host, ns in self.task_ns.items():
            self.start_server(ns, host)
        self.start_server(self.hosts["h2"]["netns"], "h2-host")
        self.iperf3 = shutil.which("iperf3")
        if self.iperf3:
            for ns in (self.hosts["h2"]["netns"], self.task_ns["h2"]):
                self.servers.append(subprocess.Popen(["ip", "netns", "exec", ns, self.iperf3, "-s", "-p",
                                                      str(IPERF3_PORT)], stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL))
            time.sleep(0.5)
        echo = json.loads(in_netns(self.task_ns["h1"], HERE, "echo-check", "--addr", self.task_ip["h2"],
                                   "--port", str(ECHO)))
        return {"lab": self.lab, "seconds": round(time.monotonic() - started, 1), "vip": self.vip,
                "task_ip": self.task_ip, "host_ip": self.host_ip, "task_netns": self.task_ns,
                "busybox_echo_h1_task_to_h2_task": echo["reply"] == "ping\n"}

    def iperf3_gbit_s(self, netns: str, addr: str) -> float:
        for _ in range(5):   # the server may still be busy with the last test ("server is busy")
            proc = subprocess.run(["ip", "netns", "exec", netns, self.iperf3, "-c", addr, "-p", str(IPERF3_PORT),
                                   "-t", f"{self.args.seconds:g}", "-l", "64K", "-J"], capture_output=True, text=True,
                                  timeout=self.args.seconds + 60)
            if proc.returncode == 0:
                return round(json.loads(proc.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
            time.sleep(0.5)
        raise RuntimeError(f"iperf3 to {addr} in {netns}: {proc.stdout[-500:]}{proc.stderr[-500:]}")

    def paths(self) -> dict[str, tuple]:
        h1 = self.hosts["h1"]["netns"]
        return {
            "direct": (h1, self.host_ip["h2"], TARGET, "h2-host"),
            "vxlan": (self.task_ns["h1"], self.task_ip["h2"], TARGET, "h2"),
            "vip": (self.task_ns["h1"], self.vip, TARGET, "h2"),
            "ingress": (h1, self.host_ip["h3"], PUBLISHED, "h2"),
        }

    def run(self) -> dict:
        work = tempfile.mkdtemp(prefix="swarm-netbench.")
        try:
            setup = self.setup(work)
            setup["loadavg_before"] = os.getloadavg()
            rounds: dict[str, list[dict]] = {p: [] for p in self.paths()}
            paths = list(self.paths().items())
            for k in range(self.args.rounds):
                # the four streams back to back (the order rotates every round), then the latencies
                order = paths[k % len(paths):] + paths[:k % len(paths)]
                this = {path: {"loadavg_1min": os.getloadavg()[0]} for path, _ in order}
                for path, spec in order:
                    this[path] |= self.measure("throughput", *spec)
                for path, spec in order:
                    if self.iperf3 and path in ("direct", "vxlan"):
                        this[path]["iperf3_gbit_s"] = self.iperf3_gbit_s(spec[0], spec[1])
                for path, spec in order:
                    this[path] |= self.measure("latency", *spec)
                for path, figures in this.items():
                    rounds[path].append(figures)
            return report(rounds, setup, self.args)
        finally:
            for proc in self.servers:
                proc.kill()
                proc.wait()
            if self.lab:
                swarm("lab", "down", "--name", self.lab, check=False, timeout=300)
            shutil.rmtree(work, ignore_errors=True)


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3 if max(values) < 100 else 1)


def remote_p50(run: dict, local: str) -> float:
    """The many-connection p50 over the connections to tasks across VXLAN: the per-task p50s weighted
    by connections, leaving out the task on host `local` (the client's for vip, h3's sandbox's for ingress)."""
    per = run["rr64_many"]["p50_us_per_server"]
    count = run["rr64_many"]["conns_per_server"]
    remote = [s for s in per if s != local]
    return sum(per[s] * count[s] for s in remote) / sum(count[s] for s in remote)


def report(rounds: dict[str, list[dict]], setup: dict, args: argparse.Namespace) -> dict:
    out: dict = {}
    for path, runs in rounds.items():
        fig = {
            "gbit_s": med([r["throughput"]["gbit_s"] for r in runs]),
            "gbit_s_runs": [r["throughput"]["gbit_s"] for r in runs],
            "throughput_server": sorted({r["throughput"]["server"] for r in runs}),
            "rr64_p50_us": med([r["rr64"]["p50_us"] for r in runs]),
            "rr64_p99_us": med([r["rr64"]["p99_us"] for r in runs]),
            "rtt1_p50_us": med([r["rtt1"]["p50_us"] for r in runs]),
            "rtt1_p99_us": med([r["rtt1"]["p99_us"] for r in runs]),
            "connect_p50_us": med([r["connect"]["p50_us"] for r in runs]),
            "connect_p99_us": med([r["connect"]["p99_us"] for r in runs]),
            "many_conns_rr64_p50_us": med([r["rr64_many"]["p50_us"] for r in runs]),
            "many_conns_rr64_p99_us": med([r["rr64_many"]["p99_us"] for r in runs]),
        }
        if "iperf3_gbit_s" in runs[0]:
            fig["iperf3_gbit_s"] = med([r["iperf3_gbit_s"] for r in runs])
            fig["iperf3_gbit_s_runs"] = [r["iperf3_gbit_s"] for r in runs]
        if path in ("vip", "ingress"):
            spread: dict[str, int] = {}
            for r in runs:
                for s, n in r["rr64_many"]["conns_per_server"].items():
                    spread[s] = spread.get(s, 0) + n
            fig["many_conns_per_server"] = spread
            fig["many_conns_remote_rr64_p50_us"] = med([remote_p50(r, "h1" if path == "vip" else "h3")
                                                         for r in runs])
        fig["raw"] = runs
        out[path] = fig
    d = out["direct"]
    ratios: dict = {}
    for path in ("vxlan", "vip", "ingress"):
        f = out[path]
        lat = f["many_conns_remote_rr64_p50_us"] if path in ("vip", "ingress") else f["rr64_p50_us"]
        ratios[path] = {
            "throughput": round(statistics.median(a["throughput"]["gbit_s"] / b["throughput"]["gbit_s"]
                                                  for a, b in zip(f["raw"], d["raw"])), 3),
            "rr64_p50": round(f["rr64_p50_us"] / d["rr64_p50_us"], 2),
            "rr64_p99": round(f["rr64_p99_us"] / d["rr64_p99_us"], 2),
            "rtt1_p50": round(f["rtt1_p50_us"] / d["rtt1_p50_us"], 2),
            "connect_p50": round(f["connect_p50_us"] / d["connect_p50_us"], 2),
        }
        if path in ("vip", "ingress"):
            ratios[path]["many_conns_remote_rr64_p50"] = round(lat / d["many_conns_rr64_p50_us"], 2)
    def per_round(a: str, b: str, key: str = "gbit_s") -> float:
        pairs = zip(out[a]["raw"], out[b]["raw"])
        get = (lambda r: r["throughput"]["gbit_s"]) if key == "gbit_s" else (lambda r: r[key])
        return round(statistics.median(get(x) / get(y) for x, y in pairs), 3)

    ratios["vip_over_vxlan_throughput"] = per_round("vip", "vxlan")
    ratios["ingress_over_vxlan_throughput"] = per_round("ingress", "vxlan")
    if "iperf3_gbit_s" in d:
        ratios["vxlan_iperf3_throughput"] = per_round("vxlan", "direct", "iperf3_gbit_s")
    out["ratios"] = ratios
    out["setup"] = setup | {"rounds": args.rounds, "seconds_per_stream": args.seconds, "write_bytes": CHUNK,
                            "round_trips": args.round_trips, "conns": args.conns, "cpus": os.cpu_count(),
                            "loadavg_after": os.getloadavg(), "tool": "this file (Python sockets), both ends",
                            "iperf3": subprocess.run(["iperf3", "--version"], capture_output=True,
                                                     text=True).stdout.split("\n")[0] if shutil.which("iperf3")
                            else None,
                            "anchor_iperf3_notes": ANCHOR_IPERF3}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("client")
    c.add_argument("--addr", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--want", default="")
    c.add_argument("--what", choices=("throughput", "latency", "both"), default="both")
    e = sub.add_parser("echo-check")
    e.add_argument("--addr", required=True)
    e.add_argument("--port", type=int, required=True)
    for p in (parser, c):
        p.add_argument("--seconds", type=float, default=3.0, help="length of each throughput stream")
        p.add_argument("--round-trips", type=int, default=2000, help="request/responses per latency figure")
        p.add_argument("--conns", type=int, default=48, help="connections for the many-connection latency")
    parser.add_argument("--rounds", type=int, default=7, help="measure every path this many times")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.port, args.name)
    elif args.cmd == "client":
        args.want = args.want or None
        client(args)
    elif args.cmd == "echo-check":
        echo_check(args)
    else:
        if os.geteuid() != 0:
            sys.exit("network_bench.py: run as root (it creates network namespaces)")
        sys.path.insert(0, ROOT)
        print(json.dumps(Bench(args).run(), indent=1))


if __name__ == "__main__":
    main()

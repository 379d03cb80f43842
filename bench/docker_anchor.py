"""Docker swarm as the comparison anchor: time `docker service create` to N running tasks.

    python3 bench/docker_anchor.py --replicas 10 50 --runs 3 --rootfs-tar PATH [--install]

PATH is a busybox root filesystem as a tar; build one with
`bash scripts/build-demo-image.sh /tmp/demo.tar`. Without --rootfs-tar the script runs
that script itself into its own temporary folder.

What it does (as root, stdlib only, nothing leaves the machine):

* If `dockerd` is not installed it prints {"available": false, "reason": ...} and exits 0.
  With --install it first runs `apt-get install -y -q docker.io` (Debian's 20.10), with
  output kept quiet unless it fails; a missing package list gets one `apt-get update`.
* It starts its OWN dockerd as a child: --data-root/--exec-root/--pidfile/-H unix://...
  all under a new temporary folder, --config-file of its own (so /etc/docker/daemon.json
  is not read and the identity key goes to the temporary folder, not /etc/docker),
  --bridge=none --iptables=false --ip-forward=false (no docker0, no iptables rules, no
  sysctl change), --cgroup-parent=/docker-anchor-<random> (so it leaves no /docker
  cgroups), and DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 in its environment. dockerd starts
  its own containerd; if a system containerd is already listening on
  /run/containerd/containerd.sock (which dockerd would otherwise share), the script starts
  a private containerd of its own and hands its socket to dockerd with --containerd.
* `docker swarm init --advertise-addr 127.0.0.1:PORT --listen-addr 127.0.0.1:PORT`
  (a free loopback port, so nothing listens on 0.0.0.0:2377), then `docker import` the
  tar and uses the image ID it prints (never a tag: with a tag the swarm agent asks a
  registry for every task).
* For each N of --replicas, --runs times: run
  `docker service create --detach --no-resolve-image --replicas N --stop-grace-period 0s
  --name bench<N>_<run> <image id> sleep 1000`, then every 50 ms ask the engine API
  (the same data as `docker service ps`) for the service's tasks until N of them are in
  state running; the figure is the time from just before the create command to the poll
  that saw N running. Then `docker service rm` and wait until its containers are gone.
* One JSON document on stdout:
  {"available": true, "docker_version": ..., "results": {"10": {"runs": [...], "median": ...},
  ...}, ...} plus, per N, create_cli_s (time of the create command alone) and rm_s (service
  rm to containers gone), and "machine": what differs from before the run (network links,
  mounts, cgroups, paths such as /etc/docker or /run/containerd, ip_forward). Progress goes
  to stderr. Exit status 1 if something failed (the JSON then carries "error").
* Cleanup always runs (finally, also on SIGINT/SIGTERM): remove services, `docker swarm
  leave --force`, SIGTERM dockerd by PID (SIGKILL after 15 s), stop the containerd it
  started (PID from exec-root/containerd/containerd.pid) and any other process still
  running from the temporary folder (shims) or in its cgroup parent, unmount everything
  under the temporary folder (umount, then umount -l), remove it, remove the empty cgroup
  parent folders, delete dockerd's network namespace, and remove /run/docker (dockerd makes
  /run/docker/plugins whatever --exec-root says), /run/containerd (shim sockets) and
  /opt/containerd (containerd's opt plugin) when the run created them and they hold only
  empty folders. The "machine" part of the JSON then says what still differs, including
  any changed /proc/sys/net value.

dockerd runs inside a network namespace of its own holding only `lo` (`nsenter --net`):
`swarm init` makes docker_gwbridge with a route and a veth for the ingress sandbox whatever
the flags say, and those must not land in the machine's own namespace. With --bridge=none a
swarm task without networks gets loopback only: Docker's figure here does not include a
veth/bridge per task.

Options: --keep-tmp leaves the temporary folder (logs) after unmounting, --timeout bounds
each wait (default 300 s), --poll-interval (default 0.05 s), --docker/--dockerd pick binaries
(the CLI defaults to the one beside dockerd or /usr/bin/docker, not a newer `docker` earlier
in PATH), --private-containerd starts our own containerd even when no system one runs.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATCHED_PATHS = ["/etc/docker", "/etc/docker/key.json", "/var/lib/docker", "/run/docker", "/run/docker.sock",
                 "/var/run/docker.sock", "/run/containerd", "/var/lib/containerd", "/opt/containerd",
                 os.path.expanduser("~/.docker"), "/run/netns"]
# Folders dockerd/containerd create whatever their roots say; removed after the run when they
# did not exist before and hold nothing but empty folders.
EMPTY_TREES = ["/run/docker", "/run/containerd", "/opt/containerd"]


def log(msg: str) -> None:
    print(f"[docker_anchor {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- engine API

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Engine:
    """Tiny Docker engine API client over the unix socket (one request per connection)."""

    def __init__(self, sock_path: str):
        self.sock_path = sock_path
        self.prefix = ""

    def request(self, method: str, path: str, query: dict | None = None, timeout: float = 30.0):
        url = self.prefix + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        conn = UnixHTTPConnection(self.sock_path, timeout)
        try:
            conn.request(method, url)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {body[:300]!r}")
        return json.loads(body) if body.strip() else None

    def negotiate(self) -> dict:
        ver = self.request("GET", "/version", timeout=5)
        self.prefix = "/v" + ver["ApiVersion"]
        return ver

    def tasks(self, service: str) -> list:
        return self.request("GET", "/tasks", {"filters": json.dumps({"service": [service]})})

    def containers(self, service: str) -> list:
        flt = {"label": [f"com.docker.swarm.service.name={service}"]}
        return self.request("GET", "/containers/json", {"all": "1", "filters": json.dumps(flt)})


# --------------------------------------------------------------------------- machine state

def proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def net_links() -> list[str]:
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []


def mountpoints() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mp))
    return out


def cgroup_roots() -> list[str]:
    roots = []
    base = "/sys/fs/cgroup"
    mps = set(mountpoints())
    if base in mps and os.path.exists(os.path.join(base, "cgroup.controllers")):
        return [base]  # cgroup v2 only
    try:
        for name in sorted(os.listdir(base)):
            p = os.path.join(base, name)
            if p in mps and os.path.isdir(p) and not os.path.islink(p):
                roots.append(p)
    except OSError:
        pass
    return roots


def cgroup_top() -> list[str]:
    out = []
    for root in cgroup_roots():
        try:
            out += [os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
        except OSError:
            pass
    return sorted(out)


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def net_sysctls() -> dict:
    """/proc/sys/net of this namespace, without per-interface entries other than all/default."""
    out = {}
    for dirpath, dirs, files in os.walk("/proc/sys/net"):
        parts = dirpath.split("/")
        if len(parts) >= 7 and parts[-2] in ("conf", "neigh") and parts[-1] not in ("all", "default"):
            dirs[:] = []
            continue
        for f in files:
            if f in ("nf_conntrack_count",):
                continue
            v = read_text(os.path.join(dirpath, f))
            if v is not None:
                out[os.path.join(dirpath, f)] = v
    return out


def snapshot() -> dict:
    return {
        "sysctl": net_sysctls(),
        "links": net_links(),
        "mounts": mountpoints(),
        "cgroups": cgroup_top(),
        "paths": [p for p in WATCHED_PATHS if os.path.lexists(p)],
        "ip_forward": read_text("/proc/sys/net/ipv4/ip_forward"),
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
    }


def diff_snapshots(before: dict, after: dict) -> dict:
    """What appeared (or, for links and paths, also vanished) between the two snapshots.
    Mounts, cgroups and namespaces that vanished are left out: this run only ever removes
    its own, and other programs on the machine come and go meanwhile."""
    d = {}
    for key in ("links", "mounts", "cgroups", "paths", "netns"):
        added = sorted(set(after[key]) - set(before[key]))
        removed = sorted(set(before[key]) - set(after[key]))
        if added:
            d[key + "_added"] = added
        if removed and key in ("links", "paths"):
            d[key + "_removed"] = removed
    if before["ip_forward"] != after["ip_forward"]:
        d["ip_forward"] = [before["ip_forward"], after["ip_forward"]]
    changed = {k: [v, after["sysctl"].get(k)] for k, v in before["sysctl"].items() if after["sysctl"].get(k) != v}
    changed.update({k: [None, v] for k, v in after["sysctl"].items() if k not in before["sysctl"]})
    if changed:
        d["net_sysctls_changed"] = changed
    return d


def ip_link_text() -> str:
    try:
        return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------------- helpers

def run(cmd: list[str], env: dict | None = None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-800:]}")
    return p


def find_binaries(args) -> tuple[str | None, str | None]:
    dockerd = args.dockerd or shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), None)
    if args.docker:
        return dockerd, args.docker
    # Prefer the CLI shipped next to this dockerd / by Debian's docker.io over any other
    # `docker` earlier in PATH (e.g. a newer static CLI in /usr/local/bin).
    cands = []
    if dockerd:
        cands.append(os.path.join(os.path.dirname(os.path.realpath(dockerd)), "docker"))
    cands += ["/usr/bin/docker", shutil.which("docker") or ""]
    cli = next((c for c in cands if c and os.access(c, os.X_OK)), None)
    return dockerd, cli


def apt_install() -> str | None:
    """Install docker.io quietly; return None on success or an error text."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends", "docker.io"]
    # Keep the package's maintainer scripts from starting a system dockerd/containerd.
    policy = "/usr/sbin/policy-rc.d"
    made_policy = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# temporary, bench/docker_anchor.py --install\nexit 101\n")
        os.chmod(policy, 0o755)
        made_policy = True
    try:
        log("apt-get install -y docker.io")
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            log("install failed; apt-get update once and retry")
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            return f"apt-get install docker.io exited {p.returncode}: {(p.stderr or p.stdout).strip()[-800:]}"
        return None
    finally:
        if made_policy:
            os.unlink(policy)


def free_loopback_port() -> int:
    for _ in range(50):
        port = random.randint(20000, 40000)
        ok = True
        for typ in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, typ)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise RuntimeError("no free loopback port")


def summarize(values: list[float]) -> dict:
    if not values:
        return {"runs": [], "median": None}
    return {"runs": [round(v, 3) for v in values], "median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}


# --------------------------------------------------------------------------- the anchor

class Anchor:
    def __init__(self, args, dockerd: str, cli: str):
        self.args = args
        self.dockerd_bin = dockerd
        self.cli = cli
        self.tmp = tempfile.mkdtemp(prefix="docker-anchor-", dir=args.tmp_parent)
        os.chmod(self.tmp, 0o711)
        self.sock = os.path.join(self.tmp, "docker.sock")
        self.exec_root = os.path.join(self.tmp, "exec")
        self.cgroup_parent = "/docker-anchor-" + os.path.basename(self.tmp).rsplit("-", 1)[-1].lower()
        self.cli_env = dict(os.environ, DOCKER_HOST="unix://" + self.sock,
                            DOCKER_CONFIG=os.path.join(self.tmp, "cli-config"), DOCKER_CLI_HINTS="false")
        for k in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            self.cli_env.pop(k, None)
        self.engine = Engine(self.sock)
        self.dockerd: subprocess.Popen | None = None
        self.containerd: subprocess.Popen | None = None
        self.containerd_pids: set[int] = set()
        # Put before dockerd's command line (e.g. nsenter --net=... to run it in a namespace of
        # the caller's); exec-ing wrappers only, so the Popen's PID stays dockerd's.
        self.launcher: list[str] = []
        self.swarm = False
        self.services: list[str] = []
        self.notes: list[str] = []

    def docker(self, *a: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return run([self.cli, *a], env=self.cli_env, timeout=timeout, check=check)

    # ---- start

    def start(self) -> dict:
        os.makedirs(os.path.join(self.tmp, "cli-config"))
        cfg = os.path.join(self.tmp, "daemon.json")
        with open(cfg, "w") as f:
            json.dump({"deprecated-key-path": os.path.join(self.tmp, "key.json")}, f)
        cmd = [*self.launcher, self.dockerd_bin, "--config-file", cfg,
               "--data-root", os.path.join(self.tmp, "data"), "--exec-root", self.exec_root,
               "--pidfile", os.path.join(self.tmp, "docker.pid"), "-H", "unix://" + self.sock,
               "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
               "--cgroup-parent", self.cgroup_parent, "--userland-proxy=false"]
        if self.args.private_containerd or os.path.exists("/run/containerd/containerd.sock"):
            cmd += ["--containerd", self.start_private_containerd()]
        env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
        for k in ("DOCKER_HOST", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(k, None)
        logf = open(os.path.join(self.tmp, "dockerd.log"), "wb")
        log("starting dockerd: " + " ".join(cmd))
        self.dockerd = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + 60
        while True:
            if self.dockerd.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.dockerd.returncode}: {self.dockerd_log_tail()}")
            self.note_containerd()
            try:
                ver = self.engine.negotiate()
                break
            except (OSError, RuntimeError, ValueError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dockerd not answering after 60 s: " + self.dockerd_log_tail())
            time.sleep(0.1)
        self.note_containerd()
        log(f"dockerd {ver.get('Version')} up (API {ver.get('ApiVersion')})")
        port = free_loopback_port()
        self.docker("swarm", "init", "--advertise-addr", f"127.0.0.1:{port}",
                    "--listen-addr", f"127.0.0.1:{port}")
        self.swarm = True
        log(f"swarm initialised on 127.0.0.1:{port}")
        return ver

    def start_private_containerd(self) -> str:
        root = os.path.join(self.tmp, "containerd")
        os.makedirs(root)
        addr = os.path.join(root, "containerd.sock")
        cfg = os.path.join(root, "config.toml")
        with open(cfg, "w") as f:
            f.write(f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{addr}"\n[ttrpc]\n  address = "{addr}.ttrpc"\n'
                    f'[debug]\n  address = "{root}/debug.sock"\n[metrics]\n  address = ""\n'
                    f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{root}/opt"\n')
        binary = shutil.which("containerd") or "/usr/bin/containerd"
        logf = open(os.path.join(root, "containerd.log"), "wb")
        log("starting a private containerd")
        self.containerd = subprocess.Popen([binary, "--config", cfg], stdout=logf, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.containerd_pids.add(self.containerd.pid)
        deadline = time.monotonic() + 30
        while not os.path.exists(addr):
            if self.containerd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("private containerd did not start")
            time.sleep(0.05)
        return addr

    def note_containerd(self) -> None:
        pid = read_text(os.path.join(self.exec_root, "containerd", "containerd.pid"))
        if pid and pid.isdigit():
            self.containerd_pids.add(int(pid))

    def dockerd_log_tail(self, n: int = 15) -> str:
        try:
            with open(os.path.join(self.tmp, "dockerd.log"), errors="replace") as f:
                return " | ".join(line.strip() for line in f.readlines()[-n:])
        except OSError:
            return ""

    def import_image(self, tar: str) -> str:
        t0 = time.monotonic()
        image = self.docker("import", tar, timeout=300).stdout.strip().splitlines()[-1].strip()
        if not image.startswith("sha256:"):
            raise RuntimeError(f"docker import printed {image!r}, not an image ID")
        log(f"imported {tar} as {image} in {time.monotonic() - t0:.2f} s")
        return image

    # ---- measure

    def running(self, service: str) -> int:
        return sum(1 for t in self.engine.tasks(service)
                   if t.get("Status", {}).get("State") == "running" and t.get("DesiredState") == "running")

    def failed_tasks(self, service: str) -> list[str]:
        return [f"{t['Status'].get('State')}: {t['Status'].get('Err') or t['Status'].get('Message')}"
                for t in self.engine.tasks(service)
                if t.get("Status", {}).get("State") in ("failed", "rejected")]

    def measure(self, image: str, n: int, run_no: int) -> tuple[float, float, float]:
        name = f"bench{n}_{run_no}"
        self.services.append(name)
        t0 = time.monotonic()
        self.docker("service", "create", "--detach", "--no-resolve-image", "--replicas", str(n),
                    "--stop-grace-period", "0s", "--name", name, image, "sleep", "1000")
        t_cli = time.monotonic() - t0
        deadline = t0 + self.args.timeout
        while True:
            if self.running(name) >= n:
                elapsed = time.monotonic() - t0
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: fewer than {n} tasks running after {self.args.timeout} s; "
                                   f"failed tasks: {self.failed_tasks(name)[:3]}")
            time.sleep(self.args.poll_interval)
        t1 = time.monotonic()
        self.remove_service(name)
        rm_s = time.monotonic() - t1
        log(f"{name}: {n} running after {elapsed:.3f} s (create command {t_cli:.3f} s); removed in {rm_s:.2f} s")
        return elapsed, t_cli, rm_s

    def remove_service(self, name: str, timeout: float | None = None) -> None:
        self.docker("service", "rm", name, check=False)
        deadline = time.monotonic() + (timeout or self.args.timeout)
        while self.engine.containers(name):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: containers still present {timeout or self.args.timeout} s after service rm")
            time.sleep(self.args.poll_interval)
        if name in self.services:
            self.services.remove(name)

    # ---- cleanup

    def cleanup(self) -> None:
        dockerd_up = self.dockerd is not None and self.dockerd.poll() is None
        if dockerd_up:
            try:
                for svc in self.engine.request("GET", "/services", timeout=10) or []:
                    name = svc["Spec"]["Name"]
                    try:
                        self.remove_service(name, timeout=60)
                    except Exception as e:  # noqa: BLE001
                        self.notes.append(f"cleanup: {e}")
            except Exception as e:  # noqa: BLE001
                self.notes.append(f"cleanup: listing services failed: {e}")
            if self.swarm:
                p = self.docker("swarm", "leave", "--force", timeout=60, check=False)
                if p.returncode != 0:
                    self.notes.append("swarm leave --force failed: " + p.stderr.strip()[-300:])
        self.note_containerd()
        if self.dockerd is not None:
            self.stop_process(self.dockerd.pid, "dockerd", popen=self.dockerd)
        for pid in sorted(self.containerd_pids):
            mine = self.containerd is not None and pid == self.containerd.pid
            # A pid read from the pidfile is only trusted while it still names our folder.
            if mine or (proc_alive(pid) and self.tmp in cmdline(pid) + self.proc_cwd(pid)):
                self.stop_process(pid, "containerd", popen=self.containerd if mine else None)
        self.kill_leftovers()
        self.unmount_all()
        self.remove_cgroups()
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if os.path.exists(self.tmp):
                self.notes.append(f"could not remove {self.tmp} completely")

    @staticmethod
    def proc_cwd(pid: int) -> str:
        try:
            return os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return ""

    def stop_process(self, pid: int, what: str, popen: subprocess.Popen | None = None, grace: float = 15) -> None:
        if not proc_alive(pid):
            if popen:
                popen.poll()
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if popen is not None and popen.poll() is not None:
                return
            if popen is None and not proc_alive(pid):
                return
            time.sleep(0.1)
        self.notes.append(f"{what} (pid {pid}) ignored SIGTERM for {grace:.0f} s: SIGKILL")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if popen is not None:
            popen.wait(10)

    def our_pids(self) -> list[int]:
        """Processes still running from the temporary folder (shims, containerd) or inside
        the cgroup parent given to dockerd (task processes). All were started by this run."""
        pids = set()
        me = os.getpid()
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == me:
                continue
            pid = int(d)
            if (self.tmp + "/") in cmdline(pid) or self.proc_cwd(pid).startswith(self.tmp + "/"):
                pids.add(pid)
        for root in cgroup_roots():
            base = root + self.cgroup_parent
            for dirpath, _dirs, files in os.walk(base):
                if "cgroup.procs" in files:
                    for line in (read_text(os.path.join(dirpath, "cgroup.procs")) or "").split():
                        if line.isdigit():
                            pids.add(int(line))
        return sorted(p for p in pids if proc_alive(p))

    def kill_leftovers(self) -> None:
        pids = self.our_pids()
        if not pids:
            return
        self.notes.append("leftover processes stopped: " + ", ".join(f"{p} {cmdline(p)[:60]}" for p in pids))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(proc_alive(p) for p in pids):
                time.sleep(0.1)
            pids = [p for p in pids if proc_alive(p)]
            if not pids:
                return

    def unmount_all(self) -> None:
        for _ in range(5):
            mps = [m for m in mountpoints() if m == self.tmp or m.startswith(self.tmp + "/")]
            if not mps:
                return
            for mp in sorted(set(mps), key=lambda m: -m.count("/")):
                if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", mp], capture_output=True)
        left = [m for m in mountpoints() if m.startswith(self.tmp + "/")]
        if left:
            self.notes.append(f"mounts left under {self.tmp}: {left}")

    def remove_cgroups(self) -> None:
        for root in cgroup_roots():
            base = root + self.cgroup_parent
            if not os.path.isdir(base):
                continue
            for dirpath, dirs, _files in sorted(os.walk(base), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(dirpath)
                except OSError as e:
                    self.notes.append(f"cgroup {dirpath} not removed: {e}")


def remove_empty_trees(before: dict, notes: list[str]) -> None:
    """Remove the EMPTY_TREES folders that did not exist in `before` and hold only empty folders."""
    # dockerd makes /run/docker/plugins whatever --exec-root says; containerd's shims put
    # their sockets under /run/containerd/s; containerd's opt plugin makes /opt/containerd.
    # Only empty folders are removed.
    for top in EMPTY_TREES:
        if top in before["paths"] or not os.path.isdir(top) or os.path.islink(top):
            continue
        removed = True
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                removed = False
        notes.append(f"removed the empty {top} tree created during the run" if removed
                     else f"{top} was created during the run and is not empty; left in place")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rootfs-tar", help="busybox rootfs tar (default: build one with scripts/build-demo-image.sh)")
    ap.add_argument("--install", action="store_true", help="apt-get install docker.io if dockerd is missing")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per wait")
    ap.add_argument("--poll-interval", type=float, default=0.05)
    ap.add_argument("--dockerd", help="dockerd binary (default: from PATH)")
    ap.add_argument("--docker", help="docker CLI (default: the one next to dockerd / Debian's)")
    ap.add_argument("--tmp-parent", default="/tmp", help="where the temporary folder goes (short path: unix sockets)")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--private-containerd", action="store_true",
                    help="start our own containerd for dockerd even when no system one runs")
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    wall0 = time.monotonic()
    if os.geteuid() != 0:
        print(json.dumps({"available": False, "reason": "needs root (dockerd)"}))
        return 0
    dockerd, cli = find_binaries(args)
    if not dockerd and args.install:
        err = apt_install()
        if err:
            print(json.dumps({"available": False, "reason": err}))
            return 0
        dockerd, cli = find_binaries(args)
    if not dockerd:
        print(json.dumps({"available": False, "reason": "dockerd is not installed (apt-get install docker.io, "
                                                        "or run with --install)"}))
        return 0
    if not cli:
        print(json.dumps({"available": False, "reason": f"dockerd at {dockerd} but no docker CLI"}))
        return 0

    before = snapshot()
    links_before = ip_link_text()
    out: dict = {"available": True, "docker_version": None, "results": {}}
    anchor = Anchor(args, dockerd, cli)
    netns = f"swarm-docker-anchor-{os.getpid()}"
    tar_tmp = None
    status = 0
    try:
        run(["ip", "netns", "add", netns])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        anchor.launcher = ["nsenter", f"--net=/run/netns/{netns}"]
        tar = args.rootfs_tar
        if not tar:
            tar_tmp = os.path.join(anchor.tmp, "rootfs.tar")
            run(["bash", os.path.join(REPO, "scripts", "build-demo-image.sh"), tar_tmp], timeout=300)
            tar = tar_tmp
        tar = os.path.abspath(tar)
        if not os.path.isfile(tar):
            raise RuntimeError(f"rootfs tar {tar} not found")
        ver = anchor.start()
        out["docker_version"] = ver.get("Version")
        out["api_version"] = ver.get("ApiVersion")
        out["containerd_version"] = next((c.get("Version") for c in ver.get("Components", [])
                                          if c.get("Name") == "containerd"), None)
        cli_ver = anchor.docker("version", "--format", "{{.Client.Version}}", check=False).stdout.strip()
        out["cli"] = {"path": cli, "version": cli_ver}
        image = anchor.import_image(tar)
        out["image"] = image
        out["method"] = ("seconds from just before `docker service create --detach --no-resolve-image "
                         "--replicas N --stop-grace-period 0s` to the first poll (every "
                         f"{args.poll_interval * 1000:.0f} ms, engine API task list) seeing N tasks running; "
                         "single node, dockerd --bridge=none --iptables=false, so tasks have loopback "
                         "only (no veth/bridge per task)")
        cli_times: dict[str, list[float]] = {}
        rm_times: dict[str, list[float]] = {}
        for n in args.replicas:
            key = str(n)
            times = []
            for r in range(1, args.runs + 1):
                elapsed, t_cli, rm_s = anchor.measure(image, n, r)
                times.append(elapsed)
                cli_times.setdefault(key, []).append(t_cli)
                rm_times.setdefault(key, []).append(rm_s)
                out["results"][key] = summarize(times)
        out["create_cli_s"] = {k: summarize(v) for k, v in cli_times.items()}
        out["rm_s"] = {k: summarize(v) for k, v in rm_times.items()}
    except BaseException as e:  # noqa: BLE001 - report, clean up, exit 1
        out["error"] = f"{type(e).__name__}: {e}"
        tail = anchor.dockerd_log_tail(8)
        if tail:
            out["dockerd_log_tail"] = tail
        status = 1
    finally:
        # A second Ctrl-C / SIGTERM must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            anchor.cleanup()
        except Exception as e:  # noqa: BLE001
            anchor.notes.append(f"cleanup error: {type(e).__name__}: {e}")
            status = 1
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
        remove_empty_trees(before, anchor.notes)
        after = snapshot()
        diff = diff_snapshots(before, after)
        out["machine"] = {"unchanged": not diff, **diff}
        if diff:
            out["machine"]["caveat"] = ("a before/after comparison of the whole machine: other programs "
                                        "running meanwhile show up here too")
        if before["links"] != after["links"]:
            out["machine"]["ip_link_before"] = links_before.splitlines()
            out["machine"]["ip_link_after"] = ip_link_text().splitlines()
        if anchor.notes:
            out["notes"] = anchor.notes
        out["wall_s"] = round(time.monotonic() - wall0, 2)
        print(json.dumps(out, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())

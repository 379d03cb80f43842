"""The lab: a multi-host swarm on one machine, each host a network namespace.

How this works. `up` builds, for lab LAB:

    swl-LAB-u     the underlay namespace: bridge br0 (no address), one veth
                  port "h<i>" per host
    swl-LAB-h<i>  host i: loopback, "eth0" (the veth's other end) with
                  10.X.0.<i>/24, ip_forward=1; X in 200..250 from a hash of LAB
    STATE_ROOT/LAB/h<i>  the node's state dir (default root /var/lib/swarm-lab)

then runs the real CLI inside each host namespace (`nsenter --net=...`, which
switches only the network namespace: `ip netns exec` would remount /sys and
hide the cgroup mounts runc needs): h1 runs `swarm init`, the other managers
(one at a time) and then the workers (as many at once as there are CPUs)
`swarm join` with the tokens h1 hands out (read over h1's unix socket);
`up` returns once h1 lists every node as ready. Nothing is added to the root namespace: namespaces and links
are made with pyroute2 from inside the lab's namespaces, and sysctls are
written from a short-lived thread that setns()-es into the host namespace.
Nothing is routed out: the underlay has no uplink.

Everything `up` will create is recorded first, in /run/swarm-lab/LAB/lab.json,
so `down` can clean up after a crash of `up` (which runs `down` itself on any
failure). `down` does not trust the record alone: it kills the daemons named
by every STATE_ROOT/LAB/*/swarm.pid, removes the containers of every node
state dir (swarm.runtime.runc), kills any process left in a namespace whose
name starts with one of the lab's prefixes ("swl-LAB-", those in the record,
and the per-node prefix the daemons name their task and network namespaces
with, read from each node.json; matched by /proc/PID/ns/net inode) or running from or on a path under the lab's state root, unmounts what
is under that root, then removes the namespaces, the state and the record.
Each step tolerates what is already gone, so `down` is idempotent.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from typing import Any

from raft.fsutil import atomic_write
from swarm.api.errors import SwarmError
from swarm.daemon.procs import wait_gone

RUN_ROOT = "/run/swarm-lab"
STATE_ROOT = "/var/lib/swarm-lab"
NETNS_DIR = "/run/netns"
PREFIX = "swl-"
PORT = 2377
MAX_NODES = 20
OCTETS = list(range(200, 251))
CLI_TIMEOUT = 60.0
READY_TIMEOUT = 60.0
JOIN_PARALLEL = min(8, os.cpu_count() or 1)  # joins are CPU-bound (interpreter and daemon start-up)
# the directory holding the swarm package (the repository, when run from a checkout)
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# No "-" in lab names: it separates the parts of namespace names, and lab
# "a" must not sweep up the namespaces of lab "a-b".
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,14}$")
_CLONE_NEWNET = 0x40000000
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class LabError(SwarmError):
    """Something about the lab failed; one sentence for the user."""


# -- the record ------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LabError(f"{name!r} is not a lab name (use 1-15 lower-case letters, digits or '_', starting "
                       "with a letter or digit)")
    return name


def record_path(name: str) -> str:
    return os.path.join(RUN_ROOT, name, "lab.json")


def load(name: str) -> dict[str, Any] | None:
    """The lab's record, or None if there is none (or it is unreadable)."""
    try:
        with open(record_path(name)) as f:
            rec = json.load(f)
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None


def save(rec: dict[str, Any]) -> None:
    path = record_path(rec["name"])
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, json.dumps(rec, indent=2).encode(), mode=0o600)


def lab_names() -> list[str]:
    return sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(RUN_ROOT, "*", "lab.json")))


def labs() -> list[dict[str, Any]]:
    """Every lab, in the `lab ls --format json` form of DESIGN section 11."""
    out = []
    for name in lab_names():
        rec = load(name)
        if rec is None:
            continue
        hosts = [{k: h[k] for k in ("name", "addr", "netns", "role", "state_dir")} for h in rec.get("hosts", [])]
        out.append({"name": name, "hosts": hosts, "subnet": rec.get("subnet", ""), "status": rec.get("status", ""),
                    "leader": rec.get("leader", "")})
    return out


def subnet_octet(name: str) -> int:
    return OCTETS[zlib.crc32(name.encode()) % len(OCTETS)]


def plan(name: str, nodes: int, managers: int, state_root: str | None = None,
         octet: int | None = None) -> dict[str, Any]:
    """The record of a lab before anything exists: every name it will use."""
    x = subnet_octet(name) if octet is None else octet
    root = os.path.join(os.path.abspath(state_root or STATE_ROOT), name)
    hosts = [{"name": f"h{i}", "index": i, "addr": f"10.{x}.0.{i}", "netns": f"{PREFIX}{name}-h{i}",
              "role": "manager" if i <= managers else "worker", "state_dir": os.path.join(root, f"h{i}"),
              "port": f"h{i}"} for i in range(1, nodes + 1)]
    return {"name": name, "status": "creating", "created_at": time.time(), "octet": x, "subnet": f"10.{x}.0.0/24",
            "underlay": f"{PREFIX}{name}-u", "bridge": "br0", "state_root": root, "python": sys.executable,
            "netns_prefixes": [f"{PREFIX}{name}-"], "leader": "", "hosts": hosts}


def find_host(rec: dict[str, Any], host: str) -> dict[str, Any]:
    for h in rec.get("hosts", []):
        if host in (h["name"], str(h["index"]), h["addr"]):
            return h
    names = ", ".join(h["name"] for h in rec.get("hosts", []))
    raise LabError(f"lab {rec['name']} has no host {host!r} (its hosts: {names or 'none'})")


def require(name: str) -> dict[str, Any]:
    rec = load(check_name(name))
    if rec is None:
        raise LabError(f"there is no lab named {name!r} (see swarm lab ls)")
    return rec


# -- namespaces ------------------------------------------------------------------------


def netns_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def in_netns(netns: str, fn: Callable[[], Any]) -> Any:
    """Run fn() in a thread that setns()-es into `netns`; the caller's namespace never changes."""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=body, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def write_sysctl(netns: str, key: str, value: str) -> None:
    def write() -> None:
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    in_netns(netns, write)


def _link_up(ns: Any, ifname: str, **extra: Any) -> int:
    index = ns.link_lookup(ifname=ifname)[0]
    ns.link("set", index=index, state="up", **extra)
    return index


def make_underlay(rec: dict[str, Any]) -> None:
    from pyroute2 import NetNS, netns
    netns.create(rec["underlay"])
    with NetNS(rec["underlay"], flags=0) as u:
        _link_up(u, "lo")
        u.link("add", ifname=rec["bridge"], kind="bridge")
        _link_up(u, rec["bridge"])


def make_host(rec: dict[str, Any], host: dict[str, Any]) -> None:
    from pyroute2 import NetNS, netns
    netns.create(host["netns"])
    tmp = f"{host['port']}x"
    with NetNS(rec["underlay"], flags=0) as u:
        u.link("add", ifname=host["port"], kind="veth", peer=tmp)
        u.link("set", index=u.link_lookup(ifname=tmp)[0], net_ns_fd=host["netns"])
        _link_up(u, host["port"], master=u.link_lookup(ifname=rec["bridge"])[0])
    with NetNS(host["netns"], flags=0) as h:
        _link_up(h, "lo")
        index = h.link_lookup(ifname=tmp)[0]
        h.link("set", index=index, ifname="eth0")
        h.addr("add", index=index, address=host["addr"], prefixlen=24)
        h.link("set", index=index, state="up")
    write_sysctl(host["netns"], "net.ipv4.ip_forward", "1")


def node_netns_prefix(state_dir: str) -> str | None:
    """The prefix of the namespaces the node's daemon names (swarm.agent.networking), or None without node.json."""
    try:
        with open(os.path.join(state_dir, "node.json")) as f:
            node_id = json.load(f)["node_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(node_id, str) or len(node_id) < 6:
        return None
    try:
        from swarm.agent.networking import prefix_for
    except Exception:  # being rewritten? the rule it follows today
        return f"sw{node_id[:6]}-"
    return f"{prefix_for(node_id)}-"


def remove_netns(name: str) -> bool:
    from pyroute2 import netns
    path = os.path.join(NETNS_DIR, name)
    if not os.path.lexists(path):
        return False
    with contextlib.suppress(OSError):
        netns.remove(name)
    return True


# -- running commands on a host --------------------------------------------------------


def host_command(rec: dict[str, Any], host: dict[str, Any], argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment to run `argv` inside the host's namespace, as its node."""
    python = rec.get("python") or sys.executable
    bindir = os.path.dirname(python)
    argv = list(argv)
    if argv and argv[0] == "swarm" and not os.access(os.path.join(bindir, "swarm"), os.X_OK):
        argv = [python, "-m", "swarm", *argv[1:]]
    path = os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env = dict(os.environ, SWARM_STATE_DIR=host["state_dir"], PATH=f"{bindir}:{path}",
               SWARM_LAB=rec["name"], SWARM_LAB_HOST=host["name"])
    env["PYTHONPATH"] = ":".join(p for p in (PROJECT_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return ["nsenter", f"--net={os.path.join(NETNS_DIR, host['netns'])}", "--", *argv], env


def run(rec: dict[str, Any], host: dict[str, Any], argv: Sequence[str], timeout: float = CLI_TIMEOUT,
        **kwargs: Any) -> subprocess.CompletedProcess:
    """Run argv on the host; output captured as text unless kwargs say otherwise."""
    cmd, env = host_command(rec, host, argv)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(cmd, env=env, timeout=timeout, cwd="/", **kwargs)


def _swarm(rec: dict[str, Any], host: dict[str, Any], *args: str) -> None:
    python = rec.get("python") or sys.executable
    res = run(rec, host, [python, "-m", "swarm", *args])
    if res.returncode != 0:
        why = command_error(res.stderr, res.returncode)
        daemon = daemon_failure(host["state_dir"])
        if daemon and daemon.removeprefix("Error: ").rstrip(".") not in why:
            why += f"; {host['name']}'s daemon.log ends with: {daemon}"
        raise LabError(f"swarm {args[0]} on {host['name']} failed: {why}")


def command_error(stderr: str, returncode: int) -> str:
    """The sentence a failed swarm command gave: its last "Error: " line on stderr (else its last
    line there). Never stdout: what a command printed before failing ("Swarm initialized: ...")
    is not why it failed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    line = errors[-1] if errors else lines[-1] if lines else f"exit code {returncode}"
    return line.removeprefix("Error: ").rstrip(".")


def daemon_failure(state_dir: str, lines: int = 40) -> str:
    """The node daemon's own account of its failure, from the end of STATE_DIR/daemon.log: the last
    line that reports an error (a traceback's last line is the exception), else the last line; ""
    when there is no log (the daemon never started)."""
    try:
        with open(os.path.join(state_dir, "daemon.log"), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64 * 1024))
            tail = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()[-lines:] if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in tail if re.search(r"\b(ERROR|CRITICAL)\b|^Error: |^\w+(Error|Exception|Group)\b", ln)]
    return (errors or tail or [""])[-1][-300:]


def _call(host: dict[str, Any], method: str, params: dict | None = None) -> Any:
    from swarm.rpc.client import call_unix_sync
    return call_unix_sync(os.path.join(host["state_dir"], "swarm.sock"), method, params or {}, timeout=10)


# -- up ----------------------------------------------------------------------------------


def up(name: str = "lab", nodes: int = 3, managers: int = 1, state_root: str | None = None,
       say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Build the lab and form its cluster; returns the record. On any failure, tears down
    what it made and raises LabError."""
    check_name(name)
    if not 1 <= nodes <= MAX_NODES:
        raise LabError(f"a lab has 1 to {MAX_NODES} nodes, not {nodes}")
    if not 1 <= managers <= nodes:
        raise LabError(f"a lab of {nodes} nodes has 1 to {nodes} managers, not {managers}")
    if os.geteuid() != 0:
        raise LabError("swarm lab needs root (it creates network namespaces)")
    if shutil.which("nsenter") is None:
        raise LabError("swarm lab needs nsenter (util-linux) to run daemons inside the host namespaces")
    if load(name) is not None or os.path.exists(os.path.join(RUN_ROOT, name)):
        raise LabError(f"lab {name} already exists: run swarm lab down --name {name} first")
    rec = plan(name, nodes, managers, state_root)
    leftovers = [n for n in netns_names() if n.startswith(tuple(rec["netns_prefixes"]))]
    if leftovers or os.path.exists(rec["state_root"]):
        raise LabError(f"lab {name} left {leftovers[0] if leftovers else rec['state_root']} behind: "
                       f"run swarm lab down --name {name} first")
    # The subnet comes from the name's hash; if another lab holds it, take the next free one.
    used = {r.get("octet") for r in (load(other) for other in lab_names()) if r}
    start = OCTETS.index(rec["octet"])
    free = [o for o in OCTETS[start:] + OCTETS[:start] if o not in used]
    if not free:
        raise LabError(f"all {len(OCTETS)} lab subnets are in use: take a lab down first")
    if free[0] != rec["octet"]:
        rec = plan(name, nodes, managers, state_root, octet=free[0])
    save(rec)
    try:
        _build(rec, say)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            down(name)
        if not isinstance(exc, Exception):
            raise
        why = exc.message if isinstance(exc, LabError) else f"{type(exc).__name__}: {exc}"
        raise LabError(f"lab {name} could not be built ({why.rstrip('.')}); everything it made was removed") from exc
    return rec


def _build(rec: dict[str, Any], say: Callable[[str], None]) -> None:
    make_underlay(rec)
    for host in rec["hosts"]:
        make_host(rec, host)
        os.makedirs(host["state_dir"], mode=0o700, exist_ok=True)
    say(f"Created {len(rec['hosts'])} hosts on {rec['subnet']} (underlay namespace {rec['underlay']}).")
    first, rest = rec["hosts"][0], rec["hosts"][1:]
    _swarm(rec, first, "init", "--advertise-addr", f"{first['addr']}:{PORT}", "--hostname", first["name"])
    say(f"{first['name']}: swarm init")
    tokens = {role: _call(first, "join_token", {"role": role, "rotate": False})["token"]
              for role in ("manager", "worker")}
    def join(host: dict[str, Any]) -> None:
        _swarm(rec, host, "join", "--token", tokens[host["role"]], "--advertise-addr", f"{host['addr']}:{PORT}",
               "--hostname", host["name"], f"{first['addr']}:{PORT}")
        say(f"{host['name']}: joined as a {host['role']}")

    for host in [h for h in rest if h["role"] == "manager"]:  # one Raft membership change at a time
        join(host)
    workers = [h for h in rest if h["role"] == "worker"]
    with ThreadPoolExecutor(max_workers=max(1, min(len(workers), JOIN_PARALLEL))) as pool:
        for future in [pool.submit(join, h) for h in workers]:  # workers only ask the manager for a certificate
            future.result()
    rec["leader"] = _wait_ready(first, rec["hosts"])
    rec["netns_prefixes"] += [p for p in map(node_netns_prefix, (h["state_dir"] for h in rec["hosts"])) if p]
    rec["status"] = "up"
    save(rec)


def _wait_ready(first: dict[str, Any], hosts: Sequence[dict[str, Any]]) -> str:
    deadline = time.monotonic() + READY_TIMEOUT
    rows: list[dict] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            rows = _call(first, "node.ls")
            leaders = [r["hostname"] for r in rows if r.get("manager_status") == "leader"]
            if sum(r.get("status") == "ready" for r in rows) == len(hosts) and leaders:
                return leaders[0]
        time.sleep(0.1)
    ready = {r.get("hostname") for r in rows if r.get("status") == "ready"}
    late = [h for h in hosts if h["name"] not in ready]
    why = "; ".join(f"{h['name']}'s daemon.log ends with: {d}" for h in late[:3] if (d := daemon_failure(h["state_dir"])))
    raise LabError(f"only {len(ready)} of {len(hosts)} nodes were ready after {READY_TIMEOUT:g} s"
                   f" (not ready: {', '.join(h['name'] for h in late)}{'; ' + why if why else ''})")


# -- down --------------------------------------------------------------------------------


def down(name: str = "lab", state_root: str | None = None) -> list[str]:
    """Remove everything of lab `name`; returns what was removed, one line per item. Idempotent."""
    check_name(name)
    rec = load(name) or plan(name, 0, 0, state_root)
    root = os.path.abspath(os.path.join(state_root, name)) if state_root else rec["state_root"]
    removed: list[str] = []
    node_dirs = sorted({h["state_dir"] for h in rec.get("hosts", [])} | set(glob.glob(os.path.join(root, "*", ""))))
    node_dirs = [d.rstrip("/") for d in node_dirs if os.path.isdir(d)]
    prefixes = tuple(p for p in [*rec.get("netns_prefixes", []), *map(node_netns_prefix, node_dirs)] if p)
    prefixes += (f"{PREFIX}{name}-",)
    spared = _ancestors()
    for node_dir in node_dirs:  # the daemons first, so that nothing restarts a container
        pid = _read_pid(os.path.join(node_dir, "swarm.pid"))
        if pid and pid not in spared and node_dir in _cmdline(pid) and _kill(pid):
            removed.append(f"daemon {os.path.basename(node_dir)} (pid {pid})")
    for node_dir in node_dirs:
        removed += _remove_containers(node_dir)
    namespaces = [n for n in netns_names() if n.startswith(prefixes)]
    namespaces += [n for n in [rec.get("underlay")] + [h["netns"] for h in rec.get("hosts", [])]
                   if n and n not in namespaces and os.path.lexists(os.path.join(NETNS_DIR, n))]
    killed = _kill_lab_processes(namespaces, root, spared)
    if killed:
        removed.append(f"{len(killed)} process(es) in the lab's namespaces or state ({', '.join(map(str, killed))})")
    for mount in sorted(_mounts_under(root), key=len, reverse=True):
        if _libc.umount2(mount.encode(), 0) != 0:
            _libc.umount2(mount.encode(), _MNT_DETACH)
        removed.append(f"mount {mount}")
    for ns in sorted(namespaces, key=lambda n: n.endswith("-u")):  # hosts first, then the underlay
        if remove_netns(ns):
            removed.append(f"namespace {ns}")
    if os.path.isdir(root):
        shutil.rmtree(root, ignore_errors=True)
        removed.append(f"state {root}")
    if os.path.dirname(root) == STATE_ROOT:
        with contextlib.suppress(OSError):  # the default parent of the lab roots, once empty
            os.rmdir(STATE_ROOT)
    run_dir = os.path.join(RUN_ROOT, name)
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(f"record {run_dir}")
    with contextlib.suppress(OSError):
        os.rmdir(RUN_ROOT)
    leftovers = [n for n in netns_names() if n.startswith(prefixes)] + _mounts_under(root)
    if leftovers or os.path.exists(root) or os.path.exists(run_dir):
        raise LabError(f"lab {name} could not be removed entirely ({(leftovers or [root])[0]} is left); "
                       "run swarm lab down again")
    return removed


def _remove_containers(node_dir: str) -> list[str]:
    tasks = os.path.join(node_dir, "tasks")
    if not os.path.isdir(tasks):
        return []
    from swarm.runtime.images import ImageStore
    from swarm.runtime.runc import Runtime
    runtime = Runtime(tasks, ImageStore(os.path.join(node_dir, "images")))
    out = []
    for task_id in runtime.list():
        with contextlib.suppress(Exception):  # what survives is killed and unmounted below
            runtime.remove(task_id)
            out.append(f"container {task_id} ({os.path.basename(node_dir)})")
    return out


def _kill_lab_processes(namespaces: Sequence[str], root: str, spared: set[int]) -> list[int]:
    """SIGKILL every process in one of `namespaces` or running on a path under `root`, until none is left."""
    inodes = set()
    for ns in namespaces:
        with contextlib.suppress(OSError):
            st = os.stat(os.path.join(NETNS_DIR, ns))
            inodes.add((st.st_dev, st.st_ino))
    for mount in _mounts_under(root):  # namespaces bind-mounted into a node's state
        with contextlib.suppress(OSError):
            st = os.stat(mount)
            inodes.add((st.st_dev, st.st_ino))
    killed: list[int] = []
    for _ in range(20):
        found = [pid for pid in _pids() if pid not in spared and _belongs(pid, inodes, root)]
        if not found:
            break
        for pid in found:
            if _kill(pid, wait=False) and pid not in killed:
                killed.append(pid)
        for pid in found:
            wait_gone(pid)
    return killed


def _belongs(pid: int, inodes: set[tuple[int, int]], root: str) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
        if (st.st_dev, st.st_ino) in inodes:
            return True
        if (os.readlink(f"/proc/{pid}/root") + "/").startswith(root + "/"):
            return True
    except OSError:
        return False
    return any(arg == root or arg.startswith(root + "/") for arg in _cmdline(pid).split("\0"))


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _ancestors() -> set[int]:
    """This process and its ancestors: never killed, whatever their command line says."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out | {1}


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _kill(pid: int, wait: bool = True) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    if wait:
        wait_gone(pid)
    return True




def _mounts_under(root: str) -> list[str]:
    out = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == root or point.startswith(root + "/"):
                out.append(point)
    return out

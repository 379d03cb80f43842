"""A running lab as the chaos suite sees it: its hosts, their daemons, and the faults.

How this works. `Cluster` wraps the record of a `swarm lab` (swarm/lab/lab.py)
and talks to each node's daemon over its unix socket STATE_DIR/swarm.sock,
from the root namespace (a unix socket is reachable across network
namespaces). Every fault is real and local to the lab:

* kill -9 / SIGSTOP / SIGCONT of the PID in STATE_DIR/swarm.pid;
* freezing that PID with the cgroup v1 freezer: it moves into a cgroup
  `/sys/fs/cgroup/freezer/swarm-chaos-LAB-HOST` set to FROZEN (no signal
  the process could see), and back to its own cgroup when thawed, after
  which the group is removed;
* restart with `swarm daemon --detach`, run inside the host's namespace
  (plus `--unsafe-memory-journal` once `memory_journal` is set: the
  self-test that proves the suite can fail); with autolock on
  (`enable_autolock`), a restarted manager must come up locked and is
  given the unlock key over its socket, as `swarm unlock` does;
* nftables rules in a table `inet swarm_chaos` created INSIDE a host's
  network namespace (`nsenter --net=/run/netns/swl-LAB-hN nft ...`), never
  in the root namespace: `_netns` refuses any namespace that is not one of
  the lab's hosts. Healing deletes the table.

The cluster keeps `expected`: host -> PID of every daemon that should be
alive. A fault that kills a daemon removes its entry (under a lock) before
the signal, a restart adds the new PID; a PID in `expected` that dies is a
crash (invariant 5), noticed by `crashed()`.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from typing import Any

from swarm.lab import lab as labmod
from swarm.api.errors import SwarmError
from swarm.daemon.procs import wait_gone
from swarm.rpc.client import call_unix_sync
from swarm.rpc.messages import RPCError

NFT_TABLE = "swarm_chaos"
FREEZER_ROOT = "/sys/fs/cgroup/freezer"
RESTART_TIMEOUT = 60.0


class ChaosError(SwarmError):
    """The harness could not do what a scenario asked (not a violation of the cluster's invariants)."""


class Cluster:
    def __init__(self, rec: dict[str, Any]) -> None:
        self.rec = rec
        self.name = rec["name"]
        self.hosts = {h["name"]: h for h in rec["hosts"]}
        self.managers = [h["name"] for h in rec["hosts"] if h["role"] == "manager"]
        self.workers = [h["name"] for h in rec["hosts"] if h["role"] == "worker"]
        self.node_ids = {name: self._node_id(name) for name in self.hosts}
        self.hostnames = {v: k for k, v in self.node_ids.items() if v}
        self.expected: dict[str, int] = {}
        self.paused: set[str] = set()
        self.frozen: dict[str, str] = {}     # host -> the freezer cgroup its daemon came from
        self.partitioned: set[str] = set()
        self.memory_journal = False     # restart daemons with --unsafe-memory-journal
        self.unlock_key: str | None = None   # autolock on: what unlocks a restarted manager
        self.lock = threading.Lock()

    # -- reading -----------------------------------------------------------------------
    def _node_id(self, host: str) -> str:
        try:
            with open(os.path.join(self.hosts[host]["state_dir"], "node.json")) as f:
                return json.load(f)["node_id"]
        except (OSError, ValueError, KeyError):
            return ""

    def socket(self, host: str) -> str:
        return os.path.join(self.hosts[host]["state_dir"], "swarm.sock")

    def call(self, host: str, method: str, params: dict | None = None, timeout: float = 5.0) -> Any:
        return call_unix_sync(self.socket(host), method, params or {}, timeout)

    def pid(self, host: str) -> int | None:
        try:
            with open(os.path.join(self.hosts[host]["state_dir"], "swarm.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def addr(self, host: str) -> str:
        return self.hosts[host]["addr"]

    def leader(self, timeout: float = 15.0) -> str:
        """The host whose daemon a majority of reachable managers calls leader, waiting for one."""
        deadline = time.monotonic() + timeout
        while True:
            votes: dict[str, int] = {}
            for host in self.managers:
                if host in self.paused:
                    continue
                with contextlib.suppress(RPCError):
                    leader = self.call(host, "info", timeout=1.0).get("leader")
                    if leader in self.hostnames:
                        votes[self.hostnames[leader]] = votes.get(self.hostnames[leader], 0) + 1
            if votes:
                best = max(votes, key=votes.__getitem__)
                if votes[best] * 2 > len(self.managers) or len(votes) == 1:
                    return best
            if time.monotonic() > deadline:
                raise ChaosError(f"no manager of lab {self.name} named a leader within {timeout:g} s")
            time.sleep(0.1)

    def adopt_all(self) -> None:
        """Record every daemon's PID as expected alive (before the faults start)."""
        with self.lock:
            for host in self.hosts:
                pid = self.pid(host)
                if pid and alive(pid):
                    self.expected[host] = pid

    def crashed(self) -> dict[str, int]:
        """Expected daemons that are gone: host -> PID."""
        with self.lock:
            return {h: p for h, p in self.expected.items() if not alive(p)}

    def daemon_log_tail(self, host: str, lines: int = 5) -> list[str]:
        try:
            with open(os.path.join(self.hosts[host]["state_dir"], "daemon.log"), errors="replace") as f:
                return [ln.rstrip() for ln in f.readlines()[-lines:]]
        except OSError:
            return []

    def daemon_log_size(self, host: str) -> int:
        try:
            return os.path.getsize(os.path.join(self.hosts[host]["state_dir"], "daemon.log"))
        except OSError:
            return 0

    def daemon_log_since(self, host: str, offset: int, limit: int = 16 * 1024 * 1024) -> str:
        """What the daemon of `host` logged from byte `offset` on (at most `limit` bytes)."""
        try:
            with open(os.path.join(self.hosts[host]["state_dir"], "daemon.log"), "rb") as f:
                f.seek(offset)
                return f.read(limit).decode(errors="replace")
        except OSError:
            return ""

    # -- processes ---------------------------------------------------------------------
    def kill(self, host: str) -> int | None:
        with self.lock:
            self.expected.pop(host, None)
            pid = self.pid(host)
            if not pid or not alive(pid):
                return None
            os.kill(pid, signal.SIGKILL)
        self.paused.discard(host)
        wait_gone(pid)
        return pid

    def restart(self, host: str) -> int:
        """`swarm daemon --detach` in the host's namespace; returns the new PID once it is ready."""
        python = self.rec.get("python") or "python3"
        try:
            argv = [python, "-m", "swarm", "daemon", "--detach"]
            argv += ["--unsafe-memory-journal"] if self.memory_journal else []
            res = labmod.run(self.rec, self.hosts[host], argv, timeout=RESTART_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ChaosError(f"the daemon of {host} did not restart within {RESTART_TIMEOUT:g} s") from None
        if res.returncode != 0:
            why = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit code {res.returncode}"]
            raise ChaosError(f"restarting the daemon of {host} failed: {why[0]}")
        pid = self.pid(host)
        if not pid or not alive(pid):
            raise ChaosError(f"the daemon of {host} said it was ready but is not running")
        if self.unlock_key and host in self.managers:
            self._unlock(host)
        with self.lock:
            self.expected[host] = pid
        return pid

    def enable_autolock(self) -> None:
        """`swarm update --autolock=true`, then wait until every manager's data key file is wrapped."""
        leader = self.leader()
        self.call(leader, "cluster.update", {"autolock": True})
        self.unlock_key = self.call(leader, "unlock_key", {"rotate": False})["unlock_key"]
        deadline = time.monotonic() + 15.0
        for host in self.managers:
            path = os.path.join(self.hosts[host]["state_dir"], "certs", "raft-key.json")
            while "wrapped_data_key" not in _read(path):
                if time.monotonic() > deadline:
                    raise ChaosError(f"the data key of {host} was not wrapped within 15 s of turning autolock on")
                time.sleep(0.05)

    def _unlock(self, host: str) -> None:
        """A restarted manager must be locked (its data key is not on disk in the clear); unlock it."""
        try:
            if not self.call(host, "ping").get("locked"):
                raise ChaosError(f"the manager of {host} restarted unlocked although autolock is on")
            self.call(host, "unlock", {"key": self.unlock_key})
        except RPCError as exc:
            raise ChaosError(f"unlocking the manager of {host} failed: {exc.message}") from None
        deadline = time.monotonic() + RESTART_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(RPCError):
                if self.call(host, "ping", timeout=1.0).get("ready"):
                    return
            time.sleep(0.05)
        raise ChaosError(f"the manager of {host} did not become ready within {RESTART_TIMEOUT:g} s of its unlock")

    def pause(self, host: str) -> int | None:
        pid = self.pid(host)
        if not pid or not alive(pid):
            return None
        self.paused.add(host)
        os.kill(pid, signal.SIGSTOP)
        return pid

    def resume(self, host: str) -> None:
        pid = self.pid(host)
        self.paused.discard(host)
        if pid and alive(pid):
            os.kill(pid, signal.SIGCONT)

    def freezer_group(self, host: str) -> str:
        return os.path.join(FREEZER_ROOT, f"swarm-chaos-{self.name}-{host}")

    def freeze(self, host: str) -> int | None:
        """Freeze the daemon of `host` in a cgroup of its own; its PID (None if not running)."""
        pid = self.pid(host)
        if not pid or not alive(pid):
            return None
        origin = _freezer_cgroup(pid)
        group = self.freezer_group(host)
        os.makedirs(group, exist_ok=True)
        self.frozen[host] = origin
        _write(os.path.join(group, "cgroup.procs"), str(pid))
        _write(os.path.join(group, "freezer.state"), "FROZEN")
        deadline = time.monotonic() + 5.0
        while _read(os.path.join(group, "freezer.state")) != "FROZEN":   # FREEZING until every thread stops
            if time.monotonic() > deadline:
                raise ChaosError(f"the daemon of {host} did not freeze within 5 s")
            time.sleep(0.01)
        return pid

    def thaw(self, host: str) -> None:
        """Move the daemon (and anything it started meanwhile) back to its own cgroup, thawed, and
        remove the group. Moving out first: the kernel thaws a task that joins a thawed cgroup, and
        a process that is still frozen cannot fork into the group while it is being emptied."""
        origin = self.frozen.pop(host, "/")
        group = self.freezer_group(host)
        back = os.path.join(FREEZER_ROOT, origin.lstrip("/"), "cgroup.procs")
        deadline = time.monotonic() + 5.0
        while os.path.isdir(group):
            for pid in _read(os.path.join(group, "cgroup.procs")).split():
                with contextlib.suppress(OSError):   # it may have exited meanwhile
                    _write(back, pid)
            _write(os.path.join(group, "freezer.state"), "THAWED")
            try:
                os.rmdir(group)
            except OSError:
                if time.monotonic() > deadline:
                    raise ChaosError(f"cannot remove the freezer cgroup {group}: it keeps processes") from None
                time.sleep(0.01)

    # -- nftables inside a host's namespace -----------------------------------------------
    def _netns(self, host: str) -> str:
        netns = self.hosts[host]["netns"]
        if not netns.startswith(f"{labmod.PREFIX}{self.name}-") or netns not in labmod.netns_names():
            raise ChaosError(f"refusing to touch {netns!r}: not a host namespace of lab {self.name}")
        return netns

    def nft(self, host: str, script: str) -> None:
        netns = self._netns(host)
        res = subprocess.run(["nsenter", f"--net={os.path.join(labmod.NETNS_DIR, netns)}", "--", "nft", "-f", "-"],
                             input=script, capture_output=True, text=True, timeout=10)
        if res.returncode != 0:
            raise ChaosError(f"nft in {netns} failed: {res.stderr.strip() or res.returncode}")

    def drop(self, host: str, peers: list[str], inbound: bool = True, outbound: bool = True,
             percent: int = 100) -> None:
        """Drop (a `percent` of) packets between `host` and the addresses of `peers`, in host's namespace."""
        addrs = ", ".join(self.addr(p) for p in peers)
        rand = f"numgen random mod 100 < {percent} " if percent < 100 else ""
        chains = []
        if inbound:
            chains.append(f"chain input {{ type filter hook input priority -10; policy accept; "
                          f"ip saddr {{ {addrs} }} {rand}drop; }}")
        if outbound:
            chains.append(f"chain output {{ type filter hook output priority -10; policy accept; "
                          f"ip daddr {{ {addrs} }} {rand}drop; }}")
        self.heal_network(host)
        self.partitioned.add(host)
        self.nft(host, f"table inet {NFT_TABLE} {{\n  " + "\n  ".join(chains) + "\n}\n")

    def heal_network(self, host: str) -> None:
        netns = self._netns(host)
        subprocess.run(["nsenter", f"--net={os.path.join(labmod.NETNS_DIR, netns)}", "--", "nft", "delete",
                        "table", "inet", NFT_TABLE], capture_output=True, timeout=10)
        self.partitioned.discard(host)

    def heal_everything(self) -> list[str]:
        """Undo every fault still in place (resume, delete nft tables, restart dead daemons)."""
        done = []
        for host in sorted(self.paused):
            self.resume(host)
            done.append(f"resumed {host}")
        for host in sorted(self.frozen):
            self.thaw(host)
            done.append(f"thawed {host}")
        for host in sorted(self.partitioned):
            self.heal_network(host)
            done.append(f"healed the network of {host}")
        dead = [h for h in self.hosts if not (self.pid(h) and alive(self.pid(h)))]
        self.restart_all(dead)
        return done + [f"restarted {h}" for h in dead]

    def restart_all(self, hosts: list[str]) -> None:
        """Restart the daemons of `hosts` at once (a manager may wait for the others' quorum)."""
        errors: list[str] = []

        def restart(host: str) -> None:
            try:
                self.restart(host)
            except ChaosError as exc:
                errors.append(exc.message)

        threads = [threading.Thread(target=restart, args=(h,)) for h in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise ChaosError(errors[0])


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _freezer_cgroup(pid: int) -> str:
    """The freezer cgroup of `pid` ("/" for the root), from /proc/PID/cgroup."""
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if "freezer" in controllers.split(","):
            return path
    return "/"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False

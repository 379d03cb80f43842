"""Run swarm nodes as real daemon processes on loopback, through the real CLI (tests, benchmarks).

Each node gets its own state directory and its own 127.0.x.y address (a
random third octet per test, from a range of its own per pytest-xdist worker,
so tests never share addresses). Every daemon
started here is killed by PID at teardown, also when the test fails.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from swarm.daemon.procs import wait_gone

# the repository (this file is swarm/lab/localcluster.py): PYTHONPATH of the nodes, home of scripts/
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Node:
    name: str
    addr: str
    state_dir: str

    @property
    def pid(self) -> int | None:
        try:
            with open(os.path.join(self.state_dir, "swarm.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None


def octet_range(worker: str) -> tuple[int, int]:
    """The third octets a test process may use: all of 2-250, or, under pytest-xdist, a slice of
    its own per worker (gw0, gw1, ...), so parallel tests never pick the same addresses (tests
    of one worker run one after another and stop their daemons before the next starts)."""
    low, high = 2, 250
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return low, high
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), int(worker[2:]) + 1)
    size = (high - low + 1) // workers
    start = low + int(worker[2:]) * size
    return start, start + size - 1


def data_path_port_args(worker: str) -> tuple[str, ...]:
    """Loopback clusters create their VXLAN devices in this machine's own namespace, where the
    kernel allows one device per VNI and UDP port: clusters of parallel test workers (whose
    networks take the same VNIs) each use a data path port of their own (gw0 the default)."""
    if not worker.startswith("gw") or not worker[2:].isdigit() or worker == "gw0":
        return ()
    return ("--data-path-port", str(4800 + int(worker[2:])))


class Swarm:
    def __init__(self, base: str) -> None:
        self.base = base
        self.octet = random.randint(*octet_range(os.environ.get("PYTEST_XDIST_WORKER", "")))
        self.nodes: dict[str, Node] = {}
        self.pids: set[int] = set()
        self._next = 10

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            self._next += 1
            self.nodes[name] = Node(name, f"127.0.{self.octet}.{self._next}:2377", os.path.join(self.base, name))
        return self.nodes[name]

    def run(self, node: Node, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=ROOT, SWARM_STATE_DIR=node.state_dir)
        proc = subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=ROOT, input=input)
        if node.pid:
            self.pids.add(node.pid)
        if check and proc.returncode != 0:
            raise AssertionError(f"swarm {' '.join(args)} on {node.name} failed ({proc.returncode}): "
                                 f"{proc.stderr}{proc.stdout}")
        return proc

    def json(self, node: Node, *args: str):
        return json.loads(self.run(node, *args, "--format", "json").stdout)

    def init(self, name: str, *extra: str) -> Node:
        node = self.node(name)
        if "--data-path-port" not in extra:
            extra = (*extra, *data_path_port_args(os.environ.get("PYTEST_XDIST_WORKER", "")))
        self.run(node, "init", "--advertise-addr", node.addr, "--hostname", name, *extra)
        return node

    def token(self, via: Node, role: str) -> str:
        return self.run(via, "join-token", "-q", role).stdout.strip()

    def join(self, name: str, via: Node, role: str) -> Node:
        node = self.node(name)
        self.run(node, "join", "--token", self.token(via, role), "--advertise-addr", node.addr,
                 "--hostname", name, via.addr)
        return node

    def kill(self, node: Node) -> None:
        pid = node.pid
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)

    def restart(self, node: Node) -> None:
        self.run(node, "daemon", "--detach")

    def ls(self, via: Node) -> dict[str, dict]:
        return {row["hostname"]: row for row in self.json(via, "node", "ls")}

    def stop_containers(self) -> None:
        """Containers (and the namespaces of their networks) outlive their daemons by
        design: stop and remove every one these nodes made."""
        from swarm.runtime.errors import ContainerError
        from swarm.runtime.images import ImageStore
        from swarm.runtime.mounts import mounts_under, unmount_all
        from swarm.runtime.runc import Runtime

        try:
            for node in self.nodes.values():
                tasks = os.path.join(node.state_dir, "tasks")
                if not os.path.isdir(tasks):
                    continue
                runtime = Runtime(tasks, ImageStore(os.path.join(node.state_dir, "images")))
                for task_id in runtime.list():
                    try:
                        runtime.stop(task_id, 0)
                    except ContainerError as exc:
                        # A loaded machine may take longer than the stop's wait: remove kills and
                        # waits again (and raises if the container still lives).
                        print(f"localcluster: {exc}; removing it anyway", file=sys.stderr)
                    try:
                        runtime.remove(task_id)
                    except ContainerError as exc:   # one task must not keep the others running
                        print(f"localcluster: {exc}", file=sys.stderr)
        finally:
            try:
                # A daemon killed between a task's mount and its bundle record leaves the mount
                # behind: nothing of these nodes may stay mounted after the test.
                for node in self.nodes.values():
                    left = mounts_under(node.state_dir + os.sep)
                    if left:
                        print(f"localcluster: unmounting what {node.name} left mounted: {left}", file=sys.stderr)
                        unmount_all(node.state_dir + os.sep)
            finally:
                self.remove_namespaces()

    def remove_namespaces(self) -> list[str]:
        """The network namespaces these nodes' daemons made (killed daemons leave them)."""
        from swarm.lab.lab import NETNS_DIR, node_netns_prefix, remove_netns

        removed = []
        prefixes = [p for p in (node_netns_prefix(n.state_dir) for n in self.nodes.values()) if p]
        for name in sorted(os.listdir(NETNS_DIR)) if prefixes and os.path.isdir(NETNS_DIR) else []:
            if any(name.startswith(p) for p in prefixes) and remove_netns(name):
                removed.append(name)
        return removed

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.pid:
                self.pids.add(node.pid)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            wait_gone(pid)




def eventually(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f": {last}" if last else ""))

"""Run a Raft group of real `swarm.lab.raftserver` processes on loopback.

Used by the integration tests, the benchmarks and the durability trials:
`RaftCluster` makes a CA and manager certificates, starts one process per
member (each in its own process group so a test can kill the main PID alone
or the whole group), and talks to each over its control socket with
`ControlClient`, a small blocking client that can pipeline requests.
"""
from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from raft import framing


class ControlError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ControlClient:
    """Blocking client of a swarm.lab.raftserver control socket; supports pipelining."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.decoder = framing.FrameDecoder()
        self.next_id = 0
        self.replies: dict[int, dict] = {}

    def send(self, request: dict) -> int:
        self.next_id += 1
        request = dict(request, id=self.next_id)
        self.sock.sendall(framing.encode_frame(request))
        return self.next_id

    def wait(self, request_id: int) -> dict:
        while request_id not in self.replies:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("raft server closed the control connection")
            for reply in self.decoder.feed(data):
                self.replies[reply["id"]] = reply
        return self.replies.pop(request_id)

    def call(self, op: str, **params: Any) -> Any:
        reply = self.wait(self.send(dict(params, op=op)))
        if not reply["ok"]:
            raise ControlError(reply["error"], reply["message"])
        return reply["result"]

    def close(self) -> None:
        self.sock.close()


def put(kind: str, key: str, data: bytes, action: str = "create", expect: int | None = None) -> list:
    return [action, kind, key, expect, data]


@dataclass
class Member:
    node_id: str
    address: str
    data_dir: str
    cert_dir: str
    control: str
    proc: subprocess.Popen | None = None
    log_path: str = ""

    @property
    def name(self) -> str:
        return f"{self.node_id}@{self.address}"


@dataclass
class RaftCluster:
    base_dir: str
    size: int = 3
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        from swarm.ca import pki

        os.makedirs(self.base_dir, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca = pki.ClusterCA.create(pki.new_id(), now)
        for i in range(self.size):
            self.members.append(self.new_member(f"m{i}"))

    def issue(self, node_id: str, cert_dir: str, role: str = "manager", ca: Any = None) -> None:
        from swarm.ca import pki

        ca = ca or self.ca
        os.makedirs(cert_dir, exist_ok=True)
        key = pki.new_node_key()
        cert = ca.issue(pki.make_csr(key, node_id), node_id, role, datetime.datetime.now(datetime.timezone.utc))
        pki.write_public(os.path.join(cert_dir, "ca.pem"), self.ca.cert_pem())
        pki.write_public(os.path.join(cert_dir, "node.pem"), cert)
        pki.write_private(os.path.join(cert_dir, "node-key.pem"), pki.key_to_pem(key))

    def new_member(self, label: str) -> Member:
        from swarm.ca import pki

        node_id = pki.new_id()
        root = os.path.join(self.base_dir, label)
        member = Member(node_id, f"{self.host}:{free_port(self.host)}", os.path.join(root, "raft"),
                        os.path.join(root, "certs"), os.path.join(root, "control.sock"))
        member.log_path = os.path.join(root, "server.log")
        self.issue(node_id, member.cert_dir)
        return member

    def start(self, member: Member, peers: list[Member] | None = None, wait: bool = True) -> None:
        if peers is None:
            peers = [m for m in self.members if m is not member]
        for stale in (member.control, member.control + ".ready"):
            if os.path.exists(stale):
                os.unlink(stale)
        cmd = [sys.executable, "-m", "swarm.lab.raftserver", "--id", member.node_id, "--listen", member.address,
               "--data", member.data_dir, "--certs", member.cert_dir, "--control", member.control,
               *self.extra_args]
        for peer in peers:
            cmd += ["--peer", peer.name]
        log = open(member.log_path, "ab")
        member.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        log.close()
        if wait:
            self.wait_ready(member)

    def wait_ready(self, member: Member, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(member.control + ".ready"):
            if member.proc.poll() is not None:
                raise RuntimeError(f"{member.node_id} exited with {member.proc.returncode}: {self.log(member)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{member.node_id} did not start: {self.log(member)}")
            time.sleep(0.02)

    def start_all(self) -> None:
        for m in self.members:
            self.start(m, wait=False)
        for m in self.members:
            self.wait_ready(m)

    def log(self, member: Member) -> str:
        try:
            with open(member.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def client(self, member: Member, timeout: float = 10.0) -> ControlClient:
        return ControlClient(member.control, timeout)

    def status(self, member: Member) -> dict:
        c = self.client(member)
        try:
            return c.call("status")
        finally:
            c.close()

    def running(self) -> list[Member]:
        return [m for m in self.members if m.proc is not None and m.proc.poll() is None]

    def leader(self, timeout: float = 10.0, among: list[Member] | None = None) -> Member:
        """The member that is acting leader, as every running member agrees."""
        deadline = time.monotonic() + timeout
        while True:
            candidates = among or self.running()
            for m in candidates:
                try:
                    st = self.status(m)
                except (OSError, ControlError, ConnectionError):
                    continue
                if st["role"] == "leader" and st["acting_leader"]:
                    return m
            if time.monotonic() > deadline:
                raise TimeoutError("no leader elected")
            time.sleep(0.05)

    def wait_caught_up(self, timeout: float = 15.0) -> None:
        """Every running member is connected to every other and has applied the leader's commit index."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                statuses = [self.status(m) for m in self.running()]
                commit = max(s["commit_index"] for s in statuses)
                if all(s["applied_index"] >= commit and all(p["connected"] for p in s["peers"]) for s in statuses):
                    return
            except (OSError, ControlError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("members did not catch up")
            time.sleep(0.05)

    def kill(self, member: Member, group: bool = False, sig: int = signal.SIGKILL) -> None:
        if member.proc is None:
            return
        if group:
            os.killpg(member.proc.pid, sig)
        else:
            os.kill(member.proc.pid, sig)
        if sig == signal.SIGKILL:
            member.proc.wait()
            if group:
                return
            # Anything the main PID forked must not outlive it.
            try:
                os.killpg(member.proc.pid, 0)
                survivors = True
            except ProcessLookupError:
                survivors = False
            if survivors:
                os.killpg(member.proc.pid, signal.SIGKILL)
                raise AssertionError(f"a child of {member.node_id} outlived its parent")

    def stop_all(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                try:
                    os.killpg(m.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                m.proc.wait()

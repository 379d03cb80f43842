"""Secrets and configs through real daemons and real runc containers: a task reads its
secret from a tmpfs under /run/secrets with the uid and mode given, and its config at
its target, read-only (a 700 KB one too: its value spans many Raft entries); the value reaches no other node (a worker without such a task has
no trace of it anywhere in its state directory) and no disk of the node that runs it
(outside the Raft store); a secret in use cannot be removed; Docker's rotation works."""
from __future__ import annotations

import hashlib
import os
import secrets as random

import pytest

from swarm.lab.localcluster import eventually
from swarm.runtime import mounts

# The task prints its secret's digest (a log is on disk: the value itself must not be there).
SCRIPT = ("sha256sum /run/secrets/db_pw | cut -c1-64; grep ' /run/secrets/db_pw ' /proc/mounts | cut -d' ' -f3; "
          "stat -c 'owner=%u mode=%a' /run/secrets/db_pw; cat /etc/app.conf; sha256sum /big | cut -c1-64; "
          "(echo more >> /etc/app.conf) 2>/dev/null && echo config-writable || echo config-read-only; "
          "sleep 1000")


@pytest.fixture
def nodes(swarm, demo_tar):
    m1 = swarm.init("m1")
    try:
        w1 = swarm.join("w1", m1, "worker")
        for node in (m1, w1):
            swarm.run(node, "image", "import", demo_tar, "demo:1")
        eventually(lambda: swarm.run(m1, "service", "create", "--detach", "--name", "probe", "--replicas", "0",
                                     "demo:1", check=False).returncode == 0, 30, "the image known to the manager")
        swarm.run(m1, "service", "rm", "probe")
        yield m1, w1
    finally:
        swarm.stop_containers()


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def task_lines(swarm, m1, service: str) -> list[str]:
    logs = swarm.run(m1, "service", "logs", service).stdout
    return [line.split("| ", 1)[1] for line in logs.splitlines() if "| " in line]


def files_holding(root: str, value: bytes, skip: tuple[str, ...] = ()) -> list[str]:
    """The files under `root` (outside the `skip` directories and tmpfs mounts) whose bytes hold `value`."""
    tmpfs = {point for point, fstype in mounts.mountinfo(root) if fstype == "tmpfs"}
    found = []
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in tmpfs and os.path.join(top, d) not in skip]
        for name in files:
            path = os.path.join(top, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            try:
                with open(path, "rb") as f:
                    if value in f.read():
                        found.append(path)
            except OSError:
                continue
    return found


def test_a_secret_and_a_config_reach_their_task_only_and_rotate(swarm, nodes, tmp_path):
    m1, w1 = nodes
    value, rotated = f"pw-{random.token_hex(12)}".encode(), f"pw2-{random.token_hex(12)}".encode()
    (tmp_path / "pw").write_bytes(value)
    (tmp_path / "pw2").write_bytes(rotated)
    (tmp_path / "app.conf").write_bytes(b"port=80\n")
    big = random.token_hex(350_000).encode()     # 700 KB: stored over many Raft entries (chunk records)
    (tmp_path / "big").write_bytes(big)
    swarm.run(m1, "secret", "create", "db_pw", str(tmp_path / "pw"))
    swarm.run(m1, "config", "create", "app.conf", str(tmp_path / "app.conf"))
    swarm.run(m1, "config", "create", "big", str(tmp_path / "big"))
    swarm.run(m1, "service", "create", "--detach", "--name", "app", "--constraint", "node.hostname==m1",
              "--secret", "source=db_pw,target=db_pw,uid=65534,mode=0400",
              "--config", "source=app.conf,target=/etc/app.conf", "--config", "big", "demo:1", "sh", "-c", SCRIPT)
    eventually(lambda: "config-read-only" in task_lines(swarm, m1, "app"), 90, "the task to read its files")
    assert task_lines(swarm, m1, "app") == [digest(value), "tmpfs", "owner=65534 mode=400", "port=80",
                                            digest(big), "config-read-only"]

    # The value went to m1's task only: no file of the worker holds it, nor any disk file of m1
    # outside its Raft store (the task's copy is on a tmpfs).
    assert files_holding(w1.state_dir, value) == []
    assert files_holding(m1.state_dir, value, skip=(os.path.join(m1.state_dir, "raft"),)) == []
    # ...and no answer shows it
    assert value not in swarm.run(m1, "secret", "inspect", "db_pw").stdout.encode()
    assert value not in swarm.run(m1, "service", "inspect", "app").stdout.encode()

    refused = swarm.run(m1, "secret", "rm", "db_pw", check=False)
    assert (refused.returncode, refused.stderr) == (
        1, "Error: secret 'db_pw' is in use by the following service: app\n")
    refused = swarm.run(m1, "config", "rm", "app.conf", check=False)
    assert refused.stderr == "Error: config 'app.conf' is in use by the following service: app\n"

    # Docker's rotation: a new secret at the old target, then the old one can go.
    swarm.run(m1, "secret", "create", "db_pw_v2", str(tmp_path / "pw2"))
    swarm.run(m1, "service", "update", "--detach", "--secret-rm", "db_pw",
              "--secret-add", "source=db_pw_v2,target=db_pw,uid=65534,mode=0400", "app")
    eventually(lambda: digest(rotated) in task_lines(swarm, m1, "app"), 90, "the new task to read the new value")
    assert swarm.run(m1, "secret", "rm", "db_pw").stdout == "db_pw\n"
    assert [row["name"] for row in swarm.json(m1, "secret", "ls")] == ["db_pw_v2"]
    assert files_holding(w1.state_dir, rotated) == []

"""Encryption at rest and autolock through real daemons: the Raft files of every manager
hold no secret's value; with autolock a restarted manager is locked until `swarm unlock`
gets the right key, then catches up with nothing lost; the key rotates and autolock turns off."""
import json
import os

import pytest

from swarm.lab.localcluster import Swarm, eventually

SECRET_VALUE = "correct-horse-battery-staple-0b5e7c"


@pytest.fixture
def swarm3(tmp_path):
    swarm = Swarm(str(tmp_path))
    try:
        yield swarm
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def raft_bytes(node) -> bytes:
    out = b""
    for root, _, files in os.walk(os.path.join(node.state_dir, "raft")):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out += f.read()
    return out


def key_file(node) -> dict:
    with open(os.path.join(node.state_dir, "certs", "raft-key.json")) as f:
        return json.load(f)


def wrapped(node) -> bool:
    return "wrapped_data_key" in key_file(node)


def test_no_manager_keeps_a_secret_or_the_ca_key_in_the_clear(swarm3, tmp_path):
    m1 = swarm3.init("m1")
    m2 = swarm3.join("m2", m1, "manager")
    value = tmp_path / "pw"
    value.write_text(SECRET_VALUE)
    swarm3.run(m1, "secret", "create", "db_pw", str(value))
    swarm3.run(m1, "network", "create", "marker-net")
    eventually(lambda: "marker-net" in swarm3.run(m2, "network", "ls").stdout, 10, "m2 to catch up")
    for node in (m1, m2):
        data = raft_bytes(node)
        assert len(data) > 1000                                  # the files are there, and hold the records
        assert SECRET_VALUE.encode() not in data, node.name
        assert b"BEGIN" not in data and b"marker-net" not in data    # the CA key's PEM, any record
        assert not wrapped(node)                                  # autolock off: the data key in the clear
        leftovers = [f for f in os.listdir(node.state_dir) if f.startswith("bootstrap")]
        assert leftovers == []


def test_autolock_locks_a_restarted_manager_until_the_right_key(swarm3):
    m1 = swarm3.init("m1", "--autolock")
    out = swarm3.run(m1, "unlock-key", "-q").stdout.strip()
    key = out
    assert key.startswith("SWMKEY-1-")
    m2 = swarm3.join("m2", m1, "manager")
    m3 = swarm3.join("m3", m1, "manager")
    assert all(wrapped(n) for n in (m1, m2, m3))                 # from the first byte, joiners too
    swarm3.run(m1, "network", "create", "before")

    swarm3.kill(m2)
    restarted = swarm3.run(m2, "daemon", "--detach")
    assert "locked" in restarted.stderr
    refused = swarm3.run(m2, "node", "ls", check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == "Error: swarm is locked: run swarm unlock"
    swarm3.run(m1, "network", "create", "while-locked")         # the other two keep the quorum
    other = "SWMKEY-1-" + "A" * 43
    for bad, words in ((other, "does not unlock this manager"), ("nonsense", "should start with SWMKEY-1-"),
                       ("", "no unlock key given")):
        proc = swarm3.run(m2, "unlock", input=bad + "\n", check=False)
        assert proc.returncode == 1 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    swarm3.run(m2, "unlock", input=key + "\n")
    # caught up, nothing lost (the unlocked manager replays and hears from the leader first)
    eventually(lambda: {"before", "while-locked"} <= {n["name"] for n in swarm3.json(m2, "network", "ls")},
               20, "the unlocked manager to catch up")
    again = swarm3.run(m2, "unlock", input=key + "\n", check=False)
    assert again.returncode == 1 and "swarm is not locked" in again.stderr

    # Rotation: every running manager rewraps; the old key no longer opens a restarted one.
    before = key_file(m3)
    new_key = swarm3.run(m1, "unlock-key", "--rotate", "-q").stdout.strip()
    assert new_key.startswith("SWMKEY-1-") and new_key != key
    assert swarm3.run(m3, "unlock-key", "-q").stdout.strip() == new_key
    eventually(lambda: key_file(m3) != before, 10, "m3 to rewrap its data key")
    swarm3.kill(m3)
    swarm3.run(m3, "daemon", "--detach")
    assert swarm3.run(m3, "unlock", input=key + "\n", check=False).returncode == 1
    swarm3.run(m3, "unlock", input=new_key + "\n")
    assert "while-locked" in swarm3.run(m3, "network", "ls").stdout

    # Autolock off: the data key goes back into the clear on every manager; no key to show.
    swarm3.run(m1, "update", "--autolock=false")
    eventually(lambda: not any(wrapped(n) for n in (m1, m2, m3)), 10, "every manager to unwrap")
    proc = swarm3.run(m1, "unlock-key", check=False)
    assert proc.returncode == 1 and "no unlock key is set" in proc.stderr
    swarm3.kill(m2)
    assert "locked" not in swarm3.run(m2, "daemon", "--detach").stderr
    assert "while-locked" in swarm3.run(m2, "network", "ls").stdout


def test_autolock_turned_on_later_reaches_a_promoted_worker(swarm3):
    m1 = swarm3.init("m1")
    w1 = swarm3.join("w1", m1, "worker")
    assert not os.path.exists(os.path.join(w1.state_dir, "certs", "raft-key.json"))   # a worker holds no key
    updated = swarm3.run(m1, "update", "--autolock=true").stdout
    assert "SWMKEY-1-" in updated and "swarm unlock" in updated
    eventually(lambda: wrapped(m1), 10, "m1 to wrap its data key")
    swarm3.run(m1, "node", "promote", "w1")
    eventually(lambda: os.path.exists(os.path.join(w1.state_dir, "certs", "raft-key.json")) and wrapped(w1),
               30, "the promoted node to hold the wrapped data key")
    key = swarm3.run(m1, "unlock-key", "-q").stdout.strip()
    swarm3.kill(w1)
    assert "locked" in swarm3.run(w1, "daemon", "--detach").stderr
    swarm3.run(w1, "unlock", input=key + "\n")
    eventually(lambda: swarm3.run(w1, "node", "ls", check=False).returncode == 0, 20, "w1 serving as a manager")
    worker_refusal = swarm3.run(swarm3.join("w2", m1, "worker"), "unlock-key", check=False)
    assert worker_refusal.returncode == 1 and "not a swarm manager" in worker_refusal.stderr

"""`image save` archives against a real Docker: Debian's dockerd (20.10), started here on its own
socket, data root and containerd namespace (vfs storage, no iptables, no bridge), loads what we
save with the same image ids, and what it saves loads into our store with the same ids too.
"""
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from swarm.runtime.images import ImageStore
from tests.unit.test_image_registry_store import APP1, BASE, pull


@pytest.fixture
def dockerd(tmp_path):
    base = tmp_path / "dockerd"
    base.mkdir()
    short = tempfile.mkdtemp(prefix="dk", dir="/tmp")    # containerd's socket path must stay under 108 bytes
    sock = f"unix://{short}/docker.sock"
    log = open(base / "log", "wb")
    proc = subprocess.Popen(["dockerd", "--data-root", str(base / "data"), "--exec-root", f"{short}/x",
                             "--pidfile", str(base / "pid"), "-H", sock, "--iptables=false", "--ip6tables=false",
                             "--bridge=none", "--storage-driver=vfs", "--containerd-namespace", f"t{os.getpid()}",
                             "--containerd-plugins-namespace", f"tp{os.getpid()}"], stdout=log, stderr=log)

    def docker(*args):
        return subprocess.run(["docker", "-H", sock, *args], capture_output=True, text=True, timeout=120)

    try:
        deadline = time.monotonic() + 60
        while docker("version").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (base / "log").read_text()[-2000:]
            time.sleep(0.5)
        yield docker
    finally:
        proc.send_signal(signal.SIGTERM)     # it stops the containerd it started
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for mount in _mounts_under(str(base)) + _mounts_under(short):   # dockerd binds its data root on itself
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(short, ignore_errors=True)


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p == path or p.startswith(path + "/")), reverse=True)


def test_docker_loads_what_we_save_and_we_load_what_docker_saves(dockerd, tmp_path):
    store = ImageStore(str(tmp_path / "ours"))
    pulled_id, _ = pull(store, "reg.example:5000/team/app:2", [BASE, APP1])
    imported_id = store.import_rootfs(io.BytesIO(BASE), "busybox:1", now=1.0)
    ours = str(tmp_path / "ours.tar")
    store.save(["reg.example:5000/team/app:2", "busybox:1"], ours)

    loaded = dockerd("load", "-i", ours)
    assert loaded.returncode == 0, loaded.stderr
    assert sorted(loaded.stdout.splitlines()) == ["Loaded image: busybox:1", "Loaded image: reg.example:5000/team/app:2"]
    inspected = json.loads(dockerd("image", "inspect", "reg.example:5000/team/app:2", "busybox:1").stdout)
    assert [i["Id"] for i in inspected] == [f"sha256:{pulled_id}", f"sha256:{imported_id}"]
    assert inspected[0]["Config"]["Cmd"] == ["sh"]

    dockerd("tag", "busybox:1", "team/copy:9")
    theirs = str(tmp_path / "theirs.tar")
    saved = dockerd("save", "-o", theirs, "team/copy:9", "reg.example:5000/team/app:2")
    assert saved.returncode == 0, saved.stderr
    fresh = ImageStore(str(tmp_path / "fresh"))
    assert sorted(fresh.load_archive(theirs)) == ["reg.example:5000/team/app:2", "team/copy:9"]
    assert fresh.image_id("team/copy:9") == imported_id and fresh.image_id("reg.example:5000/team/app:2") == pulled_id
    # and what came from docker can be saved and pushed again from here
    assert fresh.push_source("team/copy:9").layers[0].media_type.endswith("tar.gzip")

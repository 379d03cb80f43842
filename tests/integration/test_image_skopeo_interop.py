"""`image save` archives against a second implementation of the format: Debian's skopeo (the
containers/image library) reads what we save with the same config digests, and writes docker-save
archives that load into our store with the same image ids. (No Docker daemon: the tests never
need one, and one would change the machine's own network settings.)"""
import io
import json
import subprocess

from swarm.runtime.images import ImageStore
from tests.unit.test_image_registry_store import APP1, BASE, pull


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)


def test_skopeo_reads_what_we_save_and_we_load_what_skopeo_writes(tmp_path):
    store = ImageStore(str(tmp_path / "ours"))
    pulled_id, _ = pull(store, "reg.example:5000/team/app:2", [BASE, APP1])
    imported_id = store.import_rootfs(io.BytesIO(BASE), "busybox:1", now=1.0)
    ours = str(tmp_path / "ours.tar")
    store.save(["reg.example:5000/team/app:2", "busybox:1"], ours)

    for ref, image_id, cmd in (("reg.example:5000/team/app:2", pulled_id, ["sh"]),
                               ("docker.io/library/busybox:1", imported_id, None)):
        config = skopeo("inspect", "--config", "--raw", f"docker-archive:{ours}:{ref}")
        assert config.returncode == 0, config.stderr
        assert json.loads(config.stdout)["config"].get("Cmd") == cmd
        raw = skopeo("inspect", "--raw", f"docker-archive:{ours}:{ref}")
        assert json.loads(raw.stdout)["config"]["digest"] == f"sha256:{image_id}"

    # skopeo copies our archive into one of its own writing (docker-archive), which loads here
    theirs = str(tmp_path / "theirs.tar")
    copied = skopeo("copy", f"docker-archive:{ours}:reg.example:5000/team/app:2",
                    f"docker-archive:{theirs}:team/copy:9")
    assert copied.returncode == 0, copied.stderr
    fresh = ImageStore(str(tmp_path / "fresh"))
    assert fresh.load_archive(theirs) == ["team/copy:9"]
    assert fresh.image_id("team/copy:9") == pulled_id
    # and what came from skopeo can be pushed again from here
    assert fresh.push_source("team/copy:9").layers[0].media_type.endswith("tar.gzip")

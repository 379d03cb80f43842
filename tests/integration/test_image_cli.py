"""`swarm image tag|inspect|ls|save|rm|prune` against a real daemon (and real runc tasks).

The archive `image save` writes is read back by our `image load` on another
node and by Debian's skopeo (`skopeo inspect docker-archive:`); an image a
running task uses survives `image rm` and `image prune -a` until the task is gone.
"""
import json
import os
import subprocess
import sys

from swarm.lab.localcluster import ROOT, eventually


def test_tag_inspect_ls_save_load_rm(swarm, demo_tar, tmp_path):
    m1 = swarm.init("m1")
    image_id = swarm.run(m1, "image", "import", demo_tar, "demo:1").stdout.strip()
    swarm.run(m1, "image", "tag", "demo:1", "127.0.0.1:5000/team/demo:2")
    bad = swarm.run(m1, "image", "tag", "demo:1", "Team/Demo", check=False)
    assert (bad.returncode, bad.stderr) == (1, "Error: invalid reference format: repository name must be lowercase\n")

    (info,) = json.loads(swarm.run(m1, "image", "inspect", "127.0.0.1:5000/team/demo:2").stdout)
    assert info["Id"].removeprefix("sha256:") == image_id.removeprefix("sha256:")
    assert info["RepoTags"] == ["127.0.0.1:5000/team/demo:2", "demo:1"] and info["RepoDigests"] == []
    assert info["Os"] == "linux" and info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) == 1
    assert swarm.run(m1, "image", "inspect", "-f", "{{.Architecture}}", "demo:1").stdout == "amd64\n"
    missing = swarm.run(m1, "image", "inspect", "nosuch", check=False)
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "[]\n", "Error: No such image: nosuch\n")

    rows = swarm.run(m1, "image", "ls", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}", "--digests").stdout
    assert rows.splitlines() == ["127.0.0.1:5000/team/demo 2 <none>", "demo 1 <none>"]
    short = info["Id"].removeprefix("sha256:")[:12]
    assert swarm.run(m1, "image", "ls", "-q").stdout == f"{short}\n{short}\n"

    # save -o replaces an existing file, as docker does; the archive loads here and in skopeo
    out = tmp_path / "demo.tar"
    out.write_text("old")
    swarm.run(m1, "image", "save", "-o", str(out), "demo:1", "127.0.0.1:5000/team/demo:2")
    probe = subprocess.run(["skopeo", "inspect", f"docker-archive:{out}:docker.io/library/demo:1"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["Layers"] == info["RootFS"]["Layers"]      # uncompressed: digest = diff_id
    with open(tmp_path / "stdout.tar", "wb") as f:          # without -o: the archive on stdout
        env = dict(os.environ, PYTHONPATH=ROOT, SWARM_STATE_DIR=m1.state_dir)
        subprocess.run([sys.executable, "-m", "swarm", "image", "save", "demo:1"], stdout=f, env=env, check=True,
                       cwd=ROOT, timeout=60)
    assert os.path.getsize(tmp_path / "stdout.tar") > 1 << 20
    assert not [n for n in os.listdir(m1.state_dir) if n.startswith(".image-")]     # its temporary file went

    # rm: the first tag only untags; the last one deletes the image and its layer
    assert swarm.run(m1, "image", "rm", "127.0.0.1:5000/team/demo:2").stdout == \
        "Untagged: 127.0.0.1:5000/team/demo:2\n"
    removed = swarm.run(m1, "image", "rm", "demo:1", "nosuch:1", check=False)
    assert removed.returncode == 1 and removed.stderr == "Error: No such image: nosuch:1\n"
    assert removed.stdout.splitlines()[:2] == ["Untagged: demo:1", f"Deleted: {info['Id']}"]
    assert swarm.run(m1, "image", "ls", "-q").stdout == ""
    assert os.listdir(os.path.join(m1.state_dir, "images", "layers")) == []

    loaded = swarm.run(m1, "image", "load", "-i", str(out)).stdout
    assert sorted(loaded.splitlines()) == ["Loaded image: 127.0.0.1:5000/team/demo:2", "Loaded image: demo:1"]
    (again,) = json.loads(swarm.run(m1, "image", "inspect", "demo:1").stdout)
    assert again["Id"] == info["Id"] and again["RepoTags"] == info["RepoTags"]


def test_an_image_a_task_uses_survives_rm_and_prune(swarm, demo_tar):
    m1 = swarm.init("m1")
    swarm.run(m1, "image", "import", demo_tar, "demo:1")
    swarm.run(m1, "image", "import", demo_tar, "spare:1")     # another image, same layer, no task
    eventually(lambda: swarm.run(m1, "service", "create", "--name", "web", "--detach", "demo:1", "sleep", "1000",
                                 check=False).returncode == 0, 20, "the image known to the manager")
    eventually(lambda: "Running" in swarm.run(m1, "service", "ps", "web").stdout, 60, "the task running")

    busy = swarm.run(m1, "image", "rm", "demo:1", check=False)
    assert busy.returncode == 1
    assert busy.stderr.startswith('Error: conflict: unable to remove repository reference "demo:1" (must force)')
    pruned = swarm.run(m1, "image", "prune", "-a", "-f").stdout
    assert pruned.startswith("Deleted Images:\nuntagged: spare:1\ndeleted: sha256:")
    assert "demo:1" not in pruned
    (info,) = json.loads(swarm.run(m1, "image", "inspect", "demo:1").stdout)
    layer = os.path.join(m1.state_dir, "images", "layers", info["RootFS"]["Layers"][0].removeprefix("sha256:"))
    assert os.path.isdir(layer)                                 # shared with the pruned image, used by the task

    swarm.run(m1, "service", "rm", "web")
    eventually(lambda: not os.listdir(os.path.join(m1.state_dir, "tasks")) or
               all(not os.path.exists(os.path.join(m1.state_dir, "tasks", t, "meta.json"))
                   for t in os.listdir(os.path.join(m1.state_dir, "tasks"))), 60, "the task's bundle removed")
    final = swarm.run(m1, "image", "prune", "--all", "--force").stdout
    assert final.startswith(f"Deleted Images:\nuntagged: demo:1\ndeleted: {info['Id']}\ndeleted: sha256:")
    assert swarm.run(m1, "image", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    assert not os.path.exists(layer)

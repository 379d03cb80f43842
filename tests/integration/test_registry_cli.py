"""`swarm image pull|push`, `swarm login|logout` against real registries (Debian's docker-registry).

Each registry kind of the fixtures is used: plain HTTP (push from one node,
pull back on another node's store), TLS with htpasswd (login, the 0600
config.json, a wrong password), and a token server (login then pull). The
bad inputs end in one sentence and exit 1, with nothing written to the store.
"""
import base64
import json
import os
import stat

from tests.integration.registry import (REGISTRY_PASSWORD, REGISTRY_USER, demo_layer, free_port, skopeo_copy,
                                        tar_layer, write_oci_index, write_oci_layout)


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _store_files(node) -> list[str]:
    """The blobs and layers in a node's store (nothing may stay after a failed pull)."""
    found = []
    for sub in ("blobs", "layers", "images"):
        for dirpath, _dirs, files in os.walk(os.path.join(node.state_dir, "images", sub)):
            found += [os.path.join(dirpath, f) for f in files]
    return found


def test_push_then_pull_back_on_another_node(swarm, registry_plain, demo_tar):
    m1 = swarm.init("m1")
    w1 = swarm.join("w1", m1, "worker")
    ref = f"{registry_plain.address}/team/app:1.2"
    swarm.run(m1, "image", "import", demo_tar, "demo:1")
    swarm.run(m1, "image", "tag", "demo:1", ref)

    pushed = _lines(swarm.run(m1, "image", "push", ref).stdout)
    assert pushed[0] == f"The push refers to repository [{registry_plain.address}/team/app]"
    layer_lines = pushed[1:-1]
    assert layer_lines[0].endswith(": Preparing") and layer_lines[-1].endswith(": Pushed"), pushed
    assert len({line.split(":")[0] for line in layer_lines}) == 1       # one layer; the configuration is not listed
    tag, _, rest = pushed[-1].partition(": digest: ")
    digest, _, size = rest.partition(" size: ")
    assert tag == "1.2" and digest.startswith("sha256:") and int(size) > 0
    status, manifest = registry_plain.get(f"/v2/team/app/manifests/{digest}")
    assert status == 200 and len(manifest) == int(size)
    (info,) = json.loads(swarm.run(m1, "image", "inspect", ref).stdout)
    assert f"{registry_plain.address}/team/app@{digest}" in info["RepoDigests"]

    again = _lines(swarm.run(m1, "image", "push", ref).stdout)
    assert again[1].endswith(": Preparing") and again[-2].endswith(": Layer already exists"), again
    assert again[-1] == f"1.2: digest: {digest} size: {size}"

    pulled = swarm.run(w1, "image", "pull", ref)
    lines = _lines(pulled.stdout)
    assert lines[0] == "1.2: Pulling from team/app"
    layer = lines[1].split(":")[0]
    assert lines[1:6] == [f"{layer}: Pulling fs layer", f"{layer}: Verifying Checksum", f"{layer}: Download complete",
                          f"{layer}: Pull complete", f"Digest: {digest}"]
    assert lines[6:] == [f"Status: Downloaded newer image for {ref}", ref]
    (copy,) = json.loads(swarm.run(w1, "image", "inspect", ref).stdout)
    assert copy["Id"] == info["Id"] and copy["RepoDigests"] == [f"{registry_plain.address}/team/app@{digest}"]

    # the same tag again: up to date; by digest with -q: only the reference, and the registry is not asked
    assert _lines(swarm.run(w1, "image", "pull", ref).stdout)[-2:] == [f"Status: Image is up to date for {ref}", ref]
    manifests_before = registry_plain.requests("/v2/team/app/manifests/")
    pinned = f"{registry_plain.address}/team/app@{digest}"
    assert swarm.run(w1, "image", "pull", "-q", pinned).stdout == pinned + "\n"
    assert registry_plain.requests("/v2/team/app/manifests/") == manifests_before


def test_login_pull_logout_over_tls(swarm, registry_tls, demo_tar, tmp_path):
    host = registry_tls.address
    m1 = swarm.init("m1")
    registry_tls.pki.install(os.path.join(m1.state_dir, "certs.d"), host)
    layout = str(tmp_path / "layout")
    write_oci_layout(layout, "1", [demo_layer(demo_tar)])
    skopeo_copy(f"oci:{layout}:1", f"docker://{host}/team/app:1", dest_certs=os.path.join(m1.state_dir, "certs.d",
                                                                                          host),
                dest_creds=(REGISTRY_USER, REGISTRY_PASSWORD))
    config_json = os.path.join(m1.state_dir, "config.json")

    anonymous = swarm.run(m1, "image", "pull", f"{host}/team/app:1", check=False)
    assert anonymous.returncode == 1 and anonymous.stderr.startswith("Error: unauthorized: "), anonymous
    assert len(_lines(anonymous.stderr)) == 1

    wrong = swarm.run(m1, "login", "-u", REGISTRY_USER, "-p", "wrong", host, check=False)
    assert wrong.returncode == 1, wrong
    assert _lines(wrong.stderr) == ["WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
                                    _lines(wrong.stderr)[1]]
    assert _lines(wrong.stderr)[1].startswith("Error: unauthorized: ")
    assert not os.path.exists(config_json)

    ok = _run_stdin(swarm, m1, REGISTRY_PASSWORD + "\n", "login", "--username", REGISTRY_USER, "--password-stdin",
                    host)
    assert ok.stdout == "Login Succeeded\n", ok
    assert stat.S_IMODE(os.stat(config_json).st_mode) == 0o600
    with open(config_json) as f:
        assert set(json.load(f)["auths"]) == {host}

    assert _lines(swarm.run(m1, "image", "pull", f"{host}/team/app:1").stdout)[-1] == f"{host}/team/app:1"
    swarm.run(m1, "image", "tag", f"{host}/team/app:1", f"{host}/team/copy:2")      # push with the stored login
    assert swarm.run(m1, "image", "push", "-q", f"{host}/team/copy:2").stdout == f"{host}/team/copy:2\n"
    assert registry_tls.get("/v2/team/copy/manifests/2")[0] == 401                   # it needs the login ...
    basic = "Basic " + base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    accept = "application/vnd.oci.image.manifest.v1+json"      # the manifest skopeo pushed, sent again as it was
    assert registry_tls.get("/v2/team/copy/manifests/2", {"Authorization": basic, "Accept": accept})[0] == 200
    assert swarm.run(m1, "logout", host).stdout == f"Removing login credentials for {host}\n"
    with open(config_json) as f:
        assert json.load(f)["auths"] == {}
    assert swarm.run(m1, "logout", host).stdout == f"Not logged in to {host}\n"
    assert swarm.run(m1, "logout").stdout == "Not logged in to https://index.docker.io/v1/\n"


def test_token_registry_login_then_pull(swarm, registry_token, demo_tar, tmp_path):
    host = registry_token.address
    m1 = swarm.init("m1")
    layout = str(tmp_path / "layout")
    write_oci_layout(layout, "2", [demo_layer(demo_tar), tar_layer({"etc/app.conf": b"x=1\n"})])
    skopeo_copy(f"oci:{layout}:2", f"docker://{host}/team/app:2", dest_registry=registry_token,
                dest_creds=(REGISTRY_USER, REGISTRY_PASSWORD))

    refused = swarm.run(m1, "image", "pull", "-q", f"{host}/team/app:2", check=False)
    assert (refused.returncode, refused.stdout) == (1, "") and refused.stderr.startswith("Error: unauthorized: ")
    assert _run_stdin(swarm, m1, REGISTRY_PASSWORD, "login", "-u", REGISTRY_USER, "--password-stdin",
                      f"http://{host}/").stdout == "Login Succeeded\n"
    assert swarm.run(m1, "image", "pull", "-q", f"{host}/team/app:2").stdout == f"{host}/team/app:2\n"
    (info,) = json.loads(swarm.run(m1, "image", "inspect", f"{host}/team/app:2").stdout)
    assert len(info["RootFS"]["Layers"]) == 2


def test_mirror_serves_docker_hub_names(swarm, registry_plain, demo_tar, tmp_path):
    """--registry-mirror on init: a docker.io name is pulled from the mirror (nothing leaves the machine)."""
    mirror = f"http://{registry_plain.address}"
    m1 = swarm.init("m1", "--registry-mirror", mirror, "--insecure-registry", "10.9.0.0/16")
    with open(os.path.join(m1.state_dir, "node.json")) as f:
        node = json.load(f)
    assert (node["registry_mirrors"], node["insecure_registries"]) == ([mirror], ["10.9.0.0/16"])
    layout = str(tmp_path / "layout")
    write_oci_layout(layout, "1", [demo_layer(demo_tar)])
    skopeo_copy(f"oci:{layout}:1", f"docker://{registry_plain.address}/team/tool:1", dest_registry=registry_plain)
    # on a terminal: the layer's line is redrawn in place (cleared, then written again)
    screen = _run_tty(m1, "image", "pull", "team/tool:1")
    layer = screen.split("\x1b[2K\r", 1)[1].split(":", 1)[0]
    assert screen.startswith("1: Pulling from team/tool\r\n\x1b[2K\r" + f"{layer}: ")
    assert f"\x1b[1A\x1b[2K\r{layer}: Pull complete\r\n" in screen
    assert screen.endswith("Status: Downloaded newer image for team/tool:1\r\ndocker.io/team/tool:1\r\n")


def test_bad_inputs_are_one_sentence_and_leave_nothing(swarm, registry_plain, demo_tar, tmp_path):
    m1 = swarm.init("m1")
    host = registry_plain.address

    def refused(*args: str) -> str:
        done = swarm.run(m1, *args, check=False)
        assert done.returncode == 1 and len(_lines(done.stderr)) == 1, done
        return done.stderr

    assert refused("image", "pull", "Team/App") == \
        "Error: invalid reference format: repository name must be lowercase\n"
    assert refused("image", "pull", f"{host}/team/app:1@sha256:{'a' * 40}") == \
        "Error: invalid reference format: invalid checksum digest length\n"
    closed = f"127.0.0.1:{free_port()}"
    assert refused("image", "pull", f"{closed}/team/app:1") == f"Error: registry {closed} unreachable\n"
    assert refused("image", "pull", "registry.nosuch.invalid/team/app:1") == \
        "Error: registry registry.nosuch.invalid unreachable\n"
    empty = _run_stdin(swarm, m1, "", "login", "-u", "u", "--password-stdin", host, check=False)
    assert (empty.returncode, empty.stderr) == (1, "Error: Cannot perform an interactive login from a non TTY "
                                                   "device\n")
    assert refused("image", "pull", f"{host}/team/app:9") == f"Error: No such image: {host}/team/app:9\n"
    assert refused("image", "push", f"{host}/team/nosuch:1") == \
        f"Error: An image does not exist locally with the tag: {host}/team/nosuch\n"

    # an index with only arm64: no matching platform, and nothing of it in the store
    layout = str(tmp_path / "layout")
    write_oci_index(layout, "arm", [("arm64", [tar_layer({"bin/x": b"arm"})])])
    skopeo_copy(f"oci:{layout}:arm", f"docker://{host}/team/multi:arm", dest_registry=registry_plain,
                all_platforms=True)
    before = _store_files(m1)
    assert refused("image", "pull", f"{host}/team/multi:arm") == \
        "Error: no matching manifest for linux/amd64 in the manifest list entries\n"
    assert _store_files(m1) == before
    assert swarm.run(m1, "image", "ls", "-q").stdout == ""


def _run_stdin(swarm, node, text: str, *args: str, check: bool = True):
    import subprocess
    import sys

    from swarm.lab.localcluster import ROOT

    env = dict(os.environ, PYTHONPATH=ROOT, SWARM_STATE_DIR=node.state_dir)
    done = subprocess.run([sys.executable, "-m", "swarm", *args], input=text, capture_output=True, text=True,
                          env=env, timeout=60, cwd=ROOT)
    assert done.returncode == 0 or not check, done
    return done


def _run_tty(node, *args: str) -> str:
    """What `swarm ARGS` writes to a terminal (a pseudo-terminal here)."""
    import pty
    import subprocess
    import sys

    from swarm.lab.localcluster import ROOT

    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=ROOT, SWARM_STATE_DIR=node.state_dir, COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "swarm", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:        # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(60) == 0, proc.stderr.read()
    return out.decode()

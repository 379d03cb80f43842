"""Services of registry images on a 3-node cluster (real daemons, runc, Debian's docker-registry).

Only the registry has the image: `service create` pins the tag to its digest on the
manager and every node pulls it before its tasks start (two tasks of a node share one
download); a tag pushed again changes nothing until `service update --image`; the shared
base layer is downloaded once per node. Against the registry with htpasswd auth, tasks
run with --with-registry-auth and are rejected with the registry's "unauthorized"
without it, and the password is never written on a worker.
"""
import base64
import json
import os

import pytest

from swarm.daemon.registry import encode_auth
from swarm.lab.localcluster import eventually
from tests.integration.registry import (REGISTRY_PASSWORD, REGISTRY_USER, demo_layer, skopeo_copy, tar_layer,
                                        write_oci_layout)
from tests.integration.test_registry_cli import _run_stdin

SLEEPER = ("sh", "-c", "cat /etc/version; exec sleep 1000")


@pytest.fixture
def cluster(swarm):
    """m1 (manager), w1 and w2 (workers), no image on any of them."""
    try:
        m1 = swarm.init("m1")
        workers = [swarm.join(name, m1, "worker") for name in ("w1", "w2")]
        eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 15, "nodes ready")
        yield swarm, m1, workers
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def push(tmp_path, demo_tar, version: str, ref: str, **skopeo) -> dict:
    """The demo rootfs plus a layer holding /etc/version, pushed by skopeo as `ref`; its digests."""
    layout = str(tmp_path / f"layout-{version}")
    info = write_oci_layout(layout, version, [demo_layer(demo_tar), tar_layer({"etc/version": f"{version}\n".encode()})])
    skopeo_copy(f"oci:{layout}:{version}", f"docker://{ref}", **skopeo)
    return info


def running(swarm, m1, service):
    return [t for t in swarm.json(m1, "service", "ps", service)
            if t["desired_state"] == "running" and t["state"] == "running"]


def spec_image(swarm, m1, service) -> str:
    return swarm.json(m1, "service", "inspect", service)[0]["spec"]["container"]["image"]


def test_a_tag_is_pinned_on_the_manager_and_every_node_pulls_it_once(cluster, registry_plain, demo_tar, tmp_path):
    swarm, m1, _ = cluster
    ref = f"{registry_plain.address}/demo:1"
    v1 = push(tmp_path, demo_tar, "1", ref, dest_registry=registry_plain)
    base = v1["layer_digests"][0]

    swarm.run(m1, "service", "create", "--name", "web", "--replicas", "6", ref, *SLEEPER, timeout=180)
    rows = running(swarm, m1, "web")
    assert len(rows) == 6 and {r["node"] for r in rows} == {"m1", "w1", "w2"}
    pinned = f"{ref}@{v1['manifest_digest']}"
    assert spec_image(swarm, m1, "web") == pinned and {r["image"] for r in rows} == {pinned}
    assert [r["image"] for r in swarm.json(m1, "service", "ls")] == [ref]        # docker's ls: the tag
    # two tasks per node, one download per node
    assert registry_plain.requests(f"GET /v2/demo/blobs/{base}") == 3
    assert "1" in swarm.run(m1, "service", "logs", "web").stdout.split()

    # The tag moves: the service keeps its digest (a new task too) until --image is given again.
    v2 = push(tmp_path, demo_tar, "2", ref, dest_registry=registry_plain)
    assert v2["manifest_digest"] != v1["manifest_digest"] and v2["layer_digests"][0] == base
    swarm.run(m1, "service", "scale", "web=7", timeout=120)
    eventually(lambda: len(running(swarm, m1, "web")) == 7, 60, "a seventh task")
    assert spec_image(swarm, m1, "web") == pinned
    assert {r["image"] for r in running(swarm, m1, "web")} == {pinned}

    swarm.run(m1, "service", "update", "--image", ref, "--update-parallelism", "0", "web", timeout=240)
    repinned = f"{ref}@{v2['manifest_digest']}"
    assert spec_image(swarm, m1, "web") == repinned
    eventually(lambda: {r["image"] for r in running(swarm, m1, "web")} == {repinned}
               and len(running(swarm, m1, "web")) == 7, 120, "every task on the new digest")
    # the base layer both images share was not downloaded again; the new one once per node
    assert registry_plain.requests(f"GET /v2/demo/blobs/{base}") == 3
    assert registry_plain.requests(f"GET /v2/demo/blobs/{v2['layer_digests'][1]}") == 3


def test_no_resolve_image_keeps_the_tag_and_an_image_nobody_has_is_refused(cluster, registry_plain, demo_tar,
                                                                            tmp_path):
    swarm, m1, _ = cluster
    ref = f"{registry_plain.address}/demo:1"
    push(tmp_path, demo_tar, "1", ref, dest_registry=registry_plain)
    missing = swarm.run(m1, "service", "create", "--detach", "--name", "nope", f"{registry_plain.address}/demo:9",
                        check=False)
    assert (missing.returncode, missing.stderr) == (1, f"Error: No such image: {registry_plain.address}/demo:9\n")
    assert swarm.json(m1, "service", "ls") == []
    swarm.run(m1, "service", "create", "--name", "tagged", "--no-resolve-image", "--replicas", "3", ref, *SLEEPER,
              timeout=180)
    assert spec_image(swarm, m1, "tagged") == ref
    # An image imported on one node only (no registry has it): kept as given, with docker's warning.
    swarm.run(m1, "image", "import", demo_tar, "local:1")
    local = swarm.run(m1, "service", "create", "--detach", "--name", "local", "--constraint", "node.hostname==m1",
                      "local:1", "sleep", "1000")
    assert "could not be accessed on a registry to record its digest" in local.stderr
    assert spec_image(swarm, m1, "local") == "local:1"


def test_with_registry_auth_the_workers_pull_and_never_write_the_password(cluster, registry_tls, demo_tar,
                                                                           tmp_path):
    swarm, m1, workers = cluster
    host = registry_tls.address
    ref = f"{host}/private/demo:1"
    for node in (m1, *workers):
        registry_tls.pki.install(os.path.join(node.state_dir, "certs.d"), host)
    push(tmp_path, demo_tar, "1", ref, dest_certs=os.path.join(m1.state_dir, "certs.d", host),
         dest_creds=(REGISTRY_USER, REGISTRY_PASSWORD))

    # The manager has no credentials: its registry refuses, no node has the image.
    refused = swarm.run(m1, "service", "create", "--detach", "--name", "early", ref, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("Error: unauthorized: "), refused
    _run_stdin(swarm, m1, REGISTRY_PASSWORD, "login", "-u", REGISTRY_USER, "--password-stdin", host)

    # Without --with-registry-auth the workers (no login of their own) are refused by the registry.
    swarm.run(m1, "service", "create", "--detach", "--name", "anonymous", "--constraint", "node.role==worker",
              "--restart-delay", "1s", ref, *SLEEPER)

    def rejected():
        return [t for t in swarm.json(m1, "service", "ps", "anonymous") if t["state"] == "rejected"]
    eventually(lambda: len(rejected()) >= 2, 60, "the anonymous task rejected and retried")
    assert {t["error"] for t in rejected()} == {"unauthorized: authentication required"}, rejected()
    assert not running(swarm, m1, "anonymous")

    swarm.run(m1, "service", "create", "--name", "private", "--with-registry-auth", "--replicas", "2",
              "--constraint", "node.role==worker", ref, *SLEEPER, timeout=180)
    rows = running(swarm, m1, "private")
    assert len(rows) == 2 and {r["node"] for r in rows} == {"w1", "w2"}
    [view] = swarm.json(m1, "service", "inspect", "private")
    assert "registry_auth" not in view and REGISTRY_PASSWORD not in json.dumps(view)

    secrets = [REGISTRY_PASSWORD.encode(), base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()),
               encode_auth(REGISTRY_USER, REGISTRY_PASSWORD, host).encode()]
    for worker in workers:
        for directory, _, files in os.walk(worker.state_dir):
            for name in files:
                path = os.path.join(directory, name)
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                assert not [s for s in secrets if s in data], f"{path} holds the registry password"

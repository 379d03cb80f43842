"""Docker's image endpoints with the real docker CLI and docker-py against our Engine API and
a loopback registry: `docker pull` (dockerd's progress stream), `docker images`, `docker image
inspect`, GET /distribution (the index's digest and platforms), and `docker service create`
without --no-resolve-image pinning the digest as Docker's does."""

from swarm.lab.localcluster import eventually
from tests.integration.registry import demo_layer, skopeo_copy, tar_layer, write_oci_index, write_oci_layout
from tests.integration.test_engine_api import docker, one, post, raw_request  # noqa: F401 (one: fixture)


def test_pull_images_distribution_and_a_pinned_service_with_the_docker_cli(one, registry_plain, demo_tar, tmp_path):
    import docker as docker_py

    swarm, m1 = one
    host = registry_plain.address
    # a two-platform image (amd64: the demo rootfs) and a one-platform one
    index = write_oci_index(str(tmp_path / "multi"), "1", [("amd64", [demo_layer(demo_tar)]),
                                                           ("arm64", [tar_layer({"hello": b"arm"})])])
    skopeo_copy(f"oci:{tmp_path / 'multi'}:1", f"docker://{host}/team/app:1", dest_registry=registry_plain,
                all_platforms=True)
    single = write_oci_layout(str(tmp_path / "single"), "2", [demo_layer(demo_tar)])
    skopeo_copy(f"oci:{tmp_path / 'single'}:2", f"docker://{host}/team/one:2", dest_registry=registry_plain)

    pulled = docker(m1, "pull", f"{host}/team/app:1")
    lines = pulled.stdout.strip().splitlines()
    assert lines[0] == "1: Pulling from team/app", lines
    assert any(line.endswith(": Pull complete") for line in lines), lines
    assert f"Digest: {index['index_digest']}" in lines, lines
    assert lines[-2:] == [f"Status: Downloaded newer image for {host}/team/app:1", f"{host}/team/app:1"], lines
    again = docker(m1, "pull", f"{host}/team/app:1").stdout.strip().splitlines()
    assert again[-2] == f"Status: Image is up to date for {host}/team/app:1", again
    missing = docker(m1, "pull", f"{host}/team/nosuch:1", check=False)
    assert missing.returncode == 1 and "nosuch" in missing.stderr, missing.stderr
    status, body = raw_request(m1, post("/v1.50/images/create?fromImage=team/UPPER&tag=1", b""))
    assert status == 400 and body["message"].startswith("invalid reference format"), body

    listed = docker(m1, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert sorted(listed) == sorted(["demo:1", f"{host}/team/app:1"]), listed
    assert docker(m1, "images", "-q", f"{host}/team/app").stdout.split() == \
        [docker(m1, "image", "inspect", f"{host}/team/app:1", "--format", "{{.Id}}").stdout.strip()[7:19]]
    assert docker(m1, "image", "inspect", "nosuch:1", check=False).returncode == 1

    # the registry's view: the index's descriptor and platforms; one manifest's platform from its config
    client = docker_py.DockerClient(base_url=f"unix://{m1.state_dir}/docker.sock", version="auto")
    try:
        data = client.images.get_registry_data(f"{host}/team/app:1")
        assert data.id == index["index_digest"]
        assert sorted(p["architecture"] for p in data.attrs["Platforms"]) == ["amd64", "arm64"]
        assert data.has_platform("linux/amd64") and not data.has_platform("linux/s390x")
        one_platform = client.images.get_registry_data(f"{host}/team/one:2")
        assert one_platform.id == single["manifest_digest"]
        assert one_platform.attrs["Platforms"] == [{"architecture": "amd64", "os": "linux"}]
    finally:
        client.close()

    # service create resolves the digest through GET /distribution and pins it (no warning)
    created = docker(m1, "service", "create", "--name", "pinned", "--detach", f"{host}/team/app:1", "sleep", "1000")
    assert "could not be accessed on a registry" not in created.stderr, created.stderr
    image = docker(m1, "service", "inspect", "pinned", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}")
    assert image.stdout.strip() == f"{host}/team/app:1@{index['index_digest']}"
    eventually(lambda: docker(m1, "service", "ls", "--format", "{{.Replicas}}").stdout.strip() == "1/1", 60,
               "the pinned service running")
    # an image only this node has: Docker's warning, and the reference kept as given
    local = docker(m1, "service", "create", "--name", "local", "--detach", "demo:1", "sleep", "1000")
    assert "image demo:1 could not be accessed on a registry to record" in local.stderr, local.stderr
    assert docker(m1, "service", "inspect", "local", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
                  ).stdout.strip() == "demo:1"
    docker(m1, "service", "rm", "pinned", "local")

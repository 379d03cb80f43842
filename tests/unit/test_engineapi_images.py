"""Docker's image endpoints: the pull's reference and progress messages, image summaries and
filters (swarm/engineapi/images.py), and GET /distribution's answer from a registry's manifest
or index (swarm/daemon/distribution.py, over a fake registry client)."""
from __future__ import annotations

import hashlib
import json

import pytest

from swarm.api.reference import parse_image
from swarm.daemon import distribution
from swarm.engineapi import images
from swarm.engineapi.fields import Unsupported
from swarm.registry.client import Fetched
from swarm.registry.errors import ImageNotFound
from swarm.rpc.messages import LOCAL_PEER, RPCError


def test_the_pulls_reference_is_dockers():
    assert images.pull_ref("127.0.0.1:5000/team/app", "1") == "127.0.0.1:5000/team/app:1"
    assert images.pull_ref("busybox", "sha256:" + "a" * 64) == "busybox@sha256:" + "a" * 64
    assert images.pull_ref("busybox:1.36", "") == "busybox:1.36"
    with pytest.raises(Unsupported, match="--all-tags"):
        images.pull_ref("busybox", "")
    with pytest.raises(Unsupported, match="fromSrc"):
        images.pull_ref(None, None)
    assert images.pulling_from("busybox:latest") == {"status": "Pulling from library/busybox", "id": "latest"}
    assert images.pulling_from("127.0.0.1:5000/team/app:1") == {"status": "Pulling from team/app", "id": "1"}


def test_pull_answers_become_dockerds_progress_messages():
    shown: dict[str, int] = {}
    running = {"log": [["abc", "Pulling fs layer"]], "done": False,
               "layers": [{"id": "abc", "status": "Downloading", "current": 500, "total": 1000}]}
    first = images.pull_messages(running, shown)
    assert first[0] == {"status": "Pulling fs layer", "progressDetail": {}, "id": "abc"}
    assert first[1]["progressDetail"] == {"current": 500, "total": 1000} and first[1]["progress"].startswith("[====")
    assert images.pull_messages(dict(running, log=[]), shown) == []       # no move, no message
    done = {"log": [["abc", "Pull complete"]], "layers": [], "done": True,
            "result": {"digest": "sha256:" + "d" * 64, "fresh": True, "ref": "docker.io/library/busybox:latest"}}
    assert [m.get("status") for m in images.pull_messages(done, shown)] == [
        "Pull complete", "Digest: sha256:" + "d" * 64, "Status: Downloaded newer image for busybox:latest"]
    failed = images.pull_messages({"log": [], "layers": [], "done": True, "error": "No such image: x:1"}, shown)
    assert failed == [{"errorDetail": {"message": "No such image: x:1"}, "error": "No such image: x:1"}]


def test_image_summaries_and_filters():
    row = {"Id": "sha256:" + "1" * 64, "RepoTags": ["demo:1"], "RepoDigests": [], "Created": 1.5, "Size": 10}
    view = images.summary_view(row, (1, 50))
    assert view["Created"] == 1 and view["Containers"] == -1 and "VirtualSize" not in view
    assert images.summary_view(row, (1, 41))["VirtualSize"] == 10
    assert images.image_matches(row, {"reference": ["demo"]}) and images.image_matches(row, {"reference": ["de*:1"]})
    assert not images.image_matches(row, {"reference": ["other"]})
    assert images.image_matches(dict(row, RepoTags=[]), {"dangling": ["true"]})
    assert not images.image_matches(row, {"dangling": ["true"]})
    with pytest.raises(Unsupported, match="invalid filter 'before'"):
        images.image_matches(row, {"before": ["x"]})


class FakeClient:
    """get_manifest and fetch_blob of a registry holding `blobs` (digest -> (media type, bytes))."""

    def __init__(self, manifests: dict[str, tuple[str, bytes]], blobs: dict[str, bytes]) -> None:
        self.manifests, self.blobs = manifests, blobs

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def get_manifest(self, ref):
        if ref.pull_ref not in self.manifests:
            raise ImageNotFound(ref.familiar())
        media_type, data = self.manifests[ref.pull_ref]
        return Fetched(data, media_type, "sha256:" + hashlib.sha256(data).hexdigest())

    async def fetch_blob(self, ref, digest, sink, *, size=None, progress=None, verify=True):
        sink(self.blobs[digest])
        return len(self.blobs[digest])


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.trio
async def test_distribution_gives_the_descriptor_and_the_platforms():
    config = json.dumps({"architecture": "arm64", "os": "linux", "variant": "v8x"}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": _digest(config), "size": len(config)}, "layers": []}).encode()
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest), "size": len(manifest),
         "platform": {"os": "linux", "architecture": "x86_64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest), "size": len(manifest),
         "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}]}).encode()
    client = FakeClient({"1": ("application/vnd.oci.image.index.v1+json", index),
                         "2": ("application/vnd.oci.image.manifest.v1+json", manifest)}, {_digest(config): config})
    got = await distribution.inspect(client, parse_image("reg:5000/app:1"))
    assert got == {"Descriptor": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": _digest(index),
                                  "size": len(index)},
                   "Platforms": [{"architecture": "amd64", "os": "linux"},
                                 {"architecture": "arm", "os": "linux", "variant": "v7"}]}
    single = await distribution.inspect(client, parse_image("reg:5000/app:2"))
    assert single["Descriptor"]["digest"] == _digest(manifest)
    assert single["Platforms"] == [{"architecture": "arm64", "os": "linux", "variant": "v8x"}]

    handler = distribution.handler(lambda auth: client)
    assert (await handler(LOCAL_PEER, {"ref": "reg:5000/app:1"}))["Descriptor"]["digest"] == _digest(index)
    for params, code in (({"ref": "reg:5000/app:9"}, "not_found"), ({"ref": "UP/Per:1"}, "bad_request"),
                         ({"ref": 5}, "bad_request")):
        with pytest.raises(RPCError) as err:
            await handler(LOCAL_PEER, params)
        assert err.value.code == code

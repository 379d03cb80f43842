"""The image store as registries use it: pulled images, RepoDigests, push sources, docker save,
Docker's rm/prune rules, and garbage collection that never removes what a task uses.

A "pull" here is what the puller does: ingest the layer blobs (verified), then add_pulled with the
manifest and configuration. `skopeo inspect docker-archive:` (Debian's skopeo, a real one) checks
that our `save` is an archive other tools read.
"""
import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import tarfile

import pytest

from swarm.runtime import imagerefs
from swarm.runtime.errors import ImageError
from swarm.runtime.images import ImageStore


def layer_tar(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


BASE = layer_tar({"etc/os-release": b"ID=test\n", "bin/sh": b"#!shell\n"})
APP1 = layer_tar({"app/one": b"1\n"})
APP2 = layer_tar({"app/two": b"2\n"})


def pulled(layers, cmd=("sh",), labels=None):
    """(manifest bytes, config bytes, {digest: gzip blob}) of an image made of these layer tars."""
    blobs = {}
    descs = []
    for tar in layers:
        gz = gzip.compress(tar, mtime=0)
        blobs[sha(gz)] = gz
        descs.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(gz),
                      "digest": sha(gz)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-05-01T10:00:00Z",
                         "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"], **({"Labels": labels} if labels else {})},
                         "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                      "size": len(config), "digest": sha(config)},
                           "layers": descs}).encode()
    return manifest, config, blobs


def pull(store, ref, layers, *, prune_between=False, **kw):
    """What swarm.registry.pull.Puller does with the store."""
    manifest, config, blobs = pulled(layers, **kw)
    for digest, data in blobs.items():
        if not store.has_blob(digest):
            store.ingest_blob(digest, iter([data]))
    if prune_between:       # a prune while the pull still downloads: the fresh blobs must stay
        assert store.prune(all=True)["reclaimed"] == 0
    return store.add_pulled(ref, sha(manifest), manifest, config), sha(manifest)


@pytest.fixture
def used():
    return set()


@pytest.fixture
def store(tmp_path, used):
    return ImageStore(str(tmp_path / "images"), in_use=lambda: used)


def test_a_layer_shared_by_two_pulled_images_is_stored_and_unpacked_once(store):
    a, digest_a = pull(store, "127.0.0.1:5000/team/a:1", [BASE, APP1])
    b, _ = pull(store, "127.0.0.1:5000/team/b:1", [BASE, APP2])
    assert sorted(os.listdir(store.layers_dir)) == sorted(hashlib.sha256(t).hexdigest() for t in (BASE, APP1, APP2))
    gz_layers = {sha(gzip.compress(t, mtime=0)) for t in (BASE, APP1, APP2)}
    assert gz_layers <= set(store.blobs.list())
    assert len(store.blobs.list()) == 3 + 2 + 2                  # layers once, 2 configs, 2 manifests
    assert store.has_digest("127.0.0.1:5000/team/a", digest_a) == a
    assert store.has_digest("127.0.0.1:5000/team/b", digest_a) == a     # the content is the same bytes
    assert store.has_digest("127.0.0.1:5000/team/a", "sha256:" + "0" * 64) is None
    info = store.inspect("127.0.0.1:5000/team/a:1")
    assert info["RepoTags"] == ["127.0.0.1:5000/team/a:1"]
    assert info["RepoDigests"] == [f"127.0.0.1:5000/team/a@{digest_a}"]
    assert info["Id"] == f"sha256:{a}" and info["Config"]["Cmd"] == ["sh"] and info["Os"] == "linux"
    assert info["RootFS"]["Layers"] == [sha(BASE), sha(APP1)] and info["Created"].startswith("2024-05-01T10:00:00")
    assert store.resolve(f"127.0.0.1:5000/team/a@{digest_a}").id == a
    assert b != a


def test_a_prune_during_a_pull_keeps_the_downloaded_blobs(store):
    image_id, _ = pull(store, "app:1", [BASE, APP1], prune_between=True)
    assert store.resolve("app:1").id == image_id
    assert store.push_source("app:1").layers[0].path.startswith(store.blobs.dir)


def test_a_blob_received_with_another_digest_is_told_and_not_kept(store):
    data = gzip.compress(APP1, mtime=0)
    assert store.ingest_blob(sha(BASE), iter([data[:10], data[10:]])) == sha(data)   # the puller refuses it
    assert store.blobs.list() == [] and os.listdir(store.blobs.tmp_dir) == []


def test_a_layer_that_does_not_unpack_to_its_diff_id_is_refused_and_nothing_stays(store):
    manifest, config, blobs = pulled([BASE])
    evil = gzip.compress(APP1, mtime=0)              # a blob that is itself, but not the layer the config names
    manifest = manifest.replace(next(iter(blobs)).encode(), sha(evil).encode())
    manifest = manifest.replace(b'"size": %d' % len(next(iter(blobs.values()))), b'"size": %d' % len(evil))
    store.blobs.ingest(sha(evil), [evil])
    with pytest.raises(ImageError, match="digest mismatch"):
        store.add_pulled("evil:1", sha(manifest), manifest, config)
    assert os.listdir(store.layers_dir) == [] and store.list() == []


@pytest.mark.parametrize("compress", [lambda t: gzip.compress(t, mtime=0), lambda t: t, lzma.compress],
                         ids=["gzip", "plain tar", "xz"])
def test_pulled_layers_unpack_whatever_their_compression(store, compress):
    manifest, config, blobs = pulled([BASE, APP1])
    for tar, (digest, gz) in zip([BASE, APP1], list(blobs.items())):
        blob = compress(tar)
        manifest = manifest.replace(digest.encode(), sha(blob).encode())
        manifest = manifest.replace(b'"size": %d' % len(gz), b'"size": %d' % len(blob))
        store.ingest_blob(sha(blob), iter([blob]))
    image_id = store.add_pulled("app:1", sha(manifest), manifest, config)
    layers = store.resolve("app:1").layers
    with open(os.path.join(store.layer_path(layers[1]), "app", "one"), "rb") as f:
        assert f.read() == b"1\n"
    assert store.resolve("app:1").id == image_id and len(layers) == 2


def test_a_gzip_blob_that_is_no_tar_is_refused_in_one_sentence(store):
    manifest, config, blobs = pulled([BASE])
    [(digest, gz)] = blobs.items()
    junk = gzip.compress(b"no tar here " * 100, mtime=0)
    manifest = manifest.replace(digest.encode(), sha(junk).encode()).replace(b'"size": %d' % len(gz),
                                                                           b'"size": %d' % len(junk))
    store.ingest_blob(sha(junk), iter([junk]))
    with pytest.raises(ImageError, match=r"^The layer is not a readable tar archive \(invalid header\)\.$"):
        store.add_pulled("junk:1", sha(manifest), manifest, config)
    assert os.listdir(store.layers_dir) == [] and store.list() == []


def test_a_configuration_other_than_the_manifest_names_is_refused(store):
    manifest, config, _ = pulled([BASE])
    with pytest.raises(ImageError, match="digest mismatch"):
        store.add_pulled("app:1", sha(manifest), manifest, config.replace(b"sh", b"zsh"))


def test_push_source_of_an_imported_image_is_deterministic_gzip(tmp_path):
    sources = []
    for name in ("one", "two"):
        store = ImageStore(str(tmp_path / name))
        store.import_rootfs(io.BytesIO(BASE), "app:1", now=1700000000.0)
        sources.append(store.push_source("app:1"))
        assert store.push_source("app:1") == sources[-1]             # made once, kept
        src = sources[-1]
        with store.blobs.open(src.layers[0].digest) as f:
            assert hashlib.sha256(gzip.decompress(f.read())).hexdigest() == hashlib.sha256(BASE).hexdigest()
        manifest = json.loads(src.manifest)
        assert manifest["config"]["digest"] == src.config.digest == f"sha256:{src.image_id}"
        assert [layer["digest"] for layer in manifest["layers"]] == [b.digest for b in src.layers]
        assert sha(src.manifest) == src.digest
        pruned = store.prune()                      # the tar blob went (the gzip one replaced it), no image did
        assert pruned["deleted"] == [] and pruned["reclaimed"] >= len(BASE) and sha(BASE) not in store.blobs.list()
        assert store.blobs.has(src.layers[0].digest)
    assert sources[0].digest == sources[1].digest


def test_push_source_of_a_pulled_image_is_its_own_manifest(store):
    image_id, digest = pull(store, "reg.example:5000/app:1", [BASE, APP1])
    src = store.push_source("reg.example:5000/app:1")
    assert src.digest == digest and src.image_id == image_id
    assert [b.digest for b in src.layers] == [sha(gzip.compress(t, mtime=0)) for t in (BASE, APP1)]
    store.add_digest("reg.example:5000/app:1", "sha256:" + "c" * 64)
    assert f"reg.example:5000/app@sha256:{'c' * 64}" in store.inspect(image_id)["RepoDigests"]


def test_save_loads_back_and_skopeo_reads_it(store, tmp_path):
    pulled_id, _ = pull(store, "reg.example:5000/team/app:2", [BASE, APP1])
    imported = store.import_rootfs(io.BytesIO(APP2), "busybox:1", now=1.0)
    store.tag("busybox:1", "busybox:latest")
    out = str(tmp_path / "images.tar")
    with open(out, "w") as f:
        f.write("an older file docker would overwrite")
    store.save(["reg.example:5000/team/app:2", "busybox"], out)
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
        manifest = json.load(tf.extractfile("manifest.json"))
        index = json.load(tf.extractfile("index.json"))
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= names
    assert [m["RepoTags"] for m in manifest] == [["reg.example:5000/team/app:2"], ["busybox:1", "busybox:latest"]]
    assert sorted(m["annotations"]["io.containerd.image.name"] for m in index["manifests"]) == [
        "docker.io/library/busybox:1", "docker.io/library/busybox:latest", "reg.example:5000/team/app:2"]

    fresh = ImageStore(str(tmp_path / "fresh"))
    assert sorted(fresh.load_archive(out)) == ["busybox:1", "busybox:latest", "reg.example:5000/team/app:2"]
    assert fresh.image_id("reg.example:5000/team/app:2") == pulled_id and fresh.image_id("busybox") == imported

    for ref in ("reg.example:5000/team/app:2", "docker.io/library/busybox:latest"):
        result = subprocess.run(["skopeo", "inspect", f"docker-archive:{out}:{ref}"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["Layers"]


def test_save_of_a_missing_image_writes_nothing(store, tmp_path):
    with pytest.raises(ImageError, match="No such image: nope:1"):
        store.save(["nope:1"], str(tmp_path / "out.tar"))
    assert os.listdir(tmp_path) == ["images"]


def test_rm_follows_docker(store, used):
    image_id, digest = pull(store, "reg.example/app:1", [BASE])
    store.tag("reg.example/app:1", "other:1")
    # by id, the image is named in two repositories: docker asks for --force
    with pytest.raises(ImageError, match=r"conflict: unable to delete .* \(must be forced\) - image is referenced"):
        store.remove(image_id[:12])
    assert store.remove("other:1") == [{"Untagged": "other:1"}]
    # the last tag of a repository takes its digests along, and then the image
    out = store.remove("reg.example/app:1")
    assert out[:3] == [{"Untagged": "reg.example/app:1"}, {"Untagged": f"reg.example/app@{digest}"},
                       {"Deleted": f"sha256:{image_id}"}]
    assert {"Deleted": f"sha256:{hashlib.sha256(BASE).hexdigest()}"} in out
    assert store.blobs.list() == [] and os.listdir(store.layers_dir) == []


def test_an_image_a_task_uses_is_never_removed(store, used):
    image_id, _ = pull(store, "app:1", [BASE])
    used.add(image_id)
    with pytest.raises(ImageError, match='unable to remove repository reference "app:1" \\(must force\\)'):
        store.remove("app:1")
    with pytest.raises(ImageError, match="cannot be forced"):
        store.remove(image_id, force=True)
    assert [r["Untagged"] for r in store.remove("app:1", force=True)] == ["app:1", f"app@{pull_digest(store)}"]
    assert store.prune(all=True) == {"deleted": [], "reclaimed": 0}      # dangling now, but in use
    assert store.resolve(image_id).layers and store.blobs.has(f"sha256:{image_id}")
    used.clear()
    pruned = store.prune()
    assert pruned["deleted"][0] == {"Deleted": f"sha256:{image_id}"} and pruned["reclaimed"] > 0
    assert store.blobs.list() == [] and os.listdir(store.layers_dir) == []


def pull_digest(store):
    manifest, _, _ = pulled([BASE])
    return sha(manifest)


def test_prune_all_untags_unused_images_and_keeps_used_ones(store, used):
    keep, _ = pull(store, "keep:1", [BASE, APP1])
    drop = store.import_rootfs(io.BytesIO(APP2), "drop:1", now=2.0)
    used.add(keep)
    assert store.prune() == {"deleted": [], "reclaimed": 0}               # nothing is dangling
    result = store.prune(all=True)
    assert result["deleted"][:2] == [{"Untagged": "drop:1"}, {"Deleted": f"sha256:{drop}"}]
    assert [r["ref"] for r in store.list()][0] == "keep:1"
    assert sorted(os.listdir(store.layers_dir)) == sorted(hashlib.sha256(t).hexdigest() for t in (BASE, APP1))


def test_tag_refuses_a_digest_and_rm_of_a_missing_image_says_so(store):
    store.import_rootfs(io.BytesIO(BASE), "app:1")
    with pytest.raises(ImageError, match="refusing to create a tag with a digest reference"):
        store.tag("app:1", "app@sha256:" + "a" * 64)
    with pytest.raises(ImageError, match="No such image: app:2"):
        store.remove("app:2")
    with pytest.raises(ImageError, match="repository name must be lowercase"):
        store.tag("app:1", "App:2")


@pytest.mark.parametrize("text, key", [
    ("busybox", "busybox:latest"), ("docker.io/library/busybox:1", "busybox:1"), ("library/busybox", "busybox:latest"),
    ("docker.io/team/app", "team/app:latest"), ("localhost:5000/app:v2", "localhost:5000/app:v2"),
    ("app:1@sha256:" + "a" * 64, "app@sha256:" + "a" * 64),
])
def test_store_keys(text, key):
    assert imagerefs.store_key(text) == key


@pytest.mark.parametrize("familiar, full", [
    ("busybox:1", "docker.io/library/busybox:1"), ("team/app:1", "docker.io/team/app:1"),
    ("localhost/app:1", "localhost/app:1"), ("reg.example:5000/a/b:1", "reg.example:5000/a/b:1"),
])
def test_full_names(familiar, full):
    assert imagerefs.full_name(familiar) == full


def test_a_pull_onto_a_full_disk_fails_loudly_and_leaves_the_store_consistent(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
    try:
        store = ImageStore(str(mnt / "images"))
        kept, _ = pull(store, "small:1", [BASE])
        big = layer_tar({"big": os.urandom(1 << 20)})      # random: gzip cannot shrink it below the disk
        with pytest.raises(ImageError, match="No space left on the device"):
            pull(store, "big:1", [BASE, big])
        assert {r["id"] for r in store.list()} == {kept} and store.resolve("small:1").id == kept
        with pytest.raises(ImageError, match="No such image: big:1"):
            store.resolve("big:1")
        assert os.listdir(store.blobs.tmp_dir) == [] and not [n for n in os.listdir(store.layers_dir) if "tmp" in n]
        assert store.prune(all=True)["deleted"][0] == {"Untagged": "small:1"}
        assert store.blobs.list() == [] and os.listdir(store.layers_dir) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_image_summaries_carry_the_configured_labels(store):
    """What `image ls --filter label=...` reads (Docker's ImageSummary.Labels)."""
    pull(store, "web:1", [BASE], labels={"team": "web"})
    pull(store, "bare:1", [APP1])
    assert sorted((s["RepoTags"], s["Labels"]) for s in store.summaries()) == [
        (["bare:1"], {}), (["web:1"], {"team": "web"})]

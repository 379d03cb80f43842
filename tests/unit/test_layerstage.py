"""Layers a pull unpacks while it still downloads (layerstage.PullLayers on a real ImageStore):
each layer goes into place as soon as its blob is stored, garbage collection spares it, a second
pull of the same layer waits for the first unpack instead of doing it again, add_pulled takes
the layers as they are, and a failed pull leaves no layer behind. Also the gzip reader of pulled
layers (several members, zero padding, truncated and corrupted streams)."""
import gzip
import io
import json
import os
import subprocess
import threading
import time
import zlib

import pytest

from swarm.runtime import layerstage
from swarm.runtime.errors import ImageError
from swarm.runtime.images import ImageStore
from tests.unit.test_image_registry_store import APP1, APP2, BASE, layer_tar, pulled, sha

GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@pytest.fixture
def store(tmp_path):
    return ImageStore(str(tmp_path / "images"))


def descs(manifest: bytes) -> list[dict]:
    return json.loads(manifest)["layers"]


def diff_id(tar: bytes) -> str:
    return sha(tar)


def staging_dirs(store) -> list[str]:
    return [n for n in os.listdir(store.layers_dir) if n.startswith(".tmp-")]


def test_layers_go_into_place_as_they_arrive_survive_a_prune_and_are_registered_as_they_are(store):
    manifest, config, blobs = pulled([BASE, APP1])
    layers = store.pull_layers()
    inodes = []
    for i, (tar, (digest, gz)) in enumerate(zip([BASE, APP1], blobs.items())):
        assert store.ingest_blob(digest, iter([gz])) == digest
        assert layers.unpack(i, diff_id(tar), descs(manifest)[i]) > 0
        inodes.append(os.stat(store.layer_path(diff_id(tar)[7:])).st_ino)
        assert store.prune(all=True)["reclaimed"] == 0      # a prune mid-pull: the leased layers stay
    image_id = store.add_pulled("app:1", sha(manifest), manifest, config)
    layers.close()
    assert [os.stat(store.layer_path(d)).st_ino for d in store.resolve("app:1").layers] == inodes  # not redone
    assert staging_dirs(store) == [] and store.resolve("app:1").id == image_id
    with open(os.path.join(store.layer_path(diff_id(APP1)[7:]), "app", "one"), "rb") as f:
        assert f.read() == b"1\n"
    doc = store._read_image(image_id)
    assert [s["tar_size"] for s in doc["layer_blobs"]] == [len(BASE), len(APP1)]
    assert doc["layer_sizes"] == [len(b"ID=test\n") + len(b"#!shell\n"), len(b"1\n")]


def test_a_failed_pull_leaves_no_layer_it_unpacked_and_keeps_the_others(store):
    manifest, config, blobs = pulled([BASE])
    for digest, gz in blobs.items():
        store.ingest_blob(digest, iter([gz]))
    kept = store.add_pulled("base:1", sha(manifest), manifest, config)
    manifest, config, blobs = pulled([BASE, APP1])
    layers = store.pull_layers()
    for i, (tar, (digest, gz)) in enumerate(zip([BASE, APP1], blobs.items())):
        store.ingest_blob(digest, iter([gz]))
        layers.unpack(i, diff_id(tar), descs(manifest)[i])
    layers.close()                       # the pull failed after both unpacks: no add_pulled
    assert sorted(os.listdir(store.layers_dir)) == [diff_id(BASE)[7:]]
    assert store.resolve("base:1").id == kept and {r["id"] for r in store.list()} == {kept}
    with pytest.raises(ImageError, match="ended before"):
        layers.unpack(0, diff_id(BASE), descs(manifest)[0])


def test_a_layer_that_unpacks_to_another_diff_id_mid_pipeline_leaves_nothing(store):
    manifest, config, blobs = pulled([BASE, APP1])
    items = list(blobs.items())
    layers = store.pull_layers()
    store.ingest_blob(items[0][0], iter([items[0][1]]))
    layers.unpack(0, diff_id(BASE), descs(manifest)[0])
    store.ingest_blob(items[1][0], iter([items[1][1]]))
    with pytest.raises(ImageError, match=r"^digest mismatch: layer 2 unpacks to sha256:"):
        layers.unpack(1, diff_id(APP2), descs(manifest)[1])     # the configuration names other content
    assert staging_dirs(store) == [] and not os.path.exists(store.layer_path(diff_id(APP2)[7:]))
    layers.close()
    assert os.listdir(store.layers_dir) == [] and store.list() == []


def test_two_pulls_of_one_layer_unpack_it_once_and_the_last_holder_decides(store, monkeypatch):
    calls = []
    real = layerstage.extract_layer

    def slow_extract(*args, **kwargs):       # long enough for the other pull to arrive meanwhile
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(layerstage, "extract_layer", slow_extract)
    manifest, config, blobs = pulled([BASE])
    [(digest, gz)] = blobs.items()
    store.ingest_blob(digest, iter([gz]))
    first, second = store.pull_layers(), store.pull_layers()
    start = threading.Barrier(2)
    sizes = []

    def unpack(layers):
        start.wait()
        sizes.append(layers.unpack(0, diff_id(BASE), descs(manifest)[0]))

    threads = [threading.Thread(target=unpack, args=(p,)) for p in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sizes[0] == sizes[1] > 0 and staging_dirs(store) == []
    first.close()                        # its pull failed; the second still holds the layer
    assert os.path.isdir(store.layer_path(diff_id(BASE)[7:]))
    assert store.prune(all=True)["reclaimed"] == 0
    image_id = store.add_pulled("base:1", sha(manifest), manifest, config)
    second.close()
    assert store.resolve("base:1").id == image_id and len(calls) == 1


def _pull_one(store, blob: bytes, tar: bytes):
    """Register a one-layer image whose layer blob is `blob` (any bytes; its digest is its own)."""
    manifest, config, blobs = pulled([tar])
    [(digest, gz)] = blobs.items()
    manifest = manifest.replace(digest.encode(), sha(blob).encode()).replace(b'"size": %d' % len(gz),
                                                                           b'"size": %d' % len(blob))
    store.ingest_blob(sha(blob), iter([blob]))
    layers = store.pull_layers()
    try:
        layers.unpack(0, diff_id(tar), descs(manifest)[0])
        return store.add_pulled("one:1", sha(manifest), manifest, config)
    finally:
        layers.close()


def test_a_gzip_layer_of_several_members_and_zero_padding_unpacks(store):
    tar = layer_tar({"a": os.urandom(300_000), "b": b"bee\n"})
    blob = gzip.compress(tar[:100_000], mtime=0) + gzip.compress(tar[100_000:], mtime=0) + b"\0" * 20
    image_id = _pull_one(store, blob, tar)
    with open(os.path.join(store.layer_path(store.resolve("one:1").layers[0]), "b"), "rb") as f:
        assert f.read() == b"bee\n"
    assert store._read_image(image_id)["layer_blobs"][0]["tar_size"] == len(tar)


@pytest.mark.parametrize("damage, reason", [
    (lambda gz: gz[:len(gz) // 2], "Compressed file ended before the end-of-stream marker was reached"),
    (lambda gz: gz[:-8] + bytes([gz[-8] ^ 1]) + gz[-7:], "Error -3 while decompressing data: incorrect data check"),
    (lambda gz: gz + b"junk", "Error -3 while decompressing data: incorrect header check"),
], ids=["truncated", "wrong crc", "trailing garbage"])
def test_a_damaged_gzip_layer_is_refused_in_one_sentence_and_leaves_nothing(store, damage, reason):
    tar = layer_tar({"a": os.urandom(100_000)})
    with pytest.raises(ImageError, match=rf"^The layer is not a readable tar archive \({reason}\)\.$"):
        _pull_one(store, damage(gzip.compress(tar, mtime=0)), tar)
    assert os.listdir(store.layers_dir) == [] and store.list() == []


def test_the_gzip_reader_gives_what_gzip_gives():
    data = os.urandom(50_000) + b"\0" * 3_000_000 + os.urandom(50_000)    # pieces larger than the input
    blob = gzip.compress(data[:7], mtime=0) + gzip.compress(data[7:], mtime=0)
    reader = io.BufferedReader(layerstage._Gunzip(io.BytesIO(blob)), 1 << 16)
    out = b"".join(iter(lambda: reader.read(10240), b""))
    assert out == data == gzip.decompress(blob) and zlib.crc32(out) == zlib.crc32(data)


def test_a_layer_larger_than_the_disk_fails_the_pull_loudly_and_leaves_the_store_as_it_was(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
    try:
        store = ImageStore(str(mnt / "images"))
        tar = layer_tar({"zeros": b"\0" * (2 << 20)})      # a 2 KiB blob that unpacks to 2 MiB
        with pytest.raises(ImageError, match=r"^The image expands to more than .* \(the free space of "):
            _pull_one(store, gzip.compress(tar, mtime=0), tar)
        assert os.listdir(store.layers_dir) == [] and store.list() == []
        assert os.listdir(store.blobs.tmp_dir) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

"""A pulled image registered before its layers are unpacked (ImageStore.add_pulled(unpack=False),
then unpack_image), on a real store: `image ls` shows it at once, a task start (resolve) unpacks
or waits, garbage collection keeps what it needs, a failed unpack is told at resolve in one
sentence and retried, a store opened again (a restarted daemon) finds and finishes the
interrupted unpack, and an image removed mid-unpack leaves no layer behind."""
import json
import os
import threading

import pytest

from swarm.runtime import layerstage
from swarm.runtime.errors import ImageError
from swarm.runtime.images import ImageStore
from tests.unit.test_image_registry_store import APP1, APP2, BASE, layer_tar, pulled, sha


@pytest.fixture
def store(tmp_path):
    return ImageStore(str(tmp_path / "images"))


def register(store, ref, layers, **kw):
    """What the puller does: store the blobs, then register without unpacking."""
    manifest, config, blobs = pulled(layers, **kw)
    for digest, data in blobs.items():
        if not store.has_blob(digest):
            assert store.ingest_blob(digest, iter([data])) == digest
    return store.add_pulled(ref, sha(manifest), manifest, config, unpack=False), blobs


def hexd(tar: bytes) -> str:
    return sha(tar)[7:]


def unpacked(store) -> set[str]:
    return {n for n in os.listdir(store.layers_dir) if not n.startswith(".")}


def test_registered_at_once_listed_and_unpacked_with_its_real_sizes(store):
    image_id, blobs = register(store, "app:1", [BASE, APP1])
    assert unpacked(store) == set()
    doc = store._read_image(image_id)
    assert doc["unpacking"] == sorted([hexd(BASE), hexd(APP1)])
    assert doc["layer_sizes"] == [len(b) for b in blobs.values()]       # the blob sizes stand in meanwhile
    assert {r["id"] for r in store.list()} == {image_id}                 # `image ls` shows it already
    assert store.pending_images() == [image_id]
    store.unpack_image(image_id)
    doc = store._read_image(image_id)
    assert "unpacking" not in doc and store.pending_images() == []
    assert unpacked(store) == {hexd(BASE), hexd(APP1)}
    assert doc["layer_sizes"] == [len(b"ID=test\n") + len(b"#!shell\n"), len(b"1\n")]
    assert doc["size"] == sum(doc["layer_sizes"])
    assert [s["tar_size"] for s in doc["layer_blobs"]] == [len(BASE), len(APP1)]
    with open(os.path.join(store.layer_path(hexd(APP1)), "app", "one"), "rb") as f:
        assert f.read() == b"1\n"


def test_a_task_start_unpacks_what_nobody_has_unpacked_yet(store):
    image_id, _ = register(store, "app:1", [BASE, APP1])
    image = store.resolve("app:1")
    assert image.layers == (hexd(BASE), hexd(APP1))
    assert all(os.path.isdir(store.layer_path(d)) for d in image.layers)
    assert "unpacking" not in store._read_image(image_id)


def test_a_layer_unpacked_already_by_another_image_is_not_pending(store):
    register(store, "base:1", [BASE])
    store.resolve("base:1")
    inode = os.stat(store.layer_path(hexd(BASE))).st_ino
    image_id, _ = register(store, "app:1", [BASE, APP2])
    assert store._read_image(image_id)["unpacking"] == [hexd(APP2)]
    store.unpack_image(image_id)
    assert os.stat(store.layer_path(hexd(BASE))).st_ino == inode


def test_garbage_collection_keeps_a_pending_image_blobs_and_layers(store):
    image_id, blobs = register(store, "app:1", [BASE, APP1])
    store.blobs.settle(blobs)            # not fresh any more: only the image's record keeps them
    store.prune()                        # the image is tagged: not pruned, its blobs reached
    assert all(store.has_blob(d) for d in blobs)
    store.unpack_image(image_id)
    assert store.prune()["reclaimed"] == 0 and unpacked(store) == {hexd(BASE), hexd(APP1)}


def test_a_prune_racing_the_unpack_never_takes_the_layer_being_moved_in(store, monkeypatch):
    """A collection that runs while a layer is unpacked (the image already removed): the lease
    keeps the layer until the unpack ends, then the layer no image reaches goes."""
    image_id, _ = register(store, "app:1", [APP1])
    real = layerstage.StagedLayers.ensure_from_blob
    seen = []

    def removed_meanwhile(self, *args):
        size = real(self, *args)
        store.remove("app:1")            # the image and its blobs go, mid-unpack
        seen.append(store.layer_leases.held())
        return size

    monkeypatch.setattr(layerstage.StagedLayers, "ensure_from_blob", removed_meanwhile)
    store.unpack_image(image_id)
    assert seen == [{hexd(APP1)}]
    assert unpacked(store) == set() and [n for n in os.listdir(store.layers_dir)] == []
    assert store.records() == []


def test_a_failed_unpack_is_told_at_task_start_in_one_sentence_and_retried(store, monkeypatch):
    image_id, _ = register(store, "app:1", [BASE])
    monkeypatch.setattr(layerstage, "unpack_blob", lambda blob, dest, budget: ("0" * 64, 0, 0))
    with pytest.raises(ImageError, match=r"^digest mismatch: layer 1 unpacks to sha256:000000000000, its image "
                                         r"configuration says sha256:"):
        store.resolve("app:1")
    assert store.pending_images() == [image_id] and unpacked(store) == set()    # nothing half-done stays
    monkeypatch.undo()
    assert store.resolve("app:1").layers == (hexd(BASE),)                   # the next start retries


def test_a_store_opened_again_finishes_an_interrupted_unpack(tmp_path):
    root = str(tmp_path / "images")
    first = ImageStore(root)
    image_id, _ = register(first, "app:1", [BASE, APP1])
    stale = os.path.join(first.layers_dir, ".tmp-999999999-abc")   # a staging dir of a dead process
    os.mkdir(stale)
    again = ImageStore(root)                                       # the daemon restarted
    assert not os.path.exists(stale)
    assert again.pending_images() == [image_id]
    again.unpack_image(image_id)
    assert again.pending_images() == [] and unpacked(again) == {hexd(BASE), hexd(APP1)}


def test_two_threads_unpacking_one_image_unpack_each_layer_once(store, monkeypatch):
    image_id, _ = register(store, "app:1", [BASE, APP1, APP2])
    calls = []
    real = layerstage.unpack_blob
    gate = threading.Barrier(2, timeout=5)

    def counted(blob, dest, budget):
        calls.append(dest)
        return real(blob, dest, budget)

    monkeypatch.setattr(layerstage, "unpack_blob", counted)

    def unpack():
        gate.wait()
        store.unpack_image(image_id)

    threads = [threading.Thread(target=unpack) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 3 and store.pending_images() == []
    assert json.loads(open(store._image_path(image_id)).read())["size"] == sum(
        store._read_image(image_id)["layer_sizes"])


def test_a_missing_blob_is_refused_at_registration(store):
    manifest, config, blobs = pulled([layer_tar({"x": b"1"})])
    with pytest.raises(ImageError, match=r"^The blob sha256:[0-9a-f]{12} of layer sha256:[0-9a-f]{12} is not in "
                                         r"the store; pull again\.$"):
        store.add_pulled("x:1", sha(manifest), manifest, config, unpack=False)
    assert store.records() == []

"""The content-addressed blob store: verified writes, nothing partial, full disks, leases and GC.

The full-disk test writes into a real 256 KiB tmpfs (the tests run as root),
so the ENOSPC comes from the kernel, not from a mock.
"""
import errno
import hashlib
import os
import subprocess
import time

import pytest

from swarm.runtime.blobstore import FRESH_SECONDS, BlobStore, DigestMismatch
from swarm.runtime.errors import ImageError


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def blobs(tmp_path):
    return BlobStore(str(tmp_path / "blobs"))


def temporaries(blobs):
    return os.listdir(blobs.tmp_dir)


def test_a_verified_blob_is_stored_under_its_digest(blobs):
    data = b"layer bytes " * 1000
    digest = digest_of(data)
    assert blobs.ingest(digest, [data[:5000], data[5000:]], size=len(data)) == digest
    assert blobs.has(digest) and blobs.list() == [digest] and blobs.size(digest) == len(data)
    with blobs.open(digest) as f:
        assert f.read() == data
    assert temporaries(blobs) == []
    # a blob already present is not read again: its chunks are never consumed
    assert blobs.ingest(digest, iter(lambda: pytest.fail("read again"), None)) == digest


def test_a_digest_mismatch_keeps_nothing(blobs):
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        blobs.ingest(digest_of(b"expected"), [b"something else"])
    assert blobs.list() == [] and temporaries(blobs) == []


@pytest.mark.parametrize("chunks, size", [([b"abc"], 10), ([b"abcdefghijkl"], 10)])
def test_a_short_or_long_download_never_counts(blobs, chunks, size):
    data = b"abcdefghij"
    with pytest.raises(DigestMismatch):
        blobs.ingest(digest_of(data), chunks, size=size)
    assert blobs.list() == [] and temporaries(blobs) == []


def test_a_download_interrupted_midway_leaves_no_partial_blob(blobs):
    def chunks():
        yield b"first half"
        raise ConnectionError("the registry went away")

    with pytest.raises(ConnectionError):
        blobs.ingest(digest_of(b"first half and the rest"), chunks())
    assert blobs.list() == [] and temporaries(blobs) == []


def test_a_full_disk_raises_one_sentence_and_leaves_the_store_consistent(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        blobs = BlobStore(str(mnt / "blobs"))
        small = b"config"
        blobs.put(small)
        big = os.urandom(1 << 20)
        with pytest.raises(ImageError) as exc:
            blobs.ingest(digest_of(big), (big[i:i + 65536] for i in range(0, len(big), 65536)))
        message = str(exc.value)
        assert message.startswith("No space left on the device") and "\n" not in message
        assert blobs.list() == [digest_of(small)] and temporaries(blobs) == []
        blobs.put(b"still writable after the failure")        # the space was given back
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_failing_write_is_reported_like_a_full_disk(blobs, monkeypatch):
    writer = blobs.writer(digest_of(b"x" * 10))

    class Full:
        def write(self, data):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

        def close(self):
            pass

    writer._file = Full()
    with pytest.raises(ImageError, match="No space left"):
        writer.write(b"x" * 10)
    assert temporaries(blobs) == []


def test_collect_keeps_what_is_reachable_and_what_a_pull_leased(blobs):
    a, b, c = (blobs.put(x) for x in (b"kept by an image", b"leased by a pull", b"garbage"))
    with blobs.lease() as lease:
        lease.add(b)
        removed = blobs.collect(keep={a})
        assert removed == [(c, len(b"garbage"))]
        assert set(blobs.list()) == {a, b}
    assert blobs.collect(keep={a}) == [(b, len(b"leased by a pull"))]
    assert blobs.list() == [a]


def test_stale_temporaries_of_a_dead_process_are_removed_on_open(tmp_path):
    blobs = BlobStore(str(tmp_path / "blobs"))
    dead = os.path.join(blobs.tmp_dir, "999999999-abc")
    mine = os.path.join(blobs.tmp_dir, f"{os.getpid()}-def")
    for path in (dead, mine):
        with open(path, "wb") as f:
            f.write(b"partial")
    BlobStore(str(tmp_path / "blobs"))
    assert os.listdir(blobs.tmp_dir) == [os.path.basename(mine)]


@pytest.mark.parametrize("bad", ["md5:abc", "sha256:XYZ", "sha256:" + "a" * 63, "", "../../etc/passwd"])
def test_malformed_digests_are_refused(blobs, bad):
    with pytest.raises(ImageError, match="is not a sha256 digest"):
        blobs.ingest(bad, [b"x"])


def test_a_fresh_download_waits_for_its_image_but_not_for_ever(blobs):
    data = b"downloaded, not yet registered"
    digest = blobs.ingest(digest_of(data), [data], fresh=True)
    assert blobs.collect(keep=set()) == []
    blobs.settle([digest])                       # add_pulled registered it (here: nothing did)
    assert blobs.collect(keep=set()) == [(digest, len(data))]
    digest = blobs.ingest(digest_of(data), [data], fresh=True)
    later = time.monotonic() + FRESH_SECONDS + 1
    assert blobs.collect(keep=set(), now=later) == [(digest, len(data))]

"""The registry client against real docker-registry servers (plain, TLS + basic
auth, token auth), with images pushed by skopeo and ours read back by skopeo."""
import json
import os
from dataclasses import dataclass

import pytest

from swarm.registry import (DigestMismatch, ImageNotFound, NoMatchingPlatform, Platform, Puller, RegistryConfig,
                            RegistryUnreachable, TLSError, Unauthorized, push)
from tests.integration.registry import (REGISTRY_PASSWORD, REGISTRY_USER, CorruptingProxy, demo_layer, free_port,
                                        skopeo_copy, skopeo_inspect, tar_layer, write_oci_index, write_oci_layout)
from tests.unit.fake_registry import MemoryStore

CREDS = (REGISTRY_USER, REGISTRY_PASSWORD)
AMD64 = Platform("linux", "amd64")


def _image(tmp_path, demo_tar, registry, repo="team/app", tag="1", extra=b"hello", **push_flags):
    layout = str(tmp_path / "layout")
    info = write_oci_layout(layout, tag, [demo_layer(demo_tar), tar_layer({"etc/extra": extra})])
    skopeo_copy(f"oci:{layout}:{tag}", f"docker://{registry.address}/{repo}:{tag}", dest_registry=registry,
                **push_flags)
    info["layout"] = layout
    return info


def _layout_blob(layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        return f.read()


def _check_pulled(store, info, ref):
    assert store.images[ref][0] == info["manifest_digest"]
    for digest in info["layer_digests"]:
        assert store.blobs[digest] == _layout_blob(info["layout"], digest)
    assert json.loads(store.images[ref][2])["rootfs"]["diff_ids"] == info["diff_ids"]


@pytest.mark.trio
async def test_pull_from_plain_registry_and_pinned_digest_stays_local(tmp_path, demo_tar, registry_plain):
    info = _image(tmp_path, demo_tar, registry_plain)
    store = MemoryStore()
    puller = Puller(store, RegistryConfig(platform=AMD64))
    ref = f"{registry_plain.address}/team/app:1"
    events = []
    result = await puller.pull(ref, progress=events.append)
    assert result.digest == info["manifest_digest"]
    _check_pulled(store, info, ref)
    assert any(e.status == "Downloading" and e.current == e.total for e in events)
    before = registry_plain.requests("/v2/team/app/")
    again = await puller.pull(f"{ref}@{info['manifest_digest']}")
    assert not again.downloaded and registry_plain.requests("/v2/team/app/") == before


@pytest.mark.trio
async def test_pull_over_verified_tls_with_basic_auth(tmp_path, demo_tar, registry_tls):
    certs = str(tmp_path / "certs.d")
    skopeo_certs = registry_tls.pki.install(certs, registry_tls.address)
    info = _image(tmp_path, demo_tar, registry_tls, dest_certs=skopeo_certs, dest_creds=CREDS)
    ref = f"{registry_tls.address}/team/app:1"
    secure = RegistryConfig(insecure_registries=(), certs_dir=certs, platform=AMD64)
    # without the CA in certs.d/HOST the certificate is refused, in one sentence
    with pytest.raises(TLSError, match=rf"^registry {registry_tls.address}: TLS certificate not trusted"):
        await Puller(MemoryStore(), RegistryConfig(insecure_registries=(), certs_dir=str(tmp_path / "none"),
                                                   platform=AMD64), lambda d: CREDS).pull(ref)
    with pytest.raises(Unauthorized, match="^unauthorized: authentication required$"):
        await Puller(MemoryStore(), secure).pull(ref)
    with pytest.raises(Unauthorized, match="^unauthorized: authentication required$"):
        await Puller(MemoryStore(), secure, lambda d: (REGISTRY_USER, "wrong")).pull(ref)
    store = MemoryStore()
    await Puller(store, secure, lambda d: CREDS).pull(ref)
    _check_pulled(store, info, ref)


@pytest.mark.trio
async def test_pull_with_token_auth(tmp_path, demo_tar, registry_token):
    info = _image(tmp_path, demo_tar, registry_token, dest_creds=CREDS)
    ref = f"{registry_token.address}/team/app:1"
    config = RegistryConfig(platform=AMD64)
    with pytest.raises(Unauthorized, match="^unauthorized: authentication required$"):
        await Puller(MemoryStore(), config).pull(ref)
    with pytest.raises(Unauthorized, match="^unauthorized: incorrect username or password$"):
        await Puller(MemoryStore(), config, lambda d: (REGISTRY_USER, "wrong")).pull(ref)
    store = MemoryStore()
    await Puller(store, config, lambda d: CREDS).pull(ref)
    _check_pulled(store, info, ref)
    mine = [r for r in registry_token.token.requests if r["ok"] and r["user"] == REGISTRY_USER]
    assert mine[-1]["scopes"] == ["repository:team/app:pull"]


@pytest.mark.trio
async def test_unknown_tag_and_unreachable_registry(tmp_path, demo_tar, registry_plain):
    _image(tmp_path, demo_tar, registry_plain)
    puller = Puller(MemoryStore(), RegistryConfig(platform=AMD64, connect_timeout=3))
    with pytest.raises(ImageNotFound, match=rf"^No such image: {registry_plain.address}/team/app:9$"):
        await puller.pull(f"{registry_plain.address}/team/app:9")
    with pytest.raises(ImageNotFound, match=rf"^No such image: {registry_plain.address}/team/nothing:1$"):
        await puller.pull(f"{registry_plain.address}/team/nothing:1")
    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnreachable, match=rf"^registry {closed} unreachable$"):
        await puller.pull(f"{closed}/team/app:1")


@pytest.mark.trio
async def test_manifest_list_without_this_platform(tmp_path, demo_tar, registry_plain):
    layout = str(tmp_path / "multi")
    info = write_oci_index(layout, "multi", [("s390x", [tar_layer({"a": b"s390x"})]),
                                             ("arm64", [tar_layer({"a": b"arm64"})])])
    skopeo_copy(f"oci:{layout}:multi", f"docker://{registry_plain.address}/team/multi:1",
                dest_registry=registry_plain, all_platforms=True)
    ref = f"{registry_plain.address}/team/multi:1"
    with pytest.raises(NoMatchingPlatform,
                       match="^no matching manifest for linux/amd64 in the manifest list entries$"):
        await Puller(MemoryStore(), RegistryConfig(platform=AMD64)).pull(ref)
    store = MemoryStore()
    result = await Puller(store, RegistryConfig(platform=Platform("linux", "arm64"))).pull(ref)
    assert result.digest == info["index_digest"]
    assert store.images[ref][0] == info["index_digest"]
    assert json.loads(store.images[ref][2])["architecture"] == "arm64"


@pytest.mark.trio
async def test_corrupted_blob_is_refused_and_nothing_kept(tmp_path, demo_tar, registry_plain):
    info = _image(tmp_path, demo_tar, registry_plain)
    proxy = CorruptingProxy(registry_plain.address).start()
    try:
        proxy.corrupt.add(info["layer_digests"][1])
        store = MemoryStore()
        with pytest.raises(DigestMismatch, match="^digest mismatch$"):
            await Puller(store, RegistryConfig(platform=AMD64)).pull(f"{proxy.address}/team/app:1")
        assert info["layer_digests"][1] not in store.blobs and not store.images
    finally:
        proxy.stop()


@dataclass
class _Blob:
    digest: str
    size: int
    path: str


@dataclass
class _Source:
    manifest: bytes
    media_type: str
    blobs: list


def _source_from_layout(info):
    layout = info["layout"]
    manifest = _layout_blob(layout, info["manifest_digest"])
    blobs = []
    for digest in [info["config_digest"], *info["layer_digests"]]:
        path = os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])
        blobs.append(_Blob(digest, os.path.getsize(path), path))
    return _Source(manifest, "application/vnd.oci.image.manifest.v1+json", blobs)


@pytest.mark.trio
async def test_our_push_is_read_by_skopeo(tmp_path, demo_tar, registry_plain, registry_tls):
    layout = str(tmp_path / "layout")
    info = write_oci_layout(layout, "1", [demo_layer(demo_tar), tar_layer({"etc/pushed": b"by us"})])
    info["layout"] = layout
    source = _source_from_layout(info)
    events = []
    result = await push(f"{registry_plain.address}/team/ours:1", source, RegistryConfig(), progress=events.append)
    assert result.digest == info["manifest_digest"]
    assert {e.status for e in events} >= {"Preparing", "Pushed"}
    raw = skopeo_inspect(f"docker://{registry_plain.address}/team/ours:1", registry=registry_plain, raw=True)
    assert raw == json.loads(source.manifest)
    out = str(tmp_path / "copied")
    skopeo_copy(f"docker://{registry_plain.address}/team/ours:1", f"oci:{out}:1", src_registry=registry_plain)
    # a second push finds every blob there and only puts the manifest again
    events.clear()
    await push(f"{registry_plain.address}/team/ours:1", source, RegistryConfig(), progress=events.append)
    assert {e.status for e in events if e.status != "Preparing"} == {"Layer already exists"}

    certs = str(tmp_path / "certs.d")
    skopeo_certs = registry_tls.pki.install(certs, registry_tls.address)
    secure = RegistryConfig(insecure_registries=(), certs_dir=certs)
    with pytest.raises(Unauthorized):
        await push(f"{registry_tls.address}/team/ours:2", source, secure)
    await push(f"{registry_tls.address}/team/ours:2", source, secure, lambda d: CREDS)
    inspected = skopeo_inspect(f"docker://{registry_tls.address}/team/ours:2", certs=skopeo_certs, creds=CREDS)
    assert inspected["Digest"] == info["manifest_digest"]
    assert inspected["Layers"] == info["layer_digests"]

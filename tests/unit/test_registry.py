"""The registry client's decisions (challenges, platforms, endpoints, credentials)
and the puller against an in-memory registry and store."""
import itertools
import json
import os
import ssl
import stat
import threading

import pytest
import trio

from swarm.registry import auth, client, credentials, media
from swarm.api.reference import parse_image
from swarm.registry.config import RegistryConfig, endpoints, is_insecure, needs_lookup, ssl_context
from swarm.registry.errors import (DigestMismatch, ImageNotFound, NoMatchingPlatform, RegistryProtocolError,
                                   Unauthorized)
from swarm.registry.media import Platform, normalize_platform, parse_manifest, select_platform
from swarm.registry.pull import Puller
from tests.unit.fake_registry import FakeRegistry, MemoryStore, digest_of, layer

HUB_BEARER = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:samalba/my-app:pull,push"')


# ---- challenges and tokens ----

def test_bearer_challenge_with_quoted_comma():
    [c] = auth.parse_challenges([HUB_BEARER])
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:samalba/my-app:pull,push"}


def test_two_challenges_in_one_header_and_unquoted_values():
    found = auth.parse_challenges(['Basic realm="r1", Bearer realm=https://t/x, service=s'])
    assert [(c.scheme, c.params) for c in found] == [("basic", {"realm": "r1"}),
                                                     ("bearer", {"realm": "https://t/x", "service": "s"})]


def test_escaped_quote_and_garbage_do_not_raise():
    [c] = auth.parse_challenges(['Basic realm="a \\"b\\""'])
    assert c.realm == 'a "b"'
    assert auth.parse_challenges(['"unterminated']) == []


def test_token_request_and_response():
    [c] = auth.parse_challenges([HUB_BEARER])
    url, query = auth.token_request(c, ["repository:library/busybox:pull"], "joe")
    assert url == "https://auth.docker.io/token"
    assert query == "service=registry.docker.io&scope=repository%3Alibrary%2Fbusybox%3Apull&account=joe"
    token = auth.parse_token_response(b'{"access_token": "abc", "expires_in": 10}', now=100.0)
    assert (token.value, token.expires_at) == ("abc", 160.0)   # expires_in below 60 counts as 60
    with pytest.raises(RegistryProtocolError):
        auth.parse_token_response(b"{}", now=0)


def test_error_messages():
    assert auth.unauthorized(b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}').message \
        == "unauthorized: authentication required"
    assert auth.unauthorized(b'{"details":"incorrect username or password"}').message \
        == "unauthorized: incorrect username or password"
    assert auth.unauthorized(b"<html>").message == "unauthorized: authentication required"


# ---- media types and platforms ----

def _index(*platforms):
    return parse_manifest(json.dumps({"mediaType": media.DOCKER_MANIFEST_LIST, "manifests": [
        {"mediaType": media.DOCKER_MANIFEST, "digest": "sha256:" + f"{i:x}" * 64, "size": 1, "platform": p}
        for i, p in enumerate(platforms)]}).encode())


def test_platform_normalization():
    assert normalize_platform("Linux", "x86_64") == Platform("linux", "amd64", "")
    assert normalize_platform("linux", "aarch64", "v8") == Platform("linux", "arm64", "")
    assert normalize_platform("linux", "armv7l") == Platform("linux", "arm", "v7")
    assert str(Platform.parse("linux/arm/7")) == "linux/arm/v7"


def test_select_platform_prefers_exact_and_skips_attestations():
    index = _index({"os": "unknown", "architecture": "unknown"},
                   {"os": "linux", "architecture": "arm", "variant": "v6"},
                   {"os": "linux", "architecture": "arm", "variant": "v7"},
                   {"os": "linux", "architecture": "amd64"},
                   {"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert select_platform(index, Platform("linux", "amd64")).digest == "sha256:" + "3" * 64
    assert select_platform(index, Platform("linux", "arm", "v7")).digest == "sha256:" + "2" * 64
    assert select_platform(index, Platform("linux", "arm", "v6")).digest == "sha256:" + "1" * 64
    assert select_platform(index, Platform("linux", "arm64")).digest == "sha256:" + "4" * 64
    with pytest.raises(NoMatchingPlatform, match=r"^no matching manifest for linux/s390x in the manifest list entries$"):
        select_platform(index, Platform("linux", "s390x"))
    only_v7 = _index({"os": "linux", "architecture": "arm", "variant": "v7"})
    with pytest.raises(NoMatchingPlatform):   # a v6 node cannot run a v7 image
        select_platform(only_v7, Platform("linux", "arm", "v6"))


def test_parse_manifest_refuses_bad_documents():
    with pytest.raises(RegistryProtocolError, match="schema 1"):
        parse_manifest(b'{"schemaVersion": 1, "fsLayers": []}')
    with pytest.raises(RegistryProtocolError, match="digest"):
        parse_manifest(json.dumps({"mediaType": media.OCI_MANIFEST, "config": {"digest": "md5:x", "size": 1},
                                   "layers": []}).encode())
    doc = parse_manifest(json.dumps({"config": {"digest": "sha256:" + "a" * 64, "size": 3}, "layers": []}).encode())
    assert isinstance(doc, media.ImageManifest) and doc.media_type == media.OCI_MANIFEST


# ---- endpoints ----

def test_an_unverified_tls_context_loads_no_roots_and_a_verified_one_does():
    loose = ssl_context(RegistryConfig(), "127.0.0.1:5000", False)
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname
    assert loose.cert_store_stats()["x509_ca"] == 0
    strict = ssl_context(RegistryConfig(), "reg.example", True)
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname


def test_insecure_defaults_and_endpoints():
    default = RegistryConfig().insecure_registries
    assert is_insecure("127.0.0.1:5000", default) and is_insecure("127.9.9.9", default)
    assert is_insecure("localhost:5000", default) and is_insecure("[::1]:5000", default)
    assert not is_insecure("registry.example:5000", default)
    assert is_insecure("10.1.2.3:443", ("10.0.0.0/8",)) and is_insecure("reg:5000", ("reg:5000",))
    config = RegistryConfig(mirrors=("http://127.0.0.1:6000",))
    assert [e.base_url for e in endpoints("127.0.0.1:5000", config)] == ["https://127.0.0.1:5000",
                                                                         "http://127.0.0.1:5000"]
    assert [e.base_url for e in endpoints("docker.io", config)] == ["http://127.0.0.1:6000",
                                                                    "https://registry-1.docker.io"]
    assert [e.base_url for e in endpoints("docker.io", config, push=True)] == ["https://registry-1.docker.io"]
    assert [(e.base_url, e.verify) for e in endpoints("reg.example", config)] == [("https://reg.example", True)]


def test_a_name_resolving_to_a_listed_range_is_insecure_as_dockers():
    default = RegistryConfig().insecure_registries
    assert needs_lookup("myhost:5000", default) and needs_lookup("registry.example", default)
    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000", "registry-1.docker.io"):
        assert not needs_lookup(host, default), host
    assert not needs_lookup("myhost:5000", ()) and not needs_lookup("myhost:5000", ("myhost:5000", "10.0.0.0/8"))
    assert is_insecure("myhost:5000", default, ("127.0.1.1",)) and is_insecure("v6:5000", default, ("::1",))
    assert not is_insecure("myhost:5000", default, ("192.0.2.7",)) and not is_insecure("myhost:5000", default, ())
    assert is_insecure("corp:443", ("10.0.0.0/8",), ("2001:db8::1", "10.9.8.7"))
    assert not is_insecure("corp:443", ("::/0",), ("10.9.8.7",))     # an IPv4 address is in no IPv6 range
    config = RegistryConfig()
    assert [(e.base_url, e.verify) for e in endpoints("myhost:5000", config, addresses=("127.0.1.1",))] == [
        ("https://myhost:5000", False), ("http://myhost:5000", False)]


@pytest.mark.trio
async def test_the_client_resolves_a_registry_name_once_and_then_speaks_plain_http(tmp_path):
    """myhost:5000 resolves to 127.0.1.1: tried over TLS unverified, then HTTP, as Docker does;
    the name is looked up once for all the requests of the client."""
    reg = FakeRegistry()
    reg.add_image("team/app", "1", [layer({"a": b"1"})[0]], [layer({"a": b"1"})[1]])
    looked: list[str] = []

    async def resolver(name):
        looked.append(name)
        return ("127.0.1.1",)

    async with client.RegistryClient(RegistryConfig(), transport=reg.transport(), resolver=resolver) as c:
        ref = parse_image("myhost:5000/team/app:1")
        assert [e.base_url for e in await c.endpoints("myhost:5000")] == ["https://myhost:5000", "http://myhost:5000"]
        await c.get_manifest(ref)
        await c.head_manifest(ref)
        assert [e.base_url for e in await c.endpoints("docker.io")] == ["https://registry-1.docker.io"]
    assert looked == ["myhost"]


@pytest.mark.trio
async def test_the_system_resolver_reads_the_hosts_file():
    assert set(await client.lookup("localhost")) & {"127.0.0.1", "::1"}     # /etc/hosts: no DNS query


# ---- credentials ----

def test_credentials_file_mode_and_shape(tmp_path):
    path = str(tmp_path / "state" / "config.json")
    credentials.store(path, "127.0.0.1:5000", "joe", "s3:cret")
    credentials.store(path, "docker.io", "hub", "pw")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(open(path).read())
    assert doc == {"auths": {"127.0.0.1:5000": {"auth": "am9lOnMzOmNyZXQ="},
                             "https://index.docker.io/v1/": {"auth": "aHViOnB3"}}}
    assert credentials.lookup(path, "127.0.0.1:5000") == ("joe", "s3:cret")
    assert credentials.lookup(path, "docker.io") == ("hub", "pw")
    assert credentials.lookup(path, "other") is None
    assert credentials.erase(path, "127.0.0.1:5000") and not credentials.erase(path, "127.0.0.1:5000")
    assert list(json.loads(open(path).read())["auths"]) == ["https://index.docker.io/v1/"]
    assert [n for n in os.listdir(tmp_path / "state")] == ["config.json"]   # no temp file left


def test_credentials_file_keeps_other_keys_and_refuses_garbage(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"auths": {}, "credsStore": "x"}')
    credentials.store(str(path), "h:1", "u", "p")
    assert json.loads(path.read_text())["credsStore"] == "x"
    path.write_text("[1]")
    with pytest.raises(credentials.CredentialsError, match="Docker's config.json shape"):
        credentials.lookup(str(path), "h:1")


# ---- the puller against the in-memory registry ----

HOST = "reg.example:5000"


def _image(reg, repo="team/app", tag="1", extra=b"x"):
    base, base_id = layer({"bin/sh": b"shell"})
    top, top_id = layer({"app": extra})
    digest, manifest = reg.add_image(repo, tag, [base, top], [base_id, top_id])
    return digest, manifest, base, top


def _puller(reg, store, **kwargs):
    return Puller(store, RegistryConfig(insecure_registries=()), transport=reg.transport(), **kwargs)


@pytest.mark.trio
async def test_pull_by_tag_then_by_digest_without_network():
    reg, store = FakeRegistry(), MemoryStore()
    digest, manifest, base, top = _image(reg)
    events = []
    result = await _puller(reg, store).pull(f"{HOST}/team/app:1", progress=events.append)
    assert result.digest == digest and result.downloaded
    assert store.images[f"{HOST}/team/app:1"][0] == digest
    assert set(store.blobs) == {digest_of(base), digest_of(top)}
    assert {e.status for e in events} >= {"Pulling fs layer", "Downloading", "Download complete", "Pull complete"}
    before = sum(reg.requests.values())
    again = await _puller(reg, store).pull(f"{HOST}/team/app:1@{digest}")
    assert not again.downloaded and sum(reg.requests.values()) == before


@pytest.mark.trio
async def test_byte_counts_are_reported_at_most_every_100_ms_and_always_at_the_end(monkeypatch):
    monkeypatch.setattr(client, "BLOB_CHUNK", 1 << 16)
    reg, store = FakeRegistry(), MemoryStore()
    big, big_id = layer({"data": os.urandom(400_000)})      # random: gzip leaves 7 chunks of 64 KiB
    reg.add_image("team/app", "1", [big], [big_id])
    ticks = itertools.count()
    events = []

    def clock():            # asked once per chunk received: a chunk every 60 ms
        return next(ticks) * 0.06

    await _puller(reg, store, clock=clock).pull(f"{HOST}/team/app:1", progress=events.append)
    counts = [e.current for e in events if e.status == "Downloading"]
    assert counts[-1] == len(big)
    chunks = -(-len(big) // (1 << 16))
    assert len(counts) == chunks // 2 + 1 and counts == sorted(counts)   # every other chunk, plus the last


@pytest.mark.trio
async def test_concurrent_pulls_share_one_flight_and_shared_layers_download_once():
    reg, store = FakeRegistry(), MemoryStore()
    _image(reg, tag="1", extra=b"one")
    _image(reg, tag="2", extra=b"two")   # same base layer
    puller = _puller(reg, store)
    async with trio.open_nursery() as nursery:
        for ref in (f"{HOST}/team/app:1", f"{HOST}/team/app:1", f"{HOST}/team/app:2"):
            nursery.start_soon(puller.pull, ref)
    assert reg.requests["GET /v2/team/app/manifests/1"] == 1
    base_digest = digest_of(layer({"bin/sh": b"shell"})[0])
    assert reg.requests[f"GET /v2/team/app/blobs/{base_digest}"] == 1
    assert set(store.images) == {f"{HOST}/team/app:1", f"{HOST}/team/app:2"}


@pytest.mark.trio
async def test_corrupted_blob_is_refused_and_not_kept():
    reg, store = FakeRegistry(), MemoryStore()
    _, _, base, top = _image(reg)
    reg.corrupt.add(digest_of(top))
    with pytest.raises(DigestMismatch, match="^digest mismatch$"):
        await _puller(reg, store).pull(f"{HOST}/team/app:1")
    assert digest_of(top) not in store.blobs and digest_of(top) in store.aborted
    assert not store.images


@pytest.mark.trio
async def test_the_layers_are_unpacked_after_every_blob_is_stored_and_the_image_registered():
    """Unpacking waits for the last download (on 2 cores it slowed the downloads twice over), and
    a caller wanting the layers (the default, a task's pull) returns only once they are unpacked."""
    reg, store = FakeRegistry(), MemoryStore()
    _, _, base, top = _image(reg)
    ref = f"{HOST}/team/app:1"
    events = []
    with trio.fail_after(5):
        result = await _puller(reg, store).pull(ref, progress=events.append)
    assert result.image == ref
    assert store.unpacked == [(ref, tuple(sorted([digest_of(base), digest_of(top)])), (ref,))]
    assert not store.pending
    steps = [(e.layer, e.status) for e in events if e.status != "Downloading"]
    for blob in (base, top):
        short = digest_of(blob).split(":")[1][:12]
        assert steps.count((short, "Pull complete")) == 1
        assert steps.index((short, "Download complete")) < steps.index((short, "Pull complete"))


@pytest.mark.trio
async def test_a_pull_that_need_not_wait_returns_before_the_background_unpack():
    """`unpacked=False` with a background nursery (the CLI's pull): the pull returns with the image
    registered, its unpacking still to come; a second caller that needs the layers waits for them."""
    reg, store = FakeRegistry(), MemoryStore()
    _image(reg)
    ref = f"{HOST}/team/app:1"
    release = threading.Event()
    store.on_unpack = lambda image_id: release.wait(5)
    async with trio.open_nursery() as nursery:
        def background(fn, *args):
            nursery.start_soon(fn, *args)
            return True

        puller = _puller(reg, store, background=background)
        with trio.fail_after(5):
            result = await puller.pull(ref, unpacked=False)
        assert result.image == ref and ref in store.images and ref in store.pending
        assert not store.unpacked or store.unpacked[0][0] == ref      # begun in the background at most
        release.set()
        with trio.fail_after(5):
            await puller.pull(ref + "@" + result.digest, unpacked=True)   # holds the digest: no network
    assert [u[0] for u in store.unpacked] == [ref] and not store.pending


@pytest.mark.trio
async def test_a_corrupted_blob_ends_the_pull_before_anything_is_registered_or_unpacked():
    reg, store = FakeRegistry(), MemoryStore()
    _, _, base, top = _image(reg)
    reg.corrupt.add(digest_of(top))
    with pytest.raises(DigestMismatch, match="^digest mismatch$"):
        await _puller(reg, store).pull(f"{HOST}/team/app:1")
    assert not store.unpacked and not store.images and digest_of(top) not in store.blobs


@pytest.mark.trio
async def test_unknown_tag_and_platforms():
    reg, store = FakeRegistry(), MemoryStore()
    digest, manifest, _, _ = _image(reg)
    with pytest.raises(ImageNotFound, match=rf"^No such image: {HOST}/team/app:9$"):
        await _puller(reg, store).pull(f"{HOST}/team/app:9")
    reg.add_index("team/app", "multi", [(digest, len(manifest), "linux", "s390x", "")])
    puller = Puller(store, RegistryConfig(insecure_registries=(), platform=Platform("linux", "arm64")),
                    transport=reg.transport())
    with pytest.raises(NoMatchingPlatform, match="^no matching manifest for linux/arm64 in the manifest list entries$"):
        await puller.pull(f"{HOST}/team/app:multi")
    index_digest = reg.add_index("team/app", "multi", [(digest, len(manifest), "linux", "arm64", "v8")])
    result = await puller.pull(f"{HOST}/team/app:multi")
    assert result.digest == index_digest and store.images[f"{HOST}/team/app:multi"][1] == manifest


@pytest.mark.trio
async def test_bearer_and_basic_auth():
    reg, store = FakeRegistry(auth="bearer", users={"joe": "pw"}), MemoryStore()
    _image(reg)
    with pytest.raises(Unauthorized, match="^unauthorized: authentication required$"):
        await _puller(reg, store).pull(f"{HOST}/team/app:1")
    with pytest.raises(Unauthorized, match="^unauthorized: incorrect username or password$"):
        await _puller(reg, store, credentials=lambda d: ("joe", "bad")).pull(f"{HOST}/team/app:1")
    result = await _puller(reg, store, credentials=lambda d: ("joe", "pw")).pull(f"{HOST}/team/app:1")
    assert result.downloaded
    assert reg.requests["GET /token"] == 3    # one token per pull (one scope), reused for every blob
    basic = FakeRegistry(auth="basic", users={"joe": "pw"})
    _image(basic)
    with pytest.raises(Unauthorized, match="^unauthorized: authentication required$"):
        await _puller(basic, MemoryStore(), credentials=lambda d: ("joe", "bad")).pull(f"{HOST}/team/app:1")
    assert (await _puller(basic, MemoryStore(), credentials=lambda d: ("joe", "pw")).pull(f"{HOST}/team/app:1")).downloaded


@pytest.mark.trio
async def test_docker_hub_mirrors_first_then_the_hub():
    reg = FakeRegistry()
    _image(reg, repo="library/busybox", tag="latest")
    config = RegistryConfig(insecure_registries=(), mirrors=("https://mirror-a.example", "https://mirror-b.example"))
    store = MemoryStore()
    await Puller(store, config, transport=reg.transport()).pull("busybox")
    assert reg.hosts[0] == "mirror-a.example" and set(reg.hosts) == {"mirror-a.example"}
    assert "busybox:latest" in store.images
    reg.hosts.clear()
    reg.down.add("mirror-a.example")
    reg.down.add("mirror-b.example")
    await Puller(MemoryStore(), config, transport=reg.transport()).pull("busybox:latest")
    assert reg.hosts[:3] == ["mirror-a.example", "mirror-b.example", "registry-1.docker.io"]

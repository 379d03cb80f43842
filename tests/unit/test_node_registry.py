"""swarm/daemon/registry.py and swarm/daemon/transfers.py: Docker's encoded auth config, the node's
registry settings, the NodeRegistry on a real ImageStore against an in-memory registry (an httpx
transport), and the long polls of image.pull/image.push (a pull outlives its poller)."""
import base64
import json
import os
import shutil
import stat
import threading

import pytest
import trio

from swarm.daemon.config import BadSetting, check_insecure_registry, check_mirror
from swarm.daemon.registry import (AuthConfig, BadAuth, NodeRegistry, decode_auth, encode_auth, registry_config,
                                   server_domain)
from swarm.daemon.transfers import Transfer, registry_handlers
from swarm.registry import LayerProgress, Unauthorized
from swarm.registry import credentials as stored
from swarm.rpc.messages import Peer, RPCError
from swarm.runtime.images import ImageStore
from tests.unit.fake_registry import FakeRegistry, layer

CLI = Peer("", "local", "")


# -- encoded auth ---------------------------------------------------------------------------------

def test_encode_auth_is_dockers_base64url_json_and_decodes_back():
    text = encode_auth("tester", "s3cr?t>>", "127.0.0.1:5000")
    assert json.loads(base64.urlsafe_b64decode(text)) == {"username": "tester", "password": "s3cr?t>>",
                                                          "serveraddress": "127.0.0.1:5000"}
    assert decode_auth(text) == AuthConfig("tester", "s3cr?t>>", "127.0.0.1:5000")


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode,
                                    lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")])
def test_decode_auth_takes_what_docker_clients_send(encode):
    doc = json.dumps({"username": "u", "password": "p>?", "email": "x@y"}).encode()
    assert decode_auth(encode(doc).decode()) == AuthConfig("u", "p>?", "")


def test_decode_auth_reads_the_config_json_auth_field_and_empty_is_anonymous():
    text = base64.b64encode(json.dumps({"auth": base64.b64encode(b"u:p:q").decode()}).encode()).decode()
    assert decode_auth(text).pair() == ("u", "p:q")
    assert decode_auth("").pair() is None


@pytest.mark.parametrize("text, sentence", [
    ("%%%", "not base64 of a JSON auth config"),
    (base64.b64encode(b"[1]").decode(), "not a JSON object"),
    (base64.b64encode(b'{"username": 5}').decode(), "username must be a string"),
    (base64.b64encode(b'{"auth": "bm9jb2xvbg=="}').decode(), "auth is not base64 of USER:PASSWORD"),
    ("A" * 20000, "at most"),
])
def test_decode_auth_refuses_malformed_input_with_one_sentence(text, sentence):
    with pytest.raises(BadAuth, match=sentence):
        decode_auth(text)


# -- settings ---------------------------------------------------------------------------------

def test_insecure_registry_and_mirror_follow_dockerds_rules():
    assert check_insecure_registry("10.1.2.0/24") == "10.1.2.0/24"
    assert check_insecure_registry("reg.local:5000") == "reg.local:5000"
    assert check_mirror("https://mirror.example:5000/") == "https://mirror.example:5000"
    for bad, message in (("http://reg:5000", "should not contain '://'"), ("10.1.2.0/99", "CIDR"),
                         ("reg:99999", r"HOST\[:PORT\]")):
        with pytest.raises(BadSetting, match=message):
            check_insecure_registry(bad)
    for bad, message in (("ftp://m", "unsupported scheme"), ("https://u:p@m", "username/password"),
                         ("https://m/v2", "path"), ("https://m?x=1", "query")):
        with pytest.raises(BadSetting, match=message):
            check_mirror(bad)


def test_registry_config_keeps_dockers_loopback_default_and_certs_d():
    config = registry_config(["10.0.0.0/8"], ["https://m"], "/var/lib/swarm")
    assert config.insecure_registries[:2] == ("127.0.0.0/8", "::1/128") and "10.0.0.0/8" in config.insecure_registries
    assert config.mirrors == ("https://m",) and config.certs_dir == "/var/lib/swarm/certs.d"


def test_login_servers_as_docker_names_them():
    assert server_domain("") == ("docker.io", "https://index.docker.io/v1/")
    assert server_domain("docker.io") == ("docker.io", "https://index.docker.io/v1/")
    assert server_domain("https://reg.example:5000/v2/") == ("reg.example:5000", "reg.example:5000")
    with pytest.raises(BadSetting):
        server_domain("bad host")


# -- the progress docker shows ------------------------------------------------------------------

def test_transfer_records_docker_steps_once_and_counts_only_in_the_layer_state():
    t = Transfer("1", "pull", "r")
    for event in (LayerProgress("a", "Pulling fs layer", 0, 10), LayerProgress("b", "Pulling fs layer", 0, 5),
                  LayerProgress("b", "Already exists", 5, 5), LayerProgress("a", "Downloading", 4, 10),
                  LayerProgress("a", "Downloading", 10, 10), LayerProgress("a", "Download complete", 10, 10),
                  LayerProgress("a", "Downloading", 10, 10), LayerProgress("a", "Pull complete", 10, 10),
                  LayerProgress("b", "Pull complete", 5, 5)):
        t.record(event)
    assert t.log == [["a", "Pulling fs layer"], ["b", "Pulling fs layer"], ["b", "Already exists"],
                     ["a", "Verifying Checksum"], ["a", "Download complete"], ["a", "Pull complete"]]
    answer = t.answer(4)
    assert answer["log"] == [["a", "Download complete"], ["a", "Pull complete"]] and not answer["done"]
    assert answer["layers"] == [{"id": "a", "status": "Pull complete", "current": 10, "total": 10},
                                {"id": "b", "status": "Already exists", "current": 5, "total": 5}]
    t.finish(1.0, error="digest mismatch")
    assert t.answer(99) | {"layers": None} == {"op": "1", "version": t.version, "log": [], "logged": 6,
                                               "layers": None, "done": True, "error": "digest mismatch"}


# -- the service on a real store -----------------------------------------------------------------

HOST = "reg.test:5000"


@pytest.fixture
def fake():
    registry = FakeRegistry()
    blob, diff_id = layer({"etc/hello": b"hi\n"})
    registry.add_image("team/app", "1", [blob], [diff_id])
    return registry


@pytest.fixture
def node(tmp_path, fake):
    store = ImageStore(str(tmp_path / "images"))
    config = registry_config([HOST], [], str(tmp_path))
    return NodeRegistry(store, config, str(tmp_path / "config.json"), transport=fake.transport())


@pytest.mark.trio
async def test_pull_resolve_and_the_nodes_credentials(node, fake, tmp_path):
    ref = f"{HOST}/team/app:1"
    pinned = await node.resolve(ref)
    digest = pinned.split("@", 1)[1]
    assert pinned == f"{ref}@{digest}" and fake.requests["HEAD /v2/team/app/manifests/1"] == 1
    image_id = await node.pull(ref)
    assert node.store.has_digest(f"{HOST}/team/app", digest) == image_id
    assert await node.resolve(pinned) == pinned                       # pinned: no registry asked
    assert node.encoded_auth(ref) == ""
    stored.store(node.credentials_path, HOST, "tester", "pw")
    assert decode_auth(node.encoded_auth(ref)) == AuthConfig("tester", "pw", HOST)


@pytest.mark.trio
async def test_login_stores_only_credentials_the_registry_accepts(tmp_path):
    fake = FakeRegistry(auth="basic", users={"tester": "good"})
    node = NodeRegistry(ImageStore(str(tmp_path / "images")), registry_config([HOST], [], str(tmp_path)),
                        str(tmp_path / "config.json"), transport=fake.transport())
    with pytest.raises(Unauthorized, match="^unauthorized: authentication required$"):
        await node.login(HOST, "tester", "bad")
    assert not os.path.exists(node.credentials_path)
    assert await node.login(f"http://{HOST}/", "tester", "good") == HOST
    assert stat.S_IMODE(os.stat(node.credentials_path).st_mode) == 0o600
    assert stored.lookup(node.credentials_path, HOST) == ("tester", "good")
    assert await node.logout(HOST) == (HOST, True)
    assert await node.logout(HOST) == (HOST, False)


@pytest.mark.trio
async def test_a_pull_goes_on_without_its_poller_and_a_second_caller_joins_it(node, fake):
    handlers = registry_handlers(node, poll_wait=0.05)
    ref = f"{HOST}/team/app:1"
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        first = await handlers["image.pull"](CLI, {"ref": ref})
        joined = await handlers["image.pull"](CLI, {"ref": ref})
        assert joined["op"] == first["op"]
        with trio.fail_after(10):               # nobody polls: the pull still finishes
            while not node.puller.store.has_digest(f"{HOST}/team/app", fake_digest(fake)):
                await trio.sleep(0.01)
        answer = await handlers["image.pull"](CLI, {"op": first["op"], "version": first["version"], "since": 0})
        while not answer["done"]:
            answer = await handlers["image.pull"](CLI, {"op": first["op"], "version": answer["version"], "since": 0})
        assert answer["done"] and answer["result"]["digest"] == fake_digest(fake)
        assert answer["result"]["fresh"] and answer["result"]["ref"] == ref
        assert [status for _, status in answer["log"]] == ["Pulling fs layer", "Verifying Checksum",
                                                           "Download complete", "Pull complete"]
        again = await handlers["image.pull"](CLI, {"ref": ref})          # a new pull: up to date
        assert again["op"] != first["op"]
        while not again["done"]:
            again = await handlers["image.pull"](CLI, {"op": again["op"], "version": again["version"],
                                                       "since": again["logged"]})
        assert again["result"]["fresh"] is False
        with pytest.raises(RPCError, match="no transfer"):
            await handlers["image.pull"](CLI, {"op": "nosuch"})
        with pytest.raises(RPCError, match="repository name must be lowercase"):
            await handlers["image.pull"](CLI, {"ref": "Team/App"})
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_failed_pull_answers_its_sentence(node):
    handlers = registry_handlers(node, poll_wait=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        answer = await handlers["image.pull"](CLI, {"ref": f"{HOST}/team/app:9"})
        while not answer["done"]:
            answer = await handlers["image.pull"](CLI, {"op": answer["op"], "version": answer["version"]})
        assert answer["error"] == f"No such image: {HOST}/team/app:9" and "result" not in answer
        nursery.cancel_scope.cancel()


def fake_digest(fake: FakeRegistry) -> str:
    from tests.unit.fake_registry import digest_of
    return digest_of(fake.manifests[("team/app", "1")][0])


@pytest.mark.trio
async def test_a_quiet_pull_is_one_call_that_answers_at_the_end(node, fake):
    """`image pull -q` asks with until=done: one answer, the outcome (no answer per layer step)."""
    handlers = registry_handlers(node, poll_wait=0.05)
    ref = f"{HOST}/team/app:1"
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with trio.fail_after(10):
            answer = await handlers["image.pull"](CLI, {"ref": ref, "until": "done"})
        assert answer["done"] and answer["result"]["digest"] == fake_digest(fake)
        assert [status for _, status in answer["log"]] == ["Pulling fs layer", "Verifying Checksum",
                                                           "Download complete", "Pull complete"]
        with pytest.raises(RPCError, match='until must be "news" or "done"$'):
            await handlers["image.pull"](CLI, {"ref": ref, "until": "later"})
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_cli_pull_ends_before_the_unpacking_which_the_daemon_finishes(node, fake, monkeypatch):
    """The CLI's pull is done with the image registered; the layers are unpacked in the registry
    service's nursery after, and an agent's pull (unpacked=True) waits for them."""
    from swarm.runtime import layerstage
    handlers = registry_handlers(node, poll_wait=0.05)
    store = node.store
    ref = f"{HOST}/team/app:1"
    release = threading.Event()
    real = layerstage.unpack_blob

    def held(blob, dest, budget):
        assert release.wait(10)
        return real(blob, dest, budget)

    monkeypatch.setattr(layerstage, "unpack_blob", held)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with trio.fail_after(10):
            answer = await handlers["image.pull"](CLI, {"ref": ref, "until": "done"})
        image_id = answer["result"]["id"]
        assert store.pending_images() == [image_id]          # registered, `image ls` shows it
        assert {r["id"] for r in store.list()} == {image_id}
        waiter = trio.Event()

        async def agent_pull():
            await node.pull(ref)                             # a task's pull: waits for the layers
            waiter.set()

        nursery.start_soon(agent_pull)
        await trio.sleep(0.1)
        assert not waiter.is_set()
        release.set()
        with trio.fail_after(10):
            await waiter.wait()
        assert store.pending_images() == []
        assert os.path.isfile(os.path.join(store.layer_path(store.resolve(ref).layers[0]), "etc", "hello"))
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_restarted_registry_service_finishes_an_interrupted_unpack(tmp_path, fake):
    store = ImageStore(str(tmp_path / "images"))
    config = registry_config([HOST], [], str(tmp_path))
    first = NodeRegistry(store, config, str(tmp_path / "config.json"), transport=fake.transport())
    pulled = await first.pull_image(f"{HOST}/team/app:1", unpacked=False)   # no service running: unpacked inline
    assert store.pending_images() == []
    doc = store._read_image(pulled.image_id)      # as a daemon stopped mid-unpack leaves it
    shutil.rmtree(store.layer_path(doc["layers"][0]))
    doc["unpacking"] = list(doc["layers"])
    store._write_image(doc)
    again = NodeRegistry(ImageStore(str(tmp_path / "images")), config, str(tmp_path / "config.json"),
                         transport=fake.transport())
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        with trio.fail_after(10):
            while again.store.pending_images():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert os.path.isfile(os.path.join(store.layer_path(doc["layers"][0]), "etc", "hello"))

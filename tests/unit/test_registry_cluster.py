"""Images from registries in the cluster, without a registry: the manager pins a service's
image to its registry's digest through the daemon's resolver (a fake here), keeps the
--with-registry-auth credentials out of every view and hands them only to the node a task
is assigned to; the agent pulls an image its node lacks before preparing the task (a fake
pull, the in-memory runtime). The real thing: tests/integration/test_registry_cluster.py."""
from __future__ import annotations

import base64
import dataclasses
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from swarm.agent.agent import Agent
from swarm.api import spec
from swarm.api.reference import InvalidReference
from swarm.api.errors import ApiError, SwarmError
from swarm.daemon.config import Paths
from swarm.registry import credentials
from swarm.manager.controlapi.services import listed_image
from swarm.manager.dispatcher import task_credentials
from swarm.registry.errors import ImageNotFound, RegistryUnreachable, Unauthorized
from swarm.runtime.fake import FakeRuntime
from tests.unit.test_agent import STARTING, DEADLINE, PACE, FakeManager, FakeNetworking, make_task, reported
from tests.unit.test_cli import ok
from tests.unit.test_cli_service import SID, ServiceFake
from tests.unit.test_reconciler import cluster, settle, tasks_of
from tests.unit.test_dispatcher import polled

DIGEST = "sha256:" + "ab" * 32
NEWER = "sha256:" + "cd" * 32
REGISTRY = "127.0.0.1:5000"
AUTH = base64.urlsafe_b64encode(json.dumps({"username": "tester", "password": "s3cret",
                                            "serveraddress": REGISTRY}).encode()).decode()


class FakeResolver:
    """The daemon's resolver: a registry's tags -> digests; an unknown repository gets
    `failure` (what the registry client would raise; by default its "No such image")."""

    def __init__(self, tags: dict[str, str], failure: SwarmError | None = None) -> None:
        self.tags = tags
        self.failure = failure
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, ref: str, auth: str) -> str:
        self.calls.append((ref, auth))
        if ref not in self.tags:
            raise self.failure or ImageNotFound(ref)
        return f"{ref}@{self.tags[ref]}"


async def resolving_cluster(resolver: FakeResolver, images=("demo:1",)):
    store, manager, reconciler, dispatcher, api = await cluster(images)
    api.resolve_image = resolver
    return store, reconciler, dispatcher, api


@pytest.fixture
def service_fake(state_dir):
    daemon = ServiceFake(state_dir)
    daemon.answers.update({"service.create": {"id": SID, "name": "web"}, "service.update": {"id": SID, "name": "web"}})
    daemon.start()
    yield daemon
    daemon.stop()


# -- resolution on the manager -----------------------------------------------------------------

@pytest.mark.trio
async def test_create_pins_the_tag_to_the_registrys_digest_and_ls_shows_the_tag():
    resolver = FakeResolver({f"{REGISTRY}/demo:1": DIGEST})
    store, reconciler, _, api = await resolving_cluster(resolver, images=())
    await api.create({"name": "web", "image": f"{REGISTRY}/demo:1", "replicas": 3})
    [view] = await api.inspect({"refs": ["web"]})
    assert view["spec"]["container"]["image"] == f"{REGISTRY}/demo:1@{DIGEST}"
    [row] = await api.ls({})
    assert row["image"] == f"{REGISTRY}/demo:1"
    await settle(reconciler)
    assert {t.spec.image for t in tasks_of(store, "web")} == {f"{REGISTRY}/demo:1@{DIGEST}"}


@pytest.mark.trio
async def test_no_resolve_image_keeps_the_reference_and_asks_no_registry():
    resolver = FakeResolver({})
    _, _, _, api = await resolving_cluster(resolver, images=())
    await api.create({"name": "web", "image": f"{REGISTRY}/demo:1", "no_resolve_image": True})
    [view] = await api.inspect({"refs": ["web"]})
    assert view["spec"]["container"]["image"] == f"{REGISTRY}/demo:1" and resolver.calls == []


@pytest.mark.trio
async def test_an_image_a_node_holds_is_kept_as_given_when_no_registry_answers():
    resolver = FakeResolver({}, failure=RegistryUnreachable("docker.io"))
    _, _, _, api = await resolving_cluster(resolver, images=("demo:1",))
    answer = await api.create({"name": "web", "image": "demo:1"})
    [view] = await api.inspect({"refs": ["web"]})
    assert view["spec"]["container"]["image"] == "demo:1"
    assert answer["warnings"] == ["image demo:1 could not be accessed on a registry to record its digest. Each node "
                                  "will access demo:1 independently, possibly leading to different nodes running "
                                  "different versions of the image."]


@pytest.mark.trio
@pytest.mark.parametrize("failure, sentence", [
    (ImageNotFound(f"{REGISTRY}/demo:9"), "No such image: 127.0.0.1:5000/demo:9"),
    (Unauthorized(), "unauthorized: authentication required"),
    (RegistryUnreachable(REGISTRY), "image 127.0.0.1:5000/demo:9 not found on any node "
                                    "(registry 127.0.0.1:5000 unreachable)"),
    (InvalidReference("invalid reference format"), "invalid reference format"),
])
async def test_an_image_no_registry_gives_and_no_node_holds_is_refused_with_the_registrys_sentence(failure, sentence):
    resolver = FakeResolver({}, failure=failure)
    store, _, _, api = await resolving_cluster(resolver, images=("demo:1",))
    index = store.index
    with pytest.raises(ApiError) as err:
        await api.create({"name": "web", "image": f"{REGISTRY}/demo:9"})
    assert (err.value.code, err.value.message) == ("bad_request", sentence)
    assert store.index == index and api.services() == {}


@pytest.mark.trio
async def test_a_slow_registry_is_unreachable_after_the_resolve_timeout(autojump_clock):
    async def hangs(ref: str, auth: str) -> str:
        await trio.sleep_forever()
        return ref

    _, _, _, api = await resolving_cluster(FakeResolver({}), images=())
    api.resolve_image = hangs
    with pytest.raises(ApiError, match=r"^bad_request: image 127.0.0.1:5000/demo:1 not found on any node "
                                       r"\(registry 127.0.0.1:5000 unreachable\)$"):
        await api.create({"name": "web", "image": f"{REGISTRY}/demo:1"})


@pytest.mark.trio
async def test_update_resolves_only_a_new_image_and_a_moved_tag_changes_nothing_until_then():
    resolver = FakeResolver({f"{REGISTRY}/demo:1": DIGEST})
    _, _, _, api = await resolving_cluster(resolver, images=())
    await api.create({"name": "web", "image": f"{REGISTRY}/demo:1"})
    resolver.tags[f"{REGISTRY}/demo:1"] = NEWER          # the tag was pushed again
    await api.update({"ref": "web", "env_add": ["A=1"]})
    assert api.find("web").spec.container.image == f"{REGISTRY}/demo:1@{DIGEST}"
    assert len(resolver.calls) == 1
    await api.update({"ref": "web", "image": f"{REGISTRY}/demo:1"})
    service = api.find("web")
    assert service.spec.container.image == f"{REGISTRY}/demo:1@{NEWER}" and service.spec_version == 3
    with pytest.raises(ApiError, match="No such image: 127.0.0.1:5000/demo:9"):
        await api.update({"ref": "web", "image": f"{REGISTRY}/demo:9"})
    assert api.find("web").spec.container.image == f"{REGISTRY}/demo:1@{NEWER}"


# -- --with-registry-auth ------------------------------------------------------------------------------

@pytest.mark.trio
async def test_registry_auth_is_used_to_resolve_stored_and_never_shown():
    resolver = FakeResolver({f"{REGISTRY}/demo:1": DIGEST})
    _, _, _, api = await resolving_cluster(resolver, images=())
    await api.create({"name": "web", "image": f"{REGISTRY}/demo:1", "registry_auth": AUTH})
    assert resolver.calls == [(f"{REGISTRY}/demo:1", AUTH)]
    assert api.find("web").registry_auth == AUTH
    [view] = await api.inspect({"refs": ["web"]})
    assert "registry_auth" not in view and "s3cret" not in repr(view) and AUTH not in repr(view)
    assert AUTH not in repr(await api.ls({})) + repr(await api.ps({}))
    # update: the stored credentials resolve a new image; given ones replace them
    await api.update({"ref": "web", "image": f"{REGISTRY}/demo:1"})
    assert resolver.calls[-1] == (f"{REGISTRY}/demo:1", AUTH)
    await api.update({"ref": "web", "registry_auth": ""})
    assert api.find("web").registry_auth == "" and api.find("web").spec_version == 1   # no task rolls


@pytest.mark.trio
@pytest.mark.parametrize("auth", ["not base64!", base64.urlsafe_b64encode(b"[1, 2]").decode(),
                                  base64.urlsafe_b64encode(b'{"username": 5}').decode(), "x" * 20_000, 7])
async def test_malformed_registry_auth_is_refused_before_anything_is_written(auth):
    store, _, _, api = await resolving_cluster(FakeResolver({f"{REGISTRY}/demo:1": DIGEST}), images=())
    index = store.index
    with pytest.raises(ApiError) as err:
        await api.create({"name": "web", "image": f"{REGISTRY}/demo:1", "registry_auth": auth})
    assert err.value.code == "bad_request" and "--with-registry-auth" in err.value.message
    assert store.index == index


@pytest.mark.trio
async def test_the_dispatcher_sends_the_credentials_only_with_the_tasks_of_the_node_they_are_assigned_to():
    resolver = FakeResolver({f"{REGISTRY}/private:1": DIGEST, f"{REGISTRY}/public:1": NEWER})
    store, reconciler, dispatcher, api = await resolving_cluster(resolver, images=())
    await api.create({"name": "private", "image": f"{REGISTRY}/private:1", "replicas": 2, "registry_auth": AUTH})
    await api.create({"name": "public", "image": f"{REGISTRY}/public:1", "replicas": 3})
    await settle(reconciler)
    private = {t.id: t.node_id for t in tasks_of(store, "private")}
    for node in ("n1", "n2", "n3"):
        answer = await polled(dispatcher, node, {"since": 0, "wait": 0})
        mine = {tid for tid, nid in private.items() if nid == node}
        assert answer.get("auth", {}) == {tid: AUTH for tid in mine}
        assert AUTH not in repr(answer["changed"])      # the task records themselves never hold them
    # a task that ended needs no credentials any more
    task = tasks_of(store, "private")[0]
    assert task_credentials([task], api.services()) == {task.id: AUTH}
    ended = dataclasses.replace(task, status=spec.TaskStatus("failed"))
    assert task_credentials([ended], api.services()) == {}


def test_service_ls_shows_a_pinned_tag_without_its_digest_as_docker():
    assert listed_image(f"{REGISTRY}/demo:1@{DIGEST}") == f"{REGISTRY}/demo:1"
    assert listed_image(f"busybox:latest@{DIGEST}") == "busybox:latest"
    assert listed_image(f"busybox@{DIGEST}") == f"busybox@{DIGEST}"
    assert listed_image("demo:1") == "demo:1"


def decoded(auth: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(auth + "=" * (-len(auth) % 4)))


def test_the_cli_sends_this_nodes_stored_credentials_for_the_images_registry(service_fake, run, state_dir):
    credentials.store(Paths(state_dir).credentials, REGISTRY, "tester", "s3cret")
    assert ok(run("service", "create", "-d", "--name", "web", "--with-registry-auth", "--no-resolve-image",
                  f"{REGISTRY}/demo:1"))
    [params] = service_fake.params("service.create")
    assert params["no_resolve_image"] is True
    assert {k: decoded(params["registry_auth"]).get(k) for k in ("username", "password", "serveraddress")} == {
        "username": "tester", "password": "s3cret", "serveraddress": REGISTRY}
    # update without --image: the credentials for the service's current image
    service_fake.answers["service.inspect"] = [{"spec": {"container": {"image": f"{REGISTRY}/demo:1@{DIGEST}"}}}]
    assert ok(run("service", "update", "-d", "--with-registry-auth", "web")) == "web\n"
    [params] = service_fake.params("service.update")
    assert decoded(params["registry_auth"])["password"] == "s3cret" and "image" not in params
    # no credentials for that registry: none sent (the nodes use their own)
    assert ok(run("service", "create", "-d", "--name", "db", "--with-registry-auth", "other.example:5000/db:1"))
    assert service_fake.params("service.create")[-1]["registry_auth"] == ""
    # without the flags, neither param
    assert ok(run("service", "create", "-d", "--name", "x", f"{REGISTRY}/demo:1"))
    assert not {"registry_auth", "no_resolve_image"} & set(service_fake.params("service.create")[-1])


def test_the_cli_prints_the_managers_warnings_on_stderr(service_fake, run):
    service_fake.answers["service.create"] = {"id": SID, "name": "web", "warnings": ["image demo:1 could not be "
                                                                                      "accessed on a registry"]}
    result = run("service", "create", "-d", "--name", "web", "demo:1")
    assert result.exit_code == 0 and result.stdout == f"{SID}\n"
    assert result.stderr == "image demo:1 could not be accessed on a registry\n"


# -- the agent's pull ----------------------------------------------------------------------------------

class AuthManager(FakeManager):
    """The fake manager, also sending credentials with the tasks in `auth`."""

    def __init__(self) -> None:
        super().__init__()
        self.auth: dict[str, str] = {}

    async def __call__(self, method: str, params: dict, timeout: float) -> Any:
        answer = await super().__call__(method, params, timeout)
        if method == "tasks.assigned":
            answer["auth"] = {tid: a for tid, a in self.auth.items() if tid in answer["task_ids"]}
        return answer


class FakePulls:
    """The daemon's has_image and pull_image: a store of references; a pull waits for `gate`
    (when set), then adds the image or raises `failure`."""

    def __init__(self, held: set[str] = frozenset(), failure: Exception | None = None) -> None:
        self.held = set(held)
        self.failure = failure
        self.gate: trio.Event | None = None
        self.calls: list[tuple[str, str]] = []

    def has_image(self, ref: str) -> bool:
        return ref in self.held

    async def pull_image(self, ref: str, auth: str) -> str:
        self.calls.append((ref, auth))
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        self.held.add(ref)
        return "image-id"


@asynccontextmanager
async def pulling_agent(runtime: FakeRuntime, manager: FakeManager, pulls: FakePulls) -> AsyncIterator[Agent]:
    net = FakeNetworking()
    agent = Agent("node0000000000000000000001", runtime, manager, networking=lambda node_id, vtep, nursery: net,
                  has_image=pulls.has_image, pull_image=pulls.pull_image)

    async def pace() -> None:     # as test_agent.running_agent: the mock clock cannot see worker threads
        while True:
            await trio.sleep(PACE)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pace)
            nursery.start_soon(agent.run)
            try:
                yield agent
            finally:
                runtime.release()
                nursery.cancel_scope.cancel()


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.005)


@pytest.mark.trio
async def test_a_node_lacking_the_image_pulls_it_with_the_tasks_credentials_then_runs_the_task(clock):
    runtime, manager, pulls = FakeRuntime(), AuthManager(), FakePulls()
    pulls.gate = trio.Event()
    manager.auth = {"t1": AUTH}
    async with pulling_agent(runtime, manager, pulls) as agent:
        manager.put(make_task("t1"))
        await manager.until_state("t1", "preparing")    # the manager knows while the pull is under way
        pulls.gate.set()
        await manager.until_state("t1", "running")
        assert agent.auth == {"t1": AUTH}
        manager.unassign("t1")
        while agent.auth:
            await trio.sleep(0.05)        # the credentials go with the task
    states = manager.states("t1")
    assert reported(states[:states.index("running") + 1], STARTING)
    [(_, preparing)] = [(at, s) for at, tid, s in manager.reports if tid == "t1" and s.state == "preparing"]
    assert preparing.message == "pulling image"
    assert pulls.calls == [("demo:1", AUTH)]


@pytest.mark.trio
async def test_a_node_holding_the_image_does_not_pull(clock):
    runtime, manager, pulls = FakeRuntime(), AuthManager(), FakePulls(held={"demo:1"})
    async with pulling_agent(runtime, manager, pulls):
        manager.put(make_task("t1"))
        await manager.until_state("t1", "running")
    assert pulls.calls == []


@pytest.mark.trio
async def test_a_failed_pull_rejects_the_task_with_the_registrys_sentence(clock):
    sentence = "unauthorized: authentication required"
    runtime, manager = FakeRuntime(), AuthManager()
    pulls = FakePulls(failure=SwarmError(sentence))
    async with pulling_agent(runtime, manager, pulls):
        manager.put(make_task("t1"))
        await manager.until_state("t1", "rejected")
        _, status = manager.last("t1")
    assert reported(manager.states("t1"), ["accepted", "preparing", "rejected"])
    assert (status.message, status.err) == ("pulling image failed", sentence)
    assert pulls.calls == [("demo:1", "")] and not [op for op, tid in runtime.calls if tid == "t1"]


@pytest.mark.trio
async def test_a_task_shut_down_while_its_image_is_pulled_stops_waiting_for_the_pull(clock):
    runtime, manager, pulls = FakeRuntime(), AuthManager(), FakePulls()
    pulls.gate = trio.Event()             # the pull never ends by itself
    async with pulling_agent(runtime, manager, pulls):
        manager.put(make_task("t1"))
        await manager.until_state("t1", "preparing")
        manager.desire("t1", "shutdown")
        await manager.until_state("t1", "shutdown")
    assert reported(manager.states("t1"), ["accepted", "preparing", "shutdown"])
    assert not [op for op, tid in runtime.calls if tid == "t1"]


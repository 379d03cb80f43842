"""Secrets and configs: the records (swarm.api.secrets), the control API against the
in-memory store (values split over chunk records, inspect never showing a secret's
value, rm refused while a service uses one), the service params (names resolved to
ids, targets, rotation), and the dispatcher handing values only to the node whose
tasks use them."""
from __future__ import annotations

import base64
import dataclasses

import msgpack
import pytest
import trio

from swarm.api import secrets, spec
from swarm.api.errors import ApiError
from swarm.manager.controlapi.secrets import FileObjectAPI, names_to_ids
from swarm.manager.controlapi.specparams import spec_from_params
from swarm.manager.controlapi.specrefs import resolve_files
from swarm.manager.controlapi.specupdate import apply_update
from swarm.manager.dispatcher import task_files
from swarm.runtime.fake import FakeRuntime
from tests.unit.test_agent import FakeManager, clock, make_task, run_to_running, running_agent  # noqa: F401
from tests.unit.test_reconciler import NODES, cluster, create, report, settle, tasks_of
from tests.unit.test_dispatcher import polled

VALUE = b"s3cr3t-Value-that-no-answer-may-carry"


# -- the records ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, secrets.INLINE - 1, secrets.INLINE, secrets.INLINE + 1,
                                  secrets.INLINE + 5 * secrets.CHUNK + 7, secrets.MAX_SIZE["config"] - 1])
def test_a_value_is_split_into_the_record_and_chunks_and_joined_back_whole(size):
    data = bytes(i % 251 for i in range(size))
    obj, chunks = secrets.new_object("id1", "x", {}, data, 1.0)
    assert len(obj.data) <= secrets.INLINE and all(len(c) <= secrets.CHUNK for c in chunks)
    assert obj.chunks == len(chunks) and obj.size == size
    assert secrets.join(obj, chunks) == data
    if chunks:
        assert secrets.join(obj, chunks[:-1]) is None     # a missing chunk never gives a short value


def test_names_and_sizes_follow_docker():
    for good in ("db_pw", "a", "app.conf", "A-1_b.c", "x" * 64):
        assert secrets.check_name(good) == good
    for bad in ("", ".hidden", "trailing-", "sp ace", "x" * 65, "semi;colon", None):
        with pytest.raises(secrets.InvalidObject, match="name"):
            secrets.check_name(bad)
    assert secrets.check_data("secret", b"x" * (500 * 1024 - 1))
    with pytest.raises(secrets.InvalidObject, match="secret data must be larger than 0 and less than 512000 bytes"):
        secrets.check_data("secret", b"x" * (500 * 1024))
    with pytest.raises(secrets.InvalidObject, match="less than 1024000 bytes"):
        secrets.check_data("config", b"")


def test_targets_as_dockers_daemon_resolves_them():
    assert secrets.target_path("secret", "db_pw") == "/run/secrets/db_pw"
    assert secrets.target_path("secret", "/etc/pw") == "/etc/pw"
    assert secrets.target_path("config", "app.conf") == "/app.conf"
    assert secrets.target_path("config", "/etc/app.conf") == "/etc/app.conf"
    for bad in ("", "  ", "a\0b"):
        with pytest.raises(secrets.InvalidObject):
            secrets.check_target("secret", bad)


# -- the control API ------------------------------------------------------------------------


async def apis():
    store, manager, reconciler, dispatcher, services = await cluster()
    return store, FileObjectAPI(manager, "secret"), FileObjectAPI(manager, "config"), services, reconciler, dispatcher


def carries(answer, value: bytes) -> bool:
    packed = msgpack.packb(answer, use_bin_type=True)
    return value in packed or base64.b64encode(value) in packed


@pytest.mark.trio
async def test_a_secret_is_created_listed_and_inspected_without_its_value():
    store, secret_api, _, _, _, _ = await apis()
    created = await secret_api.create({"name": "db_pw", "data": VALUE, "labels": {"env": "prod"}})
    assert created["name"] == "db_pw" and len(created["id"]) == 25
    rows = await secret_api.ls({})
    assert [(r["id"], r["name"], r["labels"]) for r in rows] == [(created["id"], "db_pw", {"env": "prod"})]
    assert rows[0]["created_at"].endswith("Z")
    [doc] = await secret_api.inspect({"refs": ["db_pw"]})
    assert doc["id"] == created["id"] and doc["spec"] == {"name": "db_pw", "labels": {"env": "prod"}}
    for answer in (created, rows, doc):
        assert not carries(answer, VALUE)
    assert await secret_api.ls({"filters": {"label": ["env=dev"]}}) == []
    assert len(await secret_api.ls({"filters": {"name": ["db"]}})) == 1


@pytest.mark.trio
async def test_a_config_shows_its_value_and_a_big_one_spans_chunk_records():
    store, _, config_api, _, _, _ = await apis()
    value = bytes(range(256)) * 3000                  # 768000 bytes: over Docker's secret limit, under a config's
    created = await config_api.create({"name": "big.conf", "data": value})
    obj = secrets.object_from_dict(msgpack.unpackb(store.get("config", created["id"]).data))
    assert obj.chunks > 10 and len(store.list(secrets.CHUNK_KIND["config"])) == obj.chunks
    [doc] = await config_api.inspect({"refs": [created["id"][:6]]})
    assert base64.b64decode(doc["spec"]["data"]) == value
    assert await config_api.rm({"refs": ["big.conf"]}) == ["big.conf"]
    assert store.list("config") == {} and store.list(secrets.CHUNK_KIND["config"]) == {}


@pytest.mark.trio
async def test_bad_creates_are_refused_with_one_sentence_and_write_nothing():
    store, secret_api, _, _, _, _ = await apis()
    await secret_api.create({"name": "taken", "data": b"x"})
    index = store.index
    for params, code, sentence in (
            ({"name": "taken", "data": b"y"}, "conflict", "secret taken already exists"),
            ({"name": "-bad", "data": b"y"}, "bad_request", "invalid name, only 64 [a-zA-Z0-9-_.] characters"),
            ({"name": "big", "data": b"y" * (500 * 1024)}, "bad_request", "less than 512000 bytes"),
            ({"name": "empty", "data": b""}, "bad_request", "larger than 0"),
            ({"name": "text", "data": "not bytes"}, "bad_request", "secret data must be bytes"),
            ({"name": "drv", "data": b"y", "driver": "vault"}, "bad_request", "secret drivers are not supported"),
            ({"name": "tpl", "data": b"y", "template_driver": "golang"}, "bad_request", "template drivers"),
            ({"name": "lbl", "data": b"y", "labels": {"k": "v" * 9000}}, "bad_request", "labels may hold")):
        with pytest.raises(ApiError) as err:
            await secret_api.create(params)
        assert (err.value.code, sentence in err.value.message) == (code, True), err.value.message
    assert store.index == index


@pytest.mark.trio
async def test_a_secret_in_use_cannot_be_removed_and_rotation_works_as_dockers():
    store, secret_api, config_api, services, _, _ = await apis()
    old = await secret_api.create({"name": "db_pw", "data": b"v1"})
    new = await secret_api.create({"name": "db_pw_v2", "data": b"v2"})
    conf = await config_api.create({"name": "app.conf", "data": b"port=80"})
    await create(services, "web", secrets=[{"source": "db_pw", "target": "db_pw", "uid": "0", "gid": "0",
                                            "mode": 0o400}],
                 configs=[{"source": "app.conf", "target": "/etc/app.conf"}])
    await create(services, "api", secrets=[{"source": "db_pw"}])
    with pytest.raises(ApiError) as err:
        await secret_api.rm({"refs": ["db_pw"]})
    assert err.value.message == "secret 'db_pw' is in use by the following services: api, web"
    with pytest.raises(ApiError, match="config 'app.conf' is in use by the following service: web"):
        await config_api.rm({"refs": ["app.conf"]})
    web = services.find("web")
    assert web.spec.container.secrets == (spec.FileReference(old["id"], "db_pw", "db_pw", "0", "0", 0o400),)
    assert web.spec.container.configs == (spec.FileReference(conf["id"], "app.conf", "/etc/app.conf"),)
    # rotation: the new secret at the old target
    await services.update({"ref": "web", "secrets_rm": ["db_pw"],
                           "secrets_add": [{"source": "db_pw_v2", "target": "db_pw"}]})
    await services.update({"ref": "api", "secrets_rm": ["db_pw"]})
    assert services.find("web").spec.container.secrets == (
        spec.FileReference(new["id"], "db_pw_v2", "db_pw"),)
    assert services.find("web").spec.container.configs == web.spec.container.configs   # kept
    assert await secret_api.rm({"refs": ["db_pw"]}) == ["db_pw"]
    assert [r["name"] for r in await secret_api.ls({})] == ["db_pw_v2"]


@pytest.mark.trio
async def test_service_references_are_checked_before_anything_is_written():
    store, secret_api, _, services, _, _ = await apis()
    await secret_api.create({"name": "a", "data": b"1"})
    await secret_api.create({"name": "b", "data": b"2"})
    index = store.index
    for refs, sentence in (
            ([{"source": "nope"}], "secret not found: nope"),
            ([{"source": "a", "target": "x"}, {"source": "b", "target": "x"}],
             "secret references 'a' and 'b' have a conflicting target: 'x'"),
            ([{"source": "a", "uid": "root"}], "uid 'root' is not a number"),
            ([{"source": "a", "mode": 0o10000}], "mode 10000 is not permission bits"),
            ([{"source": "a", "colour": "red"}], "unknown field 'colour'"),
            ([{"id": "forged0000000000000000000", "name": "a", "target": "a"}], "secret not found: a")):
        with pytest.raises(ApiError) as err:
            await create(services, "web", secrets=refs)
        assert sentence in err.value.message, err.value.message
    assert store.index == index


def test_resolve_files_and_apply_update_are_pure():
    known = {"secret": {"db_pw": "s1", "db_pw_v2": "s2"}, "config": {"c": "c1"}}
    params = resolve_files({"name": "web", "image": "demo:1", "secrets": [{"source": "db_pw"}],
                            "configs": [{"source": "c", "mode": 0o440}]}, known)
    s = spec_from_params(params)
    assert s.container.secrets == (spec.FileReference("s1", "db_pw", "db_pw"),)
    assert s.container.configs == (spec.FileReference("c1", "c", "c", mode=0o440),)
    updated = apply_update(s, resolve_files({"secrets_rm": ["db_pw"], "secrets_add": [
        {"source": "db_pw_v2", "target": "db_pw"}]}, known))
    assert updated.container.secrets == (spec.FileReference("s2", "db_pw_v2", "db_pw"),)
    assert apply_update(updated, {"configs_rm": ["c"]}).container.configs == ()


# -- delivery: the dispatcher -----------------------------------------------------------------


@pytest.mark.trio
async def test_only_the_node_running_a_task_that_uses_a_secret_receives_it():
    store, secret_api, config_api, services, reconciler, dispatcher = await apis()
    sid = (await secret_api.create({"name": "db_pw", "data": VALUE}))["id"]
    cid = (await config_api.create({"name": "app.conf", "data": b"port=80\n"}))["id"]
    await create(services, "web", replicas=1, secrets=[{"source": "db_pw"}], configs=[{"source": "app.conf"}])
    await create(services, "other", replicas=3)
    await settle(reconciler)
    [task] = tasks_of(store, "web")
    answers = {node: await polled(dispatcher, node, {"since": 0, "wait": 0}) for node in NODES}
    runner = answers.pop(task.node_id)
    assert runner["secrets"] == {sid: base64.b64encode(VALUE).decode()}
    assert runner["configs"] == {cid: base64.b64encode(b"port=80\n").decode()}
    for node, answer in answers.items():
        assert "secrets" not in answer and not carries(answer, VALUE), node
    # a later answer without the task's change carries nothing; once it is terminal, nothing either
    quiet = await polled(dispatcher, task.node_id, {"since": runner["index"], "wait": 0})
    assert "secrets" not in quiet
    await services.rm({"refs": ["web"]})
    await settle(reconciler)
    await report(dispatcher, store, "shutdown", "web")
    after = await polled(dispatcher, task.node_id, {"since": 0, "wait": 0})
    assert not carries(after, VALUE)


def test_task_files_skip_tasks_that_will_not_start():
    ref = spec.FileReference("s1", "db_pw", "db_pw")
    container = spec.ContainerSpec("demo:1", secrets=(ref,))

    def task(state: str, desired: str = "running") -> spec.Task:
        return spec.Task("t", "svc", "web", 1, "n1", desired, container, 1, spec.TaskStatus(state))

    assert task_files([task("assigned")]) == {"secret": {"s1"}}
    assert task_files([task("running")]) == {"secret": {"s1"}}
    assert task_files([task("failed")]) == {}
    assert task_files([task("assigned", desired="shutdown")]) == {}


@pytest.mark.trio
async def test_names_to_ids_lists_both_kinds():
    _, secret_api, config_api, _, _, _ = await apis()
    s = await secret_api.create({"name": "x", "data": b"1"})
    c = await config_api.create({"name": "x", "data": b"2"})    # a secret and a config may share a name
    assert names_to_ids(secret_api.m.raft) == {"secret": {"x": s["id"]}, "config": {"x": c["id"]}}


# -- delivery: the agent ----------------------------------------------------------------------


class FileManager(FakeManager):
    """test_agent's fake manager, sending the values of the secrets and configs of the changed
    tasks that may still start, as the dispatcher does."""

    def __init__(self, values: dict[tuple[str, str], bytes]) -> None:
        super().__init__()
        self.values = values

    async def __call__(self, method: str, params: dict, timeout: float):
        answer = await super().__call__(method, params, timeout)
        if method == "tasks.assigned":
            sent = [spec.task_from_dict(d) for d in answer["changed"]]
            for kind, ids in task_files(sent).items():
                answer[f"{kind}s"] = {i: base64.b64encode(self.values[(kind, i)]).decode()
                                      for i in ids if (kind, i) in self.values}
        return answer


def task_with_files(task_id: str) -> spec.Task:
    task = make_task(task_id)
    container = dataclasses.replace(task.spec, secrets=(spec.FileReference("s1", "db_pw", "db_pw", mode=0o400),),
                                    configs=(spec.FileReference("c1", "app.conf", "/etc/app.conf"),))
    return dataclasses.replace(task, spec=container)


@pytest.mark.trio
async def test_the_agent_hands_the_values_to_prepare_and_forgets_them_when_the_task_stops(clock):
    runtime = FakeRuntime()
    manager = FileManager({("secret", "s1"): VALUE, ("config", "c1"): b"port=80\n"})
    async with running_agent(runtime, manager) as agent:
        await run_to_running(runtime, manager, task_with_files("t1"))
        assert runtime.containers["t1"].files == {"/run/secrets/db_pw": ("secret", VALUE, "0", "0", 0o400),
                                                  "/etc/app.conf": ("config", b"port=80\n", "0", "0", 0o444)}
        assert set(agent.files) == {("secret", "s1"), ("config", "c1")}
        manager.desire("t1", "shutdown")
        await manager.until_state("t1", "shutdown")
        while agent.files:     # the agent hears its own report back, then forgets
            await trio.sleep(0.05)


@pytest.mark.trio
async def test_a_task_whose_secret_never_came_is_rejected_with_a_sentence(clock):
    runtime, manager = FakeRuntime(), FileManager({("config", "c1"): b"port=80\n"})
    async with running_agent(runtime, manager):
        manager.put(task_with_files("t1"))
        await manager.until_state("t1", "rejected")
        _, status = manager.last("t1")
    assert status.err == "the secret db_pw was not received from the managers"
    assert "t1" not in runtime.containers


@pytest.mark.trio
async def test_a_service_taking_a_secret_while_it_is_removed_wins_or_loses_whole():
    """The race `secret rm` vs `service create --secret`: the rm checked the services and found
    none; before its delete commits, a service takes the secret. The delete must fail its
    compare-and-set, check again and refuse, never leave a service using a removed secret."""
    store, secret_api, _, services, _, _ = await apis()
    await secret_api.create({"name": "db_pw", "data": b"v1"})
    commit = secret_api.m.commit
    raced = []

    async def commit_after_a_service_took_it(ops, *args, **kwargs):
        if not raced and any(op.action == "delete" and op.kind == "secret" for op in ops):
            raced.append(True)
            await create(services, "web", secrets=[{"source": "db_pw"}])
        return await commit(ops, *args, **kwargs)

    secret_api.m.commit = commit_after_a_service_took_it
    with pytest.raises(ApiError, match="secret 'db_pw' is in use by the following service: web"):
        await secret_api.rm({"refs": ["db_pw"]})
    assert raced and [r["name"] for r in await secret_api.ls({})] == ["db_pw"]
    assert services.find("web").spec.container.secrets[0].name == "db_pw"


"""The spec check a manager runs on the nodes before `service create`/`update` writes:
what a node answers, and how the manager asks them all (in parallel, bounded in time)."""
from __future__ import annotations

import pytest
import trio
import trio.testing

from swarm.api import spec
from swarm.api.errors import ApiError
from swarm.daemon import speccheck
from swarm.manager.scheduler import NodeInfo, eligible_nodes
from swarm.rpc.messages import RPCError


def service(*mounts: spec.Mount, user: str = "", groups: tuple[str, ...] = ()) -> spec.ServiceSpec:
    return spec.ServiceSpec("web", spec.ContainerSpec("demo:1", mounts=mounts, user=user, groups=groups))


def no_user_problem(image, user, groups):
    return None


def test_nothing_to_ask_without_binds_user_or_groups_and_templates_are_left_to_the_task():
    assert speccheck.question(service()) is None
    assert speccheck.question(service(spec.Mount("bind", "/d", "/srv/{{.Task.Slot}}"))) is None
    assert speccheck.question(service(spec.Mount("volume", "/d", "v"), spec.Mount("bind", "/e", "/b"),
                                      spec.Mount("bind", "/f", "/b"), user="app")) == \
        {"image": "demo:1", "user": "app", "groups": [], "binds": ["/b"]}


def test_a_node_names_missing_bind_sources_and_users_its_image_lacks(tmp_path):
    def lacks_app(image, user, groups):
        return "unable to find user app: no matching entries in passwd file" if user == "app" else None

    params = {"image": "demo:1", "user": "app", "groups": [], "binds": [str(tmp_path), "/nonexistent/x"]}
    assert speccheck.check_here(lacks_app, params) == [
        {"flag": "--user", "message": "unable to find user app: no matching entries in passwd file"},
        {"flag": "--mount", "message": "bind source path does not exist: /nonexistent/x"}]
    assert speccheck.check_here(lacks_app, dict(params, user="", binds=[str(tmp_path)])) == []


@pytest.mark.parametrize("params", [
    None, [], {"image": "", "user": "", "groups": [], "binds": []},
    {"image": "demo:1", "user": 7, "groups": [], "binds": []},
    {"image": "demo:1", "user": "", "groups": "wheel", "binds": []},
    {"image": "demo:1", "user": "", "groups": [], "binds": ["relative/path"]},
    {"image": "demo:1", "user": "", "groups": [], "binds": ["/a\0b"]},
    {"image": "demo:1", "user": "", "groups": [], "binds": ["/x"] * (speccheck.MAX_BINDS + 1)},
    {"image": "demo:1", "user": "u" * (speccheck.MAX_NAME + 1), "groups": [], "binds": []},
])
def test_a_malformed_question_is_refused_as_a_bad_request(params):
    with pytest.raises(RPCError) as caught:
        speccheck.check_here(no_user_problem, params)
    assert caught.value.code == "bad_request"


def nodes(*names: str) -> list[NodeInfo]:
    return [NodeInfo(id=f"id-{n}", hostname=n) for n in names]


def test_the_manager_refuses_with_the_first_problem_and_the_node_that_saw_it():
    asked = []

    async def ask(node, params):
        asked.append(node.hostname)
        if node.hostname == "w2":
            return [{"flag": "--mount", "message": "bind source path does not exist: /b"}]
        return []

    with pytest.raises(ApiError) as caught:
        trio.run(speccheck.check_on_nodes, service(spec.Mount("bind", "/d", "/b")), nodes("m1", "w1", "w2"), ask)
    assert caught.value.code == "bad_request"
    assert caught.value.message == "invalid --mount: bind source path does not exist: /b (on node w2)"
    assert sorted(asked) == ["m1", "w1", "w2"]


def test_nodes_that_fail_or_do_not_answer_in_time_are_not_counted():
    async def ask(node, params):
        if node.hostname == "slow":
            await trio.sleep(60)                 # a node that hangs: given up after CHECK_TIMEOUT
        if node.hostname == "broken":
            raise RPCError("unavailable", "down")
        if node.hostname == "junk":
            return [{"flag": 1}, "x", {"message": "no flag"}]
        return []

    async def main():
        started = trio.current_time()
        await speccheck.check_on_nodes(service(spec.Mount("bind", "/d", "/b")), nodes("slow", "broken", "junk", "ok"),
                                       ask)
        return trio.current_time() - started

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(main, clock=clock) == pytest.approx(speccheck.CHECK_TIMEOUT)


def test_no_question_means_no_node_is_asked():
    async def ask(node, params):
        raise AssertionError("asked")

    trio.run(speccheck.check_on_nodes, service(), nodes("m1"), ask)


def test_the_nodes_asked_are_those_the_tasks_could_run_on():
    all_nodes = [NodeInfo(id="a", hostname="a", labels={"disk": "ssd"}),
                 NodeInfo(id="b", hostname="b", status="down", labels={"disk": "ssd"}),
                 NodeInfo(id="c", hostname="c", availability="drain", labels={"disk": "ssd"}),
                 NodeInfo(id="d", hostname="d", availability="pause", labels={"disk": "ssd"}),
                 NodeInfo(id="e", hostname="e")]
    assert [n.id for n in eligible_nodes(["node.labels.disk==ssd"], all_nodes)] == ["a"]
    assert [n.id for n in eligible_nodes([], all_nodes)] == ["a", "e"]

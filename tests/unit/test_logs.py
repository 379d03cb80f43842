"""swarm/daemon/logs.py: the manager's chunked fan-out and merge by time, over real log files
(written by a stand-in for conmon, tests/unit/crilog.py) read by a real Runtime, with the
nodes as plain functions."""
from __future__ import annotations

import os

import pytest
import trio

from swarm.daemon import logs
from swarm.rpc.messages import RPCError
from swarm.runtime.runc import Runtime
from tests.unit.crilog import LogWriter


class Nodes:
    """Tasks spread over nodes; each node reads its tasks with a real Runtime."""

    def __init__(self, root: str) -> None:
        self.runtime = Runtime(os.path.join(root, "tasks"), None)   # log_chunk needs no image store
        self.rows: list[dict] = []
        self.writers: dict[str, LogWriter] = {}
        self.status = {"n1": "ready", "n2": "ready"}
        self.answers: list[int] = []              # bytes of lines per node answer
        self.fail: str | None = None

    def add_task(self, task_id: str, name: str, node_id: str, max_size: int = 1 << 30) -> LogWriter:
        bundle = self.runtime.bundle(task_id)
        os.makedirs(bundle)
        open(os.path.join(bundle, "config.json"), "w").close()
        self.rows.append({"id": task_id, "name": name, "node_id": node_id})
        self.writers[task_id] = LogWriter(os.path.join(bundle, "container.log"), max_size, 100)
        return self.writers[task_id]

    def source(self) -> logs.LogsSource:
        async def tasks_of(ref: str) -> list[dict]:
            if ref != "web":
                raise RPCError("not_found", f"service {ref} not found")
            return list(self.rows)

        def nodes() -> dict[str, dict]:
            return {n: {"id": n, "hostname": n.replace("n", "node-"), "status": s} for n, s in self.status.items()}

        async def read_node(node_id: str, request: dict) -> dict:
            if self.fail == node_id:
                raise RPCError("unavailable", "connection refused")
            answer = await logs.read_tasks(self.runtime, request)
            self.answers.append(sum(len(line[2]) for c in answer["chunks"] for line in c["lines"]))
            return answer
        return logs.LogsSource(tasks_of, nodes, read_node)


async def read_all(source: logs.LogsSource, **params) -> tuple[list[dict], list[dict]]:
    lines, answers, cursors = [], [], None
    for _ in range(10_000):
        answer = await logs.service_logs(source, {"ref": "web", "cursors": cursors, **params})
        answers.append(answer)
        lines += answer["lines"]
        cursors = answer["cursors"]
        if answer["done"]:
            return lines, answers
    raise AssertionError("service.logs never said done")


@pytest.mark.trio
async def test_every_line_of_every_task_arrives_in_time_order_in_bounded_answers(tmp_path):
    nodes = Nodes(str(tmp_path))
    a = nodes.add_task("ta", "web.1", "n1", max_size=64 * 1024)   # rotates many times while written
    b = nodes.add_task("tb", "web.2", "n2")
    for i in range(12000):
        a.feed("stdout", b"a %d %s\n" % (i, b"x" * 100))
        if i % 3 == 0:
            b.feed("stderr", b"b %d\n" % i)
    lines, answers = await read_all(nodes.source())
    assert [e["line"].split()[1] for e in lines if e["task"] == "web.1"] == [str(i) for i in range(12000)]
    assert [e["line"] for e in lines if e["task"] == "web.2"] == [f"b {i}" for i in range(0, 12000, 3)]
    assert [e["time"] for e in lines] == sorted(e["time"] for e in lines)   # merged by time
    assert {e["node"] for e in lines if e["task"] == "web.2"} == {"node-2"}
    assert len(answers) > 1 and max(nodes.answers) <= logs.CHUNK_BYTES + 2 * 64 * 1024


@pytest.mark.trio
async def test_tail_is_per_task_and_a_snapshot_ignores_later_lines(tmp_path):
    nodes = Nodes(str(tmp_path))
    a = nodes.add_task("ta", "web.1", "n1")
    b = nodes.add_task("tb", "web.2", "n2")
    for i in range(100):
        a.feed("stdout", b"a %d\n" % i)
        b.feed("stdout", b"b %d\n" % i)
    source = nodes.source()
    first = await logs.service_logs(source, {"ref": "web", "tail": 2, "cursors": None})
    a.feed("stdout", b"too late\n")
    assert [e["line"] for e in first["lines"]] == ["a 98", "b 98", "a 99", "b 99"] and first["done"]


@pytest.mark.trio
async def test_follow_waits_for_new_lines_and_picks_up_new_tasks(tmp_path):
    nodes = Nodes(str(tmp_path))
    a = nodes.add_task("ta", "web.1", "n1")
    a.feed("stdout", b"one\n")
    source = nodes.source()
    first = await logs.service_logs(source, {"ref": "web", "follow": True, "tail": 0, "cursors": None})
    assert first["lines"] == [] and not first["done"]

    async def write_later() -> None:
        await trio.sleep(0.3)
        a.feed("stdout", b"two\n")
        nodes.add_task("tc", "web.3", "n2").feed("stdout", b"new task\n")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_later)
        start = trio.current_time()
        got = await logs.service_logs(source, {"ref": "web", "follow": True, "cursors": first["cursors"],
                                               "wait": 5})
        assert trio.current_time() - start < 2       # answered when lines came, not at the end of wait
    rest = await logs.service_logs(source, {"ref": "web", "follow": True, "cursors": got["cursors"], "wait": 0})
    assert sorted(e["line"] for e in got["lines"] + rest["lines"]) == ["new task", "two"]


@pytest.mark.trio
async def test_a_node_that_fails_fails_the_call_and_a_down_node_is_a_warning(tmp_path):
    nodes = Nodes(str(tmp_path))
    nodes.add_task("ta", "web.1", "n1").feed("stdout", b"hi\n")
    nodes.add_task("tb", "web.2", "n2").feed("stdout", b"there\n")
    nodes.fail = "n2"
    with pytest.raises(RPCError, match="could not read the logs of web.2 on node node-2: connection refused"):
        await logs.service_logs(nodes.source(), {"ref": "web"})
    nodes.status["n2"] = "down"
    answer = await logs.service_logs(nodes.source(), {"ref": "web"})
    assert [e["line"] for e in answer["lines"]] == ["hi"] and answer["done"]
    assert answer["warnings"] == ["node node-2 is down: the logs of web.2 are not shown"]


@pytest.mark.trio
@pytest.mark.parametrize("params, words", [
    ({}, "service name"), ({"ref": "web", "tail": -1}, "tail"), ({"ref": "web", "wait": 99}, "wait"),
    ({"ref": "web", "cursors": {"ta": {"off": "x"}}}, "offset"), ({"ref": "web", "cursors": [1]}, "cursors")])
async def test_bad_requests_are_one_sentence(tmp_path, params, words):
    with pytest.raises(RPCError) as err:
        await logs.service_logs(Nodes(str(tmp_path)).source(), params)
    assert err.value.code == "bad_request" and words in err.value.message


def test_merge_stops_at_the_slowest_task_and_rewinds_the_others():
    def chunk(tid, times, eof):
        return {"task_id": tid, "lines": [[t, "stdout", f"{tid}{t}", [0, (i + 1) * 10]] for i, t in enumerate(times)],
                "files": [[7, b"h"]], "start": {"off": 0, "ino": 7, "head": b"h"},
                "cursor": {"off": len(times) * 10, "ino": 7, "head": b"h"}, "eof": eof}
    taken, cursors = logs.merge([chunk("a", ["1", "4", "6"], False), chunk("b", ["2", "3", "5", "9"], False),
                                 chunk("c", ["0"], True)])
    assert [line[2] for _, line in taken] == ["c0", "a1", "b2", "b3", "a4", "b5", "a6"]
    assert cursors["a"]["off"] == 30 and cursors["b"]["off"] == 30 and cursors["c"]["off"] == 10


# -- --since / --until / --details and the task as argument ---------------------------

def stamped(writer: LogWriter, name: bytes, start: int, count: int) -> None:
    """Lines at known times: BASE + i ms (the files' own format)."""
    from swarm.api.logview import rfc3339_ns
    writer.write_entries([b"%s stdout F %s %d\n" % (rfc3339_ns(BASE + i * 10**6).encode(), name, i)
                          for i in range(start, start + count)])


BASE = 1_700_000_000 * 10**9


def ms(i: int) -> str:
    from swarm.api.logview import rfc3339_ns
    return rfc3339_ns(BASE + i * 10**6)


@pytest.mark.trio
async def test_since_and_until_are_applied_where_the_file_is_read(tmp_path):
    nodes = Nodes(str(tmp_path))
    stamped(nodes.add_task("ta", "web.1", "n1", max_size=64 * 1024), b"a", 0, 20_000)
    stamped(nodes.add_task("tb", "web.2", "n2"), b"b", 0, 20_000)
    lines, _ = await read_all(nodes.source(), since=ms(19_000), until=ms(19_099))
    assert [e["line"] for e in lines if e["task"] == "web.1"] == [f"a {i}" for i in range(19_000, 19_100)]
    assert [e["line"] for e in lines if e["task"] == "web.2"] == [f"b {i}" for i in range(19_000, 19_100)]
    # Only those lines left the nodes (the seek skipped the rest; nothing was shipped to be filtered).
    assert sum(nodes.answers) == sum(len(e["line"]) for e in lines)
    # With a tail too: the last N lines, then those since.
    lines, _ = await read_all(nodes.source(), tail=3, since=ms(19_998))
    assert sorted(e["line"] for e in lines) == ["a 19998", "a 19999", "b 19998", "b 19999"]


@pytest.mark.trio
async def test_following_up_to_a_past_until_ends(tmp_path):
    nodes = Nodes(str(tmp_path))
    stamped(nodes.add_task("ta", "web.1", "n1"), b"a", 0, 100)
    answer = await logs.service_logs(nodes.source(), {"ref": "web", "follow": True, "until": ms(49), "wait": 5})
    assert [e["line"] for e in answer["lines"]] == [f"a {i}" for i in range(50)]
    assert answer["done"]                               # --until has passed: nothing more will come


@pytest.mark.trio
async def test_lines_name_task_service_slot_node_and_carry_details_when_asked(tmp_path):
    nodes = Nodes(str(tmp_path))
    nodes.add_task("ta", "web.1", "n1").feed("stdout", b"hi\n")
    nodes.rows[0].update(service="web", service_id="s1", slot=1, width=2, details={"zone": "a"})
    plain = await logs.service_logs(nodes.source(), {"ref": "web"})
    [line] = plain["lines"]
    assert {k: line[k] for k in ("task_id", "service", "service_id", "slot", "node", "node_id", "line")} == \
        {"task_id": "ta", "service": "web", "service_id": "s1", "slot": 1, "node": "node-1", "node_id": "n1",
         "line": "hi"}
    assert "details" not in line and plain["width"] == 2
    detailed = await logs.service_logs(nodes.source(), {"ref": "web", "details": True})
    assert detailed["lines"][0]["details"] == {"zone": "a"}


@pytest.mark.trio
@pytest.mark.parametrize("params, words", [
    ({"ref": "web", "since": "10m"}, "since must be an RFC 3339"), ({"ref": "web", "until": 5}, "until"),
    ({"ref": "web", "details": "yes"}, "details")])
async def test_bad_bounds_are_one_sentence(tmp_path, params, words):
    with pytest.raises(RPCError) as err:
        await logs.service_logs(Nodes(str(tmp_path)).source(), params)
    assert err.value.code == "bad_request" and words in err.value.message


def test_a_service_or_a_single_task_is_what_logs_reads():
    from swarm.api import spec
    from swarm.api.errors import ApiError
    from swarm.api.refs import resolve_ref
    from swarm.daemon.daemon import log_rows

    container = spec.ContainerSpec("demo:1", env=("REGION=eu",),
                                   log_driver=spec.LogDriver("json-file", {"env": "REGION"}))
    web = spec.Service("s1", spec.ServiceSpec("web", container, replicas=12), 1, 0.0, 0.0)

    def task(tid: str, slot: int) -> spec.Task:
        return spec.Task(tid, "s1", "web", slot, "n1", "running", container, 1)

    class Services:
        def tasks(self):
            return [task("t2aaa", 2), task("t1bbb", 1), task("t10cc", 10)]

        def find(self, ref):
            return resolve_ref("service", {"s1": web}, ref, lambda s: s.spec.name)

    rows = log_rows(Services(), "web")
    assert [r["id"] for r in rows] == ["t1bbb", "t2aaa", "t10cc"] and {r["width"] for r in rows} == {2}
    assert rows[0]["details"] == {"REGION": "eu"} and rows[0]["service"] == "web" and rows[0]["slot"] == 1
    [one] = log_rows(Services(), "t10")                   # a task ID prefix, as `docker service logs TASK`
    assert one["id"] == "t10cc" and one["width"] == 2
    with pytest.raises(ApiError) as err:
        log_rows(Services(), "nope")
    assert err.value.code == "not_found" and err.value.message == "no such task or service: nope"


class _Services:
    """What log_rows reads of the service API: one service and its task."""

    def __init__(self, driver: str) -> None:
        from swarm.api import spec
        container = spec.ContainerSpec("demo:1", log_driver=spec.LogDriver(driver))
        self.service = spec.Service("s1", spec.ServiceSpec("web", container))
        self.task = spec.Task("t1", "s1", "web", 1, "n1", "running", container, 1)

    def find(self, ref: str):
        from swarm.api.errors import ApiError
        if ref in ("web", "s1"):
            return self.service
        raise ApiError("not_found", f"no such service: {ref}")

    def tasks(self):
        return [self.task]


@pytest.mark.parametrize("ref", ["web", "t1"])
def test_logs_of_a_service_whose_driver_keeps_none_say_so_as_docker(ref):
    from swarm.api.errors import ApiError
    from swarm.daemon.daemon import log_rows
    with pytest.raises(ApiError, match="configured logging driver does not support reading"):
        log_rows(_Services("none"), ref)
    assert [r["id"] for r in log_rows(_Services("local"), ref)] == ["t1"]

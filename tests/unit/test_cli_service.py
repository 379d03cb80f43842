"""`swarm service` and `swarm image` against a fake daemon (the one of test_cli).

Each test sets the daemon's answers (a value, an RPCError, or a function of
the params) and compares the exact params sent and the exact output. Polling
waits are made short (POLL_INTERVAL = 0.01 s) so progress tests take a few polls
of the fake, not seconds.
"""
from __future__ import annotations

import io
import json
import os
import re
from typing import Any

import pytest

from swarm.cli import endpoint_flags, image as cli_image, process_flags, progress as cli_progress, service_flags
from swarm.cli import service as cli_service
from swarm.rpc.messages import RPCError
from tests.unit.test_cli import FakeDaemon, failed, ok

SID = "k5k3v6l9lqr8jxzmlwcw1h4hx"
METHODS = ("service.create", "service.ls", "service.ps", "service.inspect", "service.update", "service.scale",
           "service.rm", "service.logs", "service.rollback", "image.import", "image.load", "image.ls", "image.rm",
           "image.inspect", "image.tag", "image.save", "image.prune")


class ServiceFake(FakeDaemon):
    def _router(self):
        router = super()._router()
        for method in METHODS:
            router.route(method, self._handler(method))
        return router


@pytest.fixture
def fake(state_dir):
    daemon = ServiceFake(state_dir)
    daemon.answers.update({"service.create": {"id": SID, "name": "web"}, "service.update": {"id": SID, "name": "web"},
                           "service.rollback": {"id": SID, "name": "web"}})
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(cli_progress, "POLL_INTERVAL", 0.01)


def sequence(*answers: Any):
    """A daemon answer that changes per call; the last one repeats."""
    calls = iter(answers)
    last: list[Any] = []

    def answer(params: dict) -> Any:
        last[:] = [next(calls, last[0] if last else None)]
        return last[0]
    return answer


def task(tid: str, slot: int, state: str, desired: str = "running", error: str = "", *, name: str = "web",
         image: str = "alpine", node: str = "node-a", exit_code: int | None = None) -> dict:
    return {"id": tid, "name": f"{name}.{slot or 'n' + node}", "image": image, "node": node, "desired_state": desired,
            "current_state": f"{state} 2 seconds ago", "error": error, "service_id": SID, "slot": slot,
            "node_id": "n" + node, "state": state, "exit_code": exit_code}


BAR = {state: cli_progress.progress_bar(state) for state in ("pending", "starting", "running")}


def test_progress_bars_are_dockers():
    assert BAR["running"] == "[" + "=" * 50 + ">]"
    assert BAR["starting"] == "[" + "=" * 44 + ">" + " " * 6 + "]"
    assert BAR["pending"] == "[" + "=" * 16 + ">" + " " * 34 + "]"


# -- create --------------------------------------------------------------------


def test_create_sends_every_conversion(fake, run):
    out = ok(run("service", "create", "--name", "web", "--replicas", "3", "-e", "A=1", "--env", "B=x=y",
                 "--mount", "type=bind,src=/host,dst=/data,ro",
                 "--mount", "type=tmpfs,target=/scratch",
                 "--mount", '"source=vol,x",target=/v,readonly=false',
                 "--constraint", "node.role==manager", "--constraint", "node.labels.zone!=b",
                 "--reserve-cpu", "0.5", "--reserve-memory", "64m", "--limit-cpu", "1.25",
                 "--limit-memory", "512MiB", "--restart-condition", "on-failure", "--restart-delay", "1m30s",
                 "--restart-max-attempts", "3", "--restart-window", "2m", "--stop-grace-period", "0s",
                 "--detach", "alpine:3.19", "sh", "-c", "echo hi; sleep 1", "--verbose", "-d"))
    assert out == f"{SID}\n"
    assert fake.params("service.create") == [{
        "name": "web", "image": "alpine:3.19", "command": ["sh", "-c", "echo hi; sleep 1", "--verbose", "-d"],
        "mode": "replicated", "replicas": 3, "env": ["A=1", "B=x=y"],
        "mounts": [{"type": "bind", "source": "/host", "target": "/data", "readonly": True},
                   {"type": "tmpfs", "source": "", "target": "/scratch", "readonly": False},
                   {"type": "volume", "source": "vol,x", "target": "/v", "readonly": False}],
        "constraints": ["node.role==manager", "node.labels.zone!=b"],
        "reserve_cpu": 500_000_000, "reserve_memory": 64 * 1024**2, "limit_cpu": 1_250_000_000,
        "limit_memory": 512 * 1024**2, "restart_condition": "on-failure", "restart_delay": 90.0,
        "restart_max_attempts": 3, "restart_window": 120.0, "stop_grace_period": 0.0,
    }]
    assert [m for m, _ in fake.calls] == ["service.create"]  # --detach: no waiting


def test_create_defaults_global_and_generated_name(fake, run, monkeypatch):
    monkeypatch.setenv("FROM_ENV", "here")
    assert ok(run("service", "create", "-d", "--name", "g", "--mode", "global", "-e", "FROM_ENV", "busybox"))
    assert ok(run("service", "create", "-d", "--limit-memory", "1.5g", "--reserve-memory", "100",
                  "--limit-cpu", "2", "busybox"))
    first, second = fake.params("service.create")
    assert first == {
        "name": "g", "image": "busybox", "command": [], "mode": "global", "env": ["FROM_ENV=here"], "mounts": [],
        "constraints": [], "reserve_cpu": 0, "reserve_memory": 0, "limit_cpu": 0, "limit_memory": 0,
        "restart_condition": "any", "restart_delay": 5.0, "restart_max_attempts": 0, "restart_window": 0.0,
        "stop_grace_period": 10.0,
    }
    assert re.fullmatch(r"[a-z]+_[a-z]+", second.pop("name"))
    del first["name"]
    assert second == {**first, "mode": "replicated", "replicas": 1, "env": [], "limit_memory": 3 * 512 * 1024**2,
                      "reserve_memory": 100, "limit_cpu": 2_000_000_000}


def test_create_daemon_error(fake, run):
    fake.answers["service.create"] = RPCError("conflict", "a service named web already exists")
    assert failed(run("service", "create", "--name", "web", "alpine"), 1) == (
        "Error: a service named web already exists\n")


@pytest.mark.parametrize("args, option", [
    (["create", "--reserve-cpu", "abc", "alpine"], "'--reserve-cpu'"),
    (["create", "--limit-cpu", "-1", "alpine"], "'--limit-cpu'"),
    (["create", "--limit-cpu", "0.0000000001", "alpine"], "'--limit-cpu'"),
    (["create", "--limit-memory", "12x", "alpine"], "'--limit-memory'"),
    (["create", "--reserve-memory", "-5m", "alpine"], "'--reserve-memory'"),
    (["create", "--limit-memory", "5mi", "alpine"], "'--limit-memory'"),
    (["create", "--restart-delay", "5", "alpine"], "'--restart-delay'"),
    (["create", "--stop-grace-period", "-1s", "alpine"], "'--stop-grace-period'"),
    (["create", "--restart-window", "soon", "alpine"], "'--restart-window'"),
    (["create", "--restart-condition", "always", "alpine"], "'--restart-condition'"),
    (["create", "--restart-max-attempts", "-2", "alpine"], "'--restart-max-attempts'"),
    (["create", "--mount", "type=nfs,target=/x", "alpine"], "'--mount'"),
    (["create", "--mount", "source=/a", "alpine"], "'--mount'"),
    (["create", "--mount", "type=bind,target=/x", "alpine"], "'--mount'"),
    (["create", "--mount", "type=bind,source=rel,target=/x", "alpine"], "'--mount'"),
    (["create", "--mount", "type=tmpfs,source=x,target=/t", "alpine"], "'--mount'"),
    (["create", "--mount", "type=bind,source=/a,target=/b,color=red", "alpine"], "'--mount'"),
    (["create", "--mount", "type=volume,source=v,target=relative", "alpine"], "'--mount'"),
    (["create", "--mount", "target=/b,readonly=maybe", "alpine"], "'--mount'"),
    (["create", "--mount", "target", "alpine"], "'--mount'"),
    (["create", "--replicas", "-1", "alpine"], "'--replicas'"),
    (["create", "--replicas", "two", "alpine"], "'--replicas'"),
    (["create", "--mode", "global", "--replicas", "2", "alpine"], "'--replicas'"),
    (["create", "--mode", "sometimes", "alpine"], "'--mode'"),
    (["create", "--constraint", "node.role", "alpine"], "'--constraint'"),
    (["create", "--constraint", "a==b==c", "alpine"], "'--constraint'"),
    (["create", "-e", "=x", "alpine"], "'--env'"),
    (["create", "-e", "SURELY_NOT_SET_ANYWHERE_42", "alpine"], "'--env'"),
    (["create", "--name", "web"], "'IMAGE'"),
    (["scale", "web"], "'SERVICE=REPLICAS...'"),
    (["scale", "web=x"], "'SERVICE=REPLICAS...'"),
    (["scale", "=3"], "'SERVICE=REPLICAS...'"),
    (["scale", "web=2", "api=-1"], "'SERVICE=REPLICAS...'"),
    (["scale"], "'SERVICE=REPLICAS...'"),
    (["update", "--env-rm", "A=b", "web"], "'--env-rm'"),
    (["update", "--env-add", "=b", "web"], "'--env-add'"),
    (["update", "--constraint-add", "zone", "web"], "'--constraint-add'"),
    (["update", "--args", "sh -c 'unterminated", "web"], "'--args'"),
    (["update", "--limit-memory", "lots", "web"], "'--limit-memory'"),
    (["update", "--replicas", "-3", "web"], "'--replicas'"),
    (["ps"], "'SERVICE...'"),
    (["logs", "--tail", "ten", "web"], "'--tail'"),
    (["ls", "--format", "yaml"], "'--format'"),
])
def test_bad_input_is_a_usage_error(fake, run, args, option):
    err = failed(run("service", *args), 2)
    assert err.startswith("Usage: swarm service ")
    assert option in err.splitlines()[-1]
    assert fake.calls == []


# -- update / scale / rm -------------------------------------------------------


def test_update_sends_only_the_flags_given(fake, run):
    assert ok(run("service", "update", "--image", "alpine:3", "-d", "web")) == "web\n"
    assert ok(run("service", "update", "-d", "web")) == "web\n"
    assert ok(run("service", "update", "--env-add", "A=1", "--env-add", "B=2", "--env-rm", "C",
                  "--constraint-add", "node.role==worker", "--constraint-rm", "node.role==manager",
                  "--replicas", "0", "--limit-memory", "1g", "--reserve-cpu", "0.25", "--restart-delay", "0",
                  "--restart-condition", "any", "--stop-grace-period", "10s", "--detach", "web"))
    assert ok(run("service", "update", "--args", "sh -c 'echo hi'", "--env", "X=1", "--constraint",
                  "node.labels.a==b", "--mount", "type=volume,src=v,dst=/v", "--restart-max-attempts", "0",
                  "--restart-window", "1h", "--limit-cpu", "0", "--reserve-memory", "0", "-d", "web"))
    assert fake.params("service.update") == [
        {"ref": "web", "image": "alpine:3"},
        {"ref": "web"},
        {"ref": "web", "env_add": ["A=1", "B=2"], "env_rm": ["C"], "constraint_add": ["node.role==worker"],
         "constraint_rm": ["node.role==manager"], "replicas": 0, "limit_memory": 1024**3,
         "reserve_cpu": 250_000_000, "restart_delay": 0.0, "restart_condition": "any", "stop_grace_period": 10.0},
        {"ref": "web", "command": ["sh", "-c", "echo hi"], "env": ["X=1"], "constraints": ["node.labels.a==b"],
         "mounts": [{"type": "volume", "source": "v", "target": "/v", "readonly": False}],
         "restart_max_attempts": 0, "restart_window": 3600.0, "limit_cpu": 0, "reserve_memory": 0},
    ]
    assert [m for m, _ in fake.calls] == ["service.update"] * 4


def test_scale_detached_and_rm(fake, run):
    fake.answers["service.scale"] = [{"id": SID, "name": "web"}, {"id": "api1", "name": "api"}]
    fake.answers["service.rm"] = ["web", "api"]
    assert ok(run("service", "scale", "-d", "web=3", "api=0")) == "web scaled to 3\napi scaled to 0\n"
    assert ok(run("service", "scale", "--detach", "web=3", "api=0")) == "web scaled to 3\napi scaled to 0\n"
    assert fake.params("service.scale") == [{"scales": {"web": 3, "api": 0}}] * 2
    assert [m for m, _ in fake.calls] == ["service.scale"] * 2  # --detach: no waiting
    assert ok(run("service", "rm", "web", SID[:5])) == "web\napi\n"
    assert fake.params("service.rm") == [{"refs": ["web", SID[:5]]}]


def test_scale_error_from_daemon(fake, run):
    fake.answers["service.scale"] = RPCError("bad_request", "g: scale can only be used with replicated mode")
    assert failed(run("service", "scale", "g=2"), 1) == "Error: g: scale can only be used with replicated mode\n"


# -- ls / ps / inspect ---------------------------------------------------------

SERVICES = [
    {"id": "zzzzzzzzzzzzzzzzzzzzzzzzz", "name": "web", "mode": "replicated", "replicas": "2/3",
     "image": "nginx:1.25", "ports": ""},
    {"id": SID, "name": "agent", "mode": "global", "replicas": "3/3", "image": "busybox", "ports": ""},
]


def test_service_ls_table_json_quiet(fake, run):
    fake.answers["service.ls"] = SERVICES
    assert ok(run("service", "ls")) == (
        "ID             NAME      MODE         REPLICAS   IMAGE        PORTS\n"
        "k5k3v6l9lqr8   agent     global       3/3        busybox\n"
        "zzzzzzzzzzzz   web       replicated   2/3        nginx:1.25\n"
    )
    out = ok(run("service", "ls", "--format", "json"))
    assert out == json.dumps([SERVICES[1], SERVICES[0]], indent=4) + "\n"
    assert {"id", "name", "mode", "replicas", "image", "ports"} <= set(json.loads(out)[0])
    assert ok(run("service", "ls", "-q")) == f"{SID}\nzzzzzzzzzzzzzzzzzzzzzzzzz\n"


TASKS = [
    task("aaaaaaaaaaaaaaaaaaaaaaaaa", 1, "running"),
    task("bbbbbbbbbbbbbbbbbbbbbbbbb", 1, "failed", "shutdown",
         "task: non-zero exit (1): the container exited with an error", node="node-b", exit_code=1),
    task("ccccccccccccccccccccccccc", 2, "pending", error="no suitable node (insufficient memory on 2 nodes)",
         node=""),
]


def test_service_ps_table_json_quiet(fake, run):
    # The daemon's order puts slot 1's failed task first: the table shows the live one on top.
    fake.answers["service.ps"] = [TASKS[1], TASKS[0], TASKS[2]]
    assert ok(run("service", "ps", "web")) == (
        "ID             NAME        IMAGE     NODE      DESIRED STATE   CURRENT STATE           ERROR\n"
        "aaaaaaaaaaaa   web.1       alpine    node-a    Running         Running 2 seconds ago\n"
        "bbbbbbbbbbbb    \\_ web.1   alpine    node-b    Shutdown        Failed 2 seconds ago    "
        '"task: non-zero exit (1): the …"\n'
        "cccccccccccc   web.2       alpine              Running         Pending 2 seconds ago   "
        '"no suitable node (insufficien…"\n'
    )
    wide = ok(run("service", "ps", "--no-trunc", "web", "api"))
    assert "aaaaaaaaaaaaaaaaaaaaaaaaa   web.1" in wide
    assert '"no suitable node (insufficient memory on 2 nodes)"\n' in wide
    out = ok(run("service", "ps", "--format", "json", "web"))
    assert json.loads(out) == [TASKS[1], TASKS[0], TASKS[2]]
    assert ok(run("service", "ps", "-q", "web")) == "".join(t["id"] + "\n" for t in (TASKS[1], TASKS[0], TASKS[2]))
    assert fake.params("service.ps") == [{"refs": ["web"]}, {"refs": ["web", "api"]}, {"refs": ["web"]},
                                         {"refs": ["web"]}]


INSPECTED = {
    "id": SID, "spec_version": 2, "created_at": 1714557600.0, "updated_at": 1714557660.5,
    "spec": {"name": "web", "mode": "replicated", "replicas": 3, "constraints": ["node.role==worker"],
             "container": {"image": "alpine", "command": ["sh", "-c", "echo hi"], "env": ["A=1"],
                           "mounts": [{"type": "bind", "target": "/data", "source": "/srv", "readonly": True}],
                           "stop_grace_period": 10.0, "limits": {"nano_cpus": 0, "memory_bytes": 0}},
             "reservations": {"nano_cpus": 500000000, "memory_bytes": 0},
             "limits": {"nano_cpus": 0, "memory_bytes": 67108864},
             "restart": {"condition": "any", "delay": 5.0, "max_attempts": 0, "window": 0.0}, "labels": {}},
}


def test_service_inspect_json_and_pretty(fake, run):
    fake.answers["service.inspect"] = [INSPECTED]
    assert ok(run("service", "inspect", "web")) == json.dumps([INSPECTED], indent=4) + "\n"
    assert ok(run("service", "inspect", "--format", "pretty", "web")) == (
        f"ID:                   {SID}\n"
        "Name:                 web\n"
        "Service Mode:         Replicated\n"
        " Replicas:            3\n"
        "Created at:           2024-05-01T10:00:00.000000000Z\n"
        "Updated at:           2024-05-01T10:01:00.500000000Z\n"
        "Placement:\n"
        " Constraints:         [node.role==worker]\n"
        "Restart Policy:\n"
        " Condition:           any\n"
        " Delay:               5s\n"
        " Max Attempts:        0\n"
        " Window:              0s\n"
        "ContainerSpec:\n"
        " Image:               alpine\n"
        " Args:                sh -c 'echo hi'\n"
        " Env:                 A=1\n"
        " StopGracePeriod:     10s\n"
        "Mounts:\n"
        " Target:              /data\n"
        "  Source:             /srv\n"
        "  ReadOnly:           true\n"
        "  Type:               bind\n"
        "Resources:\n"
        " Reservations:\n"
        "  CPU:                0.5\n"
        " Limits:\n"
        "  Memory:             64MiB\n"
    )
    assert fake.params("service.inspect") == [{"refs": ["web"]}, {"refs": ["web"]}]


# -- waiting for convergence ---------------------------------------------------


def test_create_shows_progress_until_converged(fake, run):
    fake.answers["service.ps"] = sequence(
        [],
        [task("t1", 1, "pending"), task("t2", 2, "pending")],
        [task("t1", 1, "running"), task("t2", 2, "starting")],
        [task("t1", 1, "running"), task("t2", 2, "starting")],
        [task("t1", 1, "running"), task("t2", 2, "running")],
    )
    assert ok(run("service", "create", "--name", "web", "--replicas", "2", "alpine")) == (
        f"{SID}\n"
        "overall progress: 0 out of 2 tasks\n"
        f"1/2: pending   {BAR['pending']}\n"
        f"2/2: pending   {BAR['pending']}\n"
        "overall progress: 1 out of 2 tasks\n"
        f"1/2: running   {BAR['running']}\n"
        f"2/2: starting  {BAR['starting']}\n"
        "overall progress: 2 out of 2 tasks\n"
        f"2/2: running   {BAR['running']}\n"
        "verify: Service converged\n"
    )
    assert fake.params("service.ps") == [{"refs": [SID]}] * 5


def test_create_quiet_waits_without_output(fake, run):
    fake.answers["service.ps"] = sequence([task("t1", 1, "pending")], [task("t1", 1, "running")])
    assert ok(run("service", "create", "-q", "--name", "web", "alpine")) == f"{SID}\n"
    assert len(fake.params("service.ps")) == 2


WAITING = "waiting up to 2m0s (--timeout); Ctrl-C stops waiting, not the service\n"


def test_failed_task_is_shown_and_its_replacement_awaited(fake, run):
    failure = "task: non-zero exit (1): starting container failed: exec: \"nope\": executable file not found"
    fake.answers["service.ps"] = sequence(
        [task("t1", 1, "starting")],
        [task("t1", 1, "failed", "shutdown", failure, exit_code=1), task("t1b", 1, "pending")],
        [task("t1", 1, "failed", "shutdown", failure, exit_code=1), task("t1b", 1, "running")],
    )
    assert ok(run("service", "create", "--name", "web", "alpine", "nope")) == (
        f"{SID}\n"
        "overall progress: 0 out of 1 tasks\n"
        f"1/1: starting  {BAR['starting']}\n"
        f"1/1: {failure}\n"  # whole: printed once, never redrawn
        f"1/1: pending   {BAR['pending']}\n"
        + WAITING +
        "overall progress: 1 out of 1 tasks\n"
        f"1/1: running   {BAR['running']}\n"
        "verify: Service converged\n"
    )


def test_a_task_failing_again_and_again_shows_its_reason_once(fake, run):
    def failure(tid: str) -> str:  # the runtime names each attempt's task in its error
        return f'Task {tid} failed to start: exec: "nope": executable file not found in $PATH'

    attempts = [task(f"t{i}", 1, "failed", "shutdown", failure(f"t{i}"), exit_code=127) for i in range(1, 4)]
    fake.answers["service.ps"] = sequence(
        [task("t1", 1, "starting")],
        attempts[:1] + [task("t2", 1, "starting")],
        attempts[:2] + [task("t3", 1, "starting")],
        attempts[:3] + [task("t4", 1, "starting")],
    )
    result = run("service", "create", "--name", "web", "--timeout", "300ms", "alpine", "nope")
    assert result.exit_code == 1, result.output
    assert result.stdout == (
        f"{SID}\n"
        "overall progress: 0 out of 1 tasks\n"
        f"1/1: starting  {BAR['starting']}\n"
        f"1/1: {failure('t1')}\n"
        "waiting up to 300ms (--timeout); Ctrl-C stops waiting, not the service\n"
    )
    assert result.stderr == f"Error: service web did not converge in 300ms: {failure('t3')}\n"


def test_a_new_reason_is_shown_too(fake, run):
    fake.answers["service.ps"] = sequence(
        [task("t1", 1, "failed", "shutdown", "task: non-zero exit (1)", exit_code=1)],
        [task("t1", 1, "failed", "shutdown", "task: non-zero exit (1)", exit_code=1),
         task("t2", 1, "rejected", "shutdown", "mount source /data does not exist")],
        [task("t3", 1, "running")],
    )
    assert ok(run("service", "create", "--name", "web", "alpine")) == (
        f"{SID}\n"
        "1/1: task: non-zero exit (1)\n"
        "overall progress: 0 out of 1 tasks\n"
        + WAITING +
        "1/1: mount source /data does not exist\n"
        "overall progress: 1 out of 1 tasks\n"
        f"1/1: running   {BAR['running']}\n"
        "verify: Service converged\n"
    )


def test_service_that_never_converges_fails_with_its_last_error(fake, run):
    error = "no suitable node (insufficient memory on 3 nodes)"
    fake.answers["service.ps"] = [task("t1", 1, "pending", error=error)]
    result = run("service", "create", "--name", "web", "--limit-memory", "64g", "--timeout", "300ms", "alpine")
    assert result.exit_code == 1, result.output
    assert result.stdout == (
        f"{SID}\n"
        "overall progress: 0 out of 1 tasks\n"
        f"1/1: pending   {BAR['pending']}\n"
        f"1/1: {error}\n"
        "waiting up to 300ms (--timeout); Ctrl-C stops waiting, not the service\n"
    )
    assert result.stderr == f"Error: service web did not converge in 300ms: {error}\n"
    assert len(fake.params("service.ps")) > 3


def test_service_without_error_that_times_out(fake, run):
    fake.answers["service.ps"] = [task("t1", 1, "running"), task("t2", 2, "assigned")]
    result = run("service", "create", "--name", "web", "--replicas", "2", "--timeout", "100ms", "alpine")
    assert result.exit_code == 1
    assert result.stderr == "Error: service web did not converge in 100ms: 1 of 2 tasks running\n"


def test_timeout_is_documented_with_its_default(fake, run):
    for command in ("create", "update", "scale"):
        help_text = " ".join(ok(run("service", command, "--help")).split())
        assert ("--timeout DURATION How long to wait for the service to converge; then exit 1 "
                "(the service stays). [default: 2m0s]") in help_text


def test_scale_shows_progress_until_converged(fake, run):
    fake.answers["service.scale"] = [{"id": SID, "name": "web"}]
    fake.answers["service.ps"] = sequence(
        [task("t1", 1, "running")],  # the orchestrator has not acted yet
        [task("t1", 1, "running"), task("t2", 2, "pending"), task("t3", 2 + 1, "pending")],
        [task("t1", 1, "running"), task("t2", 2, "running"), task("t3", 3, "running")],
    )
    assert ok(run("service", "scale", "web=3")) == (
        "web scaled to 3\n"
        "overall progress: 1 out of 3 tasks\n"
        f"1/3: running   {BAR['running']}\n"
        f"2/3: pending   {BAR['pending']}\n"
        f"3/3: pending   {BAR['pending']}\n"
        "overall progress: 3 out of 3 tasks\n"
        f"2/3: running   {BAR['running']}\n"
        f"3/3: running   {BAR['running']}\n"
        "verify: Service converged\n"
    )
    assert fake.params("service.ps") == [{"refs": [SID]}] * 3


def test_scale_down_waits_for_the_extra_tasks_to_go(fake, run):
    fake.answers["service.scale"] = [{"id": SID, "name": "web"}]
    three = [task("t1", 1, "running"), task("t2", 2, "running"), task("t3", 3, "running")]
    fake.answers["service.ps"] = sequence(
        three,  # not yet: the extra tasks count for nothing, but they must go
        three[:1] + [{**t, "desired_state": "shutdown"} for t in three[1:]],
    )
    assert ok(run("service", "scale", "web=1")) == (
        "web scaled to 1\n"
        "overall progress: 1 out of 1 tasks\n"
        f"1/1: running   {BAR['running']}\n"
        "verify: Service converged\n"
    )
    assert len(fake.params("service.ps")) == 2


def test_scale_waits_for_each_service_and_names_each_failure(fake, run):
    error = "no suitable node (insufficient memory on 3 nodes)"
    fake.answers["service.scale"] = [{"id": SID, "name": "web"}, {"id": "api1", "name": "api"},
                                     {"id": "db1", "name": "db"}]
    fake.answers["service.ps"] = lambda p: {
        SID: [task("t1", 1, "running", error=error), task("t2", 2, "pending", error=error)],
        "api1": [task("a1", 1, "running", name="api")],
        "db1": [task("d1", 1, "pending", error=error, name="db")],
    }[p["refs"][0]]
    result = run("service", "scale", "--timeout", "200ms", "web=2", "api=1", "db=1")
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("web scaled to 2\napi scaled to 1\ndb scaled to 1\n")
    assert "overall progress: 1 out of 1 tasks\n1/1: running" in result.stdout  # api converged
    assert result.stderr == (f"Error: service web did not converge in 200ms: {error}\n"
                             f"Error: service db did not converge in 200ms: {error}\n")


def test_update_waits_for_the_replaced_tasks(fake, run):
    old = task("old1", 1, "running", image="alpine:3.18")
    fake.answers["service.inspect"] = [{**INSPECTED, "spec": {**INSPECTED["spec"], "replicas": 1,
                                                              "container": {"image": "alpine:3.19"}}}]
    fake.answers["service.ps"] = sequence(
        [old],  # before the update
        [old], [old],  # the leader has not acted yet: not converged
        [{**old, "desired_state": "shutdown"}, task("new1", 1, "starting", image="alpine:3.19")],
        [{**old, "desired_state": "shutdown", "state": "shutdown"}, task("new1", 1, "running", image="alpine:3.19")],
    )
    assert ok(run("service", "update", "--image", "alpine:3.19", "web")) == (
        "web\n"
        "overall progress: 0 out of 1 tasks\n"
        f"1/1: running   {BAR['running']}\n"
        f"1/1: starting  {BAR['starting']}\n"
        "overall progress: 1 out of 1 tasks\n"
        f"1/1: running   {BAR['running']}\n"
        "verify: Service converged\n"
    )
    assert [m for m, _ in fake.calls] == (["service.inspect", "service.ps", "service.update", "service.inspect"]
                                          + ["service.inspect", "service.ps"] * 4)
    assert fake.params("service.update") == [{"ref": "web", "image": "alpine:3.19"}]


def test_update_that_replaces_nothing_converges(fake, run):
    fake.answers["service.inspect"] = [{**INSPECTED, "spec": {**INSPECTED["spec"], "replicas": 2}}]
    fake.answers["service.ps"] = [task("t1", 1, "running"), task("t2", 2, "running")]
    out = ok(run("service", "update", "--restart-delay", "1s", "web"))
    assert out.endswith("overall progress: 2 out of 2 tasks\nverify: Service converged\n")
    assert len(fake.params("service.ps")) == 1 + cli_progress.UNCHANGED_GRACE_POLLS


def test_global_service_progress_per_node(fake, run):
    fake.answers["service.ps"] = sequence(
        [task("g1", 0, "pending", name="agent", node="a"), task("g2", 0, "running", name="agent", node="b")],
        [task("g1", 0, "running", name="agent", node="a"), task("g2", 0, "running", name="agent", node="b")],
    )
    assert ok(run("service", "create", "--mode", "global", "--name", "agent", "busybox")) == (
        f"{SID}\n"
        "overall progress: 1 out of 2 tasks\n"
        f"na: pending   {BAR['pending']}\n"
        f"nb: running   {BAR['running']}\n"
        "overall progress: 2 out of 2 tasks\n"
        f"na: running   {BAR['running']}\n"
        "verify: Service converged\n"
    )


def test_progress_redraws_in_place_on_a_terminal():
    out = io.StringIO()
    progress = cli_progress.Progress(out, tty=True)
    progress.show([], [("overall", "overall progress: 0 out of 1 tasks"), ("1/1", "1/1: pending")])
    progress.show([], [("overall", "overall progress: 0 out of 1 tasks"), ("1/1", "1/1: pending")])
    progress.show(["1/1: boom"], [("overall", "overall progress: 1 out of 1 tasks"), ("1/1", "1/1: running")])
    progress.line("verify: Service converged")
    assert out.getvalue() == (
        "overall progress: 0 out of 1 tasks\n1/1: pending\n"
        "\x1b[2A\r\x1b[J1/1: boom\noverall progress: 1 out of 1 tasks\n1/1: running\n"
        "verify: Service converged\n"
    )


# -- logs ----------------------------------------------------------------------

def log_line(slot: int, node: str, time: str, stream: str, line: str) -> dict:
    return {"task": f"web.{slot}", "task_id": f"t{slot}" * 10, "service": "web", "service_id": "s1" * 10,
            "slot": slot, "node": node, "node_id": node.upper(), "time": time, "stream": stream, "line": line}


LOGS = [log_line(1, "node-a", "2024-05-01T10:00:00.250000000Z", "stdout", "hello\n"),
        log_line(2, "node-b", "2024-05-01T10:00:01.000000000Z", "stderr", "oops"),
        log_line(1, "node-a", "2024-05-01T10:00:02.000000000Z", "stdout", "bye")]


def chunks(*answers: dict):
    """service.logs answers in turn; each one must be asked with the cursors of the one before."""
    calls = iter(answers)
    expected: list[Any] = [None]

    def answer(params: dict) -> Any:
        assert params["cursors"] == expected[0]
        got = next(calls)
        expected[0] = got["cursors"]
        return got
    return answer


def test_logs_format_tail_and_timestamps(fake, run):
    fake.answers["service.logs"] = chunks({"lines": LOGS, "cursors": {"t1": {"off": 9}}, "done": True})
    result = run("service", "logs", "web")
    assert result.exit_code == 0
    assert result.stdout == "web.1.t1t1t1t1t1t1@node-a    | hello\nweb.1.t1t1t1t1t1t1@node-a    | bye\n"
    assert result.stderr == "web.2.t2t2t2t2t2t2@node-b    | oops\n"
    fake.answers["service.logs"] = chunks({"lines": LOGS[::2], "cursors": {}, "done": True, "width": 2})
    result = run("service", "logs", "-t", "-n", "2", "--no-task-ids", "web")
    assert result.stdout == (
        "2024-05-01T10:00:00.250000000Z web.1@node-a     | hello\n"
        "2024-05-01T10:00:02.000000000Z web.1@node-a     | bye\n")
    fake.answers["service.logs"] = chunks({"lines": LOGS[::2], "cursors": {}, "done": True})
    assert run("service", "logs", "--raw", "--since", "2024-05-01T12:00:00+02:00", "--until", "1714557600",
               "web").stdout == "hello\nbye\n"
    fake.answers["service.logs"] = chunks({"lines": LOGS[:1], "cursors": {}, "done": True})
    assert run("service", "logs", "--no-trunc", "--no-resolve", "--details", "t1t1").stdout == \
        "s1s1s1s1s1s1s1s1s1s1.1.t1t1t1t1t1t1t1t1t1t1@NODE-A    |  hello\n"    # IDs; an empty details column
    assert fake.params("service.logs") == [
        {"ref": "web", "tail": None, "follow": False, "cursors": None, "wait": 0.0},
        {"ref": "web", "tail": 2, "follow": False, "cursors": None, "wait": 0.0},
        {"ref": "web", "tail": None, "follow": False, "cursors": None, "wait": 0.0,
         "since": "2024-05-01T10:00:00.000000000Z", "until": "2024-05-01T10:00:00.000000000Z"},
        {"ref": "t1t1", "tail": None, "follow": False, "cursors": None, "wait": 0.0, "details": True}]


def test_logs_calls_again_with_the_cursors_until_done(fake, run):
    fake.answers["service.logs"] = chunks(
        {"lines": LOGS[:1], "cursors": {"t1": {"off": 1}}, "done": False, "warnings": ["node w3 is down"]},
        {"lines": [], "cursors": {"t1": {"off": 1}, "t2": {"off": 0}}, "done": False, "warnings": ["node w3 is down"]},
        {"lines": LOGS[2:], "cursors": {"t1": {"off": 2}}, "done": True})
    result = run("service", "logs", "web")
    assert result.exit_code == 0
    assert result.stdout == "web.1.t1t1t1t1t1t1@node-a    | hello\nweb.1.t1t1t1t1t1t1@node-a    | bye\n"
    assert result.stderr == "Warning: node w3 is down\n"        # once, not once per call
    assert len(fake.params("service.logs")) == 3


def test_logs_follow_keeps_calling_and_a_failure_is_one_sentence(fake, run):
    new = log_line(2, "node-b", "2024-05-01T10:00:03.000000000Z", "stdout", "later")
    follow = chunks({"lines": LOGS[2:], "cursors": {"t1": {"off": 2}}, "done": False},
                    {"lines": [], "cursors": {"t1": {"off": 2}}, "done": False},
                    {"lines": [new], "cursors": {"t1": {"off": 2}, "t2": {"off": 1}}, "done": False})

    def answer(params: dict) -> Any:
        if len(fake.params("service.logs")) > 3:
            raise RPCError("unavailable", "could not read the logs of web.2 on node node-b: connection refused")
        return follow(params)
    fake.answers["service.logs"] = answer
    result = run("service", "logs", "-f", "--tail", "1", "web")
    assert result.exit_code == 1
    assert result.stdout == "web.1.t1t1t1t1t1t1@node-a    | bye\nweb.2.t2t2t2t2t2t2@node-b    | later\n"
    assert result.stderr == "Error: could not read the logs of web.2 on node node-b: connection refused\n"
    assert [p["wait"] for p in fake.params("service.logs")] == [cli_service.LOGS_WAIT] * 4
    assert all(p["follow"] and p["tail"] == 1 for p in fake.params("service.logs"))


def test_logs_that_fail_exit_non_zero_with_one_sentence(fake, run):
    fake.answers["service.logs"] = RPCError("not_found", "no such task or service: nope")
    assert failed(run("service", "logs", "nope"), 1) == "Error: no such task or service: nope\n"
    assert "Invalid value for '--since'" in failed(run("service", "logs", "--since", "yesterday", "web"), 2)
    fake.answers["service.logs"] = [{"line": "an old daemon's answer"}]
    assert "not a chunk of logs" in failed(run("service", "logs", "web"), 1)


# -- images --------------------------------------------------------------------


def test_image_import_from_a_file(fake, run, tmp_path, monkeypatch):
    (tmp_path / "rootfs.tar").write_bytes(b"tar")
    fake.answers["image.import"] = {"id": "sha256:" + "ab" * 32, "ref": "app:1.0"}
    monkeypatch.chdir(tmp_path)
    assert ok(run("image", "import", "rootfs.tar", "app:1.0")) == "sha256:" + "ab" * 32 + "\n"
    assert fake.params("image.import") == [{"path": str(tmp_path / "rootfs.tar"), "ref": "app:1.0"}]


def test_image_import_from_stdin(fake, run, state_dir):
    seen = {}

    def answer(params: dict) -> dict:
        with open(params["path"], "rb") as f:
            seen["data"] = f.read()
        seen["dir"] = os.path.dirname(params["path"])
        return {"id": "sha256:12", "ref": params["ref"]}
    fake.answers["image.import"] = answer
    assert ok(run("image", "import", "-", "registry.local:5000/team/app", input=b"\x00rootfs" * 1000)) == "sha256:12\n"
    assert seen == {"data": b"\x00rootfs" * 1000, "dir": state_dir}
    assert fake.params("image.import")[0]["ref"] == "registry.local:5000/team/app"
    assert sorted(os.listdir(state_dir)) == ["swarm.sock"]  # the temporary copy is gone


def test_image_import_failure_still_removes_the_copy(fake, run, state_dir):
    fake.answers["image.import"] = RPCError("bad_request", "the archive is not a tar file")
    assert failed(run("image", "import", "-", "app", input=b"junk"), 1) == "Error: the archive is not a tar file\n"
    assert sorted(os.listdir(state_dir)) == ["swarm.sock"]


@pytest.mark.parametrize("args, option", [
    (["import", "/no/such/file.tar", "app:1"], "'FILE|-'"),
    (["import", "-", "App:1"], "'NAME[:TAG]'"),
    (["import", "-", "app:"], "'NAME[:TAG]'"),
    (["load", "-i", "/no/such/file.tar"], "'--input'"),
    (["rm"], "'IMAGE...'"),
])
def test_image_bad_input(fake, run, args, option):
    err = failed(run("image", *args), 2)
    assert option in err.splitlines()[-1]
    assert fake.calls == []


def test_image_load(fake, run, tmp_path):
    archive = tmp_path / "save.tar"
    archive.write_bytes(b"x")
    fake.answers["image.load"] = {"refs": ["nginx:1.25", "redis:7"]}
    assert ok(run("image", "load", "-i", str(archive))) == "Loaded image: nginx:1.25\nLoaded image: redis:7\n"
    assert ok(run("image", "load", "--input", str(archive)))
    assert fake.params("image.load") == [{"path": str(archive)}] * 2


IMAGES = [
    {"Id": "sha256:05455a08881ea9cf0e752bc48e61bbd71a34c029bb13df01e40e3e70e0d007bd", "RepoTags": ["alpine:3.19"],
     "RepoDigests": ["alpine@sha256:" + "d" * 64], "Size": 7_377_920, "Created": 1714557600.0 - 3 * 86400},
    {"Id": "sha256:ab" + "0" * 62, "RepoTags": ["registry.local:5000/team/app:1.0", "registry.local:5000/team/app:2"],
     "RepoDigests": [], "Size": 1_234_567_890, "Created": "2024-05-01T09:59:00Z"},
    {"Id": "sha256:cd" + "0" * 62, "RepoTags": [], "RepoDigests": [], "Size": 1000, "Created": 1.0},
]


def test_image_ls_table_json_quiet_digests_and_rm(fake, run, monkeypatch):
    monkeypatch.setattr(cli_image, "now", lambda: 1714557600.0)
    fake.answers["image.ls"] = IMAGES
    assert ok(run("image", "ls")) == (
        "REPOSITORY                     TAG       IMAGE ID       CREATED              SIZE\n"
        "registry.local:5000/team/app   1.0       ab0000000000   About a minute ago   1.23GB\n"
        "registry.local:5000/team/app   2         ab0000000000   About a minute ago   1.23GB\n"
        "alpine                         3.19      05455a08881e   3 days ago           7.38MB\n"
        "<none>                         <none>    cd0000000000   54 years ago         1kB\n"
    )
    assert ok(run("image", "ls", "--digests", "--filter", "reference=alpine")) == (
        "REPOSITORY   TAG       DIGEST                                                                    IMAGE ID"
        "       CREATED      SIZE\n"
        f"alpine       3.19      sha256:{'d' * 64}   05455a08881e   3 days ago   7.38MB\n")
    rows = json.loads(ok(run("image", "ls", "--format", "json")))
    assert [(r["Repository"], r["Tag"], r["ID"]) for r in rows][:2] == [
        ("registry.local:5000/team/app", "1.0", "ab0000000000"), ("registry.local:5000/team/app", "2", "ab0000000000")]
    assert ok(run("image", "ls", "-q", "--filter", "dangling=true")) == "cd0000000000\n"
    assert ok(run("image", "ls", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}",
                  "-f", "reference=registry.local:5000/*:2")) == f"sha256:ab{'0' * 62} registry.local:5000/team/app:2\n"
    fake.answers["image.rm"] = {"records": [{"Untagged": "alpine:3.19"}, {"Deleted": "sha256:0545"}],
                                "errors": ["No such image: nope"]}
    result = run("image", "rm", "alpine:3.19", "nope")
    assert result.exit_code == 1 and result.stdout == "Untagged: alpine:3.19\nDeleted: sha256:0545\n"
    assert result.stderr == "Error: No such image: nope\n"
    assert fake.params("image.rm") == [{"refs": ["alpine:3.19", "nope"], "force": False}]


def test_image_prune_asks_first_and_prints_docker_records(fake, run):
    fake.answers["image.prune"] = {"deleted": [{"Untagged": "a:1"}, {"Deleted": "sha256:ab"}], "reclaimed": 1_500_000}
    assert ok(run("image", "prune", input="n\n")) == (
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] ")
    assert fake.params("image.prune") == []
    assert ok(run("image", "prune", "-a", "-f")) == (
        "Deleted Images:\nuntagged: a:1\ndeleted: sha256:ab\n\nTotal reclaimed space: 1.5MB\n")
    assert fake.params("image.prune") == [{"all": True}]


def test_image_inspect_tag_and_save(fake, run, tmp_path, monkeypatch):
    fake.answers["image.inspect"] = {"images": [{"Id": "sha256:ab", "RepoTags": ["a:1"]}],
                                     "errors": ["No such image: b"]}
    result = run("image", "inspect", "--format", "{{.Id}} {{index .RepoTags 0}}", "a:1", "b")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "sha256:ab a:1\n", "Error: No such image: b\n")
    fake.answers["image.tag"] = {}
    assert ok(run("image", "tag", "a:1", "reg:5000/a:2")) == ""
    assert fake.params("image.tag") == [{"source": "a:1", "target": "reg:5000/a:2"}]
    fake.answers["image.save"] = lambda params: open(params["path"], "wb").write(b"tar bytes") and {}
    monkeypatch.chdir(tmp_path)
    assert ok(run("image", "save", "-o", "out.tar", "a:1")) == ""
    assert fake.params("image.save")[0] == {"refs": ["a:1"], "path": str(tmp_path / "out.tar")}
    assert run("image", "save", "a:1").stdout_bytes == b"tar bytes"     # through a temporary file, removed


# -- pure helpers --------------------------------------------------------------


@pytest.mark.parametrize("text, size", [
    ("64m", 64 * 1024**2), ("1g", 1024**3), ("512MiB", 512 * 1024**2), ("1.5GB", 3 * 512 * 1024**2),
    ("100", 100), ("100b", 100), ("2k", 2048), ("1 t", 1024**4), ("0", 0),
])
def test_parse_memory(text, size):
    assert service_flags.parse_memory(text) == size


@pytest.mark.parametrize("text, nano", [("0.5", 500_000_000), ("2", 2_000_000_000), ("0.000000001", 1), ("0", 0)])
def test_parse_cpus(text, nano):
    assert service_flags.parse_cpus(text) == nano


@pytest.mark.parametrize("size, text", [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (7_377_920, "7.38MB"), (142_000_000, "142MB"),
    (999_999, "1MB"), (1_234_567_890, "1.23GB"),
])
def test_human_size(size, text):
    assert cli_image.human_size(size) == text


@pytest.mark.parametrize("seconds, text", [
    (0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (45 * 60, "45 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"), (3 * 86400, "3 days"),
    (20 * 86400, "2 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_duration(seconds, text):
    assert cli_image.human_duration(seconds) == text


# -- create/update: every docker flag (swarm/cli/service_spec.py) --------------


def test_create_sends_docker_s_process_identity_and_storage_flags(fake, run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ok(run("service", "create", "-d", "--name", "app", "--entrypoint", "/bin/sh -c", "-u", "app:staff",
                  "--group", "audio", "--group", "42", "-w", "/srv", "--init", "-t", "--read-only",
                  "--stop-signal", "SIGUSR1", "--cap-add", "net_admin", "--cap-drop", "ALL",
                  "--sysctl", "net.core.somaxconn=1024", "--ulimit", "nofile=1024:2048", "--ulimit", "nproc=64",
                  "--ulimit", "nofile=10", "--limit-pids", "20", "--oom-score-adj", "-500",
                  "--hostname", "{{.Service.Name}}-{{.Task.Slot}}", "--dns", "10.0.0.2", "--dns", "::1",
                  "--dns-search", "example.org", "--dns-option", "ndots:2", "--host", "db:10.0.0.5",
                  "--host", "v6=[::2]", "-l", "tier=front", "--label", "flag", "--container-label", "c=1",
                  "--log-driver", "local", "--log-opt", "max-size=1m", "--log-opt", "max-file=2",
                  "--placement-pref", "spread=node.labels.zone", "--replicas-max-per-node", "2",
                  "--mount", "type=bind,src=./data,dst=/data,bind-propagation=rshared,ro,bind-recursive=readonly"
                  ",bind-propagation=rprivate",
                  "--mount", "type=volume,source=cache,target=/cache,volume-nocopy,volume-label=a=b,"
                  "volume-label=c=d,volume-driver=local,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
                  "--mount", "type=tmpfs,target=/tmp,tmpfs-size=64m,tmpfs-mode=1770,consistency=cached",
                  "--mount", "type=bind,source=/srv,target=/old,bind-nonrecursive",
                  "-p", "8080-8081:80-81", "-p", "9000-9001:90/udp",
                  "alpine", "echo", "--tty=false"))
    params = fake.params("service.create")[0]
    assert {k: v for k, v in params.items() if k not in CREATE_KEYS} == {
        "name": "app", "command": ["echo", "--tty=false"], "entrypoint": ["/bin/sh", "-c"], "user": "app:staff",
        "groups": ["audio", "42"], "workdir": "/srv", "init": True, "tty": True, "read_only": True,
        "stop_signal": "SIGUSR1", "cap_add": ["CAP_NET_ADMIN"], "cap_drop": ["ALL"],
        "sysctls": {"net.core.somaxconn": "1024"},
        "ulimits": [{"name": "nofile", "soft": 10, "hard": 10}, {"name": "nproc", "soft": 64, "hard": 64}],
        "limit_pids": 20, "oom_score_adj": -500, "hostname": "{{.Service.Name}}-{{.Task.Slot}}",
        "dns": ["10.0.0.2", "::1"], "dns_search": ["example.org"], "dns_options": ["ndots:2"],
        "hosts": ["10.0.0.5 db", "::2 v6"], "labels": {"tier": "front", "flag": ""}, "container_labels": {"c": "1"},
        "log_driver": "local", "log_opts": {"max-size": "1m", "max-file": "2"},
        "placement_prefs": ["spread=node.labels.zone"], "max_replicas_per_node": 2,
        "ports": [port_dict(80, 8080), port_dict(81, 8081), port_dict(90, 9000, "udp"), port_dict(90, 9001, "udp")],
    }
    assert params["mounts"] == [
        {"type": "bind", "source": str(tmp_path / "data"), "target": "/data", "readonly": True,
         "bind_propagation": "rprivate", "bind_recursive": "readonly"},
        {"type": "volume", "source": "cache", "target": "/cache", "readonly": False, "volume_nocopy": True,
         "volume_labels": {"a": "b", "c": "d"}, "volume_driver": "local",
         "volume_opts": {"type": "tmpfs", "device": "tmpfs"}},
        {"type": "tmpfs", "source": "", "target": "/tmp", "readonly": False, "tmpfs_size": 64 * 1024**2,
         "tmpfs_mode": 0o1770},
        {"type": "bind", "source": "/srv", "target": "/old", "readonly": False, "bind_recursive": "disabled"},
    ]


CREATE_KEYS = {"image", "mode", "replicas", "env", "mounts", "constraints", "reserve_cpu", "reserve_memory",
               "limit_cpu", "limit_memory", "restart_condition", "restart_delay", "restart_max_attempts",
               "restart_window", "stop_grace_period"}


def port_dict(target: int, published: int = 0, protocol: str = "tcp", mode: str = "ingress") -> dict:
    return {"target": target, "published": published, "protocol": protocol, "mode": mode}


def test_bool_flags_take_docker_s_value_syntax(fake, run):
    assert ok(run("service", "create", "-d", "--name", "a", "--read-only=false", "--tty=true", "--init=0",
                  "alpine", "sh", "--init=1"))
    assert ok(run("service", "update", "-d", "--read-only=false", "--no-tty", "--init", "web"))
    created = fake.params("service.create")[0]
    assert (created["read_only"], created["tty"], created["init"], created["command"]) == (
        False, True, False, ["sh", "--init=1"])
    assert fake.params("service.update") == [{"ref": "web", "read_only": False, "tty": False, "init": True}]


def test_jobs_and_their_flags(fake, run):
    assert ok(run("service", "create", "-d", "--name", "job", "--mode", "replicated-job", "--replicas", "5",
                  "--max-concurrent", "2", "alpine", "true")) == f"{SID}\n"
    assert ok(run("service", "create", "-d", "--name", "gjob", "--mode", "global-job", "alpine"))
    first, second = fake.params("service.create")
    assert (first["mode"], first["replicas"], first["max_concurrent"]) == ("replicated-job", 5, 2)
    assert second["mode"] == "global-job" and "replicas" not in second
    assert [m for m, _ in fake.calls] == ["service.create"] * 2     # detached: nothing waited on


def test_env_file_is_read_as_docker_reads_it(fake, run, tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("NOT_SET_ANYWHERE_42", raising=False)
    env_file = tmp_path / "app.env"
    env_file.write_text("\ufeff# a comment\nA=1\n\n   B=two words\nFROM_HOST\nNOT_SET_ANYWHERE_42\nC=\nA=3\n")
    assert ok(run("service", "create", "-d", "--name", "e", "--env-file", str(env_file), "-e", "C=override",
                  "alpine"))
    assert fake.params("service.create")[0]["env"] == ["B=two words", "FROM_HOST=h", "A=3", "C=override"]


def test_update_sends_the_add_and_rm_pairs(fake, run):
    assert ok(run("service", "update", "-d", "--entrypoint", "", "--args", "", "--hostname", "h", "-u", "0:0",
                  "-w", "/", "--stop-signal", "15", "--cap-add", "RESET", "--cap-drop", "chown",
                  "--limit-pids", "0", "--oom-score-adj", "0", "--log-driver", "none", "--log-opt", "x=y",
                  "--replicas-max-per-node", "1", "--max-concurrent", "3",
                  "--label-add", "a=1", "--label-rm", "b", "--container-label-add", "c", "--container-label-rm", "d",
                  "--group-add", "wheel", "--group-rm", "audio", "--dns-add", "1.1.1.1", "--dns-rm", "8.8.8.8",
                  "--dns-search-add", "a.org", "--dns-search-rm", "b.org", "--dns-option-add", "ndots:1",
                  "--dns-option-rm", "debug", "--host-add", "x:10.0.0.1", "--host-rm", "y",
                  "--host-rm", "z:10.0.0.2", "--mount-add", "type=tmpfs,target=/t", "--mount-rm", "/old",
                  "--sysctl-add", "net.ipv4.ip_forward=1", "--sysctl-rm", "net.core.somaxconn",
                  "--ulimit-add", "core=0", "--ulimit-rm", "nofile", "--placement-pref-add", "spread=node.labels.a",
                  "--placement-pref-rm", "spread=node.labels.b", "web")) == "web\n"
    assert fake.params("service.update") == [{
        "ref": "web", "entrypoint": [], "command": [], "hostname": "h", "user": "0:0", "workdir": "/",
        "stop_signal": "15", "cap_add": ["RESET"], "cap_drop": ["CAP_CHOWN"], "limit_pids": 0, "oom_score_adj": 0,
        "log_driver": "none", "log_opts": {"x": "y"}, "max_replicas_per_node": 1, "max_concurrent": 3,
        "labels_add": {"a": "1"}, "labels_rm": ["b"], "container_labels_add": {"c": ""},
        "container_labels_rm": ["d"], "groups_add": ["wheel"], "groups_rm": ["audio"], "dns_add": ["1.1.1.1"],
        "dns_rm": ["8.8.8.8"], "dns_search_add": ["a.org"], "dns_search_rm": ["b.org"],
        "dns_options_add": ["ndots:1"], "dns_options_rm": ["debug"], "hosts_add": ["10.0.0.1 x"],
        "hosts_rm": ["y", "z:10.0.0.2"], "mounts_add": [{"type": "tmpfs", "source": "", "target": "/t",
                                                         "readonly": False}],
        "mounts_rm": ["/old"], "sysctls_add": {"net.ipv4.ip_forward": "1"}, "sysctls_rm": ["net.core.somaxconn"],
        "ulimits_add": [{"name": "core", "soft": 0, "hard": 0}], "ulimits_rm": ["nofile"],
        "placement_prefs_add": ["spread=node.labels.a"], "placement_prefs_rm": ["spread=node.labels.b"],
    }]


@pytest.mark.parametrize("args, option", [
    (["create", "--cap-add", "NET_ADMN", "alpine"], "'--cap-add'"),
    (["create", "--cap-drop", "", "alpine"], "'--cap-drop'"),
    (["create", "--sysctl", "kernel.panic=1", "alpine"], "'--sysctl'"),
    (["create", "--sysctl", "net.ipv4.ip_forward", "alpine"], "'--sysctl'"),
    (["create", "--ulimit", "nofile", "alpine"], "'--ulimit'"),
    (["create", "--ulimit", "nofile=2048:1024", "alpine"], "'--ulimit'"),
    (["create", "--ulimit", "files=1", "alpine"], "'--ulimit'"),
    (["create", "--stop-signal", "SIGFOO", "alpine"], "'--stop-signal'"),
    (["create", "--stop-signal", "99", "alpine"], "'--stop-signal'"),
    (["create", "--user", "a b", "alpine"], "'--user'"),
    (["create", "--user", "a:b:c", "alpine"], "'--user'"),
    (["create", "--group", "a:b", "alpine"], "'--group'"),
    (["create", "--workdir", "relative", "alpine"], "'--workdir'"),
    (["create", "--hostname", "a b", "alpine"], "'--hostname'"),
    (["create", "--entrypoint", "sh -c 'open", "alpine"], "'--entrypoint'"),
    (["create", "--limit-pids", "-1", "alpine"], "'--limit-pids'"),
    (["create", "--oom-score-adj", "1001", "alpine"], "'--oom-score-adj'"),
    (["create", "--dns", "10.0.0", "alpine"], "'--dns'"),
    (["create", "--dns-search", "-bad-", "alpine"], "'--dns-search'"),
    (["create", "--dns-search", "123", "alpine"], "'--dns-search'"),
    (["create", "--dns-option", "a b", "alpine"], "'--dns-option'"),
    (["create", "--host", "db", "alpine"], "'--host'"),
    (["create", "--host", "db:300.0.0.1", "alpine"], "'--host'"),
    (["create", "--label", "=x", "alpine"], "'--label'"),
    (["create", "--container-label", "a b=c", "alpine"], "'--container-label'"),
    (["create", "--log-driver", "syslog", "alpine"], "'--log-driver'"),
    (["create", "--log-opt", "max-size", "alpine"], "'--log-opt'"),
    (["create", "--placement-pref", "spread", "alpine"], "'--placement-pref'"),
    (["create", "--placement-pref", "pack=node.labels.a", "alpine"], "'--placement-pref'"),
    (["create", "--mode", "global", "--replicas-max-per-node", "2", "alpine"], "'--replicas-max-per-node'"),
    (["create", "--mode", "global-job", "--replicas", "2", "alpine"], "'--replicas'"),
    (["create", "--max-concurrent", "2", "alpine"], "'--max-concurrent'"),
    (["create", "--max-concurrent", "-1", "--mode", "replicated-job", "alpine"], "'--max-concurrent'"),
    (["create", "--env-file", "/nonexistent/app.env", "alpine"], "'--env-file'"),
    (["create", "--credential-spec", "file://x", "alpine"], "'--credential-spec'"),
    (["create", "--isolation", "hyperv", "alpine"], "'--isolation'"),
    (["create", "--generic-resource", "gpu=1", "alpine"], "'--generic-resource'"),
    (["create", "--mount", "type=volume,target=/v,tmpfs-size=1m", "alpine"], "'--mount'"),
    (["create", "--mount", "type=tmpfs,target=/t,bind-propagation=shared", "alpine"], "'--mount'"),
    (["create", "--mount", "type=bind,src=/a,target=/b,bind-propagation=sideways", "alpine"], "'--mount'"),
    (["create", "--mount", "type=bind,src=/a,target=/b,bind-recursive=readonly", "alpine"], "'--mount'"),
    (["create", "--mount", "type=bind,src=/a,target=/b,ro,bind-recursive=readonly,bind-propagation=shared",
      "alpine"], "'--mount'"),
    (["create", "--mount", "type=bind,src=/a,target=/b,bind-recursive=maybe", "alpine"], "'--mount'"),
    (["create", "--mount", "type=volume,target=/v,volume-driver=nfs", "alpine"], "'--mount'"),
    (["create", "--mount", "type=tmpfs,target=/t,tmpfs-size=big", "alpine"], "'--mount'"),
    (["create", "--mount", "type=tmpfs,target=/t,tmpfs-mode=999", "alpine"], "'--mount'"),
    (["create", "--mount", "type=tmpfs,target=/t,tmpfs-mode=17777", "alpine"], "'--mount'"),
    (["create", "--mount", "type=volume,target=/v,volume-nocopy=perhaps", "alpine"], "'--mount'"),
    (["create", "--mount", "type=volume,target=/v,source=", "alpine"], "'--mount'"),
    (["create", "--mount", "type=volume, target=/v", "alpine"], "'--mount'"),
    (["create", "--mount", "type=image,target=/v", "alpine"], "'--mount'"),
    (["create", "--mount", "", "alpine"], "'--mount'"),
    (["create", "-p", "8080-8082:80-81", "alpine"], "'--publish'"),
    (["create", "-p", "8080-8081:80", "-p", "8081:90", "alpine"], "'--publish'"),
    (["update", "--generic-resource-add", "gpu=1", "web"], "'--generic-resource-add'"),
    (["update", "--sysctl-add", "vm.swappiness=1", "web"], "'--sysctl-add'"),
    (["update", "--ulimit-add", "nofile=x", "web"], "'--ulimit-add'"),
    (["update", "--cap-drop", "CAP_NOPE", "web"], "'--cap-drop'"),
    (["update", "--host-add", "x", "web"], "'--host-add'"),
    (["update", "--dns-add", "example.org", "web"], "'--dns-add'"),
    (["update", "--label-rm", "a b", "web"], "'--label-rm'"),
    (["update", "--placement-pref-rm", "spread", "web"], "'--placement-pref-rm'"),
    (["update", "--mount-add", "type=bind,target=/x", "web"], "'--mount-add'"),
])
def test_bad_values_of_docker_s_flags_are_usage_errors(fake, run, args, option):
    err = failed(run("service", *args), 2)
    assert err.startswith("Usage: swarm service ")
    last = err.splitlines()[-1]
    assert option in last and last.startswith("Error: Invalid value for ")
    assert fake.calls == []


def test_refused_flags_say_why_in_one_sentence(fake, run):
    assert failed(run("service", "create", "--isolation", "hyperv", "alpine"), 2).splitlines()[-1] == (
        "Error: Invalid value for '--isolation': --isolation is only used on Windows and is not supported")
    assert failed(run("service", "update", "--generic-resource-rm", "gpu", "web"), 2).splitlines()[-1] == (
        "Error: Invalid value for '--generic-resource-rm': --generic-resource-rm is only used with plugins "
        "and is not supported")


@pytest.mark.parametrize("text, ports", [
    ("80", [(80, 0)]), ("8080:80", [(80, 8080)]), ("80-82", [(80, 0), (81, 0), (82, 0)]),
    ("8080-8081:80-81", [(80, 8080), (81, 8081)]), ("8080-8081:80", [(80, 8080), (80, 8081)]),
    (":81", [(81, 0)]),
])
def test_publish_ranges_as_nat_parse_port_spec(text, ports):
    assert [(p["target"], p["published"]) for p in endpoint_flags.parse_publish(text)] == ports


@pytest.mark.parametrize("lines, env", [
    (["A=1", "# c", "", "  B = x"], None),          # whitespace in a name is an error
    (["=1"], None),
    (["A=1", "  # indented comment", "A", "Z"], ["A=1", "A=from-env"]),
])
def test_env_lines(lines, env):
    lookup = {"A": "from-env"}.get
    if env is None:
        with pytest.raises(ValueError, match="line"):
            process_flags.parse_env_lines(lines, lookup)
    else:
        assert process_flags.parse_env_lines(lines, lookup) == env


def test_bool_flag_rewriting_stops_at_the_image():
    from swarm.cli.service_spec import rewrite_bool_flags
    assert rewrite_bool_flags(["--name", "--init=true", "--tty=false", "img", "--read-only=1"], {"--name"},
                              interspersed=False) == ["--name", "--init=true", "--no-tty", "img", "--read-only=1"]
    assert rewrite_bool_flags(["web", "--read-only=0", "--", "--tty=1"], set(), interspersed=True) == [
        "web", "--no-read-only", "--", "--tty=1"]


def test_log_opts_may_be_joined_by_commas_and_list_values_stay_whole(fake, run):
    assert ok(run("service", "create", "-d", "--name", "l", "--log-opt", "max-size=10m,max-file=3",
                  "--log-opt", "labels=com.a,com.b,env=X", "alpine"))
    assert fake.params("service.create")[0]["log_opts"] == {"max-size": "10m", "max-file": "3",
                                                             "labels": "com.a,com.b", "env": "X"}


# -- rolling updates, rollback and healthchecks (issue 13) -------------------------------------


def test_create_sends_every_update_rollback_and_health_flag(fake, run):
    assert ok(run("service", "create", "-d", "--name", "web", "--update-parallelism", "0", "--update-delay", "10s",
                  "--update-failure-action", "rollback", "--update-monitor", "1m", "--update-max-failure-ratio",
                  "0.25", "--update-order", "start-first", "--rollback-parallelism", "2", "--rollback-delay", "0",
                  "--rollback-failure-action", "continue", "--rollback-monitor", "500ms",
                  "--rollback-max-failure-ratio", "1", "--rollback-order", "stop-first", "--health-cmd",
                  "wget -q -O- localhost", "--health-interval", "2s", "--health-timeout", "1s", "--health-retries",
                  "0", "--health-start-period", "5s", "--health-start-interval", "100ms", "alpine"))
    params = fake.params("service.create")[0]
    assert params["update_config"] == {"parallelism": 0, "delay": 10.0, "failure_action": "rollback",
                                       "monitor": 60.0, "max_failure_ratio": 0.25, "order": "start-first"}
    assert params["rollback_config"] == {"parallelism": 2, "delay": 0.0, "failure_action": "continue",
                                         "monitor": 0.5, "max_failure_ratio": 1.0, "order": "stop-first"}
    assert params["healthcheck"] == {"test": ["CMD-SHELL", "wget -q -O- localhost"], "interval": 2.0,
                                     "timeout": 1.0, "retries": 0, "start_period": 5.0, "start_interval": 0.1}


def test_create_sends_only_the_rolling_flags_given(fake, run):
    assert ok(run("service", "create", "-d", "--name", "a", "alpine"))
    assert ok(run("service", "create", "-d", "--name", "b", "--update-delay", "1s", "--health-retries", "2",
                  "alpine"))
    assert ok(run("service", "create", "-d", "--name", "c", "--no-healthcheck", "alpine"))
    plain, some, none = fake.params("service.create")
    assert not {"update_config", "rollback_config", "healthcheck"} & set(plain)     # the daemon's defaults
    assert (some["update_config"], some["healthcheck"]) == ({"delay": 1.0}, {"retries": 2})
    assert "rollback_config" not in some
    assert none["healthcheck"] == {"test": ["NONE"]}


def test_update_sends_the_rolling_flags_given_force_and_rollback(fake, run):
    assert ok(run("service", "update", "-d", "--update-order", "start-first", "--rollback-monitor", "0s", "web"))
    assert ok(run("service", "update", "-d", "--health-cmd", "", "--health-interval", "3s", "web"))
    assert ok(run("service", "update", "-d", "--no-healthcheck", "--force", "web"))
    assert ok(run("service", "update", "-d", "--rollback", "web"))
    assert ok(run("service", "update", "-d", "--force", "web"))
    assert fake.params("service.update") == [
        {"ref": "web", "update_config": {"order": "start-first"}, "rollback_config": {"monitor": 0.0}},
        {"ref": "web", "healthcheck": {"test": [], "interval": 3.0}},     # "": the image's test again
        {"ref": "web", "healthcheck": {"test": ["NONE"]}, "force": True},
        {"ref": "web", "rollback": True},
        {"ref": "web", "force": True},
    ]


@pytest.mark.parametrize("args, option", [
    (["create", "--update-delay", "-1s", "alpine"], "'--update-delay': '-1s' is negative"),
    (["create", "--update-delay", "10", "alpine"], "'--update-delay': '10' is not a duration"),
    (["create", "--update-monitor", "soon", "alpine"], "'--update-monitor'"),
    (["create", "--rollback-delay", "-5m", "alpine"], "'--rollback-delay'"),
    (["create", "--update-parallelism", "-1", "alpine"], "'--update-parallelism'"),
    (["create", "--rollback-parallelism", "two", "alpine"], "'--rollback-parallelism'"),
    (["create", "--update-max-failure-ratio", "1.5", "alpine"], "'--update-max-failure-ratio': '1.5' is not from 0 to 1"),
    (["create", "--update-max-failure-ratio", "-0.1", "alpine"], "'--update-max-failure-ratio'"),
    (["create", "--rollback-max-failure-ratio", "nan", "alpine"], "'--rollback-max-failure-ratio'"),
    (["create", "--update-failure-action", "explode", "alpine"], "'--update-failure-action'"),
    (["create", "--rollback-failure-action", "rollback", "alpine"], "'--rollback-failure-action'"),
    (["create", "--update-order", "random", "alpine"], "'--update-order'"),
    (["create", "--rollback-order", "last-first", "alpine"], "'--rollback-order'"),
    (["create", "--health-interval", "-1s", "alpine"], "'--health-interval'"),
    (["create", "--health-timeout", "x", "alpine"], "'--health-timeout'"),
    (["create", "--health-retries", "-1", "alpine"], "'--health-retries'"),
    (["create", "--health-start-period", "-1s", "alpine"], "'--health-start-period'"),
    (["create", "--health-start-interval", "1", "alpine"], "'--health-start-interval'"),
    (["update", "--update-delay", "-1s", "web"], "'--update-delay'"),
    (["update", "--update-parallelism", "-2", "web"], "'--update-parallelism'"),
    (["update", "--rollback-max-failure-ratio", "2", "web"], "'--rollback-max-failure-ratio'"),
    (["update", "--update-failure-action", "stop", "web"], "'--update-failure-action'"),
])
def test_bad_rolling_values_are_usage_errors_naming_the_flag(fake, run, args, option):
    err = failed(run("service", *args), 2)
    last = err.splitlines()[-1]
    assert option in last and last.startswith("Error: Invalid value for "), last
    assert fake.calls == []


@pytest.mark.parametrize("args, sentence", [
    (["create", "--no-healthcheck", "--health-cmd", "true", "alpine"],
     "--no-healthcheck conflicts with --health-* options"),
    (["create", "--no-healthcheck", "--health-retries", "0", "alpine"],
     "--no-healthcheck conflicts with --health-* options"),
    (["update", "--no-healthcheck", "--health-interval", "1s", "web"],
     "--no-healthcheck conflicts with --health-* options"),
    (["update", "--rollback", "--image", "alpine:3", "web"], "other flags may not be combined with --rollback"),
    (["update", "--rollback", "--force", "web"], "other flags may not be combined with --rollback"),
    (["create", "--mode", "replicated-job", "--update-parallelism", "2", "alpine"],
     "update and rollback configuration is not supported for jobs"),
])
def test_conflicting_rolling_flags_are_one_sentence(fake, run, args, sentence):
    assert failed(run("service", *args), 2).splitlines()[-1] == f"Error: {sentence}"
    assert fake.calls == []


def test_rollback_command_detached_and_without_a_previous_spec(fake, run):
    assert ok(run("service", "rollback", "-d", "web")) == "web\n"
    assert fake.params("service.rollback") == [{"ref": "web"}]
    assert [m for m, _ in fake.calls] == ["service.rollback"]
    fake.answers["service.rollback"] = RPCError("bad_request", f"service {SID} does not have a previous spec")
    assert failed(run("service", "rollback", "-d", "web"), 1) == f"Error: service {SID} does not have a previous spec\n"


def ustatus(state: str, message: str = "", started: float = 1714557700.0) -> dict:
    return {"state": state, "started_at": started, "completed_at": 0.0, "message": message}


def versioned(tid: str, slot: int, state: str, version: int, desired: str = "running") -> dict:
    return {**task(tid, slot, state, desired), "spec_version": version}


def test_update_that_pauses_exits_1_with_the_reason(fake, run):
    reason = "update paused due to failure or early termination of task t1b"
    before = {**INSPECTED, "spec_version": 1, "update_status": ustatus("completed", "update completed", 1.0)}
    fake.answers["service.inspect"] = sequence(
        before,                                                  # before the update
        {**INSPECTED, "spec_version": 2, "update_status": ustatus("updating", "update in progress")},
        {**INSPECTED, "spec_version": 2, "update_status": ustatus("updating", "update in progress")},
        {**INSPECTED, "spec_version": 2, "update_status": ustatus("paused", reason)})
    fake.answers["service.inspect"] = (lambda answer: lambda p: [answer(p)])(fake.answers["service.inspect"])
    fake.answers["service.ps"] = [versioned("t1b", 1, "failed", 2, "shutdown"), versioned("t2", 2, "running", 1)]
    result = run("service", "update", "-q", "--image", "bad:1", "web")
    assert (result.exit_code, result.stdout) == (1, "web\n")
    assert result.stderr == f"Error: service update paused: {reason}\n"


def test_update_that_rolls_back_is_followed_then_exits_1(fake, run):
    reason = "update rolled back due to failure or early termination of task t1b"
    views = iter([
        {"update_status": None, "spec_version": 1},
        {"update_status": ustatus("updating", "update in progress"), "spec_version": 2},     # the Waiter's spec read
        {"update_status": ustatus("rollback_started", reason), "spec_version": 1},
        {"update_status": ustatus("rollback_completed", "rollback completed"), "spec_version": 1},
    ])
    last: list[dict] = []

    def inspect(params: dict) -> list:
        last[:] = [next(views, last[0] if last else None)]
        return [{**INSPECTED, "spec": {**INSPECTED["spec"], "replicas": 1}, **last[0]}]
    fake.answers["service.inspect"] = inspect
    fake.answers["service.ps"] = sequence([versioned("t1", 1, "running", 1)], [versioned("t1", 1, "running", 1)],
                                          [versioned("t1", 1, "running", 1)])
    result = run("service", "update", "--image", "bad:1", "web")
    assert result.exit_code == 1, result.output
    assert result.stdout == (
        "web\n"
        f"rollback: {reason}\n"
        "overall progress: rolling back update: 1 out of 1 tasks\n"
        f"1/1: running   {BAR['running']}\n"
        "verify: Service converged\n"
        "rollback: rollback completed\n")
    assert result.stderr == f"Error: service update rolled back: {reason}\n"


def test_rollback_command_follows_the_rollback_to_the_end(fake, run):
    views = iter([{"update_status": ustatus("completed", "update completed", 1.0), "spec_version": 2},
                  {"update_status": ustatus("rollback_started", "manually requested rollback"), "spec_version": 1},
                  {"update_status": ustatus("rollback_started", "manually requested rollback"), "spec_version": 1},
                  {"update_status": ustatus("rollback_completed", "rollback completed"), "spec_version": 1}])
    last: list[dict] = []

    def inspect(params: dict) -> list:
        last[:] = [next(views, last[0] if last else None)]
        return [{**INSPECTED, "spec": {**INSPECTED["spec"], "replicas": 1}, **last[0]}]
    fake.answers["service.inspect"] = inspect
    fake.answers["service.ps"] = sequence([versioned("t1", 1, "running", 2)],          # before
                                          [versioned("t1", 1, "running", 2)],
                                          [versioned("t0", 1, "running", 1)])
    assert ok(run("service", "rollback", "web")) == (
        "web\n"
        "rollback: manually requested rollback\n"
        "overall progress: rolling back update: 0 out of 1 tasks\n"
        f"1/1: running   {BAR['running']}\n"
        "overall progress: rolling back update: 1 out of 1 tasks\n"
        "verify: Service converged\n"
        "rollback: rollback completed\n")
    assert [m for m, _ in fake.calls][:3] == ["service.inspect", "service.ps", "service.rollback"]


def test_pretty_shows_the_update_status_configs_and_healthcheck(fake, run, monkeypatch):
    monkeypatch.setattr(cli_service.time, "time", lambda: 1714557760.0)
    service = {**INSPECTED,
               "update_status": {"state": "completed", "started_at": 1714557700.0, "completed_at": 1714557730.0,
                                 "message": "update completed"},
               "spec": {**INSPECTED["spec"], "constraints": [],
                        "update_config": {"parallelism": 2, "delay": 10.0, "failure_action": "rollback",
                                          "monitor": 5.0, "max_failure_ratio": 0.2, "order": "start-first"},
                        "rollback_config": {"parallelism": 1, "delay": 0.0, "failure_action": "pause",
                                            "monitor": 0.0, "max_failure_ratio": 0.0, "order": "stop-first"},
                        "container": {**INSPECTED["spec"]["container"], "mounts": [],
                                      "healthcheck": {"test": ["CMD-SHELL", "wget -q localhost"], "interval": 2.0,
                                                      "timeout": 0.0, "start_period": 0.0, "start_interval": 0.0,
                                                      "retries": 3}}}}
    fake.answers["service.inspect"] = [service]
    text = ok(run("service", "inspect", "--pretty", "web"))
    assert (
        "Updated at:           2024-05-01T10:01:00.500000000Z\n"
        "UpdateStatus:\n"
        " State:               completed\n"
        " Started:             About a minute ago\n"
        " Completed:           30 seconds ago\n"
        " Message:             update completed\n"
        "Placement:\n"
        "UpdateConfig:\n"
        " Parallelism:         2\n"
        " Delay:               10s\n"
        " On failure:          rollback\n"
        " Monitoring Period:   5s\n"
        " Max failure ratio:   0.2\n"
        " Update order:        start-first\n"
        "RollbackConfig:\n"
        " Parallelism:         1\n"
        " On failure:          pause\n"
        " Max failure ratio:   0\n"
        " Rollback order:      stop-first\n"
        "Restart Policy:\n") in text
    assert text.endswith(
        " Healthcheck:\n"
        "  Interval = 2s\n"
        "  Retries = 3\n"
        "  StartPeriod = 0s\n"
        "  Timeout = 0s\n"
        "  Tests:\n"
        "   Test = CMD-SHELL\n"
        "   Test = wget -q localhost\n")


def test_pretty_names_the_secrets_and_configs_by_target_and_source(fake, run):
    container = {**INSPECTED["spec"]["container"], "mounts": [],
                 "configs": [{"id": "c1", "name": "app_conf", "target": "/etc/app.conf", "uid": "0", "gid": "0",
                              "mode": 0o444}],
                 "secrets": [{"id": "s1", "name": "db_pw_v2", "target": "db_pw", "uid": "0", "gid": "0",
                              "mode": 0o400}]}
    fake.answers["service.inspect"] = [{**INSPECTED, "spec": {**INSPECTED["spec"], "container": container}}]
    text = ok(run("service", "inspect", "--pretty", "web"))
    assert ("Configs:\n"
            " Target:              /etc/app.conf\n"
            "  Source:             app_conf\n"
            "Secrets:\n"
            " Target:              db_pw\n"
            "  Source:             db_pw_v2\n") in text
    assert "s1" not in text.split("Secrets:")[1].split("\n")[1]

"""The chaos harness without a lab: seeded schedules, outcome classification, the nft
rules a partition writes (and where), the verdict table and report, and the CLI surface."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from chaos import cluster as clustermod
from chaos import report, runner, scenarios
from chaos.invariants import NAMES, Verdict
from chaos.linearizability import CAS, FAIL, OK, UNKNOWN, WRITE, Op
from chaos.workload import History, Workload, classify
from swarm.cli.main import swarm
from swarm.rpc.messages import RPCError

SHAPE = scenarios.Shape(["h1", "h2", "h3"], ["h4", "h5"], quick=False, duration=60)
QUICK = scenarios.Shape(["h1", "h2", "h3"], ["h4"], quick=True)


# -- scenarios ---------------------------------------------------------------------------------


def test_every_scenario_has_a_description_and_a_schedule():
    for s in scenarios.SCENARIOS.values():
        assert s.description and s.faults(1, SHAPE)


def test_a_seed_replays_the_same_schedule_and_another_seed_does_not():
    for s in scenarios.SCENARIOS.values():
        assert s.faults(42, SHAPE) == s.faults(42, SHAPE)
    leader_kill = scenarios.SCENARIOS["leader-kill"]
    assert leader_kill.faults(42, SHAPE) != leader_kill.faults(43, SHAPE)


def test_leader_kill_runs_at_least_ten_cycles_in_a_full_run_and_three_quick():
    faults = scenarios.SCENARIOS["leader-kill"].faults(0, SHAPE)
    assert len(faults) >= 10 and all(f.action == scenarios.KILL and f.target == "leader" for f in faults)
    assert len(scenarios.SCENARIOS["leader-kill"].faults(0, QUICK)) == 3
    longer = scenarios.Shape(SHAPE.managers, SHAPE.workers, duration=400)
    assert len(scenarios.SCENARIOS["leader-kill"].faults(0, longer)) == 50


def test_minority_kill_never_takes_a_majority_and_worker_kill_only_workers():
    for seed in range(20):
        for f in scenarios.SCENARIOS["manager-minority-kill"].faults(seed, SHAPE):
            victims = f.target.split(",")
            assert len(victims) == 1 and set(victims) <= set(SHAPE.managers)
        for f in scenarios.SCENARIOS["worker-kill"].faults(seed, SHAPE):
            assert f.target in SHAPE.workers and f.hold > 3.0  # beyond the 3 s heartbeat grace period
    five = scenarios.Shape(["h1", "h2", "h3", "h4", "h5"], [])
    assert all(len(f.target.split(",")) == 2 for f in scenarios.SCENARIOS["manager-minority-kill"].faults(1, five))


def test_partitions_and_pauses_outlast_the_election_timeout():
    for name in ("partition-leader", "partition-one-way", "pause-leader"):
        for f in scenarios.SCENARIOS[name].faults(7, SHAPE):
            assert f.hold > 1.0 and f.target == "leader"
    directions = {f.detail["direction"] for seed in range(10)
                  for f in scenarios.SCENARIOS["partition-one-way"].faults(seed, SHAPE)}
    assert directions == {"inbound", "outbound"}


def test_resolve_all_and_unknown_names():
    assert [s.name for s in scenarios.resolve(["all"])] == list(scenarios.SCENARIOS)
    assert [s.name for s in scenarios.resolve(["pause-leader", "pause-leader"])] == ["pause-leader"]
    with pytest.raises(KeyError):
        scenarios.resolve(["nope"])


# -- the workload's bookkeeping ---------------------------------------------------------------


def test_only_errors_that_prove_nothing_happened_are_failures():
    assert classify(RPCError("unavailable", "the swarm daemon is not running (no socket at /x)")) == FAIL
    assert classify(RPCError("bad_request", "label key empty")) == FAIL
    assert classify(RPCError("unavailable", "no commit within 5 s (no quorum?); the outcome is unknown")) == UNKNOWN
    assert classify(RPCError("deadline", "node.update got no answer within 7 s")) == UNKNOWN
    assert classify(RPCError("unavailable", "the swarm daemon at /x closed the connection without answering")) \
        == UNKNOWN


def test_history_counts_requests_not_register_operations():
    h = History()
    h.add(*(Op(1, "read", None, 0, 1, OK, k) for k in "abc"))
    h.add(outcome=UNKNOWN)
    h.add(Op(1, WRITE, "x", 0, 1, FAIL, "a"))
    assert h.counts() == {"ok": 1, "fail": 1, "unknown": 1}
    assert len(h.snapshot()) == 4


class RegisterNode:
    """The control API's node.update on one node record, with versions (the manager's side of a CAS)."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {"chaos.r0": "old"}
        self.version = 7

    def call(self, host, method, params, timeout):
        assert method == "node.update"
        if "version" in params and params["version"] != self.version:
            raise RPCError("conflict", "update out of sequence")
        self.labels.update(params.get("label_add") or {})
        self.version += 1
        return {"labels": dict(self.labels), "version": self.version}


def test_a_cas_is_recorded_with_the_value_its_read_saw_and_a_lost_race_is_a_failure():
    node = RegisterNode()
    w = Workload(node, "w1", History(), keys=1)
    assert w._cas(0, "h1", "chaos.r0", "c0.1")
    *reads, cas = w.history.snapshot()
    assert [r.value for r in reads] == ["old"] and (cas.kind, cas.value, cas.outcome) == (CAS, ("old", "c0.1"), OK)
    assert node.labels["chaos.r0"] == "c0.1"

    def racing_call(host, method, params, timeout):   # another client writes between the read and the CAS
        if "version" in params:
            node.version += 1
        return RegisterNode.call(node, host, method, params, timeout)

    node.call = racing_call
    assert w._cas(0, "h1", "chaos.r0", "c0.2")           # a lost race is no reason to change manager
    cas = w.history.snapshot()[-1]
    assert (cas.value, cas.outcome) == (("c0.1", "c0.2"), FAIL) and node.labels["chaos.r0"] == "c0.1"


# -- faults: what they do and where ----------------------------------------------------------


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    hosts = [{"name": f"h{i}", "index": i, "addr": f"10.201.0.{i}", "netns": f"swl-t-h{i}",
              "role": "manager" if i <= 3 else "worker", "state_dir": str(tmp_path / f"h{i}")} for i in range(1, 5)]
    c = clustermod.Cluster({"name": "t", "hosts": hosts})
    scripts = []
    monkeypatch.setattr(clustermod.labmod, "netns_names", lambda: [h["netns"] for h in hosts])
    monkeypatch.setattr(c, "nft", lambda host, script: scripts.append((c._netns(host), script)))
    monkeypatch.setattr(clustermod.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0))
    return c, scripts


def test_a_partition_is_an_nft_table_in_the_hosts_own_namespace(fake_cluster):
    c, scripts = fake_cluster
    c.drop("h1", ["h2", "h3"])
    netns, script = scripts[-1]
    assert netns == "swl-t-h1" and "table inet swarm_chaos" in script
    assert "ip saddr { 10.201.0.2, 10.201.0.3 } drop" in script
    assert "ip daddr { 10.201.0.2, 10.201.0.3 } drop" in script
    assert c.partitioned == {"h1"}
    c.heal_network("h1")
    assert c.partitioned == set()


def test_one_way_and_lossy_rules(fake_cluster):
    c, scripts = fake_cluster
    c.drop("h2", ["h1"], outbound=False)
    assert "hook input" in scripts[-1][1] and "hook output" not in scripts[-1][1]
    c.drop("h2", ["h1"], inbound=False, percent=30)
    assert "hook output" in scripts[-1][1] and "numgen random mod 100 < 30 drop" in scripts[-1][1]


def test_nft_refuses_a_namespace_that_is_not_the_labs(fake_cluster, monkeypatch):
    c, _ = fake_cluster
    c.hosts["h1"]["netns"] = "default"
    with pytest.raises(clustermod.ChaosError, match="refusing"):
        c._netns("h1")
    monkeypatch.setattr(clustermod.labmod, "netns_names", lambda: [])
    with pytest.raises(clustermod.ChaosError):
        c._netns("h2")  # a lab namespace that does not exist (any more)


def test_kill_and_pause_use_the_pid_file_and_track_what_should_be_alive(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = tmp_path / "h1"
        state.mkdir()
        (state / "swarm.pid").write_text(str(proc.pid))
        c = clustermod.Cluster({"name": "t", "hosts": [{"name": "h1", "addr": "10.201.0.1", "netns": "swl-t-h1",
                                                         "role": "manager", "state_dir": str(state)}]})
        c.adopt_all()
        assert c.expected == {"h1": proc.pid} and c.crashed() == {}
        assert c.pause("h1") == proc.pid and c.paused == {"h1"}
        c.resume("h1")
        assert c.paused == set()
        os.kill(proc.pid, signal.SIGTERM)  # not the suite's doing: a crash
        proc.wait()
        assert c.crashed() == {"h1": proc.pid}
        c.expected.clear()
        assert c.kill("h1") is None  # already gone
    finally:
        proc.kill()
        proc.wait()


def test_freeze_stops_the_process_in_a_freezer_cgroup_and_thaw_puts_it_back(tmp_path):
    # A real process and the real cgroup v1 freezer: a frozen process makes no progress.
    counter = tmp_path / "count"
    proc = subprocess.Popen([sys.executable, "-c", "import itertools, time\n"
                             f"for i in itertools.count():\n open({str(counter)!r}, 'w').write(str(i)); "
                             "time.sleep(0.01)"])
    state = tmp_path / "h1"
    state.mkdir()
    (state / "swarm.pid").write_text(str(proc.pid))
    c = clustermod.Cluster({"name": f"t{os.getpid()}", "hosts": [{"name": "h1", "addr": "10.201.0.1",
                                                                  "netns": "swl-t-h1", "role": "manager",
                                                                  "state_dir": str(state)}]})
    group = c.freezer_group("h1")
    try:
        deadline = time.monotonic() + 10
        while not (counter.exists() and counter.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        origin = clustermod._freezer_cgroup(proc.pid)
        assert c.freeze("h1") == proc.pid
        assert clustermod._freezer_cgroup(proc.pid) == "/" + os.path.basename(group)
        frozen_at = counter.read_text()
        time.sleep(0.3)
        assert counter.read_text() == frozen_at and clustermod.alive(proc.pid)
        assert c.heal_everything()[0] == "thawed h1"   # healing thaws, and removes the group
        assert not os.path.exists(group) and clustermod._freezer_cgroup(proc.pid) == origin
        time.sleep(0.3)
        assert counter.read_text() != frozen_at
    finally:
        if os.path.isdir(group):
            clustermod.Cluster.thaw(c, "h1")
        proc.kill()
        proc.wait()


# -- the verdict table and the report ---------------------------------------------------------


def result(name="leader-kill", verdicts=(), **kw):
    r = runner.Result(name, 7, "cx1", **kw)
    r.verdicts = list(verdicts)
    r.requests = {"ok": 10, "fail": 1, "unknown": 2}
    r.faults = [{"at": 1.0, "action": "kill -9", "host": "h1"}]
    return r


def test_table_shows_the_first_violation_with_its_evidence():
    good = result(verdicts=[Verdict(name, True) for name in NAMES], converge_seconds=1.25)
    bad = result("pause-leader", [Verdict("linearizable", False, "read -> 'a' returned 'a' but..."),
                                  Verdict("converged", False, "x")])
    text = report.table([good, bad])
    assert "all 5 held" in text and "1.2 s" in text
    assert "VIOLATED linearizable: read -> 'a'" in text and "(+1 more)" in text
    assert good.passed and not bad.passed
    assert "| leader-kill | 1 | 10 | 1 | 2 | all 5 held |" in report.markdown([good])
    attacked = result("poison-worker", [Verdict(f"v{i}", True) for i in range(11)])
    assert "all 11 held" in report.table([attacked])     # an attack scenario checks more invariants


def test_a_self_test_passes_only_when_the_lost_write_invariant_fires():
    caught = result("memory-journal-restart-all", [Verdict("no-lost-write", False, "register 'k' lost")], expect_violation=True)
    missed = result("memory-journal-restart-all", [Verdict("no-lost-write", True)], expect_violation=True)
    assert caught.passed and "caught as expected: no-lost-write: register" in report.verdict_text(caught)
    assert not missed.passed and "SELF-TEST FAILED" in report.verdict_text(missed)
    errored = result(error="the lab could not be built")
    assert not errored.passed and report.verdict_text(errored).startswith("ERROR")


def test_json_report(tmp_path):
    path = tmp_path / "r.json"
    report.write_json(str(path), [result(verdicts=[Verdict("linearizable", True, "ok")])], {"seed": 7})
    doc = json.loads(path.read_text())
    assert doc["seed"] == 7 and doc["passed"] is True
    assert doc["results"][0]["invariants"][0]["name"] == "linearizable"


# -- the command line -------------------------------------------------------------------------


def test_chaos_list():
    out = CliRunner().invoke(swarm, ["chaos", "list"])
    assert out.exit_code == 0
    for name in ("leader-kill", "worker-kill", "partition-leader", "pause-leader", "restart-all"):
        assert name in out.output
    doc = json.loads(CliRunner().invoke(swarm, ["chaos", "list", "--format", "json"]).output)
    assert {d["name"] for d in doc} == set(scenarios.SCENARIOS)


def test_chaos_run_refuses_bad_input_before_touching_anything():
    out = CliRunner().invoke(swarm, ["chaos", "run", "no-such"])
    assert out.exit_code == 2 and "no scenario named 'no-such'" in out.output
    out = CliRunner().invoke(swarm, ["chaos", "run", "leader-kill", "--nodes", "2", "--managers", "3"])
    assert out.exit_code == 2
    assert CliRunner().invoke(swarm, ["chaos", "run"]).exit_code == 2


def test_python_dash_m_chaos_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "chaos", "list"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0 and "leader-kill" in proc.stdout


def test_show_prints_a_saved_report_as_a_table_or_markdown(tmp_path):
    path = tmp_path / "r.json"
    bad = result("pause-leader", [Verdict("linearizable", False, "read -> 'a' returned 'a'")], converge_seconds=2.0)
    report.write_json(str(path), [result(verdicts=[Verdict("linearizable", True)]), bad],
                      {"seed": 9, "command": "swarm chaos run leader-kill pause-leader --seed 9"})
    out = CliRunner().invoke(swarm, ["chaos", "show", str(path)])
    assert out.exit_code == 0 and "Seed 9" in out.output and "VIOLATED linearizable" in out.output
    out = CliRunner().invoke(swarm, ["chaos", "show", str(path), "--format", "markdown"])
    assert "| pause-leader | 1 | 10 | 1 | 2 | VIOLATED linearizable: read -> 'a' returned 'a' | 2.0 s |" in out.output
    (tmp_path / "junk.json").write_text("{}")
    assert CliRunner().invoke(swarm, ["chaos", "show", str(tmp_path / "junk.json")]).exit_code == 2

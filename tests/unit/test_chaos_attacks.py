"""The attack scenarios without a lab: their seeded schedules, the payload catalogues, the
bookkeeping helpers of chaos/attacks.py, and every attack invariant on hand-made records."""
import math
import struct

import pytest

from chaos import attack_checks as ac
from chaos import attacks, payloads, scenarios
from chaos.attack_checks import MiB
from chaos.workload import Observation

SHAPE = scenarios.Shape(["h1", "h2", "h3"], ["h4", "h5"], quick=False, duration=60)
QUICK = scenarios.Shape(["h1", "h2", "h3"], ["h4"], quick=True)


# -- schedules ----------------------------------------------------------------------------------------


def test_each_attack_is_one_fault_whose_detail_a_seed_replays():
    for name in scenarios.ATTACKS:
        s = scenarios.SCENARIOS[name]
        assert s.attack and s.description
        (fault,) = s.faults(3, QUICK)
        assert fault.action == name and fault.hold > 0 and 1.0 <= fault.detail["canary_after"] <= 3.0
        assert s.faults(3, QUICK) == [fault]
    assert [scenarios.SCENARIOS[n].faults(3, SHAPE) != scenarios.SCENARIOS[n].faults(4, SHAPE)
            for n in scenarios.ATTACKS].count(True) >= 4


def test_all_runs_the_attacks_and_the_old_scenarios_are_untouched():
    names = [s.name for s in scenarios.resolve(["all"])]
    assert set(scenarios.ATTACKS) <= set(names)
    assert not any(scenarios.SCENARIOS[n].attack for n in ("leader-kill", "worker-kill", "restart-all"))


def test_poison_worker_sends_every_kind_to_a_worker_in_a_seeded_order():
    orders = set()
    for seed in range(5):
        (f,) = scenarios.SCENARIOS["poison-worker"].faults(seed, SHAPE)
        assert f.target in SHAPE.workers and sorted(f.detail["kinds"]) == sorted(payloads.POISON)
        orders.add(tuple(f.detail["kinds"]))
    assert len(orders) == 5


def test_big_service_is_400_replicas_on_a_full_run_and_a_few_hundred_quick_ending_at_zero():
    (full,) = scenarios.SCENARIOS["big-service"].faults(1, SHAPE)
    (quick,) = scenarios.SCENARIOS["big-service"].faults(1, QUICK)
    assert full.detail["steps"] == [400, 200, 0]
    assert 150 <= quick.detail["steps"][0] <= 300 and quick.detail["steps"][-1] == 0
    assert quick.hold < full.hold


def test_frame_flood_sends_2_to_4_mib_frames_from_more_addresses_than_one_admits():
    (f,) = scenarios.SCENARIOS["frame-flood"].faults(9, SHAPE)
    assert all(2 * MiB <= size <= 4 * MiB for size in f.detail["frame_sizes"])
    assert f.detail["per_address"] > 16      # swarm.rpc.limits admits 16 unauthenticated per address
    assert f.target in SHAPE.workers


def test_bad_names_tries_every_name_on_a_full_run_and_a_seeded_sample_quick():
    (full,) = scenarios.SCENARIOS["bad-names"].faults(2, SHAPE)
    assert sorted(full.detail["names"]) == sorted(payloads.ODD_NAMES)
    assert sorted(full.detail["labels"]) == sorted(payloads.ODD_LABELS)
    (quick,) = scenarios.SCENARIOS["bad-names"].faults(2, QUICK)
    assert len(quick.detail["names"]) == 10 and set(quick.detail["cli"]) <= set(quick.detail["names"])
    assert full.target in SHAPE.managers


def test_log_flood_follows_on_a_manager():
    for seed in range(5):
        (f,) = scenarios.SCENARIOS["log-flood"].faults(seed, SHAPE)
        assert f.detail["follow_on"] in SHAPE.managers and f.target in SHAPE.workers


# -- payloads -----------------------------------------------------------------------------------------


def test_poison_requests_aim_at_the_given_task_and_fit_in_a_frame():
    from raft.framing import DEFAULT_MAX_FRAME, encode_frame

    for kind in payloads.POISON:
        method, params = payloads.poison_request(kind, "t" * 25)
        assert method in ("tasks.status", "heartbeat")
        assert len(encode_frame({"id": 1, "method": method, "params": params, "deadline": 5}, DEFAULT_MAX_FRAME)) \
            < DEFAULT_MAX_FRAME
    _, params = payloads.poison_request("status-timestamp-not-a-time", "abc")
    assert params == {"updates": [{"id": "abc", "status": {"state": "failed", "timestamp": "not-a-time"}}]}
    assert math.isnan(payloads.poison_request("status-timestamp-nan", "a")[1]["updates"][0]["status"]["timestamp"])


def test_the_poison_kinds_are_all_refused_by_the_checks_the_manager_uses():
    # The same validators the leader runs (swarm.manager.dispatcher, swarm.api.model): every kind must fail them.
    from swarm.api import model
    from swarm.manager.dispatcher import parse_status_updates
    from swarm.api.errors import ApiError

    for kind in payloads.POISON:
        method, params = payloads.poison_request(kind, "t" * 25)
        with pytest.raises((ApiError, model.BadFacts)) as caught:
            if method == "tasks.status":
                parse_status_updates(params, 1000.0)
            else:
                model.node_facts(params)
        assert not isinstance(caught.value, ApiError) or caught.value.code == "bad_request", kind


def test_frames_announce_more_than_they_carry():
    half = payloads.half_frame(1 << 20, 100)
    assert struct.unpack(">I", half[:4])[0] == 1 << 20 and len(half) == 104
    assert payloads.big_frame_header(3 * MiB) == struct.pack(">I", 3 * MiB)


def test_odd_names_cover_the_kinds_the_brief_names():
    names = payloads.ODD_NAMES
    assert {"", ".", "..", "-rf"} <= set(names.values())
    assert any(len(n) >= 64 for n in names.values()) and any(not n.isascii() for n in names.values())
    assert any(c in n for n in names.values() for c in ";|$`")
    assert any(len(v) > MiB for labels in payloads.ODD_LABELS.values() for v in map(str, labels.values()))


# -- helpers of chaos/attacks.py ----------------------------------------------------------------------


def row(slot, state="running", desired="running", node="n1", tid=None):
    return {"id": tid or f"t{slot}{state}", "slot": slot, "state": state, "desired_state": desired, "node_id": node}


def test_slot_counts_counts_assigned_slots_running_slots_and_anything_running():
    rows = [row(1), row(2, "assigned"), row(3, "pending", node=""), row(4), row(4, tid="dup"),
            row(5, "running", desired="shutdown")]
    assert attacks.slot_counts(rows, 4) == (3, 1, 4)
    assert attacks.slot_counts([], 0) == (0, 0, 0)


def test_attacker_addresses_stay_in_the_hosts_subnet_above_the_lab_hosts():
    assert attacks.attacker_addresses("10.203.0.4", 3) == ["10.203.0.100", "10.203.0.101", "10.203.0.102"]


def test_log_files_lists_only_the_task_logs(tmp_path):
    (tmp_path / "container.log").write_bytes(b"x" * 10)
    (tmp_path / "container.log.1").write_bytes(b"x" * 20)
    (tmp_path / "shim.log").write_bytes(b"x")
    assert attacks.log_files(str(tmp_path)) == {"container.log": 10, "container.log.1": 20}


# -- the attack invariants ----------------------------------------------------------------------------


def test_vm_rss_reads_kilobytes_and_none_for_a_zombie():
    assert ac.vm_rss("Name:\tpython\nVmRSS:\t  123456 kB\nThreads: 3\n") == 123456 * 1024
    assert ac.vm_rss("Name:\tpython\nState:\tZ (zombie)\n") is None


def test_memory_bounded_names_the_daemon_over_the_bound_and_reports_the_peak():
    ok = ac.memory_bounded({"h1": {"peak": 90 * MiB, "at": 3.0, "samples": 10},
                            "h2": {"peak": 120 * MiB, "at": 4.0, "samples": 10}})
    assert ok.held and "peak 120 MiB" in ok.evidence and "(h2)" in ok.evidence
    bad = ac.memory_bounded({"h1": {"peak": 500 * MiB, "at": 7.5, "samples": 3}}, bound=400 * MiB)
    assert not bad.held and "h1 held 500 MiB" in bad.evidence and "7.5 s" in bad.evidence
    assert not ac.memory_bounded({}).held


def test_daemon_logs_clean_quotes_the_traceback_and_its_exception():
    text = ("INFO fine\nERROR task crashed\nTraceback (most recent call last):\n  File \"a.py\", line 1, in f\n"
            "    g()\n  File \"b.py\", line 9, in g\n    ^^^^\nValueError: bad\nINFO later\n")
    assert ac.log_problems(text) == ['ERROR task crashed | Traceback (most recent call last): | '
                                     'File "b.py", line 9, in g | ValueError: bad']
    v = ac.daemon_logs_clean({"h1": "all good\n", "h2": text})
    assert not v.held and v.evidence.startswith("the log of h2's daemon has 1 crash mark") and "ValueError" in v.evidence
    assert not ac.daemon_logs_clean({"h3": "RuntimeError: Nursery stack corrupted\n"}).held
    assert ac.daemon_logs_clean({"h1": "ok\n"}).held


def obs(at, host, term, leader="h1"):
    return Observation(at, host, term, leader)


def test_terms_between_starts_from_the_term_in_force_and_counts_changes_inside():
    history = [obs(0.5, "h1", 3), obs(1.5, "h2", 3), obs(2.0, "h1", 4), obs(2.5, "h3", 5), obs(9.0, "h1", 9)]
    assert ac.terms_between(history, 1.0, 3.0) == [3, 4, 5]
    assert ac.no_election_storm(history, 1.0, 3.0, limit=2).held
    storm = ac.no_election_storm(history, 1.0, 3.0, limit=1)
    assert not storm.held and "2 new Raft terms" in storm.evidence and storm.details["terms"] == [3, 4, 5]
    assert not ac.no_election_storm([], 0, 1).held


def test_nodes_ready_names_the_first_node_seen_down():
    samples = [{"at": 1.0, "nodes": {"h1": "ready", "h4": "ready"}}, {"at": 1.5, "nodes": {"h1": "ready", "h4": "down"}}]
    v = ac.nodes_ready(samples)
    assert not v.held and v.evidence == "at 1.5 s node h4 was down"
    assert ac.nodes_ready(samples[:1]).held and not ac.nodes_ready([]).held


def test_canary_converged_needs_every_step_within_the_bound():
    good = {"service": "c1", "steps": [{"replicas": 2, "seconds": 1.5}, {"replicas": 3, "seconds": 0.8}]}
    assert ac.canary_converged(good, 30).held
    slow = {"service": "c1", "steps": [{"replicas": 2, "seconds": None, "running": 1, "error": ""}]}
    v = ac.canary_converged(slow, 30)
    assert not v.held and "did not reach 2 running replicas within 30 s: 1 of 2 running" in v.evidence
    assert not ac.canary_converged({"service": "c1", "steps": [], "error": "service create failed"}, 30).held


def test_poison_refused_names_the_first_kind_answered_otherwise():
    ok = {"sent": {"a": 3, "b": 3}, "refused": {"a": 3, "b": 3}, "other": {}}
    assert ac.poison_refused(ok).held
    bad = {"sent": {"a": 3, "b": 3}, "refused": {"a": 3, "b": 1}, "other": {"b": ["ok: {'applied': 1}"]}}
    v = ac.poison_refused(bad)
    assert not v.held and v.evidence == "b: 2 of 3 not refused as bad_request; the first answer: ok: {'applied': 1}"
    assert not ac.poison_refused({"sent": {}, "refused": {}, "other": {}}).held


def big(**over):
    out = {"steps": [{"replicas": 200, "assigned_seconds": 4.0, "running_seconds": 30.0, "assigned": 200,
                      "running": 200, "error": ""},
                     {"replicas": 0, "assigned_seconds": 0.0, "running_seconds": 9.0, "assigned": 0, "running": 0,
                      "error": ""}], "removed_seconds": 3.0, "containers_left": 0, "load_peak": 7.5}
    out.update(over)
    return out


def test_big_service_converged_checks_assignment_scale_to_zero_and_removal():
    v = ac.big_service_converged(big(), 60)
    assert v.held and "200 tasks assigned in 4.0 s, all running in 30.0 s" in v.evidence and "7.5" in v.evidence
    unassigned = big()
    unassigned["steps"][0].update(assigned_seconds=None, assigned=150)
    assert "not every one of 200 tasks was assigned within 60 s (150 were)" in \
        ac.big_service_converged(unassigned, 60).evidence
    stuck = big()
    stuck["steps"][1].update(running_seconds=None, running=12)
    assert "scaled to 0, 12 tasks still ran" in ac.big_service_converged(stuck, 60).evidence
    left = ac.big_service_converged(big(removed_seconds=None, containers_left=7), 60)
    assert not left.held and left.evidence.startswith("7 containers of the removed service")


def flood(samples, follow=None):
    return {"max_size": 20 * MiB, "max_file": 5, "samples": samples,
            "follow": follow if follow is not None else {"bytes": 5 * MiB, "running_at_end": True}}


def test_task_logs_bounded_catches_a_file_past_max_size_and_too_many_files():
    fine = [{"at": 1.0, "files": {"container.log": 19 * MiB, "container.log.1": 20 * MiB}}]
    assert ac.task_logs_bounded(flood(fine)).held
    grown = [{"at": 4.0, "files": {"container.log": 45 * MiB}}]
    v = ac.task_logs_bounded(flood(grown))
    assert not v.held and "container.log held 45.0 MiB, over max-size 20 MiB: no rotation" in v.evidence
    many = [{"at": 2.0, "files": {f"container.log.{i}": MiB for i in range(7)}}]
    assert "7 log files, more than max-file 5" in ac.task_logs_bounded(flood(many)).evidence
    stopped = ac.task_logs_bounded(flood(fine, {"bytes": 10, "running_at_end": False, "stderr": "Error: gone"}))
    assert not stopped.held and "stopped during the flood: Error: gone" in stopped.evidence
    assert not ac.task_logs_bounded(flood([])).held


def test_kept_serving_fails_on_an_error_or_a_slow_answer():
    probes = [{"at": 1.0, "via": "swarm node ls on h1", "ok": True, "seconds": 0.4, "error": ""},
              {"at": 2.0, "via": "control.node.ls over TLS to h2", "ok": True, "seconds": 7.0, "error": ""}]
    v = ac.kept_serving(probes, deadline=5)
    assert not v.held and "took 7.0 s" in v.evidence
    assert ac.kept_serving(probes[:1]).held
    assert "failed: boom" in ac.kept_serving([dict(probes[0], ok=False, error="boom")]).evidence
    assert not ac.kept_serving([]).held


def test_one_sentence_accepts_one_error_line_even_after_clicks_usage():
    assert ac.one_sentence("Error: invalid service name '..': a name starts with a letter.\n")
    assert ac.one_sentence("invalid network name ''")
    assert ac.one_sentence("Usage: swarm network create [OPTIONS] NAME\nTry 'swarm network create --help' for help."
                           "\n\nError: Invalid value for 'NAME': invalid network name '..'\n")
    assert not ac.one_sentence("Error: one\nError: two\n")
    assert not ac.one_sentence("Usage: x\nsomething else\nError: one\n")
    assert not ac.one_sentence("Traceback (most recent call last):\n  File x\nKeyError: 'name'\n")
    assert not ac.one_sentence("x" * 700)
    assert not ac.one_sentence("")


def test_names_harmless_judges_refusals_and_accepted_names():
    refused = {"what": "service via CLI", "kind": "dotdot", "name": "..", "refused": True, "exit": 1,
               "message": "Error: invalid service name '..'.\n"}
    accepted = {"what": "network via API", "kind": "unicode", "name": "café", "refused": False, "listed": True,
                "removed": True}
    v = ac.names_harmless([refused, accepted])
    assert v.held and v.details["accepted"] == ["network via API unicode"]
    crash = dict(refused, message="Traceback (most recent call last):\n  File x\nKeyError: 'x'\n")
    assert "without one readable sentence" in ac.names_harmless([crash]).evidence
    internal = {"what": "service via API", "kind": "len-300", "name": "n" * 300, "refused": True,
                "code": "internal", "message": "boom"}
    assert "refused with code 'internal'" in ac.names_harmless([internal]).evidence
    stuck = dict(accepted, removed=False, remove_error="conflict: in use")
    assert "could not be removed: conflict: in use" in ac.names_harmless([stuck]).evidence
    assert "not listed" in ac.names_harmless([dict(accepted, listed=False)]).evidence
    assert not ac.names_harmless([]).held


def test_dns_answers_needs_every_lookup_answered():
    assert ac.dns_answers([{"at": 1.0, "ok": True, "answer": ["10.0.1.2"]}]).held
    v = ac.dns_answers([{"at": 1.0, "ok": True, "answer": ["10.0.1.2"]}, {"at": 3.0, "ok": False, "error": "NXDOMAIN"}])
    assert not v.held and "at 3.0 s the canary's name did not resolve: NXDOMAIN" in v.evidence


def test_attack_verdicts_judge_only_what_happened_during_the_attack():
    outcome = {"since": 10.0, "until": 20.0, "canary": {"service": "c", "steps": [{"replicas": 2, "seconds": 1.0}]},
               "attack": {"sent": {"a": 1}, "refused": {"a": 1}, "other": {}}}
    nodes = [{"at": 5.0, "nodes": {"h4": "down"}}, {"at": 12.0, "nodes": {"h4": "ready"}}]
    verdicts = ac.attack_verdicts("poison-worker", outcome, [obs(11.0, "h1", 2)], nodes,
                                  {"h1": {"peak": MiB, "at": 1.0, "samples": 1}}, {"h1": ""}, 30)
    assert [v.name for v in verdicts] == [ac.CANARY, ac.MEMORY, ac.LOGS_CLEAN, ac.NO_STORM, ac.NODES_READY,
                                          ac.POISON_REFUSED]
    assert all(v.held for v in verdicts), [v for v in verdicts if not v.held]

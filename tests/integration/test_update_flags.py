"""The rolling-update, rollback and healthcheck flags through a real daemon: create with every
one of them and `service inspect` shows them (--pretty as docker's blocks), an update changes
only the fields given, bad input is refused in one sentence with nothing created or changed,
and `service rollback` returns to the previous spec (or says there is none)."""
from __future__ import annotations

import pytest


EVERY_FLAG = ("--update-parallelism", "2", "--update-delay", "10s", "--update-failure-action", "rollback",
              "--update-monitor", "1m", "--update-max-failure-ratio", "0.25", "--update-order", "start-first",
              "--rollback-parallelism", "0", "--rollback-delay", "1s", "--rollback-failure-action", "continue",
              "--rollback-monitor", "500ms", "--rollback-max-failure-ratio", "1", "--rollback-order", "stop-first",
              "--health-cmd", "test -e /bin/sh", "--health-interval", "2s", "--health-timeout", "1s",
              "--health-retries", "4", "--health-start-period", "3s", "--health-start-interval", "100ms")


@pytest.fixture
def node(image_node):
    return image_node


def inspect(swarm, m1, name):
    return swarm.json(m1, "service", "inspect", name)[0]


def test_create_with_every_flag_then_update_only_what_is_given(swarm, node):
    swarm.run(node, "service", "create", "--detach", "--name", "roll", "--replicas", "0", *EVERY_FLAG, "demo:1")
    record = inspect(swarm, node, "roll")
    spec = record["spec"]
    assert spec["update_config"] == {"parallelism": 2, "delay": 10.0, "failure_action": "rollback", "monitor": 60.0,
                                     "max_failure_ratio": 0.25, "order": "start-first"}
    assert spec["rollback_config"] == {"parallelism": 0, "delay": 1.0, "failure_action": "continue",
                                       "monitor": 0.5, "max_failure_ratio": 1.0, "order": "stop-first"}
    assert spec["container"]["healthcheck"] == {"test": ["CMD-SHELL", "test -e /bin/sh"], "interval": 2.0,
                                                "timeout": 1.0, "start_period": 3.0, "start_interval": 0.1,
                                                "retries": 4}
    assert record["previous_spec"] is None
    pretty = swarm.run(node, "service", "inspect", "--pretty", "roll").stdout
    assert ("UpdateConfig:\n Parallelism:         2\n Delay:               10s\n On failure:          rollback\n"
            " Monitoring Period:   1m0s\n Max failure ratio:   0.25\n Update order:        start-first\n"
            "RollbackConfig:\n Parallelism:         0\n Delay:               1s\n On failure:          continue\n"
            " Monitoring Period:   500ms\n Max failure ratio:   1\n Rollback order:      stop-first\n") in pretty
    assert pretty.endswith(" Healthcheck:\n  Interval = 2s\n  Retries = 4\n  StartPeriod = 3s\n  Timeout = 1s\n"
                           "  StartInterval = 100ms\n  Tests:\n   Test = CMD-SHELL\n   Test = test -e /bin/sh\n")

    swarm.run(node, "service", "update", "--detach", "--update-delay", "0s", "--rollback-order", "start-first",
              "--health-retries", "0", "roll")
    after = inspect(swarm, node, "roll")["spec"]
    assert after["update_config"] == {**spec["update_config"], "delay": 0.0}
    assert after["rollback_config"] == {**spec["rollback_config"], "order": "start-first"}
    assert after["container"]["healthcheck"] == {**spec["container"]["healthcheck"], "retries": 0}

    # --no-healthcheck replaces the whole; a --health-* flag afterwards brings the image's test back
    swarm.run(node, "service", "update", "--detach", "--no-healthcheck", "roll")
    assert inspect(swarm, node, "roll")["spec"]["container"]["healthcheck"] == {
        "test": ["NONE"], "interval": 0.0, "timeout": 0.0, "start_period": 0.0, "start_interval": 0.0, "retries": 0}
    swarm.run(node, "service", "update", "--detach", "--health-interval", "5s", "roll")
    assert inspect(swarm, node, "roll")["spec"]["container"]["healthcheck"] == {
        "test": [], "interval": 5.0, "timeout": 0.0, "start_period": 0.0, "start_interval": 0.0, "retries": 0}


BAD = [
    (["--update-delay", "-1s"], 2, "Invalid value for '--update-delay': '-1s' is negative"),
    (["--update-monitor", "5"], 2, "Invalid value for '--update-monitor': '5' is not a duration"),
    (["--rollback-delay", "soon"], 2, "Invalid value for '--rollback-delay'"),
    (["--update-parallelism", "-1"], 2, "Invalid value for '--update-parallelism'"),
    (["--update-max-failure-ratio", "1.5"], 2, "Invalid value for '--update-max-failure-ratio': '1.5' is not from 0"),
    (["--rollback-max-failure-ratio", "-0.5"], 2, "Invalid value for '--rollback-max-failure-ratio'"),
    (["--update-failure-action", "explode"], 2, "Invalid value for '--update-failure-action'"),
    (["--rollback-failure-action", "rollback"], 2, "Invalid value for '--rollback-failure-action'"),
    (["--update-order", "random"], 2, "Invalid value for '--update-order'"),
    (["--health-retries", "-1"], 2, "Invalid value for '--health-retries'"),
    (["--health-interval", "-1s"], 2, "Invalid value for '--health-interval'"),
    (["--health-timeout", "100us"], 1, "invalid --health-timeout: it cannot be less than 1ms"),
    (["--no-healthcheck", "--health-cmd", "true"], 2, "--no-healthcheck conflicts with --health-* options"),
]


@pytest.mark.parametrize("args, code, sentence", BAD)
def test_bad_input_is_one_sentence_and_changes_nothing(swarm, node, args, code, sentence):
    proc = swarm.run(node, "service", "create", "--detach", "--name", "bad", *args, "demo:1", check=False)
    assert proc.returncode == code, proc.stderr
    assert sentence in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr
    assert swarm.json(node, "service", "ls") == []

    swarm.run(node, "service", "create", "--detach", "--name", "keep", "--replicas", "0", "demo:1")
    before = inspect(swarm, node, "keep")
    proc = swarm.run(node, "service", "update", "--detach", *args, "keep", check=False)
    assert proc.returncode == code, proc.stderr
    assert sentence in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr
    after = inspect(swarm, node, "keep")
    assert (after["spec"], after["spec_version"], after["updated_at"]) == (
        before["spec"], before["spec_version"], before["updated_at"])


def test_rollback_returns_to_the_previous_spec_or_says_there_is_none(swarm, node):
    swarm.run(node, "service", "create", "--detach", "--name", "back", "--replicas", "0", "-e", "V=1", "demo:1")
    service_id = inspect(swarm, node, "back")["id"]
    proc = swarm.run(node, "service", "rollback", "back", check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"Error: service {service_id} does not have a previous spec\n"
    proc = swarm.run(node, "service", "update", "--rollback", "-d", "back", check=False)
    assert proc.returncode == 1 and proc.stderr.endswith("does not have a previous spec\n")
    assert inspect(swarm, node, "back")["spec"]["container"]["env"] == ["V=1"]

    swarm.run(node, "service", "update", "--detach", "--env-add", "V=2", "back")
    record = inspect(swarm, node, "back")
    assert record["spec"]["container"]["env"] == ["V=2"]
    assert record["previous_spec"]["container"]["env"] == ["V=1"]
    assert swarm.run(node, "service", "rollback", "--detach", "back").stdout == "back\n"
    record = inspect(swarm, node, "back")
    assert record["spec"]["container"]["env"] == ["V=1"] and record["previous_spec"]["container"]["env"] == ["V=2"]
    assert record["update_status"]["state"] in ("rollback_started", "rollback_completed")
    # docker's: other flags may not be combined with --rollback
    proc = swarm.run(node, "service", "update", "--rollback", "--env-add", "V=3", "back", check=False)
    assert proc.returncode == 2 and proc.stderr.endswith("Error: other flags may not be combined with --rollback\n")
    # a second rollback swaps back
    swarm.run(node, "service", "update", "--rollback", "--detach", "back")
    assert inspect(swarm, node, "back")["spec"]["container"]["env"] == ["V=2"]


def test_update_and_rollback_follow_the_tasks_to_the_end(swarm, node):
    swarm.run(node, "service", "create", "--name", "live", "--replicas", "2", "--update-parallelism", "1",
              "-e", "V=1", "demo:1", "sleep", "1000")
    proc = swarm.run(node, "service", "update", "--env-add", "V=2", "live", timeout=120)
    assert proc.stdout.startswith("live\n") and proc.stdout.endswith("verify: Service converged\n")
    record = inspect(swarm, node, "live")
    assert record["update_status"]["state"] == "completed"
    tasks = [t for t in swarm.json(node, "service", "ps", "live") if t["desired_state"] == "running"]
    assert len(tasks) == 2 and {t["spec_version"] for t in tasks} == {record["spec_version"]}
    proc = swarm.run(node, "service", "rollback", "live", timeout=120)
    assert proc.stdout.startswith("live\nrollback: manually requested rollback\n")
    assert proc.stdout.endswith("verify: Service converged\nrollback: rollback completed\n")
    record = inspect(swarm, node, "live")
    assert record["update_status"]["state"] == "rollback_completed"
    assert record["spec"]["container"]["env"] == ["V=1"]

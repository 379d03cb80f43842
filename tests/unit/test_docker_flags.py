"""Every flag of docker's `service create --help` and `service update --help` is one of
`swarm service create/update --help`, with the same short form, except those listed below with
the reason (refused on Linux, or the business of a later issue).

The docker CLI is on this project's machines and in CI (/usr/local/bin/docker): its help is read.
Where it is absent, the lists of Docker 28.2 kept here stand in for it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from swarm.cli import main as cli

# docker 28.2.2's flags (`docker service create --help`), for machines without docker.
DOCKER_CREATE = (
    "--cap-add --cap-drop --config --constraint --container-label --credential-spec -d --detach --dns --dns-option "
    "--dns-search --endpoint-mode --entrypoint -e --env --env-file --generic-resource --group --health-cmd "
    "--health-interval --health-retries --health-start-interval --health-start-period --health-timeout --host "
    "--hostname --init --isolation -l --label --limit-cpu --limit-memory --limit-pids --log-driver --log-opt "
    "--max-concurrent --mode --mount --name --network --no-healthcheck --no-resolve-image --oom-score-adj "
    "--placement-pref -p --publish -q --quiet --read-only --replicas --replicas-max-per-node --reserve-cpu "
    "--reserve-memory --restart-condition --restart-delay --restart-max-attempts --restart-window "
    "--rollback-delay --rollback-failure-action --rollback-max-failure-ratio --rollback-monitor --rollback-order "
    "--rollback-parallelism --secret --stop-grace-period --stop-signal --sysctl -t --tty --ulimit --update-delay "
    "--update-failure-action --update-max-failure-ratio --update-monitor --update-order --update-parallelism "
    "-u --user --with-registry-auth -w --workdir").split()
DOCKER_UPDATE = (
    "--args --cap-add --cap-drop --config-add --config-rm --constraint-add --constraint-rm --container-label-add "
    "--container-label-rm --credential-spec -d --detach --dns-add --dns-option-add --dns-option-rm --dns-rm "
    "--dns-search-add --dns-search-rm --endpoint-mode --entrypoint --env-add --env-rm --force "
    "--generic-resource-add --generic-resource-rm --group-add --group-rm --health-cmd --health-interval "
    "--health-retries --health-start-interval --health-start-period --health-timeout --host-add --host-rm "
    "--hostname --image --init --isolation --label-add --label-rm --limit-cpu --limit-memory --limit-pids "
    "--log-driver --log-opt --max-concurrent --mount-add --mount-rm --network-add --network-rm --no-healthcheck "
    "--no-resolve-image --oom-score-adj --placement-pref-add --placement-pref-rm --publish-add --publish-rm -q "
    "--quiet --read-only --replicas --replicas-max-per-node --reserve-cpu --reserve-memory --restart-condition "
    "--restart-delay --restart-max-attempts --restart-window --rollback --rollback-delay --rollback-failure-action "
    "--rollback-max-failure-ratio --rollback-monitor --rollback-order --rollback-parallelism --secret-add "
    "--secret-rm --stop-grace-period --stop-signal --sysctl-add --sysctl-rm -t --tty --ulimit-add --ulimit-rm "
    "--update-delay --update-failure-action --update-max-failure-ratio --update-monitor --update-order "
    "--update-parallelism -u --user --with-registry-auth -w --workdir").split()

LATER: dict[str, str] = {}    # flag -> the issue that brings it (none left: issue 15 brought --secret/--config)
# Refused with one sentence: their flag exists, so they are in our help too (checked below).
REFUSED = {"--credential-spec": "Windows only", "--isolation": "Windows only",
           "--generic-resource": "plugins only", "--generic-resource-add": "plugins only",
           "--generic-resource-rm": "plugins only"}

# An option line of a help text: "  -d, --detach ..." or "      --cap-add list ..."; the
# continuation lines of a description are indented further.
_OPTION = re.compile(r"^ {2,6}(?:(-[A-Za-z]), )?\s*(--[a-z][a-z-]*)", re.MULTILINE)


def help_flags(text: str) -> dict[str, str | None]:
    """--long -> its short form (or None), from a help text (docker's or click's)."""
    return {long: short or None for short, long in _OPTION.findall(text)}


def find_docker() -> str | None:
    return shutil.which("docker") or ("/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else None)


def docker_flags(command: str, kept: list[str], docker: str | None) -> dict[str, str | None]:
    """docker's own help where docker is installed, else the kept list."""
    if docker is None:
        flags: dict[str, str | None] = {}
        for i, flag in enumerate(kept):
            if flag.startswith("--"):
                flags[flag] = kept[i - 1] if i and not kept[i - 1].startswith("--") else None
        return flags
    out = subprocess.run([docker, "service", command, "--help"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return help_flags(out)


def swarm_flags(command: str) -> dict[str, str | None]:
    result = CliRunner().invoke(cli.swarm, ["service", command, "--help"])
    assert result.exit_code == 0, result.output
    flags = help_flags(result.output)
    # click prints "--init / --no-init" for a flag with an off switch; the --no- twins are ours only.
    return flags


@pytest.mark.parametrize("command, kept", [("create", DOCKER_CREATE), ("update", DOCKER_UPDATE)])
def test_every_docker_flag_is_ours(command, kept):
    docker, ours = docker_flags(command, kept, find_docker()), swarm_flags(command)
    assert len(docker) > 60, "docker's help was not read"
    missing = {flag: short for flag, short in docker.items() if flag not in ours and flag not in LATER}
    assert missing == {}, f"docker flags `swarm service {command}` lacks"
    shorts = {flag: (short, ours[flag]) for flag, short in docker.items() if flag in ours and short != ours[flag]}
    assert shorts == {}, "short forms that differ from docker's"
    assert {flag for flag in REFUSED if flag in docker} <= set(ours)


def test_the_flags_left_to_later_issues_are_really_missing():
    # When one of them lands, it leaves this list (and root.py's Docker-only list).
    for command in ("create", "update"):
        assert not set(LATER) & set(swarm_flags(command))


def test_the_secret_and_config_flags_are_ours():
    # issue 15: secrets and configs, given on create and added or removed on update
    assert {"--secret", "--config"} <= set(swarm_flags("create"))
    assert {"--secret-add", "--secret-rm", "--config-add", "--config-rm"} <= set(swarm_flags("update"))


def test_the_registry_flags_are_ours():
    # issue 14: image digests resolved on the manager, credentials sent to the agents
    for command in ("create", "update"):
        assert {"--no-resolve-image", "--with-registry-auth"} <= set(swarm_flags(command))


def test_the_rolling_update_flags_are_ours():
    # issue 13: every update, rollback and healthcheck flag, on create and update; --force and --rollback on update
    rolling = {f"--{kind}-{what}" for kind in ("update", "rollback")
               for what in ("delay", "failure-action", "max-failure-ratio", "monitor", "order", "parallelism")}
    rolling |= {f"--health-{what}" for what in ("cmd", "interval", "retries", "start-interval", "start-period",
                                                 "timeout")} | {"--no-healthcheck"}
    assert rolling <= set(swarm_flags("create"))
    assert rolling | {"--force", "--rollback"} <= set(swarm_flags("update"))
    result = CliRunner().invoke(cli.swarm, ["service", "rollback", "--help"])
    assert result.exit_code == 0 and {"--detach", "--quiet", "--timeout"} <= set(help_flags(result.output))


def test_the_kept_lists_read_as_docker_s_help():
    # Without docker the kept lists stand in: they give the same flags and short forms.
    for command, kept in (("create", DOCKER_CREATE), ("update", DOCKER_UPDATE)):
        flags = docker_flags(command, kept, None)
        assert flags["--detach"] == "-d" and flags["--cap-add"] is None and len(flags) > 60
        if find_docker():
            assert flags == docker_flags(command, kept, find_docker())

"""Container option validators: capabilities, sysctls, ulimits, signals (Docker's rules)."""
from __future__ import annotations

import pytest

from swarm.api.options import (ALL_CAPABILITIES, DEFAULT_CAPABILITIES, check_sysctl, check_ulimit,
                               effective_capabilities, normalize_capability, parse_signal, parse_ulimit)
from swarm.api.spec import Ulimit


def test_the_kernel_has_41_capabilities_in_bit_order() -> None:
    assert len(ALL_CAPABILITIES) == 41 == len(set(ALL_CAPABILITIES))
    assert ALL_CAPABILITIES[0] == "CAP_CHOWN"
    assert ALL_CAPABILITIES[21] == "CAP_SYS_ADMIN"
    assert ALL_CAPABILITIES[40] == "CAP_CHECKPOINT_RESTORE"
    assert set(DEFAULT_CAPABILITIES) <= set(ALL_CAPABILITIES) and len(DEFAULT_CAPABILITIES) == 14


@pytest.mark.parametrize("text", ["net_admin", "NET_ADMIN", "CAP_NET_ADMIN", "cap_net_admin", " Net_Admin "])
def test_capability_names_in_any_case_with_or_without_prefix(text: str) -> None:
    assert normalize_capability(text) == "CAP_NET_ADMIN"


def test_all_is_kept_and_unknown_is_refused() -> None:
    assert normalize_capability("all") == "ALL"
    with pytest.raises(ValueError, match="unknown capability 'net_admn'"):
        normalize_capability("net_admn")
    with pytest.raises(ValueError, match="unknown capability 'CAP_ALL'"):
        normalize_capability("CAP_ALL")


def test_effective_capabilities_follow_tweak_capabilities() -> None:
    assert effective_capabilities([], []) == list(DEFAULT_CAPABILITIES)
    assert effective_capabilities([], ["ALL"]) == []
    assert effective_capabilities(["chown"], ["ALL"]) == ["CAP_CHOWN"]
    assert effective_capabilities(["ALL"], []) == list(ALL_CAPABILITIES)
    # ALL in cap-add wins over ALL in cap-drop; named drops still apply.
    assert effective_capabilities(["ALL"], ["ALL"]) == list(ALL_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in effective_capabilities(["ALL"], ["sys_admin"])
    caps = effective_capabilities(["NET_ADMIN", "CAP_CHOWN"], ["chown", "kill"])
    # A capability both dropped and added is kept (cap-add is applied last, as Docker's).
    assert "CAP_KILL" not in caps and caps[-2:] == ["CAP_NET_ADMIN", "CAP_CHOWN"]
    with pytest.raises(ValueError, match="unknown capability"):
        effective_capabilities(["bogus"], [])


@pytest.mark.parametrize("key", ["net.ipv4.ip_forward", "net.core.somaxconn", "net/ipv4/ip_forward",
                                 "kernel.shmmax", "kernel.msgmnb", "kernel.sem", "kernel.shm_rmid_forced",
                                 "fs.mqueue.msg_max", "kernel.domainname"])
def test_namespaced_sysctls_are_accepted(key: str) -> None:
    check_sysctl(key, "1")


@pytest.mark.parametrize("key", ["kernel.pid_max", "vm.swappiness", "fs.file-max", "kernel.shm",
                                 "kernel.msgmaxx"])
def test_host_wide_sysctls_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"sysctl '{key}' is not allowed: only namespaced"):
        check_sysctl(key, "1")


def test_sysctl_hostname_and_malformed_keys() -> None:
    with pytest.raises(ValueError, match="--hostname"):
        check_sysctl("kernel.hostname", "x")
    for key in ("", "net..x", "net.", "net.ipv4 x", "../etc"):
        with pytest.raises(ValueError, match="is not a sysctl name"):
            check_sysctl(key, "1")
    with pytest.raises(ValueError, match="one line"):
        check_sysctl("net.ipv4.ip_forward", "1\n2")


def test_ulimits_as_docker_writes_them() -> None:
    assert parse_ulimit("nofile=1024:2048") == Ulimit("nofile", 1024, 2048)
    assert parse_ulimit("nproc=50") == Ulimit("nproc", 50, 50)
    assert parse_ulimit("core=-1") == Ulimit("core", -1, -1)
    assert parse_ulimit("memlock=65536:-1") == Ulimit("memlock", 65536, -1)


@pytest.mark.parametrize(("text", "message"), [
    ("nofile", "write NAME=SOFT"),
    ("nofiles=10", "invalid ulimit type 'nofiles'"),
    ("nofile=1:2:3", "at most two values"),
    ("nofile=ten", "whole numbers"),
    ("nofile=", "whole numbers"),
    ("nofile=2048:1024", "soft limit 2048 is above the hard limit 1024"),
    ("nofile=-1:1024", "soft limit -1 is above"),
    ("nofile=-5", "is not a limit"),
])
def test_malformed_ulimits_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ulimit(text)


def test_check_ulimit_on_decoded_values() -> None:
    assert check_ulimit(Ulimit("stack", 8, 16)) == Ulimit("stack", 8, 16)
    with pytest.raises(ValueError, match="invalid ulimit type"):
        check_ulimit(Ulimit("RLIMIT_NOFILE", 1, 1))


@pytest.mark.parametrize(("text", "number"), [("SIGUSR1", 10), ("usr1", 10), ("10", 10), ("SIGTERM", 15),
                                               ("sigkill", 9), ("RTMIN+1", 35), ("SIGRTMAX", 64), ("1", 1)])
def test_signals_by_name_or_number(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["SIGFOO", "0", "65", "-1", "", "TERM15"])
def test_bad_signals_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid signal"):
        parse_signal(text)

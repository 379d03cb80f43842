"""overlay.netns against the kernel: namespaces, setns threads, sysctls, guards."""

from __future__ import annotations

import secrets
import socket
import subprocess
from typing import Iterator

import pytest

from overlay import netns as ns
from overlay.errors import DatapathError, InvalidRequest

pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)


@pytest.fixture
def name() -> Iterator[str]:
    prefix = f"ovn{secrets.token_hex(3)}"
    made = f"{prefix}-a"
    try:
        yield made
    finally:
        ns.remove(made)
        assert [n for n in ns.list_ns() if n.startswith(prefix)] == []


def test_create_and_remove_are_idempotent(name: str) -> None:
    assert not ns.ns_exists(name)
    ns.create(name)
    ns.create(name)
    assert ns.ns_exists(name)
    assert name in ns.list_ns()
    assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    ns.remove(name)
    ns.remove(name)
    assert not ns.ns_exists(name)


def test_run_in_executes_in_the_namespace_and_leaves_the_caller_alone(name: str) -> None:
    ns.create(name)
    mine = ns.current_ns_id()
    inside = ns.run_in(name, ns.current_ns_id)
    assert inside != mine
    assert ns.current_ns_id() == mine
    assert ns.run_in(None, ns.current_ns_id) == mine
    with pytest.raises(ZeroDivisionError):
        ns.run_in(name, lambda: 1 // 0)


def test_a_socket_made_inside_stays_there(name: str) -> None:
    ns.create(name)
    ns.exec_in(name, ["ip", "link", "set", "lo", "up"])
    server = ns.socket_in(name, socket.AF_INET, socket.SOCK_STREAM)
    with server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        server.settimeout(2)
        # The namespace's own loopback reaches it ...
        ns.run_in(name, lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
        server.accept()[0].close()
        # ... the runner's loopback does not (whatever else may listen on that port there).
        with socket.socket() as outside:
            outside.settimeout(2)
            outside.connect_ex(("127.0.0.1", port))
            with pytest.raises(socket.timeout):
                server.accept()


def test_sysctls_are_written_inside_the_namespace_only(name: str) -> None:
    ns.create(name)
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        root_before = f.read().strip()
    assert ns.get_sysctl(name, "net.ipv4.ip_forward") == "0"
    ns.set_sysctl(name, "net.ipv4.ip_forward", 1)
    assert ns.exec_in(name, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == root_before


def test_the_initial_namespace_is_refused(name: str) -> None:
    ns.create(name)
    assert ns.is_initial_ns(None)
    assert not ns.is_initial_ns(name)
    with pytest.raises(InvalidRequest):
        ns.set_sysctl(None, "net.ipv4.ip_forward", 1)
    from overlay.lb import apply_ruleset

    with pytest.raises(InvalidRequest):
        apply_ruleset(None, "table ip swarm_never\n")


def test_exec_in_reports_failures(name: str) -> None:
    with pytest.raises(DatapathError):
        ns.run_in(name, lambda: None)  # not created
    ns.create(name)
    with pytest.raises(DatapathError, match="nft"):
        ns.exec_in(name, ["nft", "-f", "-"], input="this is not nft\n")
    assert ns.exec_in(name, ["nft", "list", "tables"]).stdout == ""


def test_a_failed_create_leaves_nothing_behind(name: str) -> None:
    from overlay.network import NetworkDatapath
    from overlay.sandbox import Attachment, TaskSandbox

    missing = name + "-nonexistent"
    with pytest.raises(DatapathError):
        TaskSandbox(name, [Attachment(missing, "10.10.0.2", 24, "10.10.0.1")]).create()
    assert not ns.ns_exists(name)
    with pytest.raises(DatapathError):
        NetworkDatapath(name, 4096, "10.10.0.0/24", "198.18.0.1", host_netns=missing).create()
    assert not ns.ns_exists(name)
    assert not ns.ns_exists(missing)

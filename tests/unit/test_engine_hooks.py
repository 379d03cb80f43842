import pytest

from raft import engine_hooks


def test_the_installed_pysyncobj_is_the_audited_one():
    assert engine_hooks.self_test() == []


def test_a_different_pysyncobj_source_refuses_to_start(monkeypatch):
    monkeypatch.setitem(engine_hooks.PINNED_SOURCES, "syncobj.py", "0" * 64)
    problems = engine_hooks.self_test()
    assert problems == ["pysyncobj/syncobj.py differs from the audited 0.3.17 source"]
    with pytest.raises(engine_hooks.IncompatibleEngine, match="refusing to start"):
        engine_hooks.install()


def test_a_missing_internal_refuses_to_start(monkeypatch):
    monkeypatch.setattr(engine_hooks, "SYNCOBJ_INTERNALS", engine_hooks.SYNCOBJ_INTERNALS + ("_gone",))
    assert "SyncObj lacks _gone" in engine_hooks.self_test()


def test_pysyncobj_does_not_leave_socket_inet_ntop_broken():
    import socket

    import pysyncobj.tcp_connection  # noqa: F401  (imports win_inet_pton)

    assert socket.inet_ntop(socket.AF_INET, b"\x0a\x00\x00\x01") == "10.0.0.1"

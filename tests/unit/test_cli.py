"""swarm.cli.main against a fake daemon: a real rpc.serve_unix with canned handlers.

The fake runs trio in a background thread on a socket in a fresh state
directory; each test sets the answers (`fake.answers[method]`: a value, an
RPCError to raise, or a function of the params) and reads back the params
each call received (`fake.calls`). Output is compared exactly.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import types
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from swarm.cli import common
from swarm.cli import main as cli

import swarm.rpc as rpc
from swarm.api.errors import SwarmError
from swarm.rpc.messages import RPCError

ROWS = [
    {"id": "wrk2", "hostname": "node-b", "role": "worker", "status": "down",
     "availability": "drain", "manager_status": "", "addr": "10.0.0.3"},
    {"id": "mgr1", "hostname": "node-a", "role": "manager", "status": "ready",
     "availability": "active", "manager_status": "leader", "addr": "10.0.0.1"},
    {"id": "wrk1", "hostname": "node-b", "role": "worker", "status": "ready",
     "availability": "active", "manager_status": "", "addr": "10.0.0.2"},
]
NODE = {**ROWS[1], "labels": {"zone": "a"}, "created_at": "2024-05-01T10:00:00Z",
        "updated_at": "2024-05-01T10:05:00Z", "status_message": "", "cert_serial": "1f",
        "raft_addr": "10.0.0.1:2377"}
INFO = {"node_id": "mgr1", "hostname": "node-a", "role": "manager", "cluster_id": "clu1",
        "addr": "10.0.0.1:2377", "state_dir": "/var/lib/swarm", "leader": "mgr1", "managers": 1,
        "nodes": 3, "raft": {"term": 2, "commit_index": 40, "applied_index": 39, "members": ["mgr1"]},
        "cert_expiry": "2024-08-01T10:00:00Z", "heartbeat_period": 1.0,
        "manager_addrs": ["10.0.0.1:2377"]}
TOKEN = "SWMTKN-1-abc-def"


class FakeDaemon:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.answers: dict[str, Any] = {
            "ping": {"node_id": "mgr1", "ready": True},
            "info": INFO,
            "node.ls": ROWS,
            "node.inspect": [NODE],
            "node.update": NODE,
            "join_token": {"token": TOKEN, "addr": "10.0.0.1:2377"},
            "leave": {"left": True},
        }
        self.calls: list[tuple[str, dict]] = []
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), daemon=True)

    def params(self, method: str) -> list[dict]:
        return [p for m, p in self.calls if m == method]

    def _router(self) -> rpc.Router:
        router = rpc.Router()
        for method in ("ping", "info", "node.ls", "node.inspect", "node.update", "node.promote",
                       "node.demote", "node.rm", "join_token", "leave"):
            router.route(method, self._handler(method))
        return router

    def _handler(self, method: str):
        async def handle(peer: rpc.Peer, params: dict) -> Any:
            self.calls.append((method, params))
            answer = self.answers[method]
            if isinstance(answer, RPCError):
                raise answer
            return answer(params) if callable(answer) else answer
        return handle

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(rpc.serve_unix, self._router(), os.path.join(self.state_dir, "swarm.sock"))
                self._ready.set()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the fake daemon did not start"

    def stop(self) -> None:
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def fake(state_dir: str):
    daemon = FakeDaemon(state_dir)
    daemon.start()
    yield daemon
    daemon.stop()
    assert not os.path.exists(os.path.join(state_dir, "swarm.sock"))


def ok(result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stderr == ""
    return result.stdout


def failed(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    return result.stderr


# -- node ----------------------------------------------------------------------


def test_node_ls_table_marks_self_and_sorts(fake, run):
    assert ok(run("node", "ls")) == (
        "ID        HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ADDR\n"
        "mgr1 *    node-a     Ready     Active         Leader           10.0.0.1\n"
        "wrk1      node-b     Ready     Active                          10.0.0.2\n"
        "wrk2      node-b     Down      Drain                           10.0.0.3\n"
    )


def test_node_ls_quiet_prints_ids_only(fake, run):
    assert ok(run("node", "ls", "-q")) == "mgr1\nwrk1\nwrk2\n"
    assert [m for m, _ in fake.calls] == ["node.ls"]


def test_node_ls_json_is_one_document_of_daemon_rows(fake, run):
    out = ok(run("node", "ls", "--format", "json"))
    assert json.loads(out) == [ROWS[1], ROWS[2], ROWS[0]]
    assert out == json.dumps([ROWS[1], ROWS[2], ROWS[0]], indent=4) + "\n"


def test_node_inspect_json(fake, run):
    out = ok(run("node", "inspect", "mgr1", "node-b"))
    assert out == json.dumps([NODE], indent=4) + "\n"
    assert fake.params("node.inspect") == [{"refs": ["mgr1", "node-b"]}]


def test_node_inspect_pretty(fake, run):
    assert ok(run("node", "inspect", "--format", "pretty", "mgr1")) == (
        "ID:                   mgr1\n"
        "Hostname:             node-a\n"
        "Joined at:            2024-05-01T10:00:00Z\n"
        "Updated at:           2024-05-01T10:05:00Z\n"
        "Status:\n"
        " State:               Ready\n"
        " Availability:        Active\n"
        " Address:             10.0.0.1\n"
        "Manager Status:\n"
        " Address:             10.0.0.1:2377\n"
        " Raft Status:         Leader\n"
        " Leader:              Yes\n"
        "Labels:\n"
        " - zone=a\n"
        "Certificate serial:   1f\n"
    )


def test_node_update_sends_only_given_flags(fake, run):
    assert ok(run("node", "update", "--availability", "DRAIN", "node-a")) == "mgr1\n"
    assert ok(run("node", "update", "--label-add", "zone=b", "--label-add", "ssd",
                  "--label-add", "k=v=w", "--label-rm", "old", "node-a")) == "mgr1\n"
    assert ok(run("node", "update", "node-a")) == "mgr1\n"
    assert fake.params("node.update") == [
        {"ref": "node-a", "availability": "drain"},
        {"ref": "node-a", "label_add": {"zone": "b", "ssd": "", "k": "v=w"}, "label_rm": ["old"]},
        {"ref": "node-a"},
    ]


def test_node_promote_demote_rm(fake, run):
    fake.answers["node.promote"] = lambda p: [{"id": r, "hostname": r, "message": f"Node {r} promoted to a manager in the swarm."}
                                              for r in p["refs"]]
    fake.answers["node.demote"] = [{"id": "wrk1", "hostname": "node-b", "message": "Manager wrk1 demoted in the swarm."}]
    fake.answers["node.rm"] = ["wrk1", "wrk2"]
    assert ok(run("node", "promote", "wrk1", "wrk2")) == (
        "Node wrk1 promoted to a manager in the swarm.\nNode wrk2 promoted to a manager in the swarm.\n")
    assert ok(run("node", "demote", "wrk1")) == "Manager wrk1 demoted in the swarm.\n"
    assert ok(run("node", "rm", "-f", "wrk1", "wrk2")) == "wrk1\nwrk2\n"
    assert fake.params("node.rm") == [{"refs": ["wrk1", "wrk2"], "force": True}]


# -- join-token / leave / info -------------------------------------------------

WORKER_TEXT = ("To add a worker to this swarm, run the following command:\n\n"
               f"    swarm join --token {TOKEN} 10.0.0.1:2377\n\n")


def test_join_token_text_quiet_and_rotate(fake, run):
    assert ok(run("join-token", "worker")) == WORKER_TEXT
    assert ok(run("join-token", "manager")) == WORKER_TEXT.replace("a worker", "a manager")
    assert ok(run("join-token", "-q", "worker")) == f"{TOKEN}\n"
    assert ok(run("join-token", "--rotate", "worker")) == "Successfully rotated worker join token.\n\n" + WORKER_TEXT
    assert ok(run("join-token", "--rotate", "-q", "manager")) == f"{TOKEN}\n"
    assert fake.params("join_token") == [
        {"role": "worker", "rotate": False}, {"role": "manager", "rotate": False},
        {"role": "worker", "rotate": False}, {"role": "worker", "rotate": True},
        {"role": "manager", "rotate": True},
    ]


def test_leave(fake, run):
    assert ok(run("leave")) == "Node left the swarm.\n"
    assert ok(run("leave", "--force")) == "Node left the swarm.\n"
    assert fake.params("leave") == [{"force": False}, {"force": True}]


def test_leave_answer_lost_but_state_cleared(fake, run):
    fake.answers["leave"] = RPCError("unavailable", "the swarm daemon closed the connection without answering")
    assert ok(run("leave", "--force")) == "Node left the swarm.\n"
    open(os.path.join(fake.state_dir, "node.json"), "w").close()  # still in the swarm: the error stands
    assert failed(run("leave"), 1) == "Error: the swarm daemon closed the connection without answering\n"


def test_info_json_and_text(fake, run):
    assert json.loads(ok(run("info", "--format", "json"))) == INFO
    assert ok(run("info")) == (
        "Swarm: active\n"
        " NodeID: mgr1\n"
        " Hostname: node-a\n"
        " Is Manager: true\n"
        " ClusterID: clu1\n"
        " Managers: 1\n"
        " Nodes: 3\n"
        " Leader: mgr1\n"
        " Raft:\n"
        "  Term: 2\n"
        "  Commit Index: 40\n"
        "  Applied Index: 39\n"
        "  Members:\n"
        "   mgr1\n"
        " Dispatcher:\n"
        "  Heartbeat Period: 1s\n"
        " Certificate Expiry: 2024-08-01T10:00:00Z\n"
        " Node Address: 10.0.0.1:2377\n"
        " Manager Addresses:\n"
        "  10.0.0.1:2377\n"
        " State Dir: /var/lib/swarm\n"
    )


def test_state_dir_option_overrides_env(fake, run, tmp_path):
    result = CliRunner().invoke(cli.swarm, ["node", "ls", "-q", "--state-dir", fake.state_dir],
                                env={"SWARM_STATE_DIR": str(tmp_path)})
    assert ok(result) == "mgr1\nwrk1\nwrk2\n"


def test_state_dir_before_the_command_like_docker_H(fake, tmp_path):
    # `swarm --state-dir DIR COMMAND` beats SWARM_STATE_DIR, as `docker -H` beats DOCKER_HOST
    result = CliRunner().invoke(cli.swarm, ["--state-dir", fake.state_dir, "node", "ls", "-q"],
                                env={"SWARM_STATE_DIR": str(tmp_path)})
    assert ok(result) == "mgr1\nwrk1\nwrk2\n"
    result = CliRunner().invoke(cli.swarm, [f"--state-dir={fake.state_dir}", "node", "inspect", "self",
                                            "--format", "json"], env={})
    assert json.loads(ok(result))[0]["id"] == "mgr1"
    assert [m for m, _ in fake.calls] == ["node.ls", "node.inspect"]


def test_the_commands_own_state_dir_wins_over_the_roots(fake, tmp_path):
    elsewhere = str(tmp_path / "elsewhere")
    result = CliRunner().invoke(cli.swarm, ["--state-dir", elsewhere, "node", "ls", "-q", "--state-dir",
                                            fake.state_dir])
    assert ok(result) == "mgr1\nwrk1\nwrk2\n"
    result = CliRunner().invoke(cli.swarm, ["--state-dir", fake.state_dir, "node", "ls", "--state-dir", elsewhere])
    assert failed(result, 1) == not_in_swarm(elsewhere)
    assert [m for m, _ in fake.calls] == ["node.ls"]


def test_root_state_dir_reaches_init_and_is_in_the_help(state_dir, boot, fake):
    result = CliRunner().invoke(cli.swarm, ["--state-dir", state_dir, "init", "--advertise-addr", "10.0.0.1",
                                            "--hostname", "node-a"], env={"SWARM_STATE_DIR": "/nonexistent"})
    assert result.exit_code == 0, result.output
    assert [(name, kwargs.get("state_dir", args)) for name, args, kwargs in boot.calls] == [
        ("init_state", state_dir), ("start_daemon", (state_dir,))]
    assert "--state-dir DIR" in ok(CliRunner().invoke(cli.swarm, ["--help"]))
    assert "env SWARM_STATE_DIR" in ok(CliRunner().invoke(cli.swarm, ["node", "ls", "--help"]))


def test_main_accepts_the_state_dir_before_the_command(fake, capsys, monkeypatch):
    monkeypatch.delenv("SWARM_STATE_DIR", raising=False)
    with pytest.raises(SystemExit) as done:
        cli.main(["--state-dir", fake.state_dir, "node", "ls", "-q"])
    assert done.value.code == 0
    assert capsys.readouterr().out == "mgr1\nwrk1\nwrk2\n"


# -- errors --------------------------------------------------------------------


def test_daemon_error_is_one_line_on_stderr(fake, run):
    fake.answers["node.ls"] = RPCError("not_manager", "This node is not a swarm manager.")
    assert failed(run("node", "ls"), 1) == "Error: This node is not a swarm manager.\n"


def not_in_swarm(state_dir: str) -> str:
    return (f'Error: this node is not part of a swarm (no node in {state_dir}): run "swarm init" or "swarm join", '
            "or point --state-dir (or SWARM_STATE_DIR) at a node's state directory\n")


def test_no_node_in_the_state_dir(state_dir, run, tmp_path):
    assert failed(run("node", "ls"), 1) == not_in_swarm(state_dir)  # empty
    missing = str(tmp_path / "nothing-here")
    result = CliRunner().invoke(cli.swarm, ["service", "ls", "--state-dir", missing])
    assert failed(result, 1) == not_in_swarm(missing)
    assert not os.path.exists(missing)


def test_node_whose_daemon_is_not_running(state_dir, run):
    open(os.path.join(state_dir, "node.json"), "w").close()
    expected = (f"Error: the swarm daemon of the node in {state_dir} is not running; "
                'start it with "swarm daemon --detach"\n')
    assert failed(run("info"), 1) == expected
    # A daemon killed with -9 leaves its socket behind: nothing listens on it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(os.path.join(state_dir, "swarm.sock"))
        assert failed(run("node", "ls"), 1) == expected


def test_unavailable_from_a_running_daemon_is_passed_on(fake, run):
    fake.answers["node.ls"] = RPCError("unavailable", "no leader: the managers have no quorum")
    assert failed(run("node", "ls"), 1) == "Error: no leader: the managers have no quorum\n"


def test_unexpected_exception_is_an_internal_error(fake, run):
    fake.answers["node.ls"] = [{"id": "x"}]  # a malformed row: the CLI trips over it
    err = failed(run("node", "ls"), 1)
    assert err.startswith("Error: internal error: KeyError") and err.count("\n") == 1


def test_main_never_shows_a_traceback(fake, monkeypatch, capsys):
    monkeypatch.setattr(common.LocalDaemon, "call", lambda *a, **k: 1 / 0)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["info", "--state-dir", fake.state_dir])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.err == "Error: internal error: ZeroDivisionError: division by zero\n"
    assert captured.out == ""


@pytest.mark.parametrize("args, option", [
    (["init", "--advertise-addr", "10.0.0.1", "--cert-expiry", "90"], "'--cert-expiry'"),
    (["init", "--advertise-addr", "10.0.0.1", "--dispatcher-heartbeat", "-1s"], "'--dispatcher-heartbeat'"),
    (["init", "--advertise-addr", "10.0.0.1", "--dispatcher-heartbeat", "0s"], "'--dispatcher-heartbeat'"),
    (["init", "--advertise-addr", "10.0.0.1:70000"], "'--advertise-addr'"),
    (["init", "--advertise-addr", "10.0.0.1:0"], "'--advertise-addr'"),
    (["init", "--advertise-addr", "bad host"], "'--advertise-addr'"),
    (["init", "--advertise-addr", "300.1.1.1"], "'--advertise-addr'"),
    (["init", "--advertise-addr", "10.0.0.1", "--listen-addr", "0.0.0.0:x"], "'--listen-addr'"),
    (["init"], "'--advertise-addr'"),
    (["join", "--token", TOKEN, "10.0.0.1:"], "'HOST:PORT'"),
    (["node", "update", "--availability", "sleepy", "n1"], "'--availability'"),
    (["node", "update", "--label-add", "=v", "n1"], "'--label-add'"),
    (["node", "update", "--label-rm", "", "n1"], "'--label-rm'"),
    (["join-token", "admin"], "'{worker|manager}'"),
    (["info", "--format", "yaml"], "'--format'"),
])
def test_bad_input_is_a_usage_error(run, monkeypatch, args, option):
    monkeypatch.setitem(sys.modules, "swarm.daemon.bootstrap", None)  # never reached
    err = failed(run(*args), 2)
    assert err.startswith("Usage: swarm ")
    assert option in err.splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["ca"], "'ca' is not supported yet"),
    (["volume", "create", "v"], "'volume create' is not supported yet"),
    (["service", "ps", "--no-resolve", "web"], "no such option: --no-resolve (not supported yet)"),
    (["network", "rm", "--force", "n"], "no such option: --force (not supported yet)"),
    (["init", "--external-ca", "x"], "no such option: --external-ca (not supported yet)"),
    # not Docker's either: click's own message, with its guess when it is a close one
    (["servics", "ls"], "No such command 'servics'. Did you mean 'service'?"),
    (["service", "create", "--replica", "2", "alpine"], "No such option '--replica'. Did you mean '--replicas'?"),
    (["frobnicate"], "No such command 'frobnicate'."),
])
def test_what_docker_has_and_we_lack_is_named_not_guessed(run, args, message):
    err = failed(run(*args), 2)
    assert err.startswith("Usage: swarm ")
    assert err.splitlines()[-1] == f"Error: {message}"


# -- init / join / daemon with a fake bootstrap --------------------------------


@pytest.fixture
def boot(monkeypatch):
    module = types.ModuleType("swarm.daemon.bootstrap")
    module.calls = []

    def record(name: str, answer: Any):
        def fn(*args: Any, **kwargs: Any) -> Any:
            module.calls.append((name, args, kwargs))
            if isinstance(answer, Exception):
                raise answer
            return answer
        return fn

    module.record = record
    module.init_state = record("init_state", {"node_id": "mgr1", "cluster_id": "clu1", "addr": "10.0.0.1:2377"})
    module.join_state = record("join_state", {"node_id": "wrk1", "role": "worker", "addr": "10.0.0.2:2377",
                                              "hostname": "node-b"})
    module.start_daemon = record("start_daemon", {"ready": True})
    module.is_locked = record("is_locked", False)
    monkeypatch.setitem(sys.modules, "swarm.daemon.bootstrap", module)
    return module


INIT_DEFAULTS = {"availability": "active", "settings": {"default_addr_pools": [], "default_addr_pool_mask_length": 24,
                                                        "data_path_port": 4789, "task_history_limit": 5,
                                                        "autolock": False},
                 "unlock_key": None}


def test_init_prints_docker_text(fake, run, boot):
    assert ok(run("init", "--advertise-addr", "10.0.0.1", "--hostname", "node-a",
                  "--cert-expiry", "1h30m", "--dispatcher-heartbeat", "500ms")) == (
        "Swarm initialized: current node (mgr1) is now a manager.\n\n" + WORKER_TEXT +
        "To add a manager to this swarm, run 'swarm join-token manager' and follow the instructions.\n\n")
    assert boot.calls == [
        ("init_state", (), {"state_dir": fake.state_dir, "advertise_addr": "10.0.0.1:2377", "listen_addr": None,
                            "hostname": "node-a", "cert_expiry": 5400.0, "heartbeat": 0.5,
                            "force_new_cluster": False, **INIT_DEFAULTS}),
        ("start_daemon", (fake.state_dir,), {"detach": True}),
    ]
    assert fake.params("join_token") == [{"role": "worker", "rotate": False}]


def test_init_defaults_and_foreground(state_dir, run, boot):
    result = run("init", "--advertise-addr", "[fd00::1]:4000", "--listen-addr", "0.0.0.0", "--foreground")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Swarm initialized: current node (mgr1) is now a manager.\n\n"
    # the hostname was not given: say which one the node took (not on stdout: scripts read it)
    assert result.stderr == f"advertising hostname {socket.gethostname()}; use --hostname to choose\n"
    assert boot.calls == [
        ("init_state", (), {"state_dir": state_dir, "advertise_addr": "[fd00::1]:4000",
                            "listen_addr": "0.0.0.0:2377", "hostname": socket.gethostname(),
                            "cert_expiry": 2160 * 3600.0,
                            "heartbeat": 1.0, "force_new_cluster": False, **INIT_DEFAULTS}),
        ("start_daemon", (state_dir,), {"detach": False, "unlock_key": None}),
    ]


def test_init_error_from_bootstrap(state_dir, run, boot):
    boot.init_state = boot.record("init_state", SwarmError("This node is already part of a swarm."))
    assert failed(run("init", "--advertise-addr", "10.0.0.1"), 1) == "Error: This node is already part of a swarm.\n"
    assert [c[0] for c in boot.calls] == ["init_state"]


def test_join_prints_role_and_what_it_chose_by_itself(state_dir, run, boot):
    result = run("join", "--token", TOKEN, "--advertise-addr", "10.0.0.2", "10.0.0.1")
    assert (result.exit_code, result.stdout) == (0, "This node joined a swarm as a worker.\n")
    assert result.stderr == "advertising hostname node-b; use --hostname to choose\n"
    assert ok(run("join", "--token", TOKEN, "--advertise-addr", "10.0.0.2", "--hostname", "n2", "10.0.0.1")) == (
        "This node joined a swarm as a worker.\n")
    boot.join_state = boot.record("join_state", {"node_id": "mgr2", "role": "manager", "addr": "127.0.0.1:2377",
                                                 "hostname": "n3"})
    result = run("join", "--token", TOKEN, "--hostname", "n3", "--foreground", "10.0.0.1:4000")
    assert (result.exit_code, result.stdout) == (0, "This node joined a swarm as a manager.\n")
    assert result.stderr == "advertising 127.0.0.1:2377; use --advertise-addr to choose\n"
    assert boot.calls == [
        ("join_state", (), {"state_dir": state_dir, "token": TOKEN, "remote_addr": "10.0.0.1:2377",
                            "advertise_addr": "10.0.0.2:2377", "listen_addr": None, "hostname": None}),
        ("start_daemon", (state_dir,), {"detach": True}),
        ("join_state", (), {"state_dir": state_dir, "token": TOKEN, "remote_addr": "10.0.0.1:2377",
                            "advertise_addr": "10.0.0.2:2377", "listen_addr": None, "hostname": "n2"}),
        ("start_daemon", (state_dir,), {"detach": True}),
        ("join_state", (), {"state_dir": state_dir, "token": TOKEN, "remote_addr": "10.0.0.1:4000",
                            "advertise_addr": None, "listen_addr": None, "hostname": "n3"}),
        ("start_daemon", (state_dir,), {"detach": False}),
    ]


def test_join_names_the_address_and_hostname_it_took(state_dir, run, boot):
    boot.join_state = boot.record("join_state", {"node_id": "wrk3", "role": "worker", "addr": "127.0.0.1:2377",
                                                 "hostname": "box"})
    result = run("join", "--token", TOKEN, "127.0.0.1")
    assert (result.exit_code, result.stdout) == (0, "This node joined a swarm as a worker.\n")
    assert result.stderr == "advertising 127.0.0.1:2377 and hostname box; use --advertise-addr/--hostname to choose\n"


def test_init_with_its_hostname_or_a_forced_new_cluster_says_nothing_more(state_dir, run, boot):
    assert ok(run("init", "--advertise-addr", "10.0.0.1", "--hostname", "node-a", "--foreground")) == (
        "Swarm initialized: current node (mgr1) is now a manager.\n\n")
    assert ok(run("init", "--force-new-cluster", "--foreground")) == (
        "Swarm initialized: current node (mgr1) is now a manager.\n\n")
    assert [c[2]["hostname"] for c in boot.calls if c[0] == "init_state"] == ["node-a", None]


def test_daemon_start_failure(state_dir, run, boot):
    boot.start_daemon = boot.record("start_daemon", SwarmError("the daemon did not start: port 2377 is in use."))
    assert failed(run("daemon", "--detach"), 1) == "Error: the daemon did not start: port 2377 is in use.\n"
    assert failed(run("daemon", "--unsafe-memory-journal"), 1).startswith("Error: the daemon did not start")
    assert boot.calls == [("start_daemon", (state_dir,), {"detach": True, "memory_journal": False}),
                          ("start_daemon", (state_dir,), {"detach": False, "memory_journal": True})]


# -- pure helpers --------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90.0), ("5m", 300.0), ("2160h0m0s", 7776000.0), ("1h30m", 5400.0), ("500ms", 0.5),
    ("1.5h", 5400.0), (".5s", 0.5), ("100us", 1e-4), ("10µs", 1e-5),
])
def test_parse_duration(text, seconds):
    assert common.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("seconds, text", [
    (1.0, "1s"), (90.0, "1m30s"), (7776000.0, "2160h0m0s"), (0.5, "500ms"), (1.5, "1.5s"), (0, "0s"),
])
def test_format_duration(seconds, text):
    assert common.format_duration(seconds) == text


def test_python_dash_m_swarm(state_dir):
    env = {**os.environ, "SWARM_STATE_DIR": state_dir}
    proc = subprocess.run([sys.executable, "-m", "swarm", "node", "ls"], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("Error: this node is not part of a swarm")


def test_internal_error_names_the_real_failure_inside_a_group():
    group = ExceptionGroup("Exceptions from Trio nursery (1 sub-exception)", [ValueError("bad thing\nmore")])
    assert common.one_line(group) == "ValueError: bad thing"
    assert common.one_line(KeyError()) == "KeyError"


def test_a_reader_that_closes_the_pipe_ends_the_cli_quietly_as_docker_does():
    """`swarm service ps web | head -n 3`: no "internal error: BrokenPipeError", killed by SIGPIPE."""
    import signal
    import subprocess

    program = ("import click, sys\n"
               "from swarm.cli.root import swarm\n"
               "@swarm.command('flood', hidden=True)\n"
               "def flood():\n"
               "    for i in range(200000):\n"
               "        click.echo(f'line {i}')\n"
               "from swarm.cli.main import main\n"
               "main(['flood'])\n")
    writer = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = writer.stdout.readline()
    writer.stdout.close()                       # the reader goes away after one line
    stderr = writer.stderr.read()
    assert writer.wait(timeout=30) == -signal.SIGPIPE
    assert first == b"line 0\n" and stderr == b""

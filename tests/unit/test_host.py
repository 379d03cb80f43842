"""The daemon process's modes (swarm/daemon/host.py): inactive, a node made in place by
swarm.init, back to inactive after a leave through the Engine API, and a node that fails to
start cleared again; the node's Daemon, the bootstrap and the sockets are fakes here (the
real ones: tests/integration/test_engine_api_swarm.py)."""
import os

import pytest
import trio

from swarm.daemon import bootstrap, host as host_module, interpreter
from swarm.daemon.host import Host, init_kwargs, join_args, registry_params
from swarm.engineapi import swarmops
from swarm.rpc.messages import RPCError
from swarm.rpc.router import Router


class FakeDaemon:
    """A node's Daemon: serves a local API with `leave` until stopped; `fail` makes it fail at start."""
    fail: str | None = None
    made: list["FakeDaemon"] = []

    def __init__(self, state_dir: str, *, memory_journal: bool = False, unlock_key: str | None = None) -> None:
        self.state_dir, self.unlock_key = state_dir, unlock_key
        self.local_api: Router | None = None
        self.waiting_for_unlock = False
        self.manager = object()
        self.left = False
        self._stop = trio.Event()
        FakeDaemon.made.append(self)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if FakeDaemon.fail:
            raise OSError(FakeDaemon.fail)
        router = Router()

        async def leave(peer, params):
            self.left = True
            self._stop.set()
            return {"left": True}
        router.route("leave", leave)
        self.local_api = router
        task_status.started()
        await self._stop.wait()
        if self.left:
            os.unlink(os.path.join(self.state_dir, "node.json"))


async def serving(*args, task_status=trio.TASK_STATUS_IGNORED, **kwargs) -> None:
    task_status.started()
    await trio.sleep_forever()


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    FakeDaemon.fail, FakeDaemon.made = None, []
    inits = []

    def init_state(state_dir, **kwargs):
        inits.append(kwargs)
        with open(os.path.join(state_dir, "node.json"), "w") as f:
            f.write("{}")
        return {"node_id": "n1", "cluster_id": "c1", "addr": kwargs["advertise_addr"], "unlock_key": "SWMKEY-1-k"}

    monkeypatch.setattr(host_module, "Daemon", FakeDaemon)
    monkeypatch.setattr(host_module, "serve_router", serving)
    monkeypatch.setattr(host_module, "serve_unix", serving)
    monkeypatch.setattr(bootstrap, "init_state", init_state)
    return inits


async def until(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.01)


@pytest.mark.trio
async def test_a_host_goes_from_inactive_to_a_node_and_back_in_one_process(tmp_path, fakes):
    host = Host(str(tmp_path))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(host.run)
        await until(host._inactive.is_set)
        assert host.role() == "inactive" and os.path.exists(tmp_path / "swarm.pid")
        with pytest.raises(RPCError) as refused:
            await host.call("node.ls", {})
        assert refused.value.message == swarmops.NO_SWARM

        # through the Engine API: answered once the node's Daemon serves, with the key init made
        answer = await host.call("swarm.init", {"advertise_addr": "127.0.0.1:2377"})
        assert answer["node_id"] == "n1" and host.role() == "manager"
        assert FakeDaemon.made[-1].unlock_key == "SWMKEY-1-k" and fakes[0]["advertise_addr"] == "127.0.0.1:2377"
        with pytest.raises(RPCError) as refused:
            await host.call("swarm.init", {"advertise_addr": "127.0.0.1:2377"})
        assert (refused.value.code, refused.value.message) == ("unavailable", swarmops.SWARM_EXISTS)

        # a leave through the Engine API: answered once the process is inactive again
        assert await host.call("leave", {}) == {"left": True}
        assert host.role() == "inactive" and host._inactive.is_set()

        # a node that cannot start: its state is cleared, the caller told why
        FakeDaemon.fail = "address already in use"
        with pytest.raises(RPCError, match="the node could not start: address already in use"):
            await host.call("swarm.init", {"advertise_addr": "127.0.0.1:2377"})
        assert not os.path.exists(tmp_path / "node.json")
        await until(host._inactive.is_set)
        assert host.role() == "inactive"
        host.stop()
    assert not os.path.exists(tmp_path / "swarm.pid")


@pytest.mark.trio
async def test_a_leave_on_swarm_sock_ends_the_process(tmp_path, fakes):
    host = Host(str(tmp_path))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(host.run)
        await until(host._inactive.is_set)
        # swarm.sock's swarm.init (the CLI's) is answered before the node starts
        await host._local.dispatch(host_module.LOCAL_PEER, "swarm.init", {"advertise_addr": "127.0.0.1:2377"})
        await until(lambda: host.daemon is not None and host.daemon.local_api is not None)
        await host.daemon.local_api.dispatch(host_module.LOCAL_PEER, "leave", {})
    assert not os.path.exists(tmp_path / "swarm.pid") and not os.path.exists(tmp_path / "node.json")


def test_the_local_params_are_checked_before_any_file_is_written():
    assert init_kwargs({"advertise_addr": "10.0.0.1:2377", "settings": {"autolock": True}})["settings"] == \
        {"autolock": True}
    for bad, words in (({}, "advertise_addr must be a non-empty string"),
                       ({"advertise_addr": "a", "settings": {"nope": 1}}, "settings must be a map of"),
                       ({"advertise_addr": "a", "heartbeat": "1s"}, "heartbeat must be a number"),
                       ({"advertise_addr": "a", "availability": "away"}, "availability must be active")):
        with pytest.raises(RPCError, match=words):
            init_kwargs(bad)
    assert join_args({"token": "T", "remote_addr": "m:2377"}) == ("T", "m:2377", None, None, None)
    with pytest.raises(RPCError, match="remote_addr"):
        join_args({"token": "T"})
    assert registry_params({"insecure_registries": ["r:5000"]}) == {"insecure": ["r:5000"]}
    with pytest.raises(RPCError, match="registry_mirrors must be a list"):
        registry_params({"registry_mirrors": "http://m"})


def test_the_daemon_collects_garbage_less_often_and_switches_threads_sooner_than_cpython_s_default(monkeypatch, tmp_path):
    # Set first thing in main (here the daemon stops right after: no nftables).
    import gc
    import overlay.lb
    from swarm.api.errors import SwarmError

    def no_nftables() -> None:
        raise OSError("nft: not found")

    monkeypatch.setattr(overlay.lb, "check_nftables", no_nftables)
    import sys
    default, switch = gc.get_threshold(), sys.getswitchinterval()
    try:
        gc.set_threshold(700, 10, 10)
        sys.setswitchinterval(0.005)
        with pytest.raises(SwarmError, match="nftables is required"):
            host_module.main(str(tmp_path))
        assert gc.get_threshold() == interpreter.THRESHOLDS
        assert interpreter.THRESHOLDS[0] > 700 and interpreter.THRESHOLDS[2] > 10
        # the trio thread gets the interpreter back from a planning thread sooner than CPython's 5 ms
        assert sys.getswitchinterval() == pytest.approx(interpreter.SWITCH_INTERVAL)
        assert interpreter.SWITCH_INTERVAL <= 0.001
    finally:
        gc.set_threshold(*default)
        sys.setswitchinterval(switch)

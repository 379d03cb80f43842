"""Small helpers several integration test files share."""
import time

from swarm.rpc.messages import RPCError


def create_service(api, params: dict) -> dict:
    """service.create through a daemon's API (a `LocalDaemon`), once the managers know the
    nodes' imported image (a heartbeat reports it; the first create may come before it)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return api.call("service.create", params)
        except RPCError as exc:
            if "not found on any node" not in exc.message or time.monotonic() > deadline:
                raise
            time.sleep(0.2)

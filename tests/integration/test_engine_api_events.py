"""`docker events` with the real docker CLI against our Engine API: the store's changes of
services, nodes, networks, secrets and configs, streamed as they happen and filtered."""
import json
import os
import select
import subprocess
import time
from collections.abc import Callable

from tests.integration.test_engine_api import DOCKER, OLD_DOCKER, old_docker, docker, one  # noqa: F401 (one: fixture)


def stream(node, *args, binary=None) -> subprocess.Popen:
    env = dict(os.environ, DOCKER_HOST=f"unix://{node.state_dir}/docker.sock",
               DOCKER_CONFIG=os.path.join(node.state_dir, "docker-cli-config"))
    return subprocess.Popen([binary or DOCKER, "events", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)


def read_until(proc: subprocess.Popen, done: Callable[[list[dict]], bool], timeout: float) -> list[dict]:
    """The next JSON lines of a `docker events --format '{{json .}}'`, until `done(lines)` or `timeout`."""
    deadline = time.monotonic() + timeout
    got: list[dict] = []
    fd = proc.stdout.fileno()
    buffered = getattr(proc, "buffered", b"")
    while not done(got) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if ready and not chunk:
            break                      # the stream ended
        buffered += chunk
        while b"\n" in buffered and not done(got):
            first, buffered = buffered.split(b"\n", 1)
            if first.strip():
                got.append(json.loads(first))
    proc.buffered = buffered           # lines read past `done` are kept for the next call
    return got


def removed(got: list[dict]) -> bool:
    return any(e["Type"] == "service" and e["Action"] == "remove" for e in got)


def test_docker_events_streams_the_swarms_changes_filtered(one):
    swarm, m1 = one
    # the daemon watches the store from the first events request on: start it, then replay from t0
    t0 = f"{time.time():.9f}"
    docker(m1, "events", "--since", t0, "--until", t0)
    services = stream(m1, "--since", t0, "--filter", "type=service", "--format", "{{json .}}")
    everything = stream(m1, "--since", t0, "--format", "{{json .}}")
    try:
        docker(m1, "service", "create", "--name", "ev", "--detach", "--no-resolve-image", "demo:1", "sleep", "1000")
        created = read_until(services, lambda got: len(got) == 1, 30)
        assert [(e["Type"], e["Action"], e["Actor"]["Attributes"]["name"], e["scope"]) for e in created] == \
            [("service", "create", "ev", "swarm")]
        assert len(created[0]["Actor"]["ID"]) == 25 and created[0]["timeNano"] // 10**9 == created[0]["time"]
        docker(m1, "service", "scale", "--detach", "ev=2")
        docker(m1, "secret", "create", "evs", "-", input="x")
        docker(m1, "node", "update", "--availability", "pause", "m1")
        docker(m1, "service", "rm", "ev")
        seen = read_until(everything, removed, 30)
        kinds = [(e["Type"], e["Action"]) for e in seen]
        assert ("secret", "create") in kinds and ("service", "remove") in kinds, kinds
        scaled = next(e for e in seen if e["Type"] == "service" and "replicas.new" in e["Actor"]["Attributes"])
        assert scaled["Actor"]["Attributes"]["replicas.old"] == "1" and scaled["Actor"]["Attributes"]["replicas.new"] == "2"
        paused = next(e for e in seen if e["Type"] == "node")
        assert paused["Action"] == "update" and paused["Actor"]["Attributes"]["name"] == "m1"
        assert paused["Actor"]["Attributes"]["availability.new"] == "pause"
        only_services = read_until(services, removed, 30)
        assert {e["Type"] for e in only_services} == {"service"}
        assert [e["Action"] for e in created + only_services][-1] == "remove"
    finally:
        for proc in (services, everything):
            proc.kill()
            proc.wait()
    # a bounded replay (--since/--until) with the default format ends by itself; the 20.10 client too
    until = f"{time.time():.9f}"
    for binary in (None, OLD_DOCKER if old_docker() else None):
        out = docker(m1, "events", "--since", t0, "--until", until, "--filter", "type=secret", binary=binary,
                     timeout=20).stdout
        assert out.strip().endswith("(name=evs)") and " secret create " in out, out
    bad = docker(m1, "events", "--filter", "colour=red", "--since", t0, "--until", until, check=False)
    assert bad.returncode != 0 and "invalid filter 'colour'" in bad.stderr

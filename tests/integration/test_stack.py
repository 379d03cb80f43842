"""`swarm stack` against a real daemon and runc containers: a stack of three services with
its own network and a published port deploys; re-deploying the same file changes nothing
(spec versions unchanged); a changed service is the only one updated; --prune removes a
service dropped from the file; `stack rm` removes its services and networks. Bad input
fails with one sentence before anything is created."""
import pytest

from swarm.cli.common import LocalDaemon
from swarm.lab.localcluster import eventually

STACK = """
version: "3.8"
services:
  web:
    image: demo:1
    command: ["sh", "-c", "echo hello > /tmp/i.html; exec httpd -f -p 80 -h /tmp"]
    environment:
      MODE: ${MODE:-prod}
    ports: ["18090:80"]
    networks: [front, back]
    deploy:
      replicas: 1
      update_config: {parallelism: 1, delay: 0s, order: start-first}
  api:
    image: demo:1
    command: sleep 3600
    networks:
      back:
        aliases: [backend]
    stop_grace_period: 1s
    build: .
WORKER
networks:
  front:
  back:
    attachable: true
"""
WORKER = """  worker:
    image: demo:1
    command: sleep 3600
    stop_grace_period: 1s
"""
STACK = STACK.replace("WORKER\n", WORKER)


@pytest.fixture
def node(swarm, demo_tar):
    try:
        m1 = swarm.init("m1")
        swarm.run(m1, "image", "import", demo_tar, "demo:1")
        yield swarm, m1, LocalDaemon(m1.state_dir)
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def deploy(swarm, m1, path, *extra, check=True):
    return swarm.run(m1, "stack", "deploy", "-c", str(path), "--resolve-image", "never", *extra, "vote",
                     check=check, timeout=120)


def versions(api):
    rows = api.call("service.ls", {"filters": {"label": ["com.docker.stack.namespace=vote"]}})
    views = api.call("service.inspect", {"refs": [r["id"] for r in rows]}) if rows else []
    return {v["spec"]["name"]: v["spec_version"] for v in views}


def stack_networks(api):
    return sorted(n["name"] for n in api.call("network.ls", {"filters": {"label": ["com.docker.stack.namespace=vote"]}}))


def running(api, expected):
    """Are the services as expected ("1/1")? An AssertionError with the tasks' states says why not."""
    now = {r["name"]: r["replicas"] for r in api.call("service.ls", {})}
    if now != expected:
        tasks = [(t["name"], t["state"], t["error"] or t["message"]) for t in api.call("service.ps", {})]
        raise AssertionError(f"{now}; tasks {tasks}")
    return True


def test_stack_deploy_redeploy_update_prune_rm(node, tmp_path):
    swarm, m1, api = node
    bad = tmp_path / "bad.yml"
    bad.write_text(STACK.replace("${MODE:-prod}", "${DB_PASSWORD:?set DB_PASSWORD}"))
    proc = deploy(swarm, m1, bad, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == (f"Error: {bad}, line 8: services.web.environment.MODE cannot be interpolated: "
                                   "required variable DB_PASSWORD is missing a value: set DB_PASSWORD")
    assert stack_networks(api) == [] and versions(api) == {}      # nothing was created

    path = tmp_path / "stack.yml"
    path.write_text(STACK)
    proc = deploy(swarm, m1, path)
    assert proc.stdout.splitlines() == [
        "Creating network vote_back", "Creating network vote_default", "Creating network vote_front",
        "Creating service vote_api", "Creating service vote_web", "Creating service vote_worker"]
    assert "Ignoring unsupported options: build" in proc.stderr
    eventually(lambda: running(api, {"vote_api": "1/1", "vote_web": "1/1", "vote_worker": "1/1"}), 90,
               "the stack's tasks running")
    web = api.call("service.inspect", {"refs": ["vote_web"]})[0]
    ids = {n["name"]: n["id"] for n in api.call("network.ls", {})}
    assert [(p["published"], p["target"]) for p in web["spec"]["ports"]] == [(18090, 80)]
    assert sorted(web["spec"]["networks"]) == sorted([ids["vote_front"], ids["vote_back"]])
    assert web["spec"]["network_aliases"] == {ids["vote_front"]: ["web"], ids["vote_back"]: ["web"]}
    api_spec = api.call("service.inspect", {"refs": ["vote_api"]})[0]["spec"]
    assert api_spec["network_aliases"] == {ids["vote_back"]: ["backend", "api"]}
    assert web["spec"]["labels"]["com.docker.stack.namespace"] == "vote"
    assert stack_networks(api) == ["vote_back", "vote_default", "vote_front"]

    ls = swarm.run(m1, "stack", "ls").stdout.splitlines()
    assert ls[0].split() == ["NAME", "SERVICES"] and ls[1].split() == ["vote", "3"]
    services = swarm.run(m1, "stack", "services", "vote").stdout.splitlines()
    assert [line.split()[1] for line in services[1:]] == ["vote_api", "vote_web", "vote_worker"]
    ps = swarm.run(m1, "stack", "ps", "vote", "--format", "{{.Name}} {{.DesiredState}}").stdout.split("\n")
    assert sorted(filter(None, ps)) == ["vote_api.1 Running", "vote_web.1 Running", "vote_worker.1 Running"]

    # the same file again: nothing to do, no spec changes
    before = versions(api)
    proc = deploy(swarm, m1, path)
    assert proc.stdout == ""
    assert versions(api) == before

    # one service changed: only it is updated (with its update config), the others stay
    path.write_text(STACK.replace("${MODE:-prod}", "dev"))
    proc = deploy(swarm, m1, path)
    web_id = api.call("service.inspect", {"refs": ["vote_web"]})[0]["id"]
    assert proc.stdout.splitlines() == [f"Updating service vote_web (id: {web_id})"]
    after = versions(api)
    assert after == {**before, "vote_web": before["vote_web"] + 1}
    web = api.call("service.inspect", {"refs": ["vote_web"]})[0]
    assert web["spec"]["container"]["env"] == ["MODE=dev"]
    assert web["spec"]["update_config"]["order"] == "start-first"
    eventually(lambda: any(t["state"] == "running" and t["spec_version"] == after["vote_web"]
                           for t in api.call("service.ps", {"refs": ["vote_web"]})), 60, "the updated web task")

    # a service dropped from the file stays, unless --prune
    path.write_text(STACK.replace("${MODE:-prod}", "dev").replace(WORKER, ""))
    assert deploy(swarm, m1, path).stdout == ""
    assert "vote_worker" in versions(api)
    proc = deploy(swarm, m1, path, "--prune")
    assert proc.stdout.splitlines() == ["Removing service vote_worker"]
    assert sorted(versions(api)) == ["vote_api", "vote_web"]

    proc = swarm.run(m1, "stack", "rm", "vote", timeout=60)
    assert proc.stdout.splitlines() == ["Removing service vote_api", "Removing service vote_web",
                                        "Removing network vote_back", "Removing network vote_default",
                                        "Removing network vote_front"]
    assert versions(api) == {} and stack_networks(api) == []
    assert [line.split() for line in swarm.run(m1, "stack", "ls").stdout.splitlines()] == [["NAME", "SERVICES"]]
    eventually(lambda: not [t for t in api.call("service.ps", {}) if t["state"] == "running"], 60,
               "the stack's tasks stopped")
    proc = swarm.run(m1, "stack", "rm", "vote")
    assert proc.stderr.strip() == "Nothing found in stack: vote"

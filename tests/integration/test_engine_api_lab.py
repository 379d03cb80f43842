"""The docker CLI alone, from `docker swarm init` to `docker stack rm`, on a 3-host lab.

A `swarm lab` builds three hosts (network namespaces, our daemons); every node then leaves with
`docker swarm leave` (the daemons keep serving docker.sock, inactive, as dockerd), and the swarm
is made again with the docker CLI only: `docker swarm init` on h1, `docker swarm join` on h2
(docker 28) and h3 (Debian's docker.io 20.10 client). Debian's 20.10 client deploys a compose
file with a secret, a config, two networks and a published port (it converts the file itself);
the newer CLI checks the services, the tasks on every host, the secret and the config read by
the tasks, and the published port answering on every host's address through the routing mesh;
`docker stack rm` then leaves no service, network, secret or config."""
import json
import os
import subprocess
import types
import uuid

import pytest

from swarm.lab.localcluster import eventually
from tests.integration.test_engine_api import OLD_DOCKER, docker, old_docker
from tests.integration.test_networking import PY, ROOT, swarm
from tests.integration.test_stack_lab import FETCH

pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)

HOSTS = ("h1", "h2", "h3")
PASSWORD = "s3cret"
CONF = "colour=green"
PORT = 18090
STACK = f"""
version: "3.8"
services:
  web:
    image: demo:1
    command: ["sh", "-c", "echo \\"pw=$$(cat /run/secrets/pw) conf=$$(cat /etc/app.conf)\\"; mkdir -p /tmp/www; echo web > /tmp/www/i.html; exec httpd -f -p 80 -h /tmp/www"]
    ports:
      - "{PORT}:80"
    networks: [front, back]
    secrets: [pw]
    configs:
      - source: conf
        target: /etc/app.conf
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
  worker:
    image: demo:1
    command: ["sleep", "1000"]
    networks: [back]
networks:
  front: {{}}
  back: {{}}
secrets:
  pw:
    file: ./pw.txt
configs:
  conf:
    file: ./app.conf
"""

@pytest.fixture
def lab():
    name = "d" + uuid.uuid4().hex[:6]
    try:
        swarm("lab", "up", "--nodes", "3", "--name", name, timeout=180)
        labs = json.loads(swarm("lab", "ls", "--format", "json").stdout)
        hosts = {h["name"]: h for entry in labs if entry["name"] == name for h in entry["hosts"]}
        yield name, hosts
    finally:
        swarm("lab", "down", "--name", name, check=False, timeout=180)


def node(host: dict) -> types.SimpleNamespace:
    return types.SimpleNamespace(state_dir=host["state_dir"])


def lines(proc) -> list[str]:
    return [line.rstrip() for line in proc.stdout.strip().splitlines()]


def test_docker_cli_from_swarm_init_to_stack_rm_on_a_lab(lab, tmp_path, demo_tar):
    name, hosts = lab
    h1, h2, h3 = (node(hosts[h]) for h in HOSTS)
    ip = {h: hosts[h]["addr"].split(":")[0] for h in HOSTS}
    assert old_docker()

    # Out of the lab's swarm: the daemons stay, inactive.
    for host in (h3, h2):
        assert docker(host, "swarm", "leave").stdout == "Node left the swarm.\n"
    assert docker(h1, "swarm", "leave", "--force").stdout == "Node left the swarm.\n"
    for host in (h1, h2, h3):
        assert docker(host, "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"

    # A swarm made with the docker CLI only.
    out = docker(h1, "swarm", "init", "--advertise-addr", ip["h1"]).stdout
    assert out.startswith("Swarm initialized: current node (")
    token = docker(h1, "swarm", "join-token", "-q", "worker").stdout.strip()
    manager = f"{ip['h1']}:2377"
    assert docker(h2, "swarm", "join", "--token", token, "--advertise-addr", ip["h2"], manager).stdout == \
        "This node joined a swarm as a worker.\n"
    assert docker(h3, "swarm", "join", "--token", token, "--advertise-addr", ip["h3"], manager,
                  binary=OLD_DOCKER).stdout == "This node joined a swarm as a worker.\n"
    # (docker swarm init/join take no hostname: the nodes are named after the machine, as dockerd's)
    eventually(lambda: lines(docker(h1, "node", "ls", "--format", "{{.Status}}")) == ["Ready"] * 3, 30,
               "three nodes ready")
    for h in HOSTS:      # no registry here: the image is imported on each node
        swarm("lab", "exec", "--name", name, h, "--", "swarm", "image", "import", demo_tar, "demo:1")
    # The managers learn a node's images from its next report: until then a create is refused.
    eventually(lambda: docker(h1, "service", "create", "--detach", "--no-resolve-image", "--replicas", "0",
                              "--name", "probe", "demo:1", check=False).returncode == 0, 30, "demo:1 known")
    docker(h1, "service", "rm", "probe")

    # The stack, deployed by Debian's 20.10 client (API 1.41), which converts the compose file itself.
    (tmp_path / "pw.txt").write_text(PASSWORD)
    (tmp_path / "app.conf").write_text(CONF)
    (tmp_path / "stack.yml").write_text(STACK)
    env_cwd = os.getcwd()
    os.chdir(tmp_path)       # the CLI reads the secret and config files relative to the compose file
    try:
        out = docker(h1, "stack", "deploy", "--resolve-image", "never", "-c", "stack.yml", "app", binary=OLD_DOCKER)
    finally:
        os.chdir(env_cwd)
    for made in ("Creating network app_front", "Creating network app_back", "Creating secret app_pw",
                 "Creating config app_conf", "Creating service app_web", "Creating service app_worker"):
        assert made in out.stdout, out.stdout

    eventually(lambda: sorted(lines(docker(h1, "stack", "services", "app", "--format",
                                           "{{.Name}} {{.Replicas}} {{.Ports}}"))) ==
               ["app_web 3/3 (max 1 per node) *:18090->80/tcp", "app_worker 1/1"], 90, "the stack running")
    # one web task on each node (max 1 per node, 3 running), each Running. A task that ended
    # (rejected under load, once in CI) keeps desired state running here until its slot's history
    # is trimmed, where Docker's restart sets it to shutdown: it is left out, its error shown.
    rows = lines(docker(h1, "service", "ps", "app_web", "--filter", "desired-state=running",
                        "--format", "{{.CurrentState}} | {{.Error}}"))
    current = [r for r in rows if not r.startswith(("Rejected", "Failed", "Complete", "Shutdown"))]
    assert len(current) == 3 and all(r.startswith("Running") for r in current), rows
    eventually(lambda: docker(h1, "service", "logs", "app_web").stdout.count(f"pw={PASSWORD} conf={CONF}") == 3,
               30, "every web task reading its secret and config")

    # The published port answers on every host's address (the routing mesh), seen from h1's namespace.
    urls = [f"http://{ip[h]}:{PORT}/i.html" for h in HOSTS]
    fetched = subprocess.run(["ip", "netns", "exec", hosts["h1"]["netns"], PY, "-c", FETCH, *urls],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert json.loads(fetched.stdout or "{}") == {url: "web" for url in urls}, fetched.stderr

    out = docker(h1, "stack", "rm", "app").stdout
    for gone in ("Removing service app_web", "Removing service app_worker", "Removing secret app_pw",
                 "Removing config app_conf", "Removing network app_front", "Removing network app_back"):
        assert gone in out, out
    assert docker(h1, "service", "ls", "-q").stdout.strip() == ""
    assert docker(h1, "secret", "ls", "-q").stdout.strip() == "" and docker(h1, "config", "ls", "-q").stdout.strip() == ""
    assert lines(docker(h1, "network", "ls", "--filter", "label=com.docker.stack.namespace=app", "-q")) == []
    assert lines(docker(h1, "stack", "ls", binary=OLD_DOCKER)) == ["NAME      SERVICES   ORCHESTRATOR"]

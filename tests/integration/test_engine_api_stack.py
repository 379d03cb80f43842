"""`docker stack deploy/ls/services/ps/rm` with the real docker CLI against our Engine API:
the CLI converts the compose file itself and drives the API with label filters
(com.docker.stack.namespace=NAME), lookups by name and create-or-update by version."""
import json
import os

from swarm.lab.localcluster import eventually
from tests.integration.test_engine_api import OLD_DOCKER, old_docker, docker, one  # noqa: F401 (one: fixture)

PASSWORD = "hunter2"
CONF = "key=value"

# `$$` is a `$` after the compose file's interpolation. web prints what it reads of its
# secret and config (the proof both reached the task), then serves HTTP on 80.
STACK = """
version: "3.8"
services:
  web:
    image: demo:1
    command: ["sh", "-c", "echo \\"pw=$$(cat /run/secrets/pw) conf=$$(cat /etc/app.conf)\\"; mkdir -p /tmp/www; echo hi > /tmp/www/i.html; exec httpd -f -p 80 -h /tmp/www"]
    ports:
      - "18081:80"
    networks: [front, back]
    secrets: [pw]
    configs:
      - source: conf
        target: /etc/app.conf
    deploy:
      replicas: REPLICAS
      labels: {tier: front}
  worker:
    image: demo:1
    command: ["sleep", "1000"]
    networks: [back]
    environment:
      A: "1"
networks:
  front: {}
  back:
    labels: {role: back}
secrets:
  pw:
    file: ./pw.txt
configs:
  conf:
    file: ./app.conf
"""


def lines(proc) -> list[str]:
    return [line.rstrip() for line in proc.stdout.strip().splitlines()]


def test_stack_deploy_ls_services_ps_rm_with_the_docker_cli(one, tmp_path):
    swarm, m1 = one
    (tmp_path / "pw.txt").write_text(PASSWORD)
    (tmp_path / "app.conf").write_text(CONF)
    compose = tmp_path / "stack.yml"
    compose.write_text(STACK.replace("REPLICAS", "2"))
    os.chdir(tmp_path)       # docker/cli reads the secret and config files relative to the compose file's dir

    out = docker(m1, "stack", "deploy", "-c", str(compose), "app").stdout
    for made in ("Creating network app_front", "Creating network app_back", "Creating secret app_pw",
                 "Creating config app_conf", "Creating service app_web", "Creating service app_worker"):
        assert made in out, out
    # what the CLI made through the API: labelled with the stack, found by the label filters
    assert lines(docker(m1, "stack", "ls", "--format", "{{.Name}} {{.Services}}")) == ["app 2"]
    eventually(lambda: sorted(lines(docker(m1, "stack", "services", "app", "--format",
                                           "{{.Name}} {{.Replicas}} {{.Ports}}"))) ==
               ["app_web 2/2 *:18081->80/tcp", "app_worker 1/1"], 60, "the stack's services running")
    ps = lines(docker(m1, "stack", "ps", "app", "--format", "{{.Name}} {{.Node}} {{.CurrentState}}"))
    assert sorted(r.split()[0] for r in ps) == ["app_web.1", "app_web.2", "app_worker.1"], ps
    assert all(r.split()[1:3] == ["m1", "Running"] for r in ps), ps
    assert docker(m1, "network", "inspect", "app_back", "--format", "{{json .Labels}}").stdout.strip() == \
        '{"com.docker.stack.namespace":"app","role":"back"}'
    assert lines(docker(m1, "secret", "ls", "--filter", "label=com.docker.stack.namespace=app",
                        "--format", "{{.Name}}")) == ["app_pw"]
    spec = json.loads(docker(m1, "service", "inspect", "app_web", "--format", "{{json .Spec}}").stdout)
    assert spec["Labels"] == {"com.docker.stack.image": "demo:1", "com.docker.stack.namespace": "app",
                              "tier": "front"}
    assert spec["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 18081,
                                              "PublishMode": "ingress"}]
    assert sorted(n["Aliases"] for n in spec["TaskTemplate"]["Networks"]) == [["web"], ["web"]]
    # the secret and the config reached the tasks at their targets
    eventually(lambda: docker(m1, "service", "logs", "app_web").stdout.count(f"pw={PASSWORD} conf={CONF}") == 2,
               30, "both web tasks logging their secret and config")
    if old_docker():          # Debian's docker.io 20.10 client (API 1.41)
        assert lines(docker(m1, "stack", "ls", binary=OLD_DOCKER))[1:] == ["app       2          Swarm"]
        assert sorted(lines(docker(m1, "stack", "services", "app", "--format", "{{.Name}}", binary=OLD_DOCKER))) \
            == ["app_web", "app_worker"]

    # a second deploy updates in place: compare-and-set on the versions the CLI read
    version = int(docker(m1, "service", "inspect", "app_web", "--format", "{{.Version.Index}}").stdout)
    compose.write_text(STACK.replace("REPLICAS", "3"))
    out = docker(m1, "stack", "deploy", "-c", str(compose), "app").stdout
    assert "Updating service app_web" in out and "Creating" not in out, out
    assert int(docker(m1, "service", "inspect", "app_web", "--format", "{{.Version.Index}}").stdout) > version
    eventually(lambda: "app_web 3/3" in docker(m1, "stack", "services", "app", "--format",
                                               "{{.Name}} {{.Replicas}}").stdout, 60, "web scaled to 3")
    # a secret's value cannot change under a stack (Docker's: only labels may be updated)
    (tmp_path / "pw.txt").write_text("other")
    refused = docker(m1, "stack", "deploy", "-c", str(compose), "app", check=False)
    assert refused.returncode == 1 and "only updates to Labels are allowed" in refused.stderr, refused.stderr

    out = docker(m1, "stack", "rm", "app").stdout
    for gone in ("Removing service app_web", "Removing service app_worker", "Removing secret app_pw",
                 "Removing config app_conf", "Removing network app_front", "Removing network app_back"):
        assert gone in out, out
    assert docker(m1, "service", "ls", "-q").stdout.strip() == ""
    assert lines(docker(m1, "network", "ls", "--format", "{{.Name}}")) == ["ingress"]
    assert docker(m1, "secret", "ls", "-q").stdout.strip() == "" and docker(m1, "config", "ls", "-q").stdout.strip() == ""
    assert docker(m1, "stack", "ls").stdout.strip() == "NAME      SERVICES"
    eventually(lambda: docker(m1, "stack", "ps", "app", check=False).returncode != 0 or
               docker(m1, "stack", "ps", "app", "-q").stdout.strip() == "", 60, "the stack's tasks gone")

"""The Engine API on STATE_DIR/docker.sock, driven by the real docker CLI (28.x, API 1.50) and
docker-py against real daemons: one node, then three (a manager and two workers)."""
import json
import os
import resource
import shutil
import socket
import stat
import subprocess

import pytest

from swarm.engineapi.server import MAX_CONNECTIONS
from swarm.lab.localcluster import Swarm, eventually

# The docker CLI of machines of this kind (28.x, API 1.50); Debian's docker.io client is older.
DOCKER = shutil.which("docker", path="/usr/local/bin") or shutil.which("docker") or "docker"


OLD_DOCKER = "/usr/bin/docker"     # Debian's docker.io client, 20.10 (API 1.41)


def old_docker() -> bool:
    """The 20.10 client is here (scripts/setup.sh installs it): its checks never skip."""
    assert os.path.exists(OLD_DOCKER), "Debian's docker.io client is missing: run scripts/setup.sh"
    return True


def docker(node, *args, check=True, timeout=90, input=None, binary=None):
    env = dict(os.environ, DOCKER_HOST=f"unix://{node.state_dir}/docker.sock",
               DOCKER_CONFIG=os.path.join(node.state_dir, "docker-cli-config"))
    env.pop("DOCKER_API_VERSION", None)
    proc = subprocess.run([binary or DOCKER, *args], capture_output=True, text=True, env=env, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def raw_request(node, request: bytes, timeout=10.0) -> tuple[int, dict | str]:
    """One HTTP/1.1 request on the node's docker.sock: (status, JSON body or text)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(os.path.join(node.state_dir, "docker.sock"))
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass              # answered (413) and closed before the whole body was sent: read the answer
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


@pytest.fixture
def one(tmp_path, demo_tar):
    swarm = Swarm(str(tmp_path))
    try:
        m1 = swarm.init("m1")
        swarm.run(m1, "image", "import", demo_tar, "demo:1")
        yield swarm, m1
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def test_docker_cli_drives_a_one_node_swarm(one):
    swarm, m1 = one
    sock = os.path.join(m1.state_dir, "docker.sock")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert "Server: swarm-py" in docker(m1, "version").stdout
    info = docker(m1, "info").stdout
    assert "Swarm: active" in info and "Is Manager: true" in info and "Managers: 1" in info
    assert docker(m1, "system", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"
                  ).stdout.strip() == "active true"

    # the swarm: tokens, settings, the unlock key (autolock off: docker/cli's sentence)
    token = docker(m1, "swarm", "join-token", "-q", "worker").stdout.strip()
    assert token == swarm.token(m1, "worker")
    assert f"docker swarm join --token {token} {m1.addr}" in docker(m1, "swarm", "join-token", "worker").stdout
    docker(m1, "swarm", "join-token", "--rotate", "-q", "worker")
    assert swarm.token(m1, "worker") not in (token, "")
    docker(m1, "swarm", "update", "--task-history-limit", "3")
    assert swarm.json(m1, "info")["task_history_limit"] == 3
    assert docker(m1, "info", "--format", "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}}"
                  ).stdout.strip() == "3"
    assert "no unlock key is set" in docker(m1, "swarm", "unlock-key", check=False).stderr
    # an older client negotiates down (docker.io 20.10 speaks API 1.41)
    if old_docker():
        assert docker(m1, "version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}",
                      binary=OLD_DOCKER).stdout.strip() == "1.41 1.50"

    # nodes
    assert docker(m1, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").stdout.strip() == \
        "m1 Ready Leader"
    docker(m1, "node", "update", "--label-add", "zone=a", "m1")
    assert docker(m1, "node", "inspect", "m1", "--format", "{{json .Spec.Labels}}").stdout.strip() == '{"zone":"a"}'
    assert "Hostname:" in docker(m1, "node", "inspect", "--pretty", "self").stdout

    # networks, secrets, configs (a secret's value is in no answer)
    net_id = docker(m1, "network", "create", "-d", "overlay", "--label", "t=1", "appnet").stdout.strip()
    assert "appnet overlay swarm" in docker(m1, "network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout
    assert docker(m1, "network", "inspect", "appnet", "--format", "{{.Id}}").stdout.strip() == net_id
    docker(m1, "secret", "create", "pw", "-", input="hunter2")
    assert "hunter2" not in docker(m1, "secret", "inspect", "pw").stdout
    docker(m1, "config", "create", "conf", "-", input="key=value")
    assert docker(m1, "config", "inspect", "conf", "--format", "{{printf \"%s\" .Spec.Data}}").stdout.strip() == \
        "key=value"

    # a service with many flags: what inspect gives back is what was sent
    out = docker(m1, "service", "create", "--name", "web", "--replicas", "2", "--publish", "18080:80",
                 "--env", "A=1", "--label", "tier=front", "--constraint", "node.labels.zone==a",
                 "--network", "appnet", "--mount", "type=tmpfs,target=/cache,tmpfs-size=1048576",
                 "--restart-condition", "on-failure", "--restart-delay", "2s", "--update-parallelism", "2",
                 "--update-delay", "3s", "--limit-cpu", "0.5", "--limit-memory", "64M",
                 "--health-cmd", "true", "--health-interval", "5s", "--secret", "pw", "--config",
                 "source=conf,target=/etc/app.conf", "--stop-grace-period", "7s",
                 "--no-resolve-image", "demo:1", "sh", "-c", "echo hello from $HOSTNAME; exec sleep 1000",
                 timeout=120)
    assert "converged" in out.stdout + out.stderr
    spec = json.loads(docker(m1, "service", "inspect", "web", "--format", "{{json .Spec}}").stdout)
    c = spec["TaskTemplate"]["ContainerSpec"]
    assert c["Args"] == ["sh", "-c", "echo hello from $HOSTNAME; exec sleep 1000"] and c["Env"] == ["A=1"]
    assert c["StopGracePeriod"] == 7_000_000_000 and c["Healthcheck"]["Interval"] == 5_000_000_000
    assert c["Mounts"] == [{"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 1048576}}]
    assert [s["SecretName"] for s in c["Secrets"]] == ["pw"]
    assert c["Configs"][0]["File"]["Name"] == "/etc/app.conf"
    assert spec["TaskTemplate"]["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 64 << 20}
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "on-failure"
    assert spec["TaskTemplate"]["RestartPolicy"]["Delay"] == 2_000_000_000
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.zone==a"]
    assert spec["TaskTemplate"]["Networks"] == [{"Target": net_id}]
    assert spec["UpdateConfig"]["Parallelism"] == 2 and spec["UpdateConfig"]["Delay"] == 3_000_000_000
    assert spec["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 18080,
                                              "PublishMode": "ingress"}]
    assert spec["Labels"] == {"tier": "front"} and spec["Mode"] == {"Replicated": {"Replicas": 2}}

    assert docker(m1, "service", "ls", "--format", "{{.Name}} {{.Replicas}}").stdout.strip() == "web 2/2"
    pretty = docker(m1, "service", "inspect", "--pretty", "web").stdout
    assert "Replicas:\t2" in pretty and "Parallelism:\t2" in pretty and "/cache" in pretty, pretty
    if old_docker():
        assert docker(m1, "service", "ls", "--format", "{{.Name}} {{.Replicas}}", binary=OLD_DOCKER
                      ).stdout.strip() == "web 2/2"
    ps = docker(m1, "service", "ps", "web", "--format", "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}}")
    rows = ps.stdout.strip().splitlines()
    assert len(rows) == 2 and all(r.split()[1:4] == ["m1", "Running", "Running"] for r in rows), rows
    logs = docker(m1, "service", "logs", "--tail", "5", "web").stdout
    assert "| hello from" in logs and "web.1." in logs and "@m1" in logs

    # update (compare-and-set on the version the CLI read), scale, rollback
    docker(m1, "service", "update", "--env-add", "B=2", "--detach", "web")
    # sorted: docker/cli's updateEnvironment rebuilds the list from a Go map (any order)
    assert sorted(json.loads(docker(m1, "service", "inspect", "web", "--format",
                                    "{{json .Spec.TaskTemplate.ContainerSpec.Env}}").stdout)) == ["A=1", "B=2"]
    docker(m1, "service", "scale", "--detach", "web=3")
    eventually(lambda: docker(m1, "service", "ls", "--format", "{{.Replicas}}").stdout.strip() == "3/3", 60,
               "scaled to 3")
    docker(m1, "service", "rollback", "--detach", "web")
    assert json.loads(docker(m1, "service", "inspect", "web", "--format",
                             "{{json .Spec.TaskTemplate.ContainerSpec.Env}}").stdout) == ["A=1"]

    # errors: Docker's statuses and sentences
    version = int(docker(m1, "service", "inspect", "web", "--format", "{{.Version.Index}}").stdout)
    status, body = raw_request(m1, post(f"/v1.50/services/web/update?version={version - 1}", json.dumps(
        json.loads(docker(m1, "service", "inspect", "web", "--format", "{{json .Spec}}").stdout)).encode()))
    assert status == 409 and "update out of sequence" in body["message"]
    node_version = int(docker(m1, "node", "inspect", "m1", "--format", "{{.Version.Index}}").stdout)
    status, body = raw_request(m1, post(f"/v1.50/nodes/m1/update?version={node_version - 1}",
                                        b'{"Role": "manager", "Availability": "drain"}'))
    assert status == 409 and "update out of sequence" in body["message"]
    assert docker(m1, "node", "inspect", "m1", "--format", "{{.Spec.Availability}}").stdout.strip() == "active"
    missing = docker(m1, "service", "inspect", "nosuch", check=False)
    assert missing.returncode == 1 and "no such service: nosuch" in missing.stderr.lower()
    taken = docker(m1, "service", "create", "--name", "web", "--detach", "--no-resolve-image", "demo:1", check=False)
    assert taken.returncode == 1 and "already exists" in taken.stderr
    assert "not served" in docker(m1, "ps", check=False).stderr

    docker(m1, "service", "rm", "web")
    docker(m1, "secret", "rm", "pw")
    docker(m1, "config", "rm", "conf")
    eventually(lambda: docker(m1, "network", "rm", "appnet", check=False).returncode == 0, 30, "network removed")
    assert docker(m1, "service", "ls", "-q").stdout.strip() == ""


def test_bad_input_on_the_socket_is_refused_and_changes_nothing(one):
    swarm, m1 = one
    docker(m1, "service", "create", "--name", "keep", "--detach", "--no-resolve-image", "demo:1", "sleep", "1000")
    before = docker(m1, "service", "inspect", "keep", "--format", "{{json .}}").stdout
    bad = [
        (post("/v1.50/services/create", b'{"Name": "x", "TaskTemplate": '), 400, "invalid JSON"),
        (post("/v1.50/services/create", b'{"Name": 5}'), 400, "Name must be of type string"),
        (post("/v1.50/services/create", json.dumps({"Name": "x", "TaskTemplate": {"ContainerSpec": {
            "Image": "demo:1", "Privileges": {"NoNewPrivileges": True}}}}).encode()), 400,
         "TaskTemplate.ContainerSpec.Privileges.NoNewPrivileges is not supported"),
        (post("/v1.50/services/create", b'{"Name": "x", "Frobnicate": 1}'), 400, "Frobnicate"),
        (post("/v1.50/services/create", b'{"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": ""}}}'), 400,
         "an image is required"),
        (post("/v1.50/services/keep/update?version=abc", b"{}"), 400, "version"),
        (post("/v1.50/secrets/create", b'{"Name": "s", "Data": "' + b"A" * (2 << 20) + b'"}'), 413, "too large"),
        (post("/v1.99/services/create", b"{}"), 400, "too new"),
    ]
    for request, status, message in bad:
        got, body = raw_request(m1, request)
        assert got == status and message in body["message"], (request[:80], got, body)
    # 10,000 idle connections at once: the daemon serves at most MAX_CONNECTIONS of them, the
    # kernel queues a backlog and refuses the rest (EAGAIN); its descriptors stay bounded, idle
    # ones are closed after the keep-alive, and then it answers again
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 10_500), hard))
    attempts = min(10_000, min(hard, 10_500) - 300)
    idle, refused = [], 0
    try:
        for _ in range(attempts):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(os.path.join(m1.state_dir, "docker.sock"))
                idle.append(s)
            except BlockingIOError:
                refused += 1
                s.close()
        assert len(idle) + refused == attempts and len(idle) >= MAX_CONNECTIONS, (len(idle), refused)
        def fds() -> int:
            return len(os.listdir(f"/proc/{m1.pid}/fd"))
        # the daemon takes connections up to its cap, and no more while they stay open
        eventually(lambda: fds() >= MAX_CONNECTIONS, 30, "the daemon at its connection cap")
        assert max(fds() for _ in range(20)) < MAX_CONNECTIONS + 300
        eventually(lambda: docker(m1, "service", "ls", "--format", "{{.Name}}", check=False, timeout=20
                                  ).stdout.strip() == "keep", 60, "the daemon answering again")
        idle[0].setblocking(True)
        idle[0].settimeout(15)
        assert idle[0].recv(1) == b""          # closed by the server after its keep-alive timeout
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert docker(m1, "service", "inspect", "keep", "--format", "{{json .}}").stdout == before
    assert docker(m1, "service", "ls", "-q").stdout.split() == [json.loads(before)["ID"][:12]]
    assert docker(m1, "secret", "ls", "-q").stdout.strip() == ""


def test_docker_py_drives_services_nodes_secrets_and_networks(one):
    import docker as docker_py

    swarm, m1 = one
    client = docker_py.DockerClient(base_url=f"unix://{m1.state_dir}/docker.sock", version="auto")
    try:
        assert [n.attrs["Description"]["Hostname"] for n in client.nodes.list()] == ["m1"]
        assert client.swarm.attrs["JoinTokens"]["Worker"].startswith("SWMTKN-1-")
        net = client.networks.create("pynet", driver="overlay")
        assert client.networks.get(net.id).name == "pynet"
        secret = client.secrets.create(name="pysecret", data=b"s3cret", labels={"a": "b"})
        assert client.secrets.get(secret.id).name == "pysecret"
        service = client.services.create("demo:1", ["sleep", "1000"], name="pysvc", env=["X=1"],
                                         networks=["pynet"], mode=docker_py.types.ServiceMode("replicated", 1))
        assert [s.name for s in client.services.list()] == ["pysvc"]
        # Once it runs (the allocator's write is behind it): an update with the version just read
        # is not "out of sequence" because of it.
        eventually(lambda: [t["Status"]["State"] for t in client.services.get("pysvc").tasks()] == ["running"], 60,
                   "the task running")
        got = client.services.get("pysvc")
        assert got.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["X=1"]
        got.update(env=["X=2"])
        assert client.services.get("pysvc").attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["X=2"]
        client.services.get("pysvc").scale(2)      # a fresh read: the update moved the version (as dockerd's)
        eventually(lambda: len([t for t in client.services.get("pysvc").tasks(filters={"desired-state": "running"})
                                if t["Status"]["State"] == "running"]) == 2, 60, "two tasks running")
        service.remove()
        secret.remove()
        eventually(lambda: _removed(net), 30, "network removed")
        assert client.services.list() == [] and client.secrets.list() == []
    finally:
        client.close()


def _removed(net) -> bool:
    try:
        net.remove()
        return True
    except Exception:
        return False


def test_three_nodes_workers_refuse_and_node_verbs_work(three_nodes):
    swarm, m1, (w1, w2) = three_nodes
    # a worker is no window on the cluster: Docker's 503 sentence
    refused = docker(w1, "service", "ls", check=False)
    assert refused.returncode == 1 and "This node is not a swarm manager" in refused.stderr
    assert docker(w1, "info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() == "false"

    docker(m1, "service", "create", "--name", "g", "--mode", "global", "--detach", "--no-resolve-image",
           "demo:1", "sleep", "1000")
    eventually(lambda: docker(m1, "service", "ls", "--format", "{{.Replicas}}").stdout.strip() == "3/3", 60,
               "one task per node")
    node_ps = docker(m1, "node", "ps", "w1", "--format", "{{.Name}} {{.Node}} {{.CurrentState}}").stdout
    assert "w1 Running" in node_ps

    docker(m1, "node", "promote", "w1")
    eventually(lambda: docker(m1, "node", "inspect", "w1", "--format", "{{.Spec.Role}} {{.ManagerStatus.Reachability}}"
                              ).stdout.strip() == "manager reachable", 60, "w1 promoted and reachable")
    eventually(lambda: docker(w1, "service", "ls", "--format", "{{.Name}}", check=False).stdout.strip() == "g",
               60, "w1 answers as a manager")
    docker(m1, "node", "demote", "w1")
    eventually(lambda: docker(m1, "node", "inspect", "w1", "--format", "{{.Spec.Role}}").stdout.strip() == "worker",
               60, "w1 demoted")

    docker(m1, "node", "update", "--availability", "drain", "w2")
    eventually(lambda: "Running" not in docker(m1, "node", "ps", "w2", "--filter", "desired-state=running",
                                               "--format", "{{.CurrentState}}").stdout, 60, "w2 drained")
    swarm.run(w2, "leave")
    eventually(lambda: "Down" in docker(m1, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout, 60,
               "w2 down")
    docker(m1, "node", "rm", "w2")
    assert "w2" not in docker(m1, "node", "ls", "--format", "{{.Hostname}}").stdout
    docker(m1, "service", "rm", "g")

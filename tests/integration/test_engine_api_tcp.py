"""The Engine API over TCP with mutual TLS (`--docker-api tcp://ADDR:PORT`, as dockerd's --tlsverify),
driven by the real docker CLI (28.x, and Debian's docker.io 20.10 client) against a real one-node
swarm on loopback, with certificates made here: clients of the operator's CA are served; no client
certificate, one from another CA and plain HTTP are refused at the handshake while the daemon goes
on serving; the setting outlives a restart; plain TCP needs --docker-api-insecure and is warned about.
The flags' checks and the handshake timeout: tests/unit/test_engineapi_tls.py."""
import os
import subprocess

import pytest

from swarm.lab.localcluster import Swarm, data_path_port_args
from tests.integration.test_engine_api import DOCKER, OLD_DOCKER, old_docker
from tests.unit.test_engineapi_tls import Pki

PORT = 2376


def docker(node, host: str, *args: str, tls: list[str], binary: str = DOCKER, check: bool = True):
    """`docker [tls flags] -H host ARGS`, with a config directory of the node's (no ~/.docker)."""
    env = dict(os.environ, DOCKER_CONFIG=os.path.join(node.state_dir, "docker-cli-config"),
               DOCKER_CERT_PATH=os.path.join(node.state_dir, "no-default-certs"))
    for name in ("DOCKER_HOST", "DOCKER_API_VERSION", "DOCKER_TLS_VERIFY", "DOCKER_CONTEXT"):
        env.pop(name, None)
    proc = subprocess.run([binary, *tls, "-H", host, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def init_args(node, *extra: str) -> list[str]:
    return ["init", "--advertise-addr", node.addr, "--hostname", node.name,
            *data_path_port_args(os.environ.get("PYTEST_XDIST_WORKER", "")), *extra]


def daemon_log(node) -> str:
    with open(os.path.join(node.state_dir, "daemon.log"), errors="replace") as f:
        return f.read()


@pytest.fixture
def swarm(tmp_path):
    s = Swarm(str(tmp_path / "nodes"))
    try:
        yield s
    finally:
        s.stop_all()
        s.stop_containers()


def test_docker_cli_over_mutual_tls(swarm, tmp_path):
    m1 = swarm.node("m1")
    ip = m1.addr.rpartition(":")[0]
    pki = Pki(str(tmp_path / "pki"))
    server_cert, server_key = pki.issue("server", ip=ip)
    client_cert, client_key = pki.issue("client")
    stranger = Pki(str(tmp_path / "other"), "other-ca")
    host = f"tcp://{ip}:{PORT}"
    swarm.run(m1, *init_args(m1, "--docker-api", host, "--docker-api-tlscacert", pki.ca,
                             "--docker-api-tlscert", server_cert, "--docker-api-tlskey", server_key))
    good = ["--tlsverify", "--tlscacert", pki.ca, "--tlscert", client_cert, "--tlskey", client_key]

    def served(binary: str = DOCKER) -> None:
        assert docker(m1, host, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}",
                      tls=good, binary=binary).stdout.strip() == "m1 Ready Leader"

    served()
    assert docker(m1, host, "version", "--format", "{{.Server.APIVersion}}", tls=good).stdout.strip() == "1.50"
    if old_docker():                      # Debian's docker.io 20.10 (API 1.41)
        served(OLD_DOCKER)

    # refused at the handshake: no client certificate, one from another CA, plain HTTP
    no_cert = docker(m1, host, "node", "ls", tls=["--tlsverify", "--tlscacert", pki.ca], check=False)
    assert no_cert.returncode != 0 and "m1" not in no_cert.stdout
    assert "remote error: tls: certificate required" in no_cert.stderr, no_cert.stderr   # the server's alert
    other_cert, other_key = stranger.issue("intruder")
    other = docker(m1, host, "node", "ls", tls=["--tlsverify", "--tlscacert", pki.ca, "--tlscert", other_cert,
                                                 "--tlskey", other_key], check=False)
    assert other.returncode != 0 and "m1" not in other.stdout
    assert "remote error: tls: unknown certificate authority" in other.stderr, other.stderr
    plain = docker(m1, host, "node", "ls", tls=[], check=False)
    assert plain.returncode != 0 and "Client sent an HTTP request to an HTTPS server" in plain.stderr, plain.stderr
    # the server verifies the client, and the client the server: a client trusting another CA refuses us
    wrong_ca = docker(m1, host, "node", "ls", tls=["--tlsverify", "--tlscacert", stranger.ca, "--tlscert",
                                                   client_cert, "--tlskey", client_key], check=False)
    assert wrong_ca.returncode != 0 and "certificate" in wrong_ca.stderr
    served()                                             # the daemon kept serving the good client
    # ... and the unix socket as before
    assert docker(m1, f"unix://{m1.state_dir}/docker.sock", "node", "ls", "-q", tls=[]).stdout.strip()
    log = daemon_log(m1)
    assert f"the Engine API is served on {host} (mutual TLS)" in log and "ERROR" not in log

    # the setting is the node's: a restart serves it again
    swarm.kill(m1)
    swarm.restart(m1)
    served()


def test_plain_tcp_only_with_the_insecure_flag_and_a_warning(swarm):
    m1 = swarm.node("m1")
    host = f"tcp://{m1.addr.rpartition(':')[0]}:{PORT}"
    refused = swarm.run(m1, *init_args(m1, "--docker-api", host), check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f"Error: the Engine API on {host} needs mutual TLS: give --docker-api-tlscacert, "
                              "--docker-api-tlscert and --docker-api-tlskey, or --docker-api-insecure for plain TCP "
                              "(anyone who reaches it controls this node)\n")
    assert not os.path.exists(os.path.join(m1.state_dir, "node.json")) and m1.pid is None   # nothing written

    started = swarm.run(m1, *init_args(m1, "--docker-api", host, "--docker-api-insecure"))
    warning = (f"WARNING: the Engine API on {host} is served over plain TCP without TLS (--docker-api-insecure): "
               "anyone who can reach it controls this node, and root on it")
    assert warning in started.stderr.splitlines()
    assert warning in daemon_log(m1)
    assert docker(m1, host, "node", "ls", "--format", "{{.Hostname}}", tls=[]).stdout.strip() == "m1"


def test_tcp_given_to_init_of_a_running_daemon_is_served_at_once(swarm, tmp_path):
    # `swarm daemon` outside any swarm, then `swarm init --docker-api ...`: the running daemon
    # makes the node and serves TCP with it, without a restart.
    m1 = swarm.node("m1")
    ip = m1.addr.rpartition(":")[0]
    pki = Pki(str(tmp_path / "pki"))
    server_cert, server_key = pki.issue("server", ip=ip)
    client_cert, client_key = pki.issue("client")
    host = f"tcp://{ip}:{PORT}"
    swarm.run(m1, "daemon", "--detach")
    pid = m1.pid
    swarm.run(m1, *init_args(m1, "--docker-api", host, "--docker-api-tlscacert", pki.ca,
                             "--docker-api-tlscert", server_cert, "--docker-api-tlskey", server_key))
    good = ["--tlsverify", "--tlscacert", pki.ca, "--tlscert", client_cert, "--tlskey", client_key]
    assert docker(m1, host, "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}",
                  tls=good).stdout.strip() == "m1 Leader"
    assert m1.pid == pid

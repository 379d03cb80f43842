"""The Engine API over TCP (swarm/engineapi/tls.py, the TCP part of server.py): the --docker-api
flags of init/join/daemon checked together before anything is written, kept in node.json and
replaced when given again; the server's TLS context; and the handshake on loopback with real
certificates (refused clients, a slow handshake, plain HTTP) while the listener goes on. The docker
CLI against a real daemon: tests/integration/test_engine_api_tcp.py."""
from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import os
import socket
import ssl

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarm.daemon.config import NodeConfig
from swarm.engineapi import server
from swarm.engineapi.tls import BadApiSetting, TcpApi, parse_address, server_context, tcp_api
from tests.unit.test_cli import boot  # noqa: F401  (a fixture)


# -- a test PKI (also used by the integration test) ---------------------------------------------

class Pki:
    """A CA writing PEM files under `root`: certificates for servers (an IP in their SAN) and clients."""

    def __init__(self, root: str, name: str = "ca") -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"swarm test {name}")])
        self.cert = (self._builder(subject, self.key.public_key()).issuer_name(subject)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                  key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                  decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca = self._write(f"{name}.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2)))

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.root, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def issue(self, name: str, *, ip: str | None = None, passphrase: bytes | None = None) -> tuple[str, str]:
        """A certificate (a server's with `ip`, else a client's) and its key: their paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
        builder = builder.issuer_name(self.cert.subject)
        if ip is not None:
            builder = (builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)),
                                                                          x509.DNSName("localhost")]), critical=False)
                       .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                      else serialization.NoEncryption())
        return (self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{name}-key.pem", key.private_bytes(serialization.Encoding.PEM,
                                                                 serialization.PrivateFormat.PKCS8, encryption)))


@pytest.fixture
def pki(tmp_path):
    ca = Pki(str(tmp_path / "pki"))
    ca.server_cert, ca.server_key = ca.issue("server", ip="127.0.0.1")
    ca.client_cert, ca.client_key = ca.issue("client")
    return ca


# -- the address -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("tcp://127.0.0.1:2400", ("127.0.0.1", 2400)),
    ("tcp://0.0.0.0", ("0.0.0.0", 2376)),               # dockerd's TLS port by default
    ("tcp://[::1]:2376", ("::1", 2376)),
    ("tcp://node-1.example:65535", ("node-1.example", 65535)),
    ("tcp://10.0.0.1:1/", ("10.0.0.1", 1)),
])
def test_an_address_is_tcp_host_and_port(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text, sentence", [
    ("unix:///var/run/docker.sock", "only tcp:// is served (the unix socket is always STATE_DIR/docker.sock)"),
    ("http://127.0.0.1:2376", "only tcp:// is served"),
    ("127.0.0.1:2376", "expected tcp://HOST[:PORT]"),
    ("tcp://127.0.0.1:0", "the port must be from 1 to 65535"),
    ("tcp://127.0.0.1:65536", "the port must be from 1 to 65535"),
    ("tcp://127.0.0.1:http", "the port must be from 1 to 65535"),
    ("tcp://:2376", "with a host name or an IP address"),
    ("tcp://bad_host:2376", "with a host name or an IP address"),
    ("tcp://127.0.0.1:2376/v1.50", "without a path or user"),
])
def test_a_bad_address_is_one_sentence(text, sentence):
    with pytest.raises(BadApiSetting) as caught:
        parse_address(text)
    assert caught.value.message == f"invalid --docker-api {text!r}: " + caught.value.message.split(": ", 1)[1]
    assert sentence in caught.value.message and "\n" not in caught.value.message


# -- the flags together ------------------------------------------------------------------------

def test_tls_files_load_into_a_setting_with_absolute_paths(pki, monkeypatch):
    monkeypatch.chdir(pki.root)
    setting = tcp_api("tcp://127.0.0.1:2400", "ca.pem", "server.pem", "server-key.pem")
    assert setting == TcpApi("127.0.0.1", 2400, pki.ca, pki.server_cert, pki.server_key)
    assert setting.addr == "tcp://127.0.0.1:2400" and not setting.insecure
    assert tcp_api(None) is None
    assert tcp_api("tcp://[::1]", insecure=True) == TcpApi("::1", 2376, insecure=True)
    assert TcpApi("::1", 2376, insecure=True).addr == "tcp://[::1]:2376"


def test_the_context_is_mutual_tls_12_or_later(pki):
    context = server_context(TcpApi("127.0.0.1", 2400, pki.ca, pki.server_cert, pki.server_key))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(context.get_ca_certs()) == 1


def bad(pki, *args, **kwargs) -> str:
    with pytest.raises(BadApiSetting) as caught:
        tcp_api(*args, **kwargs)
    assert "\n" not in caught.value.message
    return caught.value.message


def test_bad_combinations_are_refused_with_one_sentence(pki):
    addr = "tcp://127.0.0.1:2400"
    assert bad(pki, addr) == ("the Engine API on tcp://127.0.0.1:2400 needs mutual TLS: give --docker-api-tlscacert, "
                              "--docker-api-tlscert and --docker-api-tlskey, or --docker-api-insecure for plain TCP "
                              "(anyone who reaches it controls this node)")
    assert bad(pki, addr, pki.ca, pki.server_cert) == \
        "mutual TLS on tcp://127.0.0.1:2400 also needs --docker-api-tlskey"
    assert bad(pki, addr, None, pki.server_cert, pki.server_key) == \
        "mutual TLS on tcp://127.0.0.1:2400 also needs --docker-api-tlscacert"
    assert bad(pki, addr, pki.ca, insecure=True) == \
        "--docker-api-insecure serves plain TCP: give it without --docker-api-tlscacert"
    assert bad(pki, None, pki.ca) == \
        "--docker-api-tlscacert needs --docker-api tcp://ADDR[:PORT] (where to serve the Engine API)"
    assert bad(pki, None, insecure=True).startswith("--docker-api-insecure needs --docker-api")


def test_files_that_do_not_load_are_named(pki):
    addr = "tcp://127.0.0.1:2400"
    missing = os.path.join(pki.root, "nope.pem")
    assert bad(pki, addr, missing, pki.server_cert, pki.server_key) == f"--docker-api-tlscacert {missing}: no such file"
    assert bad(pki, addr, pki.ca, pki.server_cert, missing) == f"--docker-api-tlskey {missing}: no such file"
    assert bad(pki, addr, pki.root, pki.server_cert, pki.server_key) == \
        f"--docker-api-tlscacert {pki.root}: no such file"
    assert bad(pki, addr, pki.server_key, pki.server_cert, pki.server_key) == \
        f"--docker-api-tlscacert {pki.server_key} is not a PEM file of CA certificates"
    not_pem = pki._write("garbage.pem", b"hello\n")
    assert bad(pki, addr, not_pem, pki.server_cert, pki.server_key) == \
        f"--docker-api-tlscacert {not_pem} is not a PEM file of CA certificates"
    # a key that is another certificate's
    assert bad(pki, addr, pki.ca, pki.server_cert, pki.client_key) == \
        f"--docker-api-tlskey {pki.client_key} is not the key of the certificate {pki.server_cert}"
    assert bad(pki, addr, pki.ca, not_pem, pki.server_key).startswith(
        f"--docker-api-tlscert {not_pem} and --docker-api-tlskey {pki.server_key} are not a PEM certificate and its key")
    locked_cert, locked_key = pki.issue("locked", ip="127.0.0.1", passphrase=b"secret")
    assert bad(pki, addr, pki.ca, locked_cert, locked_key) == \
        f"--docker-api-tlskey {locked_key} is encrypted: give a key without a passphrase"


# -- the CLI: checked before anything is written, kept, replaced ----------------------------------

def node_json(state_dir: str) -> dict:
    with open(os.path.join(state_dir, "node.json")) as f:
        return json.load(f)


@pytest.fixture
def node(state_dir):
    NodeConfig("n1", "c1", "manager", "h1", "127.0.0.1:2377", "127.0.0.1:2377", "127.0.0.1:2378").save(state_dir)
    return state_dir


def test_init_refuses_bad_flags_before_anything_is_written(run, boot, pki):  # noqa: F811
    for flags, sentence in [
        (["--docker-api", "unix:///tmp/d.sock"], "only tcp:// is served"),
        (["--docker-api", "tcp://127.0.0.1:99999", "--docker-api-insecure"], "the port must be from 1 to 65535"),
        (["--docker-api", "tcp://127.0.0.1:2400"], "needs mutual TLS"),
        (["--docker-api", "tcp://127.0.0.1:2400", "--docker-api-tlscacert", pki.server_key, "--docker-api-tlscert",
          pki.server_cert, "--docker-api-tlskey", pki.server_key], "is not a PEM file of CA certificates"),
        (["--docker-api", "tcp://127.0.0.1:2400", "--docker-api-tlscacert", pki.ca, "--docker-api-tlscert",
          pki.server_cert, "--docker-api-tlskey", pki.client_key], "is not the key of the certificate"),
    ]:
        result = run("init", "--advertise-addr", "127.0.0.1", *flags)
        assert result.exit_code == 1, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith("Error: ") and sentence in line and "Traceback" not in result.output
        assert boot.calls == []


def test_join_refuses_plain_tcp_without_the_insecure_flag(run, boot):  # noqa: F811
    result = run("join", "--token", "SWMTKN-1-x", "--docker-api", "tcp://127.0.0.1", "127.0.0.1:2377")
    assert result.exit_code == 1 and "needs mutual TLS" in result.stderr and boot.calls == []


def test_daemon_keeps_the_setting_and_flags_given_again_replace_it(run, boot, node, pki):  # noqa: F811
    tls = ["--docker-api", "tcp://127.0.0.1:2400", "--docker-api-tlscacert", pki.ca,
           "--docker-api-tlscert", pki.server_cert, "--docker-api-tlskey", pki.server_key]
    result = run("daemon", "--detach", *tls)
    assert result.exit_code == 0 and result.stderr == "", result.output
    kept = {k: v for k, v in node_json(node).items() if k.startswith("docker_api")}
    assert kept == {"docker_api": "tcp://127.0.0.1:2400", "docker_api_tlscacert": pki.ca,
                    "docker_api_tlscert": pki.server_cert, "docker_api_tlskey": pki.server_key,
                    "docker_api_insecure": False}
    assert NodeConfig.load(node).docker_api_setting() == TcpApi("127.0.0.1", 2400, pki.ca, pki.server_cert,
                                                                pki.server_key)
    # a restart without the flags keeps them
    assert run("daemon", "--detach").exit_code == 0
    assert node_json(node)["docker_api"] == "tcp://127.0.0.1:2400"
    # given again, they replace them; plain TCP is warned about at each start
    result = run("daemon", "--detach", "--docker-api", "tcp://127.0.0.1:2401", "--docker-api-insecure")
    assert result.exit_code == 0
    assert result.stderr == ("WARNING: the Engine API on tcp://127.0.0.1:2401 is served over plain TCP without TLS "
                             "(--docker-api-insecure): anyone who can reach it controls this node, and root on it\n")
    assert {k: v for k, v in node_json(node).items() if k.startswith("docker_api")} == {
        "docker_api": "tcp://127.0.0.1:2401", "docker_api_tlscacert": "", "docker_api_tlscert": "",
        "docker_api_tlskey": "", "docker_api_insecure": True}
    assert "plain TCP without TLS" in run("daemon", "--detach").stderr
    assert [name for name, _, _ in boot.calls] == ["start_daemon"] * 4


def test_daemon_names_kept_files_that_no_longer_load_and_starts(run, boot, node, pki):  # noqa: F811
    assert run("daemon", "--detach", "--docker-api", "tcp://127.0.0.1:2400", "--docker-api-tlscacert", pki.ca,
               "--docker-api-tlscert", pki.server_cert, "--docker-api-tlskey", pki.server_key).exit_code == 0
    os.unlink(pki.server_key)
    result = run("daemon", "--detach")
    assert result.exit_code == 0
    assert result.stderr == (f"WARNING: the Engine API will not be served on tcp://127.0.0.1:2400: "
                             f"--docker-api-tlskey {pki.server_key}: no such file\n")
    assert [name for name, _, _ in boot.calls] == ["start_daemon"] * 2


def test_a_node_json_without_the_setting_serves_no_tcp(node):
    config = node_json(node)
    for key in [k for k in config if k.startswith("docker_api")]:
        del config[key]                       # node.json of a node made before --docker-api
    with open(os.path.join(node, "node.json"), "w") as f:
        json.dump(config, f)
    assert NodeConfig.load(node).docker_api_setting() is None


# -- the handshake, on loopback ------------------------------------------------------------------

async def hello(scope, receive, send):
    """A minimal ASGI app: 200 "hello" (the Engine API's own app: test_engineapi_app.py)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


REQUEST = b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def client_context(pki: Pki, cert: tuple[str, str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def fetch(port: int, context: ssl.SSLContext | None) -> bytes:
    """One request over TLS with `context` (None: plain HTTP): what came back, or the TLS alert
    of a refusal ("SSL:" and OpenSSL's reason)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        conn = raw if context is None else context.wrap_socket(raw, server_hostname="127.0.0.1")
        data = b""
        try:
            conn.sendall(REQUEST)
            while chunk := conn.recv(65536):
                data += chunk
        except ssl.SSLError as exc:
            return f"SSL:{exc.reason}".encode()
        except (ConnectionResetError, BrokenPipeError):
            pass
        return data


@pytest.mark.trio
async def test_only_clients_of_the_ca_get_past_the_handshake_and_the_listener_goes_on(pki, tmp_path):
    setting = TcpApi("127.0.0.1", 0, pki.ca, pki.server_cert, pki.server_key)
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    stranger = Pki(str(tmp_path / "other"), "other-ca")
    slots = trio.Semaphore(4)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, hello, [listener], slots, server_context(setting))
        good = (pki.client_cert, pki.client_key)
        assert (await trio.to_thread.run_sync(fetch, port, client_context(pki, good))).endswith(b"hello")
        assert await trio.to_thread.run_sync(fetch, port, client_context(pki, None)) == \
            b"SSL:TLSV13_ALERT_CERTIFICATE_REQUIRED"
        assert await trio.to_thread.run_sync(fetch, port, client_context(pki, stranger.issue("c"))) == \
            b"SSL:TLSV1_ALERT_UNKNOWN_CA"
        assert await trio.to_thread.run_sync(fetch, port, None) == server.PLAIN_HTTP_ANSWER
        assert (await trio.to_thread.run_sync(fetch, port, client_context(pki, good))).endswith(b"hello")
        with trio.fail_after(5):
            while slots.value != 3:            # every stream gave its slot back (the next accept holds one)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_client_that_never_finishes_its_handshake_is_dropped_after_the_timeout(pki):
    setting = TcpApi("127.0.0.1", 0, pki.ca, pki.server_cert, pki.server_key)
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    slots = trio.Semaphore(1)                  # the silent client holds the only slot until it is dropped
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve_listeners, handshake_timeout=0.3), hello, [listener],
                            slots, server_context(setting))
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        start = trio.current_time()
        with trio.fail_after(5):
            assert await silent.receive_some(1024) == b""      # closed by the server
        assert 0.25 < trio.current_time() - start < 3
        good = (pki.client_cert, pki.client_key)
        assert (await trio.to_thread.run_sync(fetch, port, client_context(pki, good))).endswith(b"hello")
        await silent.aclose()
        nursery.cancel_scope.cancel()


def test_daemon_outside_a_swarm_refuses_the_setting_it_could_not_keep(run, boot, state_dir):  # noqa: F811
    result = run("daemon", "--detach", "--docker-api", "tcp://127.0.0.1:2400", "--docker-api-insecure")
    assert result.exit_code == 1 and boot.calls == [] and not os.path.exists(os.path.join(state_dir, "node.json"))
    assert result.stderr == ("Error: --docker-api tcp://127.0.0.1:2400 is kept by the node: give it to swarm init "
                             "or swarm join, or to swarm daemon once this node is part of a swarm\n")

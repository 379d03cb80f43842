import logging
import socket
import os
import ssl
import stat
import struct
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raft.framing import encode_frame, unpack
import swarm.rpc as rpc
from swarm.rpc.messages import Peer, RPCError

CLUSTER = "cluster-test"
ROLE_OU = {"manager": "swarm-manager", "worker": "swarm-worker"}
OU_ROLE = {ou: role for role, ou in ROLE_OU.items()}


# -- a throwaway CA ------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cluster: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster} CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca: tuple, node_id: str, role: str, cluster: str) -> tuple[bytes, bytes]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ROLE_OU[role]),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


class Creds:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = make_ca(CLUSTER)
        self.other_ca = make_ca("other-cluster")
        self.ca_pem = self.ca[0].public_bytes(serialization.Encoding.PEM).decode()
        self.server = self._files("mgr-server", issue(self.ca, "mgr-server", "manager", CLUSTER))
        self.manager = self._files("mgr-1", issue(self.ca, "mgr-1", "manager", CLUSTER))
        self.worker = self._files("wrk-1", issue(self.ca, "wrk-1", "worker", CLUSTER))
        self.foreign = self._files("intruder", issue(self.other_ca, "intruder", "manager", "other-cluster"))

    def _files(self, name: str, pair: tuple[bytes, bytes]) -> str:
        path = self.tmp / f"{name}.pem"
        path.write_bytes(pair[0] + pair[1])
        return str(path)

    def _context(self, purpose: int, chain: str | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca_pem)
        if chain:
            ctx.load_cert_chain(chain)
        return ctx

    def server_ctx(self) -> ssl.SSLContext:
        return self._context(ssl.PROTOCOL_TLS_SERVER, self.server)

    def client_ctx(self, chain: str | None) -> ssl.SSLContext:
        return self._context(ssl.PROTOCOL_TLS_CLIENT, chain)


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Creds:
    return Creds(tmp_path_factory.mktemp("certs"))


def identify(ssl_object) -> Peer:
    cert = x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))

    def attr(oid):
        return cert.subject.get_attributes_for_oid(oid)[0].value

    return Peer(node_id=attr(NameOID.COMMON_NAME), role=OU_ROLE[attr(NameOID.ORGANIZATIONAL_UNIT_NAME)],
                cluster_id=attr(NameOID.ORGANIZATION_NAME))


# -- the service under test --------------------------------------------------------


def make_router() -> rpc.Router:
    router = rpc.Router()
    router.slow_started = trio.Event()  # test hooks for the "slow" method
    router.gate = trio.Event()

    @router.route("whoami")
    async def whoami(peer: Peer, params: dict):
        return {"node_id": peer.node_id, "role": peer.role, "cluster_id": peer.cluster_id}

    @router.route("echo")
    async def echo(peer: Peer, params: dict):
        return params

    async def remove_node(peer: Peer, params: dict):
        return "removed"

    router.route("node.remove", remove_node, roles={"manager", "local"})

    @router.route("refuse")
    async def refuse(peer: Peer, params: dict):
        raise RPCError("not_found", f"no such node {params['id']!r}")

    @router.route("crash")
    async def crash(peer: Peer, params: dict):
        raise ZeroDivisionError("boom")

    @router.route("slow")
    async def slow(peer: Peer, params: dict):
        router.slow_started.set()
        await router.gate.wait()
        return "slow"

    @router.route("fast")
    async def fast(peer: Peer, params: dict):
        router.gate.set()
        return "fast"

    @router.route("forever")
    async def forever(peer: Peer, params: dict):
        await trio.sleep_forever()

    @router.route("unencodable")
    async def unencodable(peer: Peer, params: dict):
        return object()

    return router


@pytest.fixture
def router() -> rpc.Router:
    return make_router()


@pytest.fixture
async def tls_port(nursery, creds: Creds, router: rpc.Router) -> int:
    return await nursery.start(partial(rpc.serve_tls, router, "127.0.0.1", 0,
                                       creds.server_ctx(), identify, handshake_timeout=2.0))


@pytest.fixture
async def sock_path(nursery, tmp_path: Path) -> str:
    return await nursery.start(rpc.serve_unix, make_router(), tmp_path / "swarm.sock")


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("swarm.rpc.") and r.levelno == logging.WARNING]


async def assert_good_client_works(port: int, creds: Creds) -> None:
    async with rpc.open_client_tls("127.0.0.1", port, creds.client_ctx(creds.manager)) as client:
        assert await client.call("echo", {"x": 1}) == {"x": 1}


# -- TLS ----------------------------------------------------------------------------


@pytest.mark.trio
async def test_tls_round_trip_carries_peer_identity(tls_port, creds):
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.worker)) as client:
        assert await client.call("whoami") == {"node_id": "wrk-1", "role": "worker", "cluster_id": CLUSTER}
        assert await client.call("echo", {"b": b"\x00\xff", "l": [1, 2.5, None]}) == {
            "b": b"\x00\xff", "l": [1, 2.5, None]}
        server_cert = x509.load_der_x509_certificate(client.ssl_object.getpeercert(binary_form=True))
        assert server_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mgr-server"


@pytest.mark.trio
async def test_role_authorization(tls_port, creds):
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.worker)) as worker:
        with pytest.raises(RPCError) as err:
            await worker.call("node.remove", {"id": "x"})
        assert err.value.code == "forbidden"
        assert "node.remove" in err.value.message and "worker" in err.value.message
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.manager)) as manager:
        assert await manager.call("node.remove", {"id": "x"}) == "removed"


@pytest.mark.trio
async def test_unknown_method_and_handler_error(tls_port, creds):
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.manager)) as client:
        with pytest.raises(RPCError) as err:
            await client.call("no.such.method")
        assert err.value.code == "unknown_method"
        with pytest.raises(RPCError) as err:
            await client.call("refuse", {"id": "n1"})
        assert (err.value.code, err.value.message) == ("not_found", "no such node 'n1'")


@pytest.mark.trio
async def test_handler_crash_is_internal_and_connection_survives(tls_port, creds, caplog):
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.manager)) as client:
        with pytest.raises(RPCError) as err:
            await client.call("crash")
        assert err.value.code == "internal"
        assert "boom" not in err.value.message
        with pytest.raises(RPCError) as err:
            await client.call("unencodable")
        assert err.value.code == "internal"
        assert await client.call("echo", {"still": "up"}) == {"still": "up"}
    tracebacks = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ZeroDivisionError]
    assert len(tracebacks) == 1


@pytest.mark.trio
async def test_concurrent_calls_answer_out_of_order(tls_port, creds, router):
    # "slow" is in the server first and can only finish once "fast" has run on
    # the same connection: both answering proves multiplexing out of order.
    results = {}
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.manager)) as client:
        async def call(method):
            results[method] = await client.call(method)

        with trio.fail_after(3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "slow")
                await router.slow_started.wait()
                assert results == {}
                nursery.start_soon(call, "fast")
    assert results == {"slow": "slow", "fast": "fast"}


@pytest.mark.trio
async def test_many_concurrent_calls_beyond_the_in_flight_cap(tls_port, creds):
    results = {}
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.manager)) as client:
        async def call(i):
            results[i] = await client.call("echo", {"i": i})

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(call, i)
    assert results == {i: {"i": i} for i in range(200)}


@pytest.mark.trio
async def test_client_deadline(tls_port, creds):
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.manager)) as client:
        with trio.fail_after(3):
            with pytest.raises(RPCError) as err:
                await client.call("forever", timeout=0.2)
        assert err.value.code == "deadline"
        assert await client.call("echo", {}) == {}


@pytest.mark.trio
async def test_server_deadline_cap(nursery, creds):
    port = await nursery.start(partial(rpc.serve_tls, make_router(), "127.0.0.1", 0, creds.server_ctx(),
                                       identify, max_deadline=0.1))
    async with rpc.open_client_tls("127.0.0.1", port, creds.client_ctx(creds.manager)) as client:
        with pytest.raises(RPCError) as err:
            await client.call("forever", timeout=5.0)
        assert err.value.code == "deadline" and "forever" in err.value.message


@pytest.mark.trio
async def test_client_without_certificate_is_refused(tls_port, creds, caplog):
    with pytest.raises(RPCError) as err:
        async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(None)) as client:
            await client.call("echo", {})  # TLS 1.3: the server rejects after the client's handshake
    assert err.value.code == "unavailable"
    await assert_good_client_works(tls_port, creds)
    assert len(warnings_of(caplog)) == 1
    assert "127.0.0.1" in warnings_of(caplog)[0]


@pytest.mark.trio
async def test_client_with_certificate_from_another_ca_is_refused(tls_port, creds, caplog):
    with pytest.raises(RPCError) as err:
        async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.foreign)) as client:
            await client.call("echo", {})
    assert err.value.code == "unavailable"
    await assert_good_client_works(tls_port, creds)
    assert len(warnings_of(caplog)) == 1


@pytest.mark.trio
async def test_identify_failure_refuses_connection(nursery, creds, caplog):
    def picky(ssl_object):
        raise ValueError("serial revoked")

    port = await nursery.start(partial(rpc.serve_tls, make_router(), "127.0.0.1", 0, creds.server_ctx(), picky))
    with pytest.raises(RPCError) as err:
        async with rpc.open_client_tls("127.0.0.1", port, creds.client_ctx(creds.manager)) as client:
            await client.call("echo", {})
    assert err.value.code == "unavailable"
    with trio.fail_after(2):
        while not warnings_of(caplog):
            await trio.sleep(0.01)
    assert len(warnings_of(caplog)) == 1 and "serial revoked" in warnings_of(caplog)[0]


async def raw_exchange(stream: trio.abc.Stream, data: bytes) -> None:
    """Send bytes, then read until the server hangs up."""
    with trio.fail_after(3):
        try:
            await stream.send_all(data)
            while await stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass
    await stream.aclose()


@pytest.mark.trio
async def test_random_bytes_are_refused(tls_port, creds, caplog):
    tcp = await trio.open_tcp_stream("127.0.0.1", tls_port)
    await raw_exchange(tcp, os.urandom(512))
    await assert_good_client_works(tls_port, creds)
    assert len(warnings_of(caplog)) == 1


async def authenticated_raw(port: int, creds: Creds) -> trio.SSLStream:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, creds.client_ctx(creds.manager), https_compatible=True)
    await stream.do_handshake()
    return stream


@pytest.mark.trio
@pytest.mark.parametrize("payload", [
    pytest.param(struct.pack(">I", 0xFFFFFFFF), id="oversized-header"),
    pytest.param(struct.pack(">I", 3) + b"\xc1\xc1\xc1", id="undecodable"),
    pytest.param(encode_frame([1, "echo", {}]), id="not-a-map"),
    pytest.param(encode_frame({"method": "echo", "params": {}}), id="no-id"),
    pytest.param(encode_frame({"id": 1, "params": {}}), id="no-method"),
])
async def test_bad_frames_close_only_that_connection(tls_port, creds, caplog, payload):
    async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.manager)) as bystander:
        await raw_exchange(await authenticated_raw(tls_port, creds), payload)
        assert await bystander.call("echo", {"ok": 1}) == {"ok": 1}
    assert len(warnings_of(caplog)) == 1


@pytest.mark.trio
async def test_truncated_frame_then_close(tls_port, creds, caplog):
    stream = await authenticated_raw(tls_port, creds)
    await stream.send_all(struct.pack(">I", 100) + b"\x81" * 10)
    await stream.aclose()
    await assert_good_client_works(tls_port, creds)
    with trio.fail_after(2):
        while not warnings_of(caplog):
            await trio.sleep(0.01)
    assert len(warnings_of(caplog)) == 1


@pytest.mark.trio
async def test_bad_params_get_bad_request(tls_port, creds):
    stream = await authenticated_raw(tls_port, creds)
    await stream.send_all(encode_frame({"id": 7, "method": "echo", "params": [1], "deadline": None}))
    data = b""
    with trio.fail_after(3):
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            data += await stream.receive_some(4096)
    resp = unpack(data[4:])
    assert resp["id"] == 7 and resp["ok"] is False and resp["error"]["code"] == "bad_request"
    await stream.aclose()


@pytest.mark.trio
async def test_dropped_connection_fails_pending_calls(nursery, creds):
    cancel = trio.CancelScope()

    async def server(task_status=trio.TASK_STATUS_IGNORED):
        with cancel:
            await rpc.serve_tls(make_router(), "127.0.0.1", 0, creds.server_ctx(), identify,
                                task_status=task_status)

    port = await nursery.start(server)
    async with rpc.open_client_tls("127.0.0.1", port, creds.client_ctx(creds.manager)) as client:
        async def stop_soon():
            await trio.sleep(0.1)
            cancel.cancel()

        nursery.start_soon(stop_soon)
        with pytest.raises(RPCError) as err:
            await client.call("forever", timeout=5)
        assert err.value.code == "unavailable"
        with pytest.raises(RPCError) as err:
            await client.call("echo")
        assert err.value.code == "unavailable"


@pytest.mark.trio
async def test_connect_refused_is_unavailable(creds):
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(RPCError) as err:
        await rpc.RPCClient.connect_tls("127.0.0.1", port, creds.client_ctx(creds.manager), timeout=2)
    assert err.value.code == "unavailable"


@pytest.mark.trio
async def test_body_exception_propagates_unwrapped(tls_port, creds):
    with pytest.raises(KeyError):
        async with rpc.open_client_tls("127.0.0.1", tls_port, creds.client_ctx(creds.manager)):
            raise KeyError("mine")


# -- unix socket -------------------------------------------------------------------


@pytest.mark.trio
async def test_unix_round_trip_and_mode(sock_path):
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    async with rpc.open_client_unix(sock_path) as client:
        assert await client.call("whoami") == {"node_id": "local", "role": "local", "cluster_id": ""}
        assert await client.call("node.remove") == "removed"
    result = await trio.to_thread.run_sync(rpc.call_unix_sync, sock_path, "echo", {"a": [1, 2]}, 5.0)
    assert result == {"a": [1, 2]}
    with pytest.raises(RPCError) as err:
        await trio.to_thread.run_sync(rpc.call_unix_sync, sock_path, "refuse", {"id": "z"}, 5.0)
    assert err.value.code == "not_found"
    with pytest.raises(RPCError) as err:
        await trio.to_thread.run_sync(rpc.call_unix_sync, sock_path, "forever", {}, 0.2)
    assert err.value.code == "deadline"


@pytest.mark.trio
async def test_unix_bad_frame_closes_only_that_connection(sock_path, caplog):
    await raw_exchange(await trio.open_unix_socket(sock_path), struct.pack(">I", 0xFFFFFFFF))
    assert await trio.to_thread.run_sync(rpc.call_unix_sync, sock_path, "echo", {}, 5.0) == {}
    assert len(warnings_of(caplog)) == 1


@pytest.mark.trio
async def test_unix_socket_replaces_stale_file_and_is_removed_on_exit(tmp_path):
    path = tmp_path / "swarm.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(rpc.serve_unix, make_router(), path)
        with pytest.raises(OSError):  # a live daemon is not displaced
            await rpc.serve_unix(make_router(), path)
        nursery.cancel_scope.cancel()
    assert not path.exists()
    stale = trio.socket.socket(trio.socket.AF_UNIX)
    await stale.bind(str(path))  # bound, never listening: left by a crashed daemon
    stale.close()
    assert path.exists()
    async with trio.open_nursery() as nursery:
        await nursery.start(rpc.serve_unix, make_router(), path)
        assert await trio.to_thread.run_sync(rpc.call_unix_sync, path, "echo", {"x": 1}, 5.0) == {"x": 1}
        nursery.cancel_scope.cancel()
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_call_unix_sync_without_daemon(tmp_path):
    missing = tmp_path / "swarm.sock"
    with pytest.raises(RPCError) as err:
        rpc.call_unix_sync(missing, "echo", {}, 1.0)
    assert err.value.code == "unavailable"
    assert err.value.message == f"the swarm daemon is not running (no socket at {missing})"


@pytest.mark.trio
async def test_connect_unix_without_daemon(tmp_path):
    with pytest.raises(RPCError) as err:
        await rpc.RPCClient.connect_unix(tmp_path / "swarm.sock")
    assert err.value.code == "unavailable"


# -- router ------------------------------------------------------------------------


def test_router_refuses_duplicate_method():
    router = make_router()
    with pytest.raises(ValueError):
        router.route("echo", lambda peer, params: None)
    assert "echo" in router.methods


# -- limits for peers without a certificate -------------------------------------------

ANON = Peer(node_id="", role="anonymous", cluster_id="")
QUICK = rpc.StreamLimits(max_frame=64 * 1024, max_in_flight=4, first_frame_timeout=0.5,
                         idle_timeout=0.5, send_timeout=0.5)


def identify_or_anonymous(ssl_object) -> Peer:
    return identify(ssl_object) if ssl_object.getpeercert(binary_form=True) else ANON


@pytest.fixture
async def open_port(nursery, creds: Creds) -> int:
    """A server that, like the daemon's node API, lets peers without a certificate in."""
    router = make_router()

    async def anon_echo(peer: Peer, params: dict):
        return params

    router.route("anon.echo", anon_echo, roles={"anonymous"})
    ctx = creds.server_ctx()
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return await nursery.start(partial(rpc.serve_tls, router, "127.0.0.1", 0, ctx, identify_or_anonymous,
                                       handshake_timeout=2.0, unauthenticated=QUICK))


async def anonymous_raw(port: int, creds: Creds, local: str | None = None) -> trio.SSLStream:
    tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    stream = trio.SSLStream(tcp, creds.client_ctx(None), https_compatible=True)
    await stream.do_handshake()
    return stream


async def closed_after(stream: trio.abc.Stream, limit: float) -> float:
    """Seconds until the server hangs up (reading and dropping what it sends)."""
    started = trio.current_time()
    with trio.fail_after(limit):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    return trio.current_time() - started


async def call_raw(stream: trio.abc.Stream, call_id: int, method: str, params: dict) -> dict:
    await stream.send_all(encode_frame({"id": call_id, "method": method, "params": params, "deadline": 2}))
    data = b""
    with trio.fail_after(3):
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            data += await stream.receive_some(65536)
    return unpack(data[4:])


@pytest.mark.trio
async def test_anonymous_peer_may_call_what_it_is_allowed(open_port, creds):
    stream = await anonymous_raw(open_port, creds)
    assert (await call_raw(stream, 1, "anon.echo", {"csr": "x" * 2000}))["result"] == {"csr": "x" * 2000}
    assert (await call_raw(stream, 2, "echo", {}))["error"]["code"] == "forbidden"
    await stream.aclose()


@pytest.mark.trio
async def test_anonymous_half_frame_is_closed_at_the_first_frame_deadline(open_port, creds, caplog):
    stream = await anonymous_raw(open_port, creds)
    await stream.send_all(struct.pack(">I", 100) + b"\x81")
    assert 0.4 < await closed_after(stream, 3) < 1.5
    assert any("no whole request within 0.5 s" in w for w in warnings_of(caplog))
    await assert_good_client_works(open_port, creds)


@pytest.mark.trio
async def test_anonymous_connection_dripping_bytes_is_still_closed_at_the_deadline(open_port, creds):
    # A deadline per receive would be reset by every byte; this one is per whole request.
    stream = await anonymous_raw(open_port, creds)
    await stream.send_all(struct.pack(">I", 1000))
    started = trio.current_time()
    with trio.fail_after(3):
        try:
            while True:
                await stream.send_all(b"\xc0")
                await trio.sleep(0.05)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    assert trio.current_time() - started < 1.5


@pytest.mark.trio
async def test_anonymous_idle_connection_is_closed_after_its_answer(open_port, creds):
    stream = await anonymous_raw(open_port, creds)
    await trio.sleep(0.3)  # within the first-frame deadline
    assert (await call_raw(stream, 1, "anon.echo", {}))["ok"]
    assert 0.4 < await closed_after(stream, 3) < 1.5


@pytest.mark.trio
async def test_authenticated_peer_has_no_idle_deadline(open_port, creds):
    async with rpc.open_client_tls("127.0.0.1", open_port, creds.client_ctx(creds.manager)) as client:
        await trio.sleep(1.2)
        assert await client.call("echo", {"x": 1}) == {"x": 1}


@pytest.mark.trio
async def test_large_frame_from_anonymous_is_refused_at_its_header(open_port, creds, caplog):
    stream = await anonymous_raw(open_port, creds)
    await stream.send_all(struct.pack(">I", 4 * 1024 * 1024))  # the header only: no payload needed
    assert await closed_after(stream, 3) < 0.4
    assert any("over the 65536-byte cap" in w for w in warnings_of(caplog))


@pytest.mark.trio
async def test_authenticated_peer_keeps_the_large_frame_cap(open_port, creds):
    async with rpc.open_client_tls("127.0.0.1", open_port, creds.client_ctx(creds.manager)) as client:
        blob = b"\x00" * (2 * 1024 * 1024)
        assert await client.call("echo", {"blob": blob}) == {"blob": blob}


@pytest.mark.trio
async def test_anonymous_peer_that_does_not_read_its_answers_is_closed(open_port, creds, caplog):
    tcp = await trio.open_tcp_stream("127.0.0.1", open_port)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = trio.SSLStream(tcp, creds.client_ctx(None), https_compatible=True)
    await stream.do_handshake()
    request = encode_frame({"id": 1, "method": "anon.echo", "params": {"pad": "x" * 60000}, "deadline": 2})
    with trio.fail_after(5):
        try:
            while True:  # never read: the answers pile up until the server gives up on us
                await stream.send_all(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    assert any("did not read an answer within 0.5 s" in w for w in warnings_of(caplog))
    await assert_good_client_works(open_port, creds)


@pytest.mark.trio
async def test_unauthenticated_connections_per_address_are_capped(open_port, creds, caplog):
    held = [await anonymous_raw(open_port, creds, local="127.0.0.2") for _ in range(rpc.MAX_UNAUTHENTICATED_PER_ADDRESS)]
    extra = await trio.open_tcp_stream("127.0.0.1", open_port, local_address="127.0.0.2")
    assert await closed_after(extra, 1) < 0.5  # refused before any TLS byte
    assert any("unauthenticated connections from this address" in w for w in warnings_of(caplog))
    await assert_good_client_works(open_port, creds)  # from 127.0.0.1: its own budget
    for stream in held:
        await trio.aclose_forcefully(stream)


# -- the admission decision -----------------------------------------------------------


def test_connection_caps_follow_the_descriptor_limit():
    assert rpc.connection_caps(1024) == (512, 256)
    assert rpc.connection_caps(64) == (32, 16)
    assert rpc.connection_caps(1 << 20) == (4096, 1024)
    for nofile in (16, 64, 256, 1024, 20000):
        total, unauth = rpc.connection_caps(nofile)
        assert unauth <= total and (nofile < 64 or total <= nofile // 2)


def test_admission_per_address_and_release():
    adm = rpc.Admission(per_address=2)
    assert adm.admit("a1", "10.0.0.1", 1024) == (None, None)
    assert adm.admit("a2", "10.0.0.1", 1024) == (None, None)
    why, victim = adm.admit("a3", "10.0.0.1", 1024)
    assert "from this address" in why and victim is None
    assert adm.admit("b1", "10.0.0.2", 1024) == (None, None)
    adm.authenticated("a1")  # a member: no longer counted against 10.0.0.1
    assert adm.admit("a3", "10.0.0.1", 1024) == (None, None)
    assert (adm.total, adm.unauthenticated) == (4, 3)
    for token in ("a1", "a2", "a3", "b1"):
        adm.release(token)
    assert (adm.total, adm.unauthenticated) == (0, 0)


def test_admission_drops_the_oldest_stranger_at_the_unauthenticated_cap():
    adm = rpc.Admission(per_address=100)
    _, unauth_cap = rpc.connection_caps(64)
    for i in range(unauth_cap):
        assert adm.admit(f"s{i}", f"10.0.1.{i}", 64) == (None, None)
    why, victim = adm.admit("late", "10.0.2.1", 64)
    assert why is None and victim == "s0"
    assert adm.unauthenticated == unauth_cap
    adm.release("s0")  # the dropped one closes later: counted once only
    assert adm.total == unauth_cap


def test_admission_refuses_everyone_at_the_total_cap():
    adm = rpc.Admission(per_address=100)
    total_cap, _ = rpc.connection_caps(64)
    for i in range(total_cap):
        assert adm.admit(i, f"10.0.3.{i}", 64)[0] is None
        adm.authenticated(i)
    why, victim = adm.admit("one-more", "10.0.4.1", 64)
    assert "the most this node holds" in why and victim is None


# -- out of descriptors ---------------------------------------------------------------


@pytest.mark.trio
async def test_accept_pauses_without_descriptors_logs_once_and_resumes(open_port, creds, caplog):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    socks = [socket.socket() for _ in range(3)]  # made while descriptors remain
    for sock in socks:
        sock.setblocking(False)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) - 1, hard))
    try:
        for sock in socks:
            try:
                sock.connect(("127.0.0.1", open_port))
            except BlockingIOError:
                pass
        await trio.sleep(0.6)  # several accept attempts, all EMFILE
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    # Said once per pause, not at every attempt (one each 0.1 s). Another part of this process
    # may free a descriptor meanwhile (a collected socket): the server then accepts once, says
    # so, and pauses again, so a pause is never said twice in a row.
    said = [w for w in warnings_of(caplog)
            if "no descriptor for a new connection" in w or "accepting connections again" in w]
    paused = [w for w in said if "no descriptor" in w]
    assert paused and said[0] in paused
    assert all(not ("no descriptor" in a and "no descriptor" in b) for a, b in zip(said, said[1:]))
    await assert_good_client_works(open_port, creds)
    assert any("accepting connections again" in w for w in warnings_of(caplog))
    for sock in socks:
        sock.close()


class _Recorder(trio.abc.SendStream):
    """A send stream that keeps what each send_all was given."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_all(self, data) -> None:
        self.sent.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.mark.trio
async def test_a_large_frame_goes_to_the_stream_in_pieces_of_a_tls_record_at_most():
    # trio's SSLStream keeps a buffer the size of the largest send_all for the connection's life.
    from swarm.rpc.client import SEND_PIECE, send_in_pieces
    stream = _Recorder()
    data = os.urandom(3 * SEND_PIECE + 5)
    await send_in_pieces(stream, data)
    assert b"".join(stream.sent) == data
    assert [len(p) for p in stream.sent] == [SEND_PIECE] * 3 + [5]
    stream = _Recorder()
    await send_in_pieces(stream, b"small")
    assert stream.sent == [b"small"]

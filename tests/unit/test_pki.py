import os
import random
import socket
import ssl
import stat
import string
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarm.ca import pki

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
BASE36 = set(string.digits + string.ascii_lowercase)


@pytest.fixture(scope="module")
def ca() -> pki.ClusterCA:
    return pki.ClusterCA.create("cluster0123", NOW)


@pytest.fixture(scope="module")
def other_ca() -> pki.ClusterCA:
    return pki.ClusterCA.create("othercluster", NOW)


def node_creds(ca: pki.ClusterCA, node_id: str, role: str) -> tuple[bytes, bytes]:
    key = pki.new_node_key()
    cert_pem = ca.issue(pki.make_csr(key, node_id), node_id, role, datetime.now(timezone.utc))
    return cert_pem, pki.key_to_pem(key)


def attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    return name.get_attributes_for_oid(oid)[0].value


# -- CA ----------------------------------------------------------------------


def test_ca_fields(ca):
    cert = ca.cert
    assert attr(cert.subject, NameOID.COMMON_NAME) == "swarm-ca"
    assert attr(cert.subject, NameOID.ORGANIZATION_NAME) == "cluster0123"
    assert cert.issuer == cert.subject
    assert ca.cluster_id == "cluster0123"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert cert.not_valid_before_utc <= NOW
    lifetime = cert.not_valid_after_utc - NOW
    assert timedelta(days=365 * 20 - 1) < lifetime <= timedelta(days=365 * 20 + 5)
    cert.verify_directly_issued_by(cert)


def test_ca_pem_round_trip(ca, other_ca):
    again = pki.ClusterCA.from_pem(ca.cert_pem(), ca.key_pem())
    assert again.cert == ca.cert
    assert again.key.private_numbers() == ca.key.private_numbers()
    with pytest.raises(pki.PKIError, match="does not match"):
        pki.ClusterCA.from_pem(ca.cert_pem(), other_ca.key_pem())


def test_naive_time_refused():
    with pytest.raises(ValueError):
        pki.ClusterCA.create("c", datetime(2025, 1, 1))


# -- IDs ---------------------------------------------------------------------


def test_new_id_format_and_seeding():
    ids = {pki.new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 25 and set(i) <= BASE36 for i in ids)
    assert pki.new_id(random.Random(7)) == pki.new_id(random.Random(7))
    # Padding: a tiny number still yields 25 characters.
    zero_rng = random.Random()
    zero_rng.getrandbits = lambda bits: 0  # type: ignore[method-assign]
    assert pki.new_id(zero_rng) == "0" * 25


# -- issuing -------------------------------------------------------------------


@pytest.mark.parametrize("role, ou", [("manager", "swarm-manager"), ("worker", "swarm-worker")])
def test_issue_and_identity_round_trip(ca, role, ou):
    key = pki.new_node_key()
    pem = ca.issue(pki.make_csr(key, "ignored-by-ca"), "node1", role, NOW)
    cert = x509.load_pem_x509_certificate(pem)
    assert attr(cert.subject, NameOID.COMMON_NAME) == "node1"
    assert attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) == ou
    assert attr(cert.subject, NameOID.ORGANIZATION_NAME) == "cluster0123"
    assert cert.issuer == ca.cert.subject
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc == NOW + timedelta(days=90)
    assert cert.serial_number.bit_length() > 64
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node1"]
    cert.verify_directly_issued_by(ca.cert)

    for form in (cert, pem, cert.public_bytes(pki.serialization.Encoding.DER)):
        ident = pki.identity_from_cert(form)
        assert ident == pki.NodeIdentity(
            node_id="node1", role=role, cluster_id="cluster0123", serial=cert.serial_number,
            not_before=NOW - timedelta(minutes=1), not_after=NOW + timedelta(days=90),
        )


def test_serials_differ(ca):
    key = pki.new_node_key()
    csr = pki.make_csr(key, "n")
    serials = {pki.identity_from_cert(ca.issue(csr, "n", "worker", NOW)).serial for _ in range(5)}
    assert len(serials) == 5


def test_csr_with_bad_signature_refused(ca):
    csr = x509.load_pem_x509_csr(pki.make_csr(pki.new_node_key(), "node1"))
    der = bytearray(csr.public_bytes(pki.serialization.Encoding.DER))
    # The signature is the tail of the DER: flip a byte inside it.
    der[-5] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(pki.serialization.Encoding.PEM)
    with pytest.raises(pki.PKIError, match="^the certificate request's signature is invalid$"):
        ca.issue(tampered, "node1", "worker", NOW)


def test_garbage_csr_refused(ca):
    with pytest.raises(pki.PKIError, match="could not be parsed"):
        ca.issue(b"not a csr", "node1", "worker", NOW)


@pytest.mark.parametrize("role", ["admin", "Manager", "", "swarm-manager"])
def test_unknown_role_refused(ca, role):
    csr = pki.make_csr(pki.new_node_key(), "node1")
    with pytest.raises(pki.PKIError, match="manager or a worker"):
        ca.issue(csr, "node1", role, NOW)


def test_identity_refuses_foreign_role(ca):
    # A certificate signed by the right key but with a made-up OU.
    key = pki.new_node_key()
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "node1"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-admin"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster0123"),
    ])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
        .sign(ca.key, pki.hashes.SHA256())
    )
    with pytest.raises(pki.PKIError, match="neither swarm-manager nor swarm-worker"):
        pki.identity_from_cert(cert)
    # The CA certificate itself has no OU and is not a node.
    with pytest.raises(pki.PKIError):
        pki.identity_from_cert(ca.cert)
    with pytest.raises(pki.PKIError, match="could not be parsed"):
        pki.identity_from_cert(b"\x30\x03junk")


def test_key_pem_round_trip():
    key = pki.new_node_key()
    pem = pki.key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pki.load_key(pem).private_numbers() == key.private_numbers()
    with pytest.raises(pki.PKIError):
        pki.load_key(b"garbage")


# -- digest and join tokens ----------------------------------------------------


def test_ca_digest(ca, other_ca):
    d = pki.ca_digest(ca.cert)
    assert len(d) == 50 and set(d) <= BASE36
    assert pki.ca_digest(ca.cert_pem()) == d
    assert pki.ca_digest(pki.ClusterCA.from_pem(ca.cert_pem(), ca.key_pem()).cert) == d
    assert pki.ca_digest(other_ca.cert) != d
    import hashlib
    der = ca.cert.public_bytes(pki.serialization.Encoding.DER)
    assert int(d, 36) == int.from_bytes(hashlib.sha256(der).digest(), "big")


def test_join_token_round_trip(ca):
    token = pki.new_join_token(ca.cert)
    text = str(token)
    assert text.startswith("SWMTKN-1-")
    prefix, version, digest, secret = text.split("-")
    assert len(digest) == 50 and len(secret) == 25
    assert digest == pki.ca_digest(ca.cert)
    assert pki.parse_join_token(text) == token
    assert pki.parse_join_token(f"  {text}\n") == token
    assert pki.new_join_token(ca.cert, random.Random(1)) == pki.new_join_token(ca.cert, random.Random(1))
    assert pki.new_join_token(ca.cert).secret != token.secret


def test_token_matches(ca):
    token = pki.new_join_token(ca.cert)
    assert pki.token_matches(token, token.secret)
    assert not pki.token_matches(token, pki.new_join_token(ca.cert).secret)
    assert not pki.token_matches(token, "")


GOOD_DIGEST = "0" * 10 + "a" * 40
GOOD_SECRET = "abc123" + "z" * 19


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        f"SWMTKX-1-{GOOD_DIGEST}-{GOOD_SECRET}",  # wrong prefix
        f"SWMTKN-2-{GOOD_DIGEST}-{GOOD_SECRET}",  # wrong version
        f"SWMTKN-1-{GOOD_DIGEST[:-1]}-{GOOD_SECRET}",  # short digest
        f"SWMTKN-1-{GOOD_DIGEST}-{GOOD_SECRET}0",  # long secret
        f"SWMTKN-1-{GOOD_DIGEST[:-1]}!-{GOOD_SECRET}",  # non-base36 digest
        f"SWMTKN-1-{GOOD_DIGEST}-{GOOD_SECRET[:-1].upper()}A",  # uppercase secret
        f"SWMTKN-1-{GOOD_DIGEST}-{GOOD_SECRET}-extra",  # extra part
        f"SWMTKN-1-{GOOD_DIGEST}",  # missing secret
        f"swmtkn-1-{GOOD_DIGEST}-{GOOD_SECRET}",  # lowercase prefix
    ],
)
def test_malformed_join_token_refused(text):
    assert str(pki.parse_join_token(f"SWMTKN-1-{GOOD_DIGEST}-{GOOD_SECRET}")).endswith(GOOD_SECRET)
    with pytest.raises(pki.InvalidJoinToken) as info:
        pki.parse_join_token(text)
    assert isinstance(info.value, pki.PKIError)
    message = str(info.value)
    assert message.startswith("invalid join token: expected SWMTKN-1-")
    assert "\n" not in message


# -- TLS ---------------------------------------------------------------------------


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext):
    """Run a TLS handshake over a socketpair; returns (server, client) results.

    Each result is either the peer identity seen by that side or the exception
    it raised.
    """
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)

    def serve():
        with server_ctx.wrap_socket(a, server_side=True) as s:
            s.sendall(s.recv(1))  # echo proves the session is usable
            return pki.peer_identity(s)

    def connect():
        with client_ctx.wrap_socket(b, server_side=False) as c:
            ident = pki.peer_identity(c)
            c.sendall(b"x")
            if c.recv(1) != b"x":
                raise AssertionError("echo failed")
            assert c.version() == "TLSv1.3"
            return ident

    def run(fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc

    with ThreadPoolExecutor(2) as pool:
        server = pool.submit(run, serve)
        client = pool.submit(run, connect)
        return server.result(timeout=20), client.result(timeout=20)


def test_context_settings(ca):
    cert, key = node_creds(ca, "m1", "manager")
    for ctx in (
        pki.server_ssl_context(cert, key, ca.cert_pem()),
        pki.client_ssl_context(cert, key, ca.cert_pem()),
        pki.pinning_client_context(ca.cert_pem()),
    ):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert not ctx.check_hostname
        assert len(ctx.get_ca_certs()) == 1


def test_mutual_tls_handshake(ca):
    server_cert, server_key = node_creds(ca, "manager1", "manager")
    client_cert, client_key = node_creds(ca, "worker1", "worker")
    server, client = handshake(
        pki.server_ssl_context(server_cert, server_key, ca.cert_pem()),
        pki.client_ssl_context(client_cert, client_key, ca.cert_pem()),
    )
    assert isinstance(server, pki.NodeIdentity), server
    assert isinstance(client, pki.NodeIdentity), client
    assert (server.node_id, server.role, server.cluster_id) == ("worker1", "worker", "cluster0123")
    assert (client.node_id, client.role, client.cluster_id) == ("manager1", "manager", "cluster0123")


def test_client_cert_from_another_ca_refused(ca, other_ca):
    server_cert, server_key = node_creds(ca, "manager1", "manager")
    rogue_cert, rogue_key = node_creds(other_ca, "rogue", "manager")
    # The rogue even trusts our CA, so only the server's check can stop it.
    server, client = handshake(
        pki.server_ssl_context(server_cert, server_key, ca.cert_pem()),
        pki.client_ssl_context(rogue_cert, rogue_key, ca.cert_pem()),
    )
    assert isinstance(server, ssl.SSLError), server
    assert isinstance(client, (ssl.SSLError, OSError)), client


def test_client_without_cert_refused(ca):
    server_cert, server_key = node_creds(ca, "manager1", "manager")
    server, client = handshake(
        pki.server_ssl_context(server_cert, server_key, ca.cert_pem()),
        pki.pinning_client_context(ca.cert_pem()),
    )
    assert isinstance(server, ssl.SSLError), server
    assert isinstance(client, (ssl.SSLError, OSError)), client


def test_pinning_client_refuses_server_of_another_ca(ca, other_ca):
    server_cert, server_key = node_creds(other_ca, "impostor", "manager")
    server, client = handshake(
        pki.server_ssl_context(server_cert, server_key, other_ca.cert_pem()),
        pki.pinning_client_context(ca.cert_pem()),
    )
    assert isinstance(client, ssl.SSLCertVerificationError), client
    assert isinstance(server, (ssl.SSLError, OSError)), server


def test_peer_identity_without_cert():
    class NoCert:
        def getpeercert(self, binary_form=False):
            return None

    with pytest.raises(pki.PKIError, match="no certificate"):
        pki.peer_identity(NoCert())


def test_bad_key_material_refused(ca, other_ca):
    cert, _ = node_creds(ca, "m1", "manager")
    with pytest.raises(pki.PKIError):
        pki.server_ssl_context(cert, other_ca.key_pem(), ca.cert_pem())
    with pytest.raises(pki.PKIError):
        pki.pinning_client_context(b"not a cert")


# -- renewal -------------------------------------------------------------------------


def test_renewal_delay_bounds():
    # Invariant: renewal lands between 50 % and 80 % of the lifetime.
    not_before = NOW
    not_after = NOW + timedelta(days=90)
    lifetime = (not_after - not_before).total_seconds()
    seen = []
    for seed in range(500):
        delay = pki.renewal_delay(not_before, not_after, NOW, random.Random(seed))
        assert 0.5 * lifetime <= delay <= 0.8 * lifetime
        seen.append(delay)
    assert min(seen) < 0.55 * lifetime and max(seen) > 0.75 * lifetime


def test_renewal_delay_subtracts_elapsed_and_never_negative():
    not_before = NOW
    not_after = NOW + timedelta(days=100)
    later = NOW + timedelta(days=30)
    for seed in range(100):
        delay = pki.renewal_delay(not_before, not_after, later, random.Random(seed))
        assert timedelta(days=20).total_seconds() <= delay <= timedelta(days=50).total_seconds()
        assert pki.renewal_delay(not_before, not_after, NOW + timedelta(days=81), random.Random(seed)) == 0.0
    assert pki.renewal_delay(not_before, not_after, later, random.Random(3)) == pki.renewal_delay(
        not_before, not_after, later, random.Random(3)
    )


# -- files ---------------------------------------------------------------------------


def test_write_private_and_public(tmp_path):
    private = tmp_path / "node.key"
    pki.write_private(private, b"secret")
    assert private.read_bytes() == b"secret"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    pki.write_private(private, b"replaced")
    assert private.read_bytes() == b"replaced"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600

    public = tmp_path / "ca.crt"
    pki.write_public(str(public), b"cert")
    assert public.read_bytes() == b"cert"
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "node.key"]

"""Cluster PKI: the CA, node certificates, join tokens and TLS contexts.

How it works: `swarm init` creates a cluster CA (ECDSA P-256, self-signed,
O = cluster ID). Every node makes its own key and sends a CSR; a manager
checks the CSR's signature and issues a certificate whose subject it decides
itself (CN = node ID, OU = swarm-manager / swarm-worker, O = cluster ID) -- the
CSR contributes only the public key. A joining node does not yet trust
anything, so the join token carries the SHA-256 digest of the CA certificate:
the node pins the CA it is shown against that digest, then proves it may join
with the token's secret. After that every connection is TLS 1.3 with client
certificates checked on both sides against the cluster CA only, and the peer's
role is read from its certificate (`peer_identity`). Certificates are renewed
at a random point between 50 % and 80 % of their lifetime so a cluster of nodes
created together does not renew in one burst. Everything here is pure except
the small file helpers (over `raft.fsutil.atomic_write`) and the temp file `ssl`
needs to load a key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import re
import secrets
import ssl
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raft.fsutil import atomic_write

CA_LIFETIME = timedelta(days=20 * 365)
NODE_CERT_LIFETIME = timedelta(days=90)
CLOCK_SKEW = timedelta(minutes=1)
ROLE_OU = {"manager": "swarm-manager", "worker": "swarm-worker"}
OU_ROLE = {ou: role for role, ou in ROLE_OU.items()}
TOKEN_PREFIX = "SWMTKN"
TOKEN_VERSION = "1"
DIGEST_LEN = 50
SECRET_LEN = 25
ID_LEN = 25

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN_RE = re.compile(r"[0-9a-z]+")
_TOKEN_HELP = (
    f"invalid join token: expected {TOKEN_PREFIX}-{TOKEN_VERSION}-"
    f"<{DIGEST_LEN}-char CA digest>-<{SECRET_LEN}-char secret>"
)

CertLike = Union[x509.Certificate, bytes]


class PKIError(Exception):
    """A certificate, key, token or TLS peer is unacceptable."""


class InvalidJoinToken(PKIError):
    """The text given as a join token is not one."""


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("times given to the PKI must be timezone-aware")
    return now.astimezone(timezone.utc)


def _base36(n: int, width: int) -> str:
    digits = []
    while n:
        n, r = divmod(n, 36)
        digits.append(_BASE36[r])
    return "".join(reversed(digits)).rjust(width, "0")


def _random_bits(bits: int, rng: random.Random | None) -> int:
    return secrets.randbits(bits) if rng is None else rng.getrandbits(bits)


def new_id(rng: random.Random | None = None) -> str:
    """A Docker-style ID: 128 random bits as 25 lowercase base36 characters."""
    return _base36(_random_bits(128, rng), ID_LEN)


def _load_cert(cert: CertLike) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    try:
        if cert.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(cert)
        return x509.load_der_x509_certificate(cert)
    except ValueError as exc:
        raise PKIError("the certificate could not be parsed") from exc


def _name_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    return str(attrs[0].value) if attrs else None


def _key_usage(**on: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
         "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"],
        False,
    )
    return x509.KeyUsage(**{**flags, **on})


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


def _sign(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey, now: datetime, lifetime: timedelta,
    *extensions: tuple[x509.ExtensionType, bool],
) -> x509.Certificate:
    now = _aware(now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())  # 159 random bits
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


# -- keys and CSRs ---------------------------------------------------------


def new_node_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (encryption at rest is the caller's concern)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PKIError("the private key could not be parsed") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError("the private key is not an ECDSA key")
    return key


def make_csr(key: ec.EllipticCurvePrivateKey, node_id: str) -> bytes:
    subject = _name((NameOID.COMMON_NAME, node_id))
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


# -- the cluster CA ----------------------------------------------------------


@dataclass(frozen=True)
class ClusterCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, cluster_id: str, now: datetime, lifetime: timedelta = CA_LIFETIME) -> ClusterCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name((NameOID.COMMON_NAME, "swarm-ca"), (NameOID.ORGANIZATION_NAME, cluster_id))
        cert = _sign(
            name, name, key.public_key(), key, now, lifetime,
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (_key_usage(key_cert_sign=True, crl_sign=True), True),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        )
        return cls(cert=cert, key=key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> ClusterCA:
        cert, key = _load_cert(cert_pem), load_key(key_pem)
        if cert.public_key() != key.public_key():
            raise PKIError("the CA key does not match the CA certificate")
        return cls(cert=cert, key=key)

    @property
    def cluster_id(self) -> str:
        return _name_attr(self.cert.subject, NameOID.ORGANIZATION_NAME) or ""

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return key_to_pem(self.key)

    def issue(
        self, csr_pem: bytes, node_id: str, role: str, now: datetime,
        lifetime: timedelta = NODE_CERT_LIFETIME,
    ) -> bytes:
        """Sign the CSR's key into a node certificate; returns PEM.

        The subject is built from the arguments: a CSR cannot ask for a role.
        """
        if role not in ROLE_OU:
            raise PKIError(f"unknown role {role!r}: a node is either a manager or a worker")
        if not _NODE_ID_RE.fullmatch(node_id):
            raise PKIError(f"invalid node ID {node_id!r}")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PKIError("the certificate request could not be parsed") from exc
        if not csr.is_signature_valid:
            raise PKIError("the certificate request's signature is invalid")
        public_key = csr.public_key()
        if not (isinstance(public_key, ec.EllipticCurvePublicKey)
                and isinstance(public_key.curve, ec.SECP256R1)):
            raise PKIError("the certificate request must carry an ECDSA P-256 key")
        subject = _name(
            (NameOID.COMMON_NAME, node_id),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, ROLE_OU[role]),
            (NameOID.ORGANIZATION_NAME, self.cluster_id),
        )
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = _sign(
            subject, self.cert.subject, public_key, self.key, now, lifetime,
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage(eku), False),
            (x509.SubjectAlternativeName([x509.DNSName(node_id)]), False),
            (x509.SubjectKeyIdentifier.from_public_key(public_key), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False),
        )
        return cert.public_bytes(serialization.Encoding.PEM)


# -- node identities -----------------------------------------------------------


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    role: str
    cluster_id: str
    serial: int
    not_before: datetime
    not_after: datetime


def identity_from_cert(cert: CertLike) -> NodeIdentity:
    cert = _load_cert(cert)
    subject = cert.subject
    node_id = _name_attr(subject, NameOID.COMMON_NAME)
    ou = _name_attr(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    cluster_id = _name_attr(subject, NameOID.ORGANIZATION_NAME)
    if not node_id or not cluster_id:
        raise PKIError("the certificate does not name a node ID and a cluster ID")
    if ou not in OU_ROLE:
        raise PKIError(f"the certificate's role {ou!r} is neither swarm-manager nor swarm-worker")
    return NodeIdentity(
        node_id=node_id, role=OU_ROLE[ou], cluster_id=cluster_id, serial=cert.serial_number,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
    )


class _HasPeerCert(Protocol):
    def getpeercert(self, binary_form: bool = ...) -> object: ...


def peer_identity(ssl_object: _HasPeerCert) -> NodeIdentity:
    """The identity of the far end of a TLS connection (SSLObject, SSLSocket)."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise PKIError("the peer presented no certificate")
    assert isinstance(der, bytes)
    return identity_from_cert(der)


def renewal_delay(not_before: datetime, not_after: datetime, now: datetime, rng: random.Random) -> float:
    """Seconds until renewal: a random point in 50-80 % of the lifetime."""
    lifetime = _aware(not_after) - _aware(not_before)
    target = _aware(not_before) + lifetime * rng.uniform(0.5, 0.8)
    return max(0.0, (target - _aware(now)).total_seconds())


# -- join tokens -----------------------------------------------------------------


def ca_digest(ca_cert: CertLike) -> str:
    """SHA-256 of the CA certificate's DER, base36, zero-padded to 50 chars."""
    der = _load_cert(ca_cert).public_bytes(serialization.Encoding.DER)
    return _base36(int.from_bytes(hashlib.sha256(der).digest(), "big"), DIGEST_LEN)


@dataclass(frozen=True)
class JoinToken:
    ca_digest: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}-{TOKEN_VERSION}-{self.ca_digest}-{self.secret}"


def new_join_token(ca_cert: CertLike, rng: random.Random | None = None) -> JoinToken:
    return JoinToken(ca_digest(ca_cert), _base36(_random_bits(128, rng), SECRET_LEN))


def parse_join_token(text: str) -> JoinToken:
    parts = text.strip().split("-")
    if (
        len(parts) != 4
        or parts[0] != TOKEN_PREFIX
        or parts[1] != TOKEN_VERSION
        or len(parts[2]) != DIGEST_LEN
        or len(parts[3]) != SECRET_LEN
        or not _TOKEN_RE.fullmatch(parts[2])
        or not _TOKEN_RE.fullmatch(parts[3])
    ):
        raise InvalidJoinToken(_TOKEN_HELP)
    return JoinToken(ca_digest=parts[2], secret=parts[3])


def token_matches(token: JoinToken, secret: str) -> bool:
    """Constant-time check of a token's secret against the expected one."""
    return hmac.compare_digest(token.secret.encode(), secret.encode())


# -- TLS contexts ------------------------------------------------------------------


def _base_context(protocol: int, ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # Identity is the certificate's CN, checked by the caller, not a hostname.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise PKIError("the CA certificate could not be loaded") from exc
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # ssl only loads certificates from paths: use a private file that lives
    # only as long as the load.
    fd, path = tempfile.mkstemp(prefix="swarm-tls-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem.rstrip() + b"\n" + key_pem)
        ctx.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise PKIError("the node certificate or key could not be loaded") from exc
    finally:
        os.unlink(path)


def server_ssl_context(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> ssl.SSLContext:
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, ca_pem)
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


def client_ssl_context(cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> ssl.SSLContext:
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, ca_pem)
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


def pinning_client_context(ca_pem: bytes) -> ssl.SSLContext:
    """For a joining node: trust only the pinned CA, present no certificate."""
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, ca_pem)


# -- files -------------------------------------------------------------------------


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace `path` with `data`, readable by the owner only."""
    atomic_write(path, data, 0o600)


def write_public(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace `path` with `data`, world-readable (mode 0644)."""
    atomic_write(path, data, 0o644)

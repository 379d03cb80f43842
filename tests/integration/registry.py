"""Real registries on loopback for the tests, and images to put in them.

- `RegistryServer`: Debian's docker-registry (CNCF distribution 2.8) with a
  config file written here: plain HTTP, TLS with a CA the test makes
  (`Pki`), htpasswd basic auth (user `REGISTRY_USER`/`REGISTRY_PASSWORD`),
  or token auth against a `TokenServer`. Stopped by its PID, its data removed.
  Its access log (`requests(...)`) counts what clients asked for.
- `TokenServer`: a small token server (a thread of the test process) that
  signs ES256 JWTs with a key whose certificate is the registry's
  rootcertbundle; it knows the same user and grants what is asked to
  authenticated users only.
- `CorruptingProxy`: a plain-HTTP proxy in front of a registry that flips the
  last byte of the blobs listed in `corrupt`.
- `write_oci_layout` / `write_oci_index` build images as OCI layouts (the demo
  rootfs plus small layers: `tar_layer`), `skopeo_copy` pushes them, so a
  client test does not depend on our own push.
"""
from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_USER = "tester"
REGISTRY_PASSWORD = "s3cret"
# bcrypt (the only scheme distribution's htpasswd accepts) of REGISTRY_PASSWORD, cost 5:
# made once with crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)).
_HTPASSWD = f"{REGISTRY_USER}:$2b$05$dWJVs08HqRoThSaZe0ePBef5WKNtHQeaaGQ/VjS6vXa7PEXsI5w0y\n"
TOKEN_SERVICE = "test-registry"
TOKEN_ISSUER = "test-token-issuer"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- certificates ----

def _self_signed(name: str, key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Pki:
    """A test CA that issues server certificates for loopback addresses."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = _self_signed("swarm test registry CA", self.key, ca=True)
        self.ca_pem = _pem(self.cert)

    def server(self, ip: str = "127.0.0.1") -> tuple[bytes, bytes]:
        import ipaddress
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)),
                                                            x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return _pem(cert), _key_pem(key)

    def install(self, certs_dir: str, host: str) -> str:
        """Write the CA as Docker's certs.d/HOST/ca.crt; returns that directory."""
        directory = os.path.join(certs_dir, host)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "ca.crt"), "wb") as f:
            f.write(self.ca_pem)
        return directory


# ---- the token server ----

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """GET /token?service=&scope=... with optional Basic auth -> {"token": JWT}."""

    def __init__(self, root: str, users: dict[str, str] | None = None) -> None:
        self.users = users if users is not None else {REGISTRY_USER: REGISTRY_PASSWORD}
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = _self_signed("swarm test token signer", self.key, ca=False)
        self.bundle = os.path.join(root, "token-bundle.pem")
        os.makedirs(root, exist_ok=True)
        with open(self.bundle, "wb") as f:
            f.write(_pem(self.cert))
        self.requests: list[dict] = []
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._httpd: http.server.ThreadingHTTPServer | None = None

    def sign(self, subject: str, access: list[dict], audience: str) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": TOKEN_ISSUER, "sub": subject, "aud": audience, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
        header = handler.headers.get("Authorization", "")
        user = ""
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(user) != password:
                self.requests.append({"user": user, "ok": False})
                return self._reply(handler, 401, {"details": "incorrect username or password"})
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if user and kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        self.requests.append({"user": user, "ok": True, "scopes": query.get("scope", [])})
        token = self.sign(user, access, query.get("service", [TOKEN_SERVICE])[0])
        self._reply(handler, 200, {"token": token, "access_token": token, "expires_in": 300})

    @staticmethod
    def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> "TokenServer":
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:   # noqa: N802 (the stdlib's name)
                server._answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


# ---- the registry ----

class RegistryServer:
    """docker-registry serving from `root`; `tls` and auth as the module doc says."""

    def __init__(self, root: str, *, pki: Pki | None = None, htpasswd: bool = False,
                 token: TokenServer | None = None, host: str = "127.0.0.1") -> None:
        self.root, self.pki, self.htpasswd, self.token = root, pki, htpasswd, token
        self.port = free_port(host)
        self.address = f"{host}:{self.port}"
        self.scheme = "https" if pki else "http"
        self.log_path = os.path.join(root, "registry.log")
        self.proc: subprocess.Popen | None = None

    def _config(self) -> str:
        lines = ["version: 0.1", "log:", "  level: info", "  formatter: text", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.root}/data", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.address}", f"  secret: {uuid.uuid4().hex}"]
        if self.pki:
            cert, key = self.pki.server(self.address.rsplit(":", 1)[0])
            for name, data in (("server.crt", cert), ("server.key", key)):
                with open(os.path.join(self.root, name), "wb") as f:
                    f.write(data)
            lines += ["  tls:", f"    certificate: {self.root}/server.crt", f"    key: {self.root}/server.key"]
        if self.htpasswd:
            with open(os.path.join(self.root, "htpasswd"), "w") as f:
                f.write(_HTPASSWD)
            lines += ["auth:", "  htpasswd:", "    realm: swarm-test", f"    path: {self.root}/htpasswd"]
        elif self.token:
            lines += ["auth:", "  token:", f"    realm: {self.token.realm}", f"    service: {TOKEN_SERVICE}",
                      f"    issuer: {TOKEN_ISSUER}", f"    rootcertbundle: {self.token.bundle}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> "RegistryServer":
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, "config.yml")
        with open(path, "w") as f:
            f.write(self._config())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", path], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {open(self.log_path).read()[-2000:]}")
            try:
                self.get("/v2/")
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("docker-registry did not answer /v2/ in time")
                time.sleep(0.05)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """A plain request to the registry (TLS unverified), for checks from the test."""
        host, port = self.address.rsplit(":", 1)
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, int(port), timeout=5, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def requests(self, fragment: str) -> int:
        """How many access-log lines hold `fragment` (e.g. 'GET /v2/team/app/blobs/sha256:...')."""
        with open(self.log_path, errors="replace") as f:
            return sum(1 for line in f if fragment in line and '"' in line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(os.path.join(self.root, "data"), ignore_errors=True)


class CorruptingProxy:
    """Plain HTTP in front of a plain-HTTP registry; flips the last byte of blobs in `corrupt`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.corrupt: set[str] = set()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._httpd: http.server.ThreadingHTTPServer | None = None

    def start(self) -> "CorruptingProxy":
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                host, port = proxy.upstream.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                digest = self.path.rsplit("/", 1)[-1]
                if self.command == "GET" and "/blobs/" in self.path and digest in proxy.corrupt and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _forward

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


# ---- images ----

def tar_layer(files: dict[str, bytes]) -> bytes:
    """An uncompressed, reproducible layer tar holding `files` (mode 0644, root, mtime 0)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _put_blob(layout: str, data: bytes) -> str:
    digest = sha256(data)
    directory = os.path.join(layout, "blobs", "sha256")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, digest.split(":", 1)[1]), "wb") as f:
        f.write(data)
    return digest


def _image_manifest(layout: str, layers: list[bytes], arch: str, cmd: list[str]) -> tuple[bytes, dict]:
    compressed = [gzip.compress(layer, mtime=0) for layer in layers]
    config = json.dumps({
        "created": "2024-01-01T00:00:00Z", "architecture": arch, "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _put_blob(layout, config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _put_blob(layout, blob),
                    "size": len(blob)} for blob in compressed],
    }).encode()
    info = {"manifest_digest": _put_blob(layout, manifest), "config_digest": sha256(config),
            "layer_digests": [sha256(blob) for blob in compressed], "diff_ids": [sha256(layer) for layer in layers]}
    return manifest, info


def _write_index(layout: str, tag: str, descriptor: dict) -> None:
    index_path = os.path.join(layout, "index.json")
    index = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    index["manifests"].append({**descriptor, "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(index_path, "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


def write_oci_layout(layout: str, tag: str, layers: list[bytes], *, arch: str = "amd64",
                     cmd: list[str] | None = None) -> dict:
    """An image of `layers` (uncompressed tars, bottom first) as `layout`:TAG; returns its digests."""
    manifest, info = _image_manifest(layout, layers, arch, cmd or ["sh"])
    _write_index(layout, tag, {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": info["manifest_digest"], "size": len(manifest)})
    return info


def write_oci_index(layout: str, tag: str, images: list[tuple[str, list[bytes]]]) -> dict:
    """A multi-platform image (an OCI index of one manifest per (architecture, layers))."""
    entries, infos = [], []
    for arch, layers in images:
        manifest, info = _image_manifest(layout, layers, arch, ["sh"])
        infos.append(info)
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": info["manifest_digest"],
                        "size": len(manifest), "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()
    digest = _put_blob(layout, index)
    _write_index(layout, tag, {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
                               "size": len(index)})
    return {"index_digest": digest, "images": infos}


def demo_layer(demo_tar: str) -> bytes:
    """The demo rootfs tar (the `demo_tar` fixture) as a layer."""
    with open(demo_tar, "rb") as f:
        return f.read()


def _transport_flags(prefix: str, registry: RegistryServer | None, certs_dir: str | None,
                     creds: tuple[str, str] | None) -> list[str]:
    flags = []
    if registry is not None and registry.scheme == "http":
        flags.append(f"--{prefix}tls-verify=false")
    if certs_dir:
        flags.append(f"--{prefix}cert-dir={certs_dir}")
    if creds:
        flags.append(f"--{prefix}creds={creds[0]}:{creds[1]}")
    return flags


def skopeo_copy(src: str, dest: str, *, src_registry: RegistryServer | None = None,
                dest_registry: RegistryServer | None = None, src_certs: str | None = None,
                dest_certs: str | None = None, src_creds: tuple[str, str] | None = None,
                dest_creds: tuple[str, str] | None = None, all_platforms: bool = False) -> None:
    """`skopeo copy SRC DEST` (e.g. oci:DIR:TAG -> docker://HOST/repo:tag); raises with skopeo's words."""
    cmd = ["skopeo", "--insecure-policy", "copy", "-q"]
    cmd += _transport_flags("src-", src_registry, src_certs, src_creds)
    cmd += _transport_flags("dest-", dest_registry, dest_certs, dest_creds)
    if all_platforms:
        cmd.append("--all")
    done = subprocess.run(cmd + [src, dest], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} {src} {dest}: {done.stderr.strip()}")


def skopeo_inspect(ref: str, *, registry: RegistryServer | None = None, certs: str | None = None,
                   creds: tuple[str, str] | None = None, raw: bool = False) -> dict:
    cmd = ["skopeo", "--insecure-policy", "inspect"] + _transport_flags("", registry, certs, creds)
    if raw:
        cmd.append("--raw")
    done = subprocess.run(cmd + [ref], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"skopeo inspect {ref}: {done.stderr.strip()}")
    return json.loads(done.stdout)

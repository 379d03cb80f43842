"""Creating a node's state (`swarm init`, `swarm join`) and starting its daemon.

Both write the new state into a temporary directory beside STATE_DIR and
move the files in only once everything succeeded, so a failed init or join
leaves nothing half-created. `join` pins the cluster CA before trusting
anything: it fetches the CA certificate without verification, checks its
SHA-256 against the digest in the token, and only then opens a verified
connection to present the secret and a certificate request.
"""
from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import trio

from raft.cipher import DataCipher
from raft.fsutil import fsync_dir
from swarm.api import model
from swarm.ca import keyring, pki
from swarm.daemon import keys
from swarm.daemon.config import NodeConfig, Paths, split_addr
from swarm.api.errors import SwarmError
from swarm.rpc.client import RPCClient, call_unix_sync
from swarm.rpc.messages import RPCError

LOCKED_FORCE = "this manager is locked (autolock): give its unlock key to --force-new-cluster"
ALREADY = 'this node is already part of a swarm; use "swarm leave" to leave it before joining or creating another'


class JoinError(SwarmError):
    """A join the managers refused or that could not reach them; `code`: the RPC error's
    (forbidden: a wrong or rotated token; unavailable: no manager answered)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _raft_addr(host: str, port: int) -> str:
    return f"{host}:{port + 1}"


def _check_fresh(state_dir: str) -> None:
    if os.path.exists(os.path.join(state_dir, "node.json")):
        raise SwarmError(ALREADY)


def _addresses(advertise_addr: str, listen_addr: str | None) -> tuple[str, str, str]:
    try:
        host, port = split_addr(advertise_addr)
        listen = listen_addr or f"{host}:{port}"
        lhost, lport = split_addr(listen)
    except ValueError as exc:
        raise SwarmError(str(exc)) from None
    return f"{host}:{port}", f"{lhost}:{lport}", _raft_addr(host, port)


def _install(state_dir: str, staging: str) -> None:
    """Move the staged files into state_dir (created 0700 if missing)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)
    for name in os.listdir(staging):
        os.rename(os.path.join(staging, name), os.path.join(state_dir, name))
    fsync_dir(state_dir)


def _stage(state_dir: str) -> str:
    parent = os.path.dirname(os.path.abspath(state_dir)) or "/"
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=".swarm-staging-", dir=parent)


def _write_certs(root: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    paths = Paths(root)
    os.makedirs(paths.certs, mode=0o700)
    pki.write_public(paths.ca, ca_pem)
    pki.write_public(paths.cert, cert_pem)
    pki.write_private(paths.key, key_pem)


def init_state(state_dir: str, advertise_addr: str, listen_addr: str | None, hostname: str | None,
               cert_expiry: float, heartbeat: float, force_new_cluster: bool, *, availability: str = "active",
               settings: dict | None = None, unlock_key: str | None = None) -> dict:
    """`settings`: the other cluster settings of `model.init_settings` (address pools,
    data path port, task history limit, autolock), as given to `swarm init`.
    `unlock_key`: with --force-new-cluster, what opens a locked manager's data key."""
    if force_new_cluster:
        return _force_new_cluster(state_dir, unlock_key)
    _check_fresh(state_dir)
    try:
        cluster_settings = model.init_settings(**dict(settings or {}, heartbeat=heartbeat, cert_expiry=cert_expiry))
    except model.BadSetting as exc:
        raise SwarmError(str(exc)) from None
    if availability not in model.AVAILABILITIES:
        raise SwarmError(f"--availability must be active, pause or drain, not {availability!r}")
    addr, listen, raft_addr = _addresses(advertise_addr, listen_addr)
    now = datetime.datetime.now(datetime.timezone.utc)
    cluster_id, node_id = pki.new_id(), pki.new_id()
    ca = pki.ClusterCA.create(cluster_id, now)
    key = pki.new_node_key()
    cert = ca.issue(pki.make_csr(key, node_id), node_id, "manager", now, datetime.timedelta(seconds=cert_expiry))
    # Autolock: the data key is wrapped from the first byte written; the daemon that init
    # starts is locked and init unlocks it with the key it prints.
    unlock_key = keyring.new_unlock_key() if cluster_settings["autolock"] else ""
    staging = _stage(state_dir)
    try:
        _write_certs(staging, ca.cert_pem(), cert, pki.key_to_pem(key))
        data_key = keyring.make(Paths(staging).data_key, unlock_key or None)
        boot = {"cluster": {
            "id": cluster_id, "ca_cert_pem": ca.cert_pem().decode(), "ca_key_pem": ca.key_pem().decode(),
            "tokens": {"worker": pki.new_join_token(ca.cert).secret, "manager": pki.new_join_token(ca.cert).secret},
            "created_at": now.isoformat(), "unlock_key": unlock_key, **cluster_settings,
        }, "availability": availability}
        # It holds the CA key: sealed with the data key, as the Raft files it goes into.
        keys.seal_bootstrap(os.path.join(staging, "bootstrap.json"), boot, data_key)
        NodeConfig(node_id, cluster_id, "manager", hostname or socket.gethostname(), addr, listen, raft_addr,
                   [addr], heartbeat, cert_expiry).save(staging)
        _install(state_dir, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"node_id": node_id, "cluster_id": cluster_id, "addr": addr, "unlock_key": unlock_key}


def _force_new_cluster(state_dir: str, unlock_key: str | None) -> dict:
    from raft.recovery import force_new_cluster

    paths = Paths(state_dir)
    try:
        config = NodeConfig.load(state_dir)
    except FileNotFoundError:
        raise SwarmError(f"--force-new-cluster needs an existing manager's state in {state_dir}") from None
    if config.role != "manager" or not os.path.isdir(paths.raft):
        raise SwarmError("--force-new-cluster works only on a manager's state (this node is a worker)")
    if os.path.exists(paths.pid) and _alive(paths.pid):
        raise SwarmError("stop this node's daemon before forcing a new cluster")
    key_file = keyring.load(paths.data_key)
    data_key = None
    if key_file is not None:
        if key_file.locked and not unlock_key:
            raise SwarmError(LOCKED_FORCE)
        try:
            data_key = key_file.unlock(unlock_key or "")
        except keyring.KeyringError as exc:
            raise SwarmError(str(exc)) from None
    force_new_cluster(paths.raft, config.node_id, config.raft_addr,
                      DataCipher(data_key) if data_key is not None else None)
    config.managers = [config.addr]
    config.save(state_dir)
    return {"node_id": config.node_id, "cluster_id": config.cluster_id, "addr": config.addr}


def is_locked(state_dir: str) -> bool:
    """Is this node's Raft data key wrapped by an unlock key (autolock)?"""
    try:
        key_file = keyring.load(Paths(state_dir).data_key)
    except keyring.KeyringError as exc:
        raise SwarmError(str(exc)) from None
    return key_file is not None and key_file.locked


def _alive(pid_path: str) -> bool:
    """Is the process named in a pid file running (not a zombie awaiting its reaper)?"""
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"swarm" in f.read()  # a recycled PID belongs to someone else
    except (OSError, ValueError, IndexError):
        return False


def _local_addr_towards(host: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # no packet is sent: this only picks the route's source address
        return s.getsockname()[0]


async def _fetch_ca(host: str, port: int) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nothing is trusted from this answer until its digest matches the token
    async with await RPCClient.connect_tls(host, port, ctx, timeout=5) as client:
        return (await client.call("ca.bundle", {}, timeout=5))["ca_pem"]


async def _join_call(host: str, port: int, token: pki.JoinToken, request: dict) -> tuple[bytes, dict]:
    ca_pem = await _fetch_ca(host, port)
    if pki.ca_digest(ca_pem) != token.ca_digest:
        raise SwarmError("the manager's CA does not match the digest in the join token: "
                         "the token is for another swarm (or someone is in the middle)")
    ctx = pki.pinning_client_context(ca_pem)
    async with await RPCClient.connect_tls(host, port, ctx, timeout=5) as client:
        answer = await client.call("join", dict(request, secret=token.secret), timeout=30)
    return ca_pem, answer


def join_state(state_dir: str, token: str, remote_addr: str, advertise_addr: str | None,
               listen_addr: str | None, hostname: str | None) -> dict:
    return trio.run(join_node, state_dir, token, remote_addr, advertise_addr, listen_addr, hostname)


async def join_node(state_dir: str, token: str, remote_addr: str, advertise_addr: str | None,
                    listen_addr: str | None, hostname: str | None) -> dict:
    """`swarm join` in a running trio loop (the CLI's, or an inactive daemon's: swarm/daemon/host.py):
    the certificate exchange here, the files in a worker thread."""
    _check_fresh(state_dir)
    try:
        parsed = pki.parse_join_token(token)
        rhost, rport = split_addr(remote_addr)
    except (pki.PKIError, ValueError) as exc:
        raise SwarmError(str(exc)) from None
    if advertise_addr is None:
        try:
            advertise_addr = f"{_local_addr_towards(rhost)}:2377"
        except OSError:
            raise SwarmError(f"cannot reach {remote_addr}; give --advertise-addr") from None
    addr, listen, raft_addr = _addresses(advertise_addr, listen_addr)
    hostname = hostname or socket.gethostname()
    key = pki.new_node_key()
    request = {"csr_pem": pki.make_csr(key, "joining"), "hostname": hostname, "addr": addr, "raft_addr": raft_addr}
    try:
        ca_pem, answer = await _join_call(rhost, rport, parsed, request)
    except RPCError as exc:
        if exc.code == "unavailable":
            raise JoinError(f"cannot reach a manager at {remote_addr}: {exc.message}", "unavailable") from None
        raise JoinError(exc.message, exc.code) from None
    unlock_key = await trio.to_thread.run_sync(_install_joined, state_dir, ca_pem, answer, pki.key_to_pem(key),
                                               NodeConfig(answer["node_id"], answer["cluster_id"], answer["role"],
                                                          hostname, addr, listen, raft_addr, list(answer["managers"])))
    # A manager joining a cluster with autolock: its key file is wrapped from the start, and
    # `swarm join` unlocks the daemon it starts with this key (held in memory only).
    return {"node_id": answer["node_id"], "role": answer["role"], "addr": addr, "hostname": hostname,
            "unlock_key": unlock_key}


def _install_joined(state_dir: str, ca_pem: bytes, answer: dict, key_pem: bytes, config: NodeConfig) -> str | None:
    """Write a joined node's state (staged, then moved in); its unlock key if the swarm has autolock."""
    unlock_key = None
    staging = _stage(state_dir)
    try:
        _write_certs(staging, ca_pem, answer["cert_pem"], key_pem)
        config.save(staging)
        if answer["role"] == "manager":
            import msgpack

            try:
                unlock_key = keys.check_received_unlock_key(answer.get("unlock_key"))
                keyring.save(Paths(staging).data_key, keys.check_received_key(answer.get("data_key")), unlock_key)
            except RPCError as exc:
                raise SwarmError(exc.message) from None
            os.makedirs(os.path.join(staging, "raft"), mode=0o700)
            pki.write_private(os.path.join(staging, "raft", "members"), msgpack.packb(answer["raft_members"]))
        _install(state_dir, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return unlock_key


def start_daemon(state_dir: str, detach: bool, *, memory_journal: bool = False,
                 unlock_key: str | None = None) -> dict:
    """Run the node's daemon here, or start it in the background and return once it answers
    (ready, or locked: its answer to ping says which).

    Without a node's state the daemon starts inactive, as dockerd outside a swarm: `swarm
    init/join` or the Engine API's `docker swarm init/join` then make it a node (host.py).
    `memory_journal` is the unsafe option of `swarm daemon --unsafe-memory-journal`;
    `unlock_key` opens a locked manager's data key when the daemon runs here."""
    paths = Paths(state_dir)
    if os.path.exists(paths.pid) and _alive(paths.pid):
        raise SwarmError(f"the swarm daemon of {state_dir} is already running")
    os.makedirs(paths.root, mode=0o700, exist_ok=True)
    if not detach:
        from swarm.daemon.host import main

        main(state_dir, memory_journal=memory_journal, unlock_key=unlock_key)
        return {}
    with open(paths.log, "ab") as log:
        argv = [sys.executable, "-m", "swarm", "daemon", "--state-dir", paths.root]
        proc = subprocess.Popen(argv + (["--unsafe-memory-journal"] if memory_journal else []),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/",
                                env=dict(os.environ, PYTHONPATH=_project_root()))
    return wait_ready(state_dir, proc)


def wait_ready(state_dir: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> dict:
    """Wait until the daemon of `state_dir` answers ping as ready (or locked) and is past any
    change of mode (an inactive daemon turning into a node rebinds its local socket); its answer.
    `proc`: the daemon just started here (its exit ends the wait)."""
    paths = Paths(state_dir)
    node = os.path.exists(paths.node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SwarmError(f"the swarm daemon exited at start: {_last_error(paths.log)}")
        try:
            answer = call_unix_sync(paths.socket, "ping", timeout=1)
            if (answer["ready"] or answer.get("locked")) and node == (answer.get("state") != "inactive"):
                return answer
            if node and answer.get("state") == "inactive" and not os.path.exists(paths.node):
                # the node just made could not start: the daemon cleared it and is inactive again
                raise SwarmError(f"the swarm daemon could not start the node: {_last_error(paths.log)}")
        except RPCError:
            pass
        time.sleep(0.05)
    raise SwarmError(f"the swarm daemon did not become ready within {timeout:g} s: {_last_error(paths.log)}")


def _project_root() -> str:
    # the directory holding the swarm package (this file is swarm/daemon/bootstrap.py)
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _last_error(log_path: str) -> str:
    try:
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f.readlines()[-40:] if line.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "Error" in line or "ERROR" in line or "error" in line:
            return line[-300:]
    return lines[-1][-300:] if lines else "no log"

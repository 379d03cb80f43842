"""A manager's Raft data key at run time: opened at start, or waited for while locked, and
kept wrapped as the cluster's autolock setting says (the file format: swarm/ca/keyring.py).

- At start a manager reads STATE_DIR/certs/raft-key.json. A key in the clear is used at
  once. A wrapped key (autolock) needs the unlock key: until someone gives it with
  `swarm unlock`, the daemon serves only a locked local API (`LockedRouter`) that answers
  every command with "swarm is locked: run swarm unlock", and starts nothing else (no Raft,
  no node API, no agent), as a locked Docker manager does.
- While it runs, `keep_key_file` follows the cluster record: autolock turned on or the key
  rotated -> the data key is rewrapped with the new unlock key; autolock off -> written in
  the clear. It runs on every manager, so each one's file follows the cluster.
- A new manager receives the data key (and the unlock key when autolock is on, so that it
  never writes the data key in the clear) with its join or raft.join answer, over mutual TLS.
"""
from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any

import trio

from raft.cipher import KEY_BYTES, DataCipher, DecryptError
from raft.fsutil import atomic_write
from swarm.api import model
from swarm.ca import keyring
from swarm.rpc.messages import Peer, RPCError
from swarm.rpc.router import Router
from swarm.rpc.server import serve_unix

log = logging.getLogger(__name__)

LOCKED = "swarm is locked: run swarm unlock"
BOOTSTRAP_PURPOSE = b"swarm bootstrap"
# The unlock call's answer must leave before the locked socket closes for the full API.
REPLY_GRACE = 0.2


class LockedRouter(Router):
    """The local API of a locked manager: `ping` says so, `unlock` takes the key, the rest is refused."""

    def __init__(self, node_id: str, unlock: Any) -> None:
        super().__init__()
        self.node_id = node_id
        self.route("unlock", unlock)

    async def dispatch(self, peer: Peer, method: str, params: dict) -> Any:
        if method == "ping":
            return {"node_id": self.node_id, "ready": False, "locked": True}
        if method != "unlock":
            raise RPCError("locked", LOCKED)
        return await super().dispatch(peer, method, params)


async def wait_for_unlock(key_file: keyring.DataKeyFile, node_id: str, socket_path: str) -> tuple[bytes, str]:
    """Serve the locked API on `socket_path` until a right unlock key is given;
    returns (the data key, the unlock key that opened it)."""
    opened: dict[str, Any] = {}
    unlocked = trio.Event()

    async def unlock(peer: Peer, params: dict) -> dict:
        key = params.get("key")
        if not isinstance(key, str) or not key.strip():
            raise RPCError("bad_request", "give the unlock key (SWMKEY-1-...)")
        try:
            opened["data_key"] = key_file.unlock(key)
        except keyring.KeyringError as exc:
            raise RPCError("bad_request", str(exc)) from None
        opened["unlock_key"] = key.strip()
        unlocked.set()
        return {}

    log.warning("this manager is locked (autolock): run `swarm unlock` to give it the unlock key")
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, LockedRouter(node_id, unlock), socket_path)
        await unlocked.wait()
        await trio.sleep(REPLY_GRACE)
        nursery.cancel_scope.cancel()
    log.info("unlocked: starting the manager")
    return opened["data_key"], opened["unlock_key"]


def check_received_key(value: Any) -> bytes:
    """A data key from a join answer (a peer's bytes: checked before use)."""
    if not isinstance(value, bytes) or len(value) != KEY_BYTES:
        raise RPCError("bad_response", "the manager's answer holds no valid Raft data key")
    return value


def check_received_unlock_key(value: Any) -> str | None:
    """The unlock key of a join answer (None: autolock is off), checked before use."""
    if value is None:
        return None
    try:
        keyring.parse_unlock_key(value if isinstance(value, str) else "")
    except keyring.BadUnlockKey:
        raise RPCError("bad_response", "the manager's answer holds a malformed unlock key") from None
    return value


def key_for_new_manager(cluster: dict, data_key: bytes) -> dict:
    """What a manager adds to a join/raft.join answer for a new manager."""
    unlock_key = cluster.get("unlock_key") if cluster.get("autolock") else None
    return {"data_key": data_key, "unlock_key": unlock_key or None}


def wanted_unlock_key(cluster: dict) -> str | None:
    """The key the data key file should be wrapped with (None: in the clear)."""
    return (cluster.get("unlock_key") or None) if cluster.get("autolock") else None


async def keep_key_file(raft: Any, path: str, data_key: bytes, wrapped_with: str | None) -> None:
    """Rewrap the data key file whenever the cluster's autolock or unlock key changes.
    `wrapped_with`: the unlock key the file is wrapped with now (None: in the clear)."""
    with raft.watch(kinds=[model.CLUSTER]) as changes:
        while not changes.closed:
            rec = raft.get(model.CLUSTER, model.CLUSTER_ID)
            if rec is not None:
                want = wanted_unlock_key(model.decode(rec.data))
                if want != wrapped_with:
                    await trio.to_thread.run_sync(keyring.save, path, data_key, want)
                    log.info("Raft data key now %s", "wrapped by the unlock key (autolock)" if want else
                             "kept in the clear (autolock off)")
                    wrapped_with = want
            try:
                await changes.next()
            except trio.EndOfChannel:      # Raft is closing
                return


# -- the bootstrap file of `swarm init`, which holds the CA key: sealed with the data key ------
def seal_bootstrap(path: str, doc: dict, data_key: bytes) -> None:
    sealed = DataCipher(data_key).seal(json.dumps(doc).encode(), BOOTSTRAP_PURPOSE)
    atomic_write(path, json.dumps({"sealed": base64.b64encode(sealed).decode()}).encode(), mode=0o600)


def open_bootstrap(path: str, data_key: bytes) -> dict:
    with open(path, "rb") as f:
        outer = json.loads(f.read())
    try:
        return json.loads(DataCipher(data_key).open(base64.b64decode(outer["sealed"]), BOOTSTRAP_PURPOSE))
    except (DecryptError, KeyError, ValueError) as exc:
        raise RuntimeError(f"the bootstrap file {path} cannot be opened with this node's data key ({exc})") from None


def remove_key_file(path: str) -> None:
    """A manager demoted to worker keeps no data key."""
    if os.path.exists(path):
        os.unlink(path)

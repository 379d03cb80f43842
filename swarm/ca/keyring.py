"""A manager's Raft data key on disk, and autolock's unlock key.

The data key (raft/cipher.py) encrypts the Raft journal and snapshots, and
with them everything the store holds: secrets, configs, and the cluster's CA
key (a record of the store). It is kept in STATE_DIR/certs/raft-key.json:

    {"version": 1, "data_key": "<base64>"}              autolock off
    {"version": 1, "wrapped_data_key": "<base64>"}      autolock on

With autolock on, the data key is sealed (AES-256-GCM) under the cluster's
unlock key, which is never written to this node's disk: it lives in the store
(encrypted by the data key itself) and in the operator's password manager. A
manager that restarts finds only the wrapped key and stays locked until a
person gives the unlock key (`swarm unlock`). Docker's shape: the unlock key
reads `SWMKEY-1-` and 32 random bytes in base64.

Rotating the unlock key (`swarm unlock-key --rotate`) rewraps the data key on
every manager that is running; a manager that was stopped during the
rotation still needs the previous key once, as Docker's does.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass

from raft.cipher import KEY_BYTES, DataCipher, DecryptError, new_data_key
from raft.fsutil import atomic_write

UNLOCK_PREFIX = "SWMKEY-1-"
WRAP_PURPOSE = b"swarm raft data key"
FILE_VERSION = 1


class KeyringError(ValueError):
    """An unlock key or key file that cannot be used; the message is one sentence for the user."""


class BadUnlockKey(KeyringError):
    pass


def new_unlock_key() -> str:
    return UNLOCK_PREFIX + base64.b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


def parse_unlock_key(text: str) -> bytes:
    """SWMKEY-1-<base64 of 32 bytes> -> the 32 bytes; BadUnlockKey otherwise."""
    text = text.strip()
    if not text.startswith(UNLOCK_PREFIX):
        raise BadUnlockKey(f"invalid unlock key: it should start with {UNLOCK_PREFIX}")
    body = text[len(UNLOCK_PREFIX):]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadUnlockKey("invalid unlock key: it is not base64 after the prefix") from None
    if len(raw) != KEY_BYTES:
        raise BadUnlockKey(f"invalid unlock key: it holds {len(raw)} bytes, not {KEY_BYTES}")
    return raw


@dataclass(frozen=True)
class DataKeyFile:
    """What the key file holds: the data key in the clear, or wrapped by an unlock key."""
    data_key: bytes | None = None
    wrapped: bytes | None = None

    @property
    def locked(self) -> bool:
        return self.data_key is None

    def unlock(self, unlock_key: str) -> bytes:
        """The data key, opened with `unlock_key`; BadUnlockKey if it is not the right one."""
        if self.data_key is not None:
            return self.data_key
        try:
            key = DataCipher(parse_unlock_key(unlock_key)).open(self.wrapped or b"", WRAP_PURPOSE)
        except DecryptError:
            raise BadUnlockKey("invalid unlock key: it does not unlock this manager "
                               "(if the key was rotated while this manager was stopped, give the previous one)") from None
        if len(key) != KEY_BYTES:
            raise KeyringError("the wrapped data key has the wrong length")
        return key


def load(path: str) -> DataKeyFile | None:
    """The key file at `path`, or None when there is none; KeyringError if it is malformed."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise ValueError("unknown version")
        if "data_key" in doc:
            key = base64.b64decode(doc["data_key"], validate=True)
            if len(key) != KEY_BYTES:
                raise ValueError("wrong key length")
            return DataKeyFile(data_key=key)
        return DataKeyFile(wrapped=base64.b64decode(doc["wrapped_data_key"], validate=True))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise KeyringError(f"the Raft key file {path} is unreadable ({exc})") from None


def save(path: str, data_key: bytes, unlock_key: str | None) -> None:
    """Write the key file: in the clear, or wrapped by `unlock_key` (autolock)."""
    if unlock_key:
        wrapped = DataCipher(parse_unlock_key(unlock_key)).seal(data_key, WRAP_PURPOSE)
        doc = {"version": FILE_VERSION, "wrapped_data_key": base64.b64encode(wrapped).decode()}
    else:
        doc = {"version": FILE_VERSION, "data_key": base64.b64encode(data_key).decode()}
    atomic_write(path, json.dumps(doc).encode(), mode=0o600)


def make(path: str, unlock_key: str | None) -> bytes:
    """A new data key, saved at `path`; returns it."""
    key = new_data_key()
    save(path, key, unlock_key)
    return key

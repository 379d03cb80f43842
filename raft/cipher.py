"""Encryption at rest for the Raft journal and snapshots.

Every manager of a cluster holds the same data key (Docker calls it the DEK):
a snapshot travels from the leader to a follower as the bytes of its file, so
a follower must be able to read what the leader wrote. The key reaches a new
manager with its join answer, over mutual TLS, and lives in
STATE_DIR/certs/raft-key.json, in the clear or, under autolock, wrapped by the
cluster's unlock key (swarm/ca/keyring.py).

Each journal record and each snapshot is sealed with AES-256-GCM: a random
96-bit nonce, the ciphertext, and a 16-byte tag that makes any change to the
bytes (or a wrong key) fail to open rather than decode into something else.
The associated data names what the bytes are ("journal", "snapshot"), so a
record cannot be passed off as a snapshot. Random nonces are safe for 2**32
messages under one key; a cluster that approaches that should rotate its data
key (not done automatically today).
"""
from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class DecryptError(ValueError):
    """Sealed bytes that this key cannot open: another key, or bytes changed on disk."""


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


class DataCipher:
    """Seal and open byte strings under one data key (AES-256-GCM)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a Raft data key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, purpose: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, purpose)

    def open(self, sealed: bytes, purpose: bytes) -> bytes:
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise DecryptError("too short to be sealed data")
        try:
            return self._aead.decrypt(bytes(sealed[:NONCE_BYTES]), bytes(sealed[NONCE_BYTES:]), purpose)
        except InvalidTag:
            raise DecryptError("cannot be opened with this data key (another key, or the bytes were changed)") from None

"""Where raft/ reaches into pysyncobj, and the start-up check that it still can.

raft/ relies on pysyncobj 0.3.17 internals (NOTES-pysyncobj.md): the name
`createJournal` imported into `pysyncobj.syncobj` (the only place a journal
is made), the name-mangled methods `_Engine` overrides, the transport's
connection bookkeeping, and the exact behaviour of the AppendEntries handler
that `raft.appendfix` corrects. A different pysyncobj could change any of
these silently, so `self_test()` checks the version, the source files'
SHA-256 and the attributes we use, and `install()` refuses to proceed when
they differ.

`install()` replaces `pysyncobj.syncobj.createJournal` with a function that
returns our durable journal when `SyncObjConf.journalFile` is a
`JournalSpec`, and defers to the original otherwise (stock behaviour stays
available, e.g. for benchmarks of stock pysyncobj).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import raft.inet_fix  # noqa: F401  (before pysyncobj: see there)
import pysyncobj
import pysyncobj.syncobj as syncobj_module
import pysyncobj.transport as transport_module
from pysyncobj.version import VERSION

PINNED_VERSION = "0.3.17"
PINNED_SOURCES = {
    "syncobj.py": "e8bdf06797085d734df86e24ab4802fe87893dff77268565ec036f7ad4a1cfe4",
    "transport.py": "0c9d89f9c4781ec9772df8011d7975a1a4a1a5f541357e12eae85a813e92b50b",
    "serializer.py": "4d39fde2f15000ad8f507ec229ebd4f6a86371b6f84d4dc1439a9cccd52857ee",
    "journal.py": "9cf1eaf6acc704581a4cf7d3de330a404403913107adc91c929778b7e3f35edf",
    "node.py": "e4a3f027cd8291f558334bb9c977e952f6b6989e7e1fa1588d3005ef0b990e2c",
    "poller.py": "f69ac749fb410670282fd9520c5805ffc684c8a5f762a927127753d9be8551e6",
    "config.py": "fbbc7ff9f18e4d15a7fd563376e42f5bd192956879d4b810b056d5248b955698",
}
SYNCOBJ_INTERNALS = (
    "_SyncObj__doApplyCommand", "_SyncObj__parseChangeClusterRequest", "_SyncObj__doChangeCluster",
    "_SyncObj__changeCluster", "_SyncObj__getCurrentLogIndex", "_applyCommand", "transferLeadership",
    "getStatus", "destroy_synchronous", "addOnTickCallback", "_isLeader", "_getLeader",
)
TRANSPORT_INTERNALS = (
    "_createServer", "_onIncomingMessageReceived", "_onNewIncomingConnection", "_onOutgoingConnected",
    "_onDisconnected", "_shouldConnect", "_onMessageReceived", "_onTick", "addNode", "dropNode", "send",
)


class IncompatibleEngine(RuntimeError):
    pass


@dataclass(frozen=True)
class JournalSpec:
    """Passed as SyncObjConf.journalFile to select an already-open journal."""

    journal: Any


def self_test() -> list[str]:
    """Every way the installed pysyncobj differs from what raft/ was built on."""
    problems = []
    if VERSION != PINNED_VERSION:
        problems.append(f"pysyncobj {VERSION} is installed; raft/ requires exactly {PINNED_VERSION}")
    base = os.path.dirname(pysyncobj.__file__)
    for name, digest in PINNED_SOURCES.items():
        try:
            with open(os.path.join(base, name), "rb") as f:
                actual = hashlib.sha256(f.read()).hexdigest()
        except OSError as exc:
            problems.append(f"cannot read pysyncobj/{name}: {exc}")
            continue
        if actual != digest:
            problems.append(f"pysyncobj/{name} differs from the audited 0.3.17 source")
    for attr in SYNCOBJ_INTERNALS:
        if not hasattr(syncobj_module.SyncObj, attr):
            problems.append(f"SyncObj lacks {attr}")
    for attr in TRANSPORT_INTERNALS:
        if not hasattr(transport_module.TCPTransport, attr):
            problems.append(f"TCPTransport lacks {attr}")
    import _socket
    import socket

    if socket.inet_ntop is not _socket.inet_ntop:
        problems.append("socket.inet_ntop is still pysyncobj's Windows-only replacement")
    if not callable(getattr(syncobj_module, "createJournal", None)):
        problems.append("pysyncobj.syncobj.createJournal is missing")
    return problems


_original_create_journal = None


def install() -> None:
    """Check the engine, then route journal creation to our durable journal."""
    global _original_create_journal
    problems = self_test()
    if problems:
        raise IncompatibleEngine("refusing to start the Raft engine: " + "; ".join(problems))
    if _original_create_journal is not None:
        return
    _original_create_journal = syncobj_module.createJournal

    def create_journal(journal_file: Any = None) -> Any:
        if isinstance(journal_file, JournalSpec):
            return journal_file.journal
        return _original_create_journal(journal_file)

    syncobj_module.createJournal = create_journal

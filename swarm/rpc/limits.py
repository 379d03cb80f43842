"""What a connection may cost a server, and how many it holds.

Peers that have not authenticated (the node API accepts TLS without a client
certificate, because a joining node has none yet) are held to
`UNAUTHENTICATED` limits: a 64 KiB frame cap, a few calls at once, a deadline
for the first whole request and another for the next one whenever no call is
running, and one for every answer they are slow to read. Before the handshake
every connection counts as unauthenticated: `Admission` holds at most 16 per
remote address and a total derived from RLIMIT_NOFILE (read at each accept, so
a prlimit on the running daemon counts), so a flood is refused at accept and
never takes the file descriptors that the Raft journal needs.
"""
from __future__ import annotations

import math
import resource
from collections.abc import Hashable
from dataclasses import dataclass

from raft.framing import DEFAULT_MAX_FRAME

MAX_IN_FLIGHT = 64
MAX_DEADLINE = 60.0
HANDSHAKE_TIMEOUT = 5.0
MAX_UNAUTHENTICATED_PER_ADDRESS = 16


@dataclass(frozen=True)
class StreamLimits:
    """What one connection may cost the server once its handshake is done."""

    max_frame: int = DEFAULT_MAX_FRAME
    max_in_flight: int = MAX_IN_FLIGHT
    first_frame_timeout: float = math.inf  # from the handshake to the first whole request
    idle_timeout: float = math.inf         # with no call running, to the next whole request
    send_timeout: float = math.inf         # for the peer to take one answer off our hands


# A join request carries a CSR of about 1 KB; 64 KiB leaves room and decodes
# in a few milliseconds even if every byte is an empty container.
UNAUTHENTICATED = StreamLimits(max_frame=64 * 1024, max_in_flight=4, first_frame_timeout=5.0,
                               idle_timeout=5.0, send_timeout=5.0)


def connection_caps(nofile: int) -> tuple[int, int]:
    """(all TLS connections, those not yet authenticated) a server may hold with `nofile` descriptors.

    Half the descriptor table stays free for the Raft journal and transport,
    container shims and the CLI socket; unauthenticated peers get at most
    half of the rest, so a flood of them leaves room for the members."""
    total = max(16, min(nofile // 2, 4096))
    return total, max(8, min(total // 2, 1024))


def nofile_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


class Admission:
    """Counts the connections a server holds and decides, before any byte is
    read, whether to hold one more (pure bookkeeping; the caller does the I/O).

    A connection is identified by a token of the caller's (its cancel scope).
    Over the per-address cap or the total cap the newcomer is refused; over
    the cap of unauthenticated connections the *oldest* one is dropped
    instead, so that a flood from many addresses cannot keep a member from
    finishing its handshake, which takes milliseconds, not seconds."""

    def __init__(self, per_address: int = MAX_UNAUTHENTICATED_PER_ADDRESS) -> None:
        self.per_address = per_address
        self.total = 0
        self._strangers: dict[Hashable, str] = {}  # token -> address, oldest first
        self._by_address: dict[str, int] = {}

    @property
    def unauthenticated(self) -> int:
        return len(self._strangers)

    def admit(self, token: Hashable, address: str, nofile: int) -> tuple[str | None, Hashable | None]:
        """Count a new connection from `address`: (why it is refused or None, token of a connection to drop or None)."""
        total_cap, unauth_cap = connection_caps(nofile)
        if self.total >= total_cap:
            return f"{self.total} connections are open, the most this node holds with {nofile} descriptors", None
        if self._by_address.get(address, 0) >= self.per_address:
            return f"{self.per_address} unauthenticated connections from this address are open already", None
        victim = next(iter(self._strangers)) if len(self._strangers) >= unauth_cap else None
        if victim is not None:
            self._forget(victim)  # it no longer counts; its own release comes when it has closed
        self.total += 1
        self._strangers[token] = address
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None, victim

    def authenticated(self, token: Hashable) -> None:
        """The connection presented a valid certificate: it no longer counts as a stranger's."""
        self._forget(token)

    def release(self, token: Hashable) -> None:
        self.total -= 1
        self._forget(token)

    def _forget(self, token: Hashable) -> None:
        address = self._strangers.pop(token, None)
        if address is None:
            return
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]

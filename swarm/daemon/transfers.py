"""The local API's registry calls: image.pull and image.push as long polls, login, logout.

How this works. A pull or push the CLI asks for is a `Transfer` running in
the NodeRegistry's nursery, not inside the call: it goes on when the CLI
goes away (as docker's daemon finishes a pull whose client quit), and no
call lasts longer than about a second (DONE_WAIT for a quiet caller, below),
whatever the image's size. The first
call names the reference and starts the transfer, or joins the one already
running for it; the answer carries the transfer's id. Each following call
gives the id, the version it saw and how many log lines it has, and is
answered as soon as something changed or after POLL_WAIT: the new log lines
(one per layer step, as docker prints them without a terminal), every
layer's current state with its byte counts (what a terminal redraws), and
at the end the outcome, an image id and digest or one error sentence. A
finished transfer is kept KEEP_FINISHED seconds for a late poll.

A caller that shows no progress (`image pull -q`) asks with "until": "done":
its call is answered when the transfer ends (or after DONE_WAIT, and it asks
again), one call instead of one per layer step. A pull is done when its blobs
are stored, verified and the image registered; the layers are unpacked after,
in the background (swarm/registry/pull.py), and a task start waits for them.
"""
from __future__ import annotations

import itertools
import logging
import secrets
from typing import TYPE_CHECKING, Any, Callable

import trio

from swarm.api.errors import SwarmError
from swarm.daemon.registry import NodeRegistry, check_reference
from swarm.rpc.messages import Peer, RPCError
from swarm.rpc.router import Handler

if TYPE_CHECKING:
    from swarm.registry import LayerProgress

log = logging.getLogger(__name__)

POLL_WAIT = 1.0          # the longest a poll waits for news
DONE_WAIT = 60.0         # the longest a quiet caller's call waits for the end (it then asks again)
KEEP_FINISHED = 60.0     # how long a finished transfer's outcome waits for its poller
MAX_TRANSFERS = 256      # transfers kept at once (running or finished): a bound, not a limit users meet
PROGRESS_STATUSES = ("Downloading", "Pushing")


class Transfer:
    """One pull or push and what its pollers are shown (see the module doc)."""

    def __init__(self, transfer_id: str, kind: str, ref: str, *, hidden: tuple[str, ...] = ()) -> None:
        self.id, self.kind, self.ref = transfer_id, kind, ref
        self.hidden = set(hidden)         # blobs docker does not list (a push's configuration)
        self.version = 0
        self.log: list[list[str]] = []    # [layer, status], in order
        self.layers: dict[str, dict[str, Any]] = {}
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.finished_at: float | None = None
        self._changed = trio.Event()

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def record(self, event: LayerProgress) -> None:
        """One step of one layer, as docker shows it: byte counts update the layer's state
        only; a step already shown is not shown again; a layer that already existed never
        "completes"; a download ends "Verifying Checksum" then "Download complete"."""
        if event.layer in self.hidden:
            return
        state = self.layers.get(event.layer)
        previous = state["status"] if state else None
        if event.status == "Pull complete" and previous == "Already exists":
            return
        if event.status in PROGRESS_STATUSES:
            if previous is not None and previous not in PROGRESS_STATUSES and previous not in ("Pulling fs layer",
                                                                                           "Preparing", "Waiting"):
                return     # a late count after the layer finished
            self.layers[event.layer] = {"status": event.status, "current": event.current, "total": event.total}
            self._bump()
            return
        if event.status == previous:
            return
        if event.status == "Download complete" and previous == "Downloading":
            self.log.append([event.layer, "Verifying Checksum"])
        self.log.append([event.layer, event.status])
        self.layers[event.layer] = {"status": event.status, "current": event.current, "total": event.total}
        self._bump()

    def finish(self, now: float, *, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        self.result, self.error, self.finished_at = result, error, now
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, seen: int, timeout: float, *, until_done: bool = False) -> None:
        """Until the transfer ends or, without `until_done`, its version passes `seen`; at most
        `timeout` seconds."""
        with trio.move_on_after(timeout):
            while (until_done or self.version <= seen) and not self.done:
                await self._changed.wait()

    def answer(self, since: int) -> dict[str, Any]:
        since = max(0, min(since, len(self.log)))
        out: dict[str, Any] = {"op": self.id, "version": self.version, "log": self.log[since:],
                               "logged": len(self.log),
                               "layers": [{"id": k, **v} for k, v in self.layers.items()], "done": self.done}
        if self.done:
            out.update({"result": self.result} if self.error is None else {"error": self.error})
        return out


class Transfers:
    """The node's transfers by id, and which reference each one is for (joins)."""

    def __init__(self, registry: NodeRegistry, clock: Callable[[], float] = trio.current_time) -> None:
        self.registry = registry
        self.clock = clock
        self.by_id: dict[str, Transfer] = {}
        self._ids = itertools.count(1)

    def _purge(self) -> None:
        now = self.clock()
        for tid, transfer in list(self.by_id.items()):
            if transfer.finished_at is not None and now - transfer.finished_at > KEEP_FINISHED:
                del self.by_id[tid]

    def start(self, kind: str, ref: str, run: Callable[[Transfer], Any]) -> Transfer:
        """The running transfer of `kind` for `ref`, or a new one running `run(transfer)`."""
        self._purge()
        for transfer in self.by_id.values():
            if transfer.kind == kind and transfer.ref == ref and not transfer.done:
                return transfer
        if len(self.by_id) >= MAX_TRANSFERS:
            raise RPCError("unavailable", f"this node runs {MAX_TRANSFERS} pulls and pushes already; retry later")
        transfer = Transfer(f"{next(self._ids)}-{secrets.token_hex(4)}", kind, ref)
        self.by_id[transfer.id] = transfer
        self.registry.start_soon(self._run, transfer, run)
        return transfer

    async def _run(self, transfer: Transfer, run: Callable[[Transfer], Any]) -> None:
        try:
            result = await run(transfer)
        except SwarmError as exc:       # registry errors, malformed references, the store's refusals
            transfer.finish(self.clock(), error=str(exc))
        except OSError as exc:
            transfer.finish(self.clock(), error=f"{exc.strerror or exc}")
        except Exception as exc:        # never let one transfer take the daemon down
            log.exception("%s of %s failed", transfer.kind, transfer.ref)
            transfer.finish(self.clock(), error=f"{transfer.kind} of {transfer.ref} failed: {exc}")
        else:
            transfer.finish(self.clock(), result=result)

    def get(self, transfer_id: object) -> Transfer:
        self._purge()
        transfer = self.by_id.get(str(transfer_id))
        if transfer is None:
            raise RPCError("not_found", f"no transfer {transfer_id} on this node (an outcome is kept "
                                        f"{KEEP_FINISHED:.0f} s after the end)")
        return transfer


def registry_handlers(registry: NodeRegistry, *, poll_wait: float = POLL_WAIT,
                      done_wait: float = DONE_WAIT) -> dict[str, Handler]:
    """Method name -> handler, for the local router (docs/daemon-api.md)."""
    transfers = Transfers(registry)

    async def pull_one(transfer: Transfer) -> dict[str, Any]:
        pulled = await registry.pull_image(transfer.ref, "", transfer.record, unpacked=False)
        return {"id": pulled.image_id, "digest": pulled.digest, "fresh": pulled.fresh, "ref": str(pulled.ref)}

    async def push_one(transfer: Transfer) -> dict[str, Any]:
        pushed = await registry.push_image(transfer.ref, "", transfer.record)
        return {"digest": pushed.digest, "size": pushed.size, "tag": pushed.ref.tag or "", "ref": str(pushed.ref)}

    def poller(kind: str, run: Callable[[Transfer], Any]) -> Handler:
        async def handler(peer: Peer, params: dict) -> dict:
            until = params.get("until", "news")
            if until not in ("news", "done"):     # refused before anything starts
                raise RPCError("bad_request", 'until must be "news" or "done"')
            if params.get("op"):
                transfer = transfers.get(params["op"])
            else:
                try:
                    ref = str(check_reference(params.get("ref")))
                except SwarmError as exc:
                    raise RPCError("bad_request", str(exc)) from None
                transfer = transfers.start(kind, ref, run)
            seen = params.get("version", -1)
            since = params.get("since", 0)
            if not isinstance(seen, int) or not isinstance(since, int):
                raise RPCError("bad_request", "version and since must be integers")
            if until == "done":
                await transfer.wait(seen, done_wait, until_done=True)
            else:
                await transfer.wait(seen, poll_wait)
            return transfer.answer(since)
        return handler

    async def login(peer: Peer, params: dict) -> dict:
        server, user, password = (params.get(k, "") for k in ("server", "username", "password"))
        if not all(isinstance(v, str) for v in (server, user, password)):
            raise RPCError("bad_request", "server, username and password must be strings")
        try:
            key = await registry.login(server, user, password)
        except SwarmError as exc:
            raise RPCError("bad_request", str(exc)) from None
        return {"status": "Login Succeeded", "server": key}

    async def logout(peer: Peer, params: dict) -> dict:
        server = params.get("server", "")
        if not isinstance(server, str):
            raise RPCError("bad_request", "server must be a string")
        try:
            key, removed = await registry.logout(server)
        except SwarmError as exc:
            raise RPCError("bad_request", str(exc)) from None
        return {"server": key, "removed": removed}

    return {"image.pull": poller("pull", pull_one), "image.push": poller("push", push_one),
            "login": login, "logout": logout}

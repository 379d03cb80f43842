"""`service create`/`update` checked on the nodes that could run the service's tasks.

Some of a spec can only be judged where a task runs: a bind mount's source is a
path on that node, and `--user`/`--group` are names in that node's copy of the
image. Docker finds out when a task is rejected, after the service is created;
here the manager asks every node the service could run on (ready, active,
matching its constraints: `scheduler.eligible_nodes`) before it writes, so the
user gets one sentence and nothing is created:

    invalid --mount: bind source path does not exist: /srv/data (on node w1)

A node answers `node.check_spec` ({image, user, groups, binds}) with the
problems it sees, each {"flag", "message"}; a node that holds no copy of the
image says nothing about users. A node that does not answer within
CHECK_TIMEOUT is not waited for (it may be down): its tasks are still checked
when they start there, and rejected with the same sentence.
"""
from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from swarm.api import spec
from swarm.api.errors import ApiError
from swarm.daemon.usercheck import UserChecker
from swarm.manager.scheduler import NodeInfo
from swarm.rpc.messages import RPCError

CHECK_TIMEOUT = 2.0        # seconds a node has to answer
MAX_BINDS = 1000           # bind mounts in one question (a spec holds at most this many mounts)
MAX_PATH = 4096
MAX_NAME = 256
MAX_GROUPS = 64

AskNode = Callable[[NodeInfo, dict], Awaitable[Any]]   # (node, node.check_spec params) -> its answer


def question(s: spec.ServiceSpec) -> dict | None:
    """What to ask the nodes about this spec; None when nothing needs a node's eye.
    A bind source holding a template depends on the task and is checked where it runs."""
    c = s.container
    binds = sorted({m.source for m in c.mounts if m.type == "bind" and "{{" not in m.source})
    if not (c.user or c.groups or binds):
        return None
    return {"image": c.image, "user": c.user, "groups": list(c.groups), "binds": binds}


def _checked(params: Any) -> tuple[str, str, list[str], list[str]]:
    """The question as a node reads it from the wire: every field typed and bounded."""
    if not isinstance(params, dict):
        raise RPCError("bad_request", "node.check_spec takes a map")
    image, user, groups, binds = (params.get(k) for k in ("image", "user", "groups", "binds"))
    if not isinstance(image, str) or not 0 < len(image) <= 512:
        raise RPCError("bad_request", "image must be an image reference")
    if not isinstance(user, str) or len(user) > MAX_NAME:
        raise RPCError("bad_request", f"user must be a string of at most {MAX_NAME} characters")
    for name, items, cap, size in (("groups", groups, MAX_GROUPS, MAX_NAME), ("binds", binds, MAX_BINDS, MAX_PATH)):
        if not isinstance(items, list) or len(items) > cap or not all(
                isinstance(i, str) and 0 < len(i) <= size for i in items):
            raise RPCError("bad_request", f"{name} must be a list of at most {cap} strings")
    if not all(b.startswith("/") and "\0" not in b for b in binds):
        raise RPCError("bad_request", "binds must be absolute paths")
    return image, user, groups, binds


def check_here(check_user: UserChecker, params: Any) -> list[dict]:
    """This node's answer to node.check_spec (blocking: run it in a worker thread)."""
    image, user, groups, binds = _checked(params)
    problems = []
    if user or groups:
        sentence = check_user(image, user, groups)
        if sentence:
            problems.append({"flag": "--user" if user else "--group", "message": sentence})
    for path in binds:
        if not os.path.exists(path):
            problems.append({"flag": "--mount", "message": f"bind source path does not exist: {path}"})
    return problems


async def check_on_nodes(s: spec.ServiceSpec, nodes: Sequence[NodeInfo], ask: AskNode) -> None:
    """Ask the nodes (in parallel, CHECK_TIMEOUT each) and raise bad_request with the first
    problem any of them sees; nodes that fail or do not answer are not counted."""
    params = question(s)
    if params is None or not nodes:
        return
    found: list[tuple[str, dict]] = []

    async def one(node: NodeInfo) -> None:
        with trio.move_on_after(CHECK_TIMEOUT):
            try:
                answer = await ask(node, params)
            except (RPCError, OSError, trio.BrokenResourceError):
                return
            if isinstance(answer, list):
                found.extend((node.hostname, p) for p in answer
                             if isinstance(p, dict) and isinstance(p.get("flag"), str)
                             and isinstance(p.get("message"), str))

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(one, node)
    if found:
        hostname, problem = min(found, key=lambda f: (f[1]["flag"], f[1]["message"], f[0]))
        raise ApiError("bad_request", f"invalid {problem['flag'][:20]}: {problem['message'][:1000]} "
                                      f"(on node {hostname})")

"""`docker service logs` over the Engine API: the control API's log lines as Docker's
multiplexed stream. Pure.

How this works. dockerd answers a non-tty log request with frames of an 8-byte header
(the stream: 1 stdout, 2 stderr; three zero bytes; the payload's length, big-endian
uint32) and a payload of one line: "[TIMESTAMP ]DETAILS LINE\\n", where DETAILS is
"k=v,k=v" (URL-escaped) holding at least com.docker.swarm.node.id, .service.id and
.task.id: docker/cli reads them to print the "web.1.ID@node |" prefix. `frame` builds
one frame from a `service.logs` LINE (docs/daemon-api.md, "Service logs").
"""
from __future__ import annotations

import datetime
import struct
from typing import Any
from urllib.parse import quote

from swarm.engineapi.fields import Unsupported

STREAMS = {"stdout": 1, "stderr": 2}
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"   # API >= 1.42; older clients take raw-stream
RAW = "application/vnd.docker.raw-stream"


def details(line: dict) -> str:
    pairs = {"com.docker.swarm.node.id": line["node_id"], "com.docker.swarm.service.id": line["service_id"],
             "com.docker.swarm.task.id": line["task_id"], **(line.get("details") or {})}
    return ",".join(f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in pairs.items())


def frame(line: dict, *, timestamps: bool, with_details: bool = True) -> bytes:
    """One multiplexed frame of a LINE; `with_details` false: the line alone (docker's --raw)."""
    text = line["line"]
    payload = (details(line) + " " if with_details else "") + text + ("" if text.endswith("\n") else "\n")
    if timestamps:
        payload = f"{line['time']} {payload}"
    data = payload.encode("utf-8", "replace")
    return struct.pack(">BxxxL", STREAMS.get(line["stream"], 1), len(data)) + data


def as_bool(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def tail_param(value: str | None) -> int | None:
    """Docker's ?tail= ("all", "" or a number of lines per task) as service.logs's tail."""
    if value in (None, "", "all"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise Unsupported(f"tail: {value!r} is not a number of lines or all") from None
    return None if n < 0 else n


def time_param(name: str, value: str | None) -> str | None:
    """Docker's ?since=/?until= (a Unix time "SECONDS[.NANOS]", as docker/cli sends it) as the
    RFC 3339 time with nanoseconds service.logs takes."""
    if value in (None, "", "0"):
        return None
    whole, _, frac = value.partition(".")
    try:
        seconds = int(whole)
        nanos = int((frac + "000000000")[:9]) if frac else 0
        day = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise Unsupported(f"{name}: {value!r} is not a Unix time (SECONDS[.NANOSECONDS])") from None
    return day.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def wanted(line: dict[str, Any], stdout: bool, stderr: bool) -> bool:
    return stdout if line["stream"] == "stdout" else stderr

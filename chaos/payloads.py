"""What the attack scenarios send: malformed requests, odd names, bad frames. Pure data.

How this works. Each catalogue is a table from a short kind name to a
function that builds the payload from what only the lab knows (a task ID of
the worker's own, a shared network's name); a scenario's schedule picks
kinds with its seeded RNG and stores only their names, so a report shows
exactly what was sent and a seed replays it. Nothing here does I/O.

* POISON: `tasks.status` and `heartbeat` parameters a worker could send with
  its own certificate that no correct agent sends (a timestamp that is not a
  time, an unknown state, huge strings, wrong types). A manager must refuse
  each with `bad_request`.
* ODD_NAMES: service and network names of every odd kind; ODD_LABELS: label
  maps that are too big or oddly typed. Each must be refused in one sentence
  or accepted and harmless.
* frame bytes for the unauthenticated flood: a frame header announcing more
  than it sends, an oversized frame, garbage.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

MiB = 1024 * 1024

# -- poison: (method, params) a worker sends with its own certificate ------------------------


def _status(task_id: str, **status: Any) -> dict:
    return {"updates": [{"id": task_id, "status": status}]}


POISON: dict[str, tuple[str, Callable[[str], dict]]] = {
    "status-timestamp-not-a-time": ("tasks.status", lambda t: _status(t, state="failed", timestamp="not-a-time")),
    "status-timestamp-nan": ("tasks.status", lambda t: _status(t, state="failed", timestamp=float("nan"))),
    "status-timestamp-negative": ("tasks.status", lambda t: _status(t, state="failed", timestamp=-1e300)),
    "status-unknown-state": ("tasks.status", lambda t: _status(t, state="exploded", timestamp=1.0)),
    "status-state-not-a-string": ("tasks.status", lambda t: _status(t, state=7, timestamp=1.0)),
    "status-state-bytes": ("tasks.status", lambda t: _status(t, state=b"failed", timestamp=1.0)),
    "status-huge-message": ("tasks.status", lambda t: _status(t, state="failed", timestamp=1.0,
                                                              message="x" * MiB)),
    "status-huge-error": ("tasks.status", lambda t: _status(t, state="failed", timestamp=1.0, err="e" * (2 * MiB))),
    "status-exit-code-too-big": ("tasks.status", lambda t: _status(t, state="failed", timestamp=1.0,
                                                                   exit_code=1 << 62)),
    "status-exit-code-a-string": ("tasks.status", lambda t: _status(t, state="failed", timestamp=1.0,
                                                                    exit_code="137")),
    "status-not-a-map": ("tasks.status", lambda t: {"updates": [{"id": t, "status": "failed"}]}),
    "status-id-not-a-string": ("tasks.status", lambda t: {"updates": [{"id": 12345, "status": {"state": "failed"}}]}),
    "status-id-huge": ("tasks.status", lambda t: {"updates": [{"id": "i" * 100_000, "status": {"state": "failed"}}]}),
    "status-updates-not-a-list": ("tasks.status", lambda t: {"updates": {"id": t}}),
    "status-too-many-updates": ("tasks.status", lambda t: {"updates": [{"id": t, "status": {"state": "running"}}]
                                                           * 5000}),
    "heartbeat-cpus-not-a-number": ("heartbeat", lambda t: {"resources": {"nano_cpus": "lots"}}),
    "heartbeat-memory-negative": ("heartbeat", lambda t: {"resources": {"memory_bytes": -1}}),
    "heartbeat-cpus-float": ("heartbeat", lambda t: {"resources": {"nano_cpus": 1e30}}),
    "heartbeat-resources-not-a-map": ("heartbeat", lambda t: {"resources": "all of them"}),
    "heartbeat-images-not-a-list": ("heartbeat", lambda t: {"images": "demo:1"}),
    "heartbeat-images-of-numbers": ("heartbeat", lambda t: {"images": [1, 2, 3]}),
    "heartbeat-image-huge": ("heartbeat", lambda t: {"images": ["i" * 100_000]}),
    "heartbeat-too-many-images": ("heartbeat", lambda t: {"images": [f"img{i}:1" for i in range(100_000)]}),
}


def poison_request(kind: str, task_id: str) -> tuple[str, dict]:
    """(method, params) of one poison kind, aimed at `task_id` (one of the worker's own tasks)."""
    method, build = POISON[kind]
    return method, build(task_id)


# -- odd names and labels -------------------------------------------------------------------

ODD_NAMES: dict[str, str] = {
    "empty": "",
    "dot": ".",
    "dotdot": "..",
    "dash-rf": "-rf",
    "dash-dash-help": "--help",
    "slash": "a/b",
    "dotdot-slash": "../../etc",
    "space": "two words",
    "unicode": "caf\u00e9-\u00fcber",
    "emoji": "svc-\U0001f4a5",
    "rtl-override": "abc\u202etxt",
    "zero-width": "svc\u200bname",
    "len-63": "n" * 63,
    "len-64": "n" * 64,
    "len-300": "n" * 300,
    "semicolon": "a;rm -rf x",
    "subshell": "$(touch x)",
    "backtick": "`id`",
    "pipe": "a|b",
    "glob": "*",
    "quote": "it's",
    "newline-inside": "a\nb",
    "newline-trailing": "web\n",
    "tab": "a\tb",
    "nul": "a\x00b",
    "leading-dot": ".hidden",
    "trailing-dot": "name.",
    "dns-dots": "a..b",
    "percent": "%s%n",
    "ansi-escape": "\x1b[31mred",
}

ODD_LABELS: dict[str, dict] = {
    "label-huge-value": {"big": "v" * (3 * MiB)},
    "label-many": {f"k{i}": "v" for i in range(5000)},
    "label-empty-key": {"": "v"},
    "label-unicode": {"caf\u00e9": "\u00fcber\U0001f4a5"},
    "label-huge-key": {"k" * 100_000: "v"},
    "label-value-not-a-string": {"n": 5},
    "label-nested": {"n": {"deep": ["x"]}},
}

# -- frames for the unauthenticated flood ------------------------------------------------------


def half_frame(announced: int, sent: int) -> bytes:
    """A frame header announcing `announced` payload bytes, followed by only `sent` of them."""
    return struct.pack(">I", announced) + b"\x91" * min(sent, announced)


def big_frame_header(size: int) -> bytes:
    """The header of a frame of `size` payload bytes (the payload is sent separately, in pieces)."""
    return struct.pack(">I", size)

"""What `image pull` and `image push` print, as docker's jsonmessage display.

How this works. The daemon answers each poll of a transfer with the new log
lines (one per layer step) and every layer's state (swarm/daemon/transfers.py).
Without a terminal, each log line is printed once ("ID: Pull complete"),
byte counts never (docker drops progress lines there). On a terminal, the
block of layer lines is redrawn in place after each answer: the cursor goes
up over the lines drawn before, and each line is cleared and written again,
with docker's progress bar on a wide terminal. Everything here is pure: it
returns the text to write.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PROGRESS_STATUSES = ("Downloading", "Pushing")
BAR_MIN_WIDTH = 110        # docker draws the bar only on a terminal wider than this
CLEAR_LINE = "\x1b[2K\r"


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits ("1.235MB")."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    size = float(size)
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.4g}{units[i]}"


def progress_text(current: int, total: int, width: int) -> str:
    """docker's JSONProgress.String(): "[=====>      ]  1.2MB/3.4MB" (no time left: the daemon
    does not tell when a layer started)."""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    percentage = min(int(current / total * 100) // 2, 50)
    bar = f"[{'=' * percentage}>{' ' * max(0, 50 - percentage)}] " if width > BAR_MIN_WIDTH else ""
    numbers = f"{human_size(current):>8}/{human_size(total)}" if current <= total else f"{human_size(current):>8}"
    return bar + numbers


def layer_line(layer: Mapping[str, Any], width: int) -> str:
    """One layer's line on a terminal: "ID: STATUS" with the progress of a transfer under way."""
    status = str(layer["status"])
    if status in PROGRESS_STATUSES:
        progress = progress_text(int(layer.get("current") or 0), int(layer.get("total") or 0), width)
        if progress:
            return f"{layer['id']}: {status} {progress}"
    return f"{layer['id']}: {status}"


class TransferView:
    """Feeds on the daemon's answers; gives the text to write after each one."""

    def __init__(self, terminal: bool, width: int = 200) -> None:
        self.terminal, self.width = terminal, width
        self.drawn = 0              # layer lines on screen (terminal)

    def feed(self, answer: Mapping[str, Any]) -> str:
        if not self.terminal:
            return "".join(f"{layer}: {status}\n" for layer, status in answer.get("log") or ())
        layers: Sequence[Mapping[str, Any]] = answer.get("layers") or ()
        if not layers:
            return ""
        out = f"\x1b[{self.drawn}A" if self.drawn else ""
        out += "".join(f"{CLEAR_LINE}{layer_line(layer, self.width)}\n" for layer in layers)
        self.drawn = len(layers)
        return out


def pull_header(ref_tag: str, path: str, tag_given: bool) -> str:
    """docker's first lines: "Using default tag: latest" when none was given, "TAG: Pulling from PATH"."""
    return ("" if tag_given else "Using default tag: latest\n") + f"{ref_tag}: Pulling from {path}\n"


def pull_footer(result: Mapping[str, Any], familiar: str) -> str:
    status = (f"Downloaded newer image for {familiar}" if result.get("fresh")
              else f"Image is up to date for {familiar}")
    return f"Digest: {result['digest']}\nStatus: {status}\n{result['ref']}\n"


def push_footer(result: Mapping[str, Any]) -> str:
    return f"{result['tag']}: digest: {result['digest']} size: {result['size']}\n"

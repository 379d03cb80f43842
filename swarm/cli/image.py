"""`swarm image ...`: import, load, ls, rm (the images of this node).

How this works: the daemon reads image archives from its own filesystem, so
the CLI passes absolute paths (`image.import`, `image.load` of
docs/daemon-api.md); an archive on stdin ("-") is first copied to a
temporary file in the state directory, which is removed after the call.
Output mirrors docker's. This module adds itself to `swarm.cli.main.swarm` when
`swarm.cli.main` imports it.
"""
from __future__ import annotations

import datetime
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import click

from swarm.cli.common import LocalDaemon, show_list, with_daemon
from swarm.cli.root import swarm

IMAGE_CALL_TIMEOUT = 300.0  # unpacking a large archive takes a while (the daemon may cap it)
ID_LEN = 12
IMAGE_COLUMNS = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?")


def now() -> float:  # one place for tests to replace
    return time.time()


def check_reference(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _REFERENCE.fullmatch(value) or len(value) > 255:
        raise click.BadParameter(f"{value!r} is not an image reference (use NAME[:TAG] in lower case, like app:1.0)",
                                 ctx, param)
    return value


@swarm.group()
def image() -> None:
    """Manage this node's images."""


def _call_with_file(daemon: LocalDaemon, source: str, method: str, params: dict) -> Any:
    """Call METHOD with params["path"] = SOURCE's absolute path; "-" is stdin, through a temporary file."""
    if source != "-":
        return daemon.call(method, {**params, "path": os.path.abspath(source)}, timeout=IMAGE_CALL_TIMEOUT)
    stdin = sys.stdin.buffer
    if stdin.isatty():
        raise click.UsageError("the archive would come from stdin, which is a terminal: name a FILE or pipe it in")
    fd, path = tempfile.mkstemp(prefix=".image-", suffix=".tar", dir=daemon.state_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stdin, out, 1 << 20)
        return daemon.call(method, {**params, "path": path}, timeout=IMAGE_CALL_TIMEOUT)
    finally:
        os.unlink(path)


archive = click.Path(exists=True, dir_okay=False, allow_dash=True)


@image.command("import")
@click.argument("source", metavar="FILE|-", type=archive)
@click.argument("ref", metavar="NAME[:TAG]", callback=check_reference)
@with_daemon
def image_import(daemon: LocalDaemon, source: str, ref: str) -> None:
    """Import a root filesystem tarball (FILE, or - for stdin) as image NAME:TAG."""
    click.echo(_call_with_file(daemon, source, "image.import", {"ref": ref})["id"])


@image.command("load")
@click.option("--input", "-i", "source", type=archive, default="-", metavar="FILE",
              help="Read from this archive instead of stdin.")
@with_daemon
def image_load(daemon: LocalDaemon, source: str) -> None:
    """Load images from a `docker save` or OCI archive."""
    for ref in _call_with_file(daemon, source, "image.load", {})["refs"]:
        click.echo(f"Loaded image: {ref}")


@image.command("ls")
@click.option("--quiet", "-q", is_flag=True, help="Only print image IDs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@with_daemon
def image_ls(daemon: LocalDaemon, quiet: bool, fmt: str) -> None:
    """List the images of this node."""
    rows = sorted(daemon.call("image.ls"), key=lambda r: (-_epoch(r.get("created")), r["ref"]))
    show_list(rows, fmt, quiet, lambda: [image_row(row) for row in rows], IMAGE_COLUMNS,
              as_json=lambda rows: [{**row, **dict(zip(("repository", "tag"), split_reference(row["ref"])))}
                                    for row in rows])


def image_row(row: Mapping[str, Any]) -> list[str]:
    repository, tag = split_reference(row["ref"])
    created = _epoch(row.get("created"))
    return [repository, tag, row["id"].removeprefix("sha256:")[:ID_LEN],
            f"{human_duration(now() - created)} ago" if created else "", human_size(row.get("size") or 0)]


def split_reference(ref: str) -> tuple[str, str]:
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last and "@" not in ref:
        repository, tag = name.rsplit(":", 1)
        return repository, tag
    return name, "<none>"


def _epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        try:
            when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return when.timestamp()
    return 0.0


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    if (s := int(seconds)) < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    if (minutes := int(seconds / 60)) == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    if (hours := int(seconds / 3600 + 0.5)) == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def human_size(size: float) -> str:
    """Docker's units.HumanSizeWithPrecision(size, 3): decimal units, 3 significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    i = 0
    size = float(size)
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    text = f"{size:.3g}"
    if "e" in text and i < len(units) - 1:  # 999.9 rounds to 1e+03: say 1 of the next unit
        text, i = "1", i + 1
    return f"{text}{units[i]}"


@image.command("rm")
@click.argument("refs", metavar="IMAGE...", nargs=-1, required=True)
@with_daemon
def image_rm(daemon: LocalDaemon, refs: tuple[str, ...]) -> None:
    """Remove images from this node."""
    for ref in daemon.call("image.rm", {"refs": list(refs)}):
        click.echo(f"Untagged: {ref}")

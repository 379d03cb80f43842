"""`swarm image ...`: import, load, ls, inspect, tag, save, pull, push, rm, prune (this node's images).

How this works: the daemon reads and writes image archives on its own
filesystem, so the CLI passes absolute paths (`image.import`, `image.load`,
`image.save` of docs/daemon-api.md); an archive on stdin ("-") is first
copied to a temporary file in the state directory, and `save` without -o
has the daemon write one there that is then copied to stdout; both are
removed after the call. Output mirrors docker's: `ls` expands each image
into one row per repository and tag (and digest with --digests) as docker's
image formatter does, `rm` and `prune` print docker's Untagged/Deleted
records. This module adds itself to the root group when the root loads it
(swarm.cli.root.COMMANDS).
"""
from __future__ import annotations

import contextlib
import datetime
import fnmatch
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import click

from swarm.cli.common import (FORMAT_HELP, INSPECT_FORMAT, INSPECT_FORMAT_HELP, LIST_FORMAT, LocalDaemon, fail,
                              filter_option, human_duration, show_inspect, show_list, with_daemon)
from swarm.api import reference
from swarm.cli.root import swarm
from swarm.cli.transfer_view import TransferView, pull_footer, pull_header, push_footer
from swarm.cli.volume import human_size as go_human_size

IMAGE_CALL_TIMEOUT = 300.0  # unpacking a large archive takes a while (the daemon may cap it)
ID_LEN = 12

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


# -- ls ------------------------------------------------------------------------
LS_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
              "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
              "VirtualSize": "SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE"}
LS_FILTERS = ("before", "dangling", "label", "reference", "since")


@image.command("ls")
@click.option("--all", "-a", "show_all", is_flag=True, help="Show all images (this node keeps no intermediate ones).")
@click.option("--digests", is_flag=True, help="Show digests.")
@click.option("--quiet", "-q", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "fmt", type=LIST_FORMAT, default="table", help=FORMAT_HELP)
@filter_option
@with_daemon
def image_ls(daemon: LocalDaemon, show_all: bool, digests: bool, quiet: bool, no_trunc: bool, fmt: str,
             filters: dict[str, list[str]] | None) -> None:
    """List the images of this node."""
    for key in filters or {}:
        if key not in LS_FILTERS:
            fail(f"invalid filter '{key}' (this node filters images by {', '.join(LS_FILTERS[:-1])} "
                 f"and {LS_FILTERS[-1]})")
    images = sorted(daemon.call("image.ls"), key=lambda i: (-_epoch(i.get("Created")), i["Id"]))
    before, since = (_created_bound(daemon, images, filters, key) for key in ("before", "since"))
    images = [i for i in images if _dangling_matches(i, filters) and _label_matches(i, filters)
              and (before is None or _epoch(i.get("Created")) < before)
              and (since is None or _epoch(i.get("Created")) > since)]
    rows = [r for i in images for r in image_rows(i, digests, no_trunc) if _reference_matches(r, filters)]
    columns = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED", "SIZE"]
    show_list(rows, fmt, quiet, lambda: [[r["Repository"], r["Tag"], *([r["Digest"]] if digests else []), r["ID"],
                                          r["CreatedSince"], r["Size"]] for r in rows],
              columns, ident=lambda r: r["ID"], fields=lambda rows: rows, headers=LS_HEADERS)


def image_rows(info: Mapping[str, Any], digests: bool = False, no_trunc: bool = False) -> list[dict[str, str]]:
    """docker's image formatter: one row per repository and tag (a digest-only repository gets a
    row with tag <none>), every tag once per digest of its repository with --digests; an image
    without any reference is one <none> row."""
    image_id = str(info["Id"])
    created = _epoch(info.get("Created"))
    base = {"ID": image_id if no_trunc else image_id.removeprefix("sha256:")[:ID_LEN],
            "CreatedSince": f"{human_duration(now() - created)} ago" if created else "N/A",
            "CreatedAt": _created_at(created), "Size": human_size(info.get("Size") or 0),
            "VirtualSize": human_size(info.get("Size") or 0), "Containers": "N/A", "SharedSize": "N/A",
            "UniqueSize": "N/A"}
    tags: dict[str, list[str]] = {}
    by_repo: dict[str, list[str]] = {}
    for ref in info.get("RepoTags") or []:
        repo, tag = ref.rsplit(":", 1)
        tags.setdefault(repo, []).append(tag)
    for ref in info.get("RepoDigests") or []:
        repo, digest = ref.split("@", 1)
        by_repo.setdefault(repo, []).append(digest)
    if not tags and not by_repo:
        return [{"Repository": "<none>", "Tag": "<none>", "Digest": "<none>", **base}]
    rows = []
    for repo, repo_tags in tags.items():
        repo_digests = by_repo.pop(repo, [])     # shown on the tag's rows, never as rows of their own
        if not digests:
            repo_digests = []
        for tag in repo_tags:
            rows += [{"Repository": repo, "Tag": tag, "Digest": d, **base} for d in repo_digests or ["<none>"]]
    for repo, repo_digests in by_repo.items():
        rows += [{"Repository": repo, "Tag": "<none>", "Digest": d, **base}
                 for d in (repo_digests if digests else ["<none>"])]
    return rows


def _dangling_matches(info: Mapping[str, Any], filters: Mapping[str, list[str]] | None) -> bool:
    wanted = (filters or {}).get("dangling")
    if not wanted:
        return True
    dangling = not info.get("RepoTags") and not info.get("RepoDigests")
    for value in wanted:
        if value.lower() not in ("true", "false", "1", "0"):
            fail(f"invalid filter 'dangling={value}' (use true or false)")
    return any((value.lower() in ("true", "1")) == dangling for value in wanted)


def _created_bound(daemon: LocalDaemon, images: list[dict], filters: Mapping[str, list[str]] | None,
                   key: str) -> float | None:
    """docker's before=IMAGE / since=IMAGE: the creation time of the image named (the earliest of
    several for before, the latest for since, as docker takes them); None without the filter.
    The daemon looks the names up as every command does; an unknown one fails in its sentence."""
    names = (filters or {}).get(key)
    if not names:
        return None
    answer = daemon.call("image.inspect", {"refs": list(names)})
    if answer["errors"]:
        fail(answer["errors"][0])
    listed = {i["Id"]: _epoch(i.get("Created")) for i in images}     # the exact time, not RFC 3339's
    times = [listed.get(doc["Id"], _epoch(doc.get("Created"))) for doc in answer["images"]]
    return min(times) if key == "before" else max(times)


def _label_matches(info: Mapping[str, Any], filters: Mapping[str, list[str]] | None) -> bool:
    """docker's label=KEY and label=KEY=VALUE over the image's configured labels: all must match."""
    labels = info.get("Labels") or {}
    for wanted in (filters or {}).get("label") or []:
        key, sep, value = wanted.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _reference_matches(row: Mapping[str, str], filters: Mapping[str, list[str]] | None) -> bool:
    """docker's reference=PATTERN: a shell pattern over NAME or NAME:TAG (familiar form)."""
    patterns = (filters or {}).get("reference")
    if not patterns:
        return True
    if row["Repository"] == "<none>":
        return False
    names = [row["Repository"]] + ([f"{row['Repository']}:{row['Tag']}"] if row["Tag"] != "<none>" else [])
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def _created_at(created: float) -> str:
    """Go's time.Time.String(), as docker's {{.CreatedAt}} prints it."""
    if not created:
        return ""
    when = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


# -- inspect, tag, save --------------------------------------------------------


@image.command("inspect")
@click.argument("refs", metavar="IMAGE...", nargs=-1, required=True)
@click.option("--format", "-f", "fmt", type=INSPECT_FORMAT, default="json", help=INSPECT_FORMAT_HELP)
@with_daemon
def image_inspect(daemon: LocalDaemon, refs: tuple[str, ...], fmt: str) -> None:
    """Display detailed information on one or more images."""
    answer = daemon.call("image.inspect", {"refs": list(refs)})
    show_inspect(answer["images"], fmt)
    _errors(answer["errors"])


@image.command("tag")
@click.argument("source", metavar="SOURCE_IMAGE[:TAG]")
@click.argument("target", metavar="TARGET_IMAGE[:TAG]")
@with_daemon
def image_tag(daemon: LocalDaemon, source: str, target: str) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    daemon.call("image.tag", {"source": source, "target": target})


@image.command("save")
@click.argument("refs", metavar="IMAGE...", nargs=-1, required=True)
@click.option("--output", "-o", "output", metavar="FILE", help="Write to a file, instead of STDOUT.")
@with_daemon
def image_save(daemon: LocalDaemon, refs: tuple[str, ...], output: str | None) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default), as `docker save`."""
    if output:
        daemon.call("image.save", {"refs": list(refs), "path": os.path.abspath(output)}, timeout=IMAGE_CALL_TIMEOUT)
        return
    stdout = sys.stdout.buffer
    if stdout.isatty():
        fail("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    fd, path = tempfile.mkstemp(prefix=".image-save-", suffix=".tar", dir=daemon.state_dir)
    os.close(fd)
    try:
        daemon.call("image.save", {"refs": list(refs), "path": path}, timeout=IMAGE_CALL_TIMEOUT)
        with open(path, "rb") as f:
            shutil.copyfileobj(f, stdout, 1 << 20)
        stdout.flush()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# -- pull, push (long polls of a transfer the daemon runs: swarm/daemon/transfers.py) ---------
TRANSFER_CALL_TIMEOUT = 15.0   # one poll answers within about a second
DONE_CALL_TIMEOUT = 75.0       # a quiet call answers at the end or after the daemon's DONE_WAIT (60 s)


def _follow(daemon: LocalDaemon, method: str, ref: str, quiet: bool) -> dict:
    """Start (or join) the daemon's transfer of `ref` and print its progress until it ends:
    the outcome, or fail with its error sentence (after what was printed so far). Quiet, the
    call waits for the end in the daemon (one call, not one per layer step)."""
    out = click.get_text_stream("stdout")
    view = TransferView(out.isatty(), shutil.get_terminal_size((200, 24)).columns)
    until = {"until": "done"} if quiet else {}
    timeout = DONE_CALL_TIMEOUT if quiet else TRANSFER_CALL_TIMEOUT
    answer = daemon.call(method, {"ref": ref, **until}, timeout=timeout)
    while True:
        if not quiet:
            out.write(view.feed(answer))
            out.flush()
        if answer["done"]:
            break
        answer = daemon.call(method, {"op": answer["op"], "version": answer["version"], "since": answer["logged"],
                                      **until}, timeout=timeout)
    if answer.get("error") is not None:
        fail(answer["error"])
    return answer["result"]


@image.command("pull")
@click.argument("ref", metavar="NAME[:TAG|@DIGEST]")
@click.option("--quiet", "-q", is_flag=True, help="Suppress verbose output.")
@with_daemon
def image_pull(daemon: LocalDaemon, ref: str, quiet: bool) -> None:
    """Download an image from a registry into this node's store."""
    parsed = reference.parse_image(ref)     # a malformed reference: one sentence, nothing asked
    if not quiet:
        written = reference.parse_normalized(ref.strip())
        click.echo(pull_header(parsed.digest or parsed.tag or "", parsed.path, bool(written.tag or written.digest)),
                   nl=False)
    result = _follow(daemon, "image.pull", str(parsed), quiet)
    click.echo(result["ref"] if quiet else pull_footer(result, parsed.familiar()), nl=quiet)


@image.command("push")
@click.argument("ref", metavar="NAME[:TAG]")
@click.option("--quiet", "-q", is_flag=True, help="Suppress verbose output.")
@with_daemon
def image_push(daemon: LocalDaemon, ref: str, quiet: bool) -> None:
    """Upload an image of this node's store to a registry."""
    parsed = reference.parse_image(ref)
    if not quiet:
        click.echo(f"The push refers to repository [{parsed.name}]")
    result = _follow(daemon, "image.push", str(parsed), quiet)
    click.echo(result["ref"] if quiet else push_footer(result), nl=quiet)


# -- rm, prune -----------------------------------------------------------------
PRUNE_WARNING = {False: "WARNING! This will remove all dangling images.",
                 True: "WARNING! This will remove all images without at least one container associated to them."}


@image.command("rm")
@click.argument("refs", metavar="IMAGE...", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Force removal of the image.")
@with_daemon
def image_rm(daemon: LocalDaemon, refs: tuple[str, ...], force: bool) -> None:
    """Remove one or more images from this node."""
    answer = daemon.call("image.rm", {"refs": list(refs), "force": force})
    for record in answer["records"]:
        click.echo(_record_line(record, "Untagged", "Deleted"))
    _errors(answer["errors"])


@image.command("prune")
@click.option("--all", "-a", "prune_all", is_flag=True, help="Remove all unused images, not just dangling ones.")
@click.option("--force", "-f", is_flag=True, help="Do not prompt for confirmation.")
@with_daemon
def image_prune(daemon: LocalDaemon, prune_all: bool, force: bool) -> None:
    """Remove unused images (dangling ones; every image no task uses with --all)."""
    if not force and not _confirm(PRUNE_WARNING[prune_all]):
        return
    answer = daemon.call("image.prune", {"all": prune_all}, timeout=IMAGE_CALL_TIMEOUT)
    if answer["deleted"]:
        click.echo("Deleted Images:\n" + "".join(_record_line(r, "untagged", "deleted") + "\n"
                                                 for r in answer["deleted"]))
    click.echo(f"Total reclaimed space: {go_human_size(answer['reclaimed'])}")


def _record_line(record: Mapping[str, str], untagged: str, deleted: str) -> str:
    if record.get("Untagged"):
        return f"{untagged}: {record['Untagged']}"
    return f"{deleted}: {record['Deleted']}"


def _errors(errors: list[str]) -> None:
    for error in errors:
        click.echo(f"Error: {error}", err=True)
    if errors:
        raise click.exceptions.Exit(1)


def _confirm(warning: str) -> bool:
    """docker's prompt: anything but y/Y (or no answer at all) keeps the images."""
    click.echo(warning)
    click.echo("Are you sure you want to continue? [y/N] ", nl=False)
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        click.echo()
    return answer.strip().lower() == "y"

"""Docker's image endpoints that map onto this node's image store and registry: `docker pull`
(POST /images/create), `docker images` (GET /images/json), `docker image inspect` and the
registry's view of an image (GET /distribution/{name}/json). Pure.

How this works. A pull is the local `image.pull` long poll (docs/daemon-api.md, "Pulls and
pushes"); `pull_messages` turns each answer into dockerd's JSON progress messages, one per
line: "TAG: Pulling from REPO", then per layer its steps ("Pulling fs layer", "Download
complete", "Pull complete", ...) and its byte counts while it downloads, then "Digest: ..."
and "Status: Downloaded newer image for NAME" (or "Image is up to date"), or an errorDetail
message, which the docker CLI prints and exits 1 on. An image summary gets the members
docker/cli reads that the store does not keep (ParentId, Labels, Containers, SharedSize).
"""
from __future__ import annotations

import fnmatch
from typing import Any

from swarm.api.reference import parse_image
from swarm.engineapi.fields import Unsupported

IMAGE_FILTERS = frozenset(("reference", "dangling"))


def pull_ref(from_image: str | None, tag: str | None) -> str:
    """The reference of ?fromImage=NAME&tag=TAG (a TAG "sha256:..." is a digest)."""
    if not from_image:
        raise Unsupported("fromImage: only pulls are served here (fromSrc imports are not)")
    if not tag:
        # docker/cli sends the tag apart ("latest" when none is given): none at all is --all-tags
        if "@" not in from_image and ":" not in from_image.rsplit("/", 1)[-1]:
            raise Unsupported("tag: pulling every tag of a repository (--all-tags) is not supported")
        return from_image
    return f"{from_image}@{tag}" if tag.startswith("sha256:") else f"{from_image}:{tag}"


def pulling_from(ref: str) -> dict[str, str]:
    """dockerd's first line: {"status": "Pulling from library/busybox", "id": "latest"}."""
    parsed = parse_image(ref)
    return {"status": f"Pulling from {parsed.path}", "id": parsed.tag or parsed.digest or "latest"}


def _progress_bar(current: int, total: int) -> str:
    """dockerd's "[=====>     ]  1.2MB/3.4MB" (the CLI redraws it on a terminal)."""
    width = 50
    done = min(width, int(width * current / total)) if total else 0
    bar = "=" * done + (">" if done < width else "") + " " * max(0, width - done - 1)
    return f"[{bar}] {_size(current)}/{_size(total)}"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}B"


def pull_messages(answer: dict, shown: dict[str, int]) -> list[dict[str, Any]]:
    """dockerd's JSON messages of one `image.pull` answer; `shown`: layer -> the byte count
    last shown (updated), so a layer's progress is sent only when it moved."""
    out: list[dict[str, Any]] = [{"status": status, "progressDetail": {}, "id": layer}
                                 for layer, status in answer.get("log", [])]
    for layer in answer.get("layers", []):
        current, total = int(layer.get("current") or 0), int(layer.get("total") or 0)
        if layer.get("status") in ("Downloading", "Extracting") and shown.get(layer["id"]) != current:
            shown[layer["id"]] = current
            out.append({"status": layer["status"], "progressDetail": {"current": current, "total": total},
                        "progress": _progress_bar(current, total), "id": layer["id"]})
    if answer.get("done"):
        if "error" in answer:
            out.append({"errorDetail": {"message": answer["error"]}, "error": answer["error"]})
        else:
            result = answer["result"]
            name = parse_image(result["ref"]).familiar() if result.get("ref") else ""
            if result.get("digest"):
                out.append({"status": f"Digest: {result['digest']}"})
            out.append({"status": f"Status: {'Downloaded newer image' if result.get('fresh') else 'Image is up to date'}"
                                  f" for {name}"})
    return out


def summary_view(row: dict, api_version: tuple[int, int]) -> dict[str, Any]:
    """Docker's ImageSummary of an `image.ls` row (VirtualSize for clients before API 1.44)."""
    out = {"Id": row["Id"], "ParentId": "", "RepoTags": row.get("RepoTags") or [],
           "RepoDigests": row.get("RepoDigests") or [], "Created": int(row.get("Created") or 0),
           "Size": int(row.get("Size") or 0),
           "SharedSize": -1, "Labels": {}, "Containers": -1}
    if api_version < (1, 44):
        out["VirtualSize"] = out["Size"]
    return out


def image_matches(row: dict, wanted: dict[str, list[str]]) -> bool:
    """Docker's `reference` (a name or NAME:TAG pattern, as `docker images NAME` sends it) and
    `dangling` image filters; Unsupported for any other."""
    for key, values in wanted.items():
        if key not in IMAGE_FILTERS:
            raise Unsupported(f"invalid filter '{key}'")
        values = [v for v in values if v]
        if not values:
            continue
        tags = row.get("RepoTags") or []
        if key == "dangling":
            if any(v not in ("true", "false", "1", "0") for v in values):
                raise Unsupported(f"invalid filter 'dangling={values[0]}'")
            if (not tags) != (values[0] in ("true", "1")):
                return False
        elif not any(fnmatch.fnmatchcase(t, v) or fnmatch.fnmatchcase(t.rsplit(":", 1)[0], v)
                     for t in tags for v in values):
            return False
    return True

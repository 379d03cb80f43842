"""Image references as the store keeps them, and Docker's rules for `image rm` (pure, no I/O).

How this works. The store maps references to image ids: a tag `NAME:TAG` or
a digest `NAME@sha256:HEX` (a RepoDigest), NAME in Docker's familiar form
(`busybox`, `team/app`, `host:5000/team/app`: docker.io and library/ are
implied). `store_key` turns what a user typed into that key, `full_name`
gives the fully qualified name an OCI archive annotates.

`plan_remove` is docker's ImageDelete decision: removing a tag untags it (and
the digests of the same repository once no tag of it is left); the image goes
when its last reference went; by id, every reference goes, but an image named
in several repositories needs --force; an image a task uses is never deleted
(untagging its last reference needs --force, and leaves it dangling).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from swarm.api import reference
from swarm.runtime.errors import ImageError



@dataclass(frozen=True)
class Ref:
    name: str                  # familiar: "busybox", "team/app", "host:5000/app"
    tag: str | None = None
    digest: str | None = None  # "sha256:HEX"

    def key(self) -> str:
        """The store's key: NAME@DIGEST when a digest is given (it wins, as in Docker), else NAME:TAG."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag or 'latest'}"


def parse(ref: str) -> Ref:
    """NAME[:TAG][@sha256:HEX] -> Ref with NAME familiar (Docker's grammar, swarm.api.reference);
    raises ImageError (one sentence) when malformed."""
    try:
        parsed = reference.parse_normalized(ref)
    except reference.InvalidReference as exc:
        raise ImageError(str(exc)) from None
    return Ref(parsed.familiar_name, parsed.tag, parsed.digest)


def store_key(ref: str) -> str:
    return parse(ref).key()


def is_digest_key(key: str) -> bool:
    return "@" in key


def name_of(key: str) -> str:
    if "@" in key:
        return key.split("@", 1)[0]
    return key.rsplit(":", 1)[0]


def full_name(familiar: str) -> str:
    """busybox:1 -> docker.io/library/busybox:1; host:5000/app:1 stays (Docker's domain rule)."""
    return str(reference.parse_normalized(familiar))


@dataclass(frozen=True)
class RemovePlan:
    untag: tuple[str, ...]     # keys to remove, in Docker's order
    delete: bool               # the image goes too


def references(refs: Mapping[str, str], image_id: str) -> list[str]:
    return sorted(k for k, v in refs.items() if v == image_id)


def is_single_reference(keys: list[str]) -> bool:
    """Docker's isSingleReference: at most one tag, and every digest in that tag's repository."""
    if len(keys) <= 1:
        return len(keys) == 1
    tags = [k for k in keys if not is_digest_key(k)]
    if len(tags) > 1:
        return False
    digest_names = {name_of(k) for k in keys if is_digest_key(k)}
    single = tags[0] if tags else keys[0]
    return len(digest_names) == 1 and name_of(single) in digest_names


def plan_remove(refs: Mapping[str, str], image_id: str, given: str | None, *, force: bool, in_use: bool) -> RemovePlan:
    """What `image rm` does: `given` is the store key the user named, None when the image was
    named by its id. Raises ImageError with Docker's "conflict: ..." sentence when refused."""
    keys = references(refs, image_id)
    short = image_id[:12]
    if given is not None:
        if not force and in_use and is_single_reference(keys):
            raise ImageError(f'conflict: unable to remove repository reference "{given}" (must force) - '
                             f"a task is using its referenced image {short}")
        untag = [given]
        remaining = [k for k in keys if k != given]
        if not is_digest_key(given) and not any(not is_digest_key(k) and name_of(k) == name_of(given)
                                                 for k in remaining):
            same_repo = [k for k in remaining if name_of(k) == name_of(given)]
            untag += same_repo
            remaining = [k for k in remaining if k not in same_repo]
        return RemovePlan(tuple(untag), delete=not remaining and not in_use)
    if in_use:
        raise ImageError(f"conflict: unable to delete {short} (cannot be forced) - image is being used by a task")
    if not is_single_reference(keys) and keys and not force:
        raise ImageError(f"conflict: unable to delete {short} (must be forced) - "
                         f"image is referenced in multiple repositories")
    return RemovePlan(tuple(keys), delete=True)

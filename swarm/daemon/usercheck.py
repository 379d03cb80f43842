"""`--user` checked at `service create`/`update` when this manager's node holds the image.

The control API calls the checker with the image, the user and the groups; it
answers Docker's sentence when the image's /etc/passwd or /etc/group lacks them
(swarm/runtime/users.py decides), or None when it cannot tell: an image this
node does not have, an /etc/passwd that is a link. The node that runs the task
checks again and rejects the task with the same sentence.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence

from swarm.runtime import users
from swarm.runtime.images import ImageError, ImageStore

MAX_ETC_FILE = 4 << 20
UserChecker = Callable[[str, str, Sequence[str]], "str | None"]


class _Unknown(Exception):
    """The file cannot be read without mounting the image."""


def _image_file(images: ImageStore, layers: Sequence[str], name: str) -> str | None:
    """etc/NAME as the image's top layer that has it gives it (None: the image has none)."""
    for diff_id in reversed(layers):
        path = os.path.join(images.layer_path(diff_id), "etc", name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError:
            raise _Unknown from None
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return None                 # an overlay whiteout: removed in this layer
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ETC_FILE:
            raise _Unknown
        with open(path, "rb") as f:
            return f.read(MAX_ETC_FILE).decode(errors="replace")
    return None


def image_user_checker(images: ImageStore) -> UserChecker:
    def check(ref: str, user: str, groups: Sequence[str]) -> str | None:
        try:
            image = images.resolve(ref)
            passwd = _image_file(images, image.layers, "passwd")
            group = _image_file(images, image.layers, "group")
        except (ImageError, _Unknown, OSError, ValueError):
            return None
        try:
            users.resolve_user(user or image.user, groups, passwd, group)
        except ValueError as exc:
            return str(exc)
        return None
    return check

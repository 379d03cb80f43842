"""The value of `swarm service create/update --mount` (and --mount-add): docker/cli's
opts/mount.go CSV (type=bind,source=/a,target=/b,readonly and the bind-*, volume-* and
tmpfs-* options) parsed into the daemon's mount dict, with docker's validateMountOptions
rules between its fields. A bad value raises ValueError with one sentence."""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from typing import Any

from swarm.api.units import parse_memory

MOUNT_TYPES = ("bind", "volume", "tmpfs")
BIND_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
BIND_RECURSIVE = ("enabled", "disabled", "writable", "readonly")
_MOUNT_KEYS = {"type": "type", "source": "source", "src": "source", "target": "target", "destination": "target",
               "dst": "target", "readonly": "readonly", "ro": "readonly", "consistency": "consistency",
               "bind-propagation": "bind_propagation", "bind-recursive": "bind_recursive",
               "bind-nonrecursive": "bind_nonrecursive", "volume-nocopy": "volume_nocopy",
               "volume-label": "volume_labels", "volume-driver": "volume_driver", "volume-opt": "volume_opts",
               "tmpfs-size": "tmpfs_size", "tmpfs-mode": "tmpfs_mode"}
_BARE_MOUNT_KEYS = {"readonly", "volume_nocopy", "bind_nonrecursive"}   # may be given without =VALUE


def _bool(key: str, value: str | None) -> bool:
    if value is None or value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise ValueError(f"invalid value for {key}: {value!r} (use true or false)")


def _mount_field(mount: dict[str, Any], key: str, name: str, value: str | None) -> None:
    """One KEY[=VALUE] of --mount into the mount dict (the keys the daemon's Mount has)."""
    if key == "readonly":
        mount["readonly"] = _bool(name, value)
    elif key == "volume_nocopy":
        mount["volume_nocopy"] = _bool(name, value)
    elif key == "bind_nonrecursive":
        # Docker's deprecated spelling of bind-recursive=disabled.
        mount["bind_recursive"] = "disabled" if _bool(name, value) else "enabled"
    elif key == "consistency":
        pass                            # macOS only: accepted and ignored, as docker on Linux does
    elif key == "type":
        mount["type"] = str(value).lower()
    elif key == "bind_propagation":
        if str(value).lower() not in BIND_PROPAGATIONS:
            raise ValueError(f"invalid bind-propagation {value!r} (use {', '.join(BIND_PROPAGATIONS)})")
        mount["bind_propagation"] = str(value).lower()
    elif key == "bind_recursive":
        if value not in BIND_RECURSIVE:
            raise ValueError(f"invalid bind-recursive {value!r} (use enabled, disabled, writable or readonly)")
        mount["bind_recursive"] = value
    elif key in ("volume_labels", "volume_opts"):
        k, _, v = str(value).partition("=")
        if k:
            mount.setdefault(key, {})[k] = v
    elif key == "volume_driver":
        if value != "local":
            raise ValueError(f"volume driver {value!r} is not supported (only the local driver exists)")
        mount["volume_driver"] = value
    elif key == "tmpfs_size":
        try:
            mount["tmpfs_size"] = parse_memory(str(value))
        except ValueError:
            raise ValueError(f"invalid tmpfs-size {value!r} (use a size, like 64m)") from None
    elif key == "tmpfs_mode":
        if not re.fullmatch(r"[0-7]{1,11}", str(value)) or int(str(value), 8) > 0o7777:
            raise ValueError(f"invalid tmpfs-mode {value!r} (use octal permission bits, like 1777 or 0700)")
        mount["tmpfs_mode"] = int(str(value), 8)
    else:
        mount[key] = value


def parse_mount(text: str) -> dict[str, Any]:
    """Docker's --mount CSV (type=bind,source=/a,target=/b,readonly, and the bind-*, volume-* and
    tmpfs-* options) -> the daemon's mount dict: type, source, target, readonly, plus the options given."""
    if not text.strip():
        raise ValueError("the mount is empty")
    try:
        fields = next(csv.reader([text.strip()]))
    except (csv.Error, StopIteration):
        raise ValueError(f"{text!r} is not a list of KEY=VALUE fields separated by commas") from None
    mount: dict[str, Any] = {"type": "volume", "source": "", "target": "", "readonly": False}
    for field in fields:
        name, sep, value = field.partition("=")
        if name.strip() != name:
            raise ValueError(f"invalid option {name.strip()!r} in {field!r}: option should not have whitespace")
        key = _MOUNT_KEYS.get(name.lower(), "")
        if not key:
            raise ValueError(f"unexpected key {name!r} in {field!r} (use type, source, target, readonly, "
                             "bind-propagation, bind-recursive, volume-nocopy, volume-label, volume-driver, "
                             "volume-opt, tmpfs-size or tmpfs-mode)")
        if not sep and key not in _BARE_MOUNT_KEYS:
            raise ValueError(f"invalid field {field!r}: must be a KEY=VALUE pair")
        if sep and not value.strip():
            raise ValueError(f"invalid value for {name!r}: value is empty")
        _mount_field(mount, key, name, value if sep else None)
    check_mount(mount)
    if mount["type"] == "bind" and mount["source"].startswith("."):
        mount["source"] = os.path.abspath(mount["source"])   # as docker does with ./dir
    if mount["type"] == "bind" and not mount["source"].startswith("/"):
        raise ValueError("a bind mount needs a source that is an absolute path (source=/PATH)")
    return mount


_OPTION_TYPE = {"bind_propagation": "bind", "bind_recursive": "bind", "volume_nocopy": "volume",
                "volume_labels": "volume", "volume_driver": "volume", "volume_opts": "volume",
                "tmpfs_size": "tmpfs", "tmpfs_mode": "tmpfs"}


def check_mount(mount: Mapping[str, Any]) -> None:
    """The rules between a mount's fields (docker's validateMountOptions)."""
    kind = mount["type"]
    if kind not in MOUNT_TYPES:
        raise ValueError(f"invalid mount type {kind!r} (use bind, volume or tmpfs)")
    if not mount["target"]:
        raise ValueError("the mount has no target (add target=/PATH)")
    if not mount["target"].startswith("/"):
        raise ValueError(f"the target {mount['target']!r} is not an absolute path")
    for key, owner in _OPTION_TYPE.items():
        if key in mount and owner != kind:
            raise ValueError(f"cannot mix '{owner}-*' options with mount type '{kind}'")
    if kind == "tmpfs" and mount["source"]:
        raise ValueError("a tmpfs mount has no source")
    recursive = mount.get("bind_recursive", "enabled")
    if recursive in ("writable", "readonly") and not mount["readonly"]:
        raise ValueError(f"option 'bind-recursive={recursive}' requires 'readonly' to be specified in conjunction")
    if recursive == "readonly" and mount.get("bind_propagation", "rprivate") != "rprivate":
        raise ValueError("option 'bind-recursive=readonly' requires 'bind-propagation=rprivate'")

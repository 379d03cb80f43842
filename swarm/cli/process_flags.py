"""The values of the `swarm service create/update` flags of a container's process: its
environment (--env, --env-file as docker's pkg/kvfile reads it), command (--entrypoint,
--args), identity (--user, --group, --hostname, --workdir), capabilities, stop signal,
sysctls and ulimits. A bad value raises ValueError with one sentence."""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from swarm.api import options


# -- environment ---------------------------------------------------------------


def parse_env(item: str) -> str:
    """KEY=VALUE, or KEY alone for KEY's value in this environment (as docker does)."""
    key, sep, _ = item.partition("=")
    if not key.strip() or any(c.isspace() for c in key):
        raise ValueError(f"{item!r} is not KEY=VALUE")
    if not sep:
        if key not in os.environ:
            raise ValueError(f"{item!r} has no value and is not set in this environment (use KEY=VALUE)")
        return f"{key}={os.environ[key]}"
    return item


def parse_env_lines(lines: Sequence[str], lookup: Callable[[str], str | None]) -> list[str]:
    """An env file's lines as docker's kvfile reads them: KEY=VALUE kept as written,
    blank lines and # comments skipped, a bare KEY takes `lookup(KEY)` (dropped when unset)."""
    out = []
    for number, raw in enumerate(lines, 1):
        line = raw.lstrip().rstrip("\r\n")
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not key:
            raise ValueError(f"no variable name on line {number} ({line!r})")
        if " " in key or "\t" in key:
            raise ValueError(f"variable {key!r} on line {number} contains whitespace")
        if sep:
            out.append(line)
        elif (value := lookup(key)) is not None:
            out.append(f"{key}={value}")
    return out


def read_env_file(path: str) -> list[str]:
    """--env-file PATH: the variables of the file (docker's format, see parse_env_lines)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_env_lines(lines, os.environ.get)
    except ValueError as exc:
        raise ValueError(f"invalid env file {path}: {exc}") from None


def parse_env_key(item: str) -> str:
    if not item.strip() or "=" in item:
        raise ValueError(f"{item!r} is not a variable name")
    return item


# -- process -------------------------------------------------------------------


def parse_command(text: str) -> list[str]:
    """--entrypoint and --args: one string split as a shell does ("" = none: back to the image's)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


def parse_user(text: str) -> str:
    """USER[:GROUP], names or ids, as `docker service create -u`."""
    if not re.fullmatch(r"[^:\s]+(:[^:\s]+)?", text):
        raise ValueError(f"{text!r} is not a user (use <name|uid>[:<group|gid>])")
    return text


def parse_group(text: str) -> str:
    if not re.fullmatch(r"[^:\s]+", text):
        raise ValueError(f"{text!r} is not a group name or id")
    return text


def parse_hostname(text: str) -> str:
    """A hostname, which may hold templates ({{.Service.Name}}-{{.Task.Slot}}); "" = the default."""
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{text!r} is not a hostname (no spaces)")
    return text


def parse_workdir(text: str) -> str:
    if text and not text.startswith("/"):
        raise ValueError(f"the working directory {text!r} is not an absolute path")
    return text


def parse_capability(text: str) -> str:
    """A capability as docker accepts it (net_admin, CAP_NET_ADMIN, ALL; RESET for update)."""
    if text.strip().upper() == "RESET":
        return "RESET"
    return options.normalize_capability(text)


def parse_signal(text: str) -> str:
    """--stop-signal: a signal name or number, kept as written once it is known."""
    options.parse_signal(text)
    return text.strip()


def parse_sysctl(text: str) -> tuple[str, str]:
    """KEY=VALUE of a sysctl the container's namespaces own (net.*, kernel.shm*, ...)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    options.check_sysctl(key, value)
    return key, value


def parse_ulimit(text: str) -> dict[str, Any]:
    """NAME=SOFT[:HARD], like nofile=1024:2048 -> {"name", "soft", "hard"}."""
    ulimit = options.parse_ulimit(text)
    return {"name": ulimit.name, "soft": ulimit.soft, "hard": ulimit.hard}


def parse_sysctl_key(text: str) -> str:
    """--sysctl-rm KEY (KEY=VALUE is taken as KEY, as docker does)."""
    key = text.partition("=")[0]
    if not key.strip():
        raise ValueError(f"{text!r} is not a sysctl name")
    return key

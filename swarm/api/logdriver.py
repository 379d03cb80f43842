"""A task's log driver (`--log-driver`, `--log-opt`) as Docker's json-file, local and none drivers take it.

Pure: the control API checks a spec with `check_log_driver` before any write,
and the runtime turns a checked one into its log rotation with `rotation`.
Errors are ValueError with one sentence; the caller adds the flag's name.

What follows Docker (daemon/logger/jsonfilelog, daemon/logger/local): the
option names each driver knows, max-size in json-file's decimal units
(FromHumanSize: 10m = 10,000,000 bytes) and in local's binary ones
(RAMInBytes: 10m = 10 MiB), max-file >= 1, and the `none` driver taking any
option. Docker's json-file keeps logs without bound when max-size is not
given; here the node's default rotation applies instead (the runtime's
log_max_size x log_max_file), so no task can fill a node's disk.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the CLI checks --log-opt without loading the object model
    from swarm.api.spec import LogDriver

DRIVERS = ("json-file", "local", "none")
# What each driver of Docker knows; the ones this swarm does not implement are refused by name.
KNOWN_OPTIONS = {
    "json-file": ("max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"),
    "local": ("max-size", "max-file", "compress"),
}
# labels/env (and their -regex forms) name container labels and variables shown by `service logs --details`
SUPPORTED_OPTIONS = ("max-size", "max-file", "labels", "labels-regex", "env", "env-regex")
# Docker's answer to `logs` of a container whose driver keeps nothing to read.
NO_READ = "configured logging driver does not support reading"

_SIZE = re.compile(r"(\d+(?:\.\d+)*) ?([kmgtp])?i?b?", re.IGNORECASE)
_UNITS = "kmgtp"


def parse_size(text: str, binary: bool) -> int:
    """go-units' FromHumanSize (decimal) or RAMInBytes (binary): 10m, 1g, 512k, 100 (bytes), 1.5GB."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid size: {text!r}")
    try:
        number = Decimal(match[1])
    except InvalidOperation:
        raise ValueError(f"invalid size: {text!r}") from None
    unit = match[2].lower() if match[2] else ""
    base = 1024 if binary else 1000
    return int(number * base ** (_UNITS.index(unit) + 1 if unit else 0))


def check_log_driver(driver: LogDriver) -> None:
    """Refuse a driver or option this swarm cannot honour, with Docker's sentence where it has one."""
    if driver.name not in DRIVERS:
        raise ValueError(f"no log driver named {driver.name!r} is available on this swarm "
                         f"(use {', '.join(DRIVERS[:-1])} or {DRIVERS[-1]})")
    if driver.name == "none":
        return                       # Docker's none driver ignores every option
    for key in driver.options:
        if key not in KNOWN_OPTIONS[driver.name]:
            raise ValueError(f"unknown log opt '{key}' for {driver.name} log driver")
        if key not in SUPPORTED_OPTIONS:
            supported = [o for o in KNOWN_OPTIONS[driver.name] if o in SUPPORTED_OPTIONS]
            raise ValueError(f"log opt '{key}' of the {driver.name} log driver is not supported by this swarm "
                             f"(it supports {', '.join(supported)})")
        if key.endswith("-regex"):
            try:
                re.compile(driver.options[key])
            except re.error as exc:
                raise ValueError(f"invalid log opt {key}: {driver.options[key]!r} is not a regular expression ({exc})") from None
    _limits(driver)


def _limits(driver: LogDriver) -> tuple[int | None, int | None]:
    size = files = None
    if "max-size" in driver.options:
        size = parse_size(driver.options["max-size"], binary=driver.name == "local")
        if size <= 0:
            raise ValueError("max-size must be a positive number")
    if "max-file" in driver.options:
        text = driver.options["max-file"].strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(f"invalid max-file {driver.options['max-file']!r}: not a number")
        files = int(text)
        if files < 1:
            raise ValueError("max-file cannot be less than 1")
    return size, files


def keeps_logs(driver: LogDriver) -> bool:
    return driver.name != "none"


def rotation(driver: LogDriver, default_size: int, default_files: int) -> tuple[int, int] | None:
    """(max bytes per file, files kept) for the runtime's rotation; None when the driver keeps no log.
    An option the task does not give takes the node's default, except that json-file with a
    max-size and no max-file keeps one file, as Docker's does. The driver must be checked."""
    if not keeps_logs(driver):
        return None
    size, files = _limits(driver)
    if files is None:
        files = 1 if driver.name == "json-file" and size is not None else default_files
    return (size if size is not None else default_size), files

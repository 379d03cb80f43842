"""What the monitor of a runc task keeps of its output: the settings prepare records in the
bundle's meta.json ("log": driver, max_size, max_file, from the task's log driver and the
node's defaults), read back when the task starts (conmon's --log-path) and when its log is
rotated or read.
"""
from __future__ import annotations

import os

from swarm.api import logdriver
from swarm.api.spec import ContainerSpec
from swarm.runtime.errors import SpecError
from swarm.runtime.runcwatch import read_json

LOG_MAX_SIZE = 20 * 1024 * 1024      # Docker's `local` driver: max-size 20m, max-file 5
LOG_MAX_FILE = 5


def log_settings(container: ContainerSpec, max_size: int, max_file: int) -> dict:
    """What the monitor keeps of the task's output (bundle meta.json "log"); `max_size` and
    `max_file`: the node's defaults."""
    driver = container.log_driver
    try:
        logdriver.check_log_driver(driver)
    except ValueError as exc:
        raise SpecError(f"Invalid log driver settings: {exc}.") from None
    keep = logdriver.rotation(driver, max_size, max_file)
    return {"driver": driver.name, "max_size": keep[0] if keep else 0, "max_file": keep[1] if keep else 0}


def log_settings_of(bundle: str, max_size: int, max_file: int) -> dict | None:
    """The bundle's log settings; None for a driver that keeps no log. A bundle of an older
    version has none recorded: the node's defaults."""
    try:
        log = read_json(os.path.join(bundle, "meta.json")).get("log")
    except (OSError, ValueError):
        log = None
    if not isinstance(log, dict):
        return {"driver": "json-file", "max_size": max_size, "max_file": max_file}
    return None if log.get("driver") == "none" else log


def has_tty(bundle: str) -> bool:
    """Whether the task's process has a terminal (config.json process.terminal, --tty)."""
    config = os.path.join(bundle, "config.json")
    return bool(os.path.exists(config) and read_json(config)["process"].get("terminal"))

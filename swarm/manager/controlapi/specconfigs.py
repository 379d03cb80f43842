"""The update and rollback configs (--update-*, --rollback-*) and the healthcheck
(--health-*, --no-healthcheck) of a service's params: the fields given over docker's
defaults, each bad value named by its flag, durations bounded as Go's time.Duration. Pure.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from swarm.api import spec
from swarm.manager.controlapi.specchecks import MAX_LIST, MAX_TEXT, bad, fields_map

FAILURE_ACTIONS = ("pause", "continue", "rollback")
ROLLBACK_FAILURE_ACTIONS = ("pause", "continue")    # a rollback that fails cannot roll back
UPDATE_ORDERS = ("stop-first", "start-first")
MAX_DURATION = (1 << 63) / 1e9           # Go's longest time.Duration, in seconds (about 292 years)
MIN_HEALTH_DURATION = 0.001              # docker's: a healthcheck duration is 0 (the default) or 1ms or more
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(spec.UpdateConfig))
HEALTH_FIELDS = tuple(f.name for f in dataclasses.fields(spec.HealthConfig))
_HEALTH_FLAGS = {"test": "--health-cmd", "interval": "--health-interval", "timeout": "--health-timeout",
                 "start_period": "--health-start-period", "start_interval": "--health-start-interval",
                 "retries": "--health-retries"}


def _duration(value: Any, flag: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise bad(f"invalid {flag} {value!r}: expected a duration in seconds")
    if value < 0:
        raise bad(f"invalid {flag}: a duration cannot be negative ({value:g}s)")
    if value > MAX_DURATION:
        raise bad(f"invalid {flag}: {value:g}s is longer than the longest duration (about 292 years)")
    return float(value)


def parse_update_config(p: Mapping, key: str) -> spec.UpdateConfig:
    """update_config or rollback_config: the fields given, docker's defaults for the rest;
    each bad value named by its flag (--update-delay, --rollback-order...)."""
    value = p.get(key)
    if value is None:
        return spec.UpdateConfig()
    kind = key.partition("_")[0]
    config = fields_map(value, key, CONFIG_FIELDS)
    out: dict[str, Any] = {}
    for field, v in config.items():
        flag = f"--{kind}-{field.replace('_', '-')}"
        if field == "parallelism":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
                raise bad(f"invalid {flag} {v!r}: a number of tasks of 0 (all at once) or more")
            out[field] = v
        elif field in ("delay", "monitor"):
            out[field] = _duration(v, flag)
        elif field == "max_failure_ratio":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise bad(f"invalid {flag} {v!r}: a failure ratio is from 0 to 1")
            out[field] = float(v)
        elif field == "failure_action":
            actions = FAILURE_ACTIONS if kind == "update" else ROLLBACK_FAILURE_ACTIONS
            if v not in actions:
                raise bad(f"invalid {flag} {str(v)[:40]!r}: use {', '.join(actions[:-1])} or {actions[-1]}")
            out[field] = v
        elif v not in UPDATE_ORDERS:
            raise bad(f"invalid {flag} {str(v)[:40]!r}: use stop-first or start-first")
        else:
            out[field] = v
    return spec.UpdateConfig(**out)


def parse_healthcheck(p: Mapping) -> spec.HealthConfig | None:
    """The spec's healthcheck (None: the image's), as docker's HealthConfig and its checks."""
    value = p.get("healthcheck")
    if value is None:
        return None
    health = fields_map(value, "healthcheck", HEALTH_FIELDS)
    test = health.get("test") or ()
    if (not isinstance(test, (list, tuple)) or len(test) > MAX_LIST
            or not all(isinstance(word, str) and len(word) <= MAX_TEXT for word in test)):
        raise bad("invalid --health-cmd: a test is a list of strings")
    test = tuple(test)
    if not (not test or test == ("NONE",) or (test[0] == "CMD" and len(test) > 1)
            or (test[0] == "CMD-SHELL" and len(test) == 2 and test[1])):
        raise bad(f"invalid --health-cmd {list(test)[:3]!r}: a test is [] (the image's), [\"NONE\"], "
                  "[\"CMD\", ARG...] or [\"CMD-SHELL\", COMMAND]")
    durations = {}
    for field in ("interval", "timeout", "start_period", "start_interval"):
        durations[field] = _duration(health.get(field, 0.0), _HEALTH_FLAGS[field])
        if 0 < durations[field] < MIN_HEALTH_DURATION:
            raise bad(f"invalid {_HEALTH_FLAGS[field]}: it cannot be less than 1ms (0: the default)")
    retries = health.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries < 1 << 31:
        raise bad(f"invalid --health-retries {retries!r}: a number of consecutive failures, 0 or more")
    config = spec.HealthConfig(test, retries=retries, **durations)
    if test == ("NONE",) and config != spec.HealthConfig(test):
        raise bad("--no-healthcheck conflicts with --health-* options")
    return config

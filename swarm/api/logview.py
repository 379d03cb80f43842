"""Docker's conventions for `service logs`, as pure functions: the time syntax of
--since/--until, the details a log driver's options ask for (--details), and
how one line is printed.

How this works. `get_timestamp` is moby's `GetTimestamp` (api/types/time):
a Go duration ("10m", "1h30m") counts back from `now` (to the whole second,
as Docker does); otherwise an RFC 3339 time, a date-time with fewer parts
("2024-01-02T15:04"), a date, or Unix seconds ("1700000000.5"); a time
without a zone is in the caller's zone `tz`. The answer is one RFC 3339 time
in UTC with nanoseconds: the format the log files carry, so a node compares
it with a line's time as text. `log_details` is a log driver's
`Info.ExtraAttributes`: the container labels and environment variables that
the `labels`, `labels-regex`, `env` and `env-regex` options name.
`format_line` is docker/cli's task formatter: `NAME.SLOT.TASKID@NODE    | `.
"""
from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
_GO_DURATION = re.compile(r"([-+]?)((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
             "h": 3600 * 10**9}
_DATE_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:T(\d\d)(?::(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?)?"
                        r"([Zz]|[+-]\d\d:\d\d)?")
_UNIX = re.compile(r"(\d+)(?:\.(\d{1,9}))?")
TRUNC_ID = 12                    # docker's stringid.TruncateID


class BadTime(ValueError):
    """A --since/--until value that is neither a time nor a duration."""


def _go_duration_ns(value: str) -> int | None:
    """Go's time.ParseDuration in nanoseconds, or None if `value` is not one."""
    m = _GO_DURATION.fullmatch(value)
    if m is None:
        return None
    ns = sum(round(float(n) * _UNITS_NS[u]) for n, u in _DURATION_PART.findall(m.group(2)))
    return -ns if m.group(1) == "-" else ns


def get_timestamp(value: str, now: float, tz: datetime.tzinfo = datetime.timezone.utc) -> str:
    """`value` in Docker's --since syntax as an RFC 3339 UTC time with nanoseconds; raises BadTime."""
    value = value.strip()
    ns = _go_duration_ns(value) if value != "0" else None
    if ns is not None:
        return rfc3339_ns((int(now) - ns // 10**9) * 10**9)     # Docker: reference.Add(-d).Unix()
    m = _DATE_TIME.fullmatch(value)
    if m is not None:
        year, month, day, hour, minute, sec, frac, zone = m.groups()
        if frac is not None and sec is None:
            raise BadTime(f"{value!r} is not a time")
        if zone is None:
            where: datetime.tzinfo = tz
        elif zone in "Zz":
            where = datetime.timezone.utc
        else:
            sign = -1 if zone[0] == "-" else 1
            where = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        try:
            when = datetime.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                                     int(sec or 0), tzinfo=where)
        except ValueError as exc:
            raise BadTime(f"{value!r} is not a valid time: {exc}") from None
        whole = int((when - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds())
        return rfc3339_ns(whole * 10**9 + int((frac or "0").ljust(9, "0")))
    m = _UNIX.fullmatch(value)
    if m is not None:
        return rfc3339_ns(int(m.group(1)) * 10**9 + int((m.group(2) or "0").ljust(9, "0")))
    raise BadTime(f"{value!r} is neither a time (like 2024-01-02T15:04:05Z or 1700000000) nor a duration "
                  "(like 42m or 1h30m)")


def rfc3339_ns(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC with nine fractional digits."""
    whole, frac = divmod(max(0, ns), 10**9)
    day = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=whole)
    return day.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def check_time(what: str, value: Any) -> str | None:
    """A --since/--until bound on the wire: None or one RFC 3339 UTC time with nanoseconds."""
    if value is None or (isinstance(value, str) and RFC3339_NANO.match(value)):
        return value
    raise ValueError(f"{what} must be an RFC 3339 UTC time with nanoseconds (2024-01-02T15:04:05.000000000Z)")


def log_details(labels: Mapping[str, str], env: tuple[str, ...] | list[str], options: Mapping[str, str]) -> dict:
    """The details of a task's log lines (`service logs --details`): the container labels and
    environment variables that the log driver's `labels`, `labels-regex`, `env` and `env-regex`
    options name (Docker's Info.ExtraAttributes). No such option: no details."""
    extra: dict[str, str] = {}
    for key in filter(None, options.get("labels", "").split(",")):
        if key in labels:
            extra[key] = labels[key]
    if options.get("labels-regex"):
        pattern = _regex(options["labels-regex"])
        extra.update({k: v for k, v in labels.items() if pattern is not None and pattern.search(k)})
    variables = dict(e.split("=", 1) for e in env if "=" in e)
    for key in filter(None, options.get("env", "").split(",")):
        if key in variables:
            extra[key] = variables[key]
    if options.get("env-regex"):
        pattern = _regex(options["env-regex"])
        extra.update({k: v for k, v in variables.items() if pattern is not None and pattern.search(k)})
    return extra


def _regex(text: str) -> re.Pattern | None:
    try:
        return re.compile(text)
    except re.error:
        return None                  # refused where the log options are given; never fail a read here


def details_text(details: Mapping[str, str]) -> str:
    """The details column: sorted `k=v` pairs, comma-separated, URL-escaped as the daemon sends them."""
    return ",".join(sorted(f"{urllib.parse.quote_plus(k)}={urllib.parse.quote_plus(v)}"
                           for k, v in details.items()))


def format_line(entry: Mapping[str, Any], *, width: int = 1, timestamps: bool = False, raw: bool = False,
                details: bool = False, task_ids: bool = True, trunc: bool = True, resolve: bool = True) -> str:
    """One line as `docker service logs` prints it (without the newline).

    entry: {"time", "line", "task_id", "service", "service_id", "slot", "node", "node_id", "details"};
    width: the digits of the service's replica count (docker pads shorter slots after the node)."""
    line = str(entry.get("line", ""))
    line = line[:-1] if line.endswith("\n") else line
    stamp = f"{entry.get('time', '')} " if timestamps else ""
    extra = entry.get("details") or {}
    if raw:
        # The daemon's own stream: its details carry the swarm context too.
        if details:
            context = {"com.docker.swarm.node.id": entry.get("node_id", ""),
                       "com.docker.swarm.service.id": entry.get("service_id", ""),
                       "com.docker.swarm.task.id": entry.get("task_id", "")}
            return f"{stamp}{details_text({**extra, **context})} {line}"
        return f"{stamp}{line}"
    slot = int(entry.get("slot") or 0)
    service = entry.get("service" if resolve else "service_id", "")
    node = entry.get("node" if resolve else "node_id", "")
    task = f"{service}.{slot}"
    if task_ids:
        task_id = str(entry.get("task_id", ""))
        task += f".{task_id if not trunc else task_id[:TRUNC_ID]}"
    padding = " " * max(0, width - len(str(slot)))
    column = f"{details_text(extra)} " if details else ""
    return f"{stamp}{task}@{node}{padding}    | {column}{line}"

"""The values of `swarm service create` and `update` flags: each parser turns
docker's text form into the daemon's value or raises ValueError with a
sentence, which `Parsed` turns into a click usage error naming the option
(exit 2, nothing sent). The flags themselves are declared in
swarm/cli/service_spec.py; this module holds the click types they use (the
table at the end) and the parsers of the smaller groups: CPUs, placement
(--constraint, --placement-pref), labels, logs, --secret/--config (docker/cli's
SecretOpt and ConfigOpt), scale and tail, durations of 0 or more and a failure
ratio from 0 to 1 for the --update-*/--rollback-*/--health-* flags. The larger
groups have modules of their own: mount_flag.py (--mount, docker/cli's
opts/mount.go), endpoint_flags.py (--publish, --network, --dns*, --host) and
process_flags.py (--env/--env-file, the command, user, capabilities, signal,
sysctls, ulimits)."""
from __future__ import annotations

import csv
import functools
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from swarm.api import logdriver
from swarm.api.units import parse_memory
from swarm.cli.common import Duration, parse_duration
from swarm.cli.endpoint_flags import (NetworkParam, parse_dns_option, parse_dns_search, parse_host, parse_host_rm,
                                      parse_ip, parse_network_ref, parse_publish, parse_publish_rm)
from swarm.cli.mount_flag import parse_mount
from swarm.cli.process_flags import (parse_capability, parse_command, parse_env, parse_env_key, parse_group,
                                     parse_hostname, parse_signal, parse_sysctl, parse_sysctl_key, parse_ulimit,
                                     parse_user, parse_workdir)

DEFAULT_WAIT = "2m0s"         # --timeout of create/update/scale


def parse_cpus(text: str) -> int:
    """A decimal number of CPUs ("0.5", "2") -> nano CPUs, as docker's NanoCPUs."""
    try:
        cpus = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number of CPUs (use a decimal, like 0.5 or 2)") from None
    if not cpus.is_finite() or cpus < 0:
        raise ValueError(f"{text!r} is not a number of CPUs (use a decimal of 0 or more, like 0.5 or 2)")
    nano = cpus * 10**9
    if nano != nano.to_integral_value():
        raise ValueError(f"{text!r} is too precise (at most 9 decimals)")
    return int(nano)


# -- placement -----------------------------------------------------------------


def parse_constraint(item: str) -> str:
    ops = re.findall(r"==|!=", item)
    if len(ops) == 1:
        left, right = item.split(ops[0])
        if left.strip() and right.strip():
            return item
    raise ValueError(f"{item!r} is not a constraint (use KEY==VALUE or KEY!=VALUE, like node.role==manager)")


def parse_placement_pref(item: str) -> str:
    """spread=DESCRIPTOR (the only strategy docker knows), like spread=node.labels.zone."""
    strategy, sep, descriptor = item.partition("=")
    if not sep or not strategy:
        raise ValueError('placement preference must be of the format "<strategy>=<arg>"')
    if strategy != "spread":
        raise ValueError(f"unsupported placement preference {strategy} (only spread is supported)")
    if not descriptor.strip():
        raise ValueError(f"{item!r} spreads over nothing (use spread=node.labels.LABEL)")
    return item


# -- labels --------------------------------------------------------------------


def parse_label(text: str) -> tuple[str, str]:
    """KEY[=VALUE] (no value: an empty one), as docker's ValidateLabel."""
    key, _, value = text.partition("=")
    key = key.lstrip(" \t")
    if not key:
        raise ValueError(f"invalid label {text!r}: empty name")
    if any(c in " \t" for c in key):
        raise ValueError(f"label {key!r} contains whitespaces")
    return key, value


def parse_label_key(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not a label key")
    return text


# -- logs ----------------------------------------------------------------------

LOG_DRIVERS = ("json-file", "local", "none")


LOG_OPT_KEYS = frozenset(k for keys in logdriver.KNOWN_OPTIONS.values() for k in keys)


def parse_log_opt(text: str) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE as docker takes it, or several joined by commas (max-size=10m,max-file=3):
    a comma starts a new option only before a known option's KEY=, so a value that is a
    list (labels=com.a,com.b) stays whole."""
    pairs: list[list[str]] = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not pairs or (sep and key.strip() in LOG_OPT_KEYS):
            pairs.append([key, value] if sep else [part, ""])
            if not sep or not key.strip():
                raise ValueError(f"{text!r} is not KEY=VALUE (like max-size=10m)")
        else:
            pairs[-1][1] += "," + part
    return tuple((key, value) for key, value in pairs)


def flatten_log_opts(ctx: click.Context, param: click.Parameter, groups: Sequence[Sequence[tuple[str, str]]]) -> tuple:
    return tuple(pair for group in groups for pair in group)


# -- --secret and --config -----------------------------------------------------


def parse_file_ref(kind: str, text: str) -> dict[str, Any]:
    """--secret/--config (and -add): NAME, or the CSV source=NAME,target=PATH,uid=,gid=,mode=
    (docker/cli's SecretOpt and ConfigOpt: src for source, mode in Go's base-0 syntax, so 0400
    is octal) -> the wire reference {"source", "target", "uid", "gid", "mode"}, with docker's
    defaults: target the name, uid and gid "0", mode 0444."""
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise ValueError(f"{text!r} is not a {kind} reference") from None
    ref: dict[str, Any] = {"source": "", "target": "", "uid": "0", "gid": "0", "mode": 0o444}
    if len(fields) == 1 and "=" not in fields[0]:
        ref["source"] = fields[0]
    else:
        for field in fields:
            key, sep, value = field.partition("=")
            if not sep or not key:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
            key = key.lower()
            if key in ("source", "src"):
                ref["source"] = value
            elif key in ("target", "uid", "gid"):
                ref[key] = value
            elif key == "mode":
                ref["mode"] = _go_uint(value)
            else:
                raise ValueError(f"invalid field in {kind} request: {key}")
    if not ref["source"]:
        raise ValueError("source is required")
    ref["target"] = ref["target"] or ref["source"]
    return ref


def _go_uint(text: str) -> int:
    """Go's strconv.ParseUint(text, 0, 32): 0x.., 0o.., 0b.., a leading 0 for octal, else decimal."""
    try:
        value = int(text, 8) if re.fullmatch(r"0[0-7]+", text) else int(text, 0)
    except ValueError:
        raise ValueError(f"invalid mode specified: {text!r} is not a number (like 0400)") from None
    if not 0 <= value < 1 << 32:
        raise ValueError(f"invalid mode specified: {text!r} is out of range")
    return value


def parse_file_name(text: str) -> str:
    """--secret-rm/--config-rm: the name the service was given it by."""
    if not text.strip() or "," in text or "=" in text:
        raise ValueError(f"{text!r} is not a name (remove a secret or config by its name)")
    return text


# -- other commands ------------------------------------------------------------


def parse_scale(item: str) -> tuple[str, int]:
    name, sep, count = item.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"invalid scale specifier {item!r}: must be of the form SERVICE=REPLICAS")
    if not count.isdigit():
        raise ValueError(f"invalid replicas value {count!r} in {item!r}: a number of 0 or more")
    return name, int(count)


def parse_tail(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number of lines (or all)")
    return int(text)


# -- rolling updates and healthchecks ------------------------------------------

FAILURE_ACTIONS = ("pause", "continue", "rollback")
ROLLBACK_FAILURE_ACTIONS = ("pause", "continue")     # a rollback that fails cannot roll back (docker's choices)
UPDATE_ORDERS = ("stop-first", "start-first")


def parse_duration0(text: str) -> float:
    """A duration of 0 or more (--update-delay, --health-interval...): Go's syntax; a
    negative one is named as such (docker's PositiveDurationOpt: "duration cannot be negative")."""
    if text.strip().startswith("-"):
        raise ValueError(f"{text!r} is negative: use a duration of 0 or more, like 10s")
    return parse_duration(text, allow_zero=True)


def parse_ratio(text: str) -> float:
    """--update-max-failure-ratio: a fraction of the tasks, from 0 to 1."""
    try:
        ratio = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (use a fraction from 0 to 1, like 0.2)") from None
    if not 0 <= ratio <= 1:             # NaN fails too
        raise ValueError(f"{text!r} is not from 0 to 1 (a fraction of the tasks, like 0.2)")
    return ratio


class Parsed(click.ParamType):
    """A click type from a parse function raising ValueError (-> usage error naming the option)."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self.parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


MEMORY = Parsed("bytes", parse_memory)
CPUS = Parsed("decimal", parse_cpus)
MOUNT = Parsed("mount", parse_mount)
ENV = Parsed("KEY=VALUE", parse_env)
ENV_KEY = Parsed("KEY", parse_env_key)
CONSTRAINT = Parsed("expr", parse_constraint)
PLACEMENT_PREF = Parsed("pref", parse_placement_pref)
SCALE = Parsed("SERVICE=REPLICAS", parse_scale)
TAIL = Parsed("N|all", parse_tail)
SECRET = Parsed("secret", functools.partial(parse_file_ref, "secret"))
CONFIG = Parsed("config", functools.partial(parse_file_ref, "config"))
FILE_NAME = Parsed("NAME", parse_file_name)
PUBLISH = Parsed("[PUBLISHED:]TARGET[/PROTO]", parse_publish)
PUBLISH_RM = Parsed("TARGET[/PROTO]", parse_publish_rm)
NETWORK = NetworkParam()
NETWORK_REF = Parsed("NETWORK", parse_network_ref)
COMMAND = Parsed("command", parse_command)
USER = Parsed("<name|uid>[:<group|gid>]", parse_user)
GROUP = Parsed("GROUP", parse_group)
WORKDIR = Parsed("PATH", parse_workdir)
HOSTNAME = Parsed("NAME", parse_hostname)
CAPABILITY = Parsed("CAPABILITY", parse_capability)
SIGNAL = Parsed("SIGNAL", parse_signal)
SYSCTL = Parsed("KEY=VALUE", parse_sysctl)
SYSCTL_KEY = Parsed("KEY", parse_sysctl_key)
ULIMIT = Parsed("NAME=SOFT[:HARD]", parse_ulimit)
ULIMIT_NAME = Parsed("NAME", parse_env_key)
IP = Parsed("IP", parse_ip)
DNS_SEARCH = Parsed("DOMAIN", parse_dns_search)
DNS_OPTION = Parsed("OPTION", parse_dns_option)
HOST = Parsed("HOST:IP", parse_host)
HOST_RM = Parsed("HOST[:IP]", parse_host_rm)
LABEL = Parsed("KEY[=VALUE]", parse_label)
LABEL_KEY = Parsed("KEY", parse_label_key)
LOG_OPT = Parsed("KEY=VALUE", parse_log_opt)
DURATION0 = Duration(allow_zero=True)
NONNEGATIVE_DURATION = Parsed("duration", parse_duration0)
RATIO = Parsed("float", parse_ratio)
RESTART_CONDITIONS = ("none", "on-failure", "any")

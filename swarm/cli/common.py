"""What every command of the `swarm` CLI shares: the local daemon (one blocking
RPC per request over STATE_DIR/swarm.sock), input types (durations, addresses,
labels), output as docker prints it, and errors as one line on stderr."""
from __future__ import annotations

import functools
import importlib
import ipaddress
import json
import logging
import os
import re
import socket
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from swarm.api.gofmt import Function

# Every command imports this module, so it imports only what parsing and printing
# need: the daemon's client, the template engine and the filter parser are
# imported by the functions that use them (a command starts in tens of ms).

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/swarm"
DEFAULT_PORT = 2377
SOCKET_NAME = "swarm.sock"
NODE_FILE = "node.json"
CALL_TIMEOUT = 10.0
SLOW_CALL_TIMEOUT = 30.0  # membership changes: leave, promote, demote, rm
ROLES = ("worker", "manager")
AVAILABILITIES = ("active", "pause", "drain")


# -- the local daemon ----------------------------------------------------------


class LocalDaemon:
    """The node selected by --state-dir, reached over its unix socket."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.socket = os.path.join(self.state_dir, SOCKET_NAME)

    def call(self, method: str, params: dict | None = None, timeout: float = CALL_TIMEOUT) -> Any:
        from swarm.rpc.blocking import call_unix_sync
        from swarm.rpc.messages import RPCError
        try:
            return call_unix_sync(self.socket, method, params or {}, timeout)
        except RPCError as exc:
            # "No socket" alone does not tell a new user what is wrong: say whether
            # there is a node here at all. The code stays "unavailable" (callers
            # such as `leave` and the convergence wait decide on it).
            if exc.code != "unavailable" or self._listening():
                raise
            if not os.path.exists(os.path.join(self.state_dir, NODE_FILE)):
                raise RPCError("unavailable", not_in_swarm(self.state_dir)) from None
            raise RPCError("unavailable", f"the swarm daemon of the node in {self.state_dir} is not running; "
                                          'start it with "swarm daemon --detach"') from None

    def _listening(self) -> bool:
        """Does anything accept connections on the socket (a daemon that failed mid-call, say)?"""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.socket)
            except OSError:
                return False
        return True


def not_in_swarm(state_dir: str) -> str:
    return (f'this node is not part of a swarm (no node in {state_dir}): run "swarm init" or "swarm join", '
            "or point --state-dir (or SWARM_STATE_DIR) at a node's state directory")


@dataclass
class Options:
    """What the root group was given (`swarm --state-dir DIR COMMAND`); the root puts it in ctx.obj."""
    state_dir: str | None = None


STATE_DIR_HELP = "The node's state directory (env SWARM_STATE_DIR)."


def state_dir_of(ctx: click.Context, state_dir: str) -> str:
    """The state directory a command works on: its own --state-dir, else the root's
    (`swarm --state-dir DIR COMMAND`, as `docker -H`), else SWARM_STATE_DIR, else the default."""
    if ctx.get_parameter_source("state_dir") is click.core.ParameterSource.COMMANDLINE:
        return state_dir
    options = ctx.find_object(Options)
    return options.state_dir if options is not None and options.state_dir is not None else state_dir


def with_daemon(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --state-dir to a command and hand it a LocalDaemon as `daemon`."""
    @click.option("--state-dir", envvar="SWARM_STATE_DIR", default=DEFAULT_STATE_DIR, show_default=True,
                  type=click.Path(file_okay=False), help=STATE_DIR_HELP)
    @functools.wraps(fn)
    def wrapper(state_dir: str, **kwargs: Any) -> Any:
        return fn(daemon=LocalDaemon(state_dir_of(click.get_current_context(), state_dir)), **kwargs)
    return wrapper


def bootstrap() -> ModuleType:
    # import_module reads sys.modules, so tests can put a fake module there.
    return importlib.import_module("swarm.daemon.bootstrap")


# -- input types ---------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def parse_duration(text: str, allow_zero: bool = False) -> float:
    """Go's time.ParseDuration ("90s", "1h30m", "500ms"), in seconds; must be > 0
    (or >= 0 with allow_zero, where a bare "0" is also accepted, as Go does)."""
    text = text.strip()
    if allow_zero and text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration (use a number and a unit, like 90s, 5m or 2160h)")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{text!r} must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as Go prints a time.Duration: 1s, 1m30s, 2160h0m0s, 500ms."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1e6), ("µs", 1e3), ("ns", 1)):
            if ns >= size:
                return f"{_trim(ns / size)}{unit}"
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    secs = f"{_trim(rest / 1e9)}s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def parse_addr(text: str, default_port: int = DEFAULT_PORT) -> str:
    """HOST[:PORT] (IPv6 as [ADDR]:PORT) -> "HOST:PORT", port 1-65535."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not HOST[:PORT] (write IPv6 as [ADDR]:PORT)")
        _check_ipv6(host)
        return f"[{host}]:{_port(rest[1:], text) if rest else default_port}"
    if text.count(":") > 1:  # a bare IPv6 address, no port
        _check_ipv6(text)
        return f"[{text}]:{default_port}"
    host, sep, port = text.partition(":")
    if not _HOSTNAME.match(host):
        raise ValueError(f"{text!r} is not HOST[:PORT]: {host!r} is not a host name or IP address")
    if re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv4 address") from None
    return f"{host}:{_port(port, text) if sep else default_port}"


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not a valid IPv6 address") from None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r} has an invalid port {text!r} (use 1-65535)")
    return int(text)


class Duration(click.ParamType):
    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value, self.allow_zero)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Address(click.ParamType):
    name = "host[:port]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return parse_addr(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
ADDRESS = Address()


def parse_label_add(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str] | None:
    """--label-add k=v (or just k: empty value, as docker does) -> {k: v}."""
    if not values:
        return None
    labels: dict[str, str] = {}
    for item in values:
        key, _, value = item.partition("=")
        if not key.strip():
            raise click.BadParameter(f"{item!r} has no key (use KEY=VALUE or KEY)", ctx, param)
        labels[key] = value
    return labels


def parse_label_rm(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> list[str] | None:
    if not values:
        return None
    for key in values:
        if not key.strip() or "=" in key:
            raise click.BadParameter(f"{key!r} is not a label key", ctx, param)
    return list(values)


# -- output --------------------------------------------------------------------


def print_table(rows: Sequence[Sequence[str]], columns: Sequence[str]) -> None:
    """Columns padded like docker's tabwriter (min width 10, 3 spaces between)."""
    print_cells([list(columns)] + [[str(cell) for cell in row] for row in rows])


def print_cells(table: Sequence[Sequence[str]]) -> None:
    """Rows of cells as docker's tabwriter(minwidth 10, padding 3) aligns them: every cell
    but a row's last is padded to its column's width (rows may have fewer cells)."""
    columns = max((len(row) for row in table), default=0)
    widths = [max([10] + [len(row[i]) + 3 for row in table if len(row) > i + 1]) for i in range(columns - 1)]
    for row in table:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths)] + list(row[-1:])
        click.echo("".join(cells).rstrip())


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    if (s := int(seconds)) < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    if (minutes := int(seconds / 60)) == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    if (hours := int(seconds / 3600 + 0.5)) == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=4, ensure_ascii=False))


def show_list(rows: Sequence[Any], fmt: str, quiet: bool, table: Callable[[], list[list[str]]],
              columns: Sequence[str], *, ident: Callable[[Any], str] = lambda row: row["id"],
              as_json: Callable[[Sequence[Any]], Any] = list,
              fields: Callable[[Sequence[Any]], list[Mapping[str, Any]]] | None = None,
              headers: Mapping[str, str] | None = None) -> None:
    """What every `ls` prints: one JSON document, a Go template per row (`fields` gives the
    rows with docker's field names, `headers` their column titles for "table TEMPLATE"),
    the IDs (-q), or docker's table (built only when it is shown: it may cost another call)."""
    if fmt == "json":
        print_json(as_json(rows))
    elif fmt != "table" and fields is not None:
        show_templated(fields(rows), fmt, headers or {})     # docker: a custom format wins over -q
    elif quiet:
        for row in rows:
            click.echo(ident(row))
    else:
        print_table(table(), columns)


def show_inspect(objects: Sequence[Mapping[str, Any]], fmt: str,
                 pretty: Callable[[Mapping[str, Any]], list[str]] | None = None) -> None:
    """What every `inspect` prints: a JSON list, docker's --pretty text (one block per
    object), or a Go template rendered for each object."""
    if fmt == "json":
        print_json(list(objects))
    elif fmt == "pretty" and pretty is not None:
        click.echo("\n\n".join("\n".join(pretty(o)) for o in objects))
    else:
        from swarm.api.gotemplate import TemplateError, compile_template
        text = _template_text(fmt)
        try:
            tmpl = compile_template(text)
            out = "".join(tmpl.render(InspectDoc(o)) + "\n" for o in objects)
        except TemplateError as exc:
            fail(f"template parsing error: {exc}")
        click.echo(out, nl=False)


# -- --format templates and --filter (docker's formatter and filter flags) ------

FORMAT_HELP = 'table, json, "table TEMPLATE" or a Go template ({{.ID}}), as docker\'s --format.'
INSPECT_FORMAT_HELP = "json, pretty or a Go template ({{.id}}: the keys of the JSON document)."
FILTER_HELP = "Filter the list, KEY=VALUE (repeatable: one key's values OR, different keys AND)."


def header_functions() -> dict[str, Function]:
    """docker/cli's templates.HeaderFunctions: a table's header row is the template run on the
    column titles, with these in place of the functions that would change a title."""
    from swarm.api.gofmt import DOCKER_FUNCTIONS, Function
    return {
        **DOCKER_FUNCTIONS,
        **{name: Function(lambda v, *_: v, ("any",) + ("any",) * extra)
           for name, extra in (("json", 0), ("split", 1), ("join", 1), ("title", 0), ("lower", 0), ("upper", 0),
                               ("truncate", 1))},
    }


class OutputFormat(click.ParamType):
    """--format: json, table (lists) or pretty (inspect), "table TEMPLATE", or a Go template.
    A bare word that is none of these is refused: it would print itself once per row."""
    name = "format"

    def __init__(self, *words: str) -> None:
        self.words = words

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if text in self.words or "{{" in text or ("table" in self.words and is_table(text)):
            return text
        self.fail(f"{text!r} is not {', '.join(self.words)} or a Go template like '{{{{.ID}}}}'", param, ctx)


LIST_FORMAT = OutputFormat("table", "json")
INSPECT_FORMAT = OutputFormat("json", "pretty")


def is_table(fmt: str) -> bool:
    return fmt == "table" or fmt.startswith(("table ", "table\t"))


def _template_text(fmt: str) -> str:
    """The template of a --format value, as docker's formatter prepares it."""
    text = fmt[len("table"):] if is_table(fmt) else fmt
    return text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")


def show_templated(items: Sequence[Mapping[str, Any]], fmt: str, headers: Mapping[str, str]) -> None:
    """Each item through the --format template; "table TEMPLATE" adds a header row and aligns columns."""
    from swarm.api.gotemplate import TemplateError, compile_template
    text = _template_text(fmt)
    try:
        tmpl = compile_template(text)
        body = "".join(tmpl.render(item) + "\n" for item in items)
    except TemplateError as exc:
        fail(f"template parsing error: {exc}")
    if not is_table(fmt):
        click.echo(body, nl=False)
        return
    try:
        head = compile_template(text, funcs=header_functions(), missing_key="zero").render(headers)
    except TemplateError:
        head = ""          # docker ignores a header that does not render
    print_cells([line.split("\t") for line in (head + "\n" + body).split("\n")[:-1]])


def parse_filters(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, list[str]] | None:
    """-f KEY=VALUE flags -> {key: [values]} (the daemon checks the keys)."""
    if not values:
        return None
    from swarm.api import filters  # brings the object model (msgspec): only when -f is given
    try:
        return filters.parse(values) or None
    except filters.FilterError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def filter_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--filter", "-f", "filters", multiple=True, callback=parse_filters, metavar="KEY=VALUE",
                        help=FILTER_HELP)(fn)


def self_node(daemon: LocalDaemon, filters: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """`node=self` names this node, as docker's does: its ID, asked of the daemon."""
    if "self" not in filters.get("node", ()):
        return {k: list(v) for k, v in filters.items()}
    me = daemon.call("ping").get("node_id") or "self"
    return {k: [me if k == "node" and v == "self" else v for v in values] for k, values in filters.items()}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class InspectDoc(dict):
    """An inspect document for templates: a key not found is looked up snake_cased too, so
    docker's `{{.ID}}` and `{{.Spec.Name}}` find our "id" and "spec"/"name"."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        super().__init__(doc)

    def _key(self, key: Any) -> Any:
        return key if dict.__contains__(self, key) or not isinstance(key, str) else _snake(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, self._key(key))

    def __getitem__(self, key: Any) -> Any:
        return _doc(dict.__getitem__(self, self._key(key)))


def _doc(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, InspectDoc):
        return InspectDoc(value)
    if isinstance(value, list):
        return [_doc(v) for v in value]
    return value


def _title(value: Any) -> str:
    return str(value or "").capitalize()


# -- errors --------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(1)


def one_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # name the real failure, not trio's wrapper
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def internal_error(exc: Exception) -> NoReturn:
    # The details go where an operator looks, never to a user's terminal: the
    # log of a daemon running in this process (`swarm daemon`), or stderr
    # when SWARM_DEBUG is set.
    if logging.getLogger().handlers:
        log.error("internal error", exc_info=exc)
    elif os.environ.get("SWARM_DEBUG"):
        traceback.print_exception(exc)
    fail(f"internal error: {one_line(exc)}")

def kv(label: str, value: Any, indent: int = 0) -> str:
    """One `Label:  value` line of a --pretty block, labels aligned."""
    return f"{' ' * indent}{label + ':':<{21 - indent}} {value}"

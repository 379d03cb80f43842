"""Reading compose files: YAML with the line of every key, the .env file, and the
whole pipeline of `swarm stack deploy|config -c FILE...`.

How this works: `parse_yaml` reads one file with PyYAML's safe loader, resolving
plain scalars as YAML 1.2 does (and as docker/cli's yaml.v3 does): only
true/false are booleans, "80:80" stays a string (not YAML 1.1's base 60), dates
stay strings. It walks the node tree beside the values to note the line of every
key (`Where`). `load` then, per file: interpolates (`interpolate`), validates
against the compose-spec schema (`schema`), puts the short syntaxes into their
long forms (`merge.normalize`); and merges the files in order (`merge.merge_files`),
as docker/cli's loader.Load. Variables come from the environment, then from a
.env file beside the first compose file for the names the environment lacks (as
docker compose reads it). Only `read_*` touch the disk.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from swarm.stack import merge, schema
from swarm.stack.errors import ComposeError, Path
from swarm.stack.interpolate import interpolate


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's plain scalars (bool: true/false only; ints without base 60; no dates)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                           "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int",
                              re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o?[0-7]+|0x[0-9a-fA-F]+)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
                              list("-+0123456789."))


def parse_yaml(text: str, filename: str) -> tuple[dict[str, Any], dict[Path, tuple[str, int]]]:
    """(the file's top-level mapping, where each key is). Keys become strings, as docker's."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise ComposeError(f"{filename}{where}: the file is not valid YAML ({problem})") from None
    except yaml.YAMLError as exc:
        raise ComposeError(f"{filename}: the file is not valid YAML ({exc})") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ComposeError(f"{filename}: the top-level object must be a mapping (a compose file starts with "
                           "services:)")
    where: dict[Path, tuple[str, int]] = {(): (filename, 1)}
    _note_lines(node, (), where, filename)
    return _string_keys(data), where


def _note_lines(node: yaml.Node, path: Path, where: dict[Path, tuple[str, int]], filename: str) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue    # a merge key: its values keep no line of their own (the parent's is used)
            key = _scalar_key(key_node)
            where[(*path, key)] = (filename, key_node.start_mark.line + 1)
            _note_lines(value_node, (*path, key), where, filename)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            where[(*path, i)] = (filename, item.start_mark.line + 1)
            _note_lines(item, (*path, i), where, filename)


def _scalar_key(node: yaml.ScalarNode) -> str:
    return str(node.value)


def _string_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else _text(k)): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def _text(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# -- .env ----------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*?)\s*$")


def parse_dotenv(text: str, filename: str) -> dict[str, str]:
    """A .env file as docker compose reads it: NAME=VALUE lines, # comments, blank lines,
    values in '' (as written) or "" (with \\n, \\" escapes), an inline " #" comment after a bare value."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if not match:
            raise ComposeError(f"{filename}, line {number}: {line.strip()[:60]!r} is not NAME=VALUE")
        name, value = match[1], match[2]
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[name] = value
    return out


# -- the pipeline --------------------------------------------------------------------------


@dataclass
class Compose:
    """The merged, interpolated, validated compose file, in its long forms."""
    data: dict[str, Any]
    where: dict[Path, tuple[str, int]]
    working_dir: str                 # relative paths (bind sources, secret files, env_file) start here
    files: list[str] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)   # the variables (.env, then the process's)


@dataclass
class Source:
    name: str      # as the user gave it ("-": standard input)
    text: str


def load_sources(sources: Sequence[Source], environ: Mapping[str, str], working_dir: str,
                 read_env_file: Callable[[str], str] | None = None, interpolate_variables: bool = True) -> Compose:
    """The files merged in order, each interpolated with `environ`, validated and normalized.
    `read_env_file(path)` reads an env_file of a service (relative to `working_dir`).
    Without `interpolate_variables` (`stack config --skip-interpolation`) the values stay as written."""
    if not sources:
        raise ComposeError("specify a compose file (with --compose-file)")
    data: dict[str, Any] = {}
    where: dict[Path, tuple[str, int]] = {}
    for number, source in enumerate(sources):
        raw, lines = parse_yaml(source.text, source.name)
        if "services" in raw and not isinstance(raw["services"], dict) and raw["services"] is not None:
            raise ComposeError(f"{source.name}, line {lines.get(('services',), (source.name, 0))[1]}: services "
                               "must be a mapping of service names to services")
        values = interpolate(raw, environ.get, lines, source.name) if interpolate_variables else raw
        schema.validate(values, lines, source.name)
        values = merge.normalize(values, lines, source.name, working_dir, environ, read_env_file)
        data = values if number == 0 else merge.merge_files(data, values)
        where.update(lines)
    if not data.get("services"):
        first = sources[0].name if len(sources) == 1 else ", ".join(s.name for s in sources)
        raise ComposeError(f"{first}: the compose file has no services (add a services: section with at least "
                           "one service)")
    return Compose(data, where, working_dir, [s.name for s in sources], dict(environ))


def read_sources(paths: Sequence[str]) -> tuple[list[Source], str]:
    """The -c files' texts and the working directory (the first file's; "-" reads standard input)."""
    sources = []
    for path in paths:
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
        except UnicodeDecodeError:
            raise ComposeError(f"{path} is not a UTF-8 text file") from None
        except OSError as exc:
            raise ComposeError(f"cannot read the compose file {path}: {exc.strerror}") from None
        sources.append(Source(path, text))
    first = paths[0] if paths else "-"
    working_dir = os.getcwd() if first == "-" else os.path.dirname(os.path.abspath(first))
    return sources, working_dir


def environment(working_dir: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables for interpolation: the .env beside the first file, then the process's (which win)."""
    path = os.path.join(working_dir, ".env")
    values: dict[str, str] = {}
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                values = parse_dotenv(f.read(), path)
        except OSError as exc:
            raise ComposeError(f"cannot read {path}: {exc.strerror}") from None
    return {**values, **environ}


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise ComposeError(f"{path} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ComposeError(f"cannot read {path}: {exc.strerror}") from None


def load(paths: Sequence[str], environ: Mapping[str, str], interpolate_variables: bool = True) -> Compose:
    """`-c FILE...` as `stack deploy` and `stack config` read them."""
    sources, working_dir = read_sources(paths)
    return load_sources(sources, environment(working_dir, environ), working_dir, read_text, interpolate_variables)

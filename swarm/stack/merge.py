"""Compose files in their long forms, and several of them merged into one.

How this works: `normalize` rewrites one file's services as docker/cli's loader
transforms them (its createTransformHook): a short port ("8080:80/udp") becomes
one {target, published, protocol, mode} per port, a short volume
("data:/var/lib:ro") a {type, source, target, read_only} mount, a secret's name a
{source}, a list of "K=V" a mapping, a command string its words (shlex), a
healthcheck test string ["CMD-SHELL", text]; env_file's variables are read into
environment. `merge_files` then merges a later file into the earlier ones as
docker/cli's merge.go (mergo with override and append): a service's mappings
merge key by key, ports by published port, secrets and configs by source,
volumes by target, lists are appended, command and entrypoint replaced, the
logging options merged when the driver is the same; top-level networks,
volumes, secrets and configs are replaced by name. Pure but for the env files,
read through the function given.
"""
from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from swarm.stack.errors import ComposeError, Path, Where, error_at

_LIST_KEYS = ("dns", "dns_search", "dns_opt", "env_file", "tmpfs", "cap_add", "cap_drop", "group_add", "expose",
              "profiles", "devices", "security_opt", "external_links", "links", "volumes_from")
_BIND_PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate")


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _mapping(value: Any, sep: str = "=", allow_none: bool = False) -> dict[str, str | None]:
    """A mapping, or a list of "K=V" (docker's transformMappingOrList)."""
    if isinstance(value, dict):
        return {k: (None if v is None and allow_none else _str(v)) for k, v in value.items()}
    out: dict[str, str | None] = {}
    for item in value or ():
        key, found, val = _str(item).partition(sep)
        out[key] = val if found else (None if allow_none else "")
    return out


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into words ({exc})") from None
    return [_str(v) for v in value or ()]


def normalize(data: Mapping[str, Any], where: Where, filename: str, working_dir: str,
              environ: Mapping[str, str], read_env_file: Callable[[str], str] | None) -> dict[str, Any]:
    """One validated file with its services' short syntaxes in their long forms."""
    out = dict(data)
    for section in ("networks", "volumes", "secrets", "configs"):
        if section in out:
            out[section] = {name: _top_level(section, name, value or {}, where, filename, working_dir)
                            for name, value in (out[section] or {}).items()}
    services = {}
    for name, service in (out.get("services") or {}).items():
        services[name] = _service(dict(service or {}), ("services", name), where, filename, working_dir, environ,
                                  read_env_file)
    out["services"] = services
    return out


def _top_level(section: str, name: str, value: Mapping[str, Any], where: Where, filename: str,
               working_dir: str) -> dict[str, Any]:
    """A network, volume, secret or config: external: {name: x} (the old form) -> external + name;
    a secret's or config's file relative to the working directory (docker's absPath)."""
    value = dict(value)
    if section in ("secrets", "configs") and value.get("file"):
        value["file"] = os.path.normpath(os.path.join(working_dir, os.path.expanduser(str(value["file"]))))
    external = value.get("external")
    if isinstance(external, dict):
        if value.get("name") and external.get("name"):
            raise error_at(where, (section, name, "external", "name"),
                           f"conflicts with {section}.{name}.name: only use {section}.{name}.name", filename)
        value["external"] = True
        if external.get("name"):
            value["name"] = external["name"]
    if value.get("external") and not value.get("name"):
        value["name"] = name
    if "labels" in value:
        value["labels"] = _mapping(value["labels"])
    return value


def _service(s: dict[str, Any], path: Path, where: Where, filename: str, working_dir: str,
             environ: Mapping[str, str], read_env_file: Callable[[str], str] | None) -> dict[str, Any]:
    def bad(key: Path, message: str) -> ComposeError:
        return error_at(where, (*path, *key), message, filename)

    for key in ("command", "entrypoint"):
        if s.get(key) is not None:
            try:
                s[key] = _words(s[key])
            except ValueError as exc:
                raise bad((key,), str(exc)) from None
    for key in _LIST_KEYS:
        if key in s and s[key] is not None and not isinstance(s[key], list):
            s[key] = [s[key]]
    if "env_file" in s:
        s["environment"] = _environment(s, path, where, filename, working_dir, environ, read_env_file)
        del s["env_file"]
    elif "environment" in s:
        s["environment"] = _resolve_env(_mapping(s["environment"], allow_none=True), environ)
    for key in ("labels", "sysctls", "annotations"):
        if key in s:
            s[key] = _mapping(s[key])
    if isinstance(s.get("deploy"), dict) and "labels" in s["deploy"]:
        s["deploy"] = dict(s["deploy"], labels=_mapping(s["deploy"]["labels"]))
    if "extra_hosts" in s:
        s["extra_hosts"] = _hosts(s["extra_hosts"])
    if isinstance(s.get("healthcheck"), dict) and isinstance(s["healthcheck"].get("test"), str):
        s["healthcheck"] = dict(s["healthcheck"], test=["CMD-SHELL", s["healthcheck"]["test"]])
    if "networks" in s:
        nets = s["networks"]
        s["networks"] = ({n: None for n in nets} if isinstance(nets, list)
                         else {n: (dict(v) if v else None) for n, v in (nets or {}).items()})
    for key in ("secrets", "configs"):
        if key in s:
            s[key] = [{"source": item} if isinstance(item, str) else dict(item) for item in s[key] or ()]
    if "ports" in s:
        ports = []
        for i, item in enumerate(s["ports"] or ()):
            try:
                ports += parse_port(item)
            except ValueError as exc:
                raise bad(("ports", i), str(exc)) from None
        s["ports"] = ports
    if "volumes" in s:
        volumes = []
        for i, item in enumerate(s["volumes"] or ()):
            try:
                volumes.append(parse_volume(item, working_dir, environ))
            except ValueError as exc:
                raise bad(("volumes", i), str(exc)) from None
        s["volumes"] = volumes
    if "ulimits" in s:
        s["ulimits"] = {name: ({"soft": v, "hard": v} if isinstance(v, int) else dict(v))
                        for name, v in (s["ulimits"] or {}).items()}
    return s


def _resolve_env(env: Mapping[str, str | None], environ: Mapping[str, str]) -> dict[str, str | None]:
    """docker's updateEnvironment: a variable without a value (or empty) takes this environment's."""
    return {k: (environ[k] if (v is None or v == "") and k in environ else v) for k, v in env.items()}


def _environment(s: Mapping[str, Any], path: Path, where: Where, filename: str, working_dir: str,
                 environ: Mapping[str, str], read_env_file: Callable[[str], str] | None) -> dict[str, str | None]:
    """env_file's variables (in order), then environment's: docker's resolveEnvironment."""
    env: dict[str, str | None] = {}
    for i, item in enumerate(s.get("env_file") or ()):
        file, required = (item.get("path", ""), item.get("required", True)) if isinstance(item, dict) else (item, True)
        full = os.path.join(working_dir, os.path.expanduser(str(file)))
        if read_env_file is None:
            continue
        try:
            text = read_env_file(full)
        except ComposeError as exc:
            if not required:
                continue
            raise error_at(where, (*path, "env_file", i), f"names a file that cannot be read ({exc.message})",
                           filename) from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.lstrip().removeprefix("\ufeff") if number == 1 else line.lstrip()
            if not line or line.startswith("#"):
                continue
            key, found, value = line.partition("=")
            if not key or any(c.isspace() for c in key):
                raise ComposeError(f"{full}, line {number}: {line[:60]!r} is not a variable (NAME=VALUE or NAME)")
            env[key] = value if found else None
    env.update(_mapping(s.get("environment") or {}, allow_none=True))
    return _resolve_env(env, environ)


def _hosts(value: Any) -> list[str]:
    """extra_hosts as "HOST:IP" (docker's transformHostsList: a mapping, or HOST=IP / HOST:IP items)."""
    items = ([f"{k}:{_str(v)}" for k, v in value.items()] if isinstance(value, dict)
             else [_str(v) for v in value or ()])
    out = []
    for item in items:
        for sep in ("=", ":"):
            host, found, ip = item.partition(sep)
            if found:
                break
        else:
            continue
        if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
            ip = ip[1:-1]
        out.append(f"{host}:{ip}")
    return out


# -- ports ---------------------------------------------------------------------------------


def _number(text: str, what: str, item: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"has an invalid {what} port {text!r} in {item!r} (use 1-65535)")
    return int(text)


def _range(text: str, what: str, item: str) -> tuple[int, int]:
    start, sep, end = text.partition("-")
    first = _number(start, what, item)
    last = _number(end, what, item) if sep else first
    if last < first:
        raise ValueError(f"has an invalid {what} port range {text!r} in {item!r}")
    return first, last


def parse_port(item: Any) -> list[dict[str, Any]]:
    """A ports item -> {target, published (0: none), protocol, mode} dicts, one per port:
    short syntax [[IP:]PUBLISHED[-END]:]TARGET[-END][/PROTOCOL] (nat.ParsePortSpec; the
    IP is ignored, as swarm's ingress listens on every address) or the long mapping."""
    if isinstance(item, dict):
        protocol = _str(item.get("protocol") or "tcp").lower()
        mode = _str(item.get("mode") or "ingress")
        if protocol not in ("tcp", "udp", "sctp"):
            raise ValueError(f"has an invalid protocol {protocol!r} (use tcp or udp)")
        if mode not in ("ingress", "host"):
            raise ValueError(f"has an invalid mode {mode!r} (use ingress or host)")
        if item.get("target") is None:
            raise ValueError("has no target port")
        target = _number(_str(item["target"]), "target", _str(item["target"]))
        published = item.get("published")
        if published in (None, ""):
            return [{"target": target, "published": 0, "protocol": protocol, "mode": mode}]
        first, last = _range(_str(published), "published", _str(published))
        return [{"target": target, "published": p, "protocol": protocol, "mode": mode} for p in range(first, last + 1)]
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ValueError("must be a port (like 8080:80) or a mapping")
    text = _str(item)
    spec, slash, proto = text.partition("/")
    protocol = proto.strip().lower() if slash else "tcp"
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"has an invalid protocol {proto!r} in {text!r} (use tcp or udp)")
    if spec.startswith("["):            # [IPv6]:published:target
        _, closing, spec = spec[1:].partition("]")
        if not closing or not spec.startswith(":"):
            raise ValueError(f"{text!r} is not [[IP:]PUBLISHED:]TARGET[/PROTOCOL]")
        spec = spec[1:]
    parts = spec.split(":")
    if len(parts) == 3:
        try:
            ipaddress.ip_address(parts[0])
        except ValueError:
            raise ValueError(f"{text!r} is not [[IP:]PUBLISHED:]TARGET[/PROTOCOL]: {parts[0]!r} is not an IP "
                             "address") from None
        parts = parts[1:]
    if len(parts) > 2 or not parts[-1].strip():
        raise ValueError(f"{text!r} is not [[IP:]PUBLISHED:]TARGET[/PROTOCOL] (like 8080:80 or 53/udp)")
    targets = _range(parts[-1], "target", text)
    published = _range(parts[0], "published", text) if len(parts) == 2 and parts[0].strip() else None
    port = {"protocol": protocol, "mode": "ingress"}
    if published is None:
        return [{"target": t, "published": 0, **port} for t in range(targets[0], targets[1] + 1)]
    if targets[0] == targets[1]:
        return [{"target": targets[0], "published": p, **port} for p in range(published[0], published[1] + 1)]
    if published[1] - published[0] != targets[1] - targets[0]:
        raise ValueError(f"has published and target port ranges of different sizes in {text!r}")
    return [{"target": t, "published": published[0] + i, **port}
            for i, t in enumerate(range(targets[0], targets[1] + 1))]


# -- volumes -------------------------------------------------------------------------------


def parse_volume(item: Any, working_dir: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """A volumes item -> its long form {type, source, target, read_only, ...} (docker's
    volumespec.Parse for "[SOURCE:]TARGET[:MODE]"); a relative bind source is made absolute."""
    if isinstance(item, dict):
        volume = dict(item)
    elif isinstance(item, str) and item:
        parts = item.split(":")
        if len(parts) > 3:
            raise ValueError(f"{item!r} is not [SOURCE:]TARGET[:MODE]")
        if len(parts) == 1:
            volume = {"type": "volume", "target": parts[0]}
        else:
            source = parts[0]
            is_path = source.startswith(("/", ".", "~"))
            volume = {"type": "bind" if is_path else "volume", "source": source, "target": parts[1]}
            for option in (parts[2].split(",") if len(parts) == 3 else ()):
                if option in ("ro", "rw"):
                    volume["read_only"] = option == "ro"
                elif option in _BIND_PROPAGATIONS and is_path:
                    volume["bind"] = {"propagation": option}
                elif option == "nocopy" and not is_path:
                    volume["volume"] = {"nocopy": True}
                elif option in ("z", "Z", "cached", "delegated", "consistent"):
                    continue            # SELinux relabelling and macOS consistency: nothing to do here
                else:
                    raise ValueError(f"has an invalid mode {option!r} in {item!r}")
    else:
        raise ValueError("must be [SOURCE:]TARGET[:MODE] or a mapping")
    volume.setdefault("type", "volume")
    if not str(volume.get("target") or "").startswith("/"):
        raise ValueError(f"has a target {volume.get('target')!r} that is not an absolute path")
    if volume["type"] == "bind":
        source = str(volume.get("source") or "")
        if not source:
            raise ValueError("is a bind mount without a source")
        if source.startswith("~") and "HOME" in environ:
            source = environ["HOME"] + source[1:]
        volume["source"] = os.path.normpath(os.path.join(working_dir, source))
    return volume


# -- merging -------------------------------------------------------------------------------

# A service's lists merged item by item on a key, as docker/cli's mergeSlice (sorted by it).
_KEYED = {"ports": lambda p: (p.get("published") or 0, p.get("target") if not p.get("published") else 0,
                              p.get("protocol", "tcp")),
          "secrets": lambda s: s.get("source", ""), "configs": lambda c: c.get("source", ""),
          "volumes": lambda v: v.get("target", "")}
_REPLACED = ("command", "entrypoint", "test")


def merge_files(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if key == "services":
            services = dict(out.get("services") or {})
            for name, service in (value or {}).items():
                services[name] = merge_service(services[name], service) if name in services else service
            out["services"] = services
        elif key in ("networks", "volumes", "secrets", "configs"):
            out[key] = {**(out.get(key) or {}), **(value or {})}
        else:
            out[key] = value
    return out


def merge_service(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if key in _KEYED and isinstance(old, list) and isinstance(value, list):
            by_key = {_KEYED[key](item): item for item in old}
            by_key.update({_KEYED[key](item): item for item in value})
            out[key] = [by_key[k] for k in sorted(by_key)]
        elif key == "logging" and isinstance(old, dict) and isinstance(value, dict):
            same = old.get("driver") in (None, value.get("driver")) or value.get("driver") is None
            out[key] = ({**old, **value, "driver": value.get("driver") or old.get("driver"),
                         "options": {**(old.get("options") or {}), **(value.get("options") or {})}}
                        if same else value)
        elif key in _REPLACED:
            out[key] = value if value else old
        elif isinstance(old, dict) and isinstance(value, dict):
            out[key] = merge_service(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            out[key] = old + [v for v in value if v not in old]
        else:
            out[key] = value
    return out

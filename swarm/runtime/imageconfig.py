"""An image's configuration as the runtime uses it: the checked subset of Docker's image config.

`image_config` reads the `config` object of an image configuration document
(Cmd, Entrypoint, Env, WorkingDir, User, StopSignal, ExposedPorts, Volumes,
Labels, Healthcheck) and refuses a malformed one with one sentence, so a bad
archive or a bad pull is refused before anything reaches the store; `Image`
is what a store record gives the runtime.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Callable

from swarm.api.options import parse_signal
from swarm.runtime.errors import ImageError


@dataclass(frozen=True)
class Healthcheck:
    """The image's HEALTHCHECK, as Docker stores it (durations in nanoseconds; 0 = the default)."""
    test: tuple[str, ...] = ()        # ["NONE"] | ["CMD", arg...] | ["CMD-SHELL", command]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Image:
    id: str
    layers: tuple[str, ...]           # diff_ids, bottom layer first
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    created: float = 0.0
    size: int = 0
    user: str = ""                    # USER: "name", "uid", "name:group", "uid:gid"; "" = root
    stop_signal: str = ""             # STOPSIGNAL as written ("SIGQUIT", "3"); "" = SIGTERM
    exposed_ports: tuple[str, ...] = ()   # EXPOSE: "80/tcp", "53/udp"
    volumes: tuple[str, ...] = ()     # VOLUME: container paths
    healthcheck: Healthcheck | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def from_json(data: dict) -> "Image":
        cfg = data.get("config") or {}
        health = cfg.get("Healthcheck")
        return Image(id=data["id"], layers=tuple(data["layers"]), cmd=tuple(cfg.get("Cmd") or ()),
                     entrypoint=tuple(cfg.get("Entrypoint") or ()), env=tuple(cfg.get("Env") or ()),
                     working_dir=cfg.get("WorkingDir") or "", created=float(data.get("created", 0.0)),
                     size=int(data.get("size", 0)), user=cfg.get("User") or "",
                     stop_signal=cfg.get("StopSignal") or "", exposed_ports=tuple(cfg.get("ExposedPorts") or ()),
                     volumes=tuple(cfg.get("Volumes") or ()),
                     healthcheck=Healthcheck(**{k: tuple(v) if k == "test" else v for k, v in health.items()})
                     if health else None,
                     labels=dict(cfg.get("Labels") or {}))




def parse_time(text: object) -> float:
    if not isinstance(text, str) or not text:
        return 0.0
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", text)
    if not m:
        return 0.0
    base = datetime.datetime.fromisoformat(m.group(1) + (m.group(3) or "Z").replace("Z", "+00:00"))
    return base.timestamp() + (float(m.group(2)) if m.group(2) else 0.0)


_EXPOSED_PORT = re.compile(r"^\d{1,5}(-\d{1,5})?(/(tcp|udp|sctp))?$", re.IGNORECASE)
_HEALTH_DURATIONS = {"Interval": "interval", "Timeout": "timeout", "StartPeriod": "start_period",
                     "StartInterval": "start_interval"}


def image_config(cfg: dict) -> dict:
    """The parts of an image's config the runtime uses, checked: a malformed one refuses the import."""
    def bad(what: str) -> ImageError:
        return ImageError(f"The image configuration is malformed ({what}).")

    def strings(value: object, name: str) -> list[str] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(f"{name} must be a list of strings")
        return value

    def text(value: object, name: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str) or "\n" in value or "\0" in value:
            raise bad(f"{name} must be one line of text")
        return value

    def keys(value: object, name: str) -> list[str]:
        # ExposedPorts and Volumes are sets written as objects whose values are {}.
        if value is None:
            return []
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad(f"{name} must be an object")
        return sorted(value)

    out: dict = {"Cmd": strings(cfg.get("Cmd"), "Cmd"), "Entrypoint": strings(cfg.get("Entrypoint"), "Entrypoint"),
                 "Env": strings(cfg.get("Env"), "Env"), "WorkingDir": text(cfg.get("WorkingDir"), "WorkingDir")}
    out["User"] = text(cfg.get("User"), "User")
    stop_signal = text(cfg.get("StopSignal"), "StopSignal")
    if stop_signal:
        try:
            parse_signal(stop_signal)
        except ValueError as exc:
            raise bad(f"StopSignal: {exc}") from None
    out["StopSignal"] = stop_signal
    ports = keys(cfg.get("ExposedPorts"), "ExposedPorts")
    for port in ports:
        if not _EXPOSED_PORT.match(port):
            raise bad(f"the exposed port {port!r} is not PORT[/PROTOCOL]")
    out["ExposedPorts"] = [p if "/" in p else p + "/tcp" for p in ports]
    volumes = keys(cfg.get("Volumes"), "Volumes")
    for volume in volumes:
        if not volume.startswith("/") or "\0" in volume:
            raise bad(f"the volume {volume!r} is not an absolute path")
    out["Volumes"] = volumes
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise bad("Labels must map strings to strings")
    out["Labels"] = dict(labels)
    out["Healthcheck"] = healthcheck_config(cfg.get("Healthcheck"), bad)
    return out


def healthcheck_config(value: object, bad: Callable[[str], ImageError]) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad("Healthcheck must be an object")
    test = value.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise bad("Healthcheck.Test must be a list of strings")
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise bad(f"Healthcheck.Test starts with {test[0]!r}, not NONE, CMD or CMD-SHELL")
    out: dict = {"test": list(test)}
    for name, key in (*_HEALTH_DURATIONS.items(), ("Retries", "retries")):
        number = value.get(name) or 0
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise bad(f"Healthcheck.{name} must be a whole number, not negative")
        out[key] = number
    return out



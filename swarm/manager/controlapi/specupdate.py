"""`docker service update` on a stored spec: only the flags given change.

How this works: `apply_update` turns the stored spec back into params (`params_of`),
lets the fields given replace theirs, merges the X_add/X_rm pairs as docker/cli's
update.go does (labels, mounts by target, sysctls, ulimits by name, DNS, hosts, groups,
placement preferences, capabilities, secrets and configs by name) and the fields of
"update_config", "rollback_config" and "healthcheck" into the stored ones, then checks
the result with `spec_from_params`: an update is checked exactly as a create. ("force"
and "rollback" are the control API's business.) Pure: no store, no clock.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from swarm.api import options, spec
from swarm.manager.controlapi.specchecks import bad, fields_map, maps, string_map, strings
from swarm.manager.controlapi.specconfigs import CONFIG_FIELDS, HEALTH_FIELDS
from swarm.manager.controlapi.specparams import REPLICATED_MODES, spec_from_params
from swarm.manager.controlapi.specrefs import FILE_KINDS

def params_of(s: spec.ServiceSpec) -> dict[str, Any]:
    """The params that make `s` again (spec_from_params(params_of(s)) == s)."""
    c = s.container
    params: dict[str, Any] = {
        "name": s.name, "image": c.image, "mode": s.mode, "command": list(c.command), "env": list(c.env),
        "mounts": [dataclasses.asdict(m) for m in c.mounts], "constraints": list(s.constraints),
        "limit_cpu": s.limits.nano_cpus, "limit_memory": s.limits.memory_bytes,
        "reserve_cpu": s.reservations.nano_cpus, "reserve_memory": s.reservations.memory_bytes,
        "restart_condition": s.restart.condition, "restart_delay": s.restart.delay,
        "restart_max_attempts": s.restart.max_attempts, "restart_window": s.restart.window,
        "stop_grace_period": c.stop_grace_period, "labels": dict(s.labels),
        "networks": [{"target": n, "aliases": list(s.network_aliases[n])} if s.network_aliases.get(n) else n
                     for n in s.networks],
        "endpoint_mode": s.endpoint_mode, "ports": [dataclasses.asdict(x) for x in s.ports],
        "entrypoint": list(c.entrypoint), "hostname": c.hostname, "user": c.user, "groups": list(c.groups),
        "workdir": c.workdir, "init": c.init, "tty": c.tty, "stop_signal": c.stop_signal, "read_only": c.read_only,
        "cap_add": list(c.cap_add), "cap_drop": list(c.cap_drop), "sysctls": dict(c.sysctls),
        "ulimits": [dataclasses.asdict(u) for u in c.ulimits], "limit_pids": c.pids_limit,
        "oom_score_adj": c.oom_score_adj, "dns": list(c.dns.nameservers), "dns_search": list(c.dns.search),
        "dns_options": list(c.dns.options), "hosts": list(c.hosts), "container_labels": dict(c.labels),
        "log_driver": c.log_driver.name, "log_opts": dict(c.log_driver.options),
        "placement_prefs": list(s.placement_prefs), "max_replicas_per_node": s.max_replicas_per_node,
        "platforms": list(s.platforms),
        "max_concurrent": s.max_concurrent, "update_config": dataclasses.asdict(s.update_config),
        "rollback_config": dataclasses.asdict(s.rollback_config), "force_update": c.force_update,
        "healthcheck": None if c.healthcheck is None else {**dataclasses.asdict(c.healthcheck),
                                                           "test": list(c.healthcheck.test)},
        "secrets": [dataclasses.asdict(r) for r in c.secrets], "configs": [dataclasses.asdict(r) for r in c.configs],
    }
    if s.mode in REPLICATED_MODES:
        params["replicas"] = s.replicas
    return params


# What update may replace as a whole (the rest: name and mode, which docker cannot change).
REPLACEABLE = frozenset(params_of(spec.ServiceSpec("x", spec.ContainerSpec("x"))).keys()) - {"name", "mode"}


def _without(items: Iterable[str], remove: Iterable[str]) -> list[str]:
    gone = set(remove)
    return [x for x in items if x not in gone]


def _added(items: Iterable[str], add: Iterable[str]) -> list[str]:
    """items then add, each once, first order kept."""
    return list(dict.fromkeys([*items, *add]))


def _merge_map(current: Mapping[str, str], p: Mapping, key: str, flag: str) -> dict[str, str]:
    merged = {k: v for k, v in current.items() if k not in set(strings(p, f"{key}_rm"))}
    merged.update(string_map(p, f"{key}_add", f"{flag}-add"))
    return merged


def _merge_mounts(current: list[dict], p: Mapping) -> list[dict]:
    """docker's updateMounts: a mount added replaces the one at its target; then removal by target."""
    add = maps(p, "mounts_add")
    targets = [m.get("target") for m in add]
    if len(set(targets)) != len(targets):
        raise bad("invalid --mount-add: duplicate mount target")
    by_target = {str(m.get("target")): m for m in add}
    merged = [by_target.pop(str(m.get("target")), m) for m in current] + list(by_target.values())
    gone = set(strings(p, "mounts_rm"))
    return [m for m in merged if str(m.get("target")) not in gone]


def _merge_hosts(current: list[str], p: Mapping) -> list[str]:
    """docker's updateHosts: --host-rm HOST[:IP] takes HOST off the lines (of that IP), --host-add appends."""
    removals = [(entry.partition(":")[0], entry.partition(":")[2]) for entry in strings(p, "hosts_rm")]
    lines = []
    for line in current:
        if not line.split():
            continue
        ip, *names = line.split()
        names = [n for n in names if not any(n == host and (not rm_ip or rm_ip == ip) for host, rm_ip in removals)]
        if names:
            lines.append(" ".join([ip, *names]))
    return _added(lines, strings(p, "hosts_add"))


def _merge_capabilities(cap_add: list[str], cap_drop: list[str], p: Mapping) -> tuple[list[str], list[str]]:
    """docker's updateCapabilities: RESET empties a list; adding what was dropped un-drops it, and
    dropping what was added un-adds it."""
    def normalized(key: str) -> set[str]:
        out = set()
        for name in strings(p, key):
            if name.strip().upper() == "RESET":
                out.add("RESET")
                continue
            try:
                out.add(options.normalize_capability(name))
            except ValueError as exc:
                raise bad(f"invalid --{key.replace('_', '-')}: {exc}") from None
        return out

    add, drop = set(cap_add), set(cap_drop)
    to_add, to_drop = normalized("cap_add"), normalized("cap_drop")
    if "RESET" in to_add:
        add, to_add = set(), to_add - {"RESET"}
    if "RESET" in to_drop:
        drop, to_drop = set(), to_drop - {"RESET"}
    for cap in to_drop - to_add:
        if cap in add:
            add.discard(cap)
        else:
            drop.add(cap)
    for cap in to_add:
        if cap in drop:
            drop.discard(cap)
        else:
            add.add(cap)
    def caps_list(caps: set[str]) -> list[str]:
        return [options.ALL] if options.ALL in caps else sorted(caps)
    return caps_list(add), caps_list(drop)


def _merge_healthcheck(current: dict | None, given: Any) -> dict | None:
    """docker's updateHealthcheck: --no-healthcheck replaces the whole; the --health-* flags given
    replace their fields, and a test of NONE gives way to the image's when other fields are set."""
    if given is None:
        return None                      # back to the image's
    given = fields_map(given, "healthcheck", HEALTH_FIELDS)
    if list(given.get("test") or ()) == ["NONE"]:
        return dict(given)
    base = dict(current or {})
    if list(base.get("test") or ()) == ["NONE"]:
        base["test"] = []
    return {**base, **given}


# Merged with the stored values rather than replaced: the fields given change, the others stay.
MERGED = frozenset({"cap_add", "cap_drop", "update_config", "rollback_config", "healthcheck"})


def apply_update(old: spec.ServiceSpec, p: dict) -> spec.ServiceSpec:
    """The spec with only the given flags changed (docker service update), checked as a create.
    ("force" and "rollback" are the control API's: they ask for a new task template or the previous spec.)"""
    merged = params_of(old)
    for key in REPLACEABLE - MERGED:
        if key in p:
            merged[key] = p[key]
    for key in ("update_config", "rollback_config"):
        if key in p:
            merged[key] = {**merged[key], **fields_map(p[key], key, CONFIG_FIELDS)}
    if "healthcheck" in p:
        merged["healthcheck"] = _merge_healthcheck(merged["healthcheck"], p["healthcheck"])
    if "replicas" in p and old.mode not in REPLICATED_MODES:
        raise bad("--replicas can only be used with replicated or replicated-job mode")
    if "log_driver" in p and "log_opts" not in p and p["log_driver"] != old.container.log_driver.name:
        merged["log_opts"] = {}       # another driver: the old one's options do not carry over
    env = [e for e in strings(merged, "env") if e.split("=", 1)[0] not in set(strings(p, "env_rm"))]
    for e in strings(p, "env_add"):
        env = [x for x in env if x.split("=", 1)[0] != e.split("=", 1)[0]] + [e]
    merged["env"] = env
    merged["constraints"] = _added(_without(strings(merged, "constraints"), strings(p, "constraint_rm")),
                                   strings(p, "constraint_add"))
    merged["labels"] = _merge_map(string_map(merged, "labels", "labels"), p, "labels", "--label")
    merged["container_labels"] = _merge_map(string_map(merged, "container_labels", "--container-label"), p,
                                            "container_labels", "--container-label")
    merged["sysctls"] = _merge_map(string_map(merged, "sysctls", "--sysctl"), p, "sysctls", "--sysctl")
    if "groups_add" in p or "groups_rm" in p:     # docker sorts them then
        merged["groups"] = sorted(_without(_added(strings(merged, "groups"), strings(p, "groups_add")),
                                           strings(p, "groups_rm")))
    for key in ("dns", "dns_search", "dns_options"):
        merged[key] = _without(_added(strings(merged, key), strings(p, f"{key}_add")), strings(p, f"{key}_rm"))
    merged["hosts"] = _merge_hosts(list(strings(merged, "hosts")), p)
    merged["mounts"] = _merge_mounts(maps(merged, "mounts"), p)
    removed = set(strings(p, "ulimits_rm"))
    ulimits = {str(u.get("name")): u for u in maps(merged, "ulimits") if u.get("name") not in removed}
    ulimits.update({str(u.get("name")): u for u in maps(p, "ulimits_add")})
    merged["ulimits"] = list(ulimits.values())
    gone = {x.partition("=")[2] for x in strings(p, "placement_prefs_rm")}     # by descriptor, as docker
    prefs = [x for x in strings(merged, "placement_prefs") if x.partition("=")[2] not in gone]
    merged["placement_prefs"] = prefs + list(strings(p, "placement_prefs_add"))
    if "cap_add" in p or "cap_drop" in p:
        merged["cap_add"], merged["cap_drop"] = _merge_capabilities(list(old.container.cap_add),
                                                                    list(old.container.cap_drop), p)
    for key in FILE_KINDS:     # docker's getUpdatedSecrets/Configs: removed by name, then the added appended
        gone = set(strings(p, f"{key}_rm"))
        merged[key] = [r for r in maps(merged, key) if r.get("name") not in gone] + maps(p, f"{key}_add")
    return spec_from_params(merged)

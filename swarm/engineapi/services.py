"""Docker's ServiceSpec and Service <-> the control API's service params and answers.

How this works. `spec_params` reads a Docker ServiceSpec (already checked against moby's
swagger schema) into the complete params of `service.create` (swarm/daemon docs, "Spec
params"): every field a ServiceSpec can hold is either translated or, when it holds more
than Go's zero value and this daemon cannot honour it, refused naming its path
(fields.Unsupported). Absent fields take Docker's defaults, which are the control API's:
so the same params serve `service.update`, where Docker sends the whole new spec.
`service_view` turns a `service.inspect` answer back into Docker's Service object;
`spec_view(spec_params(x))` gives back x for every field x sets (durations in
nanoseconds). `service_status` reads ServiceStatus from `service.ls`'s replicas column.
Pure: no I/O.
"""
from __future__ import annotations

import re
from typing import Any

from swarm.engineapi.fields import Fields, Unsupported
from swarm.manager.controlapi.specupdate import REPLACEABLE

NANO = 1_000_000_000
ZERO_TIME = "0001-01-01T00:00:00Z"   # Go's zero time: a time we do not know (Go cannot parse "")

# Docker's mount BindOptions flags <-> our bind_recursive (docker/cli's bind-recursive option).
_RECURSIVE = {"NonRecursive": "disabled", "ReadOnlyNonRecursive": "writable", "ReadOnlyForceRecursive": "readonly"}
MODES = {"Replicated": "replicated", "Global": "global", "ReplicatedJob": "replicated-job", "GlobalJob": "global-job"}


def seconds(ns: Any) -> float:
    return int(ns) / NANO


def nanos(s: float) -> int:
    return int(round(s * NANO))


# -- Docker ServiceSpec -> params ---------------------------------------------------------


def spec_params(body: dict) -> dict:
    """The `service.create` params of a Docker ServiceSpec; Unsupported names a field we cannot honour."""
    f = Fields(body)
    p: dict[str, Any] = {"name": f.get("Name", ""), "labels": f.get("Labels", {})}
    _mode(f.sub("Mode"), p)
    t = f.sub("TaskTemplate")
    _container(t.sub("ContainerSpec"), p)
    t.refuse("PluginSpec")
    t.refuse("NetworkAttachmentSpec")
    t.refuse("Runtime", ("container",))
    res = t.sub("Resources")
    limits, reserve = res.sub("Limits"), res.sub("Reservations")
    p.update(limit_cpu=limits.get("NanoCPUs", 0), limit_memory=limits.get("MemoryBytes", 0),
             limit_pids=limits.get("Pids", 0), reserve_cpu=reserve.get("NanoCPUs", 0),
             reserve_memory=reserve.get("MemoryBytes", 0))
    restart = t.sub("RestartPolicy")
    p.update(restart_condition=restart.get("Condition", "any"), restart_delay=seconds(restart.get("Delay", 5 * NANO)),
             restart_max_attempts=restart.get("MaxAttempts", 0), restart_window=seconds(restart.get("Window", 0)))
    placement = t.sub("Placement")
    p["constraints"] = placement.get("Constraints", [])
    p["placement_prefs"] = [f"spread={pref.sub('Spread').get('SpreadDescriptor', '')}"
                            for pref in placement.each("Preferences")]
    p["max_replicas_per_node"] = placement.get("MaxReplicas", 0)
    # docker/cli copies the platforms GET /distribution names into the spec: the scheduler places
    # the tasks only on nodes of one of them (SwarmKit's PlatformFilter).
    p["platforms"] = [f"{x.get('OS', '')}/{x.get('Architecture', '')}" for x in placement.each("Platforms")]
    log = t.sub("LogDriver")
    p["log_driver"], p["log_opts"] = log.get("Name", "json-file"), log.get("Options", {})
    p["force_update"] = t.get("ForceUpdate", 0)
    # TaskTemplate.Networks, or the deprecated ServiceSpec.Networks (API < 1.44 clients)
    nets = t.each("Networks") or f.each("Networks")
    p["networks"] = [_network(n) for n in nets]
    endpoint = f.sub("EndpointSpec")
    p["endpoint_mode"] = endpoint.get("Mode", "vip")
    p["ports"] = [_port(x) for x in endpoint.each("Ports")]
    p["update_config"] = _update_config(f.sub("UpdateConfig"))
    p["rollback_config"] = _update_config(f.sub("RollbackConfig"))
    f.done()
    return p


def _mode(m: Fields, p: dict) -> None:
    given = [k for k in MODES if m.has(k)]
    if len(given) > 1:
        raise Unsupported(f"Mode: only one of {', '.join(given)} may be given")
    mode = MODES[given[0]] if given else "replicated"
    p["mode"] = mode
    if mode == "replicated":
        p["replicas"] = m.sub("Replicated").get("Replicas", 1)
    elif mode == "replicated-job":
        job = m.sub("ReplicatedJob")
        p["replicas"] = job.get("TotalCompletions", 1)
        p["max_concurrent"] = job.get("MaxConcurrent", 0)
    else:
        m.sub(given[0])                       # Global{} and GlobalJob{} hold nothing


def _container(c: Fields, p: dict) -> None:
    p.update(image=c.get("Image", ""), container_labels=c.get("Labels", {}), entrypoint=c.get("Command", []),
             command=c.get("Args", []), hostname=c.get("Hostname", ""), env=c.get("Env", []),
             workdir=c.get("Dir", ""), user=c.get("User", ""), groups=c.get("Groups", []), tty=c.get("TTY", False),
             read_only=c.get("ReadOnly", False), stop_signal=c.get("StopSignal", ""),
             stop_grace_period=seconds(c.get("StopGracePeriod", 10 * NANO)), hosts=c.get("Hosts", []),
             sysctls=c.get("Sysctls", {}), cap_add=c.get("CapabilityAdd", []), cap_drop=c.get("CapabilityDrop", []),
             oom_score_adj=c.get("OomScoreAdj", 0), init=c.raw("Init"))
    c.refuse("Isolation", ("default",))
    dns = c.sub("DNSConfig")
    p.update(dns=dns.get("Nameservers", []), dns_search=dns.get("Search", []), dns_options=dns.get("Options", []))
    p["ulimits"] = [{"name": u.get("Name", ""), "soft": u.get("Soft", 0), "hard": u.get("Hard", 0)}
                    for u in c.each("Ulimits")]
    p["mounts"] = [_mount(m) for m in c.each("Mounts")]
    p["secrets"] = [_file_ref(r, "Secret") for r in c.each("Secrets")]
    p["configs"] = [_file_ref(r, "Config") for r in c.each("Configs")]
    if c.has("HealthCheck"):
        h = c.sub("HealthCheck")
        p["healthcheck"] = {"test": h.get("Test", []), "interval": seconds(h.get("Interval", 0)),
                            "timeout": seconds(h.get("Timeout", 0)), "start_period": seconds(h.get("StartPeriod", 0)),
                            "start_interval": seconds(h.get("StartInterval", 0)), "retries": h.get("Retries", 0)}
    else:
        p["healthcheck"] = None


def _mount(m: Fields) -> dict:
    kind = m.get("Type", "volume")
    out: dict[str, Any] = {"type": kind, "target": m.get("Target", ""), "source": m.get("Source", ""),
                           "readonly": m.get("ReadOnly", False)}
    m.refuse("Consistency", ("default", "consistent"))
    bind, volume, tmpfs = m.sub("BindOptions"), m.sub("VolumeOptions"), m.sub("TmpfsOptions")
    if kind == "bind":
        out["bind_propagation"] = bind.get("Propagation", "")
        out["bind_recursive"] = next((v for k, v in _RECURSIVE.items() if bind.get(k, False)), "enabled")
        bind.refuse("CreateMountpoint")
    elif kind == "volume":
        driver = volume.sub("DriverConfig")
        out.update(volume_nocopy=volume.get("NoCopy", False), volume_labels=volume.get("Labels", {}),
                   volume_driver=driver.get("Name", "") or "local", volume_opts=driver.get("Options", {}))
        volume.refuse("Subpath")
    elif kind == "tmpfs":
        out.update(tmpfs_size=tmpfs.get("SizeBytes", 0), tmpfs_mode=tmpfs.get("Mode", 0))
        tmpfs.refuse("Options")
    return out


def _file_ref(r: Fields, kind: str) -> dict:
    """A SecretReference or ConfigReference: by id as dockerd takes it (docker/cli resolves the
    names first), else by name."""
    file = r.sub("File")
    r.refuse("Runtime")
    ref: dict[str, Any] = {"uid": file.get("UID", "0"), "gid": file.get("GID", "0"), "mode": file.get("Mode", 0o444)}
    name, ident, target = r.get(f"{kind}Name", ""), r.get(f"{kind}ID", ""), file.get("Name", "")
    if ident:
        return dict(ref, id=ident, name=name or ident, target=target or name)
    return dict(ref, source=name, **({"target": target} if target else {}))


def _network(n: Fields) -> Any:
    n.refuse("DriverOpts")
    target, aliases = n.get("Target", ""), n.get("Aliases", [])
    return {"target": target, "aliases": aliases} if aliases else target


def _port(x: Fields) -> dict:
    x.refuse("Name")
    return {"target": x.get("TargetPort", 0), "published": x.get("PublishedPort", 0),
            "protocol": x.get("Protocol", "tcp"), "mode": x.get("PublishMode", "ingress")}


def _update_config(u: Fields) -> dict:
    return {"parallelism": u.get("Parallelism", 1), "delay": seconds(u.get("Delay", 0)),
            "failure_action": u.get("FailureAction", "pause"), "monitor": seconds(u.get("Monitor", 5 * NANO)),
            "max_failure_ratio": float(u.get("MaxFailureRatio", 0)), "order": u.get("Order", "stop-first")}


def update_params(body: dict, current: dict) -> dict:
    """The `service.update` params that make the stored service (`current`, a service.inspect
    answer) into the Docker ServiceSpec `body` (Docker's update sends the whole new spec):
    every replaceable param; a new name or mode is refused as Docker's."""
    p = spec_params(body)
    if p["name"] != current["spec"]["name"]:
        raise Unsupported("Name: renaming services is not supported")
    if p["mode"] != current["spec"]["mode"]:
        raise Unsupported("Mode: a service's mode cannot be changed")
    return {k: v for k, v in p.items() if k in REPLACEABLE}


# -- our service -> Docker Service ----------------------------------------------------------


def _drop_zero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v not in (None, "", 0, False, [], {})}


def spec_view(s: dict) -> dict:
    """Docker's ServiceSpec of our stored spec (a service.inspect "spec")."""
    c = s["container"]
    mode: dict[str, Any]
    if s["mode"] == "replicated":
        mode = {"Replicated": {"Replicas": s["replicas"]}}
    elif s["mode"] == "replicated-job":
        mode = {"ReplicatedJob": _drop_zero({"MaxConcurrent": s["max_concurrent"]}) | {
            "TotalCompletions": s["replicas"]}}
    elif s["mode"] == "global":
        mode = {"Global": {}}
    else:
        mode = {"GlobalJob": {}}
    aliases = s.get("network_aliases", {})
    task = {
        "ContainerSpec": container_view(c),
        "Resources": {"Limits": _drop_zero({"NanoCPUs": s["limits"]["nano_cpus"],
                                            "MemoryBytes": s["limits"]["memory_bytes"], "Pids": c["pids_limit"]}),
                      "Reservations": _drop_zero({"NanoCPUs": s["reservations"]["nano_cpus"],
                                                  "MemoryBytes": s["reservations"]["memory_bytes"]})},
        "RestartPolicy": {"Condition": s["restart"]["condition"], "Delay": nanos(s["restart"]["delay"]),
                          "MaxAttempts": s["restart"]["max_attempts"], "Window": nanos(s["restart"]["window"])},
        "Placement": _drop_zero({"Constraints": s["constraints"],
                                 "Preferences": [{"Spread": {"SpreadDescriptor": pref.split("=", 1)[1]}}
                                                 for pref in s["placement_prefs"]],
                                 "MaxReplicas": s["max_replicas_per_node"],
                                 "Platforms": [{"Architecture": x.partition("/")[2], "OS": x.partition("/")[0]}
                                               for x in s.get("platforms", ())]}),
        "Networks": [_drop_zero({"Target": n, "Aliases": list(aliases.get(n, []))}) for n in s["networks"]],
        "LogDriver": _drop_zero({"Name": c["log_driver"]["name"], "Options": c["log_driver"]["options"]}),
        "ForceUpdate": c["force_update"],
        "Runtime": "container",
    }
    out = {"Name": s["name"], "Labels": s["labels"], "TaskTemplate": _drop_zero(task) | {
        "ForceUpdate": c["force_update"]}, "Mode": mode}
    if s["mode"] not in ("replicated-job", "global-job"):
        out["UpdateConfig"] = _update_view(s["update_config"])
        out["RollbackConfig"] = _update_view(s["rollback_config"])
    out["EndpointSpec"] = {"Mode": s["endpoint_mode"], **({"Ports": [port_view(x) for x in s["ports"]]}
                                                          if s["ports"] else {})}
    return out


def container_view(c: dict) -> dict:
    view = {
        "Image": c["image"], "Labels": c["labels"], "Command": c["entrypoint"], "Args": c["command"],
        "Hostname": c["hostname"], "Env": c["env"], "Dir": c["workdir"], "User": c["user"], "Groups": c["groups"],
        "TTY": c["tty"], "ReadOnly": c["read_only"], "Mounts": [mount_view(m) for m in c["mounts"]],
        "StopSignal": c["stop_signal"], "StopGracePeriod": nanos(c["stop_grace_period"]),
        "Hosts": c["hosts"], "Secrets": [_file_view(r, "Secret") for r in c["secrets"]],
        "Configs": [_file_view(r, "Config") for r in c["configs"]], "Sysctls": c["sysctls"],
        "CapabilityAdd": c["cap_add"], "CapabilityDrop": c["cap_drop"], "OomScoreAdj": c["oom_score_adj"],
        "Ulimits": [{"Name": u["name"], "Soft": u["soft"], "Hard": u["hard"]} for u in c["ulimits"]],
        "DNSConfig": _drop_zero({"Nameservers": c["dns"]["nameservers"], "Search": c["dns"]["search"],
                                 "Options": c["dns"]["options"]}),
        "Isolation": "default",
    }
    view = _drop_zero(view)
    view["StopGracePeriod"] = nanos(c["stop_grace_period"])
    if c["init"] is not None:
        view["Init"] = c["init"]
    h = c.get("healthcheck")
    if h is not None:
        view["Healthcheck"] = _drop_zero({"Test": h["test"], "Interval": nanos(h["interval"]),
                                          "Timeout": nanos(h["timeout"]), "StartPeriod": nanos(h["start_period"]),
                                          "StartInterval": nanos(h["start_interval"]), "Retries": h["retries"]})
    return view


def mount_view(m: dict) -> dict:
    out = _drop_zero({"Type": m["type"], "Source": m["source"], "Target": m["target"], "ReadOnly": m["readonly"]})
    if m["type"] == "bind":
        flag = next((k for k, v in _RECURSIVE.items() if v == m["bind_recursive"]), None)
        opts = _drop_zero({"Propagation": m["bind_propagation"]}) | ({flag: True} if flag else {})
        if opts:
            out["BindOptions"] = opts
    elif m["type"] == "volume":
        driver = {"Name": m["volume_driver"], "Options": m["volume_opts"]} if m["volume_opts"] else {}
        opts = _drop_zero({"NoCopy": m["volume_nocopy"], "Labels": m["volume_labels"], "DriverConfig": driver})
        if opts:
            out["VolumeOptions"] = opts
    elif m["type"] == "tmpfs":
        opts = _drop_zero({"SizeBytes": m["tmpfs_size"], "Mode": m["tmpfs_mode"]})
        if opts:
            out["TmpfsOptions"] = opts
    return out


def _file_view(r: dict, kind: str) -> dict:
    return {"File": {"Name": r["target"], "UID": r["uid"], "GID": r["gid"], "Mode": r["mode"]},
            f"{kind}ID": r["id"], f"{kind}Name": r["name"]}


def port_view(x: dict) -> dict:
    return {"Protocol": x["protocol"], "TargetPort": x["target"], "PublishedPort": x["published"],
            "PublishMode": x["mode"]}


def _update_view(u: dict) -> dict:
    return {"Parallelism": u["parallelism"], "Delay": nanos(u["delay"]), "FailureAction": u["failure_action"],
            "Monitor": nanos(u["monitor"]), "MaxFailureRatio": u["max_failure_ratio"], "Order": u["order"]}


def service_view(v: dict, status: dict | None = None) -> dict:
    """Docker's Service of a `service.inspect` answer; `status`: its ServiceStatus (?status=true)."""
    spec = spec_view(v["spec"])
    out: dict[str, Any] = {
        "ID": v["id"], "Version": {"Index": v.get("version", 0)}, "CreatedAt": v["created_at"] or ZERO_TIME,
        "UpdatedAt": v["updated_at"] or ZERO_TIME, "Spec": spec,
        "Endpoint": {"Spec": spec["EndpointSpec"]},
    }
    if v.get("previous_spec"):
        out["PreviousSpec"] = spec_view(v["previous_spec"])
    if v.get("ports"):
        out["Endpoint"]["Ports"] = [port_view(x) for x in v["ports"]]
    if v.get("vips"):
        out["Endpoint"]["VirtualIPs"] = [{"NetworkID": net, "Addr": addr} for net, addr in v["vips"].items()]
    u = v.get("update_status")
    if u:
        out["UpdateStatus"] = _drop_zero({"State": u["state"], "StartedAt": u["started_at"],
                                          "CompletedAt": u["completed_at"], "Message": u["message"]})
    if v["spec"]["mode"] in ("replicated-job", "global-job"):
        out["JobStatus"] = {"JobIteration": {"Index": v.get("job_iteration", 0)}, "LastExecution": v["updated_at"]}
    if status is not None:
        out["ServiceStatus"] = status
    return out


_REPLICAS = re.compile(r"^(\d+)/(\d+)(?: \((\d+)/(\d+) completed\))?")


def service_status(replicas: str) -> dict:
    """ServiceStatus from `service.ls`'s REPLICAS column ("2/3", "2/3 (max 1 per node)",
    "1/2 (3/5 completed)": running/desired, then completed of a job), which the control API
    computes as SwarmKit does ServiceStatus (swarm/manager/controlapi/services.replicas_column)."""
    m = _REPLICAS.match(replicas)
    if m is None:
        return {"RunningTasks": 0, "DesiredTasks": 0, "CompletedTasks": 0}
    return {"RunningTasks": int(m[1]), "DesiredTasks": int(m[2]), "CompletedTasks": int(m[3] or 0)}

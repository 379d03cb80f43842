"""Docker's Node, Task, Network, Secret, Config, Swarm, Info and Version objects from the control
API's answers, and the params of the writes on them. Pure: no I/O.

Each `*_view` takes what a local method answers (docs/daemon-api.md) and gives the object in
moby's swagger shape; each `*_params` reads a Docker request body (checked against the
swagger schema first) into a local method's params, refusing a field this daemon cannot
honour by name (fields.Unsupported).
"""
from __future__ import annotations

import base64
import platform
from typing import Any

from swarm.engineapi.fields import Fields, Unsupported
from swarm.engineapi.services import nanos, seconds

API_VERSION = "1.50"       # the newest version served: docker CLI 28.2's
MIN_API_VERSION = "1.24"   # the oldest dockerd still serves
ENGINE_VERSION = "0.1.0"   # the version of this daemon (swarm-py), what Version and Engine report
ZERO_TIME = "0001-01-01T00:00:00Z"   # Go's zero time: what a time we do not know reads as (never "")
SWARM_MODE_ONLY = "this daemon serves swarm mode only (nodes, services, tasks, networks, secrets, configs)"


def when(t: str | None) -> str:
    return t or ZERO_TIME


def _host(addr: str) -> str:
    return addr.rsplit(":", 1)[0] if addr else ""


def _arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


# -- filters -------------------------------------------------------------------------------


def filters_param(value: Any) -> dict[str, list[str]]:
    """Docker's `filters` query ({"name": {"web": true}} or the older {"name": ["web"]}) as the
    control API's {"name": ["web"]}; Unsupported (a 400) for anything else."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise Unsupported("filters: expected a JSON object of filter names")
    out: dict[str, list[str]] = {}
    for key, values in value.items():
        if isinstance(values, dict):
            out[key] = [v for v, on in values.items() if on]
        elif isinstance(values, list) and all(isinstance(v, str) for v in values):
            out[key] = list(values)
        else:
            raise Unsupported(f"filters: the values of {key!r} must be a list or a map of strings")
    return out


# -- nodes ---------------------------------------------------------------------------------

_REACHABILITY = {"leader": "reachable", "reachable": "reachable", "unreachable": "unreachable"}


def node_view(n: dict) -> dict:
    """Docker's Node of a node.inspect object (or a node.ls row)."""
    out: dict[str, Any] = {
        "ID": n["id"], "Version": {"Index": n.get("version", 0)},
        "CreatedAt": when(n.get("created_at")), "UpdatedAt": when(n.get("updated_at")),
        "Spec": {"Labels": n.get("labels") or {}, "Role": n["role"], "Availability": n["availability"]},
        "Description": {"Hostname": n["hostname"], "Platform": {"Architecture": _arch(), "OS": "linux"},
                        "Resources": {}, "Engine": {"EngineVersion": ENGINE_VERSION}},
        "Status": {"State": n["status"], "Addr": _host(n.get("addr", ""))},
    }
    if n.get("status_message"):
        out["Status"]["Message"] = n["status_message"]
    if n["role"] == "manager":
        out["ManagerStatus"] = {"Leader": n.get("manager_status") == "leader",
                                "Reachability": _REACHABILITY.get(n.get("manager_status", ""), "unknown"),
                                "Addr": n.get("addr", "")}
    return out


def node_update_params(body: dict, current: dict) -> tuple[dict, str | None]:
    """(node.update params, "promote"/"demote"/None) that make the node (`current`, a
    node.inspect object) into the Docker NodeSpec `body`, which holds the whole new spec."""
    f = Fields(body)
    f.refuse("Name")
    labels, old = f.get("Labels", {}), current.get("labels") or {}
    params: dict[str, Any] = {"ref": current["id"]}
    added = {k: v for k, v in labels.items() if old.get(k) != v}
    removed = [k for k in old if k not in labels]
    if added:
        params["label_add"] = added
    if removed:
        params["label_rm"] = removed
    availability = f.get("Availability", current["availability"])
    if availability != current["availability"]:
        params["availability"] = availability
    role = f.get("Role", current["role"])
    f.done()
    change = None if role == current["role"] else ("promote" if role == "manager" else "demote")
    return params, change


# -- tasks ---------------------------------------------------------------------------------


# Every field of a service.ps row that task_view reads: the key of a task's JSON in the
# Engine API's cache of task lists (app.py; tests/unit/test_engineapi_jsonbody.py checks it).
TASK_VIEW_FIELDS = ("id", "timestamp", "state", "message", "error", "exit_code", "created_at", "image",
                    "service_id", "node_id", "desired_state", "slot", "job", "job_iteration")


def task_view(t: dict) -> dict:
    """Docker's Task of a service.ps row."""
    status: dict[str, Any] = {"Timestamp": when(t.get("timestamp")), "State": t["state"],
                              "Message": t.get("message") or t["state"], "PortStatus": {}}
    if t.get("error"):
        status["Err"] = t["error"]
    if t.get("exit_code") is not None:
        status["ContainerStatus"] = {"ExitCode": t["exit_code"]}
    out: dict[str, Any] = {
        "ID": t["id"], "Version": {"Index": 0}, "CreatedAt": when(t.get("created_at")),
        "UpdatedAt": when(t.get("timestamp")), "Labels": {},
        "Spec": {"ContainerSpec": {"Image": t["image"]}, "ForceUpdate": 0},
        "ServiceID": t["service_id"], "NodeID": t["node_id"], "Status": status, "DesiredState": t["desired_state"],
    }
    if t.get("slot"):
        out["Slot"] = t["slot"]
    if t.get("job"):
        out["JobIteration"] = {"Index": t.get("job_iteration", 0)}
    return out


# -- networks ------------------------------------------------------------------------------


def network_view(n: dict) -> dict:
    return {
        "Name": n["name"], "Id": n["id"], "Created": when(n.get("created_at")), "Scope": n.get("scope", "swarm"),
        "Driver": n.get("driver", "overlay"), "EnableIPv4": True, "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None,
                 "Config": [{"Subnet": n["subnet"], **({"Gateway": n["gateway"]} if n.get("gateway") else {})}]},
        "Internal": False, "Attachable": bool(n.get("attachable")), "Ingress": bool(n.get("ingress")),
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
        "Options": {"com.docker.network.driver.overlay.vxlanid_list": str(n["vni"])} if n.get("vni") else {},
        "Labels": n.get("labels") or {},
    }


def network_create_params(body: dict) -> dict:
    f = Fields(body)
    driver = f.get("Driver", "")
    if driver != "overlay":
        raise Unsupported(f"Driver: {driver or 'bridge (the default)'} networks are not served: "
                          "this daemon makes overlay networks only (-d overlay)")
    f.refuse("Scope", ("swarm",))
    for key in ("Internal", "Ingress", "ConfigOnly", "EnableIPv6"):
        f.refuse(key)
    f.refuse("EnableIPv4", (True,))
    f.ignore("CheckDuplicate")        # API < 1.44: names are always unique here
    f.sub("ConfigFrom").refuse("Network")
    ipam = f.sub("IPAM")
    ipam.refuse("Driver", ("default",))
    configs = ipam.each("Config")
    if len(configs) > 1:
        raise Unsupported("IPAM.Config: one subnet per network")
    params: dict[str, Any] = {"name": f.get("Name", ""), "driver": "overlay",
                              "attachable": bool(f.get("Attachable", False)), "labels": f.get("Labels", {})}
    for c in configs:
        params["subnet"] = c.get("Subnet", "")
        for key in ("IPRange", "Gateway", "AuxiliaryAddresses", "AuxAddress"):
            c.refuse(key)
    f.refuse("Options")
    f.done()
    return params


# -- secrets and configs -------------------------------------------------------------------


def file_object_view(o: dict, kind: str) -> dict:
    spec: dict[str, Any] = {"Name": o["spec"]["name"], "Labels": o["spec"].get("labels") or {}}
    if kind == "config" and "data" in o["spec"]:
        data = o["spec"]["data"]
        spec["Data"] = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {"ID": o["id"], "Version": {"Index": o.get("version", {}).get("index", 0)},
            "CreatedAt": when(o.get("created_at")), "UpdatedAt": when(o.get("updated_at")), "Spec": spec}


def file_object_params(body: dict) -> dict:
    f = Fields(body)
    f.sub("Driver").refuse("Name")
    f.sub("Templating").refuse("Name")
    try:
        data = base64.b64decode(f.get("Data", ""), validate=True)
    except ValueError:
        raise Unsupported("Data: not base64") from None
    params = {"name": f.get("Name", ""), "labels": f.get("Labels", {}), "data": data}
    f.done()
    return params


# -- the swarm, info and version ---------------------------------------------------------------


def _swarm_spec(info: dict) -> dict:
    return {
        "Name": "default", "Labels": {},
        "Orchestration": {"TaskHistoryRetentionLimit": info.get("task_history_limit", 5)},
        "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0, "LogEntriesForSlowFollowers": 500,
                 "ElectionTick": 10, "HeartbeatTick": 1},
        "Dispatcher": {"HeartbeatPeriod": nanos(info.get("heartbeat_period", 0))},
        "CAConfig": {"NodeCertExpiry": nanos(info.get("cert_expiry_period", 0))},
        "TaskDefaults": {},
        "EncryptionConfig": {"AutoLockManagers": bool(info.get("autolock", False))},
    }


def _cluster(info: dict) -> dict:
    pools = info.get("default_addr_pools") or []
    return {"ID": info.get("cluster_id", ""), "Version": {"Index": 0}, "CreatedAt": ZERO_TIME, "UpdatedAt": ZERO_TIME,
            "Spec": _swarm_spec(info), "TLSInfo": {}, "RootRotationInProgress": False,
            "DefaultAddrPool": pools, "SubnetSize": info.get("default_addr_pool_mask_length", 24),
            "DataPathPort": info.get("data_path_port", 4789)}


def swarm_view(info: dict, worker_token: str, manager_token: str) -> dict:
    return dict(_cluster(info), JoinTokens={"Worker": worker_token, "Manager": manager_token})


def swarm_spec_settings(spec: Fields) -> dict[str, Any]:
    """What a SwarmSpec sets here, read alike for /swarm/init and /swarm/update: the task history
    limit, heartbeat, certificate expiry and autolock, each only when given; external CAs and a
    default task log driver are refused. Name, Labels and Raft are the caller's (they differ)."""
    settings: dict[str, Any] = {}
    orch, disp, ca, enc = spec.sub("Orchestration"), spec.sub("Dispatcher"), spec.sub("CAConfig"), \
        spec.sub("EncryptionConfig")
    if orch.raw("TaskHistoryRetentionLimit") is not None:     # 0 (keep no ended task) is a value
        settings["task_history_limit"] = orch.get("TaskHistoryRetentionLimit")
    if disp.get("HeartbeatPeriod"):
        settings["heartbeat"] = seconds(disp.get("HeartbeatPeriod"))
    if ca.get("NodeCertExpiry"):
        settings["cert_expiry"] = seconds(ca.get("NodeCertExpiry"))
    for key in ("ExternalCAs", "SigningCACert", "SigningCAKey", "ForceRotate"):
        ca.refuse(key)
    if enc.has("AutoLockManagers"):
        settings["autolock"] = bool(enc.get("AutoLockManagers"))
    spec.sub("TaskDefaults").sub("LogDriver").refuse("Name")
    return settings


def swarm_update_params(body: dict) -> dict:
    """cluster.update params of a Docker SwarmSpec: what `swarm update` can change here."""
    f = Fields(body)
    f.ignore("Name", "Labels")            # a one-cluster daemon: its name is "default"
    params = swarm_spec_settings(f)
    # Raft's ticks and snapshot settings are this daemon's own (pysyncobj's): what /swarm shows is
    # accepted back unchanged, so `docker swarm update` (which sends the whole spec) works.
    f.sub("Raft").ignore("SnapshotInterval", "KeepOldSnapshots", "LogEntriesForSlowFollowers", "ElectionTick",
                         "HeartbeatTick")
    f.done()
    return params


def info_view(info: dict, host: dict, now: str) -> dict:
    """Docker's /info (SystemInfo) of the local `info` answer; `host`: the machine's NCPU,
    MemTotal, KernelVersion and Architecture (read at the edge); `now`: SystemTime (RFC 3339)."""
    manager = info.get("role") == "manager"
    addrs = info.get("manager_addrs") or []
    swarm: dict[str, Any] = {
        "NodeID": info.get("node_id", ""), "NodeAddr": _host(info.get("addr", "")),
        "LocalNodeState": "active", "ControlAvailable": manager, "Error": info.get("error", ""),
        "RemoteManagers": [{"NodeID": "", "Addr": a} for a in addrs],
    }
    if "managers" in info:
        swarm["Managers"], swarm["Nodes"] = info["managers"], info["nodes"]
    if manager:
        swarm["Cluster"] = _cluster(info)
    return {
        "ID": info.get("node_id", ""), "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0,
        "ContainersStopped": 0, "Images": 0, "Driver": "", "DriverStatus": [], "Plugins": {
            "Volume": ["local"], "Network": ["overlay"], "Authorization": None, "Log": ["json-file", "local"]},
        "MemoryLimit": True, "SwapLimit": False, "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True,
        "CPUSet": True, "PidsLimit": True, "OomKillDisable": False, "IPv4Forwarding": True, "Debug": False,
        "NFd": 0, "NGoroutines": 0, "SystemTime": now, "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2", "NEventsListener": 0, "OperatingSystem": "linux",
        "OSVersion": "", "OSType": "linux", "IndexServerAddress":
        "https://index.docker.io/v1/", "RegistryConfig": None, **host,
        "GenericResources": None, "DockerRootDir": info.get("state_dir", ""), "HttpProxy": "", "HttpsProxy": "",
        "NoProxy": "", "Name": info.get("hostname", ""), "Labels": [], "ExperimentalBuild": False,
        "ServerVersion": ENGINE_VERSION, "Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc",
        "Swarm": swarm, "LiveRestoreEnabled": False, "Isolation": "", "InitBinary": "",
        "SecurityOptions": [], "Warnings": [f"this daemon is swarm-py: {SWARM_MODE_ONLY}"],
    }


def version_view() -> dict:
    uname = platform.uname()
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "", "GoVersion": "",
               "Os": "linux", "Arch": _arch(), "KernelVersion": uname.release, "BuildTime": ""}
    return {"Platform": {"Name": "swarm-py"},
            "Components": [{"Name": "Engine", "Version": ENGINE_VERSION, "Details": details}],
            "Version": ENGINE_VERSION, **details}

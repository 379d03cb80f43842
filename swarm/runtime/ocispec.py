"""The OCI runtime spec (config.json) of a task's bundle, decided purely.

`check_limits` and `build_config` read nothing from the machine: the caller
passes the paths it resolved (volume directories, the bundle's resolv.conf)
and the CPU count, so the decisions are unit-testable. Defaults follow
Docker's: its capability set, masked and read-only /proc paths, /dev, shm and
mqueue mounts, a fresh network namespace unless the agent hands one in.
No seccomp profile is applied (runc runs without one when none is given).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Sequence

from swarm.runtime.errors import SpecError
from swarm.runtime.images import DEFAULT_PATH, Image
from swarm.api.spec import ContainerSpec, Mount, Resources

# Docker refuses smaller limits (daemon: "Minimum memory limit allowed is 6MB").
# On this kernel runc itself only fails when the limit is below what the
# container's init already uses (about 2.3 MiB), with a much less clear message.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000         # the kernel's minimum CFS quota (1 ms)
NOFILE = 1_048_576               # what Docker containers get from a systemd-started dockerd

DEFAULT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class BundleFiles:
    """Files of the bundle that are bind-mounted into the container (host paths)."""
    resolv_conf: str
    hosts: str
    hostname: str


def check_task_id(task_id: str) -> None:
    if not TASK_ID.match(task_id):
        raise SpecError(f"{task_id!r} is not a valid task id (letters, digits, '_', '.', '-'; at most 128).")


def check_limits(limits: Resources, cpu_count: int) -> None:
    if limits.memory_bytes < 0 or limits.nano_cpus < 0:
        raise SpecError("Resource limits cannot be negative.")
    if 0 < limits.memory_bytes < MIN_MEMORY_BYTES:
        raise SpecError(f"The memory limit {limits.memory_bytes} bytes is below the minimum of 6 MiB "
                        f"({MIN_MEMORY_BYTES} bytes) that containers need.")
    if limits.nano_cpus:
        if limits.nano_cpus * CPU_PERIOD_US // 1_000_000_000 < MIN_CPU_QUOTA_US:
            raise SpecError("The CPU limit must be at least 0.01 CPUs.")
        if limits.nano_cpus > cpu_count * 1_000_000_000:
            raise SpecError(f"The CPU limit {limits.nano_cpus / 1e9:g} exceeds the {cpu_count} CPUs of this node.")


def check_mounts(mounts: Sequence[Mount]) -> None:
    """What can be checked without the filesystem: types, targets and volume names."""
    seen = set()
    for m in mounts:
        if m.type not in ("bind", "volume", "tmpfs"):
            raise SpecError(f"Mount type {m.type!r} is not supported (use bind, volume or tmpfs).")
        if not m.target.startswith("/") or ".." in m.target.split("/"):
            raise SpecError(f"The mount target {m.target!r} must be an absolute path without '..'.")
        target = posixpath.normpath(m.target)
        if target in seen:
            raise SpecError(f"Two mounts have the same target {target}.")
        seen.add(target)
        if m.type == "bind" and not m.source.startswith("/"):
            raise SpecError(f"The bind mount source {m.source!r} must be an absolute path.")
        if m.type == "volume" and m.source and not VOLUME_NAME.match(m.source):
            raise SpecError(f"{m.source!r} is not a valid volume name (letters, digits, '_', '.', '-').")
        if m.type == "tmpfs" and m.source:
            raise SpecError(f"A tmpfs mount takes no source (got {m.source!r} for {m.target}).")


def process_args(container: ContainerSpec, image: Image) -> list[str]:
    args = list(container.command) or list(image.entrypoint) + list(image.cmd)
    if not args:
        raise SpecError(f"No command given and the image {container.image} has no default command.")
    return args


def merge_env(image_env: Sequence[str], task_env: Sequence[str], hostname: str) -> list[str]:
    """Image env, then the task's (a task value replaces the image's); PATH and HOSTNAME as Docker sets them."""
    merged: dict[str, str] = {"PATH": DEFAULT_PATH.partition("=")[2], "HOSTNAME": hostname}
    for item in list(image_env) + list(task_env):
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise SpecError(f"The environment entry {item!r} is not of the form KEY=VALUE.")
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def _mount_entry(m: Mount, source: str, recursive_readonly: bool) -> dict:
    if m.type == "tmpfs":
        options = ["nosuid", "nodev", "noexec", "mode=1777"]
        source = "tmpfs"
    else:
        options = ["rbind", "rprivate"]
    if m.readonly:
        options.append("ro")
        if recursive_readonly and m.type != "tmpfs":
            # "ro" covers only the bind's top mount; a mount inside the source would stay writable.
            # "rro" (runc >= 1.1, mount_setattr) makes the whole tree read-only, as Docker 25+ does.
            options.append("rro")
    return {"destination": posixpath.normpath(m.target), "type": "tmpfs" if m.type == "tmpfs" else "bind",
            "source": source, "options": options}


def build_config(*, task_id: str, container: ContainerSpec, image: Image, limits: Resources,
                 netns_path: str | None, mount_sources: Sequence[str], files: BundleFiles, hostname: str,
                 cgroup_parent: str, nofile: int = NOFILE, recursive_readonly: bool = True) -> dict:
    """The OCI config.json document; `mount_sources[i]` is the host path of `container.mounts[i]`.
    Without `recursive_readonly` (an old runc or kernel) the caller must have made the submounts
    of read-only sources read-only itself."""
    user_mounts = sorted((_mount_entry(m, src, recursive_readonly) for m, src in zip(container.mounts, mount_sources)),
                         key=lambda e: e["destination"].count("/"))
    taken = {e["destination"] for e in user_mounts}
    etc_mounts = [{"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}
                  for dest, src in (("/etc/resolv.conf", files.resolv_conf), ("/etc/hosts", files.hosts),
                                    ("/etc/hostname", files.hostname)) if dest not in taken]
    network: dict = {"type": "network"}
    if netns_path:
        network["path"] = netns_path
    resources: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    if limits.memory_bytes:
        resources["memory"] = {"limit": limits.memory_bytes}
    if limits.nano_cpus:
        resources["cpu"] = {"period": CPU_PERIOD_US, "quota": limits.nano_cpus * CPU_PERIOD_US // 1_000_000_000}
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": process_args(container, image),
            "env": merge_env(image.env, container.env, hostname),
            "cwd": image.working_dir if image.working_dir.startswith("/") else "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            *user_mounts,
            *etc_mounts,
        ],
        "linux": {
            "cgroupsPath": f"/{cgroup_parent}/{task_id}",
            "resources": resources,
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, network],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def resolv_conf_text(dns: Sequence[str], search: Sequence[str], options: Sequence[str]) -> str:
    lines = [f"nameserver {s}" for s in dns]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def hosts_text(hostname: str, extra: Sequence[tuple[str, str]]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{addr}\t{name}" for addr, name in extra]
    if not any(name.split()[0] == hostname for _, name in extra if name.split()):
        lines.append(f"127.0.1.1\t{hostname}")
    return "\n".join(lines) + "\n"

"""The OCI runtime spec (config.json) of a task's bundle, decided purely.

`check_limits` and `build_config` read nothing from the machine: the caller
passes the paths it resolved (volume directories, the bundle's resolv.conf)
and the CPU count, so the decisions are unit-testable. Defaults follow
Docker's: its capability set, masked and read-only /proc paths, /dev, shm and
mqueue mounts, a fresh network namespace unless the agent hands one in.
No seccomp profile is applied (runc runs without one when none is given).

The process follows Docker's rules: --entrypoint replaces the image's
ENTRYPOINT and drops its CMD, the command replaces CMD; the user and groups
come resolved from the image's passwd and group files (users.py); the working
directory is the spec's, else the image's WORKDIR, else /; --init runs the
node's tini as /sbin/docker-init with the command after "--"; capabilities
are Docker's default set with --cap-add/--cap-drop applied (options.py).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from swarm.api import options
from swarm.runtime.errors import SpecError
from swarm.runtime.images import DEFAULT_PATH, Image
from swarm.runtime.users import ExecUser
from swarm.runtime import volumes
from swarm.api.spec import ContainerSpec, Mount, Resources, Ulimit

# Docker refuses smaller limits (daemon: "Minimum memory limit allowed is 6MB").
# On this kernel runc itself only fails when the limit is below what the
# container's init already uses (about 2.3 MiB), with a much less clear message.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000         # the kernel's minimum CFS quota (1 ms)
NOFILE = 1_048_576               # what Docker containers get from a systemd-started dockerd

DEFAULT_CAPS = options.DEFAULT_CAPABILITIES
INIT_PATH = "/sbin/docker-init"  # where Docker mounts its init (tini) in a container
RLIM_INFINITY = 2**64 - 1        # an unlimited rlimit in config.json (Docker's -1)
MAX_HOSTNAME = 64                # the kernel's HOST_NAME_MAX
# RFC 1123 names, as Docker validated --hostname.
HOSTNAME = re.compile(r"^(([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])\.)*"
                      r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])$")
ROOT_USER = ExecUser(0, 0, (0,), "/root")
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
        _check_mount_options(m)


PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
BIND_RECURSIVE = ("enabled", "disabled", "writable", "readonly")


def _check_mount_options(m: Mount) -> None:
    """The options of one mount type given to another are refused, as Docker refuses
    BindOptions on a volume ("field BindOptions must not be specified")."""
    where = f"the {m.type} mount at {m.target}"
    if m.bind_propagation and m.bind_propagation not in PROPAGATIONS:
        raise SpecError(f"Invalid bind-propagation {m.bind_propagation!r} for {where} (use {', '.join(PROPAGATIONS)}).")
    if m.bind_recursive not in BIND_RECURSIVE:
        raise SpecError(f"Invalid bind-recursive {m.bind_recursive!r} for {where} "
                        f"(use {', '.join(BIND_RECURSIVE)}).")
    if m.type != "bind" and (m.bind_propagation or m.bind_recursive != "enabled"):
        raise SpecError(f"bind-propagation and bind-recursive apply only to bind mounts, not to {where}.")
    if m.bind_recursive in ("writable", "readonly") and not m.readonly:
        raise SpecError(f"bind-recursive={m.bind_recursive} applies only to a read-only bind: add readonly "
                        f"to {where}.")
    if m.type != "volume" and (m.volume_nocopy or m.volume_labels or m.volume_opts or m.volume_driver != "local"):
        raise SpecError(f"volume-nocopy, volume-label, volume-driver and volume-opt apply only to volume mounts, "
                        f"not to {where}.")
    if m.volume_driver != "local":
        raise SpecError(f"The volume driver {m.volume_driver!r} is not available on this node (only local is).")
    try:
        volumes.check_options(m.volume_opts)
    except ValueError as exc:
        raise SpecError(f"volume-opt of {where}: {exc}.") from None
    if m.type != "tmpfs" and (m.tmpfs_size or m.tmpfs_mode):
        raise SpecError(f"tmpfs-size and tmpfs-mode apply only to tmpfs mounts, not to {where}.")
    if m.tmpfs_size < 0:
        raise SpecError(f"tmpfs-size of {where} cannot be negative.")
    if not 0 <= m.tmpfs_mode <= 0o7777:
        raise SpecError(f"tmpfs-mode {m.tmpfs_mode:o} of {where} is not a file mode (0 to 7777 in octal).")


def rootfs_propagation(mounts: Sequence[Mount]) -> dict:
    """The root's propagation a propagating bind needs (Docker's WithMounts): shared for a
    shared bind, rslave for a slave one; {} leaves runc's default."""
    modes = {m.bind_propagation for m in mounts if m.type == "bind"}
    if modes & {"shared", "rshared"}:
        return {"rootfsPropagation": "shared"}
    if modes & {"slave", "rslave"}:
        return {"rootfsPropagation": "rslave"}
    return {}


def check_process(container: ContainerSpec) -> None:
    """The process options that can be checked without the image or the node; each error names its flag."""
    if container.workdir and not container.workdir.startswith("/"):
        raise SpecError(f"The working directory {container.workdir!r} must be an absolute path (--workdir).")
    for flag, caps in (("--cap-add", container.cap_add), ("--cap-drop", container.cap_drop)):
        for cap in caps:
            try:
                options.normalize_capability(cap)
            except ValueError as exc:
                raise SpecError(f"{flag}: {exc}.") from None
    for key, value in container.sysctls.items():
        try:
            options.check_sysctl(key, value)
        except ValueError as exc:
            raise SpecError(f"--sysctl: {exc}.") from None
    seen: set[str] = set()
    for ulimit in container.ulimits:
        try:
            options.check_ulimit(ulimit)
        except ValueError as exc:
            raise SpecError(f"--ulimit: {exc}.") from None
        if ulimit.name in seen:
            raise SpecError(f"--ulimit: {ulimit.name} is given twice.")
        seen.add(ulimit.name)
    if not -1000 <= container.oom_score_adj <= 1000:
        raise SpecError(f"--oom-score-adj must be between -1000 and 1000, not {container.oom_score_adj}.")
    if container.stop_signal:
        try:
            options.parse_signal(container.stop_signal)
        except ValueError as exc:
            raise SpecError(f"--stop-signal: {exc}.") from None


def check_hostname(hostname: str) -> None:
    """A hostname after template expansion: what the kernel and resolvers accept."""
    if len(hostname) > MAX_HOSTNAME or not HOSTNAME.match(hostname):
        raise SpecError(f"The hostname {hostname!r} is not valid (--hostname): letters, digits and '-' in "
                        f"dot-separated labels, at most {MAX_HOSTNAME} characters.")


def check_host_limits(container: ContainerSpec, hard_limits: Mapping[str, int], oom_score_adj: int,
                      can_raise: bool) -> None:
    """Without CAP_SYS_RESOURCE the runtime can only lower limits: refuse what runc would fail on.
    `hard_limits`: the node's own hard limit per ulimit name (-1 = unlimited); `oom_score_adj`: its own."""
    if can_raise:
        return
    for ulimit in container.ulimits:
        mine = hard_limits.get(ulimit.name, options.UNLIMITED)
        if mine != options.UNLIMITED and (ulimit.hard == options.UNLIMITED or ulimit.hard > mine):
            raise SpecError(f"--ulimit {ulimit.name}: the hard limit {ulimit.hard} is above this node's own "
                            f"({mine}), which its runtime cannot raise.")
    if container.oom_score_adj and container.oom_score_adj < oom_score_adj:
        raise SpecError(f"--oom-score-adj {container.oom_score_adj} is below this node's own ({oom_score_adj}), "
                        "which its runtime cannot lower.")


def stop_signal(container: ContainerSpec, image: Image) -> int:
    """--stop-signal, else the image's STOPSIGNAL, else SIGTERM."""
    text = container.stop_signal or image.stop_signal or "SIGTERM"
    try:
        return options.parse_signal(text)
    except ValueError as exc:
        raise SpecError(f"--stop-signal: {exc}.") from None


def workdir(container: ContainerSpec, image: Image) -> str:
    path = container.workdir or (image.working_dir if image.working_dir.startswith("/") else "") or "/"
    return posixpath.normpath(path)


def process_args(container: ContainerSpec, image: Image, init: bool = False) -> list[str]:
    """As Docker's: --entrypoint replaces ENTRYPOINT and drops CMD; the command (Args) replaces CMD."""
    if container.entrypoint:
        args = list(container.entrypoint) + list(container.command)
    else:
        args = list(image.entrypoint) + list(container.command or image.cmd)
    if not args:
        raise SpecError(f"No command given and the image {container.image} has no default command.")
    return [INIT_PATH, "--", *args] if init else args


def merge_env(image_env: Sequence[str], task_env: Sequence[str], hostname: str, home: str = "") -> list[str]:
    """Image env, then the task's (a task value replaces the image's); PATH and HOSTNAME as Docker sets
    them, and HOME (the user's home from passwd) unless the image or the task sets it."""
    merged: dict[str, str] = {"PATH": DEFAULT_PATH.partition("=")[2], "HOSTNAME": hostname}
    for item in list(image_env) + list(task_env):
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise SpecError(f"The environment entry {item!r} is not of the form KEY=VALUE.")
        merged[key] = value
    if home and "HOME" not in merged:
        merged["HOME"] = home
    return [f"{k}={v}" for k, v in merged.items()]


def rlimits(ulimits: Sequence[Ulimit], nofile: int) -> list[dict]:
    """The node's default RLIMIT_NOFILE, replaced or joined by the task's ulimits."""
    def value(n: int) -> int:
        return RLIM_INFINITY if n == options.UNLIMITED else n

    limits = {"RLIMIT_NOFILE": {"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}}
    for u in ulimits:
        kind = options.ULIMIT_NAMES[u.name]
        limits[kind] = {"type": kind, "hard": value(u.hard), "soft": value(u.soft)}
    return list(limits.values())


def _mount_entry(m: Mount, source: str, recursive_readonly: bool) -> dict:
    destination = posixpath.normpath(m.target)
    if m.type == "tmpfs":
        options = ["nosuid", "nodev", "noexec", f"mode={m.tmpfs_mode or 0o1777:o}"]
        if m.tmpfs_size:
            options.append(f"size={m.tmpfs_size}")       # bytes; the kernel rounds up to pages
        if m.readonly:
            options.append("ro")
        return {"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": options}
    # Docker 25's bind-recursive: disabled binds the top mount only; writable keeps a read-only
    # bind's submounts writable; enabled and readonly make them read-only too.
    recursive = m.type != "bind" or m.bind_recursive != "disabled"
    propagation = (m.bind_propagation or "rprivate") if m.type == "bind" else "rprivate"
    if not recursive and propagation.startswith("r"):
        propagation = propagation[1:]   # crun ORs the flags: "bind" with "rprivate" would bind recursively
    options = ["rbind" if recursive else "bind", propagation]
    if m.readonly:
        options.append("ro")
        if recursive_readonly and recursive and m.bind_recursive != "writable":
            # "ro" covers only the bind's top mount; a mount inside the source would stay writable.
            # "rro" (runc >= 1.1, mount_setattr) makes the whole tree read-only, as Docker 25+ does.
            options.append("rro")
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def build_config(*, task_id: str, container: ContainerSpec, image: Image, limits: Resources,
                 netns_path: str | None, mount_sources: Sequence[str], files: BundleFiles, hostname: str,
                 cgroup_parent: str, nofile: int = NOFILE, recursive_readonly: bool = True,
                 user: ExecUser = ROOT_USER, init_path: str = "") -> dict:
    """The OCI config.json document; `mount_sources[i]` is the host path of `container.mounts[i]`.
    Without `recursive_readonly` (an old runc or kernel) the caller must have made the submounts
    of read-only sources read-only itself. `user`: the resolved USER and groups (users.py);
    `init_path`: the node's init binary when the task runs with --init ("" = without)."""
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
    if container.pids_limit > 0:
        resources["pids"] = {"limit": container.pids_limit}
    try:
        caps = options.effective_capabilities(container.cap_add, container.cap_drop, DEFAULT_CAPS)
    except ValueError as exc:
        raise SpecError(f"--cap-add/--cap-drop: {exc}.") from None
    process_extra = {"oomScoreAdj": container.oom_score_adj} if container.oom_score_adj else {}   # else inherited
    if container.tty:
        process_extra["consoleSize"] = {"height": 24, "width": 80}   # as a terminal starts (else 0x0)
    if init_path:
        etc_mounts.append({"destination": INIT_PATH, "type": "bind", "source": init_path,
                           "options": ["rbind", "rprivate", "ro"]})
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": container.tty,   # conmon -t holds the pseudo-terminal's master (runcmon.py)
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
            "args": process_args(container, image, init=bool(init_path)),
            "env": merge_env(image.env, container.env, hostname, user.home),
            "cwd": workdir(container, image),
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": rlimits(container.ulimits, nofile),
            **process_extra,
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": container.read_only},
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
            "sysctl": dict(container.sysctls),
            **rootfs_propagation(container.mounts),
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

"""Container options as Docker spells them: capabilities, sysctls, ulimits, signals.

Pure validators shared by the control API (refuse bad input before any write)
and the runtime (turn a checked spec into config.json). Each raises ValueError
with one sentence naming the bad value; callers add the flag's name.

The tables follow the Linux kernel (capability.h: 41 capabilities, signal
numbers of x86/arm) and Docker: the default capability set of moby's
oci/caps/defaults.go, the cap-add/cap-drop rules of its TweakCapabilities, the
namespaced sysctls of docker/cli's ValidateSysctl and runc's validator, and
go-units' ParseUlimit.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # parse_ulimit imports it: the CLI checks its flags without loading the object model
    from swarm.api.spec import Ulimit

# The kernel's capabilities, in bit order (CAP_CHOWN is bit 0, CAP_CHECKPOINT_RESTORE bit 40).
ALL_CAPABILITIES: tuple[str, ...] = tuple("CAP_" + name for name in (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"))
_KNOWN_CAPABILITIES = frozenset(ALL_CAPABILITIES)

# What a Docker container gets when it asks for nothing (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")

ALL = "ALL"


def normalize_capability(name: str) -> str:
    """"net_admin", "CAP_NET_ADMIN", "cap_net_admin" -> "CAP_NET_ADMIN"; "all" -> "ALL"."""
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in _KNOWN_CAPABILITIES:
        raise ValueError(f"unknown capability {name!r}")
    return upper


def effective_capabilities(cap_add: Iterable[str], cap_drop: Iterable[str],
                           base: Iterable[str] = DEFAULT_CAPABILITIES) -> list[str]:
    """The capabilities a container gets, as moby's TweakCapabilities decides.

    ALL in cap_add: every capability but those dropped (ALL in add wins over
    ALL in drop); ALL in cap_drop: only the added ones; otherwise the base set
    less the dropped ones plus the added ones."""
    add = [normalize_capability(c) for c in cap_add]
    drop = [normalize_capability(c) for c in cap_drop]
    if ALL in add:
        chosen = [c for c in ALL_CAPABILITIES if c not in drop]
    elif ALL in drop:
        chosen = add
    else:
        chosen = [c for c in base if c not in drop] + add
    return list(dict.fromkeys(chosen))     # without duplicates, first order kept


# Sysctls that live in a namespace a container owns (docker/cli opts.ValidateSysctl): the IPC
# ones below and fs.mqueue.* (IPC namespace), net.* (network namespace). kernel.domainname is
# namespaced too (UTS; runc accepts it); kernel.hostname is refused by runc because the
# hostname has its own field.
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})
_SYSCTL_KEY = re.compile(r"[a-z0-9_][a-z0-9_.+-]*(/[a-z0-9_.+-]+)*", re.IGNORECASE)


def check_sysctl(key: str, value: str) -> None:
    """Refuse a sysctl the container could not set without changing the host's kernel."""
    if not isinstance(key, str) or not _SYSCTL_KEY.fullmatch(key) or ".." in key or key.endswith("."):
        raise ValueError(f"sysctl {key!r} is not a sysctl name (like net.ipv4.ip_forward)")
    if not isinstance(value, str) or "\n" in value or "\0" in value:
        raise ValueError(f"sysctl {key!r} has a value that is not one line of text")
    name = key.replace("/", ".")      # runc accepts net/ipv4/ip_forward as well
    if name in _IPC_SYSCTLS or name.startswith(("fs.mqueue.", "net.")) or name == "kernel.domainname":
        return
    if name == "kernel.hostname":
        raise ValueError("sysctl 'kernel.hostname' is not allowed: set the hostname with --hostname")
    raise ValueError(f"sysctl {key!r} is not allowed: only namespaced sysctls (net.*, fs.mqueue.*, "
                     "kernel.msg*, kernel.sem, kernel.shm*, kernel.domainname) can be set for a container")


# go-units' ulimit names, and the kernel's RLIMIT_ for each.
ULIMIT_NAMES: dict[str, str] = {name: "RLIMIT_" + name.upper() for name in (
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack")}
UNLIMITED = -1          # as Docker writes it (nofile=-1); RLIM_INFINITY in config.json


def check_ulimit(ulimit: Ulimit) -> Ulimit:
    """A decoded Ulimit checked as parse_ulimit checks text (for specs that did not come from text)."""
    if ulimit.name not in ULIMIT_NAMES:
        raise ValueError(f"invalid ulimit type {ulimit.name!r}: use one of {', '.join(sorted(ULIMIT_NAMES))}")
    for which in (ulimit.soft, ulimit.hard):
        if which < UNLIMITED or which >= 1 << 63:
            raise ValueError(f"ulimit {ulimit.name}: {which} is not a limit (use -1 for unlimited)")
    if ulimit.hard != UNLIMITED and (ulimit.soft == UNLIMITED or ulimit.soft > ulimit.hard):
        raise ValueError(f"ulimit {ulimit.name}: the soft limit {ulimit.soft} is above the hard limit {ulimit.hard}")
    return ulimit


def parse_ulimit(text: str) -> Ulimit:
    """"nofile=1024:2048" (soft:hard) or "nofile=1024" (both the same), as `docker run --ulimit`."""
    name, sep, values = text.partition("=")
    if not sep:
        raise ValueError(f"invalid ulimit {text!r}: write NAME=SOFT[:HARD], like nofile=1024:2048")
    parts = values.split(":")
    if len(parts) > 2:
        raise ValueError(f"invalid ulimit {text!r}: at most two values, SOFT[:HARD]")
    try:
        numbers = [int(p, 10) for p in parts]
    except ValueError:
        raise ValueError(f"invalid ulimit {text!r}: limits are whole numbers (-1 for unlimited)") from None
    from swarm.api.spec import Ulimit
    return check_ulimit(Ulimit(name=name, soft=numbers[0], hard=numbers[-1]))


# Linux signal numbers (moby/sys/signal's SignalMap for linux; RTMIN+n and RTMAX-n as there).
SIGNALS: dict[str, int] = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16,
    "CHLD": 17, "CLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23,
    "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30,
    "SYS": 31, "UNUSED": 31, "RTMIN": 34, "RTMAX": 64,
    **{f"RTMIN+{n}": 34 + n for n in range(1, 16)},
    **{f"RTMAX-{n}": 64 - n for n in range(1, 15)},
}
MAX_SIGNAL = 64


def parse_signal(text: str) -> int:
    """"SIGUSR1", "usr1" or "10" -> 10 (Docker's signal.ParseSignal)."""
    raw = text.strip()
    if raw.isdigit():
        number = int(raw)
        if not 1 <= number <= MAX_SIGNAL:
            raise ValueError(f"invalid signal {text!r}: signal numbers run from 1 to {MAX_SIGNAL}")
        return number
    name = raw.upper()
    name = name[3:] if name.startswith("SIG") else name
    if name not in SIGNALS:
        raise ValueError(f"invalid signal {text!r}: use a name like SIGTERM or SIGUSR1, or a number")
    return SIGNALS[name]

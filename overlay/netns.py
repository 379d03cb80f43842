"""Named network namespaces: create, remove, and run code inside one.

How this works: a named namespace is a bind mount at /run/netns/NAME (made
and removed with `pyroute2.netns`), so `ip netns`, runc (`"path":
"/run/netns/NAME"`) and pyroute2 (`IPRoute(netns=NAME)`) all find it.

Code that must run *inside* a namespace (creating a socket, writing a
sysctl under /proc/sys/net) runs in a short-lived thread that setns()-es
into it: a network namespace belongs to a thread, so the caller's thread
and the rest of the process stay where they are, and the thread (with its
namespace) is gone when the callable returns. Sockets keep the namespace they
were created in, so a socket returned from `run_in` can be served from any
thread. Tools (`nft`) run as `ip netns exec NAME ...` subprocesses.

pyroute2 is imported where it is first used, not with this module: its
package imports all of its ~240 modules (12 MiB) whatever one takes from it,
and a node whose tasks use no network never needs any of them.

Safety: helpers that change a namespace (sysctls, rulesets) refuse to touch
the machine's initial namespace unless the caller says so explicitly; tests
and labs only ever pass namespaces they created.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import socket
import subprocess
import threading
from typing import Any, Callable, Sequence, TypeVar

from overlay.errors import DatapathError, InvalidRequest

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MAX_NAME = 200
_SYSCTL_RE = re.compile(r"^net(\.[A-Za-z0-9_-]+)+$")

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def ns_path(name: str) -> str:
    """The bind-mount path of a named namespace (what runc is given)."""
    _check_name(name)
    return os.path.join(NETNS_DIR, name)


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME or "/" in name or name in (".", ".."):
        raise InvalidRequest(f"{name!r} is not a valid network namespace name.")


def ns_exists(name: str) -> bool:
    """True when /run/netns/NAME exists and is a namespace mount."""
    try:
        # The nsfs file mounted there lives on another device than /run/netns.
        return os.path.ismount(ns_path(name))
    except OSError:
        return False


def list_ns() -> list[str]:
    """Names of all named namespaces, sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    """Create a named namespace; an existing one is kept (idempotent)."""
    if ns_exists(name):
        return
    if os.path.exists(ns_path(name)):
        os.unlink(ns_path(name))  # a stale mount point left by a crash
    from pyroute2 import netns as pr_netns

    try:
        pr_netns.create(name)
    except Exception as exc:  # pyroute2 reports child failures with varied types
        raise DatapathError(f"Could not create network namespace {name}: {exc}") from exc


def remove(name: str) -> None:
    """Remove a named namespace; a missing one is fine (idempotent).

    Processes still inside (a running container) keep the namespace alive
    until they exit; only the name disappears.
    """
    if not os.path.lexists(ns_path(name)):
        return
    from pyroute2 import netns as pr_netns

    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DatapathError(f"Could not remove network namespace {name}: {exc}") from exc


def _setns_current_thread(name: str) -> None:
    fd = os.open(ns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise DatapathError(f"setns into {name} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(name: str | None, func: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
    """Run `func(*args, **kwargs)` inside namespace `name` and return its result.

    `None` runs it in the caller's namespace, directly. Exceptions propagate.
    """
    if name is None:
        return func(*args, **kwargs)
    if not ns_exists(name):
        raise DatapathError(f"The network namespace {name} does not exist.")
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            _setns_current_thread(name)
            box["result"] = func(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DatapathError(f"Work inside network namespace {name} did not finish within {timeout:g} s.")
    if "error" in box:
        raise box["error"]
    return box["result"]


def socket_in(name: str | None, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace `name` (usable from any thread)."""
    return run_in(name, socket.socket, family, type, proto)


def current_ns_id() -> tuple[int, int]:
    """(device, inode) of the calling thread's network namespace."""
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


def _initial_ns_id() -> tuple[int, int]:
    # pid 1 may be hidden from us (ptrace restrictions); kthreadd (pid 2) always
    # lives in the initial namespace. Failing both, be conservative: our own.
    for path in ("/proc/1/ns/net", "/proc/2/ns/net", "/proc/self/ns/net"):
        try:
            st = os.stat(path)
        except OSError:
            continue
        return (st.st_dev, st.st_ino)
    raise DatapathError("Cannot tell which network namespace is the initial one.")


def is_initial_ns(name: str | None) -> bool:
    """Whether `name` (None: the caller's namespace) is the machine's initial namespace."""
    if name is None:
        return current_ns_id() == _initial_ns_id()
    st = os.stat(ns_path(name))
    return (st.st_dev, st.st_ino) == _initial_ns_id()


def guard_initial(name: str | None, what: str, allow_initial: bool) -> None:
    """Refuse to change the initial namespace unless the caller opted in."""
    if not allow_initial and is_initial_ns(name):
        raise InvalidRequest(
            f"Refusing to {what} in the machine's initial network namespace; "
            "pass a namespace name (or allow_initial=True on a real host)."
        )


def _sysctl_path(key: str) -> str:
    if not _SYSCTL_RE.match(key):
        raise InvalidRequest(f"Only net.* sysctls (dotted, like net.ipv4.ip_forward) are per namespace, not {key!r}.")
    return "/proc/sys/" + key.replace(".", "/")


def set_sysctl(name: str | None, key: str, value: str | int, *, allow_initial: bool = False) -> None:
    """Write a net.* sysctl (dotted key) inside namespace `name`."""
    path = _sysctl_path(key)
    guard_initial(name, f"set {key}", allow_initial)

    def write() -> None:
        with open(path, "w") as f:
            f.write(f"{value}\n")

    run_in(name, write)


def get_sysctl(name: str | None, key: str) -> str:
    """Read a net.* sysctl (dotted key) inside namespace `name`."""
    path = _sysctl_path(key)

    def read() -> str:
        with open(path) as f:
            return f.read().strip()

    return run_in(name, read)


def exec_in(
    name: str | None,
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 30.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace `name` (`ip netns exec`) and capture its output."""
    cmd = list(argv) if name is None else ["ip", "netns", "exec", name, *argv]
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise DatapathError(f"Cannot run {cmd[0]}: not installed.") from exc
    except subprocess.TimeoutExpired as exc:
        raise DatapathError(f"{' '.join(argv)} in {name or 'this namespace'} did not finish within {timeout:g} s.") from exc
    if check and proc.returncode != 0:
        where = name or "this namespace"
        raise DatapathError(f"{' '.join(argv)} failed in {where}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc

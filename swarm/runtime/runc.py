"""The runc backend: one OCI bundle per task under STATE_DIR/tasks.

How this works. `prepare` resolves the image, writes the bundle
(tasks/<id>/: config.json, resolv.conf, hosts, hostname, upper/ and work/)
and mounts rootfs/ as an overlay of the image's layers. `start` runs the log
shim (shim.py), which runs `runc run` in the foreground with the container's
stdout/stderr as pipes it reads, and waits until runc reports the container's
pid (init.pid) or the shim reports a failure (exit.json). Everything else is
read back from files in the bundle and from `runc state`, so a new Runtime
object (a restarted agent) adopts what an earlier one started:

    shim.json   {pid, start_time} of the shim (start time guards against pid reuse)
    init.pid    the container's init process, written by runc once it runs
    exit.json   {exit_code, error, finished_at}, written by the shim at the end
    container.log, runc.log, shim.log, meta.json (task id, image id, layers)

Names are predictable so that anything left over can be found: runc state
under tasks/.runc/<id>, cgroups /sys/fs/cgroup/<controller>/<cgroup_parent>/<id>
(absolute, so they do not depend on the agent's own cgroup), and the only host
mount is tasks/<id>/rootfs.

Methods are synchronous (from trio, call them in a worker thread) except
`wait`, `logs` and `stop_async`, which wait with trio sleeps, polling the
bundle's files every 50 ms. `stop` blocks for up to its grace period + 10 s.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import resource
import shutil
import signal as signals
import subprocess
import sys
import time
from typing import AsyncIterator, Sequence

import trio

from raft.fsutil import atomic_write
from swarm.runtime import ocispec, shim
from swarm.runtime.base import CREATED, MISSING, RUNNING, STOPPED, ContainerState, LogEntry
from swarm.runtime.errors import ContainerError, SpecError
from swarm.runtime.images import ImageStore
from swarm.runtime.logfile import Joiner, read_tail
from swarm.spec import ContainerSpec, Resources

POLL = 0.05
KILL_TIMEOUT = 10.0
DEFAULT_DNS = ("127.0.0.11",)
DEFAULT_DNS_OPTIONS = ("ndots:0",)

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


class Runtime:
    """Containers run by runc (or crun), one bundle per task under `root`."""

    def __init__(self, root: str, images: ImageStore, *, volumes_dir: str | None = None, runc: str = "runc",
                 runc_root: str | None = None, cgroup_parent: str = "swarm", start_timeout: float = 30.0,
                 python: str = sys.executable) -> None:
        self.root = os.path.abspath(root)
        self.images = images
        self.volumes_dir = os.path.abspath(volumes_dir or os.path.join(os.path.dirname(self.root), "volumes"))
        self.runc = runc
        self.runc_root = os.path.abspath(runc_root or os.path.join(self.root, ".runc"))
        self.cgroup_parent = cgroup_parent.strip("/")
        self.start_timeout = start_timeout
        self.python = python
        os.makedirs(self.root, mode=0o700, exist_ok=True)

    # -- paths -------------------------------------------------------------------------
    def bundle(self, task_id: str) -> str:
        ocispec.check_task_id(task_id)
        return os.path.join(self.root, task_id)

    def _file(self, task_id: str, name: str) -> str:
        return os.path.join(self.bundle(task_id), name)

    def log_path(self, task_id: str) -> str:
        return self._file(task_id, "container.log")

    def cgroup_dirs(self, task_id: str) -> list[str]:
        """The container's cgroup directory in every mounted hierarchy (present or not)."""
        ocispec.check_task_id(task_id)
        return [os.path.join(mnt, self.cgroup_parent, task_id) for mnt in _cgroup_mounts()]

    # -- lifecycle ---------------------------------------------------------------------
    def prepare(self, task_id: str, container: ContainerSpec, limits: Resources, netns_path: str | None, *,
                hostname: str | None = None, dns: Sequence[str] = DEFAULT_DNS, dns_search: Sequence[str] = (),
                dns_options: Sequence[str] = DEFAULT_DNS_OPTIONS, hosts: Sequence[tuple[str, str]] = ()) -> None:
        """Write the task's bundle and mount its rootfs; a prepared, never started bundle is redone."""
        ocispec.check_task_id(task_id)
        ocispec.check_limits(limits, os.cpu_count() or 1)
        ocispec.check_mounts(container.mounts)
        for m in container.mounts:
            if m.type == "bind" and not os.path.exists(m.source):
                raise SpecError(f"The bind mount source {m.source} does not exist on this node.")
        if netns_path and not os.path.exists(netns_path):
            raise ContainerError(f"The network namespace {netns_path} does not exist.")
        image = self.images.resolve(container.image)
        hostname = hostname or task_id[:12]
        bundle = self.bundle(task_id)
        if os.path.isdir(bundle):
            if os.path.exists(os.path.join(bundle, "shim.json")):
                raise ContainerError(f"Task {task_id} was already started; remove it before preparing it again.")
            self.remove(task_id)
        os.makedirs(bundle, mode=0o711)
        try:
            for d in ("rootfs", "upper", "work"):
                os.mkdir(os.path.join(bundle, d), 0o755)
            files = ocispec.BundleFiles(*(os.path.join(bundle, n) for n in ("resolv.conf", "hosts", "hostname")))
            atomic_write(files.resolv_conf, ocispec.resolv_conf_text(dns, dns_search, dns_options).encode(), 0o644)
            atomic_write(files.hosts, ocispec.hosts_text(hostname, hosts).encode(), 0o644)
            atomic_write(files.hostname, f"{hostname}\n".encode(), 0o644)
            sources = [self._mount_source(bundle, i, m) for i, m in enumerate(container.mounts)]
            config = ocispec.build_config(task_id=task_id, container=container, image=image, limits=limits,
                                          netns_path=netns_path, mount_sources=sources, files=files,
                                          hostname=hostname, cgroup_parent=self.cgroup_parent,
                                          nofile=_nofile_limit())
            lowers = [self.images.layer_path(d) for d in image.layers]
            meta = {"task_id": task_id, "image": container.image, "image_id": image.id, "lowerdirs": lowers}
            atomic_write(os.path.join(bundle, "meta.json"), json.dumps(meta, indent=1).encode(), 0o644)
            self._mount_rootfs(bundle, lowers)
            atomic_write(os.path.join(bundle, "config.json"), json.dumps(config, indent=1).encode(), 0o644)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._teardown_bundle(task_id)
            if isinstance(exc, OSError):
                raise ContainerError(f"Preparing task {task_id} failed: {exc.strerror} ({exc.filename}).") from None
            raise

    def start(self, task_id: str) -> None:
        """Start the prepared container; returns once its process runs (or raises ContainerError)."""
        bundle = self.bundle(task_id)
        if not os.path.exists(os.path.join(bundle, "config.json")):
            raise ContainerError(f"Task {task_id} is not prepared.")
        if os.path.exists(os.path.join(bundle, "shim.json")):
            raise ContainerError(f"Task {task_id} was already started.")
        if not _mounted(os.path.join(bundle, "rootfs")):
            self._mount_rootfs(bundle, _read_json(os.path.join(bundle, "meta.json"))["lowerdirs"])  # after a reboot
        cmd = [self.python, os.path.abspath(shim.__file__), "--bundle", bundle, "--id", task_id,
               "--runc", self.runc, "--runc-root", self.runc_root]
        with open(os.path.join(bundle, "shim.log"), "ab") as shim_log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=shim_log,
                                    cwd="/", close_fds=True, start_new_session=True)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ContainerError(f"The log shim of task {task_id} did not start.") from None
        if rc != 0 or not os.path.exists(os.path.join(bundle, "shim.json")):
            raise ContainerError(f"The log shim of task {task_id} failed to start (see {bundle}/shim.log).")
        deadline = time.monotonic() + self.start_timeout
        exit_path, pid_path = os.path.join(bundle, "exit.json"), os.path.join(bundle, "init.pid")
        while time.monotonic() < deadline:
            if os.path.exists(exit_path):
                result = _read_json(exit_path)
                if result.get("error") and not os.path.exists(pid_path):
                    raise ContainerError(_start_failure(task_id, result["error"]))
                return  # it ran and already exited: state() reports the exit code
            if os.path.exists(pid_path):
                return
            time.sleep(0.01)
        raise ContainerError(f"Task {task_id} did not start within {self.start_timeout:g} s.")

    def state(self, task_id: str) -> ContainerState:
        bundle = self.bundle(task_id)
        if not os.path.exists(os.path.join(bundle, "config.json")):
            return ContainerState(MISSING)
        stopped = self._exit_state(bundle)
        if stopped is not None:
            return stopped
        if not os.path.exists(os.path.join(bundle, "shim.json")):
            return ContainerState(CREATED)
        shim_alive = self._shim_alive(bundle)
        runc_state = self._runc_state(task_id)
        status = runc_state.get("status") if runc_state else None
        if status in ("running", "paused"):
            return ContainerState(RUNNING, pid=runc_state.get("pid") or None)
        if shim_alive:
            if not os.path.exists(os.path.join(bundle, "init.pid")):
                return ContainerState(CREATED)   # the shim is starting runc
            # the container ended and the shim is writing its exit code: give it a moment
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and self._shim_alive(bundle):
                stopped = self._exit_state(bundle)
                if stopped is not None:
                    return stopped
                time.sleep(0.01)
            stopped = self._exit_state(bundle)
            if stopped is not None:
                return stopped
        return ContainerState(STOPPED, error=f"The log shim of task {task_id} is gone; the exit code is unknown.")

    async def wait(self, task_id: str) -> int | None:
        """Until the container stops; its exit code (None when it could not be known)."""
        bundle = self.bundle(task_id)
        if not os.path.exists(os.path.join(bundle, "config.json")):
            raise ContainerError(f"No such task {task_id}.")
        if not os.path.exists(os.path.join(bundle, "shim.json")):
            raise ContainerError(f"Task {task_id} has not been started.")
        return (await self._until_stopped(task_id)).exit_code

    async def _until_stopped(self, task_id: str) -> ContainerState:
        """Poll the shim's exit file every 50 ms; ask runc too, once a second, in case the shim died."""
        exit_path = self._file(task_id, "exit.json")
        checked = float("-inf")
        while True:
            if os.path.exists(exit_path):
                return await trio.to_thread.run_sync(self.state, task_id)
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                st = await trio.to_thread.run_sync(self.state, task_id)
                if st.status in (STOPPED, MISSING):
                    return st
            await trio.sleep(POLL)

    def kill(self, task_id: str, signal: int) -> None:
        """Send `signal` to the container's init process."""
        res = self._runc("kill", task_id, str(int(signal)))
        if res.returncode != 0:
            msg = _runc_message(res)
            if "not running" in msg or "does not exist" in msg or "container not" in msg:
                raise ContainerError(f"Task {task_id} is not running.")
            raise ContainerError(f"Signalling task {task_id} failed: {msg}")

    def stop(self, task_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL once `grace` seconds have passed; returns when the container stopped.
        A prepared container that was never started is left as it is. Blocks: from trio, run it in a
        worker thread or use stop_async."""
        if not self._needs_stop(task_id):
            return
        with contextlib.suppress(ContainerError):
            self.kill(task_id, signals.SIGTERM)
        if self._poll_stopped(task_id, max(grace, 0.0)):
            return
        with contextlib.suppress(ContainerError):
            self.kill(task_id, signals.SIGKILL)
        if not self._poll_stopped(task_id, KILL_TIMEOUT):
            raise ContainerError(f"Task {task_id} did not stop within {KILL_TIMEOUT:g} s of SIGKILL.")

    async def stop_async(self, task_id: str, grace: float) -> None:
        """stop() for trio callers: the waits are trio sleeps, so the caller can cancel them."""
        if not await trio.to_thread.run_sync(self._needs_stop, task_id):
            return
        with contextlib.suppress(ContainerError):
            await trio.to_thread.run_sync(self.kill, task_id, signals.SIGTERM)
        with trio.move_on_after(max(grace, 0.0)):
            await self._until_stopped(task_id)
            return
        with contextlib.suppress(ContainerError):
            await trio.to_thread.run_sync(self.kill, task_id, signals.SIGKILL)
        with trio.move_on_after(KILL_TIMEOUT):
            await self._until_stopped(task_id)
            return
        raise ContainerError(f"Task {task_id} did not stop within {KILL_TIMEOUT:g} s of SIGKILL.")

    def _needs_stop(self, task_id: str) -> bool:
        started = os.path.exists(self._file(task_id, "shim.json"))
        return started and self.state(task_id).status not in (STOPPED, MISSING)

    def _poll_stopped(self, task_id: str, timeout: float) -> bool:
        """Like _until_stopped, blocking, for at most `timeout` seconds."""
        exit_path = self._file(task_id, "exit.json")
        deadline = time.monotonic() + timeout
        checked = float("-inf")
        while True:
            if os.path.exists(exit_path):
                return True
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                if self.state(task_id).status in (STOPPED, MISSING):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)

    def remove(self, task_id: str) -> None:
        """Kill the container if needed and remove its runc state, mount, cgroups and bundle. Idempotent."""
        bundle = self.bundle(task_id)
        # While the shim lives, the container runs or is about to: kill it once runc knows it.
        deadline = time.monotonic() + KILL_TIMEOUT
        killed = False
        while os.path.isdir(bundle) and self._shim_alive(bundle) and time.monotonic() < deadline:
            runc_state = self._runc_state(task_id)
            if not killed and runc_state and runc_state.get("status") in ("created", "running", "paused"):
                killed = self._runc("kill", task_id, str(int(signals.SIGKILL))).returncode == 0
            time.sleep(POLL)
        if self._runc_state(task_id) is not None:   # the shim is gone, runc's record may not be
            res = self._runc("delete", "--force", task_id)
            if res.returncode != 0 and "does not exist" not in _runc_message(res):
                raise ContainerError(f"Removing task {task_id} failed: {_runc_message(res)}")
        if os.path.isdir(bundle):
            self._stop_shim(bundle)
        self._teardown_bundle(task_id)

    def list(self) -> list[str]:
        """Task ids with a bundle here (prepared, running or stopped), for re-adoption."""
        out = []
        for name in sorted(os.listdir(self.root)):
            if not name.startswith(".") and ocispec.TASK_ID.match(name) and os.path.isdir(os.path.join(self.root, name)):
                out.append(name)
        return out

    async def logs(self, task_id: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[LogEntry]:
        """(timestamp, stream, line) entries; with follow, until the container stopped and all is read."""
        path = self.log_path(task_id)
        if not os.path.exists(os.path.join(self.bundle(task_id), "config.json")):
            raise ContainerError(f"No such task {task_id}.")
        joiner = Joiner()
        offset = 0
        if os.path.exists(path):
            if tail is not None:
                lines, offset = read_tail(path, max(tail, 0))
                for entry in joiner.feed(lines):
                    yield entry
        exit_path = self._file(task_id, "exit.json")
        checked = time.monotonic()
        while True:
            lines, offset = _read_from(path, offset)
            for entry in joiner.feed(lines):
                yield entry
            if not follow:
                return
            if lines:
                await trio.lowlevel.checkpoint()
                continue
            done = os.path.exists(exit_path)
            if not done and time.monotonic() - checked > 1.0:   # the shim may be gone without an exit file
                checked = time.monotonic()
                done = await trio.to_thread.run_sync(self._stopped, task_id)
            if done:
                lines, offset = _read_from(path, offset)
                for entry in joiner.feed(lines):
                    yield entry
                return
            await trio.sleep(POLL)

    # -- helpers -----------------------------------------------------------------------
    def _mount_source(self, bundle: str, index: int, m) -> str:
        if m.type == "bind":
            return m.source
        if m.type == "volume":
            path = (os.path.join(self.volumes_dir, m.source, "_data") if m.source
                    else os.path.join(bundle, "volumes", str(index)))   # anonymous: lives and dies with the task
            os.makedirs(path, mode=0o755, exist_ok=True)
            return path
        return "tmpfs"

    def _mount_rootfs(self, bundle: str, lowers: list[str]) -> None:
        for lower in lowers:
            if not os.path.isdir(lower):
                raise ContainerError(f"The image layer {lower} is missing; load the image again.")
        options = (f"lowerdir={':'.join(reversed(lowers))},upperdir={bundle}/upper,workdir={bundle}/work")
        if any(c in bundle + "".join(lowers) for c in ",:"):
            raise ContainerError("The state directory path may not contain ',' or ':' (overlayfs options).")
        if len(options) >= 4096:
            raise ContainerError("The image has too many layers for one overlay mount.")
        target = os.path.join(bundle, "rootfs")
        if _libc.mount(b"overlay", target.encode(), b"overlay", 0, options.encode()) != 0:
            err = ctypes.get_errno()
            raise ContainerError(f"Mounting the root filesystem of {os.path.basename(bundle)} failed: "
                                 f"{os.strerror(err)}.")

    def _teardown_bundle(self, task_id: str) -> None:
        bundle = self.bundle(task_id)
        for mnt in sorted(_mounts_under(bundle), key=len, reverse=True):
            if _libc.umount2(mnt.encode(), 0) != 0:
                _libc.umount2(mnt.encode(), MNT_DETACH)
        if _mounts_under(bundle):
            raise ContainerError(f"Cannot unmount the root filesystem of task {task_id}; it is still in use.")
        for path in self.cgroup_dirs(task_id):
            _remove_cgroup(path)
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.rmtree(os.path.join(self.runc_root, task_id), ignore_errors=True)

    def _exit_state(self, bundle: str) -> ContainerState | None:
        try:
            result = _read_json(os.path.join(bundle, "exit.json"))
        except (FileNotFoundError, ValueError):
            return None
        return ContainerState(STOPPED, exit_code=result.get("exit_code"), error=result.get("error") or "",
                              finished_at=result.get("finished_at"))

    def _shim_alive(self, bundle: str) -> bool:
        try:
            info = _read_json(os.path.join(bundle, "shim.json"))
            return shim.is_running(int(info["pid"]), int(info["start_time"]))
        except (OSError, ValueError, KeyError):
            return False

    def _stop_shim(self, bundle: str) -> None:
        """The shim exits when the container's pipes close; kill it only if it lingers."""
        deadline = time.monotonic() + 2.0
        while self._shim_alive(bundle) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._shim_alive(bundle):
            with contextlib.suppress(OSError):
                os.kill(int(_read_json(os.path.join(bundle, "shim.json"))["pid"]), signals.SIGKILL)

    def _stopped(self, task_id: str) -> bool:
        return self.state(task_id).status in (STOPPED, MISSING)

    def _runc(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.runc, "--root", self.runc_root, *args], capture_output=True, timeout=30)
        except FileNotFoundError:
            raise ContainerError(f"The container runtime {self.runc} is not installed.") from None
        except subprocess.TimeoutExpired:
            raise ContainerError(f"{self.runc} {args[0]} did not answer within 30 s.") from None

    def _runc_state(self, task_id: str) -> dict | None:
        if not os.path.isdir(os.path.join(self.runc_root, task_id)):
            return None
        res = self._runc("state", task_id)
        if res.returncode != 0:
            return None
        try:
            return json.loads(res.stdout)
        except ValueError:
            return None


def _nofile_limit() -> int:
    """runc can only lower the RLIMIT_NOFILE the container inherits from us (it may lack
    CAP_SYS_RESOURCE, as on this project's machines): ask for at most our hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ocispec.NOFILE if hard == resource.RLIM_INFINITY else min(ocispec.NOFILE, hard)


def _start_failure(task_id: str, error: str) -> str:
    return f"Task {task_id} failed to start: {error}"


def _runc_message(res: subprocess.CompletedProcess) -> str:
    text = (res.stderr or b"").decode(errors="replace").strip()
    for line in reversed(text.splitlines()):
        try:
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("msg"):
                return str(entry["msg"])
        except ValueError:
            if line.strip():
                return line.strip()
    return text or f"exit status {res.returncode}"


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _read_from(path: str, offset: int) -> tuple[list[bytes], int]:
    """Complete lines of `path` from `offset`, and the offset after the last one."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n")[:-1], offset + end


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount in this mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040 is a space
            out.append((point, fields[sep + 1]))
    return out


def _mounts_under(path: str) -> list[str]:
    prefix = path.rstrip("/") + "/"
    return [p for p, _ in _mountinfo() if p == path or p.startswith(prefix)]


def _mounted(path: str) -> bool:
    return any(p == path for p, _ in _mountinfo())


def _cgroup_mounts() -> list[str]:
    return sorted({p for p, fstype in _mountinfo() if fstype in ("cgroup", "cgroup2")})


def _remove_cgroup(path: str) -> None:
    """rmdir a cgroup directory (children first); a cgroup with live processes stays and raises."""
    if not os.path.isdir(path):
        return
    for name in os.listdir(path):
        child = os.path.join(path, name)
        if os.path.isdir(child):
            _remove_cgroup(child)
    for attempt in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == 49:
                raise ContainerError(f"Cannot remove the cgroup {path}: {exc.strerror}.") from None
            time.sleep(0.02)

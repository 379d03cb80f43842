"""The runc backend: one OCI bundle per task under STATE_DIR/tasks.

How this works. `prepare` resolves the image, writes the bundle
(tasks/<id>/: config.json, resolv.conf, hosts, hostname, upper/ and work/)
and mounts rootfs/ as an overlay of the image's layers. `start` runs the log
shim (shim.py), which runs `runc run` in the foreground with the container's
stdout/stderr as pipes it reads, and waits until runc reports the container's
pid (init.pid) or the shim reports a failure (exit.json). Everything else is
read back from files in the bundle and from /proc, so a new Runtime object (a
restarted agent) adopts what an earlier one started:

    shim.json   {pid, start_time} of the shim (start time guards against pid reuse)
    init.pid    the container's init process, written by runc once it runs
    exit.json   {exit_code, error, finished_at}, written by the shim at the end
    container.log, runc.log, shim.log, meta.json (task id, image id, layers,
    stop signal, log settings, the effective healthcheck)

`exec` runs a process in the running container (healthchecks) with `runc
exec`, from a process.json made of the container's own process (user,
environment, working directory, capabilities) and the given argv; runc puts
that process in a session of its own, so a check past its timeout is killed
with its process group (what its shell started too).

Names are predictable so that anything left over can be found: runc state
under tasks/.runc/<id>, cgroups /sys/fs/cgroup/<controller>/<cgroup_parent>/<id>
(absolute, so they do not depend on the agent's own cgroup), and the only host
mounts are tasks/<id>/rootfs and, for a task with secrets or configs, the tmpfs
tasks/<id>/files that holds them (mounts and cgroups: swarm/runtime/mounts.py).

Exits are watched, not polled: the shim writes exit.json and then exits, so
`wait` opens a pidfd of the shim (pidfd_open; the start time is checked after
opening, against pid reuse) and sleeps until it is readable. If the shim died
early, the container's init (init.pid, checked by its cgroup) is watched the
same way. Only where pidfd_open is missing do waits fall back to cheap /proc
and stat checks every FALLBACK_POLL seconds. No wait runs `runc`: at hundreds
of containers a `runc state` per container per second starved the node.

Methods are synchronous (from trio, call them in a worker thread) except
`wait`, `logs`, `exec` and `stop_async`, which wait in trio. `stop` blocks for up to
its grace period + 10 s.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import resource
import select
import shutil
import signal as signals
import stat
import subprocess
import sys
import time
import uuid
from typing import AsyncIterator, Sequence

import trio

from raft.fsutil import atomic_write
from swarm.api import health, logdriver, secrets
from swarm.runtime import mounts, ocispec, runcexec, shim, users, volumes
from swarm.runtime.base import CREATED, MISSING, RUNNING, STOPPED, ContainerState, ExecResult, LogEntry
from swarm.runtime.errors import ContainerError, SpecError
from swarm.runtime.images import Image, ImageStore
from swarm.runtime.logfile import CHUNK_BYTES, Chunk, Cursor, read_chunk, start_cursor
from swarm.api.spec import ContainerSpec, FileReference, Mount, Resources

POLL = 0.05
INIT_BINARY = "/usr/bin/tini-static"
MAX_ETC_FILE = 4 << 20  # an image's /etc/passwd or /etc/group read to resolve --user
FALLBACK_POLL = 0.5     # waits without pidfd_open: /proc and stat checks only
KILL_TIMEOUT = 10.0
DEFAULT_DNS = ("127.0.0.11",)
DEFAULT_DNS_OPTIONS = ("ndots:0",)
FILES_DIR = "files"     # the tmpfs in a bundle holding the task's secrets and configs
PAGE = 4096

_RRO_SUPPORT: dict[str, bool] = {}


class Runtime:
    """Containers run by runc (or crun), one bundle per task under `root`."""

    def __init__(self, root: str, images: ImageStore, *, volumes_dir: str | None = None, runc: str = "runc",
                 runc_root: str | None = None, cgroup_parent: str = "swarm", start_timeout: float = 30.0,
                 python: str = sys.executable, log_max_size: int = shim.LOG_MAX_SIZE,
                 log_max_file: int = shim.LOG_MAX_FILE, recursive_readonly: bool | None = None,
                 init_path: str = INIT_BINARY, init: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.images = images
        self.volumes_dir = os.path.abspath(volumes_dir or os.path.join(os.path.dirname(self.root), "volumes"))
        self.runc = runc
        self.runc_root = os.path.abspath(runc_root or os.path.join(self.root, ".runc"))
        self.cgroup_parent = cgroup_parent.strip("/")
        self.start_timeout = start_timeout
        self.python = python
        # Read-only binds made read-only all the way down by runc ("rro") or, where runc or the kernel
        # cannot, by prepare itself; None asks runc and the kernel (once per process).
        self.recursive_readonly = recursive_readonly
        self.init_path = init_path      # the init --init runs as PID 1 (Debian's tini, static: no libc needed)
        self.init = init                # for tasks whose spec leaves init unset (Docker's daemon --init)
        self.log_max_size, self.log_max_file = log_max_size, log_max_file   # per task, as Docker's `local` driver
        self.volumes = volumes.VolumeStore(self.volumes_dir, self.root)
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
        return [os.path.join(mnt, self.cgroup_parent, task_id) for mnt in mounts.cgroup_mounts()]

    # -- lifecycle ---------------------------------------------------------------------
    def prepare(self, task_id: str, container: ContainerSpec, limits: Resources, netns_path: str | None, *,
                hostname: str | None = None, dns: Sequence[str] = DEFAULT_DNS, dns_search: Sequence[str] = (),
                dns_options: Sequence[str] = DEFAULT_DNS_OPTIONS, hosts: Sequence[tuple[str, str]] = (),
                files: Sequence[tuple[FileReference, bytes, str]] = ()) -> None:
        """Write the task's bundle and mount its rootfs; a prepared, never started bundle is redone.
        `hostname`: the expanded --hostname (None: the task id's first 12 characters). `files`:
        the task's secrets and configs, on a tmpfs in the bundle (`_place_files`)."""
        ocispec.check_task_id(task_id)
        secret_files = tuple(files)     # `files` names the bundle's own files below
        ocispec.check_limits(limits, os.cpu_count() or 1)
        ocispec.check_process(container)
        ocispec.check_host_limits(container, *_host_limits())
        ocispec.check_mounts(container.mounts)
        for m in container.mounts:
            if m.type == "bind" and not os.path.exists(m.source):
                raise SpecError(f"The bind mount source {m.source} does not exist on this node.")
        if netns_path and not os.path.exists(netns_path):
            raise ContainerError(f"The network namespace {netns_path} does not exist.")
        image = self.images.resolve(container.image)
        hostname = hostname or task_id[:12]
        ocispec.check_hostname(hostname)
        stop_signal = ocispec.stop_signal(container, image)
        check = effective_healthcheck(container, image)
        init = container.init if container.init is not None else self.init
        if init and not os.path.isfile(self.init_path):
            raise SpecError(f"--init needs an init on this node, and {self.init_path} is missing "
                            "(install Debian's tini package).")
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
            lowers = [self.images.layer_path(d) for d in image.layers]
            meta = {"task_id": task_id, "image": container.image, "image_id": image.id, "lowerdirs": lowers,
                    "stop_signal": stop_signal,    # kept so that a restarted agent stops the task with it too
                    "log": self._log_settings(container),
                    "healthcheck": check.to_dict() if check else None,   # for a restarted agent's monitor too
                    "files": len(secret_files)}   # secrets and configs on the tmpfs FILES_DIR (gone after a reboot)
            atomic_write(os.path.join(bundle, "meta.json"), json.dumps(meta, indent=1).encode(), 0o644)
            mounts.mount_rootfs(bundle, lowers)
            self._populate_volumes(bundle, container)
            rootfs = os.path.join(bundle, "rootfs")
            try:
                user = users.resolve_user(container.user or image.user, container.groups,
                                          _read_in_rootfs(rootfs, "/etc/passwd"), _read_in_rootfs(rootfs, "/etc/group"))
            except ValueError as exc:
                raise SpecError(f"{'--user' if container.user else 'the image USER'}: {exc}.") from None
            config = ocispec.build_config(task_id=task_id, container=container, image=image, limits=limits,
                                          netns_path=netns_path, mount_sources=sources, files=files,
                                          hostname=hostname, cgroup_parent=self.cgroup_parent,
                                          nofile=_nofile_limit(), recursive_readonly=self._rro(), user=user,
                                          init_path=self.init_path if init else "")
            config["mounts"] += self._place_files(bundle, secret_files)
            _make_workdir(rootfs, config["process"]["cwd"])
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
        if not mounts.mounted(os.path.join(bundle, "rootfs")):
            meta = _read_json(os.path.join(bundle, "meta.json"))
            if meta.get("files") and not mounts.mounted(os.path.join(bundle, FILES_DIR)):
                # Secrets live in memory only: a node that restarted has lost them (the managers'
                # restart policy gives the slot a new task, which gets them again).
                raise ContainerError(f"The secrets and configs of task {task_id} were lost when the node "
                                     "restarted; prepare it again.")
            mounts.mount_rootfs(bundle, meta["lowerdirs"])  # after a reboot
        cmd = [self.python, os.path.abspath(shim.__file__), "--bundle", bundle, "--id", task_id,
               "--runc", self.runc, "--runc-root", self.runc_root, *self._shim_log_args(bundle)]
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
        """Read from the bundle and /proc; runs no `runc` (agents ask this of every container)."""
        bundle = self.bundle(task_id)
        if not os.path.exists(os.path.join(bundle, "config.json")):
            return ContainerState(MISSING)
        stopped = self._exit_state(bundle)
        if stopped is not None:
            return stopped
        if not os.path.exists(os.path.join(bundle, "shim.json")):
            return ContainerState(CREATED)
        pid = self._init_pid(task_id)
        if pid is not None:
            return ContainerState(RUNNING, pid=pid)
        if self._shim_alive(bundle):
            if not os.path.exists(os.path.join(bundle, "init.pid")):
                return ContainerState(CREATED)   # the shim is starting runc
            # the container ended and the shim is writing its exit code: give it a moment
            self._wait_stopped(task_id, 2.0)
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
        """Sleep until the watched process (see _open_watch) exits; spawns nothing."""
        exit_path = self._file(task_id, "exit.json")
        while not os.path.exists(exit_path):
            alive, fd = self._open_watch(task_id)
            if not alive:
                break
            if fd is None:
                await trio.sleep(FALLBACK_POLL)
                continue
            try:
                await trio.lowlevel.wait_readable(fd)
            finally:
                trio.lowlevel.notify_closing(fd)
                os.close(fd)
        # Nothing of the container runs any more, so state() does not block here.
        return self.state(task_id)

    def kill(self, task_id: str, signal: int) -> None:
        """Send `signal` to the container's init process."""
        res = self._runc("kill", task_id, str(int(signal)))
        if res.returncode != 0:
            msg = _runc_message(res)
            if "not running" in msg or "does not exist" in msg or "container not" in msg:
                raise ContainerError(f"Task {task_id} is not running.")
            raise ContainerError(f"Signalling task {task_id} failed: {msg}")

    def stop(self, task_id: str, grace: float) -> None:
        """The task's stop signal (--stop-signal, the image's STOPSIGNAL, else SIGTERM), then SIGKILL
        once `grace` seconds have passed; returns when the container stopped. A prepared container
        that was never started is left as it is. Blocks: from trio, run it in a worker thread or use
        stop_async."""
        if not self._needs_stop(task_id):
            return
        with contextlib.suppress(ContainerError):
            self.kill(task_id, self.stop_signal(task_id))
        if self._wait_stopped(task_id, max(grace, 0.0)):
            return
        with contextlib.suppress(ContainerError):
            self.kill(task_id, signals.SIGKILL)
        if not self._wait_stopped(task_id, KILL_TIMEOUT):
            raise ContainerError(f"Task {task_id} did not stop within {KILL_TIMEOUT:g} s of SIGKILL.")

    async def stop_async(self, task_id: str, grace: float) -> None:
        """stop() for trio callers: the waits are trio sleeps, so the caller can cancel them."""
        if not await trio.to_thread.run_sync(self._needs_stop, task_id):
            return
        with contextlib.suppress(ContainerError):
            await trio.to_thread.run_sync(self.kill, task_id, self.stop_signal(task_id))
        with trio.move_on_after(max(grace, 0.0)):
            await self._until_stopped(task_id)
            return
        with contextlib.suppress(ContainerError):
            await trio.to_thread.run_sync(self.kill, task_id, signals.SIGKILL)
        with trio.move_on_after(KILL_TIMEOUT):
            await self._until_stopped(task_id)
            return
        raise ContainerError(f"Task {task_id} did not stop within {KILL_TIMEOUT:g} s of SIGKILL.")

    def stop_signal(self, task_id: str) -> int:
        """The signal that asks the task's process to stop, as prepare decided it (meta.json)."""
        try:
            return int(_read_json(self._file(task_id, "meta.json")).get("stop_signal") or signals.SIGTERM)
        except (OSError, ValueError, TypeError, AttributeError):
            return signals.SIGTERM     # a bundle from before stop signals were kept

    def healthcheck(self, task_id: str) -> health.Check | None:
        """The effective healthcheck prepare kept in meta.json (None: none, or a bundle from before)."""
        try:
            return health.Check.from_dict(_read_json(self._file(task_id, "meta.json")).get("healthcheck"))
        except (OSError, ValueError, AttributeError):
            return None

    async def exec(self, task_id: str, argv: Sequence[str], timeout: float) -> ExecResult:
        """`runc exec` of `argv` as the container's process runs; killed (with its process group)
        past `timeout` seconds, or when the caller is cancelled. Output: stdout and stderr, cut."""
        if not argv:
            raise ContainerError("Nothing to run: the command is empty.")
        name = os.path.join(self.bundle(task_id), f"exec-{uuid.uuid4().hex[:12]}")
        await trio.to_thread.run_sync(self._write_exec_process, task_id, list(argv), name + ".json")
        try:
            return await runcexec.run(
                [self.runc, "--root", self.runc_root, "exec", "--process", name + ".json", "--pid-file",
                 name + ".pid", task_id], name + ".pid", timeout, f"{self.runc} exec in task {task_id}")
        finally:
            for path in (name + ".json", name + ".pid"):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _write_exec_process(self, task_id: str, argv: list[str], path: str) -> None:
        """The exec's process.json: the container's own process (from its config.json) with `argv`."""
        if self._init_pid(task_id) is None:
            raise ContainerError(f"Task {task_id} is not running.")
        try:
            process = _read_json(self._file(task_id, "config.json"))["process"]
            keep = ("user", "env", "cwd", "capabilities", "rlimits", "noNewPrivileges")
            doc = {**{k: process[k] for k in keep if k in process}, "terminal": False, "args": argv}
            atomic_write(path, json.dumps(doc).encode(), 0o600)
        except (OSError, ValueError, KeyError) as exc:   # the bundle went away meanwhile (removed)
            raise ContainerError(f"Cannot run a command in task {task_id}: {exc}.") from None

    def _needs_stop(self, task_id: str) -> bool:
        started = os.path.exists(self._file(task_id, "shim.json"))
        return started and self.state(task_id).status not in (STOPPED, MISSING)

    def _wait_stopped(self, task_id: str, timeout: float) -> bool:
        """_until_stopped, blocking, for at most `timeout` seconds; True when the container stopped."""
        exit_path = self._file(task_id, "exit.json")
        deadline = time.monotonic() + timeout
        while not os.path.exists(exit_path):
            alive, fd = self._open_watch(task_id)
            if not alive:
                return True
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    return False
                _wait_exit(fd, remaining)
            finally:
                if fd is not None:
                    os.close(fd)
        return True

    def remove(self, task_id: str) -> None:
        """Kill the container if needed and remove its runc state, mount, cgroups and bundle. Idempotent."""
        bundle = self.bundle(task_id)
        # While the shim lives, the container runs or is about to: kill it once runc knows it,
        # then sleep on the shim's pidfd until it has written the exit code and gone.
        deadline = time.monotonic() + KILL_TIMEOUT
        killed = False
        while os.path.isdir(bundle) and time.monotonic() < deadline:
            fd, alive = self._shim_pidfd(bundle)
            if not alive:
                break
            try:
                if not killed and os.path.isdir(os.path.join(self.runc_root, task_id)):
                    res = self._runc("kill", task_id, str(int(signals.SIGKILL)))
                    # "not running": it already stopped, the shim is only writing exit.json
                    killed = res.returncode == 0 or "not running" in _runc_message(res)
                # Until the kill took, retry it every 0.1 s (runc may still be creating the container).
                _wait_exit(fd, max(0.0, deadline - time.monotonic()) if killed else 0.1)
            finally:
                if fd is not None:
                    os.close(fd)
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

    def log_chunk(self, task_id: str, cursor: Cursor | None, *, tail: int | None = None, follow: bool = False,
                  budget: int = CHUNK_BYTES, since: str | None = None, until: str | None = None) -> Chunk:
        """About `budget` bytes of the task's log from `cursor` (None: start a read, at the
        oldest line or `tail` lines from the end; without follow it ends at what is written
        now). Blocking file I/O in bounded steps: call it in a worker thread."""
        bundle = self.bundle(task_id)
        if not os.path.exists(os.path.join(bundle, "config.json")):
            raise ContainerError(f"No such task {task_id}.")
        if self._log_settings_of(bundle) is None:
            raise ContainerError(logdriver.NO_READ)      # the none driver: nothing was kept
        if cursor is None:
            cursor = start_cursor(bundle, tail, follow, since)
        return read_chunk(bundle, cursor, budget, since=since, until_time=until)

    async def logs(self, task_id: str, tail: int | None = None, follow: bool = False) -> AsyncIterator[LogEntry]:
        """(timestamp, stream, line) entries; with follow, until the container stopped and all is read.
        Reads chunk by chunk in a worker thread, so a large log never blocks the event loop."""
        cursor: Cursor | None = None
        checked = time.monotonic()
        stopped = False
        while True:
            chunk = await trio.to_thread.run_sync(
                functools.partial(self.log_chunk, task_id, cursor, tail=tail, follow=follow))
            cursor = chunk.cursor
            for stamp, stream, line, _ in chunk.lines:
                yield LogEntry(stamp, stream, line)
            if not chunk.eof:
                continue
            if not follow or stopped:
                return
            # One more read after the container stopped: the shim writes its last lines before exiting.
            stopped = os.path.exists(self._file(task_id, "exit.json"))
            if not stopped and time.monotonic() - checked > 1.0:   # the shim may be gone without an exit file
                checked = time.monotonic()
                state = await trio.to_thread.run_sync(self.state, task_id)
                stopped = state.status in (STOPPED, MISSING)
            if not stopped:
                await trio.sleep(POLL)

    # -- helpers -----------------------------------------------------------------------
    def _place_files(self, bundle: str, files: Sequence[tuple[FileReference, bytes, str]]) -> list[dict]:
        """Write the task's secrets and configs on a tmpfs at bundle/FILES_DIR (never on the
        node's disk; unmounted with the bundle), one file each with its uid, gid and mode, the
        tmpfs then read-only; the config.json mounts that bind each file, read-only, at its
        target (a secret under /run/secrets), as Docker's daemon does."""
        if not files:
            return []
        where = os.path.join(bundle, FILES_DIR)
        os.mkdir(where, 0o700)
        pages = sum(-(-len(value) // PAGE) + 1 for _, value, _ in files)
        mounts.mount_tmpfs(where, (pages + 16) * PAGE, len(files) + 16)
        entries, targets = [], set()
        for index, (ref, value, kind) in enumerate(files):
            target = secrets.target_path(kind, ref.target)
            if target in targets:
                raise SpecError(f"Two secrets or configs have the same target {target}.")
            targets.add(target)
            try:
                uid, gid = int(ref.uid), int(ref.gid)
            except ValueError:
                raise SpecError(f"The {kind} {ref.name} has a uid or gid that is not a number.") from None
            path = os.path.join(where, str(index))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, value)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, ref.mode & 0o7777)
            finally:
                os.close(fd)
            entries.append({"destination": target, "type": "bind", "source": path,
                            "options": ["bind", "rprivate", "ro", "nosuid", "nodev", "noexec"]})
        mounts.remount_readonly(where)
        return entries

    def _mount_source(self, bundle: str, index: int, m: Mount) -> str:
        """The host path of a task's mount: the bind's source (its propagation checked as Docker
        does), or the volume's directory (created on first use, recorded as used by this bundle;
        an anonymous one lives and dies with the task)."""
        if m.type == "tmpfs":
            return "tmpfs"
        if m.type == "bind":
            path = m.source
            _check_propagation(path, m.bind_propagation)
        else:
            path = self.volumes.attach(bundle, m)[1]
        recursive = m.type != "bind" or m.bind_recursive in ("enabled", "readonly")
        if m.readonly and recursive and not self._rro():
            path = mounts.readonly_tree(bundle, index, path)
        return path

    def _populate_volumes(self, bundle: str, container: ContainerSpec) -> None:
        """Copy-up of the image's files into new volumes, once bundle/rootfs is mounted."""
        names = volumes.read_uses(bundle)     # one per volume mount, in order (a fresh bundle)
        rootfs = os.path.join(bundle, "rootfs")
        for m, name in zip((m for m in container.mounts if m.type == "volume"), names):
            if not m.volume_nocopy:
                self.volumes.populate(name, volumes.resolve_in_root(rootfs, m.target))

    def _log_settings(self, container: ContainerSpec) -> dict:
        """What the shim keeps of the task's output (bundle meta.json "log")."""
        driver = container.log_driver
        try:
            logdriver.check_log_driver(driver)
        except ValueError as exc:
            raise SpecError(f"Invalid log driver settings: {exc}.") from None
        keep = logdriver.rotation(driver, self.log_max_size, self.log_max_file)
        return {"driver": driver.name, "max_size": keep[0] if keep else 0, "max_file": keep[1] if keep else 0}

    def _log_settings_of(self, bundle: str) -> dict | None:
        """The bundle's log settings; None for a driver that keeps no log. A bundle of an older
        version has none recorded: the node's defaults."""
        try:
            log = _read_json(os.path.join(bundle, "meta.json")).get("log")
        except (OSError, ValueError):
            log = None
        if not isinstance(log, dict):
            return {"driver": "json-file", "max_size": self.log_max_size, "max_file": self.log_max_file}
        return None if log.get("driver") == "none" else log

    def _shim_log_args(self, bundle: str) -> list[str]:
        config = os.path.join(bundle, "config.json")
        tty = ["--tty"] if os.path.exists(config) and _read_json(config)["process"].get("terminal") else []
        log = self._log_settings_of(bundle)
        if log is None:
            return ["--no-log", *tty]
        return ["--log-max-size", str(int(log["max_size"])), "--log-max-file", str(int(log["max_file"])), *tty]

    def _rro(self) -> bool:
        if self.recursive_readonly is None:
            self.recursive_readonly = _runc_has_rro(self.runc)
        return self.recursive_readonly

    def _teardown_bundle(self, task_id: str) -> None:
        bundle = self.bundle(task_id)
        if not mounts.unmount_all(bundle):
            raise ContainerError(f"Cannot unmount the root filesystem of task {task_id}; it is still in use.")
        for path in self.cgroup_dirs(task_id):
            mounts.remove_cgroup(path)
        used = volumes.read_uses(bundle)
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.rmtree(os.path.join(self.runc_root, task_id), ignore_errors=True)
        # The bundle no longer counts as a user: its anonymous volumes go. A failure here must not
        # keep the task: what is left is an unused volume that `volume prune` removes.
        with contextlib.suppress(ContainerError, OSError):
            self.volumes.release(used)

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
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _shim_pidfd(self, bundle: str) -> tuple[int | None, bool]:
        """(pidfd of the shim or None, whether the shim runs). Its identity is checked after the
        pidfd is opened: from then on the fd pins that very process, whatever happens to the pid."""
        try:
            pid = int(_read_json(os.path.join(bundle, "shim.json"))["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, False
        fd = _pidfd_open(pid)
        if self._shim_alive(bundle):
            return fd, True
        if fd is not None:
            os.close(fd)
        return None, False

    def _init_pid(self, task_id: str) -> int | None:
        """The container's init process if it still runs (not a zombie). init.pid is the only record
        of it, so a recycled pid is told apart by the container's own cgroup."""
        try:
            with open(self._file(task_id, "init.pid")) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cgroup") as f:
                cgroups = f.read()
        except (OSError, ValueError):
            return None
        if stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X"):
            return None
        mine = f"/{self.cgroup_parent}/{task_id}"
        for line in cgroups.splitlines():
            path = line.split(":", 2)[-1]
            if path == mine or path.endswith(mine) or mine + "/" in path:
                return pid
        return None

    def _open_watch(self, task_id: str) -> tuple[bool, int | None]:
        """(alive, pidfd): whether the process whose exit ends the container's life still runs, and
        a pidfd that turns readable when it exits (None where pidfd_open is missing). That process
        is the shim (it writes exit.json, then exits) or, once the shim died, the container's init."""
        fd, alive = self._shim_pidfd(self.bundle(task_id))
        if alive:
            return True, fd
        pid = self._init_pid(task_id)
        if pid is None:
            return False, None
        fd = _pidfd_open(pid)
        if self._init_pid(task_id) == pid:   # checked after opening, as for the shim
            return True, fd
        if fd is not None:
            os.close(fd)
        return False, None

    def _stop_shim(self, bundle: str) -> None:
        """The shim exits when the container's pipes close; kill it only if it lingers."""
        fd, alive = self._shim_pidfd(bundle)
        if alive:
            try:
                _wait_exit(fd, 2.0)
            finally:
                if fd is not None:
                    os.close(fd)
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


def effective_healthcheck(container: ContainerSpec, image: Image) -> health.Check | None:
    """The task's healthcheck: the service's over the image's HEALTHCHECK (health.effective)."""
    hc = image.healthcheck
    image_config = health.image_config(hc.test, hc.interval, hc.timeout, hc.start_period, hc.start_interval,
                                       hc.retries) if hc else None
    try:
        return health.effective(container.healthcheck, image_config)
    except ValueError as exc:
        raise SpecError(f"Invalid healthcheck: {exc}.") from None


def _runc_has_rro(runc: str) -> bool:
    """Whether `runc` takes the recursive read-only mount option "rro": runc 1.1 or later, on a
    kernel with mount_setattr (5.12). Asked once per runc and process: one `runc --version`."""
    if runc not in _RRO_SUPPORT:
        try:
            out = subprocess.run([runc, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        m = re.match(r"runc version (\d+)\.(\d+)", out)
        _RRO_SUPPORT[runc] = bool(m) and (int(m[1]), int(m[2])) >= (1, 1) and mounts.kernel_has_mount_setattr()
    return _RRO_SUPPORT[runc]


def _check_propagation(source: str, propagation: str) -> None:
    """Docker's ensureShared / ensureSharedOrSlave: a shared bind needs a shared source mount,
    a slave one a shared or slave source mount (else no event could ever propagate)."""
    if propagation not in ("shared", "rshared", "slave", "rslave"):
        return
    point, tags = _mount_of(os.path.realpath(source))
    if propagation in ("shared", "rshared") and "shared" not in tags:
        raise SpecError(f"path {source} is mounted on {point} but it is not a shared mount.")
    if "shared" not in tags and "master" not in tags:
        raise SpecError(f"path {source} is mounted on {point} but it is not a shared or slave mount.")


def _mount_of(path: str) -> tuple[str, set[str]]:
    """The mount point holding `path` (the longest one above it) and its propagation tags
    ("shared", "master"), from /proc/self/mountinfo's optional fields."""
    best, tags = "/", set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if path == point or path.startswith(point.rstrip("/") + "/"):
                if len(point) >= len(best):   # a later mount on the same point hides the earlier
                    best = point
                    tags = {opt.split(":")[0] for opt in fields[6:fields.index("-")]}
    return best, tags


def _pidfd_open(pid: int) -> int | None:
    """A pidfd of `pid`, or None when the process is gone or the kernel (< 5.3) has no pidfds."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _wait_exit(pidfd: int | None, timeout: float) -> None:
    """Block until the pidfd's process exits or `timeout` passes; without a pidfd, sleep a little
    (the caller checks /proc again)."""
    if pidfd is None:
        time.sleep(min(FALLBACK_POLL, timeout))
        return
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.poll(max(0, int(timeout * 1000)))


def _nofile_limit() -> int:
    """runc can only lower the RLIMIT_NOFILE the container inherits from us (it may lack
    CAP_SYS_RESOURCE, as on this project's machines): ask for at most our hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ocispec.NOFILE if hard == resource.RLIM_INFINITY else min(ocispec.NOFILE, hard)


_CAP_SYS_RESOURCE = 24
_RLIMITS = {"core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU, "data": resource.RLIMIT_DATA,
            "fsize": resource.RLIMIT_FSIZE, "locks": 10, "memlock": resource.RLIMIT_MEMLOCK,
            "msgqueue": resource.RLIMIT_MSGQUEUE, "nice": resource.RLIMIT_NICE, "nofile": resource.RLIMIT_NOFILE,
            "nproc": resource.RLIMIT_NPROC, "rss": resource.RLIMIT_RSS, "rtprio": resource.RLIMIT_RTPRIO,
            "rttime": resource.RLIMIT_RTTIME, "sigpending": resource.RLIMIT_SIGPENDING,
            "stack": resource.RLIMIT_STACK}   # RLIMIT_LOCKS (10) has no name in Python's resource module


def _host_limits() -> tuple[dict[str, int], int, bool]:
    """(our hard limit per ulimit name (-1 = unlimited), our oom_score_adj, whether we hold
    CAP_SYS_RESOURCE): runc, our child, can only raise them with that capability."""
    hard = {}
    for name, number in _RLIMITS.items():
        limit = resource.getrlimit(number)[1]
        hard[name] = -1 if limit == resource.RLIM_INFINITY else limit
    try:
        with open("/proc/self/oom_score_adj") as f:
            oom = int(f.read().strip())
        with open("/proc/self/status") as f:
            cap_eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, ValueError, StopIteration):
        return hard, 0, True       # cannot tell: let runc decide
    return hard, oom, bool(cap_eff >> _CAP_SYS_RESOURCE & 1)


def _read_in_rootfs(rootfs: str, path: str) -> str | None:
    """A small text file of the image (/etc/passwd), or None when it has none."""
    try:
        fd = os.open(volumes.resolve_in_root(rootfs, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(MAX_ETC_FILE + 1)
    if len(data) > MAX_ETC_FILE:
        raise SpecError(f"The image's {path} is larger than {MAX_ETC_FILE >> 20} MiB.")
    return data.decode(errors="replace")


def _make_workdir(rootfs: str, cwd: str) -> None:
    """Create the working directory in the rootfs when the image lacks it, as Docker does (owned by
    root, mode 755). A path that exists as something else than a directory is refused."""
    path = volumes.resolve_in_root(rootfs, cwd)
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SpecError(f"The working directory {cwd} is not a directory in the image.") from None


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)

"""The runc backend: one OCI bundle per task under STATE_DIR/tasks.

How this works. `prepare` resolves the image, writes the bundle
(tasks/<id>/: config.json, resolv.conf, hosts, hostname, upper/ and work/)
and mounts rootfs/ as an overlay of the image's layers. `start` runs conmon,
the container monitor (runcmon.py), which creates the container with the OCI
runtime (crun when installed, else runc: runcmon.oci_runtime), holds its
stdout/stderr and writes them to container.log; once conmon reports the
container's pid, `start` lets it run: with runc by releasing its exec.fifo
itself (runcmon.release: what `runc start` does, without a second runc), with
crun by running `crun start`. The bundle's files are written unsynced: a
bundle does not outlive a crash of its machine. Everything else is read back
from files in the bundle and from /proc, so a new Runtime object (a restarted
agent) adopts what an earlier one started:

    monitor.json {pid, start_time} of conmon (start time guards against pid reuse)
    init.pid     the container's init process, written by the runtime
    exit, oom    the exit status and an OOM kill, written by conmon at the end;
                 exit.json {exit_code, error, finished_at} for a start that failed
    container.log, runc.log, monitor.log, meta.json (task id, image id, layers,
    stop signal, log settings, the effective healthcheck)

`wait` also keeps the task's log within its max-size and max-file (conmon
only truncates): it rotates container.log when it is full (runcmon.rotation_step,
logfile.rotate), so the agent, which waits on every running task, rotates them all.

`exec` runs a process in the running container (healthchecks) with `runc
exec`, from a process.json made of the container's own process (user,
environment, working directory, capabilities) and the given argv; runc puts
that process in a session of its own, so a check past its timeout is killed
with its process group (what its shell started too).

Names are predictable so that anything left over can be found: runc state
under tasks/.runc/<id>, cgroups /sys/fs/cgroup/<controller>/<cgroup_parent>/<id>
(absolute, so they do not depend on the agent's own cgroup), and the only host
mounts are tasks/<id>/rootfs and, for a task with secrets or configs, the tmpfs
tasks/<id>/files that holds them (mounts and cgroups: swarm/runtime/mounts.py;
where each mount comes from, volumes and the secrets' tmpfs: runcfiles.py; what prepare
reads of the node and the image: runcprep.py; the log settings: runclog.py).

Exits are watched, not polled: conmon writes `exit` and then exits, so
`wait` opens a pidfd of conmon (pidfd_open; the start time is checked after
opening, against pid reuse) and sleeps until it is readable. If conmon died
early, the container's init (init.pid, checked by its cgroup) is watched the
same way (runcwatch.py). Only where pidfd_open is missing do waits fall back to
cheap /proc and stat checks every FALLBACK_POLL seconds. No wait runs `runc`: at hundreds
of containers a `runc state` per container per second starved the node.

Methods are synchronous (from trio, call them in a worker thread) except
`wait`, `logs`, `exec` and `stop_async`, which wait in trio. `stop` blocks for up to
its grace period + 10 s.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal as signals
import subprocess
import time
import uuid
from typing import AsyncIterator, Sequence

import trio

from swarm.api import health, logdriver
from swarm.runtime import logfile, mounts, ocispec, runcexec, runcfiles, runclog, runcmon, runcprep, runcwatch, users, volumes
from swarm.runtime.base import CREATED, MISSING, RUNNING, STOPPED, ContainerState, ExecResult, LogEntry
from swarm.runtime.errors import ContainerError, SpecError
from swarm.runtime.images import ImageStore
from swarm.runtime.logfile import CHUNK_BYTES, Chunk, Cursor, read_chunk, start_cursor
from swarm.api.spec import ContainerSpec, FileReference, Resources

_log = logging.getLogger(__name__)
POLL = 0.05
STAGE_LOG = "start path %s %s %.6f"   # DEBUG timing of a task's start (bench/startpath.py reads them)
INIT_BINARY = "/usr/bin/tini-static"
KILL_TIMEOUT = 10.0
DEFAULT_DNS = ("127.0.0.11",)
DEFAULT_DNS_OPTIONS = ("ndots:0",)


class Runtime:
    """Containers run by runc (or crun), one bundle per task under `root`."""

    def __init__(self, root: str, images: ImageStore, *, volumes_dir: str | None = None, runc: str | None = None,
                 runc_root: str | None = None, cgroup_parent: str = "swarm", start_timeout: float = 30.0,
                 conmon: str = runcmon.CONMON, log_max_size: int = runclog.LOG_MAX_SIZE,
                 log_max_file: int = runclog.LOG_MAX_FILE, recursive_readonly: bool | None = None,
                 init_path: str = INIT_BINARY, init: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.images = images
        self.volumes_dir = os.path.abspath(volumes_dir or os.path.join(os.path.dirname(self.root), "volumes"))
        self.runc = runc or runcmon.oci_runtime()     # the OCI runtime: crun or runc (SWARM_OCI_RUNTIME)
        self.runc_root = os.path.abspath(runc_root or os.path.join(self.root, ".runc"))
        self.cgroup_parent = cgroup_parent.strip("/")
        self.start_timeout = start_timeout
        self.conmon = shutil.which(conmon) or conmon
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
        ocispec.check_host_limits(container, *runcprep.host_limits())
        ocispec.check_mounts(container.mounts)
        for m in container.mounts:
            if m.type == "bind" and not os.path.exists(m.source):
                raise SpecError(f"The bind mount source {m.source} does not exist on this node.")
        if netns_path and not os.path.exists(netns_path):
            raise ContainerError(f"The network namespace {netns_path} does not exist.")
        _log.debug(STAGE_LOG, task_id, "prepare_begin", time.time())
        image = self.images.resolve(container.image)
        hostname = hostname or task_id[:12]
        ocispec.check_hostname(hostname)
        stop_signal = ocispec.stop_signal(container, image)
        check = runcprep.effective_healthcheck(container, image)
        init = container.init if container.init is not None else self.init
        if init and not os.path.isfile(self.init_path):
            raise SpecError(f"--init needs an init on this node, and {self.init_path} is missing "
                            "(install Debian's tini package).")
        bundle = self.bundle(task_id)
        if os.path.isdir(bundle):
            if runcmon.started(bundle):
                raise ContainerError(f"Task {task_id} was already started; remove it before preparing it again.")
            self.remove(task_id)
        os.makedirs(bundle, mode=0o711)
        try:
            for d in ("rootfs", "upper", "work"):
                os.mkdir(os.path.join(bundle, d), 0o755)
            files = ocispec.BundleFiles(*(os.path.join(bundle, n) for n in ("resolv.conf", "hosts", "hostname")))
            _write_new(files.resolv_conf, ocispec.resolv_conf_text(dns, dns_search, dns_options).encode(), 0o644)
            _write_new(files.hosts, ocispec.hosts_text(hostname, hosts).encode(), 0o644)
            _write_new(files.hostname, f"{hostname}\n".encode(), 0o644)
            sources = [runcfiles.mount_source(self.volumes, bundle, i, m, self._rro)
                       for i, m in enumerate(container.mounts)]
            lowers = [self.images.layer_path(d) for d in image.layers]
            meta = {"task_id": task_id, "image": container.image, "image_id": image.id, "lowerdirs": lowers,
                    "stop_signal": stop_signal,    # kept so that a restarted agent stops the task with it too
                    "log": runclog.log_settings(container, self.log_max_size, self.log_max_file),
                    "healthcheck": check.to_dict() if check else None,   # for a restarted agent's monitor too
                    "files": len(secret_files)}   # secrets and configs on the tmpfs runcfiles.FILES_DIR (gone after a reboot)
            _write_new(os.path.join(bundle, "meta.json"), json.dumps(meta, indent=1).encode(), 0o644)
            _log.debug(STAGE_LOG, task_id, "bundle_files", time.time())
            mounts.mount_rootfs(bundle, lowers)
            _log.debug(STAGE_LOG, task_id, "rootfs_mounted", time.time())
            runcfiles.populate_volumes(self.volumes, bundle, container)
            rootfs = os.path.join(bundle, "rootfs")
            try:
                user = users.resolve_user(container.user or image.user, container.groups,
                                          runcprep.read_in_rootfs(rootfs, "/etc/passwd"),
                                          runcprep.read_in_rootfs(rootfs, "/etc/group"))
            except ValueError as exc:
                raise SpecError(f"{'--user' if container.user else 'the image USER'}: {exc}.") from None
            config = ocispec.build_config(task_id=task_id, container=container, image=image, limits=limits,
                                          netns_path=netns_path, mount_sources=sources, files=files,
                                          hostname=hostname, cgroup_parent=self.cgroup_parent,
                                          nofile=runcprep.nofile_limit(), recursive_readonly=self._rro(), user=user,
                                          init_path=self.init_path if init else "")
            config["mounts"] += runcfiles.place_files(bundle, secret_files)
            runcprep.make_workdir(rootfs, config["process"]["cwd"])
            _write_new(os.path.join(bundle, "config.json"), json.dumps(config, indent=1).encode(), 0o644)
            _log.debug(STAGE_LOG, task_id, "config_written", time.time())
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
        if runcmon.started(bundle):
            raise ContainerError(f"Task {task_id} was already started.")
        if not mounts.mounted(os.path.join(bundle, "rootfs")):
            meta = runcwatch.read_json(os.path.join(bundle, "meta.json"))
            if meta.get("files") and not mounts.mounted(os.path.join(bundle, runcfiles.FILES_DIR)):
                # Secrets live in memory only: a node that restarted has lost them (the managers'
                # restart policy gives the slot a new task, which gets them again).
                raise ContainerError(f"The secrets and configs of task {task_id} were lost when the node "
                                     "restarted; prepare it again.")
            mounts.mount_rootfs(bundle, meta["lowerdirs"])  # after a reboot
        log = runclog.log_settings_of(bundle, self.log_max_size, self.log_max_file)
        argv = runcmon.monitor_argv(self.conmon, self.runc, self.runc_root, bundle, task_id, log,
                                    runclog.has_tty(bundle))
        try:
            _log.debug(STAGE_LOG, task_id, "start_begin", time.time())
            pid = runcmon.spawn(argv, bundle, self.start_timeout)
            _log.debug(STAGE_LOG, task_id, "created", time.time())
            if not self._release(task_id, pid):
                res = self._runc("start", task_id)
                if res.returncode != 0:
                    raise runcmon.StartFailed(_runc_message(res))
        except runcmon.StartFailed as exc:
            error = runcmon.runtime_error(os.path.join(bundle, "runc.log")) or str(exc)
            runcmon.write_json(os.path.join(bundle, runcmon.FAILED),
                               {"exit_code": runcmon.start_error_code(error), "error": error,
                                "finished_at": time.time()})
            raise ContainerError(_start_failure(task_id, error)) from None

    def _release(self, task_id: str, pid: int) -> bool:
        """runc's start without running runc (runcmon.release); False: run the runtime's own start
        (crun, whose start works otherwise, or a runc that keeps no exec.fifo)."""
        if os.path.basename(self.runc) != "runc":
            return False
        return runcmon.release(os.path.join(self.runc_root, task_id), pid, self.start_timeout)

    def state(self, task_id: str) -> ContainerState:
        """Read from the bundle and /proc; runs no `runc` (agents ask this of every container)."""
        bundle = self.bundle(task_id)
        if not os.path.exists(os.path.join(bundle, "config.json")):
            return ContainerState(MISSING)
        stopped = runcwatch.exit_state(bundle)
        if stopped is not None:
            return stopped
        if not runcmon.started(bundle):
            return ContainerState(CREATED)
        pid = self._init_pid(task_id)
        if pid is not None:
            return ContainerState(RUNNING, pid=pid)
        if runcwatch.monitor_alive(bundle):
            if not os.path.exists(os.path.join(bundle, "init.pid")):
                return ContainerState(CREATED)   # conmon is creating the container
            # the container ended and conmon is writing its exit code: give it a moment
            self._wait_stopped(task_id, 2.0)
            stopped = runcwatch.exit_state(bundle)
            if stopped is not None:
                return stopped
        return ContainerState(STOPPED, error=f"The container monitor of task {task_id} is gone; "
                                            "the exit code is unknown.")

    async def wait(self, task_id: str) -> int | None:
        """Until the container stops; its exit code (None when it could not be known)."""
        bundle = self.bundle(task_id)
        if not os.path.exists(os.path.join(bundle, "config.json")):
            raise ContainerError(f"No such task {task_id}.")
        if not runcmon.started(bundle):
            raise ContainerError(f"Task {task_id} has not been started.")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_log, task_id)
            state = await self._until_stopped(task_id)
            nursery.cancel_scope.cancel()
        # What the task wrote since the last check (all of it, for a task quicker than the first).
        await trio.to_thread.run_sync(self._rotate_if_full, task_id)
        return state.exit_code

    def _rotate_if_full(self, task_id: str) -> None:
        """Rotate a stopped task's log once if it is past max-size (no writer to reopen)."""
        bundle = self.bundle(task_id)
        log = runclog.log_settings_of(bundle, self.log_max_size, self.log_max_file)
        try:
            full = log is not None and os.stat(os.path.join(bundle, logfile.LOG_NAME)).st_size > log["max_size"]
        except OSError:
            return
        if full and log is not None:
            logfile.rotate(bundle, int(log["max_file"]), None)

    async def _keep_log(self, task_id: str) -> None:
        """Rotate the task's log by its max-size and max-file while it runs (runcmon.rotation_step:
        a stat a second for a quiet task, more often the faster it writes)."""
        bundle = self.bundle(task_id)
        log = await trio.to_thread.run_sync(runclog.log_settings_of, bundle, self.log_max_size, self.log_max_file)
        if log is None or os.path.exists(os.path.join(bundle, runcmon.LEGACY_MONITOR)):
            return       # no log, or a task of an earlier version whose Python shim rotates its own
        max_size, max_file = int(log["max_size"]), int(log["max_file"])
        path = os.path.join(bundle, logfile.LOG_NAME)
        reopen = functools.partial(runcmon.reopen_log, bundle)
        last: tuple[int, float] | None = None
        rate = lag = delay = 0.0
        while True:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                size = 0
            now = time.monotonic()
            if last is not None and now > last[1]:
                # The newest growth, or the last rate halved: a burst is believed at once, a lull slowly.
                rate = max((size - last[0]) / (now - last[1]), rate / 2)
            rotate, delay = runcmon.rotation_step(size, max_size, rate, lag, delay)
            started = time.monotonic()
            if rotate:
                await trio.to_thread.run_sync(logfile.rotate, bundle, max_file, reopen)
                size = 0
            last = (size, time.monotonic())
            await trio.sleep(delay)
            # How late this round acted (a rotation's own time, a late wake-up), remembered for a while.
            lag = max(time.monotonic() - started - delay, lag * 0.9)

    def _stopped(self, task_id: str) -> bool:
        return runcmon.exit_record(self.bundle(task_id)) is not None

    async def _until_stopped(self, task_id: str) -> ContainerState:
        """Sleep until the watched process (see _open_watch) exits; spawns nothing."""
        while not self._stopped(task_id):
            alive, fd = self._open_watch(task_id)
            if not alive:
                break
            if fd is None:
                await trio.sleep(runcwatch.FALLBACK_POLL)
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
            return int(runcwatch.read_json(self._file(task_id, "meta.json")).get("stop_signal") or signals.SIGTERM)
        except (OSError, ValueError, TypeError, AttributeError):
            return signals.SIGTERM     # a bundle from before stop signals were kept

    def healthcheck(self, task_id: str) -> health.Check | None:
        """The effective healthcheck prepare kept in meta.json (None: none, or a bundle from before)."""
        try:
            return health.Check.from_dict(runcwatch.read_json(self._file(task_id, "meta.json")).get("healthcheck"))
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
            process = runcwatch.read_json(self._file(task_id, "config.json"))["process"]
            keep = ("user", "env", "cwd", "capabilities", "rlimits", "noNewPrivileges")
            doc = {**{k: process[k] for k in keep if k in process}, "terminal": False, "args": argv}
            _write_new(path, json.dumps(doc).encode(), 0o600)
        except (OSError, ValueError, KeyError) as exc:   # the bundle went away meanwhile (removed)
            raise ContainerError(f"Cannot run a command in task {task_id}: {exc}.") from None

    def _needs_stop(self, task_id: str) -> bool:
        started = runcmon.started(self.bundle(task_id))
        return started and self.state(task_id).status not in (STOPPED, MISSING)

    def _wait_stopped(self, task_id: str, timeout: float) -> bool:
        """_until_stopped, blocking, for at most `timeout` seconds; True when the container stopped."""
        deadline = time.monotonic() + timeout
        while not self._stopped(task_id):
            alive, fd = self._open_watch(task_id)
            if not alive:
                return True
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    return False
                runcwatch.wait_exit(fd, remaining)
            finally:
                if fd is not None:
                    os.close(fd)
        return True

    def remove(self, task_id: str) -> None:
        """Kill the container if needed and remove its runc state, mount, cgroups and bundle. Idempotent."""
        bundle = self.bundle(task_id)
        # While conmon lives, the container runs or is about to: kill it once runc knows it,
        # then sleep on conmon's pidfd until it has written the exit code and gone.
        deadline = time.monotonic() + KILL_TIMEOUT
        killed = False
        while os.path.isdir(bundle) and time.monotonic() < deadline:
            fd, alive = runcwatch.monitor_pidfd(bundle)
            if not alive:
                break
            try:
                if not killed and os.path.isdir(os.path.join(self.runc_root, task_id)):
                    res = self._runc("kill", task_id, str(int(signals.SIGKILL)))
                    # "not running": it already stopped, conmon is only writing its exit file
                    killed = res.returncode == 0 or "not running" in _runc_message(res)
                # Until the kill took, retry it every 0.1 s (runc may still be creating the container).
                runcwatch.wait_exit(fd, max(0.0, deadline - time.monotonic()) if killed else 0.1)
            finally:
                if fd is not None:
                    os.close(fd)
        if self._runc_state(task_id) is not None:   # conmon is gone, runc's record may not be
            res = self._runc("delete", "--force", task_id)
            if res.returncode != 0 and "does not exist" not in _runc_message(res):
                raise ContainerError(f"Removing task {task_id} failed: {_runc_message(res)}")
        if os.path.isdir(bundle):
            runcwatch.stop_monitor(bundle)
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
        if runclog.log_settings_of(bundle, self.log_max_size, self.log_max_file) is None:
            raise ContainerError(logdriver.NO_READ)      # the none driver: nothing was kept
        # Once the container stopped, conmon has written all (a last line without a newline stays a P entry).
        final = self._stopped(task_id)
        if cursor is None:
            cursor = start_cursor(bundle, tail, follow, since, final)
        return read_chunk(bundle, cursor, budget, since=since, until_time=until, final=final)

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
            # One more read after the container stopped: conmon writes its last lines before exiting.
            stopped = self._stopped(task_id)
            if not stopped and time.monotonic() - checked > 1.0:   # conmon may be gone without an exit file
                checked = time.monotonic()
                state = await trio.to_thread.run_sync(self.state, task_id)
                stopped = state.status in (STOPPED, MISSING)
            if not stopped:
                await trio.sleep(POLL)

    # -- helpers -----------------------------------------------------------------------
    def _rro(self) -> bool:
        if self.recursive_readonly is None:
            self.recursive_readonly = runcprep.runc_has_rro(self.runc)
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

    def _cgroup(self, task_id: str) -> str:
        """The container's cgroup below a hierarchy's root, as /proc/<pid>/cgroup names it."""
        return f"/{self.cgroup_parent}/{task_id}"

    def _init_pid(self, task_id: str) -> int | None:
        """The container's init process if it still runs (runcwatch.init_pid)."""
        return runcwatch.init_pid(self.bundle(task_id), self._cgroup(task_id))

    def _open_watch(self, task_id: str) -> tuple[bool, int | None]:
        """(alive, pidfd) of the process whose exit ends the container's life (runcwatch.open_watch)."""
        return runcwatch.open_watch(self.bundle(task_id), self._cgroup(task_id))

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


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Write a new file of a bundle, unsynced. A bundle never outlives the machine's uptime in
    use: after a crash its containers are gone, a task that was not started is prepared again
    (the agent removes a bundle it does not re-adopt) and one that was is found stopped, so
    an fsync of each file (ten per task: 35 ms of a prepare on this machine's disk) buys nothing.
    config.json is complete before the runtime reads it: the write returns after the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)     # whatever the umask says
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


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

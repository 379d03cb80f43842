"""Small helpers several integration test files share."""
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

from swarm.rpc.messages import RPCError
from swarm.runtime import runcmon
from swarm.runtime.images import ImageStore
from swarm.runtime.mounts import unmount_all
from swarm.runtime.runc import Runtime


def create_service(api, params: dict) -> dict:
    """service.create through a daemon's API (a `LocalDaemon`), once the managers know the
    nodes' imported image (a heartbeat reports it; the first create may come before it)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return api.call("service.create", params)
        except RPCError as exc:
            if "not found on any node" not in exc.message or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """A temporary state directory; whatever a failed test left mounted in it goes with it."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        unmount_all(path)
        shutil.rmtree(path, ignore_errors=True)


def kill_monitor(rt: Runtime, task_id: str) -> None:
    """SIGKILL a task's container monitor (conmon), as a crash would."""
    try:
        os.kill(int(runcmon.monitor_record(rt.bundle(task_id))["pid"]), signal.SIGKILL)
    except (OSError, ValueError, KeyError, TypeError):
        pass


@contextlib.contextmanager
def runc_runtime(state_dir: str, image_tar: str, ref: str) -> Iterator[Runtime]:
    """A real runc Runtime in `state_dir` holding the image `image_tar` as `ref`, in a cgroup
    parent of its own; every container and cgroup it made is removed afterwards."""
    store = ImageStore(os.path.join(state_dir, "images"))
    store.import_rootfs(image_tar, ref)
    rt = Runtime(os.path.join(state_dir, "tasks"), store, cgroup_parent=f"swarm-test-{uuid.uuid4().hex[:8]}")
    try:
        yield rt
    finally:
        for task_id in rt.list():
            try:
                rt.remove(task_id)
            except Exception:
                kill_monitor(rt, task_id)
                subprocess.run(["runc", "--root", rt.runc_root, "delete", "--force", task_id], capture_output=True)
        for mnt in rt.cgroup_dirs("x"):
            parent = os.path.dirname(mnt)
            if os.path.isdir(parent):
                for child in os.listdir(parent):
                    if os.path.isdir(os.path.join(parent, child)):
                        os.rmdir(os.path.join(parent, child))
                os.rmdir(parent)

"""config.json decisions for a task's process: Docker's rules for the command, user, workdir,
init, capabilities, sysctls, ulimits, pids, OOM score, read-only root and the stop signal."""
from __future__ import annotations

import dataclasses

import pytest

from swarm.api.options import ALL_CAPABILITIES, DEFAULT_CAPABILITIES
from swarm.api.spec import ContainerSpec, Resources, Ulimit
from swarm.runtime import ocispec
from swarm.runtime.errors import SpecError
from swarm.runtime.images import Image
from swarm.runtime.users import ExecUser

IMAGE = Image(id="i" * 64, layers=("l",), entrypoint=("/entry",), cmd=("serve", "--port", "80"),
              env=("PATH=/usr/bin:/bin", "A=image"), working_dir="/srv", user="app", stop_signal="SIGQUIT")
BARE = Image(id="b" * 64, layers=("l",), cmd=("sh",))
FILES = ocispec.BundleFiles("/b/resolv.conf", "/b/hosts", "/b/hostname")


def config(container: ContainerSpec, image: Image = IMAGE, **kw) -> dict:
    args = dict(task_id="t1", container=container, image=image, limits=Resources(), netns_path=None,
                mount_sources=[], files=FILES, hostname="web-1", cgroup_parent="swarm")
    return ocispec.build_config(**(args | kw))


def spec(**kw) -> ContainerSpec:
    return ContainerSpec(image="app:1", **kw)


# -- the command -----------------------------------------------------------------------------
@pytest.mark.parametrize(("entrypoint", "command", "args"), [
    ((), (), ["/entry", "serve", "--port", "80"]),                 # the image's ENTRYPOINT + CMD
    ((), ("run", "-v"), ["/entry", "run", "-v"]),                  # the command replaces CMD only
    (("/bin/sh", "-c"), (), ["/bin/sh", "-c"]),                    # --entrypoint drops CMD
    (("/bin/sh", "-c"), ("echo hi",), ["/bin/sh", "-c", "echo hi"]),
])
def test_entrypoint_and_command_as_docker(entrypoint, command, args) -> None:
    assert config(spec(entrypoint=entrypoint, command=command))["process"]["args"] == args


def test_no_command_at_all_is_refused() -> None:
    with pytest.raises(SpecError, match="no default command"):
        config(spec(), image=dataclasses.replace(BARE, cmd=()))


def test_init_runs_docker_init_with_the_command_after_dashes() -> None:
    cfg = config(spec(command=("run",)), init_path="/usr/bin/tini-static")
    assert cfg["process"]["args"] == ["/sbin/docker-init", "--", "/entry", "run"]
    mount = next(m for m in cfg["mounts"] if m["destination"] == "/sbin/docker-init")
    assert mount["source"] == "/usr/bin/tini-static" and "ro" in mount["options"]
    assert not any(m["destination"] == "/sbin/docker-init" for m in config(spec())["mounts"])


# -- user, environment, workdir -----------------------------------------------------------------
def test_user_and_groups_go_to_process_user() -> None:
    cfg = config(spec(), user=ExecUser(1000, 50, (50, 100), "/home/app"))
    assert cfg["process"]["user"] == {"uid": 1000, "gid": 50, "additionalGids": [50, 100]}
    assert "HOME=/home/app" in cfg["process"]["env"]


def test_environment_order_and_home() -> None:
    env = config(spec(env=("A=task", "B=2")), user=ExecUser(0, 0, (0,), "/root"))["process"]["env"]
    assert env == ["PATH=/usr/bin:/bin", "HOSTNAME=web-1", "A=task", "B=2", "HOME=/root"]
    # HOME given by the task (or the image) wins over passwd.
    env = config(spec(env=("HOME=/data",)), user=ExecUser(0, 0, (0,), "/root"))["process"]["env"]
    assert "HOME=/data" in env and "HOME=/root" not in env


@pytest.mark.parametrize(("workdir", "image", "cwd"), [
    ("", IMAGE, "/srv"), ("/app/", IMAGE, "/app"), ("", BARE, "/"),
    ("", dataclasses.replace(BARE, working_dir="relative"), "/"),
])
def test_workdir_is_the_spec_then_the_image_then_root(workdir, image, cwd) -> None:
    assert config(spec(workdir=workdir), image=image)["process"]["cwd"] == cwd


# -- privileges and limits -------------------------------------------------------------------------
def test_capabilities_default_add_and_drop() -> None:
    caps = config(spec())["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == list(DEFAULT_CAPABILITIES)
    assert config(spec(cap_drop=("ALL",)))["process"]["capabilities"]["bounding"] == []
    assert config(spec(cap_add=("ALL",)))["process"]["capabilities"]["bounding"] == list(ALL_CAPABILITIES)
    caps = config(spec(cap_add=("net_admin",), cap_drop=("CAP_CHOWN",)))["process"]["capabilities"]["effective"]
    assert "CAP_NET_ADMIN" in caps and "CAP_CHOWN" not in caps


def test_sysctls_ulimits_pids_oom_and_read_only() -> None:
    cfg = config(spec(sysctls={"net.ipv4.ip_forward": "1"}, pids_limit=20, oom_score_adj=500, read_only=True,
                      ulimits=(Ulimit("nofile", 100, 200), Ulimit("core", -1, -1))), nofile=4096)
    assert cfg["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert cfg["linux"]["resources"]["pids"] == {"limit": 20}
    assert cfg["process"]["oomScoreAdj"] == 500
    assert cfg["root"]["readonly"] is True
    assert cfg["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 200, "soft": 100},
                                         {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1}]


def test_defaults_leave_what_docker_leaves() -> None:
    cfg = config(spec(), nofile=4096)
    assert "pids" not in cfg["linux"]["resources"] and "oomScoreAdj" not in cfg["process"]
    assert cfg["root"]["readonly"] is False and cfg["linux"]["sysctl"] == {}
    assert cfg["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]
    assert cfg["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}


# -- checks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "message"), [
    ({"workdir": "app"}, "must be an absolute path \\(--workdir\\)"),
    ({"cap_add": ("net_admn",)}, "--cap-add: unknown capability 'net_admn'"),
    ({"cap_drop": ("bogus",)}, "--cap-drop: unknown capability"),
    ({"sysctls": {"kernel.pid_max": "10"}}, "--sysctl: sysctl 'kernel.pid_max' is not allowed"),
    ({"ulimits": (Ulimit("nofile", 10, 5),)}, "--ulimit: ulimit nofile: the soft limit 10 is above"),
    ({"ulimits": (Ulimit("nofile", 1, 1), Ulimit("nofile", 2, 2))}, "--ulimit: nofile is given twice"),
    ({"oom_score_adj": 1001}, "--oom-score-adj must be between -1000 and 1000"),
    ({"stop_signal": "SIGNOPE"}, "--stop-signal: invalid signal 'SIGNOPE'"),
])
def test_check_process_names_the_flag(kw, message) -> None:
    with pytest.raises(SpecError, match=message):
        ocispec.check_process(spec(**kw))


def test_check_process_accepts_a_full_spec() -> None:
    ocispec.check_process(spec(workdir="/w", cap_add=("ALL",), cap_drop=("chown",), sysctls={"net.core.somaxconn": "1"},
                               ulimits=(Ulimit("nproc", 10, 20),), oom_score_adj=-5, stop_signal="USR1"))


def test_host_limits_without_cap_sys_resource() -> None:
    hard = {"nofile": 4096, "core": -1}
    big = spec(ulimits=(Ulimit("nofile", 1024, 8192),))
    with pytest.raises(SpecError, match="--ulimit nofile: the hard limit 8192 is above this node's own \\(4096\\)"):
        ocispec.check_host_limits(big, hard, 0, can_raise=False)
    ocispec.check_host_limits(big, hard, 0, can_raise=True)
    ocispec.check_host_limits(spec(ulimits=(Ulimit("core", -1, -1), Ulimit("nofile", 10, 4096))), hard, 0, False)
    with pytest.raises(SpecError, match="--oom-score-adj -10 is below this node's own"):
        ocispec.check_host_limits(spec(oom_score_adj=-10), hard, 0, can_raise=False)
    ocispec.check_host_limits(spec(oom_score_adj=10), hard, 0, can_raise=False)


@pytest.mark.parametrize("name", ["web-1", "a.b.c", "x" * 64, "svc-1.node-a"])
def test_valid_hostnames(name) -> None:
    ocispec.check_hostname(name)


@pytest.mark.parametrize("name", ["-web", "web_1", "a..b", "x" * 65, "web.", "sp ace", ""])
def test_invalid_hostnames(name) -> None:
    with pytest.raises(SpecError, match="--hostname"):
        ocispec.check_hostname(name)


def test_stop_signal_from_the_spec_then_the_image_then_sigterm() -> None:
    assert ocispec.stop_signal(spec(stop_signal="SIGUSR1"), IMAGE) == 10
    assert ocispec.stop_signal(spec(), IMAGE) == 3          # the image's STOPSIGNAL SIGQUIT
    assert ocispec.stop_signal(spec(), BARE) == 15


def test_a_terminal_is_asked_for_with_tty_only() -> None:
    assert config(spec())["process"]["terminal"] is False
    assert config(spec(tty=True))["process"]["terminal"] is True

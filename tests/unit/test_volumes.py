"""Volumes (swarm/runtime/volumes.py), mount entries (ocispec), log drivers (swarm/api/logdriver.py)
and the daemon's volume calls, without containers: the store works on plain directories."""
import json
import os

import pytest
import trio

from swarm.api import logdriver
from swarm.api.spec import ContainerSpec, LogDriver, Mount
from swarm.daemon.volumes import volume_handlers
from swarm.rpc.messages import Peer, RPCError
from swarm.runtime import ocispec, volumes
from swarm.runtime.errors import SpecError
from tests.unit.crilog import LogWriter
from swarm.runtime.volumes import ANONYMOUS_LABEL, NoSuchVolume, VolumeInUse, VolumeStore

# -- local driver options -----------------------------------------------------------------------


def test_local_driver_options_as_docker_checks_them():
    volumes.check_options({})
    volumes.check_options({"type": "tmpfs", "device": "tmpfs", "o": "size=64m,uid=1000"})
    volumes.check_options({"type": "none", "device": "/srv/data", "o": "bind"})
    with pytest.raises(ValueError, match="invalid option: 'colour'"):
        volumes.check_options({"colour": "red"})
    with pytest.raises(ValueError, match="missing required option: 'device'"):
        volumes.check_options({"type": "tmpfs"})
    with pytest.raises(ValueError, match="missing required option: 'type'"):
        volumes.check_options({"device": "/x", "o": "bind"})
    with pytest.raises(ValueError, match="type 'nfs' is not supported"):
        volumes.check_options({"type": "nfs", "device": ":/export", "o": "addr=10.0.0.1"})
    with pytest.raises(ValueError, match="needs o=bind"):
        volumes.check_options({"type": "none", "device": "/x"})
    with pytest.raises(ValueError, match="absolute host path"):
        volumes.check_options({"type": "none", "device": "x", "o": "bind"})
    with pytest.raises(ValueError, match="'colour=red', which is not a tmpfs mount option"):
        volumes.check_options({"type": "tmpfs", "device": "tmpfs", "o": "colour=red"})
    with pytest.raises(ValueError, match="XFS quota"):
        volumes.check_options({"size": "10g"})


def test_mount_plan_turns_options_into_a_mount():
    assert volumes.mount_plan({}) is None
    plan = volumes.mount_plan({"type": "tmpfs", "device": "tmpfs", "o": "size=1m,noexec,mode=700"})
    assert plan == volumes.MountPlan("tmpfs", "tmpfs", volumes.MS_NOEXEC, "size=1m,mode=700")
    plan = volumes.mount_plan({"type": "none", "device": "/srv", "o": "bind,ro"})
    assert plan == volumes.MountPlan(None, "/srv", volumes.MS_BIND | volumes.MS_RDONLY, "")
    assert volumes.mount_plan({"type": "none", "device": "/srv", "o": "rbind"}).flags == volumes.MS_BIND | volumes.MS_REC


# -- filters ----------------------------------------------------------------------------------


def info(name, labels=None, used=()):
    return {"Name": name, "Driver": "local", "Labels": labels, "UsedBy": list(used)}


def test_filters_as_docker_volume_ls_takes_them():
    assert volumes.parse_filters(["name=web", "label=a=b", "label=c", "dangling=true"]) == {
        "name": ["web"], "label": ["a=b", "c"], "dangling": ["true"]}
    for bad in ("colour=red", "name", "dangling=maybe"):
        with pytest.raises(ValueError, match="invalid filter"):
            volumes.parse_filters([bad])
    web = info("web-data", {"tier": "db", "keep": ""}, used=["t1"])
    cache = info("cache")
    f = volumes.parse_filters
    assert volumes.matches(web, f(["name=web"])) and not volumes.matches(cache, f(["name=web"]))
    assert volumes.matches(web, f(["name=^web-"])) and not volumes.matches(web, f(["name=^data"]))
    assert volumes.matches(web, f(["label=tier=db", "label=keep"]))          # every label filter must hold
    assert not volumes.matches(web, f(["label=tier=db", "label=other"]))
    assert not volumes.matches(web, f(["label=tier=web"]))
    assert volumes.matches(cache, f(["dangling=true"])) and not volumes.matches(web, f(["dangling=1"]))
    assert volumes.matches(web, f(["dangling=false"])) and volumes.matches(web, f(["driver=local"]))
    assert not volumes.matches(web, f(["driver=nfs"]))


def test_prune_takes_unused_anonymous_volumes_and_named_ones_only_with_all():
    anon = info("f" * 64, {ANONYMOUS_LABEL: ""})
    named = info("data", {"env": "test"})
    used = info("busy", {ANONYMOUS_LABEL: ""}, used=["t1"])
    assert volumes.prunable(anon, False, {}) and not volumes.prunable(named, False, {})
    assert volumes.prunable(named, True, {}) and not volumes.prunable(used, True, {})
    assert volumes.prunable(named, True, {"label": ["env=test"]})
    assert not volumes.prunable(named, True, {"label!": ["env"]})


def test_resolve_in_root_never_leaves_the_root(tmp_path):
    root = tmp_path / "rootfs"
    (root / "real" / "dir").mkdir(parents=True)
    os.symlink("/real", root / "abs")                 # absolute: taken from the root, not the host
    os.symlink("../../..", root / "real" / "up")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert volumes.resolve_in_root(r, "/abs/dir") == os.path.join(r, "real", "dir")
    assert volumes.resolve_in_root(r, "/real/up/etc") == os.path.join(r, "etc")
    assert volumes.resolve_in_root(r, "/../../etc/passwd") == os.path.join(r, "etc", "passwd")
    assert volumes.resolve_in_root(r, "/missing/x") == os.path.join(r, "missing", "x")
    with pytest.raises(Exception, match="Too many symbolic links"):
        volumes.resolve_in_root(r, "/loop1/x")


# -- the store on plain directories -------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    (tmp_path / "tasks").mkdir()
    return VolumeStore(str(tmp_path / "volumes"), str(tmp_path / "tasks"))


def bundle_of(store, task_id):
    path = os.path.join(store.tasks_root, task_id)
    os.makedirs(path, exist_ok=True)
    return path


def test_named_volume_is_created_on_first_use_and_kept(store):
    b1 = bundle_of(store, "t1")
    name, path = store.attach(b1, Mount("volume", "/data", source="data", volume_labels={"env": "test"}),
                              now=lambda: 1_700_000_000.5)
    assert (name, path) == ("data", os.path.join(store.root, "data", "_data")) and os.path.isdir(path)
    with open(os.path.join(path, "f"), "w") as f:
        f.write("kept")
    # A second task reuses it as it is: the labels given then do not change it (as Docker).
    b2 = bundle_of(store, "t2")
    assert store.attach(b2, Mount("volume", "/d", source="data", volume_labels={"env": "prod"}))[1] == path
    got = store.inspect("data")
    assert got == {"CreatedAt": "2023-11-14T22:13:20.500000000Z", "Driver": "local", "Labels": {"env": "test"},
                   "Mountpoint": path, "Name": "data", "Options": None, "Scope": "local", "UsedBy": ["t1", "t2"]}
    assert json.load(open(os.path.join(b1, volumes.USES_FILE))) == ["data"]
    with pytest.raises(VolumeInUse, match=r"^remove data: volume is in use - \[t1, t2\]$"):
        store.remove("data")
    import shutil
    shutil.rmtree(b1)
    store.release(["data"])
    assert os.path.exists(os.path.join(path, "f")) and store.inspect("data")["UsedBy"] == ["t2"]
    shutil.rmtree(b2)
    store.release(["data"])
    assert [v["Name"] for v in store.list()] == ["data"]      # a named volume outlives its tasks
    assert store.remove("data") is True
    assert store.list() == [] and not os.path.exists(os.path.join(store.root, "data"))
    with pytest.raises(NoSuchVolume, match="^get data: no such volume$"):
        store.remove("data")
    assert store.remove("data", force=True) is False


def test_anonymous_volume_goes_with_its_task(store):
    b = bundle_of(store, "t1")
    name, path = store.attach(b, Mount("volume", "/scratch"), new_name=lambda: "a" * 64)
    assert name == "a" * 64 and store.inspect(name)["Labels"] == {ANONYMOUS_LABEL: ""}
    import shutil
    shutil.rmtree(b)
    store.release([name])
    assert store.list() == []


def test_prune_removes_what_no_task_uses(store):
    busy = bundle_of(store, "t1")
    store.attach(busy, Mount("volume", "/a", source="busy"))
    gone = bundle_of(store, "t2")
    store.attach(gone, Mount("volume", "/a", source="idle"))
    anon = store.attach(gone, Mount("volume", "/b"), new_name=lambda: "b" * 64)[0]
    with open(os.path.join(store.data_path("idle"), "f"), "w") as f:
        f.write("x" * 1500)
    os.remove(os.path.join(gone, volumes.USES_FILE))        # the task's bundle no longer lists them
    assert store.prune() == ([anon], 0)                      # anonymous ones only
    assert store.prune(all_volumes=True, filters={"label": ["nope"]}) == ([], 0)
    assert store.prune(all_volumes=True) == (["idle"], 1500)
    assert [v["Name"] for v in store.list()] == ["busy"]


def test_copy_up_fills_only_an_empty_volume(store, tmp_path):
    image_dir = tmp_path / "image" / "www"
    (image_dir / "sub").mkdir(parents=True)
    (image_dir / "index.html").write_text("hello")
    os.chmod(image_dir, 0o750)
    b = bundle_of(store, "t1")
    name, path = store.attach(b, Mount("volume", "/www", source="web"))
    assert store.populate(name, str(image_dir)) is True
    assert open(os.path.join(path, "index.html")).read() == "hello" and os.path.isdir(os.path.join(path, "sub"))
    assert os.stat(path).st_mode & 0o7777 == 0o750               # the directory's own mode too
    (image_dir / "index.html").write_text("changed")
    assert store.populate(name, str(image_dir)) is False         # not empty: left alone
    assert open(os.path.join(path, "index.html")).read() == "hello"
    assert store.populate(name, str(tmp_path / "image" / "missing")) is False


def test_bad_volume_options_are_refused_before_anything_is_made(store):
    b = bundle_of(store, "t1")
    with pytest.raises(SpecError, match="type 'nfs' is not supported"):
        store.attach(b, Mount("volume", "/a", source="v", volume_opts={"type": "nfs", "device": "x"}))
    assert store.list() == []


# -- the daemon's calls ---------------------------------------------------------------------------


def test_daemon_volume_calls_answer_with_dockers_sentences(store):
    handlers = volume_handlers(store)
    peer = Peer("", "local", "")
    b = bundle_of(store, "t1")
    store.attach(b, Mount("volume", "/a", source="busy", volume_labels={"k": "v"}))
    store.attach(bundle_of(store, "t2"), Mount("volume", "/a", source="idle"))
    os.remove(os.path.join(store.tasks_root, "t2", volumes.USES_FILE))

    async def main():
        call = lambda m, p: handlers[m](peer, p)  # noqa: E731
        assert [v["Name"] for v in await call("volume.ls", {})] == ["busy", "idle"]
        assert [v["Name"] for v in await call("volume.ls", {"filters": ["dangling=true"]})] == ["idle"]
        assert [v["Name"] for v in await call("volume.ls", {"filters": ["label=k=v"]})] == ["busy"]
        with pytest.raises(RPCError, match="invalid filter 'colour=red'") as err:
            await call("volume.ls", {"filters": ["colour=red"]})
        assert err.value.code == "bad_request"
        got = await call("volume.inspect", {"names": ["busy", "nosuch"]})
        assert [v["Name"] for v in got["volumes"]] == ["busy"] and got["errors"] == ["get nosuch: no such volume"]
        got = await call("volume.rm", {"names": ["busy", "idle", "nosuch"]})
        assert got == {"removed": ["idle"], "errors": ["remove busy: volume is in use - [t1]",
                                                       "get nosuch: no such volume"]}
        assert await call("volume.rm", {"names": ["nosuch"], "force": True}) == {"removed": ["nosuch"], "errors": []}
        assert await call("volume.prune", {"all": True}) == {"removed": [], "reclaimed": 0}
        with pytest.raises(RPCError, match="names must be a list"):
            await call("volume.rm", {"names": "busy"})

    trio.run(main)


# -- mount entries of config.json ---------------------------------------------------------------------


def entry(m, source="/src", rro=True):
    return ocispec._mount_entry(m, source, rro)


def test_bind_propagation_and_recursion_as_docker_25():
    assert entry(Mount("bind", "/a", source="/s"))["options"] == ["rbind", "rprivate"]
    assert entry(Mount("bind", "/a", source="/s", bind_propagation="rslave"))["options"] == ["rbind", "rslave"]
    assert entry(Mount("bind", "/a", source="/s", readonly=True))["options"] == ["rbind", "rprivate", "ro", "rro"]
    assert entry(Mount("bind", "/a", source="/s", readonly=True), rro=False)["options"] == ["rbind", "rprivate", "ro"]
    assert entry(Mount("bind", "/a", source="/s", readonly=True, bind_recursive="writable"))["options"] == \
        ["rbind", "rprivate", "ro"]
    assert entry(Mount("bind", "/a", source="/s", readonly=True, bind_recursive="readonly"))["options"] == \
        ["rbind", "rprivate", "ro", "rro"]
    assert entry(Mount("bind", "/a", source="/s", readonly=True, bind_recursive="disabled"))["options"] == \
        ["bind", "private", "ro"]
    assert entry(Mount("volume", "/a", source="v"))["options"] == ["rbind", "rprivate"]


def test_tmpfs_size_and_mode():
    e = entry(Mount("tmpfs", "/t"))
    assert e == {"destination": "/t", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "nodev", "noexec", "mode=1777"]}
    e = entry(Mount("tmpfs", "/t/", tmpfs_size=1 << 20, tmpfs_mode=0o700, readonly=True))
    assert e["destination"] == "/t" and e["options"] == ["nosuid", "nodev", "noexec", "mode=700", "size=1048576", "ro"]


def test_root_propagation_follows_the_binds():
    assert ocispec.rootfs_propagation([Mount("bind", "/a", source="/s")]) == {}
    assert ocispec.rootfs_propagation([Mount("bind", "/a", source="/s", bind_propagation="slave")]) == \
        {"rootfsPropagation": "rslave"}
    assert ocispec.rootfs_propagation([Mount("bind", "/a", source="/s", bind_propagation="rslave"),
                                       Mount("bind", "/b", source="/s", bind_propagation="rshared")]) == \
        {"rootfsPropagation": "shared"}


@pytest.mark.parametrize("mount, message", [
    (Mount("bind", "/a", source="/s", bind_propagation="sideways"), "Invalid bind-propagation 'sideways'"),
    (Mount("bind", "/a", source="/s", bind_recursive="maybe"), "Invalid bind-recursive 'maybe'"),
    (Mount("volume", "/a", source="v", bind_propagation="rshared"), "apply only to bind mounts"),
    (Mount("tmpfs", "/a", bind_recursive="disabled"), "apply only to bind mounts"),
    (Mount("bind", "/a", source="/s", bind_recursive="writable"), "bind-recursive=writable applies only to a read"),
    (Mount("bind", "/a", source="/s", volume_nocopy=True), "apply only to volume mounts"),
    (Mount("tmpfs", "/a", volume_labels={"a": "b"}), "apply only to volume mounts"),
    (Mount("volume", "/a", source="v", volume_driver="nfs"), "volume driver 'nfs' is not available"),
    (Mount("volume", "/a", source="v", volume_opts={"type": "nfs", "device": "x"}), "volume-opt of the volume"),
    (Mount("volume", "/a", source="v", tmpfs_size=10), "tmpfs-size and tmpfs-mode apply only to tmpfs"),
    (Mount("tmpfs", "/a", tmpfs_size=-1), "cannot be negative"),
    (Mount("tmpfs", "/a", tmpfs_mode=0o17777), "is not a file mode"),
])
def test_mount_options_of_another_type_or_out_of_range_are_refused(mount, message):
    with pytest.raises(SpecError, match=message):
        ocispec.check_mounts([mount])


def test_valid_mount_options_pass():
    ocispec.check_mounts([Mount("bind", "/a", source="/s", bind_propagation="rshared", readonly=True,
                                bind_recursive="readonly"),
                          Mount("volume", "/b", source="v", volume_nocopy=True, volume_labels={"a": "b"},
                                volume_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}),
                          Mount("tmpfs", "/c", tmpfs_size=1 << 20, tmpfs_mode=0o700)])


# -- log drivers ---------------------------------------------------------------------------------


def test_log_driver_options_as_docker_takes_them():
    check = logdriver.check_log_driver
    check(LogDriver())
    check(LogDriver("json-file", {"max-size": "10m", "max-file": "3"}))
    check(LogDriver("local", {"max-size": "1g"}))
    check(LogDriver("none", {"anything": "goes"}))       # Docker's none driver ignores options
    with pytest.raises(ValueError, match="no log driver named 'syslog'"):
        check(LogDriver("syslog"))
    with pytest.raises(ValueError, match="unknown log opt 'colour' for json-file log driver"):
        check(LogDriver("json-file", {"colour": "red"}))
    with pytest.raises(ValueError, match="unknown log opt 'tag' for local log driver"):
        check(LogDriver("local", {"tag": "x"}))
    with pytest.raises(ValueError, match="'compress' of the json-file log driver is not supported"):
        check(LogDriver("json-file", {"compress": "true"}))
    with pytest.raises(ValueError, match="max-file cannot be less than 1"):
        check(LogDriver("json-file", {"max-file": "0"}))
    with pytest.raises(ValueError, match="invalid max-file 'three'"):
        check(LogDriver("json-file", {"max-file": "three"}))
    with pytest.raises(ValueError, match="invalid size: '10 parsecs'"):
        check(LogDriver("json-file", {"max-size": "10 parsecs"}))
    with pytest.raises(ValueError, match="max-size must be a positive number"):
        check(LogDriver("local", {"max-size": "0"}))


def test_log_rotation_units_and_defaults():
    rot = logdriver.rotation
    assert rot(LogDriver("json-file", {"max-size": "1m", "max-file": "2"}), 99, 9) == (1_000_000, 2)
    assert rot(LogDriver("local", {"max-size": "1m"}), 99, 9) == (1 << 20, 9)
    # json-file with a max-size and no max-file keeps one file, as Docker's
    assert rot(LogDriver("json-file", {"max-size": "1.5kb"}), 99, 9) == (1500, 1)
    assert rot(LogDriver("json-file", {"max-file": "3"}), 99, 9) == (99, 3)
    assert rot(LogDriver(), 20 << 20, 5) == (20 << 20, 5)
    assert rot(LogDriver("none"), 20 << 20, 5) is None


def test_log_settings_reach_the_monitor(tmp_path):
    from swarm.runtime import runclog, runcmon

    node = (4096, 3)        # the node's defaults: log_max_size, log_max_file
    bundle = tmp_path / "tasks" / "t1"
    bundle.mkdir(parents=True)
    log_path = f"k8s-file:{bundle}/container.log"
    for driver, kept, path in ((LogDriver("json-file", {"max-size": "2k"}), (2000, 1), log_path),
                               (LogDriver(), (4096, 3), log_path),
                               (LogDriver("none"), None, "none:")):
        meta = {"log": runclog.log_settings(ContainerSpec("demo:1", log_driver=driver), *node)}
        (bundle / "meta.json").write_text(json.dumps(meta))
        settings = runclog.log_settings_of(str(bundle), *node)
        assert (settings and (settings["max_size"], settings["max_file"])) == (kept or None)
        argv = runcmon.monitor_argv("conmon", "/usr/sbin/runc", "/r", str(bundle), "t1", settings, False)
        assert argv[argv.index("--log-path") + 1] == path
        assert "--log-size-max" not in argv       # conmon would truncate: the runtime rotates instead
    (bundle / "meta.json").write_text(json.dumps({}))        # a bundle of an older version: the node's defaults
    assert runclog.log_settings_of(str(bundle), *node) == {"driver": "json-file", "max_size": 4096, "max_file": 3}
    with pytest.raises(SpecError, match="Invalid log driver settings: max-file cannot be less than 1"):
        runclog.log_settings(ContainerSpec("demo:1", log_driver=LogDriver("local", {"max-file": "0"})), *node)


def test_rotation_keeps_at_most_max_size_times_max_file(tmp_path):
    log = LogWriter(str(tmp_path / "container.log"), max_size=1000, max_file=2)
    for i in range(500):
        log.feed("stdout", b"line %05d of output\n" % i)
    files = sorted(os.listdir(tmp_path))
    assert files == ["container.log", "container.log.1"]
    assert sum(os.path.getsize(tmp_path / f) for f in files) <= 2000
    assert open(tmp_path / "container.log", "rb").read().rstrip().endswith(b"line 00499 of output")

"""The image store: safe layer extraction, import/load/resolve/list/remove.

Archives are built in the tests with tarfile. Refused archives must raise
ImageError and leave no layer, image or temporary directory behind.
"""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile

import pytest

from swarm.runtime.errors import ImageError
from swarm.runtime.images import Healthcheck, ImageStore, normalize_ref


# -- building archives ---------------------------------------------------------------------
def _info(name, type_=tarfile.REGTYPE, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = kw.pop("mode", 0o644 if type_ != tarfile.DIRTYPE else 0o755)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def make_tar(entries, compress=False):
    """entries: (name, kind, payload) with kind in file|dir|symlink|hardlink|chr|fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                tf.addfile(_info(name, size=len(data)), io.BytesIO(data))
            elif kind == "dir":
                tf.addfile(_info(name, tarfile.DIRTYPE))
            elif kind == "symlink":
                tf.addfile(_info(name, tarfile.SYMTYPE, linkname=payload, mode=0o777))
            elif kind == "hardlink":
                tf.addfile(_info(name, tarfile.LNKTYPE, linkname=payload))
            elif kind == "chr":
                tf.addfile(_info(name, tarfile.CHRTYPE, devmajor=1, devminor=3))
            elif kind == "fifo":
                tf.addfile(_info(name, tarfile.FIFOTYPE))
    data = buf.getvalue()
    return gzip.compress(data) if compress else data


ROOTFS = [("bin", "dir", None), ("bin/sh", "file", "#!shell\n"), ("bin/ash", "hardlink", "bin/sh"),
          ("etc", "dir", None), ("etc/passwd", "file", "root:x:0:0::/root:/bin/sh\n"),
          ("lib", "symlink", "/usr/lib"), ("usr", "dir", None), ("usr/lib", "dir", None),
          ("usr/lib/x", "symlink", "../../bin/sh")]


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "images"
    try:
        yield ImageStore(str(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def leftovers(store):
    """Everything in the store besides its empty skeleton."""
    out = []
    for d in (store.layers_dir, store.images_dir, store.blobs.dir, store.blobs.tmp_dir):
        out += [os.path.join(d, n) for n in os.listdir(d)]
    return out


def import_bytes(store, data, ref="t:1", **kw):
    return store.import_rootfs(io.BytesIO(data), ref, **kw)


# -- safe extraction -------------------------------------------------------------------------
REFUSED = {
    "absolute path": [("etc", "dir", None), ("/etc/passwd", "file", "x")],
    "dot-dot component": [("a", "dir", None), ("a/../../escape", "file", "x")],
    "dot-dot at start": [("../escape", "file", "x")],
    "symlink escaping": [("up", "symlink", "../../../etc")],
    "nested symlink escaping": [("a", "dir", None), ("a/up", "symlink", "../../etc")],
    "write through absolute symlink": [("a", "symlink", "/etc"), ("a/passwd", "file", "owned")],
    "write through relative symlink": [("d", "dir", None), ("a", "symlink", "d"), ("a/passwd", "file", "x")],
    "hardlink escaping with dot-dot": [("h", "hardlink", "../../etc/passwd")],
    "hardlink absolute": [("h", "hardlink", "/etc/passwd")],
    "hardlink through symlink": [("a", "symlink", "/etc"), ("h", "hardlink", "a/passwd")],
    "hardlink to a missing member": [("h", "hardlink", "nothing/here")],
    "character device": [("dev", "dir", None), ("dev/mem", "chr", None)],
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_refused_archive_raises_and_leaves_nothing(store, tmp_path, kind):
    data = make_tar(REFUSED[kind])
    before = set(os.listdir("/etc"))
    with pytest.raises(ImageError) as exc:
        import_bytes(store, data)
    assert str(exc.value).endswith(".") and "\n" not in str(exc.value)
    assert leftovers(store) == []
    assert store.list() == []
    assert set(os.listdir("/etc")) == before
    assert not os.path.exists(tmp_path / "escape")


def test_refused_layer_in_docker_archive_leaves_nothing(store, tmp_path):
    good = make_tar(ROOTFS)
    bad = make_tar(REFUSED["write through absolute symlink"])
    path = make_docker_save(tmp_path, [good, bad], ["bad:1"])
    with pytest.raises(ImageError):
        store.load_archive(path)
    assert leftovers(store) == []


def test_safe_archive_extracts_links_and_keeps_absolute_symlinks(store):
    image_id = import_bytes(store, make_tar(ROOTFS + [("fifo", "fifo", None)]))
    layer = store.layer_path(store.resolve(image_id).layers[0])
    assert os.readlink(os.path.join(layer, "lib")) == "/usr/lib"        # resolved in the container, not here
    assert os.readlink(os.path.join(layer, "usr/lib/x")) == "../../bin/sh"
    sh, ash = os.stat(os.path.join(layer, "bin/sh")), os.stat(os.path.join(layer, "bin/ash"))
    assert os.path.samestat(sh, ash)
    assert stat.S_ISFIFO(os.lstat(os.path.join(layer, "fifo")).st_mode)
    with open(os.path.join(layer, "etc/passwd")) as f:
        assert f.read().startswith("root:")


def test_later_member_replaces_symlink_instead_of_writing_through_it(store, tmp_path):
    target = tmp_path / "outside.txt"
    target.write_text("untouched")
    image_id = import_bytes(store, make_tar([("f", "symlink", str(target)), ("f", "file", "new")]))
    layer = store.layer_path(store.resolve(image_id).layers[0])
    assert not os.path.islink(os.path.join(layer, "f"))
    assert target.read_text() == "untouched"


def test_whiteouts_become_overlayfs_form(store):
    data = make_tar([("etc", "dir", None), ("etc/.wh.motd", "file", ""),
                     ("var", "dir", None), ("var/.wh..wh..opq", "file", ""), ("var/new", "file", "x")])
    image_id = import_bytes(store, data)
    layer = store.layer_path(store.resolve(image_id).layers[0])
    st = os.lstat(os.path.join(layer, "etc/motd"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not os.path.exists(os.path.join(layer, "etc/.wh.motd"))
    assert os.getxattr(os.path.join(layer, "var"), "trusted.overlay.opaque") == b"y"
    assert not os.path.exists(os.path.join(layer, "var/.wh..wh..opq"))


def test_corrupt_and_non_tar_input_is_refused(store):
    with pytest.raises(ImageError):
        import_bytes(store, b"\x1f\x8b this is not gzip at all" * 10)
    with pytest.raises(ImageError):
        import_bytes(store, b"x" * 1000)
    assert leftovers(store) == []


# -- import, resolve, list, remove --------------------------------------------------------
def test_import_resolve_list_remove(store):
    data = make_tar(ROOTFS, compress=True)
    image_id = import_bytes(store, data, ref="demo:1", cmd=["httpd", "-f"], now=1700000000.0)
    image = store.resolve("demo:1")
    assert image.id == image_id and len(image_id) == 64
    assert image.cmd == ("httpd", "-f") and image.entrypoint == ()
    assert any(e.startswith("PATH=") for e in image.env)
    assert image.layers == (hashlib.sha256(gzip.decompress(data)).hexdigest(),)   # content address = diff_id
    assert store.resolve(image_id[:10]).id == image_id
    assert store.resolve("sha256:" + image_id).id == image_id
    store.tag("demo:1", "demo")
    assert store.resolve("demo").id == image_id                                 # NAME means NAME:latest
    rows = store.list()
    assert [r["ref"] for r in rows] == ["demo:1", "demo:latest"]
    assert rows[0]["id"] == image_id and rows[0]["size"] > 0 and rows[0]["created"] == 1700000000.0
    with pytest.raises(ImageError, match="No such image: nope:2"):
        store.resolve("nope:2")

    assert store.remove("demo:1") == [{"Untagged": "demo:1"}]                   # still tagged demo:latest
    assert os.path.isdir(store.layer_path(image.layers[0]))
    out = store.remove("demo")
    assert out == [{"Untagged": "demo:latest"}, {"Deleted": f"sha256:{image_id}"},
                   {"Deleted": f"sha256:{image.layers[0]}"}]
    assert store.list() == [] and leftovers(store) == []
    with pytest.raises(ImageError):
        store.resolve(image_id)


def test_two_images_share_a_layer_until_both_are_removed(store):
    data = make_tar(ROOTFS)
    a = import_bytes(store, data, ref="a:1", now=1.0)
    b = import_bytes(store, data, ref="b:1", now=2.0)
    assert a != b and store.resolve("a:1").layers == store.resolve("b:1").layers
    assert len(os.listdir(store.layers_dir)) == 1
    store.remove("a:1")
    assert len(os.listdir(store.layers_dir)) == 1
    store.remove(b)                                                               # by id: every tag goes
    assert leftovers(store) == []


def test_ambiguous_prefix_and_bad_refs(store):
    with pytest.raises(ImageError, match="invalid reference format: repository name must be lowercase"):
        normalize_ref("Demo:1")
    assert normalize_ref("docker.io/library/busybox") == "busybox:latest"
    assert normalize_ref("localhost:5000/team/app:v2") == "localhost:5000/team/app:v2"
    ids = [import_bytes(store, make_tar(ROOTFS), ref=f"x:{i}", now=float(i)) for i in range(20)]
    first = {i[0] for i in ids}
    common = next(c for c in first if sum(i.startswith(c) for i in ids) > 1)
    with pytest.raises(ImageError, match="ambiguous"):
        store.resolve(common)


# -- docker save and OCI archives ----------------------------------------------------------
def _add_bytes(tf, name, data):
    tf.addfile(_info(name, size=len(data)), io.BytesIO(data))


def make_docker_save(tmp_path, layers, repo_tags, cmd=("sh",), entrypoint=None, extra=None):
    diff_ids = [hashlib.sha256(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b).hexdigest() for b in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05.5Z",
                         "config": {"Cmd": list(cmd), "Entrypoint": entrypoint, "Env": ["PATH=/bin", "A=1"],
                                    "WorkingDir": "/srv", **(extra or {})},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]}}).encode()
    config_id = hashlib.sha256(config).hexdigest()
    path = str(tmp_path / "save.tar")
    with tarfile.open(path, "w") as tf:
        names = []
        for i, layer in enumerate(layers):
            name = f"layer{i}/layer.tar"
            tf.addfile(_info(f"layer{i}", tarfile.DIRTYPE))
            _add_bytes(tf, name, layer)
            names.append(name)
        _add_bytes(tf, f"{config_id}.json", config)
        _add_bytes(tf, "manifest.json", json.dumps([{"Config": f"{config_id}.json", "RepoTags": repo_tags,
                                                      "Layers": names}]).encode())
    return path


def test_load_docker_save_with_two_layers_and_whiteout(store, tmp_path):
    base = make_tar(ROOTFS)
    top = make_tar([("etc", "dir", None), ("etc/.wh.passwd", "file", ""), ("srv", "dir", None),
                    ("srv/app", "file", "app")], compress=True)
    path = make_docker_save(tmp_path, [base, top], ["app:2", "app:latest"], cmd=("-v",), entrypoint=["/srv/app"])
    assert store.load_archive(path) == ["app:2", "app:latest"]
    image = store.resolve("app")
    assert len(image.layers) == 2 and image.working_dir == "/srv"
    assert image.entrypoint == ("/srv/app",) and image.cmd == ("-v",) and "A=1" in image.env
    assert image.created == pytest.approx(1704164645.5)
    wh = os.lstat(os.path.join(store.layer_path(image.layers[1]), "etc/passwd"))
    assert stat.S_ISCHR(wh.st_mode)
    # loading again reuses the layers and changes nothing
    assert store.load_archive(path) == ["app:2", "app:latest"]
    assert len([n for n in os.listdir(store.layers_dir)]) == 2


def test_the_image_config_keeps_user_stop_signal_ports_volumes_health_and_labels(store, tmp_path):
    extra = {"User": "app:staff", "StopSignal": "SIGQUIT", "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {}},
             "Volumes": {"/data": {}}, "Labels": {"org.example": "yes"},
             "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 3}}
    path = make_docker_save(tmp_path, [make_tar(ROOTFS)], ["cfg:1"], extra=extra)
    store.load_archive(path)
    image = store.resolve("cfg:1")
    assert image.user == "app:staff" and image.stop_signal == "SIGQUIT"
    assert image.exposed_ports == ("53/udp", "80/tcp", "8080/tcp") and image.volumes == ("/data",)
    assert image.labels == {"org.example": "yes"}
    assert image.healthcheck == Healthcheck(test=("CMD-SHELL", "true"), interval=5_000_000_000, retries=3)
    # An image without them (docker import) has the defaults.
    plain = store.resolve(import_bytes(store, make_tar(ROOTFS), ref="plain:1"))
    assert (plain.user, plain.stop_signal, plain.exposed_ports, plain.healthcheck, plain.labels) == ("", "", (), None, {})


@pytest.mark.parametrize(("extra", "message"), [
    ({"User": 1000}, "User must be one line of text"),
    ({"StopSignal": "SIGNOPE"}, "StopSignal: invalid signal"),
    ({"ExposedPorts": {"http": {}}}, "exposed port 'http'"),
    ({"ExposedPorts": ["80/tcp"]}, "ExposedPorts must be an object"),
    ({"Volumes": {"data": {}}}, "volume 'data' is not an absolute path"),
    ({"Labels": {"a": 1}}, "Labels must map strings to strings"),
    ({"Healthcheck": {"Test": ["RUN", "x"]}}, "not NONE, CMD or CMD-SHELL"),
    ({"Healthcheck": {"Test": ["CMD", "x"], "Interval": -1}}, "Healthcheck.Interval"),
])
def test_a_malformed_image_config_refuses_the_load(store, tmp_path, extra, message):
    path = make_docker_save(tmp_path, [make_tar(ROOTFS)], ["bad:1"], extra=extra)
    with pytest.raises(ImageError, match=re.escape(message)):
        store.load_archive(path)
    assert leftovers(store) == []


def test_docker_save_with_wrong_layer_digest_is_refused(store, tmp_path):
    path = make_docker_save(tmp_path, [make_tar(ROOTFS)], ["x:1"])
    with tarfile.open(path) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    members["layer0/layer.tar"] = make_tar([("other", "file", "x")])
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            _add_bytes(tf, name, data)
    with pytest.raises(ImageError, match="does not match its digest"):
        store.load_archive(path)
    assert leftovers(store) == []


def make_oci(tmp_path, layer_blobs, ref_name, nested=False):
    blobs = {}

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    diff_ids = [hashlib.sha256(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b).hexdigest() for b in layer_blobs]
    config = put(json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Cmd": ["httpd", "-f"], "Env": ["X=y"]},
                             "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]}}).encode())
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(b)} for b in layer_blobs]
    manifest = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                **put(json.dumps({"schemaVersion": 2, "config": config, "layers": layers}).encode())}
    if nested:
        arm = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "0" * 64,
               "size": 1, "platform": {"os": "linux", "architecture": "arm64"}}
        manifest = {"mediaType": "application/vnd.oci.image.index.v1+json",
                    **put(json.dumps({"schemaVersion": 2, "manifests": [
                        arm, {**manifest, "platform": {"os": "linux", "architecture": "amd64"}}]}).encode())}
    index = {"schemaVersion": 2,
             "manifests": [{**manifest, "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}
    path = str(tmp_path / "oci.tar")
    with tarfile.open(path, "w") as tf:
        _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(tf, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            _add_bytes(tf, f"blobs/sha256/{digest}", data)
    return path


@pytest.mark.parametrize("nested", [False, True])
def test_load_oci_layout(store, tmp_path, nested):
    path = make_oci(tmp_path, [make_tar(ROOTFS, compress=True), make_tar([("www", "dir", None)])], "web:3",
                    nested=nested)
    assert store.load_archive(path) == ["web:3"]
    image = store.resolve("web:3")
    assert image.cmd == ("httpd", "-f") and len(image.layers) == 2
    assert os.path.isdir(os.path.join(store.layer_path(image.layers[1]), "www"))
    assert image.size == sum(len(p) for _, k, p in ROOTFS if k == "file")


def test_oci_layout_with_escaping_layer_is_refused(store, tmp_path):
    path = make_oci(tmp_path, [make_tar(ROOTFS), make_tar(REFUSED["hardlink escaping with dot-dot"])], "web:4")
    with pytest.raises(ImageError, match="outside"):
        store.load_archive(path)
    assert leftovers(store) == []


def test_unknown_archive_is_refused(store, tmp_path):
    path = tmp_path / "plain.tar"
    path.write_bytes(make_tar(ROOTFS))
    with pytest.raises(ImageError, match="neither a docker save archive nor an OCI"):
        store.load_archive(str(path))


def test_only_harmless_xattrs_are_applied(store):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = _info("d", tarfile.DIRTYPE)
        ti.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.note": "hi"}
        tf.addfile(ti)
    image_id = import_bytes(store, buf.getvalue())
    d = os.path.join(store.layer_path(store.resolve(image_id).layers[0]), "d")
    assert os.listxattr(d) == ["user.note"]


def test_import_from_a_pipe(store):
    r, w = os.pipe()
    data = make_tar(ROOTFS, compress=True)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, data)
        os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb", buffering=0) as f:
            image_id = store.import_rootfs(f, "piped:1")
    finally:
        os.waitpid(pid, 0)
    assert store.resolve("piped:1").id == image_id


def test_docker_save_with_layer_stored_as_symlink(store, tmp_path):
    layer = make_tar(ROOTFS)
    path = make_docker_save(tmp_path, [layer], ["dup:1"])
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    with tarfile.open(path, "w") as tf:
        for m, data in members:
            if m.name == "layer0/layer.tar":   # docker save links a layer it already wrote for another image
                tf.addfile(_info("other/layer.tar", size=len(data)), io.BytesIO(data))
                tf.addfile(_info(m.name, tarfile.SYMTYPE, linkname="../other/layer.tar"))
            else:
                tf.addfile(m, io.BytesIO(data) if data is not None else None)
    assert store.load_archive(path) == ["dup:1"]
    assert os.path.isdir(os.path.join(store.layer_path(store.resolve("dup:1").layers[0]), "bin"))


def test_truncated_archive_is_refused(store, tmp_path):
    path = make_docker_save(tmp_path, [make_tar(ROOTFS)], ["t:1"])
    with open(path, "rb") as f:
        data = f.read()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError):
        store.load_archive(str(tmp_path / "cut.tar"))
    assert leftovers(store) == []


# -- bounded imports -----------------------------------------------------------------------------
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import trio  # noqa: E402

from swarm.runtime.images import run_cancellable  # noqa: E402

MiB = 1 << 20


def within(seconds, fn, *args, **kw):
    """fn's result, run in a thread; fails (instead of hanging the suite) when it takes longer."""
    box = []

    def target():
        try:
            box.append(("ok", fn(*args, **kw)))
        except BaseException as exc:   # handed to the test thread
            box.append(("err", exc))

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert box, f"{fn.__name__} still ran after {seconds} s"
    kind, value = box[0]
    if kind == "err":
        raise value
    return value


@pytest.fixture
def small_store(tmp_path):
    root = tmp_path / "capped"
    try:
        yield ImageStore(str(root), max_import_bytes=MiB)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def gzip_stream(parts):
    """gzip of the concatenated byte strings; a part (n,) is n zero bytes, compressed as it goes."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = []
    for part in parts:
        if isinstance(part, tuple):
            for start in range(0, part[0], MiB):
                out.append(z.compress(bytes(min(MiB, part[0] - start))))
        else:
            out.append(z.compress(part))
    out.append(z.flush())
    return b"".join(out)


@pytest.mark.parametrize("method", ["import", "load"])
def test_devices_fifos_and_directories_are_refused(store, tmp_path, method):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    run = (lambda p: store.import_rootfs(p, "t:1")) if method == "import" else store.load_archive
    for path, kind in (("/dev/zero", "a character device"), (fifo, "a fifo"), (str(tmp_path), "a directory")):
        with pytest.raises(ImageError, match=f"^{path} is {kind}; images are imported from regular files only.$"):
            within(5, run, path)
    assert leftovers(store) == []


def test_sparse_tar_bomb_is_refused_at_the_cap(small_store, tmp_path):
    work = tmp_path / "sparse"
    work.mkdir()
    subprocess.run(["truncate", "-s", "1G", str(work / "big")], check=True)
    subprocess.run(["tar", "-S", "-C", str(work), "-cf", str(tmp_path / "bomb.tar"), "big"], check=True)
    assert os.path.getsize(tmp_path / "bomb.tar") < 64 * 1024
    with pytest.raises(ImageError, match=r"^The image expands to more than 1 MiB \(the import size limit of "
                                         r"this node\); it was not imported.$"):
        within(10, small_store.import_rootfs, str(tmp_path / "bomb.tar"), "bomb:1")
    assert leftovers(small_store) == []


@pytest.mark.parametrize("shape", ["one-big-file", "zeros-after-the-end", "many-files"])
def test_gzip_bomb_is_refused_at_the_cap(small_store, shape):
    header = tarfile.TarInfo("zeros")
    header.size = 64 * MiB
    if shape == "one-big-file":        # the header tells the size: refused before writing it
        parts = [header.tobuf(format=tarfile.PAX_FORMAT), (64 * MiB,)]
    elif shape == "zeros-after-the-end":   # nothing is written; the stream itself is the bomb
        parts = [(64 * MiB,)]
    else:                               # each file is small, together they pass the cap
        parts = []
        for i in range(8):
            header = tarfile.TarInfo(f"f{i}")
            header.size = MiB // 2
            parts += [header.tobuf(format=tarfile.PAX_FORMAT), (MiB // 2,)]
        parts.append(bytes(1024))
    bomb = gzip_stream(parts)
    assert len(bomb) < 200 * 1024
    with pytest.raises(ImageError, match=r"^The image expands to more than 1 MiB"):
        within(20, import_bytes, small_store, bomb)
    assert leftovers(small_store) == []


def test_compressed_outer_archive_bomb_is_refused_at_the_cap(small_store, tmp_path):
    path = make_docker_save(tmp_path, [make_tar(ROOTFS)], ["t:1"])
    with tarfile.open(path, "a") as tf:     # zeros after the images: docker load would read past them all
        _add_bytes(tf, "padding", bytes(8 * MiB))
    with open(path, "rb") as f:
        (tmp_path / "save.tar.gz").write_bytes(gzip.compress(f.read()))
    with pytest.raises(ImageError, match=r"^The image expands to more than 1 MiB"):
        within(20, small_store.load_archive, str(tmp_path / "save.tar.gz"))
    assert leftovers(small_store) == []


def test_compressed_docker_save_still_loads(store, tmp_path):
    path = make_docker_save(tmp_path, [make_tar(ROOTFS)], ["gz:1"])
    with open(path, "rb") as f:
        (tmp_path / "save.tar.gz").write_bytes(gzip.compress(f.read()))
    assert store.load_archive(str(tmp_path / "save.tar.gz")) == ["gz:1"]


def test_the_cap_never_passes_the_free_space_less_a_reserve(tmp_path):
    store = ImageStore(str(tmp_path / "images"), max_import_bytes=1 << 60)
    budget = store.import_budget()
    fs = os.statvfs(store.layers_dir)
    assert budget.limit < fs.f_bavail * fs.f_frsize
    assert budget.limit >= fs.f_bavail * fs.f_frsize - (1 << 30) - 4096 * fs.f_frsize
    assert budget.why.startswith(f"the free space of {store.root} less a reserve of ")


class EndlessTar:
    """A tar stream of one 4 GiB file that never ends in time: each read waits a little.
    Calls `on_read(n)` with the number of reads so far."""

    def __init__(self, on_read=lambda n: None):
        header = tarfile.TarInfo("endless")
        header.size = 4 << 30
        self.pending = header.tobuf(format=tarfile.PAX_FORMAT)
        self.reads, self.on_read = 0, on_read
        self.last_read = time.monotonic()

    def read(self, n=-1):
        self.reads += 1
        self.last_read = time.monotonic()
        self.on_read(self.reads)
        time.sleep(0.001)
        if self.pending:
            data, self.pending = self.pending[:n], self.pending[n:]
            return data
        return bytes(min(n, 1 << 16) if n and n > 0 else 1 << 16)


def test_a_cancelled_import_stops_and_leaves_nothing(store):
    cancel = threading.Event()
    src = EndlessTar(lambda n: n == 50 and cancel.set())
    with pytest.raises(ImageError, match=r"^The import was cancelled \(the daemon is shutting down\); "
                                         r"nothing was imported.$"):
        within(10, store.import_rootfs, src, "endless:1", cancel=cancel)
    assert src.reads <= 51
    assert leftovers(store) == []


@pytest.mark.trio
async def test_cancelling_the_trio_caller_stops_the_import_thread(store):
    src = EndlessTar()
    t0 = time.monotonic()
    with trio.move_on_after(0.3):
        await run_cancellable(store.import_rootfs, src, "endless:1")
    assert time.monotonic() - t0 < 1.0          # the caller (a daemon shutting down) is not held
    with trio.fail_after(5):                     # and the thread it left stops and cleans up
        while leftovers(store):
            await trio.sleep(0.02)
    reads = src.reads
    await trio.sleep(0.1)
    assert src.reads == reads

"""--user checked against the image's own /etc/passwd and /etc/group at create (swarm/daemon/usercheck.py)."""
from __future__ import annotations

import io
import tarfile

from swarm.daemon.usercheck import image_user_checker
from swarm.runtime.images import ImageStore


def rootfs_tar(path, files: dict[str, str]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            data = text.encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_a_user_the_image_lacks_is_named_in_docker_s_sentence(tmp_path):
    images = ImageStore(str(tmp_path / "images"))
    images.import_rootfs(rootfs_tar(tmp_path / "a.tar", {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        "etc/group": "root:x:0:\napp:x:1000:\n", "bin/true": ""}), "app:1")
    images.import_rootfs(rootfs_tar(tmp_path / "b.tar", {"bin/true": ""}), "bare:1")
    check = image_user_checker(images)
    assert check("app:1", "app", ()) is None
    assert check("app:1", "1234:1234", ()) is None            # numeric ids need no entry, as Docker
    assert check("app:1", "app", ("app", "0")) is None
    assert check("app:1", "nobody", ()) == "unable to find user nobody: no matching entries in passwd file"
    assert check("app:1", "app:staff", ()) == "unable to find group staff: no matching entries in group file"
    assert check("app:1", "", ("staff",)) == "unable to find group staff: no matching entries in group file"
    assert check("bare:1", "app", ()) == "unable to find user app: no matching entries in passwd file"
    assert check("elsewhere:1", "app", ()) is None            # not on this node: its node checks

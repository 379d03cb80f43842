"""`swarm image pull` and `image ls --filter` against a fake daemon (the one of test_cli): the
exact calls sent and the exact output."""
from __future__ import annotations

import pytest

from swarm.cli import image as cli_image
from swarm.rpc.messages import RPCError
from tests.unit.test_cli import FakeDaemon, failed, ok

REF = "127.0.0.1:5000/team/app:1"
RESULT = {"id": "ab" * 32, "digest": "sha256:" + "d" * 64, "fresh": True, "ref": REF}


class ImageFake(FakeDaemon):
    def _router(self):
        router = super()._router()
        for method in ("image.pull", "image.ls", "image.inspect"):
            router.route(method, self._handler(method))
        return router


@pytest.fixture
def fake(state_dir):
    daemon = ImageFake(state_dir)
    daemon.start()
    yield daemon
    daemon.stop()


def test_a_quiet_pull_waits_in_one_call_and_prints_the_reference(fake, run):
    fake.answers["image.pull"] = {"op": "1-ab", "version": 9, "log": [], "logged": 8, "layers": [], "done": True,
                                  "result": RESULT}
    assert ok(run("image", "pull", "-q", REF)) == REF + "\n"
    assert fake.params("image.pull") == [{"ref": REF, "until": "done"}]


def test_a_quiet_pull_asks_again_when_the_daemon_stops_waiting(fake, run):
    answers = iter([{"op": "1-ab", "version": 3, "log": [], "logged": 2, "layers": [], "done": False},
                    {"op": "1-ab", "version": 9, "log": [], "logged": 8, "layers": [], "done": True,
                     "error": "No such image: 127.0.0.1:5000/team/app:1"}])
    fake.answers["image.pull"] = lambda params: next(answers)
    assert failed(run("image", "pull", "-q", REF), 1) == "Error: No such image: 127.0.0.1:5000/team/app:1\n"
    assert fake.params("image.pull") == [{"ref": REF, "until": "done"},
                                         {"op": "1-ab", "version": 3, "since": 2, "until": "done"}]


def test_a_pull_with_progress_polls_for_news(fake, run):
    answers = iter([{"op": "1-ab", "version": 1, "log": [["aaaa", "Pulling fs layer"]], "logged": 1,
                     "layers": [{"id": "aaaa", "status": "Pulling fs layer", "current": 0, "total": 5}], "done": False},
                    {"op": "1-ab", "version": 4, "log": [["aaaa", "Download complete"], ["aaaa", "Pull complete"]],
                     "logged": 3, "layers": [{"id": "aaaa", "status": "Pull complete", "current": 5, "total": 5}],
                     "done": True, "result": RESULT}])
    fake.answers["image.pull"] = lambda params: next(answers)
    out = ok(run("image", "pull", REF))
    assert out.endswith(f"Digest: sha256:{'d' * 64}\nStatus: Downloaded newer image for {REF}\n{REF}\n")
    assert fake.params("image.pull") == [{"ref": REF}, {"op": "1-ab", "version": 1, "since": 1}]


def test_a_refused_pull_is_one_sentence(fake, run):
    fake.answers["image.pull"] = RPCError("bad_request", "invalid reference format")
    assert failed(run("image", "pull", "-q", "app:1"), 1).strip().endswith("invalid reference format")
    assert cli_image.DONE_CALL_TIMEOUT > 60.0       # longer than the daemon's DONE_WAIT


LS = [
    {"Id": "sha256:" + "a" * 64, "RepoTags": ["old:1"], "RepoDigests": [], "Size": 1000, "Created": 1000.25,
     "Labels": {"team": "web", "tier": "front"}},
    {"Id": "sha256:" + "b" * 64, "RepoTags": ["mid:1"], "RepoDigests": [], "Size": 1000, "Created": 1000.75,
     "Labels": {"team": "db"}},
    {"Id": "sha256:" + "c" * 64, "RepoTags": ["new:1"], "RepoDigests": [], "Size": 1000, "Created": 2000.0,
     "Labels": {}},
]


def inspected(params):
    """image.inspect as the daemon answers it: Created in RFC 3339, seconds only (the CLI must use
    the listing's exact time: old and mid were made within one second)."""
    by_name = {"old:1": LS[0], "mid:1": LS[1], "new:1": LS[2]}
    found = [{"Id": by_name[r]["Id"], "Created": "1970-01-01T00:16:40Z"} for r in params["refs"] if r in by_name]
    return {"images": found, "errors": [f"No such image: {r}" for r in params["refs"] if r not in by_name]}


def names(out: str) -> list[str]:
    return out.split()


def test_image_ls_filters_before_since_and_label_as_docker(fake, run):
    fake.answers["image.ls"] = LS
    fake.answers["image.inspect"] = inspected
    ls = ("image", "ls", "--format", "{{.Repository}}")
    assert names(ok(run(*ls, "--filter", "before=new:1"))) == ["mid", "old"]
    assert names(ok(run(*ls, "--filter", "before=mid:1"))) == ["old"]            # strictly before, to the ms
    assert names(ok(run(*ls, "--filter", "since=old:1"))) == ["new", "mid"]
    assert names(ok(run(*ls, "-f", "since=old:1", "-f", "before=new:1"))) == ["mid"]
    assert names(ok(run(*ls, "-f", "before=new:1", "-f", "before=mid:1"))) == ["old"]   # the earliest bound
    assert names(ok(run(*ls, "--filter", "label=team"))) == ["mid", "old"]
    assert names(ok(run(*ls, "--filter", "label=team=web"))) == ["old"]
    assert names(ok(run(*ls, "-f", "label=team", "-f", "label=tier=front"))) == ["old"]   # all must match
    assert names(ok(run(*ls, "--filter", "label=team=ops"))) == []
    assert fake.params("image.inspect")[:2] == [{"refs": ["new:1"]}, {"refs": ["mid:1"]}]


def test_image_ls_filters_refuse_what_docker_refuses(fake, run):
    fake.answers["image.ls"] = LS
    fake.answers["image.inspect"] = inspected
    assert failed(run("image", "ls", "--filter", "before=nosuch:9"), 1) == "Error: No such image: nosuch:9\n"
    assert failed(run("image", "ls", "--filter", "color=red"), 1) == (
        "Error: invalid filter 'color' (this node filters images by before, dangling, label, reference and since)\n")

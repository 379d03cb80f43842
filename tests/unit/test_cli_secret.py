"""`swarm secret ...`, `swarm config ...` and the --secret/--config flags of `swarm service
create/update`, against the fake daemon of test_cli (exact params sent, exact output)."""
from __future__ import annotations

import json
import time

import pytest

from swarm.api import model
from swarm.cli import progress as cli_progress
from swarm.cli.service_flags import parse_file_ref
from swarm.rpc.messages import RPCError
from tests.unit.test_cli import failed, ok
from tests.unit.test_cli_network import CREATE_BASE
from tests.unit.test_cli_service import SID, ServiceFake

SECRET_ID = "ktnbjxoalbkvbvedmg1urrz8h"
CONFIG_ID = "yx8hj0wp0hjqv8c6p1ew4i0ys"
KINDS = ("secret", "config")


class FileFake(ServiceFake):
    def _router(self):
        router = super()._router()
        for kind in KINDS:
            for verb in ("create", "ls", "inspect", "rm"):
                router.route(f"{kind}.{verb}", self._handler(f"{kind}.{verb}"))
        return router


TWO_HOURS_AGO = model.rfc3339(time.time() - 7200)
CREATED = "2016-11-09T19:10:42.285146012Z"


@pytest.fixture
def fake(state_dir):
    daemon = FileFake(state_dir)
    row = {"id": SECRET_ID, "name": "db_pw", "driver": "", "labels": {"env": "prod"},
           "created_at": TWO_HOURS_AGO, "updated_at": TWO_HOURS_AGO}
    daemon.answers.update({
        "service.create": {"id": SID, "name": "web"}, "service.update": {"id": SID, "name": "web"},
        "secret.create": {"id": SECRET_ID, "name": "db_pw"}, "config.create": {"id": CONFIG_ID, "name": "app"},
        "secret.ls": [row], "config.ls": [dict(row, id=CONFIG_ID, name="app.conf")],
        "secret.inspect": [{"id": SECRET_ID, "version": {"index": 11}, "created_at": CREATED, "updated_at": CREATED,
                            "spec": {"name": "db_pw", "labels": {"env": "prod"}}}],
        "config.inspect": [{"id": CONFIG_ID, "version": {"index": 12}, "created_at": CREATED, "updated_at": CREATED,
                            "spec": {"name": "app.conf", "labels": {}, "data": "cG9ydD04MAo="}}],
        "secret.rm": ["db_pw"], "config.rm": ["app.conf"],
    })
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(cli_progress, "POLL_INTERVAL", 0.01)


# -- create ----------------------------------------------------------------------


def test_secret_create_from_a_file_and_from_stdin(fake, run, tmp_path):
    path = tmp_path / "pw"
    path.write_bytes(b"hunter2\n")
    assert ok(run("secret", "create", "-l", "env=prod", "--label", "team", "db_pw", str(path))) == f"{SECRET_ID}\n"
    assert ok(run("secret", "create", "db_pw", "-", input=b"from stdin")) == f"{SECRET_ID}\n"
    assert fake.params("secret.create") == [{"name": "db_pw", "data": b"hunter2\n", "labels": {"env": "prod",
                                                                                              "team": ""}},
                                            {"name": "db_pw", "data": b"from stdin"}]


def test_config_create_needs_its_file_and_drivers_are_refused(fake, run, tmp_path):
    assert "Missing argument 'FILE|-'" in failed(run("config", "create", "app"), 2)
    assert "secret file is required" in failed(run("secret", "create", "db_pw"), 2)
    assert "secret drivers are not supported" in failed(run("secret", "create", "-d", "vault", "x", "-",
                                                            input=b"v"), 2)
    assert "template drivers are not supported" in failed(run("config", "create", "--template-driver", "golang",
                                                              "x", "-", input=b"v"), 2)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert failed(run("config", "create", "app", str(empty)), 1) == f"Error: error reading from {empty}: data is empty\n"
    assert failed(run("secret", "create", "x", "-", input=b""), 1) == "Error: error reading from STDIN: data is empty\n"
    assert failed(run("secret", "create", "x", str(tmp_path / "nope")), 1) == (
        f"Error: error reading from {tmp_path / 'nope'}: No such file or directory\n")
    assert fake.params("secret.create") == fake.params("config.create") == []


# -- ls, inspect, rm ----------------------------------------------------------------


def test_ls_as_docker_prints_it(fake, run):
    assert ok(run("secret", "ls")) == (
        "ID                          NAME      DRIVER    CREATED       UPDATED\n"
        f"{SECRET_ID}   db_pw               2 hours ago   2 hours ago\n")
    assert ok(run("config", "ls")) == (
        "ID                          NAME       CREATED       UPDATED\n"
        f"{CONFIG_ID}   app.conf   2 hours ago   2 hours ago\n")
    assert ok(run("secret", "ls", "-q")) == f"{SECRET_ID}\n"
    assert json.loads(ok(run("config", "ls", "--format", "json"))) == [
        {"id": CONFIG_ID, "name": "app.conf", "created_at": TWO_HOURS_AGO, "updated_at": TWO_HOURS_AGO,
         "labels": {"env": "prod"}}]
    assert ok(run("secret", "ls", "--format", "{{.Name}} {{.Labels}}", "-f", "label=env")) == "db_pw env=prod\n"
    assert fake.params("secret.ls")[-1] == {"filters": {"label": ["env"]}}


def test_inspect_pretty_as_docker_prints_it(fake, run):
    assert ok(run("secret", "inspect", "--pretty", "db_pw")) == (
        f"ID:                   {SECRET_ID}\n"
        "Name:                 db_pw\n"
        "Labels:\n"
        " - env=prod\n"
        "Driver:               \n"
        "Created at:           2016-11-09 19:10:42.285146012 +0000 utc\n"
        "Updated at:           2016-11-09 19:10:42.285146012 +0000 utc\n")
    assert ok(run("config", "inspect", "--pretty", "app.conf")).endswith(
        "Updated at:           2016-11-09 19:10:42.285146012 +0000 utc\nData:\nport=80\n\n")
    assert json.loads(ok(run("secret", "inspect", "db_pw")))[0]["spec"] == {"name": "db_pw",
                                                                            "labels": {"env": "prod"}}
    assert ok(run("secret", "inspect", "-f", "{{.Spec.Name}}", "db_pw")) == "db_pw\n"
    assert "cannot supply extra formatting options" in failed(run("secret", "inspect", "--pretty", "-f",
                                                                  "{{.ID}}", "db_pw"), 2)


def test_rm_prints_what_it_removed_and_the_refusals(fake, run):
    assert ok(run("secret", "rm", "db_pw")) == "db_pw\n"
    fake.answers["secret.rm"] = RPCError("bad_request",
                                         "secret 'db_pw' is in use by the following service: web")
    assert failed(run("secret", "rm", "db_pw"), 1) == (
        "Error: secret 'db_pw' is in use by the following service: web\n")


# -- service create/update --------------------------------------------------------------


def test_the_reference_syntax_is_dockers():
    assert parse_file_ref("secret", "db_pw") == {"source": "db_pw", "target": "db_pw", "uid": "0", "gid": "0",
                                                 "mode": 0o444}
    assert parse_file_ref("secret", "src=a,target=b,uid=1000,gid=1001,mode=0400") == {
        "source": "a", "target": "b", "uid": "1000", "gid": "1001", "mode": 0o400}
    assert parse_file_ref("config", "source=app,target=/etc/app.conf,mode=292")["mode"] == 0o444
    for bad, sentence in (("target=x", "source is required"), ("source=a,colour=red", "invalid field in secret"),
                          ("source=a,mode=rw", "invalid mode specified"), ("a,b", "must be a key=value pair")):
        with pytest.raises(ValueError, match=sentence):
            parse_file_ref("secret", bad)


def test_create_sends_the_references(fake, run):
    assert ok(run("service", "create", "-d", "--name", "web", "--secret", "db_pw",
                  "--secret", "source=api_key,target=key,mode=0400",
                  "--config", "source=app.conf,target=/etc/app.conf", "alpine")) == f"{SID}\n"
    assert fake.params("service.create") == [{
        **CREATE_BASE,
        "secrets": [{"source": "db_pw", "target": "db_pw", "uid": "0", "gid": "0", "mode": 0o444},
                    {"source": "api_key", "target": "key", "uid": "0", "gid": "0", "mode": 0o400}],
        "configs": [{"source": "app.conf", "target": "/etc/app.conf", "uid": "0", "gid": "0", "mode": 0o444}]}]
    assert "invalid field in secret request: colour" in failed(
        run("service", "create", "--secret", "source=a,colour=red", "alpine"), 2)


def test_update_sends_the_pairs_for_a_rotation(fake, run):
    assert ok(run("service", "update", "-d", "--secret-rm", "db_pw", "--secret-add", "source=db_pw_v2,target=db_pw",
                  "--config-rm", "old.conf", "--config-add", "new.conf", "web")) == "web\n"
    assert fake.params("service.update") == [{
        "ref": "web", "secrets_rm": ["db_pw"],
        "secrets_add": [{"source": "db_pw_v2", "target": "db_pw", "uid": "0", "gid": "0", "mode": 0o444}],
        "configs_rm": ["old.conf"],
        "configs_add": [{"source": "new.conf", "target": "new.conf", "uid": "0", "gid": "0", "mode": 0o444}]}]

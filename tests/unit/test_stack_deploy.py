"""swarm/stack/deploy.py: the plan of a deploy against what the swarm holds. The current
specs are made by the control API's own spec_from_params from the params the plan would
send, so a re-deploy that plans nothing proves the comparison mirrors the daemon."""
from __future__ import annotations

import dataclasses

import pytest

from swarm.api import spec
from swarm.manager.controlapi.specparams import spec_from_params
from swarm.manager.controlapi.specrefs import resolve_files
from swarm.manager.controlapi.specupdate import apply_update
from swarm.stack import deploy
from swarm.stack.convert import LABEL_NAMESPACE, convert
from swarm.stack.deploy import Current, plan
from swarm.stack.errors import ComposeError
from swarm.stack.loader import Source, load_sources

FILE = """
services:
  web:
    image: demo:1
    command: httpd -f -p 80
    ports: ['8080:80']
    networks: [front, back]
    environment: {MODE: prod}
    cap_add: [NET_ADMIN]
    healthcheck: {test: [CMD, 'true'], interval: 5s}
    deploy:
      replicas: 2
      update_config: {parallelism: 1, delay: 1s}
      resources: {limits: {memory: 64M}}
    secrets: [pw]
    configs: [{source: conf, target: /etc/app.conf}]
  db:
    image: demo:1
    networks:
      back: {aliases: [database]}
    volumes: ['data:/data']
  agent:
    image: demo:1
    deploy: {mode: global}
networks: {front: {}, back: {attachable: true}}
volumes: {data: {}}
secrets: {pw: {file: pw.txt}}
configs: {conf: {file: app.conf}}
"""
KNOWN = {"secret": {"vote_pw": "sid"}, "config": {"vote_conf": "cid"}}


def stack_of(text: str = FILE):
    c = load_sources([Source("stack.yml", text)], {}, "/srv")
    return convert(c.data, "vote", c.where)


def stored(params: dict) -> dict:
    """What service.inspect shows once the daemon has made a spec of `params`."""
    return spec.to_dict(spec_from_params(resolve_files(dict(params), KNOWN)))


def current_after(stack, image_pin: str = "") -> Current:
    """The swarm after a deploy of `stack` (images pinned to `image_pin` if given)."""
    current = Current()
    for name in stack.networks:
        current.networks[name] = {"id": name, "name": name, "labels": {LABEL_NAMESPACE: "vote"}}
    for i, (short, params) in enumerate(sorted(stack.services.items())):
        view = stored(params)
        if image_pin:
            view["container"]["image"] = params["image"] + image_pin
        current.services[params["name"]] = {"id": f"id{i}", "spec": view}
    current.secrets = {"vote_pw": {"id": "sid", "name": "vote_pw"}}
    current.configs = {"vote_conf": {"id": "cid", "name": "vote_conf"}}
    return current


DATA = {"secret": {"vote_pw": b"pw"}, "config": {"vote_conf": b"conf"}}


def test_first_deploy_creates_everything_in_dockers_order():
    steps = plan(stack_of(), Current(), DATA)
    assert [s.message for s in steps] == [
        "Creating network vote_back", "Creating network vote_default", "Creating network vote_front",
        "Creating secret vote_pw",
        "Creating config vote_conf", "Creating service vote_agent", "Creating service vote_db",
        "Creating service vote_web"]
    net = steps[0].params
    assert net == {"name": "vote_back", "driver": "overlay", "attachable": True, "labels": {LABEL_NAMESPACE: "vote"}}
    assert steps[3].params == {"name": "vote_pw", "labels": {LABEL_NAMESPACE: "vote"}, "data": b"pw"}


@pytest.mark.parametrize("resolve", ["changed", "never"])
def test_redeploy_of_the_same_file_changes_nothing(resolve):
    st = stack_of()
    assert plan(st, current_after(st, "@sha256:" + "a" * 64), DATA, resolve_image=resolve) == []


def test_redeploy_with_resolve_always_only_asks_the_registry_again():
    st = stack_of()
    steps = plan(st, current_after(st), DATA)
    assert {s.method for s in steps} == {"service.update"}
    assert all(set(s.params) == {"ref", "image"} for s in steps)


def test_a_changed_service_is_updated_alone_with_every_field():
    st = stack_of()
    current = current_after(st)
    changed = stack_of(FILE.replace("environment: {MODE: prod}", "environment: {MODE: dev}"))
    steps = plan(changed, current, DATA, resolve_image="changed")
    assert [s.message for s in steps] == ["Updating service vote_web (id: id2)"]
    update = steps[0].params
    assert update["env"] == ["MODE=dev"] and update["no_resolve_image"] is True
    assert update["cap_add"] == ["RESET", "CAP_NET_ADMIN"]
    # the daemon's update of the stored spec with these params gives exactly the new spec
    old = spec_from_params(resolve_files(dict(st.services["web"]), KNOWN))
    new = apply_update(old, resolve_files({k: v for k, v in update.items() if k not in ("ref", "no_resolve_image")},
                                          KNOWN))
    assert new == spec_from_params(resolve_files(dict(changed.services["web"]), KNOWN))


def test_a_key_removed_from_the_file_goes_back_to_its_default():
    st = stack_of()
    changed = stack_of(FILE.replace("    cap_add: [NET_ADMIN]\n", "").replace(
        "    healthcheck: {test: [CMD, 'true'], interval: 5s}\n", ""))
    steps = plan(changed, current_after(st), DATA, resolve_image="never")
    update = steps[0].params
    old = spec_from_params(resolve_files(dict(st.services["web"]), KNOWN))
    new = apply_update(old, resolve_files({k: v for k, v in update.items() if k not in ("ref", "no_resolve_image")},
                                          KNOWN))
    assert new.container.cap_add == () and new.container.healthcheck is None


def test_a_changed_image_is_resolved_unless_never():
    st = stack_of()
    current = current_after(st, "@sha256:" + "a" * 64)
    changed = stack_of(FILE.replace("image: demo:1\n    command", "image: demo:2\n    command"))
    steps = plan(changed, current, DATA, resolve_image="changed")
    assert len(steps) == 1 and steps[0].params["image"] == "demo:2" and "no_resolve_image" not in steps[0].params


def test_prune_removes_services_no_longer_in_the_file():
    st = stack_of()
    smaller = stack_of(FILE.replace("  agent:\n    image: demo:1\n    deploy: {mode: global}\n", ""))
    assert plan(smaller, current_after(st), DATA, resolve_image="never") == []
    steps = plan(smaller, current_after(st), DATA, resolve_image="never", prune=True)
    assert [(s.method, s.params, s.message) for s in steps] == [
        ("service.rm", {"refs": ["id0"]}, "Removing service vote_agent")]


def test_refusals_before_anything_is_done():
    st = stack_of()
    with pytest.raises(ComposeError, match="cannot change its mode from global to replicated"):
        plan(stack_of(FILE.replace("deploy: {mode: global}", "deploy: {mode: replicated}")), current_after(st), DATA)
    foreign = Current(networks={"vote_back": {"id": "n", "name": "vote_back", "labels": {}}})
    with pytest.raises(ComposeError, match="network vote_back already exists and is not part of stack vote"):
        plan(st, foreign, DATA)
    ext = stack_of(FILE.replace("networks: {front: {}, back: {attachable: true}}",
                                "networks: {front: {external: true}, back: {}}"))
    with pytest.raises(ComposeError, match='network "front" is declared as external, but could not be found'):
        plan(ext, Current(), DATA)


def test_secret_data_is_read_from_the_file(tmp_path):
    (tmp_path / "pw.txt").write_bytes(b"hunter2\n")
    c = load_sources([Source("s.yml", "services:\n  a:\n    image: x\n    secrets: [pw, missing]\nsecrets:\n"
                                      "  pw:\n    file: pw.txt\n  missing:\n    file: nope.txt\n")], {}, str(tmp_path))
    st = convert(c.data, "s", c.where)
    with pytest.raises(ComposeError, match="cannot read the file of secret s_missing"):
        deploy.read_data(st.secrets, {}, "secret")
    assert deploy.read_data(st.secrets[1:], {}, "secret") == {"s_pw": b"hunter2\n"}


class FakeDaemon:
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def call(self, method, params=None, timeout=10.0):
        self.calls.append((method, params))
        return self.answers.get(method, {"id": "new"})


def test_apply_prints_dockers_lines_and_warnings():
    lines, warnings = [], []
    daemon = FakeDaemon({"service.create": {"id": "s1", "warnings": ["image demo:1 could not be accessed"]}})
    ids = deploy.apply([deploy.Step("network.create", {"name": "n"}, "Creating network n"),
                        deploy.Step("service.create", {"name": "s"}, "Creating service s")], daemon, lines.append,
                       warnings.append)
    assert ids == ["s1"] and lines == ["Creating network n", "Creating service s"]
    assert warnings == ["image demo:1 could not be accessed"]


def test_remove_order_and_nothing_found():
    rows = {"service.ls": [{"id": "s2", "name": "v_b"}, {"id": "s1", "name": "v_a"}],
            "network.ls": [{"id": "n1", "name": "v_default"}], "secret.ls": [{"id": "x", "name": "v_pw"}],
            "config.ls": []}
    daemon = FakeDaemon(rows)
    lines: list[str] = []
    assert deploy.remove(daemon, "v", lines.append, lines.append)
    assert lines == ["Removing service v_a", "Removing service v_b", "Removing secret v_pw",
                     "Removing network v_default"]
    assert daemon.calls[0] == ("service.ls", {"filters": {"label": [f"{LABEL_NAMESPACE}=v"]}})
    empty = FakeDaemon({"service.ls": [], "network.ls": [], "secret.ls": [], "config.ls": []})
    said: list[str] = []
    assert deploy.remove(empty, "v", said.append, said.append) and said == ["Nothing found in stack: v"]


def test_spec_defaults_cover_every_field():
    """current_params reads every field a spec has (a new field would make re-deploys differ)."""
    s = spec.to_dict(spec.ServiceSpec("x", spec.ContainerSpec("i")))
    have = deploy.current_params(s, {})
    assert have == deploy.desired_params({"image": "i", "replicas": 1, "mode": "replicated"})
    assert {f.name for f in dataclasses.fields(spec.ContainerSpec)} - {"limits", "force_update"} <= {
        "image", "command", "env", "mounts", "stop_grace_period", "entrypoint", "hostname", "user", "groups",
        "workdir", "init", "tty", "stop_signal", "read_only", "cap_add", "cap_drop", "sysctls", "ulimits",
        "pids_limit", "oom_score_adj", "dns", "hosts", "labels", "log_driver", "healthcheck", "secrets", "configs"}

"""swarm/stack/convert.py: compose -> the control API's params, cases ported from docker/cli's
cli/compose/convert tests (compose_test.go, service_test.go, volume_test.go)."""
from __future__ import annotations

import pytest

from swarm.stack.convert import LABEL_IMAGE, LABEL_NAMESPACE, FileObject, convert, parse_duration
from swarm.stack.errors import ComposeError
from swarm.stack.loader import Source, load_sources

NS = {LABEL_NAMESPACE: "foo"}


def stack_of(text: str, name: str = "foo", environ=None):
    c = load_sources([Source("stack.yml", text)], environ or {}, "/srv")
    return convert(c.data, name, c.where)


def service(text: str, svc: str = "web"):
    return stack_of(text).services[svc]


def bad(text: str) -> str:
    with pytest.raises(ComposeError) as caught:
        stack_of(text)
    return caught.value.message


def test_networks_as_docker_names_and_labels_them():     # TestNetworks
    st = stack_of("services:\n  a:\n    image: x\n    networks: [normal, outside, attachablenet, named]\n"
                  "  b:\n    image: x\n"
                  "networks:\n  normal:\n    driver: overlay\n    labels: {something: labeled}\n    ipam:\n"
                  "      config: [{subnet: 10.0.9.0/24}]\n  outside:\n    external: true\n    name: special\n"
                  "  attachablenet:\n    attachable: true\n  named:\n    name: othername\n")
    assert st.networks == {
        "foo_default": {"name": "foo_default", "driver": "overlay", "attachable": False, "labels": NS},
        "foo_normal": {"name": "foo_normal", "driver": "overlay", "attachable": False, "subnet": "10.0.9.0/24",
                       "labels": {**NS, "something": "labeled"}},
        "foo_attachablenet": {"name": "foo_attachablenet", "driver": "overlay", "attachable": True, "labels": NS},
        "othername": {"name": "othername", "driver": "overlay", "attachable": False, "labels": NS},
    }
    assert st.external_networks == ["special"]


def test_service_networks_get_the_short_name_as_alias_sorted_by_target():   # TestConvertServiceNetworks
    p = service("services:\n  web:\n    image: x\n    networks:\n      front:\n        aliases: [alias1]\n"
                "      back:\nnetworks:\n  front:\n  back:\n    name: custom\n")
    assert p["networks"] == [{"target": "custom", "aliases": ["web"]},
                             {"target": "foo_front", "aliases": ["alias1", "web"]}]


def test_only_default_network():   # TestConvertServiceNetworksOnlyDefault
    assert service("services:\n  web:\n    image: x\n")["networks"] == [{"target": "foo_default", "aliases": ["web"]}]


def test_secrets_and_configs():   # TestSecrets, TestConfigs, TestConvertFileObject(Defaults)
    st = stack_of("services:\n  web:\n    image: x\n    secrets: [one, {source: ext, target: t, uid: '1', gid: '2', "
                  "mode: 0400}]\n    configs: [conf]\nsecrets:\n  one:\n    file: ./s.txt\n    labels: {l: v}\n"
                  "  ext:\n    external: true\nconfigs:\n  conf:\n    file: /etc/c.conf\n    name: real\n")
    assert st.secrets == [FileObject("foo_one", {**NS, "l": "v"}, file="/srv/s.txt")]
    assert st.external_secrets == ["ext"]
    assert st.configs == [FileObject("real", NS, file="/etc/c.conf")]
    web = st.services["web"]
    assert web["secrets"] == [{"source": "ext", "target": "t", "uid": "1", "gid": "2", "mode": 0o400},
                              {"source": "foo_one", "target": "one", "uid": "0", "gid": "0", "mode": 0o444}]
    assert web["configs"] == [{"source": "real", "target": "conf", "uid": "0", "gid": "0", "mode": 0o444}]


def test_undefined_secret_names_the_key():
    assert bad("services:\n  web:\n    image: x\n    secrets: [nope]\n") == (
        "stack.yml, line 4: services.web.secrets[0] names the undefined secret 'nope' (declare it under the "
        "top-level secrets:)")


def test_volumes_to_mounts():   # TestConvertVolumeToMount*
    p = service("services:\n  web:\n    image: x\n    volumes:\n      - data:/data\n      - ext:/ext:ro\n"
                "      - /anon\n      - /host:/h\n      - {type: tmpfs, target: /t, tmpfs: {size: 64m}}\n"
                "    tmpfs: ['/run:size=1m,mode=1777']\n"
                "volumes:\n  data:\n    labels: {k: v}\n  ext:\n    external: true\n    name: special\n")
    assert p["mounts"] == [
        {"type": "volume", "target": "/data", "source": "foo_data", "readonly": False,
         "volume_labels": {**NS, "k": "v"}},
        {"type": "volume", "target": "/ext", "source": "special", "readonly": True},
        {"type": "volume", "target": "/anon", "source": "", "readonly": False},
        {"type": "bind", "target": "/h", "source": "/host", "readonly": False},
        {"type": "tmpfs", "target": "/t", "source": "", "readonly": False, "tmpfs_size": 64 << 20},
        {"type": "tmpfs", "target": "/run", "source": "", "readonly": False, "tmpfs_size": 1 << 20,
         "tmpfs_mode": 0o1777},
    ]


def test_undefined_volume():   # TestConvertVolumeToMountVolumeDoesNotExist
    assert "names the undefined volume 'unknown'" in bad("services:\n  web:\n    image: x\n    volumes: "
                                                         "['unknown:/data']\n")


def test_deploy_keys():
    p = service("services:\n  web:\n    image: demo:1\n    deploy:\n      replicas: 3\n      labels: {a: b}\n"
                "      endpoint_mode: dnsrr\n      placement:\n        constraints: [node.role==worker]\n"
                "        preferences: [{spread: node.labels.zone}]\n        max_replicas_per_node: 2\n"
                "      resources:\n        limits: {cpus: '0.5', memory: 64M, pids: 100}\n"
                "        reservations: {cpus: '0.25', memory: 32M}\n"
                "      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 3, window: 1m}\n"
                "      update_config: {parallelism: 2, delay: 10s, order: start-first, failure_action: rollback}\n"
                "      rollback_config: {parallelism: 0}\n")
    assert p["labels"] == {"a": "b", **NS, LABEL_IMAGE: "demo:1"}
    assert (p["mode"], p["replicas"], p["endpoint_mode"]) == ("replicated", 3, "dnsrr")
    assert p["constraints"] == ["node.role==worker"] and p["placement_prefs"] == ["spread=node.labels.zone"]
    assert p["max_replicas_per_node"] == 2
    assert (p["limit_cpu"], p["limit_memory"], p["limit_pids"]) == (500_000_000, 64 << 20, 100)
    assert (p["reserve_cpu"], p["reserve_memory"]) == (250_000_000, 32 << 20)
    assert (p["restart_condition"], p["restart_delay"], p["restart_max_attempts"], p["restart_window"]) == \
        ("on-failure", 2.0, 3, 60.0)
    assert p["update_config"] == {"parallelism": 2, "delay": 10.0, "failure_action": "rollback", "monitor": 5.0,
                                  "max_failure_ratio": 0.0, "order": "start-first"}
    assert p["rollback_config"]["parallelism"] == 0


@pytest.mark.parametrize("restart,expected", [    # TestConvertRestartPolicy (the legacy restart:)
    ("always", ("any", 0)), ("unless-stopped", ("any", 0)), ("on-failure:5", ("on-failure", 5)), ("no", None)])
def test_legacy_restart(restart, expected):
    p = service(f"services:\n  web:\n    image: x\n    restart: '{restart}'\n")
    got = (p["restart_condition"], p["restart_max_attempts"]) if "restart_condition" in p else None
    assert got == expected


def test_container_keys():
    p = service("services:\n  web:\n    image: x\n    command: [a, b]\n    entrypoint: /bin/sh -c\n"
                "    environment: {B: '2', A: '1', UNSET: null}\n    hostname: h\n    user: '1000'\n"
                "    working_dir: /w\n    read_only: true\n    init: true\n    tty: true\n    stop_signal: SIGINT\n"
                "    stop_grace_period: 1m30s\n    cap_add: [net_admin, ALL]\n    cap_drop: [CAP_CHOWN]\n"
                "    sysctls: {net.core.somaxconn: 1024}\n    ulimits: {nofile: {soft: 10, hard: 20}, nproc: 5}\n"
                "    logging: {driver: local, options: {max-size: 1m}}\n    extra_hosts: ['db:10.0.0.2']\n"
                "    dns: [1.1.1.1]\n    dns_search: [example.com]\n    labels: {c: d}\n    group_add: [wheel]\n"
                "    oom_score_adj: 100\n    healthcheck:\n      test: [CMD, 'true']\n      interval: 5s\n"
                "      retries: 2\n")
    assert p["command"] == ["a", "b"] and p["entrypoint"] == ["/bin/sh", "-c"]
    assert p["env"] == ["A=1", "B=2"]            # sorted; a variable without a value left out
    assert (p["hostname"], p["user"], p["workdir"]) == ("h", "1000", "/w")
    assert p["read_only"] and p["init"] and p["tty"] and p["stop_signal"] == "SIGINT"
    assert p["stop_grace_period"] == 90.0
    assert p["cap_add"] == ["ALL"] and p["cap_drop"] == ["CAP_CHOWN"]
    assert p["sysctls"] == {"net.core.somaxconn": "1024"}
    assert p["ulimits"] == [{"name": "nofile", "soft": 10, "hard": 20}, {"name": "nproc", "soft": 5, "hard": 5}]
    assert (p["log_driver"], p["log_opts"]) == ("local", {"max-size": "1m"})
    assert p["hosts"] == ["10.0.0.2 db"]       # TestConvertExtraHosts: SwarmKit's "IP HOST"
    assert p["dns"] == ["1.1.1.1"] and p["dns_search"] == ["example.com"]
    assert p["container_labels"] == {"c": "d", **NS} and p["groups"] == ["wheel"] and p["oom_score_adj"] == 100
    assert p["healthcheck"] == {"test": ["CMD", "true"], "interval": 5.0, "timeout": 0.0, "start_period": 0.0,
                                "start_interval": 0.0, "retries": 2}


def test_healthcheck_disable():   # TestConvertHealthcheckDisable(WithTest)
    assert service("services:\n  web:\n    image: x\n    healthcheck: {disable: true}\n")["healthcheck"] == \
        {"test": ["NONE"]}
    assert "test and disable can't be set at the same time" in bad(
        "services:\n  web:\n    image: x\n    healthcheck: {disable: true, test: [CMD, x]}\n")


def test_ports_sorted():   # TestConvertEndpointSpec
    p = service("services:\n  web:\n    image: x\n    ports: ['8080:80/udp', '53:53', {target: 81, mode: host, "
                "published: 81}]\n")
    assert p["ports"] == [{"target": 53, "published": 53, "protocol": "tcp", "mode": "ingress"},
                          {"target": 81, "published": 81, "protocol": "tcp", "mode": "host"},
                          {"target": 80, "published": 8080, "protocol": "udp", "mode": "ingress"}]


def test_global_with_replicas_is_refused():   # convertDeployMode
    assert bad("services:\n  web:\n    image: x\n    deploy:\n      mode: global\n      replicas: 2\n") == \
        "stack.yml, line 6: services.web.deploy.replicas can only be used with replicated or replicated-job mode"


def test_no_image():
    assert "services.web has no image" in bad("services:\n  web:\n    hostname: x\n")


def test_replicas_that_are_not_a_number():
    assert bad("services:\n  web:\n    image: x\n    deploy:\n      replicas: three\n") == \
        "stack.yml, line 5: services.web.deploy.replicas must be a number of replicas, not 'three'"


def test_unsupported_options_reported_as_docker():
    st = stack_of("services:\n  web:\n    image: x\n    build: .\n    restart: always\n    depends_on: [db]\n"
                  "    container_name: cc\n  db:\n    image: y\n    links: [web]\n")
    assert st.unsupported == ["build", "depends_on", "links", "restart"]
    assert list(st.deprecated) == ["container_name"]


def test_forbidden_options_fail():
    assert bad("services:\n  web:\n    image: x\n    mem_limit: 1g\n") == (
        "stack.yml, line 4: services.web.mem_limit is not supported by swarm stacks: Set resource limits using "
        "deploy.resources")


def test_only_overlay_networks():
    assert "only the overlay driver" in bad("services:\n  web:\n    image: x\n    networks: [n]\nnetworks:\n"
                                            "  n:\n    driver: bridge\n")


@pytest.mark.parametrize("text,seconds", [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), (3, 3.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds

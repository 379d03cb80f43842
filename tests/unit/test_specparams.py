"""The control API's service specs: every field of `service create` checked before any write,
and `service update`'s X_add/X_rm pairs merged as docker/cli's update.go does."""
from __future__ import annotations

import dataclasses

import msgspec
import pytest

from swarm.api import spec
from swarm.api.errors import ApiError
from swarm.manager.controlapi.specparams import spec_from_params
from swarm.manager.controlapi.specupdate import apply_update, params_of

BASE = {"name": "web", "image": "demo:1"}

FULL = {
    **BASE, "command": ["-c", "echo hi"], "entrypoint": ["/bin/sh"], "env": ["A=1", "SLOT={{.Task.Slot}}"],
    "hostname": "{{.Service.Name}}-{{.Task.Slot}}", "user": "app:staff", "groups": ["audio", "42"],
    "workdir": "/srv", "init": True, "tty": True, "stop_signal": "SIGUSR1", "read_only": True,
    "cap_add": ["net_admin", "CAP_SYS_TIME"], "cap_drop": ["chown"], "sysctls": {"net.core.somaxconn": "1024"},
    "ulimits": [{"name": "nproc", "soft": 64, "hard": 64}, {"name": "nofile", "soft": 1024, "hard": 2048}],
    "limit_pids": 20, "oom_score_adj": -500, "dns": ["10.0.0.2"], "dns_search": ["example.org"],
    "dns_options": ["ndots:2"], "hosts": ["10.0.0.5 db cache"], "container_labels": {"c": "1"},
    "labels": {"tier": "front"}, "log_driver": "local", "log_opts": {"max-size": "1m", "max-file": "2"},
    "placement_prefs": ["spread=node.labels.zone"], "max_replicas_per_node": 2,
    "mounts": [{"type": "bind", "source": "/srv/{{.Node.Hostname}}", "target": "/data", "readonly": True,
                "bind_propagation": "rprivate", "bind_recursive": "readonly"},
               {"type": "volume", "source": "cache", "target": "/cache", "volume_nocopy": True,
                "volume_labels": {"a": "b"}, "volume_opts": {"type": "tmpfs", "device": "tmpfs"}},
               {"type": "volume", "target": "/anon"},
               {"type": "tmpfs", "target": "/tmp", "tmpfs_size": 64 << 20, "tmpfs_mode": 0o1770}],
}


def test_every_field_reaches_the_spec_and_comes_back():
    s = spec_from_params(FULL)
    c = s.container
    assert (c.entrypoint, c.command, c.user, c.groups, c.workdir, c.init, c.tty, c.read_only) == (
        ("/bin/sh",), ("-c", "echo hi"), "app:staff", ("audio", "42"), "/srv", True, True, True)
    assert (c.cap_add, c.cap_drop) == (("CAP_NET_ADMIN", "CAP_SYS_TIME"), ("CAP_CHOWN",))
    assert c.ulimits == (spec.Ulimit("nofile", 1024, 2048), spec.Ulimit("nproc", 64, 64))   # by name, as docker
    assert c.dns == spec.DNSConfig(("10.0.0.2",), ("example.org",), ("ndots:2",))
    assert (c.pids_limit, c.oom_score_adj, c.hosts, c.labels) == (20, -500, ("10.0.0.5 db cache",), {"c": "1"})
    assert c.log_driver == spec.LogDriver("local", {"max-size": "1m", "max-file": "2"})
    assert c.mounts[1] == spec.Mount("volume", "/cache", "cache", volume_nocopy=True, volume_labels={"a": "b"},
                                     volume_opts={"type": "tmpfs", "device": "tmpfs"})
    assert c.mounts[3].tmpfs_mode == 0o1770 and c.mounts[2].source == ""
    assert (s.placement_prefs, s.max_replicas_per_node, s.labels) == (
        ("spread=node.labels.zone",), 2, {"tier": "front"})
    assert spec_from_params(params_of(s)) == s
    assert spec_from_params(BASE).container == spec.ContainerSpec("demo:1")   # docker's defaults


@pytest.mark.parametrize("params, flag", [
    ({"cap_add": ["NET_ADMN"]}, "--cap-add: unknown capability 'NET_ADMN'"),
    ({"cap_drop": ["CAP_ALL"]}, "--cap-drop"),
    ({"sysctls": {"kernel.panic": "1"}}, "--sysctl: sysctl 'kernel.panic' is not allowed"),
    ({"sysctls": {"kernel.hostname": "x"}}, "--sysctl"),
    ({"ulimits": [{"name": "nofile", "soft": 10, "hard": 5}]}, "--ulimit"),
    ({"ulimits": [{"name": "files", "soft": 1, "hard": 1}]}, "--ulimit"),
    ({"ulimits": [{"name": "nofile", "soft": "1", "hard": 1}]}, "--ulimit"),
    ({"stop_signal": "SIGNOPE"}, "--stop-signal"),
    ({"hostname": "{{.Task.Foo}}"}, "invalid template in --hostname"),
    ({"env": ["A={{.Service.Nope}}"]}, "invalid template in --env A"),
    ({"mounts": [{"type": "volume", "source": "v-{{.Nodes}}", "target": "/v"}]}, "invalid template in --mount"),
    ({"hostname": "a b"}, "--hostname"),
    ({"hostname": "x" * 65}, "--hostname"),
    ({"user": "a b"}, "--user"),
    ({"groups": ["a:b"]}, "--group"),
    ({"workdir": "srv"}, "--workdir"),
    ({"init": "yes"}, "--init"),
    ({"tty": 1}, "--tty"),
    ({"limit_pids": -1}, "--limit-pids"),
    ({"oom_score_adj": 1001}, "--oom-score-adj"),
    ({"dns": ["10.0.0"]}, "--dns"),
    ({"dns_search": ["-x-"]}, "--dns-search"),
    ({"dns_options": ["a b"]}, "--dns-option"),
    ({"hosts": ["db"]}, "--host"),
    ({"hosts": ["300.1.1.1 db"]}, "--host"),
    ({"container_labels": {"": "x"}}, "--container-label"),
    ({"log_driver": "syslog"}, "--log-driver"),
    ({"log_opts": {"max-size": "big"}}, "--log-opt"),
    ({"log_driver": "local", "log_opts": {"labels": "a"}}, "--log-opt"),
    ({"placement_prefs": ["spread=zone"]}, "--placement-pref"),
    ({"placement_prefs": ["pack=node.labels.a"]}, "--placement-pref"),
    ({"mode": "daemonset"}, "invalid mode"),
    ({"mode": "global-job", "replicas": 3}, "--replicas can only be used with replicated or replicated-job"),
    ({"mode": "replicated", "max_concurrent": 2}, "--max-concurrent can only be used with replicated-job"),
    ({"mode": "replicated-job", "max_concurrent": -1}, "--max-concurrent"),
    ({"mode": "global", "max_replicas_per_node": 1}, "--replicas-max-per-node can only be used"),
    ({"mounts": [{"type": "bind", "source": "relative", "target": "/x"}]}, "--mount: the bind source"),
    ({"mounts": [{"type": "volume", "source": "a/b", "target": "/x"}]}, "--mount: 'a/b' is not a volume name"),
    ({"mounts": [{"type": "tmpfs", "target": "/t"}, {"type": "volume", "target": "/t"}]},
     "--mount: duplicate mount point /t"),
    ({"mounts": [{"type": "volume", "target": "/t", "tmpfs_size": 5}]}, "cannot mix 'tmpfs-*' options"),
    ({"mounts": [{"type": "bind", "source": "/a", "target": "/t", "bind_recursive": "readonly"}]}, "--mount"),
    ({"mounts": [{"type": "volume", "target": "/t", "volume_driver": "nfs"}]}, "--mount: volume driver"),
    ({"mounts": [{"type": "tmpfs", "target": "/t", "tmpfs_mode": 0o17777}]}, "--mount"),
    ({"mounts": [{"type": "tmpfs", "target": "/t", "readonly": "yes"}]}, "--mount"),
])
def test_bad_fields_are_refused_in_one_sentence_naming_the_flag(params, flag):
    with pytest.raises(ApiError) as err:
        spec_from_params({**BASE, **params})
    assert err.value.code == "bad_request" and "\n" not in err.value.message
    assert flag in err.value.message


def test_a_template_may_name_a_label_the_service_has():
    s = spec_from_params({**BASE, "labels": {"zone": "a"}, "hostname": "{{index .Service.Labels \"zone\"}}"})
    assert s.container.hostname == '{{index .Service.Labels "zone"}}'


def test_jobs_keep_their_completions_and_concurrency():
    job = spec_from_params({**BASE, "mode": "replicated-job", "replicas": 5, "max_concurrent": 2})
    assert (job.mode, job.replicas, job.max_concurrent) == ("replicated-job", 5, 2)
    assert spec_from_params({**BASE, "mode": "global-job"}).replicas == 0
    assert apply_update(job, {"replicas": 6}).replicas == 6
    with pytest.raises(ApiError, match="--replicas can only be used"):
        apply_update(spec_from_params({**BASE, "mode": "global"}), {"replicas": 2})


# -- update ------------------------------------------------------------------------------------

CURRENT = spec_from_params(FULL)


def test_update_changes_only_what_is_given():
    assert apply_update(CURRENT, {}) == CURRENT
    new = apply_update(CURRENT, {"entrypoint": [], "hostname": "", "read_only": False, "init": None})
    assert (new.container.entrypoint, new.container.hostname, new.container.read_only, new.container.init) == (
        (), "", False, None)
    assert new.container.mounts == CURRENT.container.mounts and new.labels == CURRENT.labels


def test_update_merges_maps_lists_and_mounts_as_docker():
    new = apply_update(CURRENT, {
        "labels_add": {"v": "2"}, "labels_rm": ["tier"], "container_labels_add": {"c": "2"},
        "sysctls_add": {"net.ipv4.ip_forward": "1"}, "sysctls_rm": ["net.core.somaxconn"],
        "groups_add": ["wheel", "audio"], "groups_rm": ["42"],
        "dns_add": ["10.0.0.3", "10.0.0.2"], "dns_rm": ["10.0.0.9"], "dns_search_rm": ["example.org"],
        "dns_options_add": ["debug"], "hosts_add": ["10.0.0.7 web"], "hosts_rm": ["db:10.0.0.5", "other"],
        "ulimits_add": [{"name": "core", "soft": 0, "hard": 0}, {"name": "nproc", "soft": 10, "hard": 10}],
        "ulimits_rm": ["nofile"], "mounts_add": [{"type": "tmpfs", "target": "/cache"},
                                                 {"type": "tmpfs", "target": "/new"}],
        "mounts_rm": ["/anon"], "placement_prefs_add": ["spread=node.labels.rack"],
        "placement_prefs_rm": ["spread=node.labels.zone"], "env_add": ["B=2"], "env_rm": ["A"],
    })
    c = new.container
    assert new.labels == {"v": "2"} and c.labels == {"c": "2"}
    assert c.sysctls == {"net.ipv4.ip_forward": "1"}
    assert c.groups == ("audio", "wheel")                       # docker sorts them
    assert c.dns == spec.DNSConfig(("10.0.0.2", "10.0.0.3"), (), ("ndots:2", "debug"))
    assert c.hosts == ("10.0.0.5 cache", "10.0.0.7 web")
    assert c.ulimits == (spec.Ulimit("core", 0, 0), spec.Ulimit("nproc", 10, 10))
    assert [(m.type, m.target) for m in c.mounts] == [("bind", "/data"), ("tmpfs", "/cache"), ("tmpfs", "/tmp"),
                                                      ("tmpfs", "/new")]
    assert new.placement_prefs == ("spread=node.labels.rack",)
    assert c.env == ("SLOT={{.Task.Slot}}", "B=2")


def test_update_of_the_log_driver():
    assert apply_update(CURRENT, {"log_opts": {"max-size": "5m"}}).container.log_driver == spec.LogDriver(
        "local", {"max-size": "5m"})
    assert apply_update(CURRENT, {"log_driver": "json-file"}).container.log_driver == spec.LogDriver("json-file")


def test_update_refuses_what_create_refuses():
    for params in ({"sysctls_add": {"kernel.panic": "1"}}, {"ulimits_add": [{"name": "x", "soft": 1, "hard": 1}]},
                   {"cap_add": ["nope"]}, {"hostname": "{{.Task.Nope}}"}, {"mounts_add": [{"type": "x"}]},
                   {"mounts_add": [{"type": "tmpfs", "target": "/a"}, {"type": "tmpfs", "target": "/a"}]},
                   {"labels_add": {"a": 1}}, {"env_rm": "A"}, {"hosts_add": ["nope"]}):
        with pytest.raises(ApiError) as err:
            apply_update(CURRENT, params)
        assert err.value.code == "bad_request" and "\n" not in err.value.message


# docker/cli's TestUpdateCaps, case by case: (spec add, spec drop, --cap-add, --cap-drop) -> (add, drop)
CAP_CASES = [
    ([], [], ["CAP_NET_ADMIN"], [], ["CAP_NET_ADMIN"], []),
    ([], [], [], ["CAP_NET_ADMIN"], [], ["CAP_NET_ADMIN"]),
    ([], ["CAP_NET_ADMIN"], ["CAP_NET_ADMIN"], [], [], []),
    (["CAP_NET_ADMIN"], [], ["CAP_CHOWN"], ["CAP_NET_ADMIN"], ["CAP_CHOWN"], []),
    (["ALL"], [], ["CAP_NET_ADMIN"], [], ["ALL"], []),
    (["ALL"], [], ["CAP_NET_ADMIN"], ["ALL"], ["CAP_NET_ADMIN"], []),
    ([], [], ["CAP_NET_ADMIN"], ["CAP_NET_ADMIN"], ["CAP_NET_ADMIN"], []),
    (["CAP_NET_ADMIN", "CAP_SYS_TIME"], ["CAP_NET_ADMIN", "CAP_SYS_TIME"], ["CAP_CHOWN"], ["ALL"],
     ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_TIME"], ["ALL"]),
    (["CAP_NET_ADMIN"], ["CAP_CHOWN"], ["ALL"], ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"], ["ALL"],
     ["CAP_CHOWN", "CAP_SYS_ADMIN"]),
    (["CAP_NET_ADMIN"], ["CAP_CHOWN"], ["ALL"], ["ALL"], ["ALL"], ["CAP_CHOWN"]),
    (["CAP_KILL"], ["CAP_MKNOD"], ["RESET"], ["RESET"], [], []),
    (["CAP_KILL"], ["CAP_MKNOD"], ["RESET", "CAP_SYSLOG", "CAP_BPF"], ["RESET", "CAP_LEASE", "CAP_BPF"],
     ["CAP_BPF", "CAP_SYSLOG"], ["CAP_LEASE"]),
    (["CAP_KILL"], ["CAP_MKNOD"], ["RESET", "ALL"], ["RESET", "ALL"], ["ALL"], []),
    (["CAP_KILL"], ["CAP_MKNOD"], ["ALL", "RESET"], ["ALL", "RESET"], ["ALL"], []),
    (["CAP_KILL"], [], ["net_raw", "cap_Syslog"], [], ["CAP_KILL", "CAP_NET_RAW", "CAP_SYSLOG"], []),
]


@pytest.mark.parametrize("add, drop, flag_add, flag_drop, want_add, want_drop", CAP_CASES)
def test_update_capabilities_as_docker(add, drop, flag_add, flag_drop, want_add, want_drop):
    current = spec_from_params({**BASE, "cap_add": add, "cap_drop": drop})
    new = apply_update(current, {"cap_add": flag_add, "cap_drop": flag_drop})
    assert (list(new.container.cap_add), list(new.container.cap_drop)) == (want_add, want_drop)


# -- rolling updates and healthchecks ----------------------------------------------------------

ROLLING = {
    **BASE, "update_config": {"parallelism": 2, "delay": 10.0, "failure_action": "rollback", "monitor": 30.0,
                              "max_failure_ratio": 0.25, "order": "start-first"},
    "rollback_config": {"parallelism": 0, "failure_action": "continue"},
    "healthcheck": {"test": ["CMD-SHELL", "wget -q -O- localhost"], "interval": 2.0, "timeout": 1.0,
                    "start_period": 5.0, "start_interval": 0.5, "retries": 4},
}


def test_update_rollback_and_health_configs_reach_the_spec_and_come_back():
    s = spec_from_params(ROLLING)
    assert s.update_config == spec.UpdateConfig(2, 10.0, "rollback", 30.0, 0.25, "start-first")
    assert s.rollback_config == spec.UpdateConfig(parallelism=0, failure_action="continue")   # the rest docker's
    assert s.container.healthcheck == spec.HealthConfig(("CMD-SHELL", "wget -q -O- localhost"), 2.0, 1.0, 5.0, 0.5, 4)
    assert spec_from_params(params_of(s)) == s
    plain = spec_from_params(BASE)
    assert (plain.update_config, plain.rollback_config, plain.container.healthcheck) == (
        spec.UpdateConfig(), spec.UpdateConfig(), None)
    forced = dataclasses.replace(s, container=dataclasses.replace(s.container, force_update=3))
    assert spec_from_params(params_of(forced)) == forced      # --force's counter survives every update
    assert spec_from_params({**BASE, "healthcheck": {"test": ["NONE"]}}).container.healthcheck == spec.HealthConfig(
        ("NONE",))


@pytest.mark.parametrize("params, message", [
    ({"update_config": {"delay": -1}}, "invalid --update-delay: a duration cannot be negative"),
    ({"update_config": {"monitor": -0.5}}, "invalid --update-monitor"),
    ({"update_config": {"delay": "10s"}}, "invalid --update-delay"),
    ({"rollback_config": {"delay": -1}}, "invalid --rollback-delay"),
    ({"update_config": {"parallelism": -1}}, "invalid --update-parallelism -1"),
    ({"update_config": {"parallelism": 1.5}}, "invalid --update-parallelism"),
    ({"rollback_config": {"parallelism": True}}, "invalid --rollback-parallelism"),
    ({"update_config": {"max_failure_ratio": 1.5}}, "invalid --update-max-failure-ratio 1.5"),
    ({"update_config": {"max_failure_ratio": -0.1}}, "invalid --update-max-failure-ratio"),
    ({"update_config": {"max_failure_ratio": float("nan")}}, "invalid --update-max-failure-ratio"),
    ({"update_config": {"failure_action": "explode"}}, "invalid --update-failure-action 'explode'"),
    ({"rollback_config": {"failure_action": "rollback"}}, "invalid --rollback-failure-action 'rollback': "
                                                          "use pause or continue"),
    ({"update_config": {"order": "random"}}, "invalid --update-order 'random': use stop-first or start-first"),
    ({"rollback_config": {"order": 1}}, "invalid --rollback-order"),
    ({"update_config": {"speed": 3}}, "invalid update_config: unknown field 'speed'"),
    ({"update_config": [1]}, "invalid update_config: expected a map"),
    ({"healthcheck": {"retries": -1}}, "invalid --health-retries -1"),
    ({"healthcheck": {"interval": -1.0}}, "invalid --health-interval: a duration cannot be negative"),
    ({"healthcheck": {"timeout": 0.0001}}, "invalid --health-timeout: it cannot be less than 1ms"),
    ({"healthcheck": {"start_period": "5s"}}, "invalid --health-start-period"),
    ({"healthcheck": {"start_interval": -3}}, "invalid --health-start-interval"),
    ({"healthcheck": {"test": ["CMD-SHELL"]}}, "invalid --health-cmd"),
    ({"healthcheck": {"test": ["SHELL", "x"]}}, "invalid --health-cmd"),
    ({"healthcheck": {"test": "curl x"}}, "invalid --health-cmd: a test is a list of strings"),
    ({"healthcheck": {"test": ["NONE"], "retries": 2}}, "--no-healthcheck conflicts with --health-* options"),
    ({"healthcheck": {"cmd": "x"}}, "invalid healthcheck: unknown field 'cmd'"),
    ({"mode": "replicated-job", "update_config": {"delay": 1.0}},
     "update and rollback configuration is not supported for jobs"),
    ({"force_update": -1}, "invalid force_update"),
])
def test_bad_rolling_settings_are_refused_naming_the_flag(params, message):
    with pytest.raises(ApiError) as err:
        spec_from_params({**BASE, **params})
    assert err.value.code == "bad_request" and "\n" not in err.value.message
    assert message in err.value.message


def test_update_merges_the_config_fields_given_into_the_current_ones():
    current = spec_from_params(ROLLING)
    new = apply_update(current, {"update_config": {"delay": 0.0}, "rollback_config": {"order": "start-first"}})
    assert new.update_config == dataclasses.replace(current.update_config, delay=0.0)
    assert new.rollback_config == dataclasses.replace(current.rollback_config, order="start-first")
    assert new.container == current.container
    # from docker's defaults when the service had none given
    assert apply_update(spec_from_params(BASE), {"update_config": {"parallelism": 3}}).update_config == (
        spec.UpdateConfig(parallelism=3))
    with pytest.raises(ApiError, match="--update-max-failure-ratio"):
        apply_update(current, {"update_config": {"max_failure_ratio": 2}})
    with pytest.raises(ApiError, match="not supported for jobs"):
        apply_update(spec_from_params({**BASE, "mode": "replicated-job"}), {"update_config": {"parallelism": 2}})


def test_update_merges_healthcheck_fields_as_docker():
    current = spec_from_params(ROLLING)
    health = current.container.healthcheck
    assert apply_update(current, {"healthcheck": {"retries": 9}}).container.healthcheck == dataclasses.replace(
        health, retries=9)
    # --health-cmd "": back to the image's test, the other settings kept
    assert apply_update(current, {"healthcheck": {"test": []}}).container.healthcheck == dataclasses.replace(
        health, test=())
    # --no-healthcheck replaces the whole
    disabled = apply_update(current, {"healthcheck": {"test": ["NONE"]}})
    assert disabled.container.healthcheck == spec.HealthConfig(("NONE",))
    # and a --health-* flag after it brings the image's test back, with that setting
    assert apply_update(disabled, {"healthcheck": {"interval": 3.0}}).container.healthcheck == spec.HealthConfig(
        interval=3.0)
    # a service with the image's healthcheck gets one with the field given
    assert apply_update(spec_from_params(BASE), {"healthcheck": {"test": ["CMD", "true"]}}).container.healthcheck == (
        spec.HealthConfig(("CMD", "true")))
    with pytest.raises(ApiError, match="--no-healthcheck conflicts"):
        apply_update(current, {"healthcheck": {"test": ["NONE"], "interval": 1.0}})
    with pytest.raises(ApiError, match="--health-interval"):
        apply_update(current, {"healthcheck": {"interval": -1.0}})


def test_force_and_rollback_params_are_the_control_api_s():
    # apply_update leaves them to the control API (a new template, or the previous spec)
    current = spec_from_params(ROLLING)
    assert apply_update(current, {"force": True, "rollback": False}) == current


# -- networks and their aliases ------------------------------------------------------------------

def test_network_aliases_are_stored_per_network_and_come_back():
    s = spec_from_params({**BASE, "networks": [{"target": "n-back", "aliases": ["db", "primary.db", "db"]},
                                               "n-front", {"target": "n-other", "aliases": []}]})
    assert s.networks == ("n-back", "n-front", "n-other")
    assert s.network_aliases == {"n-back": ("db", "primary.db")}           # once each, in order
    assert params_of(s)["networks"] == [{"target": "n-back", "aliases": ["db", "primary.db"]}, "n-front", "n-other"]
    assert spec_from_params(params_of(s)) == s
    # replacing the list replaces the aliases: a network left out takes its aliases with it
    assert apply_update(s, {"networks": ["n-front"]}).network_aliases == {}
    assert apply_update(s, {"image": "demo:2"}).network_aliases == s.network_aliases


@pytest.mark.parametrize("networks, message", [
    ("n-back", "invalid networks"),
    ([{"target": "n-back", "alias": ["db"]}], "invalid networks"),
    ([{"aliases": ["db"]}], "a network name or ID is required"),
    ([{"target": " ", "aliases": ["db"]}], "a network name or ID is required"),
    ([7], "invalid networks"),
    ([{"target": "n-back", "aliases": "db"}], "invalid aliases"),
    ([{"target": "n-back", "aliases": ["a b"]}], "invalid network alias 'a b'"),
    ([{"target": "n-back", "aliases": [""]}], "invalid network alias ''"),
    ([{"target": "n-back", "aliases": ["db..x"]}], "invalid network alias"),
    ([{"target": "n-back", "aliases": ["-db"]}], "invalid network alias"),
    ([{"target": "n-back", "aliases": ["x" * 64]}], "invalid network alias"),
    ([{"target": "n-back", "aliases": [f"a{i}" for i in range(101)]}], "at most 100"),
    (["n-back", {"target": "n-back", "aliases": ["db"]}], "network n-back is given twice"),
])
def test_bad_networks_and_aliases_are_refused_with_one_sentence(networks, message):
    with pytest.raises(ApiError, match=message) as err:
        spec_from_params({**BASE, "networks": networks})
    assert err.value.code == "bad_request" and "\n" not in err.value.message


def _walked(obj):
    """Plain data built field by field with dataclasses.fields, as spec.to_dict first did."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _walked(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_walked(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _walked(v) for k, v in obj.items()}
    return obj


def test_plain_data_has_every_field_also_of_objects_msgspec_built():
    from swarm.api import model
    service = spec.Service("s1", spec_from_params(FULL), 2, 1.0, 2.0, {"net1": "10.0.1.2/24"})
    task = spec.Task("t1", "s1", "web", 3, "n1", "running", service.spec.container, 2,
                     status=spec.TaskStatus("running", "started", "", 1.5, 0, "t1", health="healthy"),
                     networks=(spec.Attachment("net1", "10.0.1.3/24"),), service_labels={"tier": "front"})
    decoded = spec.task_from_dict(model.decode(model.encode(_walked(task))))
    # Built by msgspec, a default is not in the instance's __dict__ (the class holds it).
    mount = msgspec.convert({"type": "volume", "target": "/anon"}, spec.Mount)
    assert "source" not in vars(mount) and mount == spec.Mount("volume", "/anon")
    for obj in (service, task, decoded, mount, spec.TaskStatus()):
        plain = spec.to_dict(obj)
        assert plain == _walked(obj) and model.encode(plain) == model.encode(_walked(obj))
    assert spec.to_dict(mount)["source"] == "" and decoded == task

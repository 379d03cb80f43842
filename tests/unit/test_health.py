"""Healthchecks decided purely (swarm.api.health): the effective check of a task as
Docker merges it, and the monitor's decisions on a fake clock; and the network view
that keeps a task that is not running yet (starting: no healthy check so far) out of
the load balancers and DNS."""
from __future__ import annotations

import dataclasses
import random

import dns.message
import dns.rdatatype
import pytest

from overlay import dns as embedded_dns
from swarm.api import health, model, spec
from swarm.api.health import HEALTHY, STARTING, UNHEALTHY, Check, Monitor, Result
from swarm.api.spec import HealthConfig
from swarm.manager.dispatcher import build_network_view
from tests.unit.test_dispatcher import networked_cluster
from tests.unit.test_reconciler import tasks_of

SECOND = 1_000_000_000


# -- the effective check ------------------------------------------------------------------------

def test_no_healthcheck_anywhere_or_none_disables() -> None:
    assert health.effective(None, None) is None
    assert health.effective(HealthConfig(), None) is None          # only durations, no test
    image = HealthConfig(("CMD", "true"))
    assert health.effective(HealthConfig(("NONE",)), image) is None   # --no-healthcheck over the image's
    assert health.effective(None, HealthConfig(("NONE",))) is None


def test_the_image_check_with_docker_defaults_and_durations_from_nanoseconds() -> None:
    image = health.image_config(["CMD-SHELL", "wget -q -O- localhost || exit 1"], 10 * SECOND, 0, 0, 0, 0)
    assert health.effective(None, image) == Check(("/bin/sh", "-c", "wget -q -O- localhost || exit 1"),
                                                  interval=10.0, timeout=30.0, start_period=0.0,
                                                  start_interval=5.0, retries=3)


def test_the_services_settings_merge_over_the_images_field_by_field() -> None:
    image = health.image_config(["CMD", "check", "--deep"], 10 * SECOND, 2 * SECOND, 60 * SECOND, SECOND, 5)
    # Only the interval and retries given (--health-interval, --health-retries): the rest is the image's.
    assert health.effective(HealthConfig(interval=0.5, retries=2), image) == Check(
        ("check", "--deep"), interval=0.5, timeout=2.0, start_period=60.0, start_interval=1.0, retries=2)
    # A new command keeps the image's durations.
    assert health.effective(HealthConfig(("CMD-SHELL", "exit 0")), image).argv == ("/bin/sh", "-c", "exit 0")
    assert health.effective(HealthConfig(("CMD-SHELL", "exit 0")), image).timeout == 2.0


@pytest.mark.parametrize("config, words", [
    (HealthConfig(("CMD",)), "CMD has no command"),
    (HealthConfig(("CMD-SHELL", "")), "CMD-SHELL has no command"),
    (HealthConfig(("SHELL", "x")), "not NONE, CMD or CMD-SHELL"),
    (HealthConfig(("CMD", "x"), interval=-1.0), "interval must be a duration of 0 or more"),
    (HealthConfig(("CMD", "x"), timeout=float("nan")), "timeout must be a duration"),
    (HealthConfig(("CMD", "x"), retries=-1), "retries cannot be negative"),
])
def test_what_docker_refuses_is_one_sentence_naming_the_setting(config, words) -> None:
    with pytest.raises(ValueError, match=words):
        health.effective(config, None)


def test_a_check_survives_the_bundle_record_and_junk_reads_as_none() -> None:
    check = Check(("/bin/sh", "-c", "true"), 1.5, 2.0, 3.0, 0.5, 4)
    assert Check.from_dict(check.to_dict()) == check
    for junk in (None, "x", {}, {"argv": []}, {"argv": ["x"], "interval": "soon"}):
        assert Check.from_dict(junk) is None


def test_texts_as_docker_and_swarmkit_write_them() -> None:
    assert health.timeout_output(30) == "Health check exceeded timeout (30s)"
    assert health.timeout_output(0.5) == "Health check exceeded timeout (500ms)"
    assert health.timeout_output(1.5) == "Health check exceeded timeout (1.5s)"
    assert health.timeout_output(90) == "Health check exceeded timeout (1m30s)"
    assert health.unhealthy_error(137) == "task: non-zero exit (137): dockerexec: unhealthy container"


# -- the monitor's decisions, on a fake clock ------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0


def run_check(monitor: Monitor, clock: Clock, exit_code: int, took: float = 0.0) -> str | None:
    """Wait the delay the monitor asks for, run one check taking `took` seconds: its status change."""
    clock.now += monitor.next_delay(clock.now)
    start = clock.now
    clock.now += took
    return monitor.record(Result(start, clock.now, exit_code, "out"))


def test_failures_in_the_start_period_do_not_count_and_retries_after_it_make_it_unhealthy() -> None:
    clock = Clock()
    monitor = Monitor(Check(("true",), interval=2.0, start_period=10.0, start_interval=1.0, retries=3), clock.now)
    starts = []
    changes = []
    while monitor.status != UNHEALTHY:
        changes.append(run_check(monitor, clock, 1))
        starts.append(clock.now - 100.0)
    # Every start interval during the start period (nothing counted), then every interval:
    # the check at 10 s is the first past the start period, and the third counted one ends it.
    assert starts == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14]
    assert changes == [None] * 11 + [UNHEALTHY]
    assert monitor.failing_streak == 3 and len(monitor.log) == health.MAX_LOG


def test_the_first_healthy_result_makes_it_healthy_even_in_the_start_period() -> None:
    clock = Clock()
    monitor = Monitor(Check(("true",), interval=30.0, start_period=60.0, start_interval=5.0, retries=1), clock.now)
    assert run_check(monitor, clock, 1) is None and monitor.status == STARTING
    assert run_check(monitor, clock, 0) == HEALTHY
    assert clock.now - 100.0 == 10.0            # start interval between them
    assert monitor.next_delay(clock.now) == 30.0   # healthy: the interval, even within the start period
    # Once healthy, failures count at once (start period or not): retries=1 ends it.
    assert run_check(monitor, clock, 1) == UNHEALTHY
    with pytest.raises(ValueError):
        run_check(monitor, clock, 0)


def test_a_healthy_result_clears_the_failing_streak() -> None:
    clock = Clock()
    monitor = Monitor(Check(("true",), interval=1.0, retries=3), clock.now, status=HEALTHY)
    assert [run_check(monitor, clock, code) for code in (1, 1, 0, 1, 1)] == [None] * 5
    assert monitor.status == HEALTHY and monitor.failing_streak == 2
    assert run_check(monitor, clock, -1) == UNHEALTHY   # -1: killed at its timeout, a failure too


def test_without_a_start_period_the_first_check_waits_one_interval() -> None:
    monitor = Monitor(Check(("true",), interval=30.0, start_interval=5.0), 0.0)
    assert monitor.next_delay(0.0) == 30.0      # Docker's: the start interval applies only in a start period
    with pytest.raises(ValueError):
        Monitor(monitor.check, 0.0, status=UNHEALTHY)


# -- no traffic before the first healthy check ----------------------------------------------------

def _dns_ips(view, net_id: str, name: str) -> set[str]:
    """The A records a task on `net_id` gets for `name`, from the view as the agent compiles it."""
    records = embedded_dns.Records({
        nid: embedded_dns.NetworkRecords(tuple(embedded_dns.ServiceRecord(s.name, s.mode, s.vip or None, s.tasks)
                                               for s in services))
        for nid, services in view.services.items()})
    query = dns.message.make_query(name, dns.rdatatype.A).to_wire()
    reply = embedded_dns.answer(query, records.view([net_id]), rng=random.Random(1)).reply
    return {rd.address for rrset in dns.message.from_wire(reply).answer for rd in rrset}


@pytest.mark.trio
async def test_a_starting_task_is_in_no_vip_map_no_dns_answer_and_no_routing_mesh() -> None:
    store, manager, reconciler, dispatcher, api, front = await networked_cluster()
    nodes = manager.nodes()
    tasks = tasks_of(store)
    starting = {next(t.id for t in tasks if t.service_name == name) for name in ("web", "db")}
    tasks = [dataclasses.replace(t, status=spec.TaskStatus("starting", health="starting"))
             if t.id in starting else t for t in tasks]
    services = {s.id: s for s in api.services().values()}
    networks = {k: model.decode(r.data) for k, r in store.list("network").items()}
    here = next(iter(nodes))

    def ip(t: spec.Task, net: str) -> str:
        return next(a.address.split("/")[0] for a in t.networks if a.network_id == net)

    view = build_network_view(here, networks, nodes, services, tasks)
    ingress = view.ingress_network().id
    table = {s.name: s for s in view.services[front]}
    for name in ("web", "db"):
        running = {ip(t, front) for t in tasks if t.service_name == name and t.id not in starting}
        late = {ip(t, front) for t in tasks if t.service_name == name and t.id in starting}
        assert late and running and set(table[name].tasks) == running   # the VIP's backends (web), dnsrr's
        assert _dns_ips(view, front, f"tasks.{name}") == running
        assert late <= {p.ip for p in view.peers[front]} | {ip(t, front) for t in tasks if t.node_id == here}
    assert _dns_ips(view, front, "db") == set(table["db"].tasks)          # dnsrr: the name answers tasks
    [port] = view.published
    assert set(port.tasks) == {ip(t, ingress) for t in tasks if t.service_name == "web" and t.id not in starting}

    # Once it reports running (its first healthy check), it is in all of them.
    tasks = [dataclasses.replace(t, status=spec.TaskStatus("running", health="healthy"))
             if t.id in starting else t for t in tasks]
    view = build_network_view(here, networks, nodes, services, tasks)
    table = {s.name: s for s in view.services[front]}
    assert {ip(t, front) for t in tasks if t.service_name == "web"} == set(table["web"].tasks)
    assert _dns_ips(view, front, "tasks.db") == {ip(t, front) for t in tasks if t.service_name == "db"}

    # Turning unhealthy (the agent reports it before it stops the task) takes it out at once.
    sick = next(iter(starting))
    tasks = [dataclasses.replace(t, status=spec.TaskStatus("running", health="unhealthy"))
             if t.id == sick else t for t in tasks]
    view = build_network_view(here, networks, nodes, services, tasks)
    table = {s.name: s for s in view.services[front]}
    sick_ip = ip(next(t for t in tasks if t.id == sick), front)
    assert all(sick_ip not in entry.tasks for entry in table.values())
    assert sick_ip not in _dns_ips(view, front, "tasks.web") | _dns_ips(view, front, "tasks.db")

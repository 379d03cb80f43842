import random
from collections import Counter

import pytest

from swarm.manager.scheduler import (AvailabilityFilter, Constraint, ConstraintError, ConstraintFilter, NodeInfo, NodeState,
                             PortFilter, ReadyFilter, ResourceFilter, TaskContext, explain, human_bytes, human_cpus,
                             node_matches, parse_constraints, schedule)
from swarm.api.spec import ContainerSpec, PortConfig, Resources, Service, ServiceSpec, Task, TaskStatus

GiB, MiB, CPU = 1 << 30, 1 << 20, 10 ** 9


def service(sid="s1", replicas=1, constraints=(), reservations=Resources(), mode="replicated", ports=()):
    return Service(sid, ServiceSpec(sid, ContainerSpec("img"), mode=mode, replicas=replicas,
                                    constraints=tuple(constraints), reservations=reservations, ports=tuple(ports)))


def host_port(published, protocol="tcp"):
    return PortConfig(80, published, protocol, "host")


def task(tid, sid="s1", node_id="", state="new", desired="running", slot=1):
    return Task(tid, sid, sid, slot, node_id, desired, ContainerSpec("img"), 1, TaskStatus(state))


def node(nid, **kw):
    kw.setdefault("hostname", f"host-{nid}")
    kw.setdefault("resources", Resources(4 * CPU, 8 * GiB))
    return NodeInfo(nid, **kw)


def pending(n, sid="s1", prefix="t"):
    return [task(f"{prefix}{i}", sid, slot=i + 1) for i in range(n)]


# -- constraints --------------------------------------------------------------------------------

def test_valid_constraints_parse_whitespace_and_key_case_tolerant():
    cs = parse_constraints(["node.role==manager", " node.hostname != web1 ", "node.labels.zone== eu-1",
                            "engine.labels.os==linux", "NODE.ID==abc", "node.labels.com.example/tier!=db"])
    assert cs == (Constraint("node.role", "", True, "manager"), Constraint("node.hostname", "", False, "web1"),
                  Constraint("node.labels", "zone", True, "eu-1"), Constraint("engine.labels", "os", True, "linux"),
                  Constraint("node.id", "", True, "abc"), Constraint("node.labels", "com.example/tier", False, "db"))


@pytest.mark.parametrize("expr", ["", "node.role", "node.role=manager", "node.role=>manager", "node.foo==x",
                                  "==manager", "node.role==", "node.role===manager", "node.labels.==a",
                                  "node.labels==a", "node.labels.zo ne==a", "label.zone==a", "node.role==a=b"])
def test_invalid_constraints_are_refused_with_a_sentence(expr):
    with pytest.raises(ConstraintError) as exc:
        parse_constraints(["node.role==worker", expr])
    assert str(exc.value).startswith(f'invalid constraint "{expr}": ')


def test_unknown_key_error_lists_the_keys():
    with pytest.raises(ConstraintError) as exc:
        parse_constraints(["node.zone==a"])
    assert str(exc.value) == ('invalid constraint "node.zone==a": unknown key node.zone (use node.id, '
                              'node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME '
                              'or engine.labels.NAME)')


def test_constraints_match_case_insensitively_and_missing_labels_only_satisfy_not_equal():
    n = node("n1", role="Manager", labels={"zone": "EU"})
    assert node_matches(parse_constraints(["node.role==manager", "node.labels.zone==eu"]), n)
    assert not node_matches(parse_constraints(["node.labels.rack==1"]), n)
    assert node_matches(parse_constraints(["node.labels.rack!=1"]), n)
    assert node_matches(parse_constraints(["node.id==n1", "node.hostname==HOST-N1"]), n)
    assert not node_matches(parse_constraints(["node.id!=n1"]), n)


# -- filters and their explanations -------------------------------------------------------------

def test_explain_strings_read_like_docker():
    assert ReadyFilter().explain(1) == "1 node is not ready"
    assert ReadyFilter().explain(3) == "3 nodes are not ready"
    assert AvailabilityFilter().explain(1) == "1 node not available for new tasks"
    assert AvailabilityFilter().explain(2) == "2 nodes not available for new tasks"
    assert ConstraintFilter().explain(1) == "scheduling constraints not satisfied on 1 node"
    assert ConstraintFilter().explain(4) == "scheduling constraints not satisfied on 4 nodes"
    mem = TaskContext("s", reservations=Resources(0, 4 * GiB))
    assert ResourceFilter().explain(2, mem) == "2 nodes lack 4GiB of memory"
    assert ResourceFilter().explain(1, mem) == "1 node lacks 4GiB of memory"
    cpu = TaskContext("s", reservations=Resources(2 * CPU, 0))
    assert ResourceFilter().explain(3, cpu) == "3 nodes lack 2 CPUs"
    both = TaskContext("s", reservations=Resources(CPU // 2, 512 * MiB))
    assert ResourceFilter().explain(1, both) == "1 node lacks 0.5 CPUs and 512MiB of memory"
    assert PortFilter().explain(2) == "host-mode port already in use on 2 nodes"


def test_humanized_sizes_match_go_units():
    assert [human_bytes(b) for b in (0, 1000, 1024, 1536 * MiB, 4 * GiB, 100 * MiB, 3 * (1 << 40))] == [
        "0B", "1000B", "1KiB", "1.5GiB", "4GiB", "100MiB", "3TiB"]
    assert [human_cpus(c) for c in (CPU, 2 * CPU, CPU // 4)] == ["1 CPU", "2 CPUs", "0.25 CPUs"]


def test_explain_joins_failures_in_filter_order():
    ctx = TaskContext("s", reservations=Resources(0, 4 * GiB))
    assert explain({"resources": 2, "availability": 1}, ctx) == (
        "no suitable node (1 node not available for new tasks; 2 nodes lack 4GiB of memory)")


def test_filters_check_what_they_say():
    ctx = TaskContext("s", parse_constraints(["node.labels.zone==a"]), Resources(CPU, GiB), frozenset({("tcp", 80)}))
    ok = NodeState(node("n1", labels={"zone": "a"}))
    assert all(f.check(ctx, ok) for f in (ReadyFilter(), AvailabilityFilter(), ConstraintFilter(), ResourceFilter(),
                                          PortFilter()))
    assert not ReadyFilter().check(ctx, NodeState(node("n2", status="down")))
    assert not AvailabilityFilter().check(ctx, NodeState(node("n3", availability="pause")))
    assert not ConstraintFilter().check(ctx, NodeState(node("n4", labels={"zone": "b"})))
    full = NodeState(node("n5", resources=Resources(4 * CPU, GiB)))
    full.take(Resources(0, 1))
    assert not ResourceFilter().check(ctx, full)
    busy = NodeState(node("n6"))
    busy.take(Resources(), [("tcp", 80)])
    assert not PortFilter().check(ctx, busy)
    other_protocol = NodeState(node("n7"))
    other_protocol.take(Resources(), [("udp", 80)])
    assert PortFilter().check(ctx, other_protocol)


def test_filters_opt_out_when_the_task_does_not_ask():
    ctx = TaskContext("s")
    assert not ConstraintFilter().enabled(ctx) and not ResourceFilter().enabled(ctx)
    assert not PortFilter().enabled(ctx)


# -- placement ----------------------------------------------------------------------------------

def test_spread_six_replicas_over_three_nodes_two_each():
    svc = service(replicas=6)
    plan = schedule(pending(6), [node("a"), node("b"), node("c")], [], {"s1": svc}, random.Random(7))
    assert Counter(plan.assignments.values()) == {"a": 2, "b": 2, "c": 2}
    assert plan.unplaced == {}


def test_spread_counts_tasks_of_the_service_already_running():
    svc = service(replicas=6)
    live = [task("old1", node_id="a", state="running"), task("old2", node_id="a", state="running")]
    plan = schedule(pending(4), [node("a"), node("b"), node("c")], live, {"s1": svc}, random.Random(1))
    assert Counter(plan.assignments.values()) == {"b": 2, "c": 2}


def test_spread_breaks_ties_by_fewest_tasks_overall():
    svcs = {"s1": service("s1"), "other": service("other")}
    live = [task("x", "other", node_id="a", state="running"), task("y", "other", node_id="b", state="running")]
    for seed in range(20):
        plan = schedule(pending(1), [node("a"), node("b"), node("c")], live, svcs, random.Random(seed))
        assert plan.assignments == {"t0": "c"}


def test_resources_exhausted_leaves_tasks_unplaced_with_a_lack_reason():
    svc = service(reservations=Resources(0, 4 * GiB))
    nodes = [node("a", resources=Resources(CPU, 8 * GiB)), node("b", resources=Resources(CPU, 8 * GiB)),
             node("c", availability="drain")]
    plan = schedule(pending(6), nodes, [], {"s1": svc}, random.Random(3))
    assert Counter(plan.assignments.values()) == {"a": 2, "b": 2}
    assert len(plan.unplaced) == 2
    assert set(plan.unplaced.values()) == {
        "no suitable node (1 node not available for new tasks; 2 nodes lack 4GiB of memory)"}


def test_reservations_of_live_tasks_count_against_the_node():
    svc = service(reservations=Resources(2 * CPU, 0))
    live = [task("old", node_id="a", state="running"), task("gone", node_id="b", state="failed")]
    nodes = [node("a", resources=Resources(3 * CPU, GiB)), node("b", resources=Resources(3 * CPU, GiB))]
    plan = schedule(pending(2), nodes, live, {"s1": svc}, random.Random(0))
    assert plan.assignments == {"t0": "b"}
    assert plan.unplaced == {"t1": "no suitable node (2 nodes lack 2 CPUs)"}


def test_down_paused_and_constrained_out_nodes_are_explained():
    svc = service(constraints=["node.labels.zone==a"])
    nodes = [node("a", status="down", labels={"zone": "a"}), node("b", availability="pause"),
             node("c", labels={"zone": "b"}), node("d", labels={"zone": "b"}), node("e", labels={"zone": "a"})]
    plan = schedule(pending(2), nodes, [], {"s1": svc}, random.Random(0))
    assert plan.assignments == {"t0": "e", "t1": "e"}
    plan = schedule(pending(1), nodes[:4], [], {"s1": svc}, random.Random(0))
    assert plan.unplaced == {"t0": "no suitable node (1 node is not ready; 1 node not available for new tasks; "
                                   "scheduling constraints not satisfied on 2 nodes)"}


def test_no_nodes_at_all():
    plan = schedule(pending(1), [], [], {"s1": service()}, random.Random(0))
    assert plan.unplaced == {"t0": "no suitable node (the cluster has no nodes)"}


def test_global_tasks_are_only_checked_against_their_node():
    svc = service(mode="global", reservations=Resources(0, 6 * GiB))
    nodes = [node("a"), node("b", availability="pause"), node("c")]
    tasks = [task("ga", node_id="a", slot=0), task("gb", node_id="b", slot=0), task("ga2", node_id="a", slot=0),
             task("gz", node_id="z", slot=0)]
    plan = schedule(tasks, nodes, [], {"s1": svc}, random.Random(0))
    assert plan.assignments == {"ga": "a"}
    assert plan.unplaced == {"gb": "no suitable node (1 node not available for new tasks)",
                             "ga2": "no suitable node (1 node lacks 6GiB of memory)",
                             "gz": "no suitable node (node z is not in the cluster)"}


def test_same_seed_same_plan_whatever_the_node_order():
    svcs = {f"s{i}": service(f"s{i}", reservations=Resources(CPU // 2, 0)) for i in range(5)}
    tasks = [t for i in range(5) for t in pending(7, f"s{i}", prefix=f"s{i}-")]
    nodes = [node(f"n{i}") for i in range(6)]
    one = schedule(tasks, nodes, [], svcs, random.Random(42))
    two = schedule(tasks, list(reversed(nodes)), [], svcs, random.Random(42))
    assert one == two
    assert len(one.assignments) + len(one.unplaced) == 35


def test_tasks_not_desired_running_are_ignored():
    plan = schedule([task("t0", desired="shutdown")], [node("a")], [], {"s1": service()}, random.Random(0))
    assert plan.assignments == {} and plan.unplaced == {}


def test_unknown_service_or_bad_constraint_is_a_reason_not_a_crash():
    bad = service("bad", constraints=["node.zone==1"])
    plan = schedule([task("t0", "missing"), task("t1", "bad")], [node("a")], [], {"bad": bad}, random.Random(0))
    assert plan.unplaced["t0"] == "service missing not found"
    assert plan.unplaced["t1"].startswith('invalid constraint "node.zone==1"')


# -- host-mode ports ------------------------------------------------------------------------------

PORT_IN_USE = "no suitable node (host-mode port already in use on {})"


def test_two_host_mode_services_on_one_port_and_one_node_one_waits_with_dockers_reason():
    svcs = {"a": service("a", ports=[host_port(8080)]), "b": service("b", ports=[host_port(8080)])}
    plan = schedule([task("ta", "a"), task("tb", "b")], [node("n1")], [], svcs, random.Random(0))
    assert plan.assignments == {"ta": "n1"}
    assert plan.unplaced == {"tb": PORT_IN_USE.format("1 node")}


def test_two_host_mode_services_on_one_port_and_two_nodes_go_to_different_nodes():
    svcs = {"a": service("a", ports=[host_port(8080)]), "b": service("b", ports=[host_port(8080)])}
    for seed in range(10):
        plan = schedule([task("ta", "a"), task("tb", "b")], [node("n1"), node("n2")], [], svcs, random.Random(seed))
        assert sorted(plan.assignments.values()) == ["n1", "n2"] and plan.unplaced == {}


def test_ingress_ports_constrain_no_node():
    svcs = {"a": service("a", replicas=2, ports=[PortConfig(80, 8080)]), "b": service("b", ports=[PortConfig(80, 8080)])}
    plan = schedule([*pending(2, "a", "a"), task("tb", "b")], [node("n1")], [], svcs, random.Random(0))
    assert plan.assignments == {"a0": "n1", "a1": "n1", "tb": "n1"} and plan.unplaced == {}


def test_host_ports_differ_by_protocol_and_number():
    svcs = {"a": service("a", ports=[host_port(53, "udp")]), "b": service("b", ports=[host_port(53)]),
            "c": service("c", ports=[host_port(54, "udp")])}
    plan = schedule([task("ta", "a"), task("tb", "b"), task("tc", "c")], [node("n1")], [], svcs, random.Random(0))
    assert plan.assignments == {"ta": "n1", "tb": "n1", "tc": "n1"}


def test_replicas_of_a_host_mode_service_take_one_node_each_counting_live_tasks():
    svc = service(replicas=4, ports=[host_port(8080), PortConfig(81, 9000)])
    live = [task("old", node_id="a", state="running"), task("gone", node_id="b", state="failed")]
    plan = schedule(pending(3), [node("a"), node("b"), node("c")], live, {"s1": svc}, random.Random(0))
    assert sorted(plan.assignments.values()) == ["b", "c"]
    assert list(plan.unplaced.values()) == [PORT_IN_USE.format("3 nodes")]


def test_a_stopping_task_still_holds_its_port():
    svc = service(ports=[host_port(8080)])
    stopping = task("old", node_id="a", state="running", desired="shutdown")
    plan = schedule(pending(1), [node("a")], [stopping], {"s1": svc}, random.Random(0))
    assert plan.unplaced == {"t0": PORT_IN_USE.format("1 node")}


def test_a_global_task_does_not_hold_its_port_against_itself():
    # the reconciler lists a global task among the live ones (it has its node) while it is still pending
    svcs = {"g": service("g", mode="global", ports=[host_port(8080)], reservations=Resources(0, 6 * GiB)),
            "h": service("h", mode="global", ports=[host_port(8080)])}
    ga, gb, hb = task("ga", "g", node_id="a", slot=0), task("gb", "g", node_id="b", slot=0), task("hb", "h", node_id="b", slot=0)
    plan = schedule([ga, gb, hb], [node("a"), node("b")], [ga, gb, hb], svcs, random.Random(0))
    assert plan.assignments == {"ga": "a", "gb": "b"}
    assert plan.unplaced == {"hb": PORT_IN_USE.format("1 node")}


# -- placement preferences, max replicas per node, platform (issue 12) ---------------------------

def placed(prefs=(), replicas=6, max_per_node=0, constraints=()):
    return Service("s1", ServiceSpec("s1", ContainerSpec("img"), replicas=replicas, constraints=tuple(constraints),
                                     placement_prefs=tuple(prefs), max_replicas_per_node=max_per_node))


def zones(*counts, **kw):
    """Nodes z<zone>-<n>, `counts[k]` of them in zone k (labels node.labels.zone=z<k>)."""
    return [node(f"z{k}-{n}", labels={"zone": f"z{k}"}, **kw) for k, count in enumerate(counts) for n in range(count)]


def by_zone(plan, nodes):
    zone_of = {n.id: n.labels.get("zone", "") for n in nodes}
    return Counter(zone_of[nid] for nid in plan.assignments.values())


def test_spread_preference_divides_six_replicas_equally_over_zones_of_one_two_and_three_nodes():
    nodes = zones(1, 2, 3)
    for seed in range(10):
        plan = schedule(pending(6), nodes, [], {"s1": placed(["spread=node.labels.zone"])}, random.Random(seed))
        assert by_zone(plan, nodes) == {"z0": 2, "z1": 2, "z2": 2}
        # within a zone, the usual least loaded node: zone 1 one task per node, zone 2 on two of its three
        assert Counter(plan.assignments.values())["z0-0"] == 2
        assert max(Counter(plan.assignments.values()).values()) == 2
    # without the preference the same tasks go one per node first
    plan = schedule(pending(6), nodes, [], {"s1": placed()}, random.Random(0))
    assert by_zone(plan, nodes) == {"z0": 1, "z1": 2, "z2": 3}


def test_spread_counts_the_tasks_a_zone_already_runs():
    nodes = zones(2, 2, 2)
    live = [task("old1", node_id="z0-0", state="running"), task("old2", node_id="z0-1", state="running"),
            task("old3", node_id="z1-0", state="running")]
    plan = schedule(pending(3), nodes, live, {"s1": placed(["spread=node.labels.zone"])}, random.Random(0))
    assert by_zone(plan, nodes) == {"z1": 1, "z2": 2}


def test_nodes_without_the_label_form_their_own_group():
    nodes = [*zones(1, 1), node("bare-1"), node("bare-2")]
    plan = schedule(pending(6), nodes, [], {"s1": placed(["spread=node.labels.zone"])}, random.Random(0))
    assert by_zone(plan, nodes) == {"z0": 2, "z1": 2, "": 2}
    assert Counter(plan.assignments.values())["bare-1"] == 1


def test_a_zone_that_cannot_take_its_share_gives_it_to_the_others():
    nodes = [*zones(1, 1, 0), node("z2-0", labels={"zone": "z2"}, status="down")]
    plan = schedule(pending(6), nodes, [], {"s1": placed(["spread=node.labels.zone"])}, random.Random(0))
    assert by_zone(plan, nodes) == {"z0": 3, "z1": 3} and plan.unplaced == {}
    # a constraint that rules out a zone: the same
    nodes = zones(1, 1, 1)
    svc = placed(["spread=node.labels.zone"], constraints=["node.labels.zone!=z2"])
    plan = schedule(pending(6), nodes, [], {"s1": svc}, random.Random(0))
    assert by_zone(plan, nodes) == {"z0": 3, "z1": 3}


def test_an_uneven_count_puts_the_remainder_in_the_emptiest_zones():
    nodes = zones(1, 1, 1)
    live = [task("old", node_id="z1-0", state="running")]
    plan = schedule(pending(4), nodes, live, {"s1": placed(["spread=node.labels.zone"])}, random.Random(0))
    assert by_zone(plan, nodes) == {"z0": 2, "z2": 2}


def test_second_preference_spreads_within_each_value_of_the_first():
    nodes = [node(f"{dc}-{rack}-{n}", labels={"dc": dc, "rack": rack}) for dc, racks in (("east", "ab"), ("west", "c"))
             for rack in racks for n in range(2)]
    svc = placed(["spread=node.labels.dc", "spread=node.labels.rack"], replicas=8)
    plan = schedule(pending(8), nodes, [], {"s1": svc}, random.Random(0))
    per_rack = Counter(nid.rsplit("-", 1)[0] for nid in plan.assignments.values())
    assert per_rack == {"east-a": 2, "east-b": 2, "west-c": 4}


def test_engine_label_preference_and_bad_preferences():
    from swarm.manager.scheduler import Preference, PreferenceError, parse_preference
    assert parse_preference("spread=node.labels.zone") == Preference("node.labels", "zone")
    assert parse_preference("spread=Engine.Labels.disk") == Preference("engine.labels", "disk")
    for bad, why in (("zone", 'the format is "<strategy>=<arg>"'), ("binpack=node.labels.zone",
                                                                     "unsupported placement preference binpack"),
                     ("spread=node.hostname", "spread over node.labels.NAME or engine.labels.NAME")):
        with pytest.raises(PreferenceError) as exc:
            parse_preference(bad)
        assert why in str(exc.value)
    plan = schedule(pending(1), [node("a")], [], {"s1": placed(["spread=node.id"])}, random.Random(0))
    assert plan.unplaced["t0"].startswith('invalid placement preference "spread=node.id"')


def test_max_replicas_per_node_leaves_the_rest_pending_with_swarmkits_reason():
    plan = schedule(pending(5), [node("a"), node("b")], [], {"s1": placed(replicas=5, max_per_node=2)},
                    random.Random(0))
    assert Counter(plan.assignments.values()) == {"a": 2, "b": 2}
    assert list(plan.unplaced.values()) == ["no suitable node (max replicas per node limit exceed)"]


def test_max_replicas_per_node_counts_live_tasks_not_ended_ones():
    live = [task("run", node_id="a", state="running"), task("done", node_id="b", state="complete")]
    plan = schedule(pending(2), [node("a"), node("b")], live, {"s1": placed(replicas=3, max_per_node=1)},
                    random.Random(0))
    assert plan.assignments == {"t0": "b"}
    assert plan.unplaced == {"t1": "no suitable node (max replicas per node limit exceed)"}


def test_max_replicas_with_a_spread_preference():
    nodes = zones(1, 3)
    plan = schedule(pending(6), nodes, [], {"s1": placed(["spread=node.labels.zone"], max_per_node=1)},
                    random.Random(0))
    assert by_zone(plan, nodes) == {"z0": 1, "z1": 3}
    assert set(plan.unplaced.values()) == {"no suitable node (max replicas per node limit exceed)"}


def test_platform_constraints_match_what_the_node_reports():
    nodes = [node("x86", os="linux", arch="x86_64"), node("arm", os="linux", arch="aarch64"), node("old")]
    arm = placed(replicas=2, constraints=["node.platform.arch==aarch64"])
    plan = schedule(pending(2), nodes, [], {"s1": arm}, random.Random(0))
    assert plan.assignments == {"t0": "arm", "t1": "arm"}
    not_x86 = placed(replicas=4, constraints=["node.platform.os==Linux", "node.platform.arch!=x86_64"])
    plan = schedule(pending(4), nodes, [], {"s1": not_x86}, random.Random(0))
    assert set(plan.assignments.values()) == {"arm"}
    windows = placed(replicas=1, constraints=["node.platform.os==windows"])
    plan = schedule(pending(1), nodes, [], {"s1": windows}, random.Random(0))
    assert plan.unplaced == {"t0": "no suitable node (scheduling constraints not satisfied on 3 nodes)"}
    assert parse_constraints(["NODE.PLATFORM.OS==linux"]) == (Constraint("node.platform.os", "", True, "linux"),)


# -- platforms (Placement.Platforms, SwarmKit's PlatformFilter) ---------------------------------

def test_tasks_go_only_to_nodes_of_one_of_the_images_platforms():
    from dataclasses import replace
    svc = service(replicas=4)
    svc = replace(svc, spec=replace(svc.spec, platforms=("linux/arm64", "linux/arm")))
    nodes = [node("x86", os="linux", arch="x86_64"), node("arm", os="linux", arch="aarch64"),
             node("pi", os="linux", arch="arm"), node("new")]          # "new" has not reported its platform
    plan = schedule(pending(4), nodes, [], {"s1": svc}, random.Random(0))
    assert sorted(plan.assignments.values()) == ["arm", "arm", "pi", "pi"] and not plan.unplaced
    plan = schedule(pending(1), nodes[:1] + nodes[3:], [], {"s1": svc}, random.Random(0))
    assert plan.unplaced == {"t0": "no suitable node (unsupported platform on 2 nodes)"}


def test_platform_names_match_as_swarmkit_normalizes_them():
    from swarm.manager.scheduler import parse_platforms, platform_matches
    x86 = node("a", os="linux", arch="x86_64")
    assert platform_matches(parse_platforms(["linux/amd64"]), x86)
    assert platform_matches(parse_platforms(["/amd64"]), x86) and platform_matches(parse_platforms(["linux/"]), x86)
    assert not platform_matches(parse_platforms(["windows/amd64"]), x86)
    assert platform_matches(parse_platforms(["linux/arm64"]), node("b", os="linux", arch="aarch64"))
    assert platform_matches((), node("c"))                      # no platforms: every node

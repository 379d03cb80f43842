"""`service ls`'s REPLICAS column as docker prints it, jobs included (docker/cli's
serviceContext.Replicas over SwarmKit's ListServiceStatuses counts)."""
import dataclasses

from swarm.api.spec import ContainerSpec, Service, ServiceSpec, Task, TaskStatus
from swarm.manager.controlapi.services import replicas_column


def service(mode="replicated", replicas=3, concurrent=0, per_node=0, iteration=0):
    return Service("s1", ServiceSpec("svc", ContainerSpec("img"), mode=mode, replicas=replicas,
                                     max_concurrent=concurrent, max_replicas_per_node=per_node),
                   job_iteration=iteration)


def task(tid, state, desired="running", iteration=0, slot=1, node="n1", service_id="s1"):
    return Task(tid, service_id, "svc", slot, node, desired, ContainerSpec("img"), 1, TaskStatus(state),
                job_iteration=iteration)


def test_replicated_and_global_services():
    tasks = [task("a", "running"), task("b", "running", desired="shutdown"), task("c", "pending"),
             task("x", "running", service_id="other")]
    assert replicas_column(service(), tasks) == "1/3"
    assert replicas_column(service(per_node=2), tasks) == "1/3 (max 2 per node)"
    assert replicas_column(service(mode="global", replicas=0), tasks) == "1/1"    # a and c: one node


def test_a_global_service_counts_the_nodes_meant_to_run_not_its_ended_tasks():
    tasks = [task("a", "running", node="n1"), task("b", "rejected", node="n2"), task("c", "pending", node="n2"),
             task("d", "rejected", node="n3"), task("e", "failed", node="n3"), task("f", "running", node="n4")]
    # n3's tasks ended and nothing replaced them (yet): 3 nodes are meant to run one, 2 do
    assert replicas_column(service(mode="global", replicas=0), tasks) == "2/3"


def test_replicated_job_shows_running_of_max_concurrent_and_completions_of_this_iteration():
    tasks = [task("a", "complete"), task("b", "complete"), task("c", "running"), task("d", "failed"),
             task("old", "complete", iteration=0)]
    job = service(mode="replicated-job", replicas=5, concurrent=2)
    assert replicas_column(job, tasks) == "1/2 (3/5 completed)"
    assert replicas_column(dataclasses.replace(job, job_iteration=1),
                           [dataclasses.replace(t, job_iteration=1) for t in tasks[:3]] + tasks[3:]) == \
        "1/2 (2/5 completed)"
    assert replicas_column(service(mode="replicated-job", replicas=4), []) == "0/4 (0/4 completed)"


def test_global_job_counts_the_tasks_still_to_complete_and_the_completed_ones():
    tasks = [task("a", "complete", node="n1", slot=0), task("b", "running", node="n2", slot=0),
             task("c", "pending", node="n3", slot=0)]
    assert replicas_column(service(mode="global-job", replicas=0), tasks) == "1/2 (1/3 completed)"

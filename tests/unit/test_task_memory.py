"""A manager's memory per task: the typed tasks of a service share what they hold alike.

The records are made as the managers make them (the CLI's spec parameters, the orchestrator's
new tasks, the reconciler's encoding, the Raft record store) and typed through the decode cache
the reconciler and the dispatcher read (swarm/api/records.py)."""
from __future__ import annotations

import dataclasses
import gc
import logging
import tracemalloc

import pytest

from raft.store import Op, RecordStore
from swarm.api import model, records, spec
from swarm.manager import orchestrator
from swarm.manager.controlapi.specparams import spec_from_params
from swarm.manager.scheduler import NodeInfo

NOW = 1_700_000_000.0


def service(replicas: int, version: int = 1, **params) -> spec.Service:
    given = {"name": "web", "image": "nginx:1.25", "replicas": replicas, "env": ["A=1", "B={{.Task.Slot}}"],
             "labels": {"tier": "front"}, "container_labels": {"team": "ops"}, **params}
    return spec.Service(id="s" * 25, spec=spec_from_params(given), spec_version=version, created_at=NOW)


def running_tasks(svc: spec.Service, nodes: int) -> list[spec.Task]:
    """The service's tasks as the orchestrator creates them, placed and reported running."""
    ids = iter(range(10**9))
    plan = orchestrator.reconcile(svc, [], [NodeInfo(f"n{i:024d}") for i in range(nodes)], NOW,
                                  lambda: f"{next(ids):025d}")
    out = []
    for i, t in enumerate(plan.create):
        status = spec.status_from_wire({"state": "running", "message": "started", "timestamp": NOW + i,
                                        "container_id": f"{i:064x}"}, NOW + i)
        out.append(dataclasses.replace(t, node_id=f"n{i % nodes:024d}", status=status, running_at=NOW + i))
    return out


def stored(tasks: list[spec.Task]) -> RecordStore:
    store = RecordStore()
    store.apply([Op.create(spec.TASK, t.id, spec.encode_task(t)) for t in tasks], 1)
    return store


def test_ten_thousand_typed_tasks_of_one_service_take_under_1_kib_each():
    """Bound: without the shared container spec a typed task is about 3.1 KB (2.2 KB of it the spec)."""
    store = stored(running_tasks(service(10_000), nodes=100))
    listing = store.list(spec.TASK)
    records.decode_all({}, spec.task_from_dict)   # an empty cache: what earlier tests typed is gone
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        typed = records.decode_all(listing, spec.task_from_dict)
        tasks = [t for t, _ in typed.values()]
        del typed
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(tasks) == 10_000
    assert grown / len(tasks) < 1024, f"{grown / len(tasks):.0f} bytes per typed task"
    first = tasks[0]
    assert all(t.spec is first.spec and t.service_labels is first.service_labels for t in tasks)
    assert all(t.service_id is first.service_id and t.status.state is first.status.state for t in tasks)


def test_decoded_tasks_equal_what_was_encoded_and_leave_the_callers_map_alone():
    svc = service(50)
    tasks = running_tasks(svc, nodes=3)
    for t in tasks:
        data = model.decode(spec.encode_task(t))
        kept = model.decode(spec.encode_task(t))
        typed = spec.task_from_dict(data)
        assert typed == t and spec.to_dict(typed) == spec.to_dict(t)
        assert data == kept
    assert spec.task_from_dict(model.decode(spec.encode_task(tasks[0]))).spec == svc.spec.container


def test_tasks_of_different_specs_keep_their_own_spec():
    """An update's tasks (a new image) next to the old ones: equal bytes only are shared."""
    old, new = service(3), service(3, version=2, image="nginx:1.26")
    typed = [spec.task_from_dict(model.decode(spec.encode_task(t)))
             for t in running_tasks(old, nodes=1) + running_tasks(new, nodes=1)]
    assert [t.spec.image for t in typed] == ["nginx:1.25"] * 3 + ["nginx:1.26"] * 3
    assert typed[0].spec is typed[2].spec and typed[3].spec is typed[5].spec
    assert typed[0].spec != typed[3].spec
    # The same values of another type (an int where the spec has a float) decode as before.
    data = model.decode(spec.encode_task(running_tasks(old, nodes=1)[0]))
    data["spec"]["stop_grace_period"] = 10
    assert spec.task_from_dict(data).spec.stop_grace_period == 10


def test_a_bad_record_still_raises_with_its_field_when_its_spec_is_shared():
    good = running_tasks(service(2), nodes=1)
    spec.task_from_dict(model.decode(spec.encode_task(good[0])))       # its spec is in the table now
    bad = model.decode(spec.encode_task(good[1]))
    bad["slot"] = "one"
    with pytest.raises(spec.InvalidRecord, match=r"\$\.slot"):
        spec.task_from_dict(bad)
    bad = model.decode(spec.encode_task(good[1]))
    bad["spec"]["image"] = 7
    with pytest.raises(spec.InvalidRecord, match=r"\$\.spec\.image"):
        spec.task_from_dict(bad)
    bad["spec"] = ["not", "a", "map"]
    with pytest.raises(spec.InvalidRecord, match=r"\$\.spec"):
        spec.task_from_dict(bad)


def test_decode_all_skips_a_bad_task_with_its_warning_and_keeps_the_rest(caplog):
    tasks = running_tasks(service(3), nodes=1)
    store = stored(tasks)
    listing = store.list(spec.TASK)
    data = model.decode(listing[tasks[1].id].data)
    data["spec"]["env"] = "A=1"
    store.apply([Op.update(spec.TASK, tasks[1].id, model.encode(data))], 2)
    with caplog.at_level(logging.WARNING, logger="swarm.api.records"):
        typed = records.decode_all(store.list(spec.TASK), spec.task_from_dict)
    assert sorted(typed) == sorted([tasks[0].id, tasks[2].id])
    assert f"skipping record {tasks[1].id}" in caplog.text and "$.spec.env" in caplog.text


def test_the_table_of_specs_keeps_no_spec_alive():
    """A spec leaves the table with its last task: a manager's table is the specs in use."""
    typed = [spec.task_from_dict(model.decode(spec.encode_task(t)))
             for t in running_tasks(service(2, image="busybox:gone"), nodes=1)]
    assert any(s.image == "busybox:gone" for s in spec._shared_specs.values())
    del typed
    gc.collect()
    assert not any(s.image == "busybox:gone" for s in spec._shared_specs.values())

"""A task's record written fast: the same bytes as the plain encoding, its container spec
encoded once for all the tasks that share it; and spec.replace, dataclasses.replace's stand-in."""
from __future__ import annotations

import dataclasses

import pytest

from raft.store import Record
from swarm.api import model, records, spec
from tests.unit.test_task_memory import NOW, running_tasks, service


def plain(task: spec.Task) -> bytes:
    return model.encode(spec.to_dict(task))


def varied_tasks() -> list[spec.Task]:
    svc = service(6, ports=[{"target": 80, "published": 8080}], restart_condition="on-failure")
    tasks = running_tasks(svc, nodes=3)
    att = spec.Attachment("net0", "10.0.1.5/24")
    return [
        tasks[0],
        dataclasses.replace(tasks[1], networks=(att,), service_labels={"a": "b"}),
        dataclasses.replace(tasks[2], status=spec.TaskStatus("failed", "exit", "boom", NOW, 137, "c" * 64, "")),
        dataclasses.replace(tasks[3], node_id="", status=spec.TaskStatus(), desired_state="shutdown", attempt=3,
                            not_before=NOW + 0.5, job_iteration=2),
        # as read back from the store: msgspec leaves defaults out of the instance's __dict__
        spec.task_from_dict(model.decode(plain(tasks[4]))),
    ]


def test_a_task_s_record_is_the_plain_encoding_byte_for_byte():
    for task in varied_tasks():
        assert spec.encode_task(task) == plain(task)
        assert spec.task_from_dict(model.decode(spec.encode_task(task))) == task


def test_a_container_spec_shared_by_many_tasks_is_encoded_once(monkeypatch):
    tasks = running_tasks(service(50), nodes=5)
    assert len({id(t.spec) for t in tasks}) == 1      # a round's tasks for a service share it
    spec._spec_records.clear()
    encoded = []
    real = spec.to_dict

    def counting(obj):
        if isinstance(obj, spec.ContainerSpec):
            encoded.append(obj)
        return real(obj)

    monkeypatch.setattr(spec, "to_dict", counting)
    records = [spec.encode_task(t) for t in tasks]
    assert len(encoded) == 1
    monkeypatch.setattr(spec, "to_dict", real)
    assert records == [plain(t) for t in tasks]


def test_a_spec_changed_in_a_copy_is_encoded_as_it_now_is():
    task = running_tasks(service(1), nodes=1)[0]
    spec.encode_task(task)
    other = dataclasses.replace(task, spec=dataclasses.replace(task.spec, hostname="elsewhere"))
    assert model.decode(spec.encode_task(other))["spec"]["hostname"] == "elsewhere"
    assert spec.encode_task(other) == plain(other)


def test_the_remembered_specs_are_bounded(monkeypatch):
    monkeypatch.setattr(spec, "_MAX_SPEC_RECORDS", 4)
    task = running_tasks(service(1), nodes=1)[0]
    for i in range(10):
        copy = dataclasses.replace(task, spec=dataclasses.replace(task.spec, hostname=f"h{i}"))
        assert spec.encode_task(copy) == plain(copy)
        assert len(spec._spec_records) <= 4


def test_replace_makes_what_dataclasses_replace_makes():
    for task in varied_tasks():
        status = spec.TaskStatus("assigned", "placed", "", NOW)
        assert spec.replace(task, node_id="n9", status=status) == dataclasses.replace(task, node_id="n9", status=status)
        copy = spec.replace(task, attempt=task.attempt + 1)
        assert copy.attempt == task.attempt + 1 and copy.running_at == task.running_at
        assert copy is not task and task.attempt != copy.attempt   # the original is left as it was
        assert spec.encode_task(copy) == plain(dataclasses.replace(task, attempt=task.attempt + 1))
    assert spec.replace(spec.TaskStatus(), state="running") == spec.TaskStatus(state="running")


def test_replace_refuses_a_field_the_class_does_not_have():
    task = varied_tasks()[0]
    with pytest.raises(TypeError, match="no field 'node'"):
        spec.replace(task, node="n1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.replace(task, node_id="n1").node_id = "n2"   # still frozen


# -- a task's record read back from its bytes --------------------------------------------------

def test_a_record_read_from_its_bytes_is_what_decoding_its_map_gives():
    for task in varied_tasks():
        record = spec.encode_task(task)
        assert spec.task_from_record(record) == spec.task_from_dict(model.decode(record)) == task
    partial = model.decode(plain(varied_tasks()[0]))
    for name in ("attempt", "not_before", "networks"):   # a record of an older version lacks them
        del partial[name]
    assert spec.task_from_record(model.encode(partial)) == spec.task_from_dict(partial)


def test_a_record_read_from_its_bytes_shares_its_spec_with_the_tasks_read_before():
    tasks = varied_tasks()
    kept = [spec.task_from_dict(model.decode(plain(tasks[0]))), spec.task_from_record(plain(tasks[1]))]
    assert kept[1].spec is kept[0].spec
    assert spec.task_from_record(plain(tasks[2])).spec is kept[0].spec
    assert kept[1].service_id is kept[0].service_id     # its ids and state names too


def test_bad_bytes_raise_invalid_record_with_the_field_as_a_bad_map_does():
    good = model.decode(plain(varied_tasks()[0]))
    kept = spec.task_from_record(plain(varied_tasks()[0]))   # its spec is in the table now
    cases = {
        b"\xc1junk": "invalid task record",                 # not msgpack
        model.encode("a string"): "invalid task record",     # not a map
        model.encode(dict(good, slot="one")): r"\$\.slot",
        model.encode(dict(good, spec=dict(good["spec"], image=7))): r"\$\.spec\.image",
        model.encode(dict(good, spec=["not", "a", "map"])): r"\$\.spec",
        model.encode(dict(good, id=b"bytes")): r"\$\.id",
    }
    for record, reason in cases.items():
        with pytest.raises(spec.InvalidRecord, match=reason):
            spec.task_from_record(record)
    bad_text = plain(varied_tasks()[0]).replace(good["service_name"].encode(), b"\xff" * len(good["service_name"]))
    with pytest.raises(ValueError):                         # not UTF-8: refused, never a crash
        spec.task_from_record(bad_text)
    assert kept.spec.image     # the shared spec was left as it was


def test_the_store_s_readers_type_tasks_from_their_bytes(monkeypatch):
    tasks = varied_tasks()
    listing = {t.id: Record(1, plain(t)) for t in tasks}
    read = []
    real = spec.task_from_record
    monkeypatch.setattr(records, "_FROM_BYTES", {spec.task_from_dict: lambda data: read.append(data) or real(data)})
    typed = records.decode_all(listing, spec.task_from_dict)
    assert {k: t for k, (t, _) in typed.items()} == {t.id: t for t in tasks}
    assert len(read) == len(tasks)
    records.forget(tasks[0].id, spec.task_from_dict)
    assert records.decode_one(tasks[0].id, Record(2, plain(tasks[0])), spec.task_from_dict) == tasks[0]
    assert len(read) == len(tasks) + 1

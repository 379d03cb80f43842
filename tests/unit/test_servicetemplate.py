"""swarm.api.servicetemplate: SwarmKit's service templates (hostname, env values, mounts)."""
from __future__ import annotations

import pytest

from swarm.api.servicetemplate import SAMPLE, TemplateContext, TemplateError, check_container, context_for, \
    expand_container
from swarm.api.spec import ContainerSpec, Mount, Task

CTX = TemplateContext(service_id="svc1", service_name="web", service_labels={"zone": "a"}, node_id="node9",
                      node_hostname="host-9", node_os="linux", node_arch="x86_64", task_id="t1",
                      task_name="web.2.t1", task_slot=2)


def test_every_placeholder() -> None:
    text = ("{{.Service.ID}} {{.Service.Name}} {{.Service.Labels.zone}} {{index .Service.Labels \"zone\"}} "
            "{{.Node.ID}} {{.Node.Hostname}} {{.Node.Platform.OS}} {{.Node.Platform.Architecture}} "
            "{{.Task.ID}} {{.Task.Name}} {{.Task.Slot}}")
    out = expand_container(ContainerSpec(image="x", hostname=text), CTX)
    assert out.hostname == "svc1 web a a node9 host-9 linux x86_64 t1 web.2.t1 2"


def test_expands_hostname_env_values_and_mounts() -> None:
    spec = ContainerSpec(
        image="x", hostname="{{.Node.Hostname}}-{{.Task.Slot}}",
        env=("SLOT={{.Task.Slot}}", "PLAIN=1", "BARE", "{{.Task.Slot}}=name-is-not-expanded"),
        mounts=(Mount(type="bind", source="/srv/{{.Service.Name}}/{{.Task.Slot}}", target="/data"),
                Mount(type="volume", source="vol-{{.Task.Slot}}", target="/v",
                      volume_labels={"slot": "{{.Task.Slot}}"}, volume_opts={"o": "{{.Node.ID}}"})))
    out = expand_container(spec, CTX)
    assert out.hostname == "host-9-2"
    assert out.env == ("SLOT=2", "PLAIN=1", "BARE", "{{.Task.Slot}}=name-is-not-expanded")
    assert out.mounts[0].source == "/srv/web/2"
    assert (out.mounts[1].source, out.mounts[1].volume_labels, out.mounts[1].volume_opts) == \
        ("vol-2", {"slot": "2"}, {"o": "node9"})
    assert out.image == "x" and spec.hostname.startswith("{{")   # the input is left as it was


def test_global_task_slot_is_the_node_id() -> None:
    ctx = TemplateContext(**{**CTX.__dict__, "task_slot": 0})
    assert expand_container(ContainerSpec(image="x", hostname="{{.Task.Slot}}"), ctx).hostname == "node9"


def test_swarmkit_join() -> None:
    spec = ContainerSpec(image="x", hostname='{{join "-" .Service.Name .Task.Slot}}')
    assert expand_container(spec, CTX).hostname == "web-2"


def test_context_for_a_task() -> None:
    task = Task(id="t7", service_id="s1", service_name="web", slot=3, node_id="n1", desired_state="running",
                spec=ContainerSpec(image="x"), spec_version=1, service_labels={"k": "v"})
    ctx = context_for(task, "host-1")
    assert (ctx.task_name, ctx.task_slot, ctx.node_hostname, ctx.service_labels) == \
        ("web.3.t7", 3, "host-1", {"k": "v"})


@pytest.mark.parametrize("spec, message", [
    (ContainerSpec(image="x", hostname="{{.Task.Foo}}"), "invalid template in --hostname: unknown field .Task.Foo"),
    (ContainerSpec(image="x", env=("A={{.Nope}}",)), "invalid template in --env A: unknown field .Nope"),
    (ContainerSpec(image="x", mounts=(Mount(type="bind", source="/{{.Task.Slot", target="/d"),)),
     "invalid template in --mount source: unclosed action: a {{ has no matching }}"),
    (ContainerSpec(image="x", hostname="{{upper .Task.ID}}"),
     'invalid template in --hostname: function "upper" not defined'),
    (ContainerSpec(image="x", hostname="{{.Service.Labels.zone}}"),
     "invalid template in --hostname: unknown field .Service.Labels.zone"),
])
def test_check_refuses_bad_templates(spec: ContainerSpec, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        check_container(spec)
    assert str(info.value) == message


def test_check_accepts_good_templates_and_known_labels() -> None:
    check_container(ContainerSpec(image="x", hostname="{{.Service.Labels.zone}}-{{.Task.Slot}}"), {"zone": "a"})
    check_container(ContainerSpec(image="x", hostname="no-template", env=("A=b",)))
    assert SAMPLE.task_slot == 1

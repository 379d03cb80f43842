"""Docker's service templates: `--hostname "{{.Node.Hostname}}-{{.Task.Slot}}"`.

How this works (as SwarmKit's template package): a container spec's hostname,
env values (the part after "=") and mount sources, targets, volume labels and
volume driver options may hold Go templates. The agent expands them for each
task with `expand_container`, against a context of the task, its service and
its node; the control API calls `check_container` before it writes a spec, so
a bad template is refused at `service create`/`update` (rendered against a
sample context: SwarmKit's best-effort check). Templates run with
missingkey=error and SwarmKit's one function, `join SEP A B...`, besides Go's
builtins. Placeholders:

    .Service.ID .Service.Name .Service.Labels
    .Node.ID .Node.Hostname .Node.Platform.OS .Node.Platform.Architecture
    .Task.ID .Task.Name .Task.Slot
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarm.api.gotemplate import Function, TemplateError, compile_template
from swarm.api.spec import ContainerSpec, Mount, Task

# SwarmKit's funcMap: "first arg is sep, remaining args are strings to join".
FUNCTIONS: dict[str, Function] = {
    "join": Function(lambda sep, *items: sep.join(items), ("string", "string...")),
}


@dataclass(frozen=True)
class TemplateContext:
    service_id: str
    service_name: str
    service_labels: Mapping[str, str]
    node_id: str
    node_hostname: str
    node_os: str
    node_arch: str
    task_id: str
    task_name: str      # Docker's task name: SERVICE.SLOT.TASKID (SERVICE.NODEID.TASKID for global tasks)
    task_slot: int      # 0 for global tasks: .Task.Slot then reads the node's ID, as SwarmKit's does

    def data(self) -> dict[str, Any]:
        """The value templates see (the shape of SwarmKit's template.Context)."""
        return {
            "Service": {"ID": self.service_id, "Name": self.service_name, "Labels": dict(self.service_labels)},
            "Node": {"ID": self.node_id, "Hostname": self.node_hostname,
                     "Platform": {"OS": self.node_os, "Architecture": self.node_arch}},
            "Task": {"ID": self.task_id, "Name": self.task_name,
                     "Slot": str(self.task_slot) if self.task_slot else self.node_id},
        }


def context_for(task: Task, node_hostname: str, node_os: str = "linux", node_arch: str = "x86_64") -> TemplateContext:
    """The context of one task on its node (SwarmKit's template.NewContext)."""
    return TemplateContext(
        service_id=task.service_id, service_name=task.service_name, service_labels=task.service_labels,
        node_id=task.node_id, node_hostname=node_hostname, node_os=node_os, node_arch=node_arch,
        task_id=task.id, task_name=f"{task.name}.{task.id}", task_slot=task.slot)


# SwarmKit's controlapi validates against a dummy task on a dummy node.
SAMPLE = TemplateContext(service_id="serviceid", service_name="servicename", service_labels={},
                         node_id="nodeid", node_hostname="nodeHostname", node_os="os",
                         node_arch="architecture", task_id="taskid", task_name="taskname", task_slot=1)


def expand(text: str, ctx: TemplateContext, where: str) -> str:
    """One templated string; `where` names the flag in the error ("--hostname")."""
    if "{{" not in text:
        return text       # most values hold no template: skip the parse
    try:
        return compile_template(text, funcs=FUNCTIONS).render(ctx.data())
    except TemplateError as exc:
        raise TemplateError(f"invalid template in {where}: {exc}") from None


def _expand_map(values: Mapping[str, str], ctx: TemplateContext, where: str) -> dict[str, str]:
    return {k: expand(v, ctx, f"{where} {k}") for k, v in values.items()}


def _expand_mount(mount: Mount, ctx: TemplateContext) -> Mount:
    return dataclasses.replace(
        mount,
        source=expand(mount.source, ctx, "--mount source"),
        target=expand(mount.target, ctx, "--mount target"),
        volume_labels=_expand_map(mount.volume_labels, ctx, "--mount volume-label"),
        volume_opts=_expand_map(mount.volume_opts, ctx, "--mount volume-opt"))


def _expand_env(item: str, ctx: TemplateContext) -> str:
    name, sep, value = item.partition("=")
    return f"{name}={expand(value, ctx, f'--env {name}')}" if sep else item


def expand_container(container: ContainerSpec, ctx: TemplateContext) -> ContainerSpec:
    """The container spec one task runs: its templates expanded (SwarmKit's ExpandContainerSpec)."""
    return dataclasses.replace(
        container,
        env=tuple(_expand_env(item, ctx) for item in container.env),
        mounts=tuple(_expand_mount(m, ctx) for m in container.mounts),
        hostname=expand(container.hostname, ctx, "--hostname"))


def check_container(container: ContainerSpec, service_labels: Mapping[str, str] | None = None) -> None:
    """Refuse a spec whose templates do not parse or name an unknown field (TemplateError).

    The service's labels make `.Service.Labels.KEY` of a label the service has pass."""
    ctx = dataclasses.replace(SAMPLE, service_labels=dict(service_labels or {}))
    expand_container(container, ctx)


__all__ = ["FUNCTIONS", "SAMPLE", "TemplateContext", "TemplateError", "check_container", "context_for",
           "expand", "expand_container"]

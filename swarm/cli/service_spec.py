"""The flags of `swarm service create` and `update`, and the daemon params they make.

How this works: as docker/cli's service/opts.go, create and update share one
flag set (`shared_options`), with create's defaults docker's and update's
"not given" (None); create adds the list flags (--label, --dns, --sysctl...)
and update their -add/-rm twins. `create_params` turns create's values into
the `service.create` params; `update_params` sends only the flags the user
gave (click's parameter source says which), and the -add/-rm pairs as
`X_add`/`X_rm` params, which the control API merges into the stored spec in
one compare-and-set (swarm/manager/controlapi/specupdate.py). The --update-*,
--rollback-* and --health-* flags go as "update_config", "rollback_config" and
"healthcheck" maps of the fields given (`rolling_params`), on create too: the
daemon fills docker's defaults, or on update the service's current values.
Docker's boolean flags take a value after "=" (`--read-only=false`); click's
do not, so `ServiceCommand` rewrites those into `--read-only`/`--no-read-only`.
The flags that only make sense on Windows or with plugins are declared and
refused with one sentence. --with-registry-auth sends, as "registry_auth", the
credentials `swarm login` stored on the CLI's node for the image's registry
(`registry_auth`, Docker's encoded auth config), and --no-resolve-image asks
the manager to keep the image reference as given ("no_resolve_image").
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from swarm.cli.common import Duration
from swarm.cli.endpoint_flags import ENDPOINT_MODES, check_publish
from swarm.cli.process_flags import read_env_file
from swarm.cli.service_flags import (CAPABILITY, COMMAND, CONSTRAINT, CPUS, DEFAULT_WAIT, DNS_OPTION, DNS_SEARCH,
                                     DURATION0, ENV, ENV_KEY, FAILURE_ACTIONS, GROUP, HOST, HOST_RM,
                                     HOSTNAME, IP, LABEL, LABEL_KEY, LOG_DRIVERS, LOG_OPT, MEMORY, MOUNT, NETWORK,
                                     NETWORK_REF,
                                     NONNEGATIVE_DURATION, PLACEMENT_PREF, PUBLISH, PUBLISH_RM, RATIO,
                                     RESTART_CONDITIONS, ROLLBACK_FAILURE_ACTIONS, SIGNAL, SYSCTL, SYSCTL_KEY,
                                     ULIMIT, ULIMIT_NAME, UPDATE_ORDERS, USER, WORKDIR,
                                     CONFIG, FILE_NAME, SECRET,
                                     flatten_log_opts)

MODES = ("replicated", "global", "replicated-job", "global-job")
JOB_MODES = ("replicated-job", "global-job")
_BOOL_FLAGS = ("--init", "--tty", "--read-only")     # docker's bool flags a user may turn off (=false)

detach_option = click.option("--detach", "-d", is_flag=True,
                             help="Exit immediately instead of waiting for the service to converge.")
timeout_option = click.option("--timeout", "wait_timeout", type=Duration(), default=DEFAULT_WAIT, show_default=True,
                              help="How long to wait for the service to converge; then exit 1 (the service stays).")


def _refuse(why: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value:
            raise click.BadParameter(f"{param.opts[0]} is only used {why} and is not supported", ctx, param)
        return value
    return callback


def _refused(name: str, why: str, multiple: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(name, multiple=multiple, expose_value=False, callback=_refuse(why),
                        help=f"Not supported: only used {why}.")


def _apply(options: Sequence[Callable[[Callable[..., Any]], Callable[..., Any]]]
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


def _list(update: bool, what: str) -> str:
    return what + ("; replaces them all." if update else " (repeatable).")


def shared_options(update: bool) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The flags create and update share (docker's addServiceFlags); create's defaults are docker's."""
    def default(value: Any) -> Any:
        return None if update else value

    return [
        click.option("--cap-add", multiple=True, type=CAPABILITY, help="Add Linux capabilities (ALL: every one)."),
        click.option("--cap-drop", multiple=True, type=CAPABILITY, help="Drop Linux capabilities (ALL: every one)."),
        click.option("--constraint", "constraints", multiple=True, type=CONSTRAINT, metavar="EXPR",
                     help=_list(update, "Placement constraint, like node.role==manager")),
        _refused("--credential-spec", "on Windows"),
        detach_option,
        click.option("--endpoint-mode", type=click.Choice(ENDPOINT_MODES),
                     help="How clients reach the tasks: a virtual IP (vip, the default) or DNS round robin (dnsrr)."),
        click.option("--entrypoint", type=COMMAND, metavar="command",
                     help='Overwrite the default ENTRYPOINT of the image ("" = the image\'s).'),
        click.option("--env", "-e", "env", multiple=True, type=ENV, metavar="KEY=VALUE",
                     help=_list(update, "Set an environment variable")),
        click.option("--hostname", type=HOSTNAME,
                     help="Container hostname; may hold templates, like {{.Service.Name}}-{{.Task.Slot}}."),
        click.option("--init/--no-init", "init", default=None,
                     help="Use an init inside each service container to forward signals and reap processes."),
        _refused("--isolation", "on Windows"),
        click.option("--limit-cpu", type=CPUS, help="Limit CPUs."),
        click.option("--limit-memory", type=MEMORY, help="Limit memory."),
        click.option("--limit-pids", type=click.IntRange(min=0),
                     help="Limit maximum number of processes (default 0 = unlimited)."),
        click.option("--log-driver", type=click.Choice(LOG_DRIVERS), help="Logging driver for service."),
        click.option("--log-opt", "log_opts", multiple=True, type=LOG_OPT, metavar="KEY=VALUE",
                     callback=flatten_log_opts,
                     help="Logging driver options, like max-size=10m or max-file=3 (repeatable)."),
        click.option("--max-concurrent", type=click.IntRange(min=0),
                     help="Number of job tasks to run concurrently (default equal to --replicas)."),
        click.option("--mount", "mounts", multiple=True, type=MOUNT, metavar="type=..,source=..,target=..",
                     help=_list(update, "Attach a bind, volume or tmpfs mount")),
        click.option("--no-resolve-image", is_flag=True,
                     help="Do not query the registry to resolve the image's digest (keep the reference as given)."),
        click.option("--oom-score-adj", type=click.IntRange(-1000, 1000),
                     help="Tune host's OOM preferences (-1000 to 1000)."),
        click.option("--quiet", "-q", is_flag=True, help="Suppress progress output."),
        click.option("--read-only/--no-read-only", "read_only", default=None,
                     help="Mount the container's root filesystem as read only."),
        click.option("--replicas", type=click.IntRange(min=0), help="Number of tasks."),
        click.option("--replicas-max-per-node", "max_replicas_per_node", type=click.IntRange(min=0),
                     help="Maximum number of tasks per node (default 0 = unlimited)."),
        click.option("--reserve-cpu", type=CPUS, help="Reserve CPUs (0.5 = half a CPU)."),
        click.option("--reserve-memory", type=MEMORY, help="Reserve memory (64m, 1g, 512MiB)."),
        click.option("--restart-condition", type=click.Choice(RESTART_CONDITIONS), default=default("any"),
                     show_default=not update, help="When to restart a task's container."),
        click.option("--restart-delay", type=DURATION0, default=default("5s"), show_default=not update,
                     help="Delay between restart attempts."),
        click.option("--restart-max-attempts", type=click.IntRange(min=0),
                     help="Maximum number of restarts before giving up (0: no limit)."),
        click.option("--restart-window", type=DURATION0, help="Window in which restarts are counted."),
        click.option("--stop-grace-period", type=DURATION0, default=default("10s"), show_default=not update,
                     help="Time to wait before force killing a container."),
        click.option("--stop-signal", type=SIGNAL, help="Signal to stop the container (default: the image's, "
                     "else SIGTERM)."),
        timeout_option,
        click.option("--tty/--no-tty", "-t", "tty", default=None, help="Allocate a pseudo-TTY."),
        click.option("--user", "-u", type=USER, help="Username or UID (format: <name|uid>[:<group|gid>])."),
        click.option("--with-registry-auth", is_flag=True,
                     help="Send this node's registry credentials for the image (swarm login) to the swarm agents."),
        click.option("--workdir", "-w", type=WORKDIR, help="Working directory inside the container."),
    ]


# docker's help of each update/rollback flag: (what, create's default shown).
_ROLLING_HELP = {
    "parallelism": ("Maximum number of tasks {done} simultaneously (0 to {do} all at once)", "1"),
    "delay": ("Delay between {batches} (ns|us|ms|s|m|h)", "0s"),
    "failure_action": ("Action on {kind} failure ({choices})", '"pause"'),
    "monitor": ("Duration after each task {kind} to monitor for failure (ns|us|ms|s|m|h)", "5s"),
    "max_failure_ratio": ("Failure rate to tolerate during {a_kind}", "0"),
    "order": ('{Kind} order ("start-first", "stop-first")', '"stop-first"'),
}
HEALTH_OPTIONS = ("health_cmd", "health_interval", "health_timeout", "health_retries", "health_start_period",
                  "health_start_interval")


def rolling_options(update: bool) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """--update-*, their --rollback-* twins and the --health-* flags (docker's addServiceFlags).
    Not given is None on create too: the daemon fills docker's defaults (shown in the help)."""
    options = []
    for kind in ("update", "rollback"):
        words = {"update": dict(done="updated", do="update", batches="updates", kind="update", a_kind="an update",
                                Kind="Update", choices='"pause", "continue", "rollback"'),
                 "rollback": dict(done="rolled back", do="roll back", batches="task rollbacks", kind="rollback",
                                  a_kind="a rollback", Kind="Rollback", choices='"pause", "continue"')}[kind]
        types = {"parallelism": click.IntRange(min=0), "delay": NONNEGATIVE_DURATION,
                 "failure_action": click.Choice(FAILURE_ACTIONS if kind == "update" else ROLLBACK_FAILURE_ACTIONS),
                 "monitor": NONNEGATIVE_DURATION, "max_failure_ratio": RATIO, "order": click.Choice(UPDATE_ORDERS)}
        for field, (text, default) in _ROLLING_HELP.items():
            help_text = text.format(**words) + ("" if update else f" (default {default})")
            options.append(click.option(f"--{kind}-{field.replace('_', '-')}", f"{kind}_{field}", type=types[field],
                                        help=help_text + "."))
    return options + [
        click.option("--health-cmd", help="Command to run to check health."),
        click.option("--health-interval", type=NONNEGATIVE_DURATION, help="Time between running the check (ms|s|m|h)."),
        click.option("--health-retries", type=click.IntRange(min=0),
                     help="Consecutive failures needed to report unhealthy."),
        click.option("--health-start-interval", type=NONNEGATIVE_DURATION,
                     help="Time between running the check during the start period (ms|s|m|h)."),
        click.option("--health-start-period", type=NONNEGATIVE_DURATION,
                     help="Start period for the container to initialize before counting retries towards unstable "
                     "(ms|s|m|h)."),
        click.option("--health-timeout", type=NONNEGATIVE_DURATION,
                     help="Maximum time to allow one check to run (ms|s|m|h)."),
        click.option("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK."),
    ]


def create_options() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return _apply(shared_options(update=False) + rolling_options(update=False) + [
        click.option("--container-label", "container_labels", multiple=True, type=LABEL, metavar="KEY[=VALUE]",
                     help="Container labels (repeatable)."),
        click.option("--dns", multiple=True, type=IP, help="Set custom DNS servers (repeatable)."),
        click.option("--dns-option", "dns_options", multiple=True, type=DNS_OPTION,
                     help="Set DNS options, like ndots:2 (repeatable)."),
        click.option("--dns-search", multiple=True, type=DNS_SEARCH,
                     help="Set custom DNS search domains (repeatable)."),
        click.option("--env-file", "env_files", multiple=True, type=click.Path(dir_okay=False), metavar="PATH",
                     help="Read in a file of environment variables (KEY=VALUE lines; repeatable)."),
        _refused("--generic-resource", "with plugins", multiple=True),
        click.option("--group", "groups", multiple=True, type=GROUP,
                     help="Set one or more supplementary user groups for the container (repeatable)."),
        click.option("--host", "hosts", multiple=True, type=HOST, metavar="HOST:IP",
                     help="Set one or more custom host-to-IP mappings (repeatable)."),
        click.option("--label", "-l", "labels", multiple=True, type=LABEL, metavar="KEY[=VALUE]",
                     help="Service labels (repeatable)."),
        click.option("--mode", type=click.Choice(MODES), default="replicated", show_default=True,
                     help="Service mode: replicated (--replicas tasks), global (one task per node), or a job "
                     "that runs to completion (replicated-job, global-job)."),
        click.option("--name", help="Service name (default: a random one)."),
        click.option("--network", "networks", multiple=True, type=NETWORK, metavar="NETWORK|name=N,alias=A",
                     help="Attach the service to a network: its name or ID, or name=NETWORK[,alias=ALIAS...] "
                     "(the aliases resolve to the service on that network only; repeatable)."),
        click.option("--placement-pref", "placement_prefs", multiple=True, type=PLACEMENT_PREF,
                     metavar="spread=LABEL", help="Add a placement preference, like spread=node.labels.zone."),
        click.option("--secret", "secrets", multiple=True, type=SECRET, metavar="NAME|source=..,target=..",
                     help="Give the tasks a secret: NAME or source=NAME[,target=FILE][,uid=..][,gid=..][,mode=0444], "
                     "a file under /run/secrets (repeatable)."),
        click.option("--config", "configs", multiple=True, type=CONFIG, metavar="NAME|source=..,target=..",
                     help="Give the tasks a config: NAME or source=NAME[,target=/PATH][,uid=..][,gid=..][,mode=0444], "
                     "a read-only file at its target (default /NAME; repeatable)."),
        click.option("--publish", "-p", "ports", multiple=True, type=PUBLISH, callback=check_publish,
                     help="Publish a port: [PUBLISHED:]TARGET[/PROTO] (ranges: 8080-8081:80-81) or "
                     "published=P,target=T[,protocol=..][,mode=..] (repeatable)."),
        click.option("--sysctl", "sysctls", multiple=True, type=SYSCTL, metavar="KEY=VALUE",
                     help="Sysctl options of the container's namespaces (net.*, kernel.shm*...; repeatable)."),
        click.option("--ulimit", "ulimits", multiple=True, type=ULIMIT, metavar="NAME=SOFT[:HARD]",
                     help="Ulimit options, like nofile=1024:2048 (repeatable)."),
    ])


def update_options() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return _apply(shared_options(update=True) + rolling_options(update=True) + [
        click.option("--force", is_flag=True, help="Force update even if no changes require it."),
        click.option("--rollback", is_flag=True, help="Rollback to previous specification."),
        click.option("--args", type=COMMAND, metavar="command",
                     help="The command's arguments (replace them; shell-quoted string)."),
        click.option("--constraint-add", multiple=True, type=CONSTRAINT, metavar="EXPR",
                     help="Add or update a placement constraint."),
        click.option("--constraint-rm", multiple=True, metavar="EXPR", help="Remove a constraint."),
        click.option("--container-label-add", multiple=True, type=LABEL, metavar="KEY[=VALUE]",
                     help="Add or update a container label."),
        click.option("--container-label-rm", multiple=True, type=LABEL_KEY, metavar="KEY",
                     help="Remove a container label by its key."),
        click.option("--dns-add", multiple=True, type=IP, help="Add or update a custom DNS server."),
        click.option("--dns-option-add", multiple=True, type=DNS_OPTION, help="Add or update a DNS option."),
        click.option("--dns-option-rm", multiple=True, help="Remove a DNS option."),
        click.option("--dns-rm", multiple=True, help="Remove a custom DNS server."),
        click.option("--dns-search-add", multiple=True, type=DNS_SEARCH,
                     help="Add or update a custom DNS search domain."),
        click.option("--dns-search-rm", multiple=True, help="Remove a DNS search domain."),
        click.option("--env-add", multiple=True, type=ENV, metavar="KEY=VALUE", help="Add or update a variable."),
        click.option("--env-rm", multiple=True, type=ENV_KEY, metavar="KEY", help="Remove a variable."),
        _refused("--generic-resource-add", "with plugins", multiple=True),
        _refused("--generic-resource-rm", "with plugins", multiple=True),
        click.option("--group-add", multiple=True, type=GROUP,
                     help="Add an additional supplementary user group to the container."),
        click.option("--group-rm", multiple=True, type=GROUP,
                     help="Remove a previously added supplementary user group from the container."),
        click.option("--host-add", multiple=True, type=HOST, metavar="HOST:IP",
                     help="Add a custom host-to-IP mapping."),
        click.option("--host-rm", multiple=True, type=HOST_RM, metavar="HOST[:IP]",
                     help="Remove a custom host-to-IP mapping."),
        click.option("--image", help="The image of the service's tasks."),
        click.option("--label-add", multiple=True, type=LABEL, metavar="KEY[=VALUE]",
                     help="Add or update a service label."),
        click.option("--label-rm", multiple=True, type=LABEL_KEY, metavar="KEY", help="Remove a label by its key."),
        click.option("--mount-add", multiple=True, type=MOUNT, metavar="type=..,source=..,target=..",
                     help="Add or update a mount (a mount at the same target is replaced)."),
        click.option("--mount-rm", multiple=True, metavar="TARGET", help="Remove a mount by its target path."),
        click.option("--network-add", multiple=True, type=NETWORK, metavar="NETWORK|name=N,alias=A",
                     help="Attach the service to a network: NETWORK or name=NETWORK[,alias=ALIAS...]."),
        click.option("--network-rm", multiple=True, type=NETWORK_REF, help="Detach the service from a network."),
        click.option("--placement-pref-add", multiple=True, type=PLACEMENT_PREF, metavar="spread=LABEL",
                     help="Add a placement preference."),
        click.option("--placement-pref-rm", multiple=True, type=PLACEMENT_PREF, metavar="spread=LABEL",
                     help="Remove a placement preference."),
        click.option("--publish-add", multiple=True, type=PUBLISH, callback=check_publish,
                     help="Publish a port: [PUBLISHED:]TARGET[/PROTO] or published=P,target=T[,protocol=..][,mode=..]."),
        click.option("--publish-rm", multiple=True, type=PUBLISH_RM, help="Remove a published port by its target port."),
        click.option("--secret-add", multiple=True, type=SECRET, metavar="NAME|source=..,target=..",
                     help="Add or update a secret on a service."),
        click.option("--secret-rm", multiple=True, type=FILE_NAME, metavar="NAME", help="Remove a secret by its name."),
        click.option("--config-add", multiple=True, type=CONFIG, metavar="NAME|source=..,target=..",
                     help="Add or update a config file on a service."),
        click.option("--config-rm", multiple=True, type=FILE_NAME, metavar="NAME", help="Remove a config by its name."),
        click.option("--sysctl-add", multiple=True, type=SYSCTL, metavar="KEY=VALUE",
                     help="Add or update a sysctl option."),
        click.option("--sysctl-rm", multiple=True, type=SYSCTL_KEY, metavar="KEY", help="Remove a sysctl option."),
        click.option("--ulimit-add", multiple=True, type=ULIMIT, metavar="NAME=SOFT[:HARD]",
                     help="Add or update a ulimit option."),
        click.option("--ulimit-rm", multiple=True, type=ULIMIT_NAME, metavar="NAME", help="Remove a ulimit option."),
    ])


class ServiceCommand(click.Command):
    """A create/update command that also takes docker's `--init=false`, `--tty=true`... (pflag's
    bool syntax), rewritten into click's `--no-init`/`--tty` before parsing. Only tokens
    before the first argument are options of create: what follows IMAGE is the container's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # --help lists the options by name, as docker's does (the arguments keep their order).
        options = sorted((p for p in self.params if isinstance(p, click.Option)),
                         key=lambda p: max(p.opts, key=len).lstrip("-"))
        self.params = options + [p for p in self.params if not isinstance(p, click.Option)]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_bool_flags(args, self._value_options(), ctx.allow_interspersed_args))

    def _value_options(self) -> set[str]:
        names: set[str] = set()
        for param in self.params:
            if isinstance(param, click.Option) and not param.is_flag and not param.count:
                names.update(param.opts)
        return names


def rewrite_bool_flags(args: Sequence[str], value_options: set[str], interspersed: bool) -> list[str]:
    """--read-only=false -> --no-read-only, --tty=1 -> --tty (other tokens as they are)."""
    out = list(args)
    i = 0
    while i < len(out):
        token = out[i]
        if token == "--":
            break
        name, sep, value = token.partition("=")
        if token.startswith("--") and sep and name in _BOOL_FLAGS:
            if value.lower() in ("true", "1"):
                out[i] = name
            elif value.lower() in ("false", "0"):
                out[i] = "--no-" + name[2:]
        elif token in value_options:
            i += 1                      # its value follows: not an option
        elif not token.startswith("-") or token == "-":
            if not interspersed:
                break                   # IMAGE: the rest is the container's command
        i += 1
    return out


# -- params --------------------------------------------------------------------

# Flags whose value goes to the daemon as it is (tuples as lists): option name -> param.
_DIRECT = {
    "replicas": "replicas", "env": "env", "mounts": "mounts", "constraints": "constraints",
    "reserve_cpu": "reserve_cpu", "reserve_memory": "reserve_memory", "limit_cpu": "limit_cpu",
    "limit_memory": "limit_memory", "restart_condition": "restart_condition", "restart_delay": "restart_delay",
    "restart_max_attempts": "restart_max_attempts", "restart_window": "restart_window",
    "stop_grace_period": "stop_grace_period", "endpoint_mode": "endpoint_mode",
    "cap_add": "cap_add", "cap_drop": "cap_drop", "entrypoint": "entrypoint", "hostname": "hostname",
    "init": "init", "limit_pids": "limit_pids", "log_driver": "log_driver", "max_concurrent": "max_concurrent",
    "oom_score_adj": "oom_score_adj", "read_only": "read_only", "max_replicas_per_node": "max_replicas_per_node",
    "stop_signal": "stop_signal", "tty": "tty", "user": "user", "workdir": "workdir",
}
# Flags of KEY=VALUE pairs, sent as one map.
_MAPS = {"log_opts": "log_opts", "labels": "labels", "container_labels": "container_labels",
         "sysctls": "sysctls", "label_add": "labels_add", "container_label_add": "container_labels_add",
         "sysctl_add": "sysctls_add"}
_CREATE_LISTS = {"placement_prefs": "placement_prefs", "groups": "groups", "dns": "dns",
                 "dns_options": "dns_options", "dns_search": "dns_search", "hosts": "hosts", "ulimits": "ulimits",
                 "networks": "networks", "ports": "ports", "secrets": "secrets", "configs": "configs"}
_UPDATE_LISTS = {
    "image": "image", "args": "command", "env_add": "env_add", "env_rm": "env_rm", "constraint_add": "constraint_add",
    "constraint_rm": "constraint_rm", "container_label_rm": "container_labels_rm", "label_rm": "labels_rm",
    "dns_add": "dns_add", "dns_rm": "dns_rm", "dns_option_add": "dns_options_add", "dns_option_rm": "dns_options_rm",
    "dns_search_add": "dns_search_add", "dns_search_rm": "dns_search_rm", "group_add": "groups_add",
    "group_rm": "groups_rm", "host_add": "hosts_add", "host_rm": "hosts_rm", "mount_add": "mounts_add",
    "mount_rm": "mounts_rm", "placement_pref_add": "placement_prefs_add",
    "placement_pref_rm": "placement_prefs_rm", "sysctl_rm": "sysctls_rm", "ulimit_add": "ulimits_add",
    "ulimit_rm": "ulimits_rm", "secret_add": "secrets_add", "secret_rm": "secrets_rm", "config_add": "configs_add",
    "config_rm": "configs_rm",
}
# What create sends when the flag is not given (the rest is left to the daemon's defaults).
_CREATE_DEFAULTS = {"replicas": 1, "env": (), "mounts": (), "constraints": (), "reserve_cpu": 0, "reserve_memory": 0,
                    "limit_cpu": 0, "limit_memory": 0, "restart_max_attempts": 0, "restart_window": 0.0}


def _wire(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def create_params(values: Mapping[str, Any], name: str, image: str, command: Sequence[str]) -> dict[str, Any]:
    """The `service.create` params of create's flag values (docker's ToService)."""
    mode = values["mode"]
    check_mode(mode, values)
    params: dict[str, Any] = {"name": name, "image": image, "command": list(command), "mode": mode}
    env = make_env(values["env_files"], values["env"])
    for option, key in _DIRECT.items():
        if option == "replicas" and mode in ("global", "global-job"):
            continue
        value = env if option == "env" else values[option]
        if value is None or value == ():
            if option not in _CREATE_DEFAULTS:
                continue                # the daemon's default (docker's)
            value = _CREATE_DEFAULTS[option] if value is None else value
        params[key] = _wire(value)
    for option, key in _MAPS.items():
        if values.get(option):
            params[key] = dict(values[option])
    for option, key in _CREATE_LISTS.items():
        if values.get(option):
            params[key] = _wire(values[option])
    if "ulimits" in params:
        params["ulimits"] = _last_per_name(params["ulimits"])
    params.update(rolling_params(values, lambda option: values.get(option) is not None
                                 and values[option] is not False and values[option] != ""))
    if mode in JOB_MODES and ("update_config" in params or "rollback_config" in params):
        raise click.UsageError("update and rollback configuration is not supported for jobs")
    if values.get("no_resolve_image"):
        params["no_resolve_image"] = True
    return params


_CONFIG_FIELDS = ("parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order")
_HEALTH_FIELDS = {"health_interval": "interval", "health_timeout": "timeout", "health_retries": "retries",
                  "health_start_period": "start_period", "health_start_interval": "start_interval"}


def rolling_params(values: Mapping[str, Any], given: Callable[[str], bool]) -> dict[str, Any]:
    """"update_config"/"rollback_config" (the UpdateConfig fields given) and "healthcheck" (the
    HealthConfig fields given, or {"test": ["NONE"]}): the daemon fills the rest, with docker's
    defaults on create and the service's current values on update."""
    params: dict[str, Any] = {}
    for kind in ("update", "rollback"):
        config = {field: values[f"{kind}_{field}"] for field in _CONFIG_FIELDS if given(f"{kind}_{field}")}
        if config:
            params[f"{kind}_config"] = config
    health_given = [option for option in HEALTH_OPTIONS if given(option)]
    if given("no_healthcheck") and values["no_healthcheck"]:
        if health_given:    # docker's sentence
            raise click.UsageError("--no-healthcheck conflicts with --health-* options")
        params["healthcheck"] = {"test": ["NONE"]}
    elif health_given:
        health: dict[str, Any] = {field: values[option] for option, field in _HEALTH_FIELDS.items() if given(option)}
        if given("health_cmd"):   # "" on update: back to the image's test (docker's updateHealthcheck)
            health["test"] = ["CMD-SHELL", values["health_cmd"]] if values["health_cmd"] else []
        params["healthcheck"] = health
    return params


def check_mode(mode: str, values: Mapping[str, Any]) -> None:
    """docker's ToServiceMode: which flags a mode takes."""
    if mode in ("global", "global-job") and values.get("replicas") is not None:
        raise click.BadParameter("replicas can only be used with replicated or replicated-job mode",
                                 param_hint="'--replicas'")
    if mode in ("global", "global-job") and values.get("max_replicas_per_node"):
        raise click.BadParameter("replicas-max-per-node can only be used with replicated or replicated-job mode",
                                 param_hint="'--replicas-max-per-node'")
    if mode != "replicated-job" and values.get("max_concurrent") is not None:
        raise click.BadParameter("max-concurrent can only be used with replicated-job mode",
                                 param_hint="'--max-concurrent'")


def make_env(env_files: Sequence[str], env: Sequence[str]) -> list[str]:
    """The files' variables, then --env's; one entry per name, the last one winning (docker's makeEnv)."""
    entries: list[str] = []
    for path in env_files:
        try:
            entries += read_env_file(path)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--env-file'") from None
    out: list[str] = []
    for entry in [*entries, *env]:
        if entry in out:
            continue
        key = entry.partition("=")[0]
        out = [e for e in out if e.partition("=")[0] != key] + [entry]
    return out


def _last_per_name(ulimits: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """docker keeps one ulimit per name (the last given), sorted by name."""
    return [dict(u) for u in sorted({u["name"]: u for u in ulimits}.values(), key=lambda u: u["name"])]


def update_params(values: Mapping[str, Any], given: Callable[[str], bool]) -> dict[str, Any]:
    """The `service.update` params of the flags given (`given(option)`); the -add/-rm pairs as
    X_add/X_rm, merged into the stored spec by the daemon. --network-add/-rm and
    --publish-add/-rm are left to the caller (they need the current spec)."""
    params: dict[str, Any] = {}
    for option, key in (*_DIRECT.items(), *_UPDATE_LISTS.items()):
        if given(option):
            params[key] = _wire(values[option])
    for option, key in _MAPS.items():
        if option in values and given(option):
            params[key] = dict(values[option])
    if "image" in params and not params["image"].strip():
        raise click.BadParameter("the image is empty", param_hint="'--image'")
    if "ulimits_add" in params:
        params["ulimits_add"] = _last_per_name(params["ulimits_add"])
    params.update(rolling_params(values, given))
    for flag in ("force", "rollback", "no_resolve_image"):
        if values.get(flag):
            params[flag] = True
    return params


def registry_auth(state_dir: str, image: str) -> str:
    """--with-registry-auth: the credentials `swarm login` stored on this node (STATE_DIR/config.json)
    for IMAGE's registry, as Docker's encoded auth config; "" when there are none (the nodes then
    use their own, as Docker's agents pull anonymously). A malformed IMAGE has none: the daemon
    names the fault."""
    # Imported here: only --with-registry-auth needs the registry code (every other command
    # would pay for loading its HTTP client).
    from swarm.api import reference
    from swarm.daemon.config import Paths
    from swarm.daemon.registry import encode_auth
    from swarm.registry import credentials

    try:
        domain = reference.parse_normalized(image).domain
    except reference.InvalidReference:
        return ""
    found = credentials.lookup(Paths(state_dir).credentials, domain)
    if found is None:
        return ""
    return encode_auth(found[0], found[1], credentials.credential_key(domain))


# What `update --rollback` may be given with (docker: "other flags may not be combined with --rollback").
ROLLBACK_COMPANIONS = frozenset({"ref", "state_dir", "rollback", "detach", "quiet", "wait_timeout"})


def check_rollback_alone(values: Mapping[str, Any], given: Callable[[str], bool]) -> None:
    if values.get("rollback") and any(given(option) for option in values if option not in ROLLBACK_COMPANIONS):
        raise click.UsageError("other flags may not be combined with --rollback")

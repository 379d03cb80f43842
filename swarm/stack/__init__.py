"""`swarm stack`: applications from compose files, as `docker stack` deploys them.

How this works: `loader.load` reads each -c file (YAML, kept with the line of
every key), interpolates its variables (`interpolate`), validates it against the
Compose Specification's JSON schema (`schema`), puts every short syntax into its
long form and merges the files as docker/cli does (`merge`). `convert` turns the
merged file into the control API's params, as docker/cli's cli/compose/convert
does (names NAME_x, the label com.docker.stack.namespace on every object).
`deploy` compares them with what the swarm holds (a pure plan) and applies the
plan through the daemon's control API.

Layering (checked by import-linter, pyproject.toml): this package sits just below
swarm.cli and imports only swarm.api (and PyYAML, jsonschema); it never imports
the daemon, the manager or the agent. `deploy` talks to the daemon through any
object with `call(method, params)`: the CLI hands it its LocalDaemon, tests a fake.
Every module but `deploy` (which calls the daemon) and `loader.read_*` (which
read files) is pure.
"""

"""The Docker Engine API: the docker CLI, docker-py and Engine-API tools drive the swarm.

How this works. Every daemon serves an ASGI application (`app.EngineApp`, on Starlette)
with hypercorn's trio worker on the unix socket STATE_DIR/docker.sock (mode 0660;
`server.serve`) in the daemon process's nursery (swarm/daemon/host.py), for the process's
whole life: outside any swarm it answers as dockerd does ("Swarm: inactive", `swarmops`),
`docker swarm init/join/leave` change that in place, and a locked manager (autolock) says
"locked" and takes `docker swarm unlock`.

It is a thin translation layer. A request's JSON body is checked against moby's swagger
definition of API 1.50 (`schema`, the file in schema/); the pure converters (`services`
for ServiceSpec and Service, `objects` for nodes, tasks, networks, secrets, configs, the
swarm, /info and /version, `logs` for the multiplexed log stream) turn it into the params
of a local API method (docs/daemon-api.md), which is called on the daemon's local router
in process: validation, compare-and-set versions and errors are exactly the CLI's. A
field Docker's API has and this daemon cannot honour is refused with a 400 naming it
(`fields`), never dropped. Errors leave as Docker's {"message": ...} with its statuses
(`errors`). Paths are served unversioned and as /v1.24/ to /v1.50/; anything outside
swarm mode (containers, images, build, exec, plugins, volumes) is 501.
"""

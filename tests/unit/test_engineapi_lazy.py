"""The node daemon loads the Engine API's stack at the API's first request, not at its start
(swarm/engineapi/lazy.py: about 150 modules and 6 MiB a node would hold for nothing), the
registry package's light parts do not import the client, and the client does not import
httpx's command line: the imports are checked in a fresh interpreter; the Engine API is
served over a real unix socket by the real server, built when the first connection comes."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import httpx
import trio

from swarm.engineapi import server
from swarm.engineapi.lazy import LazyApp

# What the Engine API's stack is made of and no other part of the daemon uses: none of it may be
# imported by the daemon's start (h11, h2 and anyio are not listed: the registry client uses them too).
ENGINE_STACK = ("hypercorn", "starlette", "wsproto", "jsonschema", "yaml")


def imported_by(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(*sorted(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stdout.split())


def test_the_daemon_imports_no_engine_api_stack():
    modules = imported_by("import swarm.daemon.daemon\ntry:\n    import swarm.daemon.host\nexcept ImportError:\n    pass")
    assert "swarm.daemon.daemon" in modules and "swarm.engineapi.server" in modules     # the list is read right
    assert sorted(m for m in modules if m.split(".")[0] in ENGINE_STACK) == []
    assert "swarm.engineapi.app" not in modules and "swarm.engineapi.schema" not in modules


def test_the_daemon_imports_the_registry_client_at_its_first_use_not_at_its_start():
    # A node whose images are all here never loads the client's HTTP stack (about 5 MiB).
    modules = imported_by("import swarm.daemon.daemon, swarm.daemon.host, swarm.daemon.distribution, "
                          "swarm.daemon.transfers")
    assert "swarm.daemon.registry" in modules
    stack = sorted(m for m in modules if m.split(".")[0] in ("httpx", "httpcore", "h2", "h11", "anyio"))
    assert stack == ["httpx._main"]   # only the empty stand-in swarm.registry puts there
    assert "swarm.registry.client" not in modules and "swarm.registry.pull" not in modules


def test_the_registry_packages_light_parts_do_not_import_the_client():
    modules = imported_by("import swarm.registry.config, swarm.registry.errors, swarm.registry.media, "
                          "swarm.registry.credentials")
    assert "swarm.registry.config" in modules
    assert "httpx" not in modules and "swarm.registry.client" not in modules


def test_the_registry_client_does_not_load_httpxs_command_line():
    # httpx's CLI (click, rich, pygments) is left out; the client and httpx's own names are there.
    modules = imported_by("from swarm.registry import RegistryClient\nimport httpx\n"
                          "assert httpx.AsyncClient and httpx.TransportError and callable(httpx.main)")
    assert "swarm.registry.client" in modules and "httpx" in modules
    assert sorted(m for m in modules if m.split(".")[0] in ("rich", "pygments")) == []


def test_the_registry_package_still_gives_every_name():
    import swarm.registry as registry
    from swarm.registry import push as push_function
    from swarm.registry.push import push

    assert push_function is push and callable(push)
    for name in registry.__all__:
        assert getattr(registry, name).__module__.startswith("swarm.registry."), name
    try:
        registry.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_a_lazy_app_is_built_once_at_its_first_call():
    built = []

    async def app(scope, receive, send):
        scope["seen"] = len(built)

    def build():
        built.append(1)
        return app

    lazy = LazyApp(build)
    assert not lazy.built and built == []

    async def main():
        for _ in range(3):
            scope: dict = {}
            await lazy(scope, None, None)
            assert scope["seen"] == 1

    trio.run(main)
    assert lazy.built and built == [1]


def test_the_server_builds_the_app_and_hypercorn_at_the_first_connection():
    # The real server on a real unix socket: listening before any build; a request builds
    # the app once and is answered by it; a second request reuses it.
    built = []

    async def hello(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})

    def build():
        built.append(1)
        return hello

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "docker.sock")

        def get() -> httpx.Response:
            with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10) as client:
                return client.get("http://docker/_ping")

        async def main():
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve, LazyApp(build), path)
                assert built == []                   # the socket listens; nothing is built yet
                for _ in range(2):
                    answer = await trio.to_thread.run_sync(get)
                    assert (answer.status_code, answer.text) == (200, "hello")
                assert built == [1]
                nursery.cancel_scope.cancel()

        trio.run(main)

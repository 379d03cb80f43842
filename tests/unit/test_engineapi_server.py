"""The Engine API's server on a real unix socket: each whole answer leaves in one write of the
socket (head and body together), and a streamed answer's head still leaves at once."""
from __future__ import annotations

import pytest
import trio

from swarm.engineapi import objects, server
from swarm.engineapi.app import EngineApp
from swarm.engineapi.jsonbody import encode_json
from tests.unit.test_engineapi_jsonbody import row


@pytest.mark.parametrize("data, waits", [
    (b"HTTP/1.1 200 \r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\n", True),
    (b"HTTP/1.1 404 \r\nContent-Length: 20\r\n\r\n", True),
    (b"HTTP/1.1 200 \r\ntransfer-encoding: chunked\r\n\r\n", False),     # streamed: its head goes at once
    (b"HTTP/1.1 100 \r\ncontent-length: 0\r\n\r\n", False),              # 100 Continue: not the answer yet
    (b"HTTP/1.1 200 \r\nx-note: a\r\n\r\ncontent-length: 2", False),     # only the head's own headers count
    (b"OK", False), (b"", False),
])
def test_head_waits_for_body(data, waits):
    assert server.head_waits_for_body(data) is waits


async def read_answer(stream: trio.SocketStream, buf: bytearray, head_only: bool = False) -> tuple[bytes, bytes]:
    """One answer with a Content-Length: (head, body; none after a HEAD's head); what follows
    stays in `buf`."""
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive_some(65536)
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    size = 0
    for line in head.split(b"\r\n") if not head_only else ():
        if line.lower().startswith(b"content-length:"):
            size = int(line.split(b":")[1])
    while len(buf) < end + size:
        buf += await stream.receive_some(65536)
    body = bytes(buf[end:end + size])
    del buf[:end + size]
    return head, body


@pytest.mark.trio
async def test_each_whole_answer_is_one_write_and_a_stream_head_is_not_held(tmp_path, monkeypatch):
    rows = [row(i) for i in range(1, 4)]
    writes: list[tuple[trio.SocketStream, bytes]] = []
    send_all = trio.SocketStream.send_all

    async def counted(self, data) -> None:
        writes.append((self, bytes(data)))
        await send_all(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", counted)

    async def call(method: str, params: dict):
        if method == "service.ps":
            return rows
        if method == "events" and params.get("after") is None:
            return {"events": [], "next": 1}
        await trio.sleep_forever()           # the event stream: nothing more comes

    path = str(tmp_path / "docker.sock")
    app = EngineApp(call, lambda: "manager", {})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, app, path)
            stream = await trio.open_unix_socket(path)
            buf = bytearray()
            for request, body in ((b"GET /_ping", b"OK"), (b"HEAD /_ping", b""),
                                  (b"GET /v1.41/tasks", encode_json([objects.task_view(t) for t in rows])),
                                  (b"GET /v1.99/tasks", None)):
                writes.clear()
                await stream.send_all(request + b" HTTP/1.1\r\nHost: docker\r\n\r\n")
                head, got = await read_answer(stream, buf, head_only=request.startswith(b"HEAD"))
                if body is not None:
                    assert got == body
                else:
                    assert head.startswith(b"HTTP/1.1 400") and b"too new" in got
                await trio.testing.wait_all_tasks_blocked()
                answer = [data for writer, data in writes if writer is not stream]
                assert len(answer) == 1 and answer[0] == head + got, (request, answer)
            # a streamed answer: its head arrives while the stream waits for events
            await stream.send_all(b"GET /events HTTP/1.1\r\nHost: docker\r\n\r\n")
            while b"\r\n\r\n" not in buf:
                buf += await stream.receive_some(65536)
            assert buf.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in buf.lower()
            await stream.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_keep_alive_closes_idle_connections_only(tmp_path, monkeypatch):
    """KEEP_ALIVE after its last answer (or its connect) an idle connection is closed; one whose
    request is still being answered (a stream that outlasts KEEP_ALIVE) is not."""
    monkeypatch.setattr(server, "KEEP_ALIVE", 0.3)

    async def call(method: str, params: dict):
        if params.get("after") is None:
            return {"events": [], "next": 1}
        await trio.sleep_forever()

    async def closed_within(stream: trio.SocketStream, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            while await stream.receive_some(65536):
                pass
            return True
        return False

    path = str(tmp_path / "docker.sock")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, EngineApp(call, lambda: "manager", {}), path)
            silent = await trio.open_unix_socket(path)
            pinged = await trio.open_unix_socket(path)
            await pinged.send_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
            head, body = await read_answer(pinged, bytearray())
            assert body == b"OK"
            streaming = await trio.open_unix_socket(path)
            await streaming.send_all(b"GET /events HTTP/1.1\r\nHost: docker\r\n\r\n")
            started = trio.current_time()
            assert await closed_within(silent, 3) and await closed_within(pinged, 3)
            assert trio.current_time() - started >= 0.2
            assert not await closed_within(streaming, 1.0)      # busy for 1 s and more: kept
            nursery.cancel_scope.cancel()


def test_another_hypercorn_gets_its_own_handler(monkeypatch):
    """The handler overrides hypercorn internals: a hypercorn without them is served by its own."""
    from hypercorn.trio.tcp_server import TCPServer

    assert issubclass(server.coalescing_server(), TCPServer) and server.coalescing_server() is not TCPServer
    monkeypatch.delattr(TCPServer, "_idle_timeout")
    assert server.coalescing_server.__wrapped__() is TCPServer

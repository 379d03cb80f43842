"""dnspython is loaded when a node first serves DNS (a task on a network), not with the daemon
(the agent imports overlay.dns at start to read resolv.conf; dnspython is ~2 MiB).

Each check runs in a fresh interpreter, since this test process may have loaded dnspython
already. The server check talks only to sockets on loopback that it opens itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What a node does at start and when its tasks use no network: the daemon's module, an agent
# (it reads the node's resolv.conf), the agent's networking with the empty view the managers
# send such a node, the records of that view, and a task without a sandbox removed.
NO_NETWORK = """
import json, sys
import trio
import swarm.daemon.host
from swarm.agent.agent import Agent
from swarm.agent.networking import NodeNetworking, dns_records
from swarm.api import netview

async def main():
    async with trio.open_nursery() as nursery:
        net = NodeNetworking("zz9lazydns", "127.0.0.1", nursery)
        await net.update({})
        await net.remove("task-without-networks")
        nursery.cancel_scope.cancel()

imported = "dns" in sys.modules
agent = Agent("zz9lazydns", None, None)
trio.run(main)
records = dns_records(netview.NetworkView())
print(json.dumps({"at_import": imported, "after_use": "dns" in sys.modules,
                  "host_nameservers_is_tuple": isinstance(agent.host_nameservers, tuple),
                  "records": len(records.networks)}))
"""

# The first use, in an interpreter that has imported nothing of dnspython: a view compiled, then
# the server on loopback answering raw queries (built here byte by byte, so that only the server
# can have loaded dnspython): its names over UDP and TCP, a PTR, another type, a name forwarded
# to an upstream on loopback, a body it cannot read, another opcode.
FIRST_USE = r'''
import json, socket, struct, sys
import trio
from overlay import dns as edns

def query(qid, name, qtype, opcode=0):
    labels = b"".join(bytes([len(label)]) + label for label in name.encode().split(b".") if label)
    return struct.pack("!HHHHHH", qid, opcode << 11 | 0x0100, 1, 0, 0, 0) + labels + b"\0" + \
        struct.pack("!HH", qtype, 1)

def head(reply):
    qid, flags, _, ancount = struct.unpack_from("!HHHH", reply)
    return {"id": qid, "rcode": flags & 0xF, "aa": bool(flags & 0x0400), "an": ancount}

out = {"at_import": "dns" in sys.modules}
records = edns.Records({"n1": edns.NetworkRecords((edns.ServiceRecord("web", "vip", "10.0.0.2", ("10.0.0.5",)),),
                                                  name="front")})
view = records.view(["n1"])
out["after_view"] = "dns" in sys.modules

async def main():
    upstream = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await upstream.bind(("127.0.0.1", 0))

    async def answer_upstream():
        # NXDOMAIN to anything: the query as sent, with QR, RA and rcode 3
        while True:
            data, addr = await upstream.recvfrom(512)
            flags = struct.unpack_from("!H", data, 2)[0] | 0x8080 | 3
            await upstream.sendto(data[:2] + struct.pack("!H", flags) + data[4:], addr)

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    udp_at, tcp_at = udp.getsockname(), tcp.getsockname()
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await client.connect(udp_at)

    async def ask(q):
        await client.send(q)
        return await client.recv(65535)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_upstream)
            await nursery.start(edns.serve, [udp, tcp], lambda: view, [upstream.getsockname()])
            web = await ask(query(1, "web", 1))
            out["web"] = head(web) | {"address": socket.inet_ntoa(web[-4:])}
            scoped = await ask(query(2, "tasks.web.front.", 1))
            out["tasks.web.front"] = head(scoped) | {"address": socket.inet_ntoa(scoped[-4:])}
            ptr = await ask(query(3, "2.0.0.10.in-addr.arpa", 12))
            out["ptr"] = head(ptr) | {"names_web": ptr.endswith(b"\x03web\x00")}
            out["aaaa"] = head(await ask(query(4, "web", 28)))
            out["forwarded"] = head(await ask(query(5, "example.org", 1)))
            out["unreadable"] = head(await ask(struct.pack("!HHHHHH", 6, 0x0100, 1, 0, 0, 0) + b"\xff"))
            out["status_opcode"] = head(await ask(query(7, "web", 1, opcode=2)))
            stream = await trio.open_tcp_stream(*tcp_at)
            q = query(8, "WEB.", 1)
            await stream.send_all(struct.pack("!H", len(q)) + q)
            got = b""
            while len(got) < 2 or len(got) < 2 + struct.unpack_from("!H", got)[0]:
                got += await stream.receive_some(65535)
            out["tcp"] = head(got[2:]) | {"address": socket.inet_ntoa(got[-4:])}
            await stream.aclose()
            nursery.cancel_scope.cancel()

trio.run(main)
print(json.dumps(out))
'''

# What a node's first networked task does before its DNS server runs: the worker thread that
# opens its sockets in the task's namespace loads dnspython (here the loading alone, in a
# thread as the node calls it; opening sockets in a namespace is an integration test's job).
IN_A_THREAD = """
import json, sys
import trio
from overlay import dns as edns

before = "dns" in sys.modules
trio.run(trio.to_thread.run_sync, edns.load_dnspython)
print(json.dumps({"before": before, "loaded": sorted(m for m in sys.modules if m in (
    "dns.message", "dns.rdtypes.ANY.PTR", "dns.rdtypes.IN.A", "dns.reversename", "dns.rrset"))}))
"""


def run(script: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd="/", env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_node_whose_tasks_use_no_network_never_loads_dnspython() -> None:
    assert run(NO_NETWORK) == {"at_import": False, "after_use": False, "host_nameservers_is_tuple": True,
                               "records": 0}


def test_the_first_view_loads_dnspython_and_the_server_answers() -> None:
    out = run(FIRST_USE)
    assert out["at_import"] is False and out["after_view"] is True
    assert out["web"] == {"id": 1, "rcode": 0, "aa": True, "an": 1, "address": "10.0.0.2"}
    assert out["tasks.web.front"] == {"id": 2, "rcode": 0, "aa": True, "an": 1, "address": "10.0.0.5"}
    assert out["ptr"] == {"id": 3, "rcode": 0, "aa": True, "an": 1, "names_web": True}
    assert out["aaaa"] == {"id": 4, "rcode": 0, "aa": True, "an": 0}       # known name, no IPv6
    assert out["forwarded"] == {"id": 5, "rcode": 3, "aa": False, "an": 0}  # the upstream's NXDOMAIN
    assert out["unreadable"] == {"id": 6, "rcode": 1, "aa": False, "an": 0}  # FORMERR
    assert out["status_opcode"] == {"id": 7, "rcode": 4, "aa": False, "an": 0}  # NOTIMP
    assert out["tcp"] == {"id": 8, "rcode": 0, "aa": True, "an": 1, "address": "10.0.0.2"}


def test_the_thread_that_opens_the_first_dns_sockets_loads_dnspython() -> None:
    assert run(IN_A_THREAD) == {"before": False, "loaded": ["dns.message", "dns.rdtypes.ANY.PTR", "dns.rdtypes.IN.A",
                                                            "dns.reversename", "dns.rrset"]}

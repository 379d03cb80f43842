"""overlay/dns.py: the pure resolver byte for byte, forwarding and the server over loopback.

dnspython is the independent oracle: queries are built and replies read with
it, never with the module under test.
"""
from __future__ import annotations

import random
import socket
import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import dns.tsigkeyring
import pytest
import trio

from overlay import dns as edns

RECORDS = edns.Records({
    "net-front": edns.NetworkRecords(
        name="front",
        services=(
            edns.ServiceRecord("web", "vip", vip="10.0.1.2", task_ips=("10.0.1.3", "10.0.1.4", "10.0.1.5")),
            edns.ServiceRecord("cache", "dnsrr", task_ips=("10.0.1.7", "10.0.1.8")),
            edns.ServiceRecord("idle", "dnsrr"),
        ),
        hosts={"web.1.abc": "10.0.1.3", "ctr-x": "10.0.1.9"}),
    "net-back": edns.NetworkRecords(
        name="back",
        services=(edns.ServiceRecord("db", "vip", vip="10.0.2.2", task_ips=("10.0.2.3",)),
                  edns.ServiceRecord("web", "vip", vip="10.0.2.9", task_ips=("10.0.2.10",)))),
})
FRONT = RECORDS.view(["net-front"])


def ask(name, rdtype="A", view=FRONT, seed=0, tcp=False, **kw):
    q = dns.message.make_query(name, rdtype, **kw)
    return q, edns.answer(q.to_wire(), view, rng=random.Random(seed), tcp=tcp)


def reply_of(name, rdtype="A", **kw):
    q, a = ask(name, rdtype, **kw)
    assert not a.forward and a.reply is not None
    r = dns.message.from_wire(a.reply)
    assert q.is_response(r)
    return r


def addresses(r):
    return [rd.address for rrset in r.answer for rd in rrset]


# -- names and endpoint modes ---------------------------------------------------------------
def test_vip_mode_answers_the_vip():
    r = reply_of("web")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert addresses(r) == ["10.0.1.2"]
    assert r.answer[0].ttl == edns.TTL == 1


def test_dnsrr_answers_every_task_ip_in_seeded_shuffled_order():
    orders = {tuple(addresses(reply_of("cache", seed=s))) for s in range(20)}
    assert {frozenset(o) for o in orders} == {frozenset({"10.0.1.7", "10.0.1.8"})}
    assert len(orders) == 2                                   # both orders occur
    assert addresses(reply_of("cache", seed=7)) == addresses(reply_of("cache", seed=7))


def test_tasks_name_answers_every_task_ip():
    assert sorted(addresses(reply_of("tasks.web"))) == ["10.0.1.3", "10.0.1.4", "10.0.1.5"]
    assert sorted(addresses(reply_of("tasks.cache"))) == ["10.0.1.7", "10.0.1.8"]


def test_service_without_tasks_is_known_but_empty():
    r = reply_of("idle")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []


def test_task_and_container_names_and_network_suffix():
    assert addresses(reply_of("web.1.abc")) == ["10.0.1.3"]
    assert addresses(reply_of("ctr-x")) == ["10.0.1.9"]
    assert addresses(reply_of("web.front")) == ["10.0.1.2"]
    assert sorted(addresses(reply_of("tasks.web.front"))) == ["10.0.1.3", "10.0.1.4", "10.0.1.5"]
    assert ask("web.back")[1].forward                        # not attached to back


def test_ptr_for_a_vip_and_a_task_name():
    assert reply_of("2.1.0.10.in-addr.arpa", "PTR").answer[0][0].target.to_text() == "web."
    assert reply_of("3.1.0.10.in-addr.arpa", "PTR").answer[0][0].target.to_text() == "web.1.abc."
    assert ask("99.1.0.10.in-addr.arpa", "PTR")[1].forward


def test_service_on_another_network_is_forwarded_not_answered():
    q, a = ask("db")
    assert a == edns.Answer(forward=True, max_size=512)
    assert addresses(reply_of("db", view=RECORDS.view(["net-back"]))) == ["10.0.2.2"]


def test_view_is_the_union_over_the_task_networks():
    both = RECORDS.view(["net-front", "net-back", "no-such-net"])
    assert addresses(reply_of("db", view=both)) == ["10.0.2.2"]
    assert sorted(addresses(reply_of("web", view=both))) == ["10.0.1.2", "10.0.2.9"]


# -- aliases (--network name=back,alias=db) -----------------------------------------------------
ALIASED = edns.Records({
    "net-back": edns.NetworkRecords(name="back", services=(
        edns.ServiceRecord("app_db", "vip", vip="10.0.2.2", task_ips=("10.0.2.3", "10.0.2.4"),
                           aliases=("db", "Primary.DB")),
        edns.ServiceRecord("app_cache", "dnsrr", task_ips=("10.0.2.7", "10.0.2.8"), aliases=("cache",)))),
    "net-front": edns.NetworkRecords(name="front", services=(
        edns.ServiceRecord("app_db", "vip", vip="10.0.1.2", task_ips=("10.0.1.3",)),)),   # no alias here
})


def test_an_alias_answers_as_the_service_name_on_its_network():
    back = ALIASED.view(["net-back"])
    for name in ("db", "DB.", "primary.db", "db.back", "app_db"):
        assert addresses(reply_of(name, view=back)) == ["10.0.2.2"]                   # VIP mode: the VIP
    for name in ("tasks.db", "tasks.primary.db", "tasks.db.back"):
        assert sorted(addresses(reply_of(name, view=back))) == ["10.0.2.3", "10.0.2.4"]
    assert sorted(addresses(reply_of("cache", view=back))) == ["10.0.2.7", "10.0.2.8"]  # dnsrr: the tasks
    assert sorted(addresses(reply_of("tasks.cache", view=back))) == ["10.0.2.7", "10.0.2.8"]
    # the VIP's PTR is still the service's own name
    assert reply_of("2.2.0.10.in-addr.arpa", "PTR", view=back).answer[0][0].target.to_text() == "app_db."


def test_an_alias_is_not_answered_on_another_network():
    front = ALIASED.view(["net-front"])
    assert addresses(reply_of("app_db", view=front)) == ["10.0.1.2"]      # the service itself is there
    for name in ("db", "tasks.db", "cache", "db.front", "db.back"):
        assert ask(name, view=front)[1] == edns.Answer(forward=True, max_size=512)   # not ours: upstream
    # a task on both networks sees the alias with the back network's address only
    both = ALIASED.view(["net-front", "net-back"])
    assert addresses(reply_of("db", view=both)) == ["10.0.2.2"]
    assert sorted(addresses(reply_of("app_db", view=both))) == ["10.0.1.2", "10.0.2.2"]


def test_a_bad_alias_costs_only_itself():
    net = edns.NetworkRecords(services=(edns.ServiceRecord("web", "vip", "10.0.1.2", ("10.0.1.5",),
                                                           aliases=("ünï", "www")),))
    view = edns.Records({"n": net}).view(["n"])
    assert [p for p in view.rejected if "DNS name" in p]
    assert {str(n) for n in view.names} == {"web.", "tasks.web.", "www.", "tasks.www."}


@pytest.mark.parametrize("name", ["WEB", "Web.", "wEb", "TASKS.Web"])
def test_names_match_case_insensitively_with_or_without_the_final_dot(name):
    assert addresses(reply_of(name))


def test_unknown_name_is_forwarded_with_the_client_size_limit():
    assert ask("example.org")[1] == edns.Answer(forward=True, max_size=512)
    assert ask("example.org", use_edns=0, payload=4096)[1] == edns.Answer(forward=True, max_size=1232)
    assert ask("example.org", tcp=True)[1] == edns.Answer(forward=True, max_size=65535)
    assert ask("web", rdclass="CH")[1].forward               # only class IN is ours


def test_aaaa_for_a_known_name_is_an_immediate_empty_noerror():
    for rdtype in ("AAAA", "MX", "TXT"):
        r = reply_of("web", rdtype)
        assert r.rcode() == dns.rcode.NOERROR and r.answer == [] and r.flags & dns.flags.AA
    assert ask("unknown.example", "AAAA")[1].forward


def test_reply_echoes_id_rd_and_question_byte_for_byte():
    query = struct.pack("!6H", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x03WeB\x00" + struct.pack("!HH", 1, 1)
    a = edns.answer(query, FRONT, rng=random.Random(0))
    assert a.reply == (struct.pack("!6H", 0xBEEF, 0x8580, 1, 1, 0, 0) + b"\x03WeB\x00\x00\x01\x00\x01"
                       + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x01\x00\x04" + bytes([10, 0, 1, 2]))


def test_edns_query_gets_an_opt_record():
    r = reply_of("web", use_edns=0, payload=4096)
    assert r.edns == 0 and r.payload == edns.EDNS_PAYLOAD


def test_large_answer_is_truncated_over_udp_and_whole_over_tcp():
    ips = tuple(f"10.9.{i // 250}.{i % 250 + 1}" for i in range(100))
    view = edns.Records({"n": edns.NetworkRecords(services=(edns.ServiceRecord("big", "dnsrr", task_ips=ips),))}) \
        .view(["n"])
    _, a = ask("big", view=view)
    assert len(a.reply) <= 512
    r = dns.message.from_wire(a.reply)
    assert r.flags & dns.flags.TC and 0 < len(addresses(r)) < 100
    r = dns.message.from_wire(ask("big", view=view, tcp=True)[1].reply)
    assert not r.flags & dns.flags.TC and sorted(addresses(r)) == sorted(ips)


BIG_IPS = tuple(f"10.9.{i // 250}.{i % 250 + 1}" for i in range(100))
BIG = edns.Records({"n": edns.NetworkRecords(
    services=(edns.ServiceRecord("big", "dnsrr", task_ips=BIG_IPS),))}).view(["n"])
A_RECORD = 16           # a compressed owner name (2), type, class, TTL, length (10), the address (4)


def test_truncated_udp_reply_without_edns_holds_every_record_that_fits_512_bytes():
    q, a = ask("big", view=BIG, seed=3)
    r = dns.message.from_wire(a.reply)
    assert a.max_size == 512 and len(a.reply) <= 512 and r.flags & dns.flags.TC
    assert q.is_response(r) and r.rcode() == dns.rcode.NOERROR and r.edns == -1
    got = addresses(r)
    assert len(got) == len(set(got)) == (512 - 12 - len(b"\x03big\x00") - 4) // A_RECORD == 30
    assert set(got) <= set(BIG_IPS)
    # the first records of the seeded shuffle, as an untruncated (TCP) reply lists them
    assert got == addresses(dns.message.from_wire(ask("big", view=BIG, seed=3, tcp=True)[1].reply))[:30]
    assert BIG.replies == {}                                  # shuffled and truncated: never remembered


@pytest.mark.parametrize("payload, limit", [(100, 512), (512, 512), (1000, 1000), (1232, 1232), (4096, 1232)])
def test_edns_payload_sets_the_reply_limit_up_to_1232(payload, limit):
    q, a = ask("big", view=BIG, use_edns=0, payload=payload)
    r = dns.message.from_wire(a.reply)
    assert a.max_size == limit and len(a.reply) <= limit and r.flags & dns.flags.TC
    assert r.edns == 0 and r.payload == edns.EDNS_PAYLOAD     # the OPT record survives truncation
    opt = 11                                                  # root name, type, class, TTL, length
    assert len(addresses(r)) == (limit - 12 - len(b"\x03big\x00") - 4 - opt) // A_RECORD


def test_edns_reply_that_fits_is_whole():
    r = reply_of("big", view=BIG, use_edns=0, payload=4096, tcp=True)
    assert not r.flags & dns.flags.TC and sorted(addresses(r)) == sorted(BIG_IPS) and r.edns == 0


def test_a_bad_record_costs_only_its_own_name():
    good = edns.ServiceRecord("web", "vip", "10.0.1.2", ("10.0.1.5",))
    net = edns.NetworkRecords(services=(edns.ServiceRecord("x", "rr"), edns.ServiceRecord("ünï", "vip", "10.0.1.3"),
                                        good), hosts={"x": "fe80::1", "h": "10.0.1.9"})
    view = edns.Records({"n": net}).view(["n"])
    assert [p for p in view.rejected if "endpoint mode" in p] and [p for p in view.rejected if "IPv4" in p]
    assert [p for p in view.rejected if "DNS name" in p]
    assert {str(n) for n in view.names} == {"web.", "tasks.web.", "h."}


# -- malformed input ----------------------------------------------------------------------
def rcode_of(a):
    return dns.message.from_wire(a.reply).rcode()


def test_too_short_for_a_header_is_dropped():
    for junk in (b"", b"\x00", b"\x12\x34\x01\x00\x00\x01"):
        assert edns.answer(junk, FRONT, rng=random.Random(0)) == edns.Answer()


def test_header_with_a_broken_body_gets_formerr():
    query = dns.message.make_query("web", "A")
    # A fixed id: the last case re-reads the query's own header as a question, and an
    # id whose first byte is 0 or 1 makes that a readable question (1 run in 128 failed).
    query.id = 0x4A4A
    good = query.to_wire()
    for bad in (good[:12],                                            # question missing
                good[:-3],                                            # question cut short
                good[:12] + b"\xc0\x0c" + good[-4:],                  # pointer in the question
                good[:4] + b"\x00\x02" + good[6:],                    # two questions claimed
                good[:10] + b"\x00\x01" + good + b"\x00\x00\x29"):    # additional record cut short
        a = edns.answer(bad, FRONT, rng=random.Random(0))
        assert a.reply[:2] == good[:2] and rcode_of(a) == dns.rcode.FORMERR


def test_responses_are_dropped_and_other_opcodes_not_implemented():
    q = dns.message.make_query("web", "A")
    assert edns.answer(dns.message.make_response(q).to_wire(), FRONT, rng=random.Random(0)) == edns.Answer()
    q.set_opcode(dns.opcode.NOTIFY)
    assert rcode_of(edns.answer(q.to_wire(), FRONT, rng=random.Random(0))) == dns.rcode.NOTIMP


def test_any_response_sent_as_a_query_is_dropped():
    q = dns.message.make_query("web", "A")
    whole = dns.message.make_response(q)
    whole.answer.append(dns.rrset.from_text("web.", 1, "IN", "A", "10.0.1.2"))
    for wire in (whole.to_wire(),
                 whole.to_wire()[:-5],                                    # cut short: unreadable too
                 struct.pack("!6H", 7, 0x8100, 1, 0, 0, 0) + b"\xff" * 20):  # QR and garbage
        for tcp in (False, True):
            assert edns.answer(wire, FRONT, rng=random.Random(0), tcp=tcp) == edns.Answer()
    assert FRONT.replies.get(whole.to_wire()[2:]) is None


def test_garbage_body_after_a_valid_header_gets_formerr_echoing_id_opcode_and_rd():
    rng = random.Random(77)
    formerr = 0
    for i in range(200):
        qid = rng.randrange(65536)
        header = struct.pack("!6H", qid, 0x0100, rng.randrange(1, 3), rng.randrange(2), 0, rng.randrange(2))
        a = edns.answer(header + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))), FRONT, rng=rng)
        if a.reply is None or dns.message.from_wire(a.reply).rcode() != dns.rcode.FORMERR:
            continue                                      # the random body happened to be a readable query
        r = dns.message.from_wire(a.reply)
        assert r.id == qid and r.flags & dns.flags.QR and r.flags & dns.flags.RD
        assert r.opcode() == dns.opcode.QUERY and r.question == []
        formerr += 1
    assert formerr > 150
    a = edns.answer(struct.pack("!6H", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x05ab", FRONT, rng=rng)
    r = dns.message.from_wire(a.reply)
    assert (r.id, r.rcode(), r.question) == (0xBEEF, dns.rcode.FORMERR, [])


def test_error_replies_echo_id_opcode_rd_question_and_edns():
    q = dns.message.make_query("web", "A", use_edns=0, payload=4096)
    q.set_opcode(dns.opcode.NOTIFY)
    r = dns.message.from_wire(edns.answer(q.to_wire(), FRONT, rng=random.Random(0)).reply)
    assert q.is_response(r) and r.rcode() == dns.rcode.NOTIMP and r.opcode() == dns.opcode.NOTIFY
    assert r.flags & dns.flags.RD and r.question == q.question and r.edns == 0
    q = dns.message.make_query("x.org", "MX")
    q.flags &= ~dns.flags.RD
    r = dns.message.from_wire(edns.error_reply(q.to_wire(), edns.SERVFAIL))
    assert q.is_response(r) and r.rcode() == dns.rcode.SERVFAIL and not r.flags & dns.flags.RD
    assert r.question == q.question and r.edns == -1
    assert edns.error_reply(b"\x12\x34", edns.SERVFAIL) is None


def test_trailing_bytes_and_an_unknown_tsig_key_do_not_stop_an_answer():
    wire = dns.message.make_query("web", "A").to_wire()
    assert addresses(dns.message.from_wire(edns.answer(wire + b"\0\0\0", FRONT, rng=random.Random(0)).reply)) \
        == ["10.0.1.2"]
    q = dns.message.make_query("web", "A")
    q.use_tsig(dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0"}), "k.")
    r = dns.message.from_wire(edns.answer(q.to_wire(), FRONT, rng=random.Random(0)).reply)
    assert addresses(r) == ["10.0.1.2"] and not r.had_tsig         # we hold no keys: answered unsigned


def test_fuzz_never_raises_and_every_reply_parses():
    """Invariant: for any bytes, answer() returns normally; a reply is a DNS message."""
    rng = random.Random(1234)
    seeds = [dns.message.make_query(n, t).to_wire() for n in ("web", "tasks.cache", "x.org")
             for t in ("A", "AAAA", "PTR")]
    for i in range(5000):
        wire = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            if op == 0 and wire:
                wire[rng.randrange(len(wire))] = rng.randrange(256)
            elif op == 1:
                del wire[rng.randrange(len(wire) + 1):]
            else:
                wire += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        a = edns.answer(bytes(wire), FRONT, rng=rng, tcp=bool(i & 1))
        if a.reply is not None:
            dns.message.from_wire(a.reply, ignore_trailing=True)


def test_the_reply_cache_never_changes_an_answer():
    """Invariant: answers from a view that has cached earlier replies equal a fresh view's."""
    ips = tuple(f"10.9.0.{i}" for i in range(1, 60))
    records = edns.Records({"n": edns.NetworkRecords(services=(
        edns.ServiceRecord("big", "dnsrr", task_ips=ips), edns.ServiceRecord("one", "vip", vip="10.9.1.1")))})
    warm = records.view(["n"])
    queries = [(dns.message.make_query(name, t, **kw).to_wire(), tcp)
               for name in ("big", "ONE", "one.", "tasks.big", "x.org") for t in ("A", "AAAA")
               for kw in ({}, {"use_edns": 0, "payload": 1400}) for tcp in (False, True)]
    for _ in range(3):
        for wire, tcp in queries:
            fresh = edns.answer(wire, records.view(["n"]), rng=random.Random(5), tcp=tcp)
            assert edns.answer(wire, warm, rng=random.Random(5), tcp=tcp) == fresh
    assert 0 < len(warm.replies) < len(queries)


def test_a_remembered_multi_address_answer_is_shuffled_on_every_hit():
    ips = [f"10.9.0.{i}" for i in range(1, 9)]
    view = edns.Records({"n": edns.NetworkRecords(services=(
        edns.ServiceRecord("big", "dnsrr", task_ips=tuple(ips)),))}).view(["n"])
    wire = dns.message.make_query("big", "A").to_wire()
    edns.answer(wire, view, rng=random.Random(1))
    assert len(view.replies) == 1                               # remembered despite the shuffle

    def order(seed):
        return [a.address for rrset in dns.message.from_wire(edns.answer(wire, view, rng=random.Random(seed)).reply)
                .answer for a in rrset]

    orders = {tuple(order(seed)) for seed in range(30)}
    assert len(orders) > 20 and all(sorted(o) == sorted(ips) for o in orders)
    expected = list(ips)
    random.Random(3).shuffle(expected)                          # as if the records were shuffled, then rendered
    assert order(3) == expected


def test_resolv_conf_upstreams_leave_out_loopback():
    text = "search x\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\n" \
           "nameserver fe80::1%eth0\nnameserver bogus\n# nameserver 1.1.1.1\n"
    assert edns.parse_resolv_conf(text) == [("10.255.255.53", 53), ("fe80::1%eth0", 53)]


# -- forwarding, against fake upstreams on loopback ---------------------------------------
async def fake_upstream(nursery, reply_for, *, tcp=False):
    """A DNS server on 127.0.0.1 (UDP, and TCP on the same port) answering reply_for(query)."""
    while True:
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await listener.bind(("127.0.0.1", port))
            break
        except OSError:
            udp.close()
            listener.close()
    listener.listen(8)
    seen = []

    async def udp_loop():
        with udp:
            while True:
                data, addr = await udp.recvfrom(65535)
                seen.append(("udp", data))
                for out in reply_for(dns.message.from_wire(data), False):
                    await udp.sendto(out, addr)

    async def tcp_loop():
        with listener:
            while True:
                conn, _ = await listener.accept()
                async with trio.SocketStream(conn) as s:
                    data = await s.receive_some(65535)
                    seen.append(("tcp", data[2:]))
                    for out in reply_for(dns.message.from_wire(data[2:]), True):
                        await s.send_all(struct.pack("!H", len(out)) + out)

    nursery.start_soon(udp_loop)
    nursery.start_soon(tcp_loop)
    return ("127.0.0.1", port), seen


def nxdomain(q, tcp):
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.NXDOMAIN)
    return [r.to_wire()]


def query_wire(name="example.org", qid=4242):
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q, q.to_wire()


@pytest.mark.trio
async def test_forward_relays_the_upstream_answer_under_the_client_id():
    async with trio.open_nursery() as nursery:
        up, seen = await fake_upstream(nursery, nxdomain)
        q, wire = query_wire()
        r = dns.message.from_wire(await edns.forward(wire, [up]))
        assert q.is_response(r) and r.rcode() == dns.rcode.NXDOMAIN
        assert len(seen) == 1 and seen[0][1][2:] == wire[2:]      # same query, fresh id
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_forward_ignores_stray_replies_and_retries_truncated_over_tcp():
    def big(q, tcp):
        r = dns.message.make_response(q)
        stray = dns.message.make_response(q)
        stray.id ^= 1
        if not tcp:
            r.flags |= dns.flags.TC
            return [stray.to_wire(), r.to_wire()]
        r.answer.append(dns.rrset.from_text(q.question[0].name, 5, "IN", "A",
                                            *[f"192.0.2.{i}" for i in range(1, 60)]))
        return [r.to_wire()]

    async with trio.open_nursery() as nursery:
        up, seen = await fake_upstream(nursery, big)
        q, wire = query_wire()
        r = dns.message.from_wire(await edns.forward(wire, [up]))
        assert [kind for kind, _ in seen] == ["udp", "tcp"] and len(addresses(r)) == 59
        # a client limited to 512 bytes gets the truncated UDP reply instead
        r = dns.message.from_wire(await edns.forward(wire, [up], max_size=512))
        assert r.flags & dns.flags.TC and r.answer == []
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_forward_ignores_a_reply_to_another_question_under_the_same_id():
    def spoofing(q, tcp):
        other = dns.message.make_query("evil.example", "A")
        other.id = q.id
        spoof = dns.message.make_response(other)
        spoof.answer.append(dns.rrset.from_text("evil.example.", 5, "IN", "A", "192.0.2.66"))
        real = dns.message.make_response(q)
        real.answer.append(dns.rrset.from_text(q.question[0].name, 5, "IN", "A", "192.0.2.1"))
        return [spoof.to_wire(), b"\x00" * 5, real.to_wire()]

    async with trio.open_nursery() as nursery:
        up, _ = await fake_upstream(nursery, spoofing)
        q, wire = query_wire("EXAMPLE.org")                     # the question matches in any case
        r = dns.message.from_wire(await edns.forward(wire, [up]))
        assert q.is_response(r) and addresses(r) == ["192.0.2.1"]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_forward_moves_on_from_a_refusing_upstream():
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        await closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
    async with trio.open_nursery() as nursery:
        up, _ = await fake_upstream(nursery, nxdomain)
        with trio.fail_after(1):
            r = dns.message.from_wire(await edns.forward(query_wire()[1], [dead, up]))
        assert r.rcode() == dns.rcode.NXDOMAIN
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_forward_answers_servfail_when_no_upstream_answers_in_time(autojump_clock):
    async with trio.open_nursery() as nursery:
        silent, seen = await fake_upstream(nursery, lambda q, tcp: [])
        q, wire = query_wire()
        start = trio.current_time()
        r = dns.message.from_wire(await edns.forward(wire, [silent, silent], timeout=1.0))
        assert trio.current_time() - start == pytest.approx(1.0)
        assert q.is_response(r) and r.rcode() == dns.rcode.SERVFAIL and len(seen) == 2
        assert dns.message.from_wire(await edns.forward(wire, [])).rcode() == dns.rcode.SERVFAIL
        nursery.cancel_scope.cancel()


# -- the server over loopback, with a fake forwarder ----------------------------------------
async def start_server(nursery, forwarder, **kw):
    udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await udp.bind(("127.0.0.1", 0))
    tcp = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    addrs = udp.getsockname(), tcp.getsockname()
    await nursery.start(lambda task_status: edns.serve([udp, tcp], lambda: FRONT, [], forwarder=forwarder,
                                                       rng=random.Random(0), task_status=task_status, **kw))
    return addrs


async def fake_nxdomain_forwarder(query, max_size):
    return nxdomain(dns.message.from_wire(query), False)[0]


async def udp_ask(addr, wire):
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        await c.connect(addr)
        await c.send(wire)
        with trio.fail_after(2):
            return await c.recv(65535)


@pytest.mark.trio
async def test_server_answers_ours_and_forwards_the_rest_over_udp_and_tcp():
    async with trio.open_nursery() as nursery:
        udp_addr, tcp_addr = await start_server(nursery, fake_nxdomain_forwarder)
        assert addresses(dns.message.from_wire(await udp_ask(udp_addr, query_wire("web")[1]))) == ["10.0.1.2"]
        r = dns.message.from_wire(await udp_ask(udp_addr, query_wire("db")[1]))   # other network
        assert r.rcode() == dns.rcode.NXDOMAIN
        async with await trio.open_tcp_stream(*tcp_addr) as s:
            for name, expect in (("web", dns.rcode.NOERROR), ("db", dns.rcode.NXDOMAIN)):
                wire = query_wire(name)[1]
                await s.send_all(struct.pack("!H", len(wire)) + wire)
                with trio.fail_after(2):
                    head = await edns._recv_exact(s, 2)
                    r = dns.message.from_wire(await edns._recv_exact(s, struct.unpack("!H", head)[0]))
                assert r.rcode() == expect
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_bad_clients_do_not_stop_the_server():
    async def broken_forwarder(query, max_size):
        raise RuntimeError("boom")

    async with trio.open_nursery() as nursery:
        udp_addr, tcp_addr = await start_server(nursery, broken_forwarder)
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            await c.connect(udp_addr)
            await c.send(b"\x01")                                 # dropped silently
        s = await trio.open_tcp_stream(*tcp_addr)                 # sends half a message, then vanishes
        await s.send_all(b"\x00\x40abc")
        await s.aclose()
        r = dns.message.from_wire(await udp_ask(udp_addr, query_wire("x.org")[1]))
        assert r.rcode() == dns.rcode.SERVFAIL                    # the forwarder's crash, not silence
        formerr = await udp_ask(udp_addr, query_wire("web")[1][:14])
        assert dns.message.from_wire(formerr).rcode() == dns.rcode.FORMERR
        assert addresses(dns.message.from_wire(await udp_ask(udp_addr, query_wire("web")[1]))) == ["10.0.1.2"]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_forwarding_beyond_the_limit_is_refused_with_servfail_at_once():
    release = trio.Event()

    async def slow_forwarder(query, max_size):
        await release.wait()
        return nxdomain(dns.message.from_wire(query), False)[0]

    async with trio.open_nursery() as nursery:
        udp_addr, _ = await start_server(nursery, slow_forwarder, limiter=trio.CapacityLimiter(1))
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            await first.connect(udp_addr)
            await first.send(query_wire("a.org", 1)[1])
            r = dns.message.from_wire(await udp_ask(udp_addr, query_wire("b.org", 2)[1]))
            assert r.id == 2 and r.rcode() == dns.rcode.SERVFAIL
            release.set()
            with trio.fail_after(2):
                assert dns.message.from_wire(await first.recv(512)).rcode() == dns.rcode.NXDOMAIN
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_tcp_clients_are_bounded_and_idle_ones_dropped(autojump_clock):
    async with trio.open_nursery() as nursery:
        _, tcp_addr = await start_server(nursery, fake_nxdomain_forwarder, max_tcp=1)
        idle = await trio.open_tcp_stream(*tcp_addr)
        await trio.sleep(0.1)
        extra = await trio.open_tcp_stream(*tcp_addr)
        assert await extra.receive_some(10) == b""             # over the limit: closed at once
        start = trio.current_time()
        assert await idle.receive_some(10) == b""              # silent client: closed after TCP_IDLE
        assert trio.current_time() - start == pytest.approx(edns.TCP_IDLE - 0.1, abs=0.05)
        await idle.aclose()
        await extra.aclose()
        nursery.cancel_scope.cancel()

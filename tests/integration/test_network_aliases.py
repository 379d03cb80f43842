"""Network aliases end to end in a 3-host lab (`--network name=back,alias=db`): a task on
`back` reaches the service by its alias with its own resolver, the embedded DNS answers
the alias (the VIP, or the tasks in dnsrr mode) and `tasks.ALIAS` on that network only,
and `service update --network-add` brings an alias on another network."""
import json

from swarm.lab.localcluster import eventually
from tests.integration.test_networking import HTTPD, RESOLVE, in_netns, lab, on, task_netns, tasks  # noqa: F401

import pytest  # noqa: E402
pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)

# The client asks for `db` from inside its container (its resolv.conf names 127.0.0.11), then
# fetches from that address; each line it logs is the answer of one of db's tasks, or why
# there was none. (busybox's nslookup, not its wget: the static busybox's libc resolver crashes.)
CLIENT = ["sh", "-c", 'while true; do ip=$(nslookup db | awk "/^Address: /{print \\$2; exit}"); '
                      'wget -q -O - "http://$ip/i.html" || echo "failed: db is ${ip:-not found}"; sleep 0.5; done']


def names(lab, row, *queries):
    return json.loads(in_netns(task_netns(lab, row), RESOLVE % (list(queries),)))


def test_an_alias_resolves_and_answers_on_its_network_only(lab):
    on(lab, "h1", "network", "create", "back")
    on(lab, "h1", "network", "create", "front")
    on(lab, "h1", "service", "create", "--name", "app_db", "--replicas", "2", "--network",
       "name=back,alias=db,alias=primary", "demo:1", *HTTPD, timeout=120)
    made = on(lab, "h1", "service", "create", "--name", "app_kv", "--replicas", "2", "--endpoint-mode", "dnsrr",
              "--network", "name=back,alias=kv,driver-opt=com.docker.network.driver.mtu=1400",
              "demo:1", "sleep", "1000", timeout=120)
    assert "driver-opt is ignored" in made.stderr
    on(lab, "h1", "service", "create", "--name", "client", "--network", "back", "demo:1", *CLIENT, timeout=120)
    on(lab, "h1", "service", "create", "--name", "outsider", "--network", "front", "demo:1", "sleep", "1000",
       timeout=120)
    eventually(lambda: len(tasks(lab, "app_db")) == 2 and len(tasks(lab, "app_kv")) == 2, 30, "tasks running")
    inspected = json.loads(on(lab, "h1", "service", "inspect", "app_db").stdout)[0]["spec"]
    back = inspected["networks"][0]
    assert inspected["network_aliases"] == {back: ["db", "primary"]}

    # On back: the alias answers as the service's name (the VIP), tasks.ALIAS the tasks.
    on_back = names(lab, tasks(lab, "client")[0], "app_db", "db", "primary", "db.back", "tasks.db",
                    "tasks.app_db", "kv", "tasks.kv", "tasks.app_kv")
    assert len(on_back["tasks.db"]) == 2 and on_back["tasks.db"] == on_back["tasks.app_db"]
    assert on_back["db"] == on_back["primary"] == on_back["db.back"] == on_back["app_db"]
    assert len(on_back["db"]) == 1 and on_back["db"][0] not in on_back["tasks.db"]      # the VIP
    assert len(on_back["kv"]) == 2 and on_back["kv"] == on_back["tasks.kv"] == on_back["tasks.app_kv"]  # dnsrr

    # ...and the client reaches db by that name, through the VIP, on both of its tasks.
    db_hosts = {f"task {r['id'][:12]}" for r in tasks(lab, "app_db")}

    def answered() -> set[str]:
        out = on(lab, "h1", "service", "logs", "--raw", "client", timeout=60).stdout
        return {line.strip() for line in out.splitlines() if line.startswith("task ")}
    eventually(lambda: answered() == db_hosts, 60, "the client reaches both db tasks by the alias db")

    # On front: the aliases of back are not there (the name goes upstream and does not resolve).
    on_front = names(lab, tasks(lab, "outsider")[0], "db", "tasks.db", "primary", "kv", "tasks.kv", "db.back")
    assert not any(isinstance(found, list) for found in on_front.values()), on_front

    # --network-add with an alias: the service answers as `store` on front, still not as `db`.
    on(lab, "h1", "service", "update", "--network-add", "name=front,alias=store", "app_db", timeout=180)
    spec = json.loads(on(lab, "h1", "service", "inspect", "app_db").stdout)[0]["spec"]
    front = next(n for n in spec["networks"] if n != back)
    assert spec["network_aliases"] == {back: ["db", "primary"], front: ["store"]}

    def front_view() -> dict:
        return names(lab, tasks(lab, "outsider")[0], "store", "tasks.store", "db")
    eventually(lambda: isinstance(front_view()["store"], list), 30, "store resolves on front")
    seen = front_view()
    assert len(seen["store"]) == 1 and len(seen["tasks.store"]) == 2 and not isinstance(seen["db"], list)

"""A stack shaped like the voting app, deployed with `swarm stack deploy` on a 3-host lab.

Five services of the demo image (busybox), on a `front` and a `back` network, speak HTTP
to each other by their compose names: vote (front and back, published on 8080) asks
`redis`; redis (back) answers also as `cache`, the alias the worker uses; worker (back)
asks `db` and `cache`; db (back) keeps its page in the named volume `dbdata`; result
(front and back, published on 8081) serves its config /etc/result.conf and what `db`
answers. db and worker use the secret db_password, the others not. Every task starts by
logging the digest of /run/secrets/db_password or "absent", so the logs tell who can read
it (a log is on disk: the value itself must not be in one).

The checks: every name answers (read from the tasks' logs and, for vote and result, from
their pages through the routing mesh on each host's address), the secret reaches db and
worker only, the config is read-only at its target, and `stack rm` leaves no service,
stack network, secret, config, runc container, task directory or network namespace of
the stack on any host (the named volume stays, as Docker's `stack rm` keeps volumes).
In between, the stack is removed and at once deployed again, while the old tasks are
still stopping: the new networks get the VXLAN ids just freed, and no task is refused.
"""
import hashlib
import json
import subprocess

from swarm.agent.networking import prefix_for
from swarm.lab.localcluster import eventually
from tests.integration.test_networking import PY, lab, on  # noqa: F401 (lab: fixture)

import pytest  # noqa: E402
pytestmark = pytest.mark.xdist_group("netns")   # network namespaces: one worker (tests/conftest.py)

HOSTS = ("h1", "h2", "h3")
PASSWORD = b"correct horse battery staple\n"
CONF = "colour=blue"

# Shell shared by every service. `get NAME PORT` resolves NAME with busybox's nslookup (its
# wget crashes when it resolves a name itself) and fetches /i.html from that address; it
# prints the page or why there was none. `secret` prints what the task can read of the secret.
PRELUDE = r"""
get() {
  ip=$(nslookup "$1" 2>/dev/null | awk '/^Address: /{print $2; exit}')
  if [ -z "$ip" ]; then echo "$1 not found"; return; fi
  wget -q -O - "http://$ip:$2/i.html" 2>/dev/null || echo "$1 failed at $ip"
}
secret() {
  if [ -e /run/secrets/db_password ]; then sha256sum /run/secrets/db_password | cut -c1-64; else echo absent; fi
}
echo "secret $(secret)"
"""

def serving(page: str) -> str:
    """A page, /i.html on port 80, rewritten every half second from what the task sees."""
    return (f'mkdir -p /tmp/www; while true; do echo "{page}" > /tmp/www/n; mv /tmp/www/n /tmp/www/i.html; '
            'sleep 0.5; done & exec httpd -f -p 80 -h /tmp/www')


SCRIPTS = {
    "vote": serving("vote $(hostname) redis=[$(get redis 6379)]"),
    "redis": 'echo "redis $(hostname)" > /tmp/i.html; exec httpd -f -p 6379 -h /tmp',
    "worker": 'while true; do echo "db=[$(get db 5432)] cache=[$(get cache 6379)]"; sleep 0.5; done',
    "db": 'echo "db $(hostname)" > /var/lib/db/i.html; exec httpd -f -p 5432 -h /var/lib/db',
    "result": ('(echo x >> /etc/result.conf) 2>/dev/null && echo "config writable" || echo "config read-only"; '
               + serving("result $(hostname) conf=[$(cat /etc/result.conf)] db=[$(get db 5432)]")),
}


def command(service: str) -> str:
    # `$$` is a `$` after the stack's interpolation; JSON strings are YAML strings.
    return json.dumps(["sh", "-c", (PRELUDE + SCRIPTS[service]).replace("$", "$$")])


STACK = f"""
version: "3.8"
services:
  vote:
    image: demo:1
    command: {command("vote")}
    networks: [front, back]
    ports: ["8080:80"]
  redis:
    image: demo:1
    command: {command("redis")}
    networks:
      back:
        aliases: [cache]
  worker:
    image: demo:1
    command: {command("worker")}
    networks: [back]
    secrets: [db_password]
  db:
    image: demo:1
    command: {command("db")}
    networks: [back]
    volumes: ["dbdata:/var/lib/db"]
    secrets:
      - source: db_password
        mode: 0400
  result:
    image: demo:1
    command: {command("result")}
    networks: [front, back]
    ports:
      - target: 80
        published: 8081
    configs:
      - source: result_conf
        target: /etc/result.conf
networks:
  front:
  back:
volumes:
  dbdata:
secrets:
  db_password:
    file: ./db_password.txt
configs:
  result_conf:
    file: ./result.conf
"""

FETCH = """
import json, sys, time, urllib.request
out = {}
for url in sys.argv[1:]:
    for attempt in range(20):      # the page is written every 0.5 s; the mesh may still be programming
        try:
            out[url] = urllib.request.urlopen(url, timeout=2).read().decode().strip()
            if 'not found' not in out[url] and 'failed' not in out[url] and '[]' not in out[url]:
                break
        except OSError as exc:
            out[url] = 'error: ' + str(exc)[:80]
        time.sleep(0.5)
print(json.dumps(out))
"""


def js(lab, host, *args):
    return json.loads(on(lab, host, *args, "--format", "json").stdout)


def running_tasks(lab) -> dict[str, dict]:
    """service short name -> its running task (one replica each), or an AssertionError saying which lack one."""
    rows = js(lab, "h1", "stack", "ps", "vote")
    up = {r["name"].split(".")[0].removeprefix("vote_"): r for r in rows
          if r["desired_state"] == "running" and r["state"] == "running"}
    if sorted(up) != sorted(SCRIPTS):
        raise AssertionError(f"running: {sorted(up)}; tasks {[(r['name'], r['state'], r['error']) for r in rows]}")
    return up


def log_lines(lab, service: str) -> list[str]:
    return on(lab, "h1", "service", "logs", "--raw", f"vote_{service}", timeout=60).stdout.splitlines()


def last_line(lab, service: str, prefix: str) -> str:
    lines = [line for line in log_lines(lab, service) if line.startswith(prefix)]
    return lines[-1] if lines else ""


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def leftovers(lab, prefixes: dict[str, str], network_ids: list[str]) -> dict[str, list[str]]:
    """What each host still has of the stack: task directories, runc containers, task and network namespaces."""
    out: dict[str, list[str]] = {}
    present = namespaces()
    for host in HOSTS:
        tasks = f"{lab[1][host]['state_dir']}/tasks"
        found = subprocess.run(["find", tasks, "-mindepth", "1", "-maxdepth", "1", "-not", "-name", ".*"],
                               capture_output=True, text=True, timeout=30).stdout.split()
        found += [f"runc {name}" for name in subprocess.run(
            ["runc", "--root", f"{tasks}/.runc", "list", "-q"], capture_output=True, text=True,
            timeout=30).stdout.split()]
        stack_ns = {f"{prefixes[host]}-ov-{net[:10]}" for net in network_ids}
        found += [ns for ns in present if ns.startswith(f"{prefixes[host]}-t-") or ns in stack_ns]
        if found:
            out[host] = found
    return out


def deploy(lab, compose) -> dict[str, dict]:
    """Deploy the stack and wait for a task of every service: service short name -> its task."""
    deployed = on(lab, "h1", "stack", "deploy", "-c", str(compose), "--resolve-image", "never", "vote", timeout=120)
    assert deployed.stdout.splitlines() == [
        "Creating network vote_back", "Creating network vote_front", "Creating secret vote_db_password",
        "Creating config vote_result_conf", "Creating service vote_db", "Creating service vote_redis",
        "Creating service vote_result", "Creating service vote_vote", "Creating service vote_worker"]
    eventually(lambda: running_tasks(lab), 90, "every service of the stack running")
    return running_tasks(lab)


def worker_reaches_db_and_cache(lab, task: dict[str, str]) -> None:
    """The worker reaches db by its name and redis by the alias `cache`, on back."""
    expected = f"db=[db {task['db']}] cache=[redis {task['redis']}]"
    eventually(lambda: last_line(lab, "worker", "db=") == expected, 30, f"the worker's log to say {expected!r}")


def remove(lab) -> None:
    removed = on(lab, "h1", "stack", "rm", "vote", timeout=120)
    assert removed.stdout.splitlines() == [
        "Removing service vote_db", "Removing service vote_redis", "Removing service vote_result",
        "Removing service vote_vote", "Removing service vote_worker", "Removing secret vote_db_password",
        "Removing config vote_result_conf", "Removing network vote_back", "Removing network vote_front"]
    assert [line.split() for line in on(lab, "h1", "stack", "ls").stdout.splitlines()] == [["NAME", "SERVICES"]]
    assert js(lab, "h1", "service", "ls") == []
    assert js(lab, "h1", "secret", "ls") == [] and js(lab, "h1", "config", "ls") == []
    assert not [n for n in js(lab, "h1", "network", "ls") if n["name"].startswith("vote_")]


def stack_network_ids(lab) -> list[str]:
    return [n["id"] for n in js(lab, "h1", "network", "ls") if n["name"] in ("vote_front", "vote_back")]


def test_a_voting_app_stack_on_three_hosts(lab, tmp_path):
    (tmp_path / "db_password.txt").write_bytes(PASSWORD)
    (tmp_path / "result.conf").write_text(CONF + "\n")
    compose = tmp_path / "vote.yml"
    compose.write_text(STACK)
    up = deploy(lab, compose)
    assert len({r["node"] for r in up.values()}) == 3, "the spread scheduler uses every host"
    task = {service: row["id"][:12] for service, row in up.items()}     # a task's hostname
    worker_reaches_db_and_cache(lab, task)

    # vote's and result's pages, through the routing mesh on every host's address.
    urls = {f"http://{lab[1][host]['addr'].split(':')[0]}:{port}/i.html": page
            for host in HOSTS for port, page in (
                (8080, f"vote {task['vote']} redis=[redis {task['redis']}]"),
                (8081, f"result {task['result']} conf=[{CONF}] db=[db {task['db']}]"))}
    fetched = subprocess.run(["ip", "netns", "exec", f"swl-{lab[0]}-h1", PY, "-c", FETCH, *urls],
                             capture_output=True, text=True, timeout=120)
    seen = json.loads(fetched.stdout or fetched.stderr)
    assert seen == urls

    # The secret: db and worker read its value; vote, redis and result have no such file.
    digest = hashlib.sha256(PASSWORD).hexdigest()
    secrets = {service: last_line(lab, service, "secret ") for service in SCRIPTS}
    assert secrets == {"db": f"secret {digest}", "worker": f"secret {digest}", "vote": "secret absent",
                       "redis": "secret absent", "result": "secret absent"}
    assert "config read-only" in log_lines(lab, "result")
    db_spec = js(lab, "h1", "service", "inspect", "vote_db")[0]["spec"]
    assert [(m["type"], m["source"], m["target"]) for m in db_spec["container"]["mounts"]] == \
        [("volume", "vote_dbdata", "/var/lib/db")]

    nodes = {n["hostname"]: n["id"] for n in js(lab, "h1", "node", "ls")}
    prefixes = {host: prefix_for(nodes[host]) for host in HOSTS}
    networks = stack_network_ids(lab)
    assert leftovers(lab, prefixes, networks), "the probe sees the stack's tasks and namespaces"
    remove(lab)

    # Deployed again at once, while the old tasks are still stopping: the new networks get the
    # VXLAN ids just freed, and nothing is refused for it (no task rejected, none restarted).
    up = deploy(lab, compose)
    worker_reaches_db_and_cache(lab, {service: row["id"][:12] for service, row in up.items()})
    rows = js(lab, "h1", "stack", "ps", "vote")
    # The removed services' tasks may still be stopping (they keep the stack's label until they
    # are gone); the new stack's own tasks are one per service, none rejected or restarted.
    history = [(r["name"], r["state"], r["error"]) for r in rows if r["service_id"] in {u["service_id"] for u in up.values()}]
    assert len(history) == len(SCRIPTS) and all(state == "running" for _, state, _ in history), history
    assert not [r for r in rows if r["state"] in ("rejected", "failed")], rows
    networks += stack_network_ids(lab)
    db_host = up["db"]["node"]
    remove(lab)

    def nothing_left() -> bool:
        left = leftovers(lab, prefixes, networks)
        assert left == {}, f"left behind: {left}"
        return True
    eventually(nothing_left, 60, "no task directory, container or namespace of the stack on any host")
    # Docker's `stack rm` keeps volumes: the database's data is still on its host.
    assert [v["Name"] for v in js(lab, db_host, "volume", "ls")] == ["vote_dbdata"]

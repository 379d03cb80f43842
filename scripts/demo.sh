#!/usr/bin/env bash
# The demo: a five-node swarm (three managers, two workers) on loopback,
# each node a separate daemon with its own state directory and 127.0.0.x
# address; node ls, a kill -9 of the leader, the swarm carrying on, cleanup.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null

base=$(mktemp -d /tmp/swarm-demo.XXXXXX)
export PYTHONPATH="$PWD"
swarm() { local node=$1; shift; SWARM_STATE_DIR="$base/$node" .venv/bin/python -m swarm "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
    for pidfile in "$base"/*/swarm.pid; do
        [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    done
    rm -rf "$base"
}
trap cleanup EXIT

say "Creating the swarm on m1 (127.0.0.11:2377)"
swarm m1 init --advertise-addr 127.0.0.11:2377 --hostname m1
manager_token=$(swarm m1 join-token -q manager)
worker_token=$(swarm m1 join-token -q worker)

say "Joining two more managers and two workers"
swarm m2 join --token "$manager_token" --advertise-addr 127.0.0.12:2377 --hostname m2 127.0.0.11:2377
swarm m3 join --token "$manager_token" --advertise-addr 127.0.0.13:2377 --hostname m3 127.0.0.11:2377
swarm w1 join --token "$worker_token" --advertise-addr 127.0.0.21:2377 --hostname w1 127.0.0.12:2377
swarm w2 join --token "$worker_token" --advertise-addr 127.0.0.22:2377 --hostname w2 127.0.0.13:2377
sleep 1.5
say "swarm node ls (asked on m2)"
swarm m2 node ls

leader=$(swarm m1 info --format json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
for n in m1 m2 m3; do
    if [ "$(swarm $n info --format json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')" = "$leader" ]; then
        victim=$n
    fi
done
say "Killing the leader ($victim) with kill -9"
kill -9 "$(cat "$base/$victim/swarm.pid")"
survivor=m2; [ "$victim" = m2 ] && survivor=m3
start=$(date +%s%N)
until swarm $survivor node update --label-add demo=survived w1 >/dev/null 2>&1; do sleep 0.05; done
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "A write (node update --label-add) went through $survivor ${elapsed_ms} ms after the kill (including the CLI's own start-up)."
sleep 3.5
say "swarm node ls (asked on $survivor): $victim is down, another manager leads"
swarm $survivor node ls

say "Restarting $victim: it catches up"
swarm $victim daemon --detach
sleep 1
swarm $victim node inspect w1 --format pretty | grep -A2 -i labels || true
swarm $victim node ls

say "Done: stopping every daemon and removing $base"

#!/usr/bin/env bash
# The demo: a three-host swarm lab on this machine (each host a network
# namespace with its own daemon), a replicated web service published on
# port 8080, requests to every host's 8080 answered by different tasks, a
# kill -9 of one host's daemon and the service recovering, then a clean
# `lab down`. Everything it makes lives in namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== Setting up (Debian packages, Python venv)"
scripts/setup.sh >/dev/null

export PYTHONPATH="$PWD"
LAB=demo
swarm() { .venv/bin/python -m swarm "$@"; }
on() { local host=$1; shift; swarm lab exec --name $LAB "$host" -- swarm "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
work=$(mktemp -d /tmp/swarm-demo.XXXXXX)
cleanup() { say "Tearing the lab down"; swarm lab down --name $LAB || true; rm -rf "$work"; }
trap cleanup EXIT
swarm lab down --name $LAB >/dev/null 2>&1 || true

say "Creating a lab of 3 hosts (1 manager, 2 workers)"
swarm lab up --nodes 3 --name $LAB

say "Building the demo image from this machine's busybox and importing it on every host"
bash scripts/build-demo-image.sh "$work/demo.tar" >/dev/null
for h in h1 h2 h3; do on $h image import "$work/demo.tar" demo:1 >/dev/null; done
sleep 1.5

say "Creating an overlay network and a web service with 3 replicas, published on port 8080"
on h1 network create webnet >/dev/null
on h1 service create --name web --replicas 3 --network webnet --publish 8080:80 demo:1 \
    sh -c 'echo "hello from task $(hostname)" > /tmp/index.html; exec httpd -f -p 80 -h /tmp'
on h1 service ps web

fetch() {  # fetch HOST_IP times: ask that host's port 8080 from inside host h1
    ip netns exec swl-$LAB-h1 .venv/bin/python -c "
import urllib.request, sys
for _ in range($2):
    try: print('  $1:8080 ->', urllib.request.urlopen('http://$1:8080/', timeout=3).read().decode().strip())
    except Exception as e: print('  $1:8080 -> error:', e)"
}
say "Asking every host's port 8080 (the routing mesh spreads requests over all tasks)"
for ip in $(swarm lab ls --format json | .venv/bin/python -c "
import json,sys
for lab in json.load(sys.stdin):
    if lab['name']=='$LAB':
        print(' '.join(h['addr'].split(':')[0] for h in lab['hosts']))"); do fetch $ip 3; done

say "Killing the daemon of host h3 with kill -9"
kill -9 "$(cat /var/lib/swarm-lab/$LAB/h3/swarm.pid)"
start=$(date +%s)
until on h1 service ps web --format json | .venv/bin/python -c "
import json,sys
rows=[r for r in json.load(sys.stdin) if r['desired_state']=='running' and r['state']=='running' and r['node']!='h3']
sys.exit(0 if len(rows)==3 else 1)"; do sleep 0.3; done
echo "h3 is down and the service is back to 3 running tasks on h1 and h2 after $(( $(date +%s) - start )) s:"
on h1 node ls
on h1 service ps web

say "Asking h1 and h2 again"
for ip in $(swarm lab ls --format json | .venv/bin/python -c "
import json,sys
for lab in json.load(sys.stdin):
    if lab['name']=='$LAB':
        print(' '.join(h['addr'].split(':')[0] for h in lab['hosts'] if h['name']!='h3'))"); do fetch $ip 3; done

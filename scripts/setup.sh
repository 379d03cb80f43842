#!/usr/bin/env bash
# Install what the project needs on a fresh Debian machine (as root):
# system packages with apt-get, Python packages in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for cmd in ip:iproute2 runc:runc conmon:conmon crun:crun nft:nftables busybox:busybox-static make:make tini-static:tini \
           docker-registry:docker-registry skopeo:skopeo; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || need_apt+=("${cmd##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Debian's docker.io 20.10: the tests drive our Engine API with its docker client too (the
# benchmarks run its dockerd as the anchor, in a namespace of their own). Its daemon must not
# start on install (docker0, firewall rules in this namespace): policy-rc.d refuses service
# starts for the length of the install.
if [ ! -x /usr/bin/docker ]; then
    echo "== installing Debian's docker.io (its client; the daemon is not started)"
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
    fi
    apt-get install -y -qq docker.io >/dev/null || { apt-get update -qq && apt-get install -y -qq docker.io >/dev/null; }
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing Python packages into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import raft.engine_hooks as h; p = h.self_test(); assert not p, p"

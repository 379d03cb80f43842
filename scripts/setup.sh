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

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing Python packages into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import raft.engine_hooks as h; p = h.self_test(); assert not p, p"

#!/usr/bin/env bash
# Build the demo image's root filesystem as a tar from this machine's static
# busybox (Debian's busybox-static), without network access, and print the
# tar's path. Use it as:  swarm image import "$(scripts/build-demo-image.sh)" demo:1
#
# usage: build-demo-image.sh [OUTPUT.tar]     (default: a new file under $TMPDIR)
#
# The tar is reproducible (sorted names, fixed mtimes, owner root), so the
# same busybox gives the same layer digest on every node.
set -euo pipefail

busybox=${BUSYBOX:-/usr/bin/busybox}
if [ ! -x "$busybox" ]; then
    echo "build-demo-image.sh: $busybox not found; install the busybox-static package." >&2
    exit 1
fi
out=${1:-}
if [ -z "$out" ]; then
    out=$(mktemp "${TMPDIR:-/tmp}/swarm-demo-rootfs.XXXXXX.tar")
fi
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/swarm-demo-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,www,var/run}
install -m 0755 "$busybox" "$root/bin/busybox"

# Applets at their usual places (bin/sh, usr/bin/wget, sbin/ifconfig, ...);
# older busybox builds only know --list, then everything goes to /bin.
if applets=$("$busybox" --list-full 2>/dev/null) && [ -n "$applets" ]; then
    while IFS= read -r path; do
        [ -n "$path" ] || continue
        [ "$path" = "bin/busybox" ] && continue
        mkdir -p "$root/$(dirname "$path")"
        ln -sf /bin/busybox "$root/$path"
    done <<<"$applets"
else
    for name in $("$busybox" --list); do
        [ "$name" = busybox ] || ln -sf busybox "$root/bin/$name"
    done
fi

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
mkdir -m 1777 "$root/tmp"
chmod 0700 "$root/root"
cat >"$root/www/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>swarm demo</title></head>
<body><h1>Hello from a swarm task</h1></body></html>
EOF

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$root" -cf "$out" .
echo "$out"

#!/usr/bin/env bash
# Offline base image for the platform's own images (docker-compose BASE_IMAGE), without any
# registry: a debootstrap'ed Debian bookworm (Python 3.11) plus this machine's virtualenv
# site-packages (same Python minor version, so compiled wheels work), loaded by `docker import`.
#   bash scripts/build_stack_base.sh [TAG]      (default syntharena/stack-base:local)
#   BASE_IMAGE=syntharena/stack-base:local docker-compose build
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${1:-syntharena/stack-base:local}"
# SYNTHARENA_VENV: a virtualenv other than the checkout's own (e.g. a git worktree sharing one)
SITE="${SYNTHARENA_VENV:-$ROOT/.venv}/lib/python3.11/site-packages"
[ -d "$SITE" ] || { echo "no $SITE: run scripts/services.sh first" >&2; exit 1; }
# The image is kept while it holds the virtualenv's packages as they are now (each name and
# version); a dependency added or upgraded since rebuilds it (an image without it would fail
# at the API's start-up).
DEPS="$(cd "$SITE" && ls -d ./*.dist-info | sort | sha256sum | cut -c1-16)"
if [ "${FORCE:-0}" != 1 ] && [ "$(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' \
        "$TAG" 2>/dev/null | sed -n 's/^SYNTHARENA_STACK_DEPS=//p')" = "$DEPS" ]; then
    echo "[stack-base] $TAG exists (packages $DEPS)"; exit 0
fi
WORK="$(mktemp -d /tmp/syntharena-stack.XXXXXX)"; trap 'rm -rf "$WORK"' EXIT
debootstrap --variant=minbase --include=python3,ca-certificates,passwd bookworm "$WORK/rootfs" \
    "${SYNTHARENA_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/log" 2>&1 \
    || { tail -30 "$WORK/log" >&2; exit 1; }
mkdir -p "$WORK/rootfs/usr/local/lib/python3.11/dist-packages"
cp -a "$SITE/." "$WORK/rootfs/usr/local/lib/python3.11/dist-packages/"
# Debian's Python is 3.11.2: dependencies that pip skipped for the virtualenv's newer 3.11.x
# (markers on python_full_version, e.g. redis needs async-timeout below 3.11.3).
"$(dirname "$SITE")/../../bin/pip" install -q --no-deps --only-binary=:all: \
    --target "$WORK/rootfs/usr/local/lib/python3.11/dist-packages" "async-timeout>=4.0.3"
rm -f "$WORK/rootfs"/usr/local/lib/python3.11/dist-packages/__editable__* \
      "$WORK/rootfs"/usr/local/lib/python3.11/dist-packages/*syntharena*.pth
touch "$WORK/rootfs/etc/syntharena-deps-installed"
rm -rf "$WORK/rootfs"/var/lib/apt/lists/* "$WORK/rootfs"/usr/share/doc/*
tar -C "$WORK/rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' \
    -c "ENV SYNTHARENA_STACK_DEPS=$DEPS" - "$TAG" >/dev/null
echo "[stack-base] $TAG (packages $DEPS)"

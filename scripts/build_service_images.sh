#!/usr/bin/env bash
# Offline PostgreSQL 15 and Redis 7 images for docker-compose (POSTGRES_IMAGE / REDIS_IMAGE),
# without any registry: one debootstrap'ed Debian bookworm root filesystem with Debian's
# postgresql-15 and redis-server packages, loaded by `docker import`, plus a small entry point
# each (deploy/postgres, deploy/redis) that behaves like the official images' for what compose uses.
#   bash scripts/build_service_images.sh      -> syntharena/postgres:15-local, syntharena/redis:7-local
# Skipped when both images exist (FORCE=1 rebuilds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="syntharena/services-base:local"
PG="${POSTGRES_IMAGE:-syntharena/postgres:15-local}"
RD="${REDIS_IMAGE:-syntharena/redis:7-local}"
have() { docker image inspect "$1" >/dev/null 2>&1; }
if have "$PG" && have "$RD" && [ "${FORCE:-0}" != 1 ]; then
    echo "[services] $PG and $RD exist"; exit 0
fi
if ! have "$BASE" || [ "${FORCE:-0}" = 1 ]; then
    WORK="$(mktemp -d /tmp/syntharena-services.XXXXXX)"; trap 'rm -rf "$WORK"' EXIT
    debootstrap --variant=minbase --include=postgresql-15,redis-server,redis-tools bookworm \
        "$WORK/rootfs" "${SYNTHARENA_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
        >"$WORK/log" 2>&1 || { tail -30 "$WORK/log" >&2; exit 1; }
    # The package's post-install made a default cluster; the entry point makes its own.
    rm -rf "$WORK/rootfs"/var/lib/postgresql/15 "$WORK/rootfs"/etc/postgresql/15/main \
           "$WORK/rootfs"/var/lib/apt/lists/* "$WORK/rootfs"/usr/share/doc/* \
           "$WORK/rootfs"/usr/share/man/* "$WORK/rootfs"/usr/share/locale/*
    tar -C "$WORK/rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE" >/dev/null
fi
docker build -q --build-arg "BASE=$BASE" -t "$PG" "$ROOT/deploy/postgres" >/dev/null
docker build -q --build-arg "BASE=$BASE" -t "$RD" "$ROOT/deploy/redis" >/dev/null
echo "[services] $PG $RD"

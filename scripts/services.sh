#!/usr/bin/env bash
# Installs (if missing) and starts the services SynthArena needs on one Debian machine:
# Docker engine, Redis, PostgreSQL 15, plus the project's virtualenv.
# Idempotent: safe to source/run repeatedly. Run as root (CI and dev machines are root).
#   bash scripts/services.sh [--with-browser]   (--with-browser: also Chromium, for the
#                                                browser tests; scripts/test.sh passes it)
# The services are started in their own sessions (setsid): Ctrl-C in the terminal that ran
# this (e.g. stopping the demo) reaches the demo's processes, not the Docker engine or the
# databases other work on this machine shares.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SYNTHARENA_STATE_DIR:-/var/lib/syntharena-dev}"
PGPORT="${SYNTHARENA_PGPORT:-5432}"
REDIS_PORT="${SYNTHARENA_REDIS_PORT:-6379}"
mkdir -p "$STATE"

log() { printf '[services] %s\n' "$*" >&2; }

apt_ready=0
need_pkg() {
    # need_pkg <binary> <debian-package>...
    local bin="$1"; shift
    if ! command -v "$bin" >/dev/null 2>&1; then
        if [ "$apt_ready" = 0 ]; then
            log "apt-get update"; DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt_ready=1
        fi
        log "installing $*"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    fi
}

install_system() {
    need_pkg dockerd docker.io
    need_pkg redis-server redis-server
    need_pkg debootstrap debootstrap
    need_pkg docker-compose docker-compose
    need_pkg gcc gcc libc6-dev  # static binaries of the example algorithms (gcc -static)
    if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
        need_pkg /usr/lib/postgresql/15/bin/initdb postgresql-15
    fi
    need_pkg pkill procps
    need_pkg curl curl
    need_pkg setsid util-linux
    if [ "$WITH_BROWSER" = 1 ]; then need_pkg chromium chromium; fi
}

start_docker() {
    if docker info >/dev/null 2>&1; then return 0; fi
    log "starting dockerd"
    setsid dockerd >"$STATE/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    log "dockerd did not start; see $STATE/dockerd.log"; tail -20 "$STATE/dockerd.log" >&2; return 1
}

start_redis() {
    if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then return 0; fi
    log "starting redis on $REDIS_PORT"
    redis-server --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
        --dir "$STATE" --logfile "$STATE/redis.log"
    for _ in $(seq 1 30); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.5; done
    log "redis did not start"; return 1
}

start_postgres() {
    local bin=/usr/lib/postgresql/15/bin data="$STATE/pgdata"
    if [ ! -f "$data/PG_VERSION" ]; then
        log "initdb $data"
        id postgres >/dev/null 2>&1 || useradd -r -m postgres
        mkdir -p "$data"; chown -R postgres "$data"
        su postgres -c "$bin/initdb -D '$data' -U postgres --auth=trust -E UTF8" >/dev/null
    fi
    if su postgres -c "$bin/pg_ctl -D '$data' status" >/dev/null 2>&1; then return 0; fi
    log "starting postgres on $PGPORT"
    mkdir -p /var/run/postgresql && chown postgres /var/run/postgresql
    setsid -w su postgres -c "$bin/pg_ctl -D '$data' -l '$data/server.log' -o '-p $PGPORT -k /var/run/postgresql -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off' -w start" >/dev/null </dev/null
}

setup_venv() {
    cd "$ROOT"
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        python3 -m venv .venv
    fi
    # Reinstall whenever pyproject.toml changed since the last install.
    local want; want=$(sha256sum pyproject.toml | cut -c1-64)
    if [ "$(cat .venv/.deps-sha 2>/dev/null)" != "$want" ]; then
        .venv/bin/pip install -q --upgrade pip
        # torch first: pins the CPU wheel that lies on disk instead of a multi-GB CUDA build.
        .venv/bin/pip install -q torch==2.13.0
        .venv/bin/pip install -q -e ".[dev,segmentation]" "pydantic==2.12.5"
        echo "$want" > .venv/.deps-sha
    fi
    # The image-metric loops compiled ahead of time (seconds, once per version of their code;
    # without a C compiler numba's JIT and torch's passes run instead: the same values).
    .venv/bin/python -m evaluator.image_kernels_aot --if-missing --best-effort
}

WITH_BROWSER="${SYNTHARENA_WITH_BROWSER:-0}"

main() {
    for arg in "$@"; do
        case "$arg" in
            --with-browser) WITH_BROWSER=1 ;;
            *) log "unknown option $arg (known: --with-browser)"; return 2 ;;
        esac
    done
    install_system
    start_docker
    start_redis
    start_postgres
    setup_venv
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi

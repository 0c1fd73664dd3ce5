#!/usr/bin/env bash
# The main job, one command: installs what is missing, starts Docker/Redis/PostgreSQL, creates
# a demo challenge from phantom data (MRI: brain and pelvis; CBCT once the phantom importer
# offers it), builds the example algorithms (the fitted baseline and three trivial outputs),
# submits them, shows progress, prints the leaderboards and serves the web app until Ctrl-C.
#   bash scripts/demo.sh            (PORT=8000 DEMO_CASES=6 DEMO_SIZE=small|realistic to change)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-8000}"
STATE="${SYNTHARENA_STATE_DIR:-/var/lib/syntharena-dev}"
DEMO="$STATE/demo"
export SYNTHARENA_DATA_DIR="$DEMO/data"
export SYNTHARENA_DATABASE_URL="${SYNTHARENA_DEMO_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/syntharena_demo}"
export SYNTHARENA_REDIS_URL="${SYNTHARENA_DEMO_REDIS_URL:-redis://127.0.0.1:6379/3}"
export SYNTHARENA_ADMIN_EMAILS='["organizer@demo.local"]'
export SYNTHARENA_REAPER_INTERVAL_S=30
# The demo serves on every interface: a fresh random secret (not the refused placeholder).
export SYNTHARENA_SECRET_KEY="${SYNTHARENA_SECRET_KEY:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')}"
log() { printf '[demo] %s\n' "$*" >&2; }

bash scripts/services.sh                      # Docker engine, Redis, PostgreSQL, .venv
mkdir -p "$DEMO" "$SYNTHARENA_DATA_DIR"
PY="$ROOT/.venv/bin/python"

if [ "${DEMO_RESET:-1}" = 1 ]; then
    log "fresh demo database and data"
    "$PY" - <<'PYEOF'
import os, psycopg
from sqlalchemy.engine import make_url
u = make_url(os.environ["SYNTHARENA_DATABASE_URL"])
with psycopg.connect(u.set(drivername="postgresql", database="postgres").render_as_string(False),
                     autocommit=True) as c:
    c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=%s", (u.database,))
    c.execute(f'DROP DATABASE IF EXISTS "{u.database}"'); c.execute(f'CREATE DATABASE "{u.database}"')
PYEOF
    rm -rf "$SYNTHARENA_DATA_DIR"; mkdir -p "$SYNTHARENA_DATA_DIR"
    redis-cli -u "$SYNTHARENA_REDIS_URL" flushdb >/dev/null
fi
log "migrating"
"$PY" -m alembic upgrade head

log "building example algorithms (cached)"
bash examples/algorithms/build.sh python trivial-zeros trivial-copy trivial-soft-tissue

PIDS=()
cleanup() {
    log "stopping"
    for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
# Ctrl-C stops what the demo started (the worker and the web app, each in its own session)
# and nothing else: services.sh started the Docker engine and the databases in sessions of
# their own, out of reach of the terminal's Ctrl-C.
trap cleanup EXIT
trap 'trap - EXIT; cleanup; exit 130' INT TERM

log "starting the worker (queues images,gpu,eval; reaper via -B); log $DEMO/worker.log"
# The worker runs as root here because it drives the Docker engine through its root-owned
# socket; the algorithms themselves run in sandboxed containers as non-root users. Celery's
# multi-line "running the worker with superuser privileges" warning says no more than that,
# so it is filtered (by its text) instead of cluttering worker.log.
if [ "$(id -u)" = 0 ]; then
    log "the worker runs as root (it needs the Docker socket); algorithms run as non-root in containers"
fi
PYTHONWARNINGS="ignore:You're running the worker with superuser privileges" \
    setsid "$PY" -m celery -A worker.celery_app worker -B -Q images,gpu,eval -c 2 -n demo@%h \
    --loglevel INFO -s "$DEMO/celerybeat-schedule" >"$DEMO/worker.log" 2>&1 &
PIDS+=($!)
log "starting the web app on port $PORT; log $DEMO/api.log"
setsid "$PY" -m uvicorn backend.main:app --host 0.0.0.0 --port "$PORT" >"$DEMO/api.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do curl -fs "http://127.0.0.1:$PORT/api/health" >/dev/null && break; sleep 0.5; done

"$PY" scripts/demo.py --url "http://127.0.0.1:$PORT" --cases "${DEMO_CASES:-6}" --size "${DEMO_SIZE:-small}"

IP="$(hostname -I 2>/dev/null | awk '{print $1}')"
echo
echo "SynthArena is running: http://127.0.0.1:$PORT/  (also http://${IP:-localhost}:$PORT/)"
echo "  challenge: http://127.0.0.1:$PORT/challenges/demo   API docs: http://127.0.0.1:$PORT/docs"
echo "  log in as organizer / demo-password-1 (or alice, bob). Ctrl-C stops it."
wait

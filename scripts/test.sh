#!/usr/bin/env bash
# The README's test command: set up everything the tests need on a fresh Debian machine
# (Docker engine, Redis, PostgreSQL, virtualenv, example images), then lint, type-check and test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh --with-browser   # Chromium for the browser tests
# Example algorithm images the worker tests run (cached: built only when missing).
bash examples/algorithms/build.sh all
export SYNTHARENA_TEST_DATABASE_URL="${SYNTHARENA_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/syntharena_test}"
export SYNTHARENA_REDIS_URL="${SYNTHARENA_REDIS_URL:-redis://127.0.0.1:6379/0}"
export SYNTHARENA_DEV_MODE=1  # a test machine: the placeholder secret key is allowed
# The test database is disposable: start from an empty one, so a database left at a migration
# revision of other code (an older checkout on this machine) cannot break the schema build.
.venv/bin/python - <<'PY'
import os
from sqlalchemy import create_engine, make_url, text
url = make_url(os.environ["SYNTHARENA_TEST_DATABASE_URL"])
if url.get_backend_name() == "postgresql":
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()
PY
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest "$@"

#!/usr/bin/env bash
# CI's compose step: builds the stack's images offline (cached: each script skips an image that
# exists) and runs the compose end-to-end test (tests/compose), which brings the stack up.
#   bash scripts/compose_test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${SYNTHARENA_VENV:-$ROOT/.venv}"
SYNTHARENA_VENV="$VENV" bash scripts/build_stack_base.sh
bash scripts/build_service_images.sh
bash examples/algorithms/build.sh slow
SYNTHARENA_COMPOSE_TESTS=1 "$VENV/bin/pytest" -m compose tests/compose "$@"

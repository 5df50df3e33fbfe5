#!/usr/bin/env bash
# The test suite: lint, types, then unit and integration tests (real processes on loopback).
# KNPY_SLOW=1 runs the long forms of the soak tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
# KNPY_TEST_WORKERS=2 spreads the files over two pytest-xdist workers (the end-to-end tests
# mostly wait on real processes, so it nearly halves the wall time), but two workers' free
# ports can collide (shared/ports.py binds and releases); serial is the default until the
# workers get disjoint port ranges.
if [ "${KNPY_TEST_WORKERS:-0}" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q -n "$KNPY_TEST_WORKERS" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest -q "$@"

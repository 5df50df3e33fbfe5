#!/usr/bin/env bash
# The test suite: lint, types, then unit and integration tests (real processes on loopback).
# KNPY_SLOW=1 runs the long forms of the soak tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
# Two workers: the end-to-end tests spend most of their time waiting on real processes, so two
# nearly halve the wall time on 2 cores. A file's tests stay together and in order in one
# worker (module fixtures expect it). KNPY_TEST_WORKERS=0 runs them in this process.
.venv/bin/python -m pytest -q -n "${KNPY_TEST_WORKERS:-2}" --dist loadfile "$@"

#!/usr/bin/env bash
# The test suite: lint, types, then unit and integration tests (real processes on loopback).
# KNPY_SLOW=1 runs the long forms of the soak tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
# The files are spread over KNPY_TEST_WORKERS pytest-xdist workers (2 by default: the end-to-end
# tests mostly wait on real processes, so two nearly halve the wall time); --dist loadfile keeps
# a file's tests in one worker, in order, as module fixtures expect, and the image builds
# together, first (tests/conftest.py; --no-loadscope-reorder keeps that order). Each worker
# takes its free ports from a range of its own. KNPY_TEST_WORKERS=0 runs them serially.
workers="${KNPY_TEST_WORKERS:-2}"
if [ "$workers" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
fi
exec .venv/bin/python -m pytest -q "$@"

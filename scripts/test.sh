#!/usr/bin/env bash
# The test suite: lint, types, then unit and integration tests (real processes on loopback).
# KNPY_SLOW=1 runs the long forms of the soak tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# Creates .venv with knpy and its development tools, once; later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.knpy-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  touch "$stamp"
fi
# kubectl, the outside judge of knpy serve's Kubernetes API (tests/e2e run it): Debian's
# kubernetes-client, installed only when no kubectl is on the PATH.
if ! command -v kubectl >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client
  else
    echo "setup: kubectl not found; install it (Debian: apt-get install kubernetes-client)" >&2
  fi
fi

#!/usr/bin/env bash
# Creates .venv with knpy and its development tools, once; later runs reuse it and say nothing.
# Quiet by design: one progress line per step, pip's and apt's output in .venv/setup.log, shown
# (its end) only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
log=.venv/setup.log

# Runs "$@" with its output appended to the log; on failure shows the log's end and stops.
quietly() {
  if ! "$@" >>"$log" 2>&1; then
    echo "setup: failed: $*; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

stamp=.venv/.knpy-installed
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing knpy and its development tools into .venv (a minute or two; log: $log)"
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
  fi
  : >"$log"
  quietly .venv/bin/python -m pip install --upgrade pip
  quietly .venv/bin/python -m pip install -e '.[dev]'
  touch "$stamp"
fi
# A C compiler and Python's headers, for the native build (setup.py, mypyc) that tests/native and
# the images' wheel compile: Debian's gcc and python3-dev, installed only when missing.
inc=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if ! command -v cc >/dev/null 2>&1 || [ ! -f "$inc/Python.h" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing gcc and python3-dev for the native build (log: $log)"
    quietly apt-get update -qq
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc libc6-dev python3-dev
  else
    echo "setup: no C compiler or Python headers; the native build (tests/native) needs them" >&2
  fi
fi
# kubectl, the outside judge of knpy serve's Kubernetes API (tests/e2e run it): Debian's
# kubernetes-client, installed only when no kubectl is on the PATH.
if ! command -v kubectl >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing kubectl (Debian's kubernetes-client; log: $log)"
    quietly apt-get update -qq
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client
  else
    echo "setup: kubectl not found; install it (Debian: apt-get install kubernetes-client)" >&2
  fi
fi

#!/usr/bin/env bash
# The main job: the sample app behind a real queue-proxy, a short load, and its metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/knpy demo "$@"

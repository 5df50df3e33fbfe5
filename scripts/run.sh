#!/usr/bin/env bash
# The main job: the local platform (`knpy serve`) running the hello example, in the foreground
# until Ctrl-C (which drains and stops every process it started). Sets up .venv on first use.
# KNPY_PORT / KNPY_API_PORT change the ingress and Kubernetes API ports (8080, 9080); extra
# arguments go to `knpy serve` (e.g. `-f examples/traffic-split/service.yaml`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
port="${KNPY_PORT:-8080}"
api_port="${KNPY_API_PORT:-9080}"
cat <<MSG
knpy serve: starting the hello example (examples/hello/service.yaml); state in .knpy/
Try, in another terminal:
  curl -H 'Host: hello.default.localhost' http://127.0.0.1:${port}/
  curl http://hello.default.localhost:${port}/
  .venv/bin/knpy get revisions
  kubectl --kubeconfig .knpy/kubeconfig get ksvc,revisions,pods
Ctrl-C stops it (drains in-flight requests first).
MSG
exec .venv/bin/knpy serve --port "$port" --api-port "$api_port" --state-dir .knpy \
  -f examples/hello/service.yaml "$@"

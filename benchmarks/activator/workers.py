"""Does ``python -m activator --workers 2`` serve more than one worker? Side by side, one run.

Placement (2 cores): wrk on core 0 (the load generator on one core); the app, two queue-proxy
pods and the activator unpinned. For each worker count the same fresh stack is started, wrk
saturates the activator (``-c64``), and the ratio of the two saturated rates is printed.
Every process the activator chain needs shares the two cores, so the ceiling is the machine,
not the activator alone; the ratio says how much of it a second worker takes.

Run: chrt -r 10 .venv/bin/python benchmarks/activator/workers.py [--duration 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: make the repo's packages importable

from benchmarks import harness  # noqa: E402

bench = harness.load_script(Path(__file__).parent / "run.py", "actbench")


def measure(h: Any, workers: int) -> float:
    mark = h.children.mark()
    try:
        test_core, h.test_core = h.test_core, None
        app_port, _ = harness.start_app(h, None)
        pods = [harness.start_queueproxy(h, app_port)[0] for _ in range(2)]
        h.test_core = test_core
        cluster = {
            "revisions": [
                {
                    "namespace": bench.NAMESPACE,
                    "name": bench.WARM,
                    "containerConcurrency": 0,
                    "endpoints": [
                        {"pod": f"pod-{i}", "host": "127.0.0.1", "port": port}
                        for i, port in enumerate(pods)
                    ],
                }
            ]
        }
        port, _, _ = bench.start_activator(h, cluster, workers=workers)
        result = bench.wrk(h, f"http://127.0.0.1:{port}/", bench.ROUTE)
        return float(result["rps"])
    finally:
        h.children.stop_since(mark)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2, help="1-worker/2-worker pairs")
    args = p.parse_args()
    k6 = harness.find_k6() or "k6"
    _, load_core, test_core = harness.pin_cores()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, harness.raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="knpy-bench-actw-"))
    children = harness.Children(workdir)
    h = harness.Harness(workdir, children, args.duration, 64, load_core, test_core, k6)
    rounds = []
    try:
        for _ in range(args.rounds):
            one, two = measure(h, 1), measure(h, 2)
            rounds.append({"1 worker rps": one, "2 workers rps": two, "ratio": round(two / one, 2)})
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        children.kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

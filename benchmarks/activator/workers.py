"""Does ``python -m activator --workers 2`` serve more than one worker? Side by side, one run.

Placement (issue 15: "the load generator runs on one of the two cores"): wrk on core 0 and
every other process (the app, two queue-proxy pods, the activator and its workers) left to
the kernel, the same for one worker and for two, so that the only difference between the two
measurements is the worker count. (An earlier version pinned the single worker to core 1 and
left the two workers free: two placements, not one.) Each measurement starts a fresh stack,
wrk saturates the activator (``-c64``), and the rounds alternate the order (1, 2 then 2, 1)
so that a drift of the shared machine's load does not favour one count.

Besides req/s it reads, over the wrk run, the CPU seconds of the activator (all its
processes), of the pods (app + queue-proxies) and of each core (/proc/stat), and prints the
CPU per request. That says where the ceiling is: with ``a`` µs of activator CPU and ``b`` µs
of everything else per request, one worker tops out at 1/a requests per µs and two cores at
2/(a + b), so two workers can gain at most 2a / (a + b) over one, whatever the activator does.

Run: chrt -r 10 .venv/bin/python benchmarks/activator/workers.py [--duration 5] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: make the repo's packages importable

from benchmarks import harness  # noqa: E402

bench = harness.load_script(Path(__file__).parent / "run.py", "actbench")


def measure(h: Any, workers: int) -> dict[str, Any]:
    """One fresh stack, saturated by wrk: req/s and CPU µs per request by process group."""
    mark = h.children.mark()
    test_core, h.test_core = h.test_core, None  # nothing but wrk is pinned
    try:
        app_port, app_pid = harness.start_app(h, None)
        pods = [harness.start_queueproxy(h, app_port) for _ in range(2)]
        cluster = {
            "revisions": [
                {
                    "namespace": bench.NAMESPACE,
                    "name": bench.WARM,
                    "containerConcurrency": 0,
                    "endpoints": [
                        {"pod": f"pod-{i}", "host": "127.0.0.1", "port": port}
                        for i, (port, _) in enumerate(pods)
                    ],
                }
            ]
        }
        port, _, act_pid = bench.start_activator(h, cluster, workers=workers)
        pod_pids = [app_pid, *(pid for _, pid in pods)]
        act0 = harness.cpu_seconds(act_pid)
        pods0 = sum(harness.cpu_seconds(pid) for pid in pod_pids)
        cores0 = harness.core_times()
        result = bench.wrk(h, f"http://127.0.0.1:{port}/", bench.ROUTE)
        busy = harness.core_busy(cores0, harness.core_times())
        act_s = harness.cpu_seconds(act_pid) - act0
        pods_s = sum(harness.cpu_seconds(pid) for pid in pod_pids) - pods0
        requests = result["requests"] or result["rps"] * h.duration_s
        if result["socket_errors"] or result["non_2xx"]:
            log = (h.workdir / "activator.log").read_text(errors="replace").splitlines()
            print("\n".join(["activator log, last lines:", *log[-30:]]), file=sys.stderr)
        return {
            "workers": workers,
            "rps": round(float(result["rps"])),
            "activator_us": round(1e6 * act_s / requests, 1),
            "pods_us": round(1e6 * pods_s / requests, 1),
            "core_busy_pct": busy,
            "errors": result["socket_errors"] or result["non_2xx"] or None,
        }
    finally:
        h.test_core = test_core
        h.children.stop_since(mark)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=4, help="1-worker/2-worker pairs")
    args = p.parse_args()
    k6 = harness.find_k6() or "k6"
    _, load_core, test_core = harness.pin_cores()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, harness.raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="knpy-bench-actw-"))
    children = harness.Children(workdir)
    h = harness.Harness(workdir, children, args.duration, 64, load_core, test_core, k6)
    ratios = []
    try:
        for i in range(args.rounds):
            load = os.getloadavg()[0]
            order = (1, 2) if i % 2 == 0 else (2, 1)
            got = {n: measure(h, n) for n in order}
            # A run with socket errors or non-2xx answers measured a failure, not a rate.
            valid = not (got[1]["errors"] or got[2]["errors"])
            ratio = got[2]["rps"] / got[1]["rps"]
            if valid:
                ratios.append(ratio)
            print(
                json.dumps(
                    {
                        "round": i + 1,
                        "load_avg_1m": round(load, 2),
                        "order": order,
                        "1 worker": got[1],
                        "2 workers": got[2],
                        "ratio": round(ratio, 2) if valid else "invalid: errors",
                    }
                ),
                flush=True,
            )
        if ratios:
            print(
                json.dumps(
                    {
                        "ratios": [round(r, 2) for r in ratios],
                        "median": round(statistics.median(ratios), 2),
                    }
                )
            )
    finally:
        children.kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The activator's CPU cost per request under a fixed load, and where it goes.

Why: the added-latency figure of run.py is a few hundred microseconds measured on a shared
2-core VM, and moves by +-0.2 ms between runs of the same code; CPU time per request of the
activator process is the steadier measure of its request path, and the one a change to that
path moves. Method:

    core 0: the app, the queue-proxy and k6 (constant arrival rate, ``--rate``/s)
    core 1: the activator alone (containerConcurrency 0, routed by Knative-Serving-* headers)

-> activator CPU (user + system, psutil) / requests k6 completed, in microseconds, per round;
the median of ``--rounds``. With ``--cprofile PATH`` the activator runs under cProfile
(slower: per-call overhead; read it for *where*, not *how much*) and the top functions by
own time are printed; the stats file is written to PATH.

Run: .venv/bin/python benchmarks/activator/profile.py [--rate 3000] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: make the repo's packages importable

from benchmarks import harness  # noqa: E402

bench = harness.load_script(Path(__file__).parent / "run.py", "actbench")
qp = bench.qp


def print_leaves(raw: Path, top: int = 25) -> None:
    """Samples by innermost Python frame (own time), from py-spy's collapsed stacks."""
    leaves: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        leaves[leaf] = leaves.get(leaf, 0) + int(count)
        total += int(count)
    for leaf, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n / total:6.1%}  {leaf}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=3000, help="requests per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cprofile", type=Path, help="run the activator under cProfile")
    parser.add_argument("--py-spy", type=Path, help="sample the last round with py-spy (raw)")
    args = parser.parse_args(argv)
    k6 = shutil.which("k6", path=str(qp.VENV_BIN)) or shutil.which("k6")
    if k6 is None:
        print("k6 is required", file=sys.stderr)
        return 2
    cores = sorted(os.sched_getaffinity(0))
    load_core, act_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    signal.signal(signal.SIGTERM, qp._raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="knpy-prof-act-"))
    (workdir / "fixed-rate.js").write_text(bench.K6_SCRIPT)
    children = qp.Children(workdir)
    # The queue-proxy and app beside the load generator; the activator on a core of its own.
    h = qp.Harness(workdir, children, args.seconds, 64, load_core, load_core, k6)
    try:
        app_port, _ = qp.start_app(h, load_core)
        qp_port, _ = qp.start_queueproxy(h, app_port)
        cluster = {
            "revisions": [
                {
                    "namespace": bench.NAMESPACE,
                    "name": bench.WARM,
                    "containerConcurrency": 0,
                    "endpoints": [{"pod": "bench-pod", "host": "127.0.0.1", "port": qp_port}],
                }
            ]
        }
        h.test_core = act_core
        prefix = ["-m", "cProfile", "-o", str(args.cprofile)] if args.cprofile else []
        port, _, pid = bench.start_activator(h, cluster, python_args=prefix)
        proc = psutil.Process(pid)
        url = f"http://127.0.0.1:{port}/"
        h.k6_rate(url, args.rate)  # warm-up: connections, caches, the revision's state
        per_request: list[float] = []
        for i in range(args.rounds):
            spy = None
            if args.py_spy and i == args.rounds - 1:
                spy_argv = [str(qp.VENV_BIN / "py-spy"), "record", "--nonblocking", "-r", "500"]
                spy_argv += ["-f", "raw", "-o", str(args.py_spy), "-p", str(pid)]
                spy = subprocess.Popen(
                    [*spy_argv, "-d", f"{args.seconds:g}"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            before = proc.cpu_times()
            result = h.k6_rate(url, args.rate)
            after = proc.cpu_times()
            if spy is not None:
                spy.wait(30)
                print_leaves(args.py_spy)
            cpu = (after.user - before.user) + (after.system - before.system)
            us = cpu / max(result["requests"], 1) * 1e6
            per_request.append(us)
            print(
                f"{result['requests']} requests at {result['achieved_rps']}/s, "
                f"p50 {result['p50_ms']:.3f} ms: activator {us:.1f} us CPU/request "
                f"(user {(after.user - before.user) / max(result['requests'], 1) * 1e6:.1f})",
                flush=True,
            )
        print(f"median: {statistics.median(per_request):.1f} us CPU/request")
        if args.cprofile:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            stats = pstats.Stats(str(args.cprofile))
            stats.sort_stats("tottime").print_stats(30)
    finally:
        children.kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

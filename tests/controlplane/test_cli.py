"""``knpy serve``, ``apply``, ``get`` and ``delete`` as real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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
    out = s.knpy("apply", "-f", str(tmp_path / "hello.yaml"), "--no-wait").stdout
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


# -- what a kn user expects -----------------------------------------------------------------------
def service_yaml(name: str, command: str) -> str:
    return f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}}}
spec:
  template:
    spec:
      containers:
        - image: knpy/{name}
          command: {command}
"""


def app_printing(line: str, *, delay_s: float = 0.0) -> str:
    """The sample app's command, printing ``line`` (after ``delay_s``) before it starts."""
    script = (
        f"import runpy, time; time.sleep({delay_s}); print({line!r}, flush=True);"
        f" runpy.run_path({str(SAMPLE_APP)!r}, run_name='__main__')"
    )
    return json.dumps(["python", "-c", script])


def test_apply_waits_for_ready_or_the_failure_as_kn(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    """kn's wait (knative/client pkg/wait): progress, then the URL; a failing revision's
    message and exit 1 a few seconds after it fails; --no-wait and --wait-timeout."""
    s = serve()
    (tmp_path / "hello.yaml").write_text(HELLO)
    done = s.knpy("apply", "-f", str(tmp_path / "hello.yaml"))
    assert done.stdout.splitlines() == [
        "service.serving.knative.dev/hello created",
        "Service 'hello' with latest revision 'hello-00001' is ready at URL:",
        "http://hello.default.localhost",
    ]
    progress = done.stderr.splitlines()
    assert progress[0] == "Waiting for service 'hello' in namespace 'default' to be ready:"
    assert [line.split("s ", 1)[1] for line in progress[-3:]] == [
        "Configuration OK", "Route OK", "Ready",
    ]  # fmt: skip
    # Ready means routed: the first request answers, with no retry.
    assert s.request("hello.default.localhost")[0] == 200

    (tmp_path / "broken.yaml").write_text(service_yaml("broken", '["/nonexistent/app"]'))
    began = time.monotonic()
    failed = s.knpy("apply", "-f", str(tmp_path / "broken.yaml"), check=False)
    failed_s = time.monotonic() - began
    assert failed.returncode == 1, failed
    assert failed.stdout.strip() == "service.serving.knative.dev/broken created"
    error = failed.stderr.splitlines()[-1]
    assert error.startswith("Error: service 'broken' in namespace 'default' is not ready:")
    assert 'RevisionFailed: Revision "broken-00001" failed' in error
    assert '"/nonexistent/app": [Errno 2] No such file or directory' in error
    assert failed_s < 15.0, failed_s  # ~1 s to fail, kn's 2 s window, process start-up

    (tmp_path / "again.yaml").write_text(service_yaml("again", '["/nonexistent/app"]'))
    quick = s.knpy("apply", "-f", str(tmp_path / "again.yaml"), "--no-wait")
    assert (quick.stdout, quick.stderr) == ("service.serving.knative.dev/again created\n", "")

    (tmp_path / "slow.yaml").write_text(service_yaml("slow", app_printing("up", delay_s=20)))
    began = time.monotonic()
    late = s.knpy("apply", "-f", str(tmp_path / "slow.yaml"), "--wait-timeout", "1", check=False)
    assert late.returncode == 1 and time.monotonic() - began < 10.0
    assert late.stderr.splitlines()[-1] == (
        "Error: service 'slow' in namespace 'default' is not ready after 1 s (--wait-timeout)"
    )


class Lines:
    """A command's output lines as they come (``knpy get -w``, ``knpy logs -f``)."""

    def __init__(self, s: Serve, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *args,
             "--kubeconfig", str(s.state_dir / "kubeconfig")],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._queues: dict[str, queue.Queue[str]] = {
            "stdout": queue.Queue(),
            "stderr": queue.Queue(),
        }
        self._readers = [
            threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, pipe: IO[str] | None) -> None:
        assert pipe is not None
        for line in pipe:
            self._queues[name].put(line.rstrip("\n"))

    def until(self, check: Callable[[str], bool], what: str, stream: str = "stdout") -> str:
        deadline = time.monotonic() + STEP_S
        while True:
            try:
                line = self._queues[stream].get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}; saw {self.seen}") from None
            self.seen[stream].append(line)
            if check(line):
                return line

    def stop(self) -> tuple[int, list[str]]:
        """Ctrl-C, as a person ends it; the exit code and every stderr line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=STEP_S)
        for reader in self._readers:  # each ends at its pipe's end, which follows the exit
            reader.join(timeout=STEP_S)
        while not self._queues["stderr"].empty():
            self.seen["stderr"].append(self._queues["stderr"].get_nowait())
        assert not any("Traceback" in line for line in self.seen["stderr"]), self.seen
        return code, self.seen["stderr"]


@pytest.fixture
def lines() -> Iterator[Callable[..., Lines]]:
    started: list[Lines] = []

    def start(s: Serve, *args: str) -> Lines:
        started.append(Lines(s, *args))
        return started[-1]

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
        running.proc.wait(timeout=STEP_S)
        for reader in running._readers:
            reader.join(timeout=STEP_S)
        for pipe in (running.proc.stdout, running.proc.stderr):
            if pipe is not None:
                pipe.close()


def test_get_watch_and_logs_follow(
    serve: Callable[..., Serve], lines: Callable[..., Lines], tmp_path: Path
) -> None:
    s = serve()
    watch = lines(s, "get", "services", "-w")
    # Listed before the service exists, so that its rows below are changes the watch saw.
    watch.until(lambda line: line == "No services found.", "the empty listing", "stderr")
    marker = f"hello from {tmp_path.name}"
    (tmp_path / "talky.yaml").write_text(service_yaml("talky", app_printing(marker)))
    s.knpy("apply", "-f", str(tmp_path / "talky.yaml"), "--no-wait")
    # Followed from before the service has a pod: the pod is found when it comes.
    follow = lines(s, "logs", "talky", "-f")
    header = watch.until(lambda line: line.startswith("NAMESPACE"), "the header")
    assert header.split() == ["NAMESPACE", "NAME", "URL", "LATEST", "READY"]
    watch.until(lambda line: line.split()[1:2] == ["talky"], "the first talky row")
    ready = watch.until(lambda line: line.split()[-1] == "True", "talky to be Ready")
    assert ready.split() == [
        "default", "talky", "http://talky.default.localhost", "talky-00001", "True",
    ]  # fmt: skip
    # No row repeats itself: a change nobody sees in the columns prints nothing.
    assert len(watch.seen["stdout"]) == len(set(watch.seen["stdout"])), watch.seen
    assert watch.stop() == (130, ["No services found."])
    assert follow.until(lambda line: line == marker, "the app's line") == marker
    follow.until(lambda line: line.startswith("listening on 127.0.0.1:"), "the app's next line")
    code, stderr = follow.stop()
    assert code == 130 and stderr in ([], ["No pods of service 'talky' yet; waiting for one."])

    logs = s.knpy("logs", "talky", "--prefix").stdout.splitlines()
    assert logs[0].startswith("[pod/talky-00001-deployment-") and logs[0].endswith(
        f"/user-container] {marker}"
    )
    sidecar = s.knpy("logs", "talky", "-c", "queue-proxy", "--tail", "1").stdout
    assert sidecar.startswith("queue-proxy default/talky-00001: serving")
    assert s.knpy("logs", "talky", "--tail", "0").stdout == ""
    wrong = s.knpy("logs", "talky", "-c", "sidecar", check=False)
    assert wrong.returncode == 1
    assert 'container "sidecar" is not in the pods of service "talky"' in wrong.stderr
    missing = s.knpy("logs", "nope", check=False)
    assert missing.returncode == 1 and '"nope" not found' in missing.stderr

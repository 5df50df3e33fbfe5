"""Supervision (issue 10): one ``knpy serve`` per state dir, nothing of a killed run outlives it,
and a command that cannot start fails its revision at once with the OS error."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from controlplane.supervision import MARK_ENV
from shared.ports import free_port

from .harness import EXAMPLES, REPO_ROOT, STEP_S, Json, Serve

pytestmark = pytest.mark.timeout(90)

# SIGTERM from the parent-death signal or the watchdog, then each pod's drain (2 s locally):
# well inside this.
ORPHAN_EXIT_S = 15.0
# A command that cannot start fails at its first attempt (~0.1 s after the pod is created);
# the revision's status follows within a reconcile or two.
FAILED_WITHIN_S = 5.0


def shell_app_yaml(name: str = "shy") -> str:
    """A Service whose app is a shell's child: ``sh`` does not ``exec`` it (a second command
    follows), so the app is a grandchild of knpy serve, with no parent-death signal of its own."""
    app = EXAMPLES / "sampleapp" / "app.py"
    return f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  template:
    metadata:
      annotations: {{autoscaling.knative.dev/min-scale: "1"}}
    spec:
      containers:
        - image: knpy/shy
          command: [sh, -c, "{sys.executable} {app}; echo app exited"]
"""


def _tree(serve: Serve) -> list[psutil.Process]:
    return psutil.Process(serve.proc.pid).children(recursive=True)


def _marked(state: Path) -> list[psutil.Process]:
    """The processes carrying the state dir's mark (every child and grandchild of a run)."""
    want = str(state.resolve())
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK_ENV) == want:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _commands(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            continue
    return out


async def test_sigkill_ends_grandchildren_too(serve: Callable[..., Serve]) -> None:
    """Issue 10: SIGKILL of knpy serve orphaned its children. The parent-death signal reaches
    children only; the watchdog ends the ``sh -c`` app, a grandchild."""
    s = serve()
    await s.apply(shell_app_yaml())
    await s.answers("shy.default.localhost", "shy-00001")
    tree = _tree(s)
    commands = _commands(tree)
    assert any("sampleapp/app.py" in c and not c.startswith("sh ") for c in commands), commands
    s.proc.kill()
    await asyncio.to_thread(s.proc.wait, STEP_S)
    _, alive = await asyncio.to_thread(psutil.wait_procs, tree, ORPHAN_EXIT_S)
    assert not alive, _commands(alive)


async def test_restart_after_sigkill_ends_the_killed_runs_processes(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    """Issue 10: a restart on the same state dir had two autoscalers competing. Here even the
    watchdog is killed with knpy serve (``kill -9`` of both), so only the new run's start can
    end the leftovers: it does before it starts anything."""
    first = serve()
    await first.apply(shell_app_yaml())
    await first.answers("shy.default.localhost", "shy-00001")
    tree = _tree(first)
    watchdog = [p for p in tree if "controlplane.supervision" in " ".join(p.cmdline())]
    assert len(watchdog) == 1, _commands(tree)
    for p in (psutil.Process(first.proc.pid), *watchdog):
        p.kill()
    await asyncio.to_thread(first.proc.wait, STEP_S)
    await first.close_client()
    # The sh -c app has no parent-death signal: it is still serving when the restart begins.
    assert any("sampleapp/app.py" in c for c in _commands(_marked(first.state)))

    began = time.monotonic()
    again = serve(state_dir=first.state)
    await again.answers("shy.default.localhost", "shy-00001")
    restart_s = time.monotonic() - began
    _, alive = await asyncio.to_thread(psutil.wait_procs, tree, 0.5)
    assert not alive, _commands(alive)
    # One run's processes: one autoscaler, one activator.
    marked = _commands(_marked(again.state))
    assert sum("-m autoscaler" in c for c in marked) == 1, marked
    assert sum("-m activator" in c for c in marked) == 1, marked
    assert "ended" in again.log() and "killed knpy serve" in again.log()
    print(f"restart after SIGKILL of serve and watchdog: answering after {restart_s:.1f} s")
    assert await again.stop(signal.SIGTERM) == 0
    assert _marked(again.state) == []


async def test_a_second_serve_on_the_same_state_dir_is_refused(
    serve: Callable[..., Serve],
) -> None:
    s = serve(EXAMPLES / "hello" / "service.yaml")
    await s.answers("hello.default.localhost", "hello-00001")
    second = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shared.cli", "serve",
         "--port", str(free_port()), "--api-port", str(free_port()),
         "--state-dir", str(s.state)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=STEP_S,
    )  # fmt: skip
    assert second.returncode == 1, second.stderr
    assert f"in use by another knpy serve (pid {s.proc.pid})" in second.stderr, second.stderr
    # The first one is untouched: same store, still serving.
    await s.answers("hello.default.localhost", "hello-00001")
    assert await s.stop(signal.SIGTERM) == 0


BROKEN = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  template:
    spec:
      containers:
        - image: knpy/{name}
          command: [{command}]
"""


@pytest.mark.parametrize(
    ("command", "error"),
    [
        pytest.param("/nonexistent/app", "No such file or directory", id="ENOENT"),
        pytest.param("/tmp", "Permission denied", id="EACCES"),
    ],
)
async def test_a_command_that_cannot_start_fails_the_revision_at_once(
    serve: Callable[..., Serve], command: str, error: str
) -> None:
    """Issue 10: the revision stayed "Deploying" for good, the OS error only in the log.

    As in a cluster (runc's StartError, exit code 128), the Revision's ContainerHealthy and
    Ready turn False with reason ExitCode128 and the error, and the Service says which revision
    failed and why."""
    s = serve()
    await s.apply(BROKEN.format(name="broken", command=command))
    began = time.monotonic()

    async def conditions() -> dict[str, Json]:
        rev = await s.revision("broken-00001")
        return {c["type"]: c for c in rev.get("status", {}).get("conditions", [])}

    async def failed() -> bool:
        return (await conditions()).get("Ready", {}).get("status") == "False"

    await s.until(failed, "broken-00001 to fail", FAILED_WITHIN_S)
    failed_s = time.monotonic() - began
    cond = await conditions()
    want = f'Container failed with: exec: "{command}": [Errno'
    for kind in ("Ready", "ContainerHealthy"):
        assert cond[kind]["reason"] == "ExitCode128", cond
        assert cond[kind]["message"].startswith(want) and error in cond[kind]["message"], cond
    svc = await s.get("services", "broken")
    ready = {c["type"]: c for c in svc["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "RevisionFailed"), ready
    assert "broken-00001" in ready["message"] and error in ready["message"], ready
    print(f"{command}: revision failed {failed_s:.2f} s after the apply")

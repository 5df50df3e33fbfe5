"""The kubelet's process helpers: CrashLoopBackOff delays, exit codes, the last log line, and
children tied to knpy serve's life."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane.pods import (
    ProbeSettings,
    crash_backoff_s,
    exit_code,
    last_log_line,
    resolve_executable,
    start_process,
    terminate,
    tied_to_parent,
)


@pytest.mark.parametrize(
    ("crashes", "want"),
    [
        pytest.param(0, 0.0, id="none"),
        pytest.param(1, 0.5, id="first"),
        pytest.param(3, 2.0, id="doubles"),
        pytest.param(20, 30.0, id="capped"),
    ],
)
def test_crash_backoff(crashes: int, want: float) -> None:
    assert crash_backoff_s(crashes) == want


@pytest.mark.parametrize(
    ("returncode", "want"),
    [
        pytest.param(0, 0, id="clean"),
        pytest.param(1, 1, id="error"),
        pytest.param(-signal.SIGKILL, 137, id="sigkill-is-128-plus-9"),
        pytest.param(-signal.SIGTERM, 143, id="sigterm"),
    ],
)
def test_exit_code(returncode: int, want: int) -> None:
    assert exit_code(returncode) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param(None, "", id="no-log"),
        pytest.param("", "", id="empty"),
        pytest.param("starting\nboom\n\n  \n", "boom", id="last-non-blank"),
        pytest.param("x" * 5000 + "\ntail line", "tail line", id="long-log-tail-only"),
    ],
)
def test_last_log_line(tmp_path: Path, text: str | None, want: str) -> None:
    log = tmp_path / "user.log"
    if text is not None:
        log.write_text(text)
    assert last_log_line(log) == want


def test_probe_settings_defaults() -> None:
    assert ProbeSettings.from_probe(None) == ProbeSettings()
    got = ProbeSettings.from_probe({"periodSeconds": 2, "failureThreshold": 1, "timeoutSeconds": 0})
    assert (got.period_s, got.failure_threshold, got.timeout_s) == (2.0, 1, 1.0)


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("name", "error"),
    [
        pytest.param("no-such-command-knpy", FileNotFoundError, id="not-on-path"),
        pytest.param("/nonexistent/app", FileNotFoundError, id="absolute-missing"),
        pytest.param("plain.txt", PermissionError, id="not-executable"),
        pytest.param(".", PermissionError, id="a-directory"),
    ],
)
def test_resolve_executable_raises_what_exec_would(
    tmp_path: Path, name: str, error: type[OSError]
) -> None:
    _write(tmp_path / "plain.txt", "data", 0o644)
    command = str(tmp_path / name) if name in ("plain.txt", ".") else name
    with pytest.raises(error) as caught:
        resolve_executable(command, {"PATH": str(tmp_path)})
    assert caught.value.filename == command
    assert caught.value.strerror in str(caught.value)


def test_resolve_executable_searches_the_child_path(tmp_path: Path) -> None:
    tool = _write(tmp_path / "tool", "#!/bin/sh\n", 0o755)
    assert resolve_executable("tool", {"PATH": f"/nonexistent:{tmp_path}"}) == str(tool)
    assert resolve_executable(str(tool), {}) == str(tool)


def test_a_tied_child_dies_with_its_parent_even_by_sigkill(tmp_path: Path) -> None:
    # An intermediate parent spawns `sleep` tied to itself, in a session of its own (as pods
    # are), prints its pid and waits; SIGKILL of the parent must take the child too.
    script = (
        "import subprocess, sys\n"
        "from controlplane.pods import tied_to_parent\n"
        "s = tied_to_parent(['sleep', '60'], None)\n"
        "p = subprocess.Popen(s.argv, preexec_fn=s.preexec_fn, start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "p.wait()\n"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            _until(lambda: _command(child).endswith(b"sleep"), "setpriv to exec sleep")
        finally:
            parent.kill()
    _until(lambda: not _alive(child), "the child to die with its parent")


def _until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _command(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_local_process_is_awaited_by_many_and_reports_the_signal(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    with log.open("ab") as out:
        proc = start_process(
            tied_to_parent(["sh", "-c", "echo started; exec sleep 30"], None),
            cwd=None,
            env={"PATH": "/usr/bin:/bin"},
            stdout=out,
        )
    assert proc.returncode is None
    waiters = [asyncio.ensure_future(proc.wait()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    await terminate(proc, 5.0, group=True)
    assert await asyncio.gather(*waiters) == [-signal.SIGTERM] * 3
    assert proc.returncode == -signal.SIGTERM
    assert f"pid={proc.pid}" in repr(proc)


async def test_local_process_exit_code_and_missing_working_dir(tmp_path: Path) -> None:
    with (tmp_path / "out.log").open("ab") as out:
        proc = start_process(
            tied_to_parent(["sh", "-c", "exit 3"], None), cwd=None, env={}, stdout=out
        )
        assert await proc.wait() == 3
        with pytest.raises(FileNotFoundError):
            start_process(
                tied_to_parent(["true"], None), cwd=str(tmp_path / "gone"), env={}, stdout=out
            )

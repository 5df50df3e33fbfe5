"""The kubelet's process helpers: CrashLoopBackOff delays, exit codes, the last log line."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from controlplane.pods import ProbeSettings, crash_backoff_s, exit_code, last_log_line


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

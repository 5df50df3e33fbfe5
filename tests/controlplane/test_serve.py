"""The serve supervisor's children: a crash is restarted with a back-off, a planned restart not."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest

from controlplane.serve import Child

STEP_TIMEOUT_S = 10.0


async def _running(child: Child, not_pid: int | None = None) -> int:
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while child.proc is None or child.proc.returncode is not None or child.proc.pid == not_pid:
            await asyncio.sleep(0.01)
    return child.proc.pid


async def test_planned_restart_is_logged_as_such(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="knpy.serve")
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = Child("autoscaler", argv, dict(os.environ), tmp_path / "autoscaler.log")
    child.start()
    try:
        first = await _running(child)
        await child.restart("with the new config-autoscaler")
        second = await _running(child, not_pid=first)
        assert second != first
        messages = [r.getMessage() for r in caplog.records]
        assert "autoscaler restarting with the new config-autoscaler" in messages
        assert not any("exited with" in m for m in messages), messages
        assert child.restarts == 0  # restarts counts deaths
    finally:
        await child.stop(1.0)


async def test_crash_is_restarted_with_a_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = [sys.executable, "-c", "raise SystemExit(3)"]
    child = Child("activator", argv, dict(os.environ), tmp_path / "activator.log")
    child.start()
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while child.restarts < 1:
                await asyncio.sleep(0.01)
        warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert warning.startswith("activator exited with 3 after ")
        assert "restarting in 0.5 s" in warning
    finally:
        await child.stop(1.0)

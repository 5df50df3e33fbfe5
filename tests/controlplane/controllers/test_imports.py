"""The reconcilers' cores are pure: only the work queue and the wiring import asyncio."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = (
    "controlplane.controllers.addressable",
    "controlplane.controllers.broker",
    "controlplane.controllers.sources",
    "controlplane.cron",
    "controlplane.eventing_webhook",
    "controlplane.controllers.configuration",
    "controlplane.controllers.deployment",
    "controlplane.controllers.endpoints",
    "controlplane.controllers.meta",
    "controlplane.controllers.revision",
    "controlplane.controllers.route",
    "controlplane.controllers.serverlessservice",
    "controlplane.controllers.service",
    "controlplane.webhook",
)


@pytest.mark.parametrize("module", PURE)
def test_imports_no_asyncio(module: str) -> None:
    code = f"import sys, {module}; print('asyncio' in sys.modules, 'aiohttp' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False"]

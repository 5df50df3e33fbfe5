"""The autoscaler stand-in, shared by the stat sink's tests and the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.activator.integration.harness import AutoscalerStandIn


@pytest.fixture
async def standin() -> AsyncIterator[AutoscalerStandIn]:
    """Knative's autoscaler stat WebSocket on 127.0.0.1, recording the decoded frames."""
    server = AutoscalerStandIn()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()

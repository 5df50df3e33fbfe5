"""Fixtures: the queue-proxy harness's children and stacks, a FakeCluster, in-process activators.

The autoscaler stand-in (``standin``) comes from tests/activator/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from shared.kube.fake import FakeCluster
from tests.queueproxy.integration.conftest import (  # noqa: F401  (fixtures, by name)
    children,
    stack,
    start_app,
    start_queue_proxy,
)

from .harness import AutoscalerStandIn, StartActivator, activators


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
async def start_activator(
    cluster: FakeCluster, standin: AutoscalerStandIn
) -> AsyncIterator[StartActivator]:
    async with activators(cluster, standin) as start:
        yield start


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session

"""Fixtures: the fault-injecting API server on a free port and a client configured for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from shared.kube.config import load_api_client
from tests.shared.kube.apiserver import FaultyApiServer


@pytest.fixture
async def server() -> AsyncIterator[FaultyApiServer]:
    srv = FaultyApiServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def api(server: FaultyApiServer, tmp_path: Path) -> AsyncIterator[ApiClient]:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    client = await load_api_client({}, str(kubeconfig))
    try:
        yield client
    finally:
        await client.close()

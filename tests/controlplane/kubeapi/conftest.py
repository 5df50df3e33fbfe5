"""A real ``KubeApiServer`` on a free loopback port, and a small JSON client for it."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controlplane.kubeapi import tls
from controlplane.kubeapi.server import KubeApiServer

# One serving certificate for the whole session, copied into each state dir (the server reuses
# a state dir's certificate), which saves an openssl run per test.
_CERTS: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _session_certificate(tmp_path_factory: pytest.TempPathFactory) -> None:
    files = tls.ensure_certificate(tmp_path_factory.mktemp("kubeapi-tls"))
    if files is not None:
        _CERTS[:] = [files.cert, files.key]


@dataclass
class Api:
    server: KubeApiServer
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        token: str | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON body or text)."""
        hdrs = {"Authorization": f"Bearer {self.server.token if token is None else token}"}
        if body is not None or data is not None:
            if content_type:  # "" sends no Content-Type at all
                hdrs["Content-Type"] = content_type
            if data is None:
                data = json.dumps(body).encode()
        hdrs.update(headers or {})
        payload = io.BytesIO(data) if data is not None else None
        skip = () if content_type else ("Content-Type",)
        async with self.session.request(method, self.server.url + path, data=payload,
                                        headers=hdrs, skip_auto_headers=skip) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, out = await self.call(method, path, body, **kw)
        assert status in (200, 201), (status, out)
        return out


async def start_api(state_dir: Path, **kw: Any) -> Api:
    state_dir.mkdir(parents=True, exist_ok=True)
    for f in _CERTS:
        if not (state_dir / f.name).exists():
            shutil.copy2(f, state_dir / f.name)
    server = KubeApiServer(state_dir, **kw)
    await server.start()
    return Api(server, aiohttp.ClientSession())


async def stop_api(api: Api) -> None:
    await api.session.close()
    await api.server.stop()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    a = await start_api(tmp_path / "state")
    try:
        yield a
    finally:
        await stop_api(a)


def cm(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta},
            "data": data or {}}


def revision(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": name, **meta},
        "spec": {"containers": [{"image": "knpy/sampleapp"}]},
    }


CMS = "/api/v1/namespaces/default/configmaps"
REVS = "/apis/serving.knative.dev/v1/namespaces/default/revisions"
PODS = "/api/v1/namespaces/default/pods"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"

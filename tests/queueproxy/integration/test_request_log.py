"""SERVING_ENABLE_REQUEST_LOG: one JSON line per request on stdout."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest

from .qpharness import StartStack

pytestmark = pytest.mark.timeout(30)


async def test_request_log_one_json_line_per_request(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    s = await stack(qp_env={"SERVING_ENABLE_REQUEST_LOG": "true"})
    marker = uuid.uuid4().hex
    paths = [f"/sleep?ms=0&marker={marker}-{i}" for i in range(5)]
    for path in paths:
        async with session.get(s.qp.url + path) as resp:
            assert resp.status == 200
    async with session.get(s.qp.url + f"/status/404?marker={marker}-nf") as resp:
        assert resp.status == 404

    deadline = time.monotonic() + 3
    while True:
        lines = [line for line in s.qp.child.stdout().splitlines() if marker in line]
        if len(lines) >= 6 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(lines) == 6, f"want 6 request log lines, stdout:\n{s.qp.child.stdout()[-3000:]}"
    entries = [json.loads(line) for line in lines]
    for path, entry in zip([*paths, f"/status/404?marker={marker}-nf"], entries, strict=True):
        flat = json.dumps(entry)
        assert path.split("marker=")[1] in flat, (path, entry)
    # Knative's default template: {"httpRequest": {..., "status": N, ...}, ...}
    statuses = [entry.get("httpRequest", {}).get("status") for entry in entries]
    assert statuses == [200] * 5 + [404], entries
    assert entries[0]["httpRequest"]["requestMethod"] == "GET", entries[0]


async def test_request_log_off_by_default(
    stack: StartStack, session: aiohttp.ClientSession
) -> None:
    s = await stack()
    marker = uuid.uuid4().hex
    async with session.get(s.qp.url + f"/sleep?ms=0&marker={marker}") as resp:
        assert resp.status == 200
    await asyncio.sleep(0.3)
    assert marker not in s.qp.child.stdout()

"""HttpCluster against the real platform API server on 127.0.0.1 (seams half only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import MappingProxyType

import aiohttp
import pytest
from aiohttp import web

from controlplane.api import PlatformApi, PlatformSeams, start_api
from controlplane.pods import free_port
from shared.seams import Endpoint, Mode, RevisionKey, RevisionSpec, ScaleDecision
from shared.seams_http import (
    HttpCluster,
    decision_from_json,
    decision_to_json,
    endpoint_from_json,
    endpoint_to_json,
    revision_from_json,
    revision_to_json,
)

KEY = RevisionKey("default", "hello-00001")
SPEC = RevisionSpec(
    key=KEY,
    container_concurrency=10,
    timeout_s=60,
    annotations=MappingProxyType({"autoscaling.knative.dev/target": "5"}),
    service="hello",
    configuration="hello",
)
POD = Endpoint("hello-00001-pod-1", "127.0.0.1", 40001, 40002, ready=False, started_at=12.5)
STEP_S = 5.0


def test_wire_round_trips() -> None:
    assert revision_from_json(revision_to_json(SPEC)) == SPEC
    assert endpoint_from_json(endpoint_to_json(POD)) == POD
    decision = ScaleDecision(KEY, 3, Mode.SERVE, 2, excess_burst_capacity=-5.0)
    assert decision_from_json(decision_to_json(decision)) == decision


@dataclass
class Server:
    seams: PlatformSeams
    port: int
    decisions: list[ScaleDecision] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.runner = await start_api(
            PlatformApi(self.seams, keepalive_s=0.2), "127.0.0.1", self.port
        )

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server(PlatformSeams(), free_port())
    srv.seams.on_decision = srv.decisions.append
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def cluster(server: Server) -> AsyncIterator[HttpCluster]:
    client = HttpCluster(server.url)
    assert await client.start(STEP_S)
    try:
        yield client
    finally:
        await client.close()


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(STEP_S):
        while not check():
            await asyncio.sleep(0.01)


async def test_revisions_reach_the_cache_and_the_watch(
    server: Server, cluster: HttpCluster
) -> None:
    assert cluster.get(KEY) is None
    watch = cluster.watch_revisions()
    assert await anext(watch) == {}
    server.seams.put_revision(SPEC)
    async with asyncio.timeout(STEP_S):
        assert await anext(watch) == {KEY: SPEC}
    assert cluster.get(KEY) == SPEC
    server.seams.delete_revision(KEY)
    await _until(lambda: cluster.get(KEY) is None)


async def test_endpoints_and_activators(server: Server, cluster: HttpCluster) -> None:
    watch = cluster.watch_endpoints(KEY)
    assert await anext(watch) == ()
    server.seams.set_endpoints(KEY, (POD,))
    async with asyncio.timeout(STEP_S):
        assert await anext(watch) == (POD,)
    assert cluster.endpoints(KEY) == (POD,)
    assert cluster.endpoints(RevisionKey("default", "other")) == ()
    server.seams.set_endpoints(KEY, ())
    async with asyncio.timeout(STEP_S):
        assert await anext(watch) == ()
    server.seams.set_activators(("127.0.0.1:8012",))
    await _until(lambda: cluster._activators.value == ("127.0.0.1:8012",))
    activators = cluster.watch_activators()
    assert await anext(activators) == ("127.0.0.1:8012",)


async def test_decisions_are_posted(server: Server, cluster: HttpCluster) -> None:
    server.seams.put_revision(SPEC)
    decision = ScaleDecision(KEY, 2, Mode.SERVE, 1)
    await cluster.apply(decision)
    assert server.decisions == [decision]
    assert server.seams.mode_of(KEY) is Mode.SERVE
    # Unknown revision: refused by the platform, logged by the client, never raised.
    await cluster.apply(ScaleDecision(RevisionKey("default", "gone"), 1, Mode.PROXY, 1))
    assert len(server.decisions) == 1


async def test_reconnects_and_converges_after_an_outage(
    server: Server, cluster: HttpCluster
) -> None:
    server.seams.put_revision(SPEC)
    await _until(lambda: cluster.get(KEY) == SPEC)
    await server.stop()
    # While the platform is away the cache keeps the last value and nothing raises.
    server.seams.delete_revision(KEY)
    server.seams.set_endpoints(RevisionKey("default", "b"), (POD,))
    await asyncio.sleep(0.3)
    assert cluster.get(KEY) == SPEC
    await cluster.apply(ScaleDecision(KEY, 1, Mode.PROXY, 1))
    await server.start()
    await _until(lambda: cluster.get(KEY) is None)
    await _until(lambda: cluster.endpoints(RevisionKey("default", "b")) == (POD,))
    assert cluster.reconnects >= 1


async def test_stream_shape_and_keepalive(server: Server) -> None:
    server.seams.put_revision(SPEC)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{server.url}/seams/v1/revisions") as resp:
            body = await resp.json()
            assert body["revisions"][0]["name"] == "hello-00001"
        url = f"{server.url}/seams/v1/endpoints/default/hello-00001?watch=true"
        async with client.get(url) as resp:
            assert resp.headers["Content-Type"].startswith("application/x-ndjson")
            lines = [await resp.content.readline() for _ in range(2)]
    assert lines[0].startswith(b'{"namespace":"default","name":"hello-00001","endpoints":[]}')
    assert lines[1] == b"\n"  # keep-alive after 0.2 s of quiet


async def test_start_without_a_platform_does_not_fail() -> None:
    client = HttpCluster(f"http://127.0.0.1:{free_port()}")
    try:
        assert await client.start(0.3) is False
        assert client.get(KEY) is None
    finally:
        await client.close()


def test_bad_url_fails_fast() -> None:
    with pytest.raises(ValueError, match="http://"):
        HttpCluster("127.0.0.1:9080")


@pytest.mark.parametrize("reachable", [True, False], ids=["reachable", "unreachable"])
def test_revision_json_round_trip(reachable: bool) -> None:
    spec = RevisionSpec(
        RevisionKey("default", "hello-00001"),
        container_concurrency=10,
        annotations=MappingProxyType({"autoscaling.knative.dev/max-scale": "3"}),
        service="hello",
        configuration="hello",
        reachable=reachable,
    )
    assert revision_from_json(revision_to_json(spec)) == spec

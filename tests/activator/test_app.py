"""activator.app.run over a FakeCluster: config-network is required, the ConfigMaps are
followed, probes are answered, and readiness follows the stat link and SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from activator.app import Activator, StartupError, fetch_network_config, run
from activator.config import ActivatorConfig
from shared.kube.client import ApiError
from shared.kube.fake import FakeCluster
from shared.kube.resources import CONFIGMAPS
from tests.activator.objects import SYSTEM_NAMESPACE, configmap

pytestmark = pytest.mark.timeout(20)


@dataclass
class FakeSink:
    """The stat link, with its state set by the test."""

    connected: bool = False

    def send(self, payload: bytes) -> None:
        pass

    def status(self) -> str | None:
        return None if self.connected else "not connected to the autoscaler"

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


def config() -> ActivatorConfig:
    return ActivatorConfig(
        pod_name="activator-0",
        pod_ip="127.0.0.1",
        bind_host="127.0.0.1",
        serving_port=0,
        metrics_port=0,
        drain_timeout_s=0.0,
    )


@dataclass
class Running:
    activator: Activator
    sink: FakeSink
    stop: asyncio.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.activator.serving_port}/"


@contextlib.asynccontextmanager
async def running(cluster: FakeCluster) -> AsyncIterator[Running]:
    sink = FakeSink()
    stop = asyncio.Event()
    serving: asyncio.Future[Activator] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(
        run(config(), cluster, cluster, stat_sink=sink, stop=stop, on_serving=serving.set_result)
    )
    try:
        async with asyncio.timeout(5):
            done, _ = await asyncio.wait({task, serving}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises why it did not start
        yield Running(serving.result(), sink, stop)
    finally:
        stop.set()
        await task


async def test_config_network_missing_is_fatal() -> None:
    cluster = FakeCluster()
    with pytest.raises(StartupError, match='configmaps "config-network" not found'):
        await run(config(), cluster, cluster, stat_sink=FakeSink())


async def test_config_network_waits_for_the_api() -> None:
    cluster = FakeCluster()
    cluster.put(configmap("config-network", {}))
    cluster.fail_next("get", ApiError(503, "ServiceUnavailable", "starting"), CONFIGMAPS)
    obj = await fetch_network_config(cluster, SYSTEM_NAMESPACE, wait_s=5.0)
    assert obj["metadata"]["name"] == "config-network"
    cluster.fail_next("get", ApiError(503, "ServiceUnavailable", "starting"), CONFIGMAPS)
    with pytest.raises(StartupError, match="503"):
        await fetch_network_config(cluster, SYSTEM_NAMESPACE, wait_s=0.0)


KUBELET = {"K-Kubelet-Probe": "1"}
KUBE_PROBE_AGENT = {"User-Agent": "kube-probe/1.34"}


@pytest.mark.parametrize(
    ("headers", "connected", "status", "body"),
    [
        pytest.param({"K-Network-Probe": "activator"}, False, 200, "activator", id="activator"),
        pytest.param(
            {"K-Network-Probe": "probe", "K-Network-Hash": "abc123"},
            False,
            200,
            "",
            id="ingress probe echoes the hash",
        ),
        pytest.param(
            {"K-Network-Probe": "probe"}, False, 400, "K-Network-Hash", id="probe without hash"
        ),
        pytest.param({"K-Network-Probe": "queue"}, False, 400, "unexpected", id="wrong probe"),
        pytest.param(KUBELET, True, 200, "", id="kubelet, linked"),
        pytest.param(KUBE_PROBE_AGENT, True, 200, "", id="kube-probe agent, linked"),
        pytest.param(
            KUBELET, False, 500, "not connected to the autoscaler", id="kubelet, unlinked"
        ),
        pytest.param(KUBE_PROBE_AGENT, False, 500, "not connected", id="kube-probe, unlinked"),
    ],
)
async def test_probe_answers(
    headers: dict[str, str], connected: bool, status: int, body: str
) -> None:
    cluster = FakeCluster()
    cluster.put(configmap("config-network", {}))
    async with running(cluster) as r, aiohttp.ClientSession() as client:
        r.sink.connected = connected
        async with client.get(r.url, headers=headers) as resp:
            assert resp.status == status
            assert body in await resp.text()
            if "K-Network-Hash" in headers and status == 200:
                assert resp.headers["K-Network-Hash"] == headers["K-Network-Hash"]


async def test_readiness_follows_the_link_and_sigterm() -> None:
    cluster = FakeCluster()
    cluster.put(configmap("config-network", {}))
    async with running(cluster) as r, aiohttp.ClientSession() as client:
        seen = []
        for connected in (False, True, False, True):
            r.sink.connected = connected
            async with client.get(r.url, headers=KUBELET) as resp:
                seen.append(resp.status)
        r.activator.begin_drain()
        async with client.get(r.url, headers=KUBELET) as resp:
            seen.append(resp.status)
            assert "received SIGTERM from kubelet" in await resp.text()
    assert seen == [500, 200, 500, 200, 500]


async def test_configmaps_followed() -> None:
    cluster = FakeCluster()
    cluster.put(configmap("config-network", {"mesh-compatibility-mode": "auto"}))
    cluster.put(configmap("config-logging", {"loglevel.activator": "debug"}))
    cluster.put(configmap("config-observability", {"logging.enable-request-log": "true"}))
    log = logging.getLogger("activator")
    async with running(cluster) as r:
        await cluster.settle()
        assert log.level == logging.DEBUG
        obs = r.activator.configmaps.observability
        assert obs is not None and obs.enable_request_log
        cluster.put(configmap("config-logging", {"loglevel.activator": "error"}))
        cluster.put(configmap("config-observability", {"tracing-protocol": "nope"}))
        await cluster.settle()
        assert log.level == logging.ERROR
        # A bad update is ignored: the last good settings stay.
        assert r.activator.configmaps.observability == obs
        cluster.put(configmap("config-observability", {"logging.enable-request-log": "false"}))
        await cluster.settle()
        obs = r.activator.configmaps.observability
        assert obs is not None and not obs.enable_request_log
    log.setLevel(logging.NOTSET)

"""``python -m activator --cluster-file``: the static informer source, end to end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from shared.ports import free_port
from tests.activator import objects
from tests.queueproxy.integration.qpharness import LOOPBACK, StartStack, wait_listening

from .harness import KEY, AutoscalerStandIn, free_port_pair, get_status, process_env, set_pods

pytestmark = pytest.mark.timeout(40)


async def test_serves_a_revision_from_the_file(
    children: Any,
    tmp_path: Path,
    stack: StartStack,
    standin: AutoscalerStandIn,
    client: aiohttp.ClientSession,
) -> None:
    pod = await stack()
    path = tmp_path / "cluster.yaml"
    docs = [
        objects.configmap("config-network", {}),
        objects.revision(KEY.namespace, KEY.name, cc=1),
        set_pods(None, [(pod, True)]),
    ]
    path.write_text(yaml.safe_dump_all(docs))
    port, metrics = free_port(), free_port()
    env = process_env(port, metrics, standin, "activator-static")
    argv = [sys.executable, "-m", "activator", "--cluster-file", str(path)]
    child = children.spawn("activator", argv, env)
    await wait_listening(child, {"serving": port, "metrics": metrics})
    assert await get_status(client, f"http://{LOOPBACK}:{port}/") == 200
    child.terminate()
    assert await child.wait_exit(10) == 0, child.describe()


@pytest.mark.parametrize(
    ("docs", "code", "message"),
    [
        pytest.param([], 1, 'configmaps "config-network" not found', id="no config-network"),
        pytest.param(
            [{"apiVersion": "v9", "kind": "Thing", "metadata": {"name": "x"}}],
            2,
            "unknown apiVersion/kind",
            id="bad object",
        ),
    ],
)
async def test_refuses_to_start(
    children: Any, tmp_path: Path, docs: list[Any], code: int, message: str
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    env = {"POD_NAME": "a", "POD_IP": LOOPBACK, "ACTIVATOR_SERVING_PORT": str(free_port())}
    argv = [sys.executable, "-m", "activator", "--cluster-file", str(path)]
    child = children.spawn("activator", argv, env)
    assert await child.wait_exit(15) == code, child.describe()
    assert message in child.stderr()


async def test_workers_share_the_port_and_split_the_pods(
    children: Any,
    tmp_path: Path,
    stack: StartStack,
    standin: AutoscalerStandIn,
    client: aiohttp.ClientSession,
) -> None:
    """``--workers 2``: two activators on one SO_REUSEPORT port, each with one of the two
    pods (worker_share), each scraped on its own metrics port; SIGTERM stops all of them."""
    pods = [await stack(), await stack()]
    path = tmp_path / "cluster.yaml"
    docs = [
        objects.configmap("config-network", {}),
        objects.revision(KEY.namespace, KEY.name, cc=1),
        set_pods(None, [(pod, True) for pod in pods]),
    ]
    path.write_text(yaml.safe_dump_all(docs))
    port, metrics = free_port(), free_port_pair()
    env = process_env(port, metrics, standin, "activator-static")
    argv = [sys.executable, "-m", "activator", "--cluster-file", str(path), "--workers", "2"]
    child = children.spawn("activator", argv, env)
    await wait_listening(child, {"serving": port, "metrics 0": metrics, "metrics 1": metrics + 1})
    statuses = [await get_status(client, f"http://{LOOPBACK}:{port}/") for _ in range(20)]
    assert statuses == [200] * 20
    for worker in range(2):
        async with client.get(f"http://{LOOPBACK}:{metrics + worker}/metrics") as resp:
            assert resp.status == 200
    child.terminate()
    assert await child.wait_exit(20) == 0, child.describe()

"""``python -m activator --cluster-file``: the static informer source, end to end."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from shared.ports import free_port
from tests.activator import objects
from tests.queueproxy.integration.qpharness import LOOPBACK, StartStack, wait_listening

from .harness import KEY, AutoscalerStandIn, get_status, set_pods


def free_port_pair() -> int:
    """A free port whose next one is free too: worker i serves its metrics on port + i.

    Outside a KNPY_PORT_RANGE (a serial run) free ports are the kernel's ephemeral ones, and
    port + 1 may be an outgoing connection's (the bind then failed with EADDRINUSE).
    """
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port + 1))
            except OSError:
                continue
            return port
    raise OSError("no two adjacent free ports")

pytestmark = pytest.mark.timeout(40)


def _env(port: int, metrics: int, standin: AutoscalerStandIn) -> dict[str, str]:
    return {
        "POD_NAME": "activator-static",
        "POD_IP": LOOPBACK,
        "ACTIVATOR_BIND_HOST": LOOPBACK,
        "ACTIVATOR_SERVING_PORT": str(port),
        "ACTIVATOR_METRICS_PORT": str(metrics),
        "ACTIVATOR_AUTOSCALER_URL": standin.url,
        "ACTIVATOR_DRAIN_TIMEOUT_SECONDS": "0",
    }


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
    env = _env(port, metrics, standin)
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
    env = _env(port, metrics, standin)
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

"""Fixtures that run the real queue-proxy in front of the real sample app.

Both run as subprocesses on free loopback ports: the sample app
(``examples/sampleapp/app.py``) and ``python -m queueproxy`` configured through Knative's
environment contract. A fixture is a factory, so a test states the env it needs
(``await stack(app_env={...}, qp_env={...})``). Readiness is polled with a bound, and a child
that dies or never listens fails the test with its stderr. Every child is killed at teardown.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from shared.ports import free_port

from .qpharness import (
    CLIENT_TIMEOUT_S,
    CODE_ROOT,
    LOOPBACK,
    SAMPLE_APP,
    Child,
    QueueProxy,
    SampleApp,
    Stack,
    StartApp,
    StartQueueProxy,
    StartStack,
    queue_proxy_env,
    wait_listening,
)


@dataclass
class _Children:
    tmp: Path
    started: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Child:
        index = len(self.started)
        stdout_path = self.tmp / f"{index}-{name}.stdout"
        stderr_path = self.tmp / f"{index}-{name}.stderr"
        full_env = {**os.environ, "PYTHONPATH": str(CODE_ROOT), **env}
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                argv, cwd=CODE_ROOT, env=full_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        child = Child(name, proc, stdout_path, stderr_path)
        self.started.append(child)
        return child

    def kill_all(self) -> None:
        for child in self.started:
            child.kill()


@pytest.fixture
def children(tmp_path: Path) -> Iterator[_Children]:
    spawned = _Children(tmp_path)
    try:
        yield spawned
    finally:
        spawned.kill_all()


@pytest.fixture
def start_app(children: _Children) -> StartApp:
    """Factory: ``await start_app(READY_DELAY_MS="500")`` runs the sample app."""

    async def start(**env: str) -> SampleApp:
        port = free_port()
        child = children.spawn(
            "sampleapp",
            [sys.executable, str(SAMPLE_APP)],
            {"PORT": str(port), "HOST": LOOPBACK, "K_REVISION": "hello-00001", **env},
        )
        await wait_listening(child, {"PORT": port})
        return SampleApp(child, port)

    return start


@pytest.fixture
def start_queue_proxy(children: _Children) -> StartQueueProxy:
    """Factory: ``await start_queue_proxy(user_port, CONTAINER_CONCURRENCY="5")``."""

    async def start(user_port: int, **overrides: str) -> QueueProxy:
        ports = {
            "serving_port": free_port(),
            "admin_port": free_port(),
            "metrics_port": free_port(),
            "user_metrics_port": free_port(),
        }
        env = {**queue_proxy_env(user_port, **ports), **overrides}
        child = children.spawn("queueproxy", [sys.executable, "-m", "queueproxy"], env)
        await wait_listening(
            child,
            {
                "QUEUE_SERVING_PORT": ports["serving_port"],
                "QUEUE_ADMIN_PORT": ports["admin_port"],
                "QUEUE_METRICS_PORT": ports["metrics_port"],
                "USER_METRICS_PORT": ports["user_metrics_port"],
            },
        )
        return QueueProxy(child, env, user_port=user_port, **ports)

    return start


@pytest.fixture
def stack(start_app: StartApp, start_queue_proxy: StartQueueProxy) -> StartStack:
    """Factory: the sample app and a queue-proxy in front of it."""

    async def start(
        app_env: Mapping[str, str] | None = None, qp_env: Mapping[str, str] | None = None
    ) -> Stack:
        app = await start_app(**(app_env or {}))
        qp = await start_queue_proxy(app.port, **(qp_env or {}))
        return Stack(app, qp)

    return start


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    ) as client:
        yield client

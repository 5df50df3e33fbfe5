"""A real ``python -m eventing.broker`` against knpy's Kubernetes API server, SIGKILLed while
producers stream events into it: after a restart on the same state dir every event it
acknowledged with a 202 reaches the subscriber. Duplicates are allowed (at least once) and
counted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from shared.kube.resources import BROKERS, NAMESPACES, TRIGGERS
from shared.ports import LOOPBACK, free_port
from tests.activator.integration.kube import kube_api
from tests.eventing.harness import Answer, Received, Sink

PRODUCERS = 8


class BrokerProcess:
    def __init__(self, kubeconfig: Path, state_dir: Path, log: Path) -> None:
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir
        self.log = log
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {
            **os.environ,
            "BROKER_STATE_DIR": str(self.state_dir),
            "BROKER_BIND_HOST": LOOPBACK,
            "INGRESS_PORT": str(self.port),
            "BROKER_METRICS_PORT": str(self.metrics_port),
            # Two deliveries at a time against a slow subscriber: a backlog at the kill.
            "BROKER_TRIGGER_CONCURRENCY": "2",
        }
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "eventing.broker", "--kubeconfig", str(self.kubeconfig),
                env=env, stdout=out, stderr=out, start_new_session=True,
            )
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc.returncode is None, self.log.read_text()
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://{LOOPBACK}:{self.port}/healthz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(f"the broker did not become ready:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def wait(self) -> None:
        if self.proc is not None:
            await self.proc.wait()


async def produce(url: str, acked: list[str], prefix: str, stop: asyncio.Event) -> None:
    """Send events one after the other until ``stop`` or the broker goes away."""
    async with aiohttp.ClientSession() as session:
        i = 0
        while not stop.is_set():
            event_id = f"{prefix}-{i}"
            headers = {
                "ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/crash",
                "ce-type": "crash.test", "content-type": "application/json",
            }
            try:
                async with session.post(url, data=b'{"x": 1}', headers=headers) as r:
                    if r.status == 202:
                        acked.append(event_id)
            except (aiohttp.ClientError, OSError):
                return
            i += 1


async def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    slow = True

    async def answer(_req: Received, _n: int) -> Answer:
        if slow:
            await asyncio.sleep(0.02)
        return 200, {}, b""

    sink = await Sink(answer).start()
    async with kube_api(tmp_path / "kube") as api:
        kube = api.client
        await kube.create(NAMESPACES, "", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"},
        })
        await kube.create(BROKERS, "demo", {
            "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
            "metadata": {"name": "default", "namespace": "demo"}, "spec": {},
        })
        await kube.create(TRIGGERS, "demo", {
            "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
            "metadata": {"name": "all", "namespace": "demo"},
            "spec": {"broker": "default", "subscriber": {"uri": sink.url}},
        })
        kubeconfig = api.kubeconfig
        state = tmp_path / "broker"
        log = tmp_path / "broker.log"
        broker = BrokerProcess(kubeconfig, state, log)
        await broker.start()
        acked: list[str] = []
        try:
            stop = asyncio.Event()
            url = f"http://{LOOPBACK}:{broker.port}/demo/default"
            producers = [
                asyncio.create_task(produce(url, acked, f"p{n}", stop)) for n in range(PRODUCERS)
            ]
            deadline = time.monotonic() + 20  # a loaded machine may be slow to get there
            while len(acked) < 400 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert acked, f"nothing acknowledged:\n{log.read_text()}"
            broker.kill()  # mid-stream: producers have requests in flight
            await broker.wait()
            stop.set()
            await asyncio.gather(*producers)
            delivered_before = len({r.headers.get("ce-id") for r in sink.received})
            slow = False
            restarted = BrokerProcess(kubeconfig, state, log)
            await restarted.start()
            try:
                got_ids, missing, duplicates = await sink.wait_for_ids(set(acked))
                print(
                    f"acknowledged {len(acked)}, delivered before the kill {delivered_before}, "
                    f"after the restart {len(got_ids)} requests, duplicates {duplicates}"
                )
                assert not missing, f"{len(missing)} acknowledged lost: {sorted(missing)[:5]}"
                assert delivered_before < len(acked)  # a backlog of distinct events (repeats aside)
                assert duplicates <= len(acked)
            finally:
                restarted.kill()
                await restarted.wait()
        finally:
            broker.kill()
            await broker.wait()
            await sink.stop()


@pytest.mark.parametrize("missing", ["BROKER_STATE_DIR"])
async def test_refuses_to_start_without_a_state_dir(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != missing}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventing.broker", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"BROKER_STATE_DIR: required but not set" in err

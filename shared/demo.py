"""``knpy demo``: the sample app behind a real queue-proxy, a short load, and what it measured.

The main job of the README until the local platform exists: it shows the data plane doing its
work with real processes on loopback, and prints the figures the autoscaler would scrape.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_APP = ROOT / "examples" / "sampleapp" / "app.py"
_SHOWN_METRICS = ("kn_serving_invocation_duration_seconds_count", "kn_serving_queue")


async def _wait_http(url: str, headers: dict[str, str], deadline_s: float) -> None:
    import aiohttp

    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{url} did not become ready in {deadline_s} s")
            await asyncio.sleep(0.05)


async def _load(url: str, seconds: float, concurrency: int) -> tuple[int, int, list[float]]:
    import aiohttp

    ok = failed = 0
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok, failed
        while time.monotonic() < end:
            t0 = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
                if resp.status == 200:
                    ok += 1
                else:
                    failed += 1
            latencies.append(time.perf_counter() - t0)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok, failed, latencies


async def _demo(seconds: float, concurrency: int) -> int:
    import aiohttp

    from shared.stat_proto import decode_stat

    app_port, qp_port = free_port(), free_port()
    admin_port, stats_port, user_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        PORT=str(app_port),
        SERVING_NAMESPACE="default",
        SERVING_SERVICE="hello",
        SERVING_CONFIGURATION="hello",
        SERVING_REVISION="hello-00001",
        SERVING_POD="hello-00001-deployment-demo",
        SERVING_POD_IP="127.0.0.1",
        QUEUE_BIND_HOST="127.0.0.1",
        QUEUE_SERVING_PORT=str(qp_port),
        QUEUE_ADMIN_PORT=str(admin_port),
        QUEUE_METRICS_PORT=str(stats_port),
        USER_METRICS_PORT=str(user_port),
        USER_PORT=str(app_port),
        CONTAINER_CONCURRENCY="10",
        QUEUE_DRAIN_PERIOD_SECONDS="1",
        SERVING_READINESS_PROBE=f'{{"tcpSocket":{{"port":{app_port}}},"periodSeconds":0}}',
    )
    app = subprocess.Popen([sys.executable, str(SAMPLE_APP)], env=env)
    qp = subprocess.Popen([sys.executable, "-m", "queueproxy"], env=env, cwd=ROOT)
    try:
        print(f"sample app on :{app_port}, queue-proxy on :{qp_port} (containerConcurrency=10)")
        await _wait_http(
            f"http://127.0.0.1:{qp_port}/", {"K-Network-Probe": "queue"}, deadline_s=15
        )
        print(f"load: {concurrency} concurrent clients for {seconds:.0f} s ...")
        ok, failed, lat = await _load(f"http://127.0.0.1:{qp_port}/", seconds, concurrency)
        lat.sort()
        p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
        p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0.0
        print(
            f"  {ok} ok, {failed} failed, {ok / seconds:.0f} req/s, "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{stats_port}/metrics"
            async with session.get(url, headers={"Accept": "application/protobuf"}) as resp:
                stat = decode_stat(await resp.read())
            print("autoscaler Stat (protobuf, last 1 s window):")
            for field in (
                "pod_name",
                "average_concurrent_requests",
                "average_proxied_concurrent_requests",
                "request_count",
                "proxied_request_count",
                "process_uptime",
            ):
                print(f"  {field}: {getattr(stat, field)}")
            async with session.get(f"http://127.0.0.1:{user_port}/metrics") as resp:
                text = await resp.text()
            print("user metrics (Prometheus text, excerpt):")
            for line in text.splitlines():
                if line.startswith(_SHOWN_METRICS):
                    print("  " + line)
        qp.send_signal(signal.SIGTERM)
        code = qp.wait(timeout=30)
        print(f"queue-proxy drained and exited with {code}")
        return 0 if failed == 0 and code == 0 else 1
    finally:
        for proc in (qp, app):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_demo(*, seconds: float, concurrency: int) -> int:
    return asyncio.run(_demo(seconds, concurrency))

"""Run one activator process until SIGTERM (or SIGINT) and its drain."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from activator.app import Activator
from activator.config import ActivatorConfig
from activator.statsink import WebSocketStatSink
from shared.cluster_file import load_cluster_file
from shared.seams import InMemoryCluster

__all__ = ["serve"]


async def serve(cfg: ActivatorConfig, cluster_file: Path | None) -> None:
    """Raises: ConfigError for a bad cluster file."""
    cluster = load_cluster_file(cluster_file) if cluster_file is not None else InMemoryCluster()
    sink = WebSocketStatSink(cfg.autoscaler_url, reconnect_max_s=cfg.reconnect_max_s)
    activator = Activator(cfg, cluster, cluster, sink)
    await activator.start()
    loop = asyncio.get_running_loop()
    sigterm = asyncio.Event()

    def on_signal() -> None:
        activator.begin_drain()
        sigterm.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    print(
        f"activator {cfg.pod_name}: serving :{activator.serving_port}, metrics "
        f":{activator.metrics_port}, stats to {cfg.autoscaler_url}",
        file=sys.stderr,
        flush=True,
    )
    await sigterm.wait()
    await activator.drain()
    await activator.stop()

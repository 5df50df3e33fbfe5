"""``python -m activator [--cluster-file PATH | --platform URL]``: the activator, by Knative's env.

Revisions, endpoints and the activators come from ``--platform URL``, the local platform's API
(``knpy serve`` passes its own; shared/seams_http.py), or from ``--cluster-file`` (JSON or YAML,
see activator/cluster_file.py); with neither the activator knows no revision and answers 404.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shared.envconfig import ConfigError

if TYPE_CHECKING:
    from activator.config import ActivatorConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="activator", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--cluster-file", type=Path, help="static revisions and endpoints")
    source.add_argument("--platform", metavar="URL", help="the local platform's API (knpy serve)")
    args = parser.parse_args(argv)

    from activator.config import ActivatorConfig

    try:
        cfg = ActivatorConfig.from_env(os.environ)
    except ConfigError as err:
        print(f"activator: invalid configuration: {err}", file=sys.stderr)
        return 2
    import uvloop

    from activator.serve import serve

    try:
        if args.platform:
            uvloop.run(_serve_platform(cfg, args.platform))
        else:
            uvloop.run(serve(cfg, args.cluster_file))
    except ConfigError as err:
        print(f"activator: invalid configuration: {err}", file=sys.stderr)
        return 2
    return 0


async def _serve_platform(cfg: ActivatorConfig, platform: str) -> None:
    """As activator.serve.serve, with the platform's seams instead of a cluster file."""
    import asyncio
    import signal

    from activator.app import Activator
    from activator.statsink import WebSocketStatSink
    from shared.seams_http import http_cluster

    async with http_cluster(platform) as cluster:
        sink = WebSocketStatSink(cfg.autoscaler_url, reconnect_max_s=cfg.reconnect_max_s)
        activator = Activator(cfg, cluster, cluster, sink)
        await activator.start()
        sigterm = asyncio.Event()

        def on_signal() -> None:
            activator.begin_drain()
            sigterm.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        print(
            f"activator {cfg.pod_name}: serving :{activator.serving_port}, seams from {platform}",
            file=sys.stderr,
            flush=True,
        )
        await sigterm.wait()
        await activator.drain()
        await activator.stop()


if __name__ == "__main__":
    sys.exit(main())

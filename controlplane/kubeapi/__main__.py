"""``python -m controlplane.kubeapi --state-dir DIR [--port N]``: one standalone API server.

Prints the URL and the kubeconfig path (one per line) once it listens, then serves until
SIGINT/SIGTERM; for other components' tests and for benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import uvloop

from controlplane.kubeapi.server import KubeApiServer


async def _run(
    state_dir: Path, host: str, port: int, tls_port: int, bookmark_interval_s: float
) -> None:
    server = KubeApiServer(state_dir, host=host, port=port, tls_port=tls_port,
                           bookmark_interval_s=bookmark_interval_s)
    await server.start()
    print(server.url, flush=True)
    print(server.kubeconfig_path, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.kubeapi", description=__doc__)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="the plain HTTP port (server.url)")
    p.add_argument("--tls-port", type=int, default=0,
                   help="the HTTPS port the kubeconfig names (kubectl sends tokens only there)")
    p.add_argument("--bookmark-interval", type=float, default=60.0,
                   help="seconds between watch bookmarks")
    args = p.parse_args(argv)
    # uvloop, as knpy serve runs the server.
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(
        loop_factory=uvloop.new_event_loop
    ) as runner:
        runner.run(
            _run(args.state_dir, args.host, args.port, args.tls_port, args.bookmark_interval)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

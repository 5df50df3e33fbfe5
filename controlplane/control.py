"""The control process of ``knpy serve``: the Kubernetes API server, Knative's webhook and
Knative's controllers, on an event loop (and a CPU) of their own.

Theory of operation. In a cluster kube-apiserver, Knative's webhook and controller are pods of
their own, and nothing they do can delay a request at the ingress. ``knpy serve`` once ran them
on the ingress's event loop, and an 858 KB YAML apply stopped all ingress traffic for 14 s
(issue 10): parsing, admission, storing, watch fan-out and reconciling are CPU work, and a
worker thread would not have helped for long, since it holds the GIL in 5-ms slices whenever
the ingress wants to run. So they run here, in a child process, and the ``knpy serve`` process
keeps only the ingress and the kubelet (whose pods are its children, tied to its life). The
two talk through the API over loopback HTTP, as they always did.

The parent drives it through a pipe pair, one line at a time:

```
child  -> parent   {"url": ..., "kubeconfig": ..., "token": ...}   the API listens
parent -> child    controllers                                      start the controllers
child  -> parent   started                                          (their informers synced)
parent -> child    (end of input)                                   stop: controllers, then API
```

The end of input comes from ``ControlProcess.stop``, or from the kernel when ``knpy serve``
dies, and the child also has a parent-death SIGTERM: either way it stops on its own, and its
objects are in the state dir's SQLite store for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

__all__ = ["ControlEndpoint", "ControlProcess"]

_log = logging.getLogger("knpy.control")

# The API server listens ~0.5-1 s after the process starts (Python, aiohttp, the webhook, the
# SQLite store); a loaded CI machine can take several times that.
START_S: Final = 60.0
# Stopping the controllers and the API server takes well under a second.
STOP_S: Final = 10.0
QUEUE_COMMAND: Final = ("python", "-m", "queueproxy")
_START_CONTROLLERS: Final = b"controllers\n"
_STARTED: Final = b"started\n"
# knpy serve --rabbitmq's URL, handed to the control process in its environment.
RABBITMQ_URL_ENV: Final = "KNPY_RABBITMQ_URL"


@dataclass(frozen=True, slots=True)
class ControlEndpoint:
    """Where the API server of the control process listens, and its credentials."""

    url: str  # plain HTTP, for knpy's own clients
    kubeconfig: Path  # names the HTTPS listener (kubectl sends a token only over TLS)
    token: str


class ControlProcess:
    """The parent's handle: ``spawn``, ``ready`` (API up), ``start_controllers``, ``wait``,
    ``stop``. Between ``spawn`` and ``ready`` the parent can do its own start-up work (its
    imports take about as long as the child's), on the other CPU."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._endpoint: ControlEndpoint | None = None

    def __repr__(self) -> str:
        api = self._endpoint.url if self._endpoint else "starting"
        return f"<ControlProcess pid={self.proc.pid} api={api}>"

    @property
    def endpoint(self) -> ControlEndpoint:
        assert self._endpoint is not None, "ready() first"
        return self._endpoint

    @classmethod
    async def spawn(
        cls,
        state_dir: Path,
        *,
        host: str,
        port: int,
        drain_period_s: float,
        python: str,
        env: Mapping[str, str],
        ingress_port: int = 80,
        queue_image: str | None = None,
        rabbitmq_url: str = "",
    ) -> ControlProcess:
        """Start the process (``ready`` waits for its API server). ``queue_image``: the
        queue-proxy sidecar runs from this image's entrypoint (``knpy serve --images``).
        ``rabbitmq_url`` (``knpy serve --rabbitmq``) goes in its environment, not its command
        line, which ``ps`` shows to everyone."""
        from .pods import tied_to_parent

        argv = [
            python, "-m", "controlplane.control", "--state-dir", str(state_dir),
            "--host", host, "--port", str(port), "--drain-period", f"{drain_period_s:g}",
            "--ingress-port", str(ingress_port),
        ]  # fmt: skip
        if queue_image is not None:
            argv += ["--queue-image", queue_image]
        if rabbitmq_url:
            env = {**env, RABBITMQ_URL_ENV: rabbitmq_url}
        spawn = tied_to_parent(argv, env)
        proc = await asyncio.create_subprocess_exec(
            *spawn.argv,
            env=dict(env),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Ctrl-C reaches knpy serve only, which drains the pods before it stops this.
            start_new_session=True,
            preexec_fn=spawn.preexec_fn,
        )
        return cls(proc)

    async def ready(self) -> ControlEndpoint:
        """Wait until the API server listens; where it does.

        Raises:
            OSError: the process exited first (a port in use: its own message is in the log)
                or did not listen within START_S.
        """
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), START_S)
        except TimeoutError:
            line = b""
        if not line:
            await _end(self.proc)
            raise OSError(
                f"the API server did not start (control process exit code {self.proc.returncode})"
            )
        doc = json.loads(line)
        self._endpoint = ControlEndpoint(
            str(doc["url"]), Path(doc["kubeconfig"]), str(doc["token"])
        )
        return self._endpoint

    async def start_controllers(self) -> None:
        """Start Knative's controllers; returns once their informers have synced.

        Raises:
            OSError: the process is gone.
        """
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(_START_CONTROLLERS)
        await self.proc.stdin.drain()
        if await self.proc.stdout.readline() != _STARTED:
            raise OSError(f"the controllers did not start (exit code {await self.proc.wait()})")

    async def wait(self) -> int:
        """Until the process exits; its exit code."""
        return await self.proc.wait()

    async def stop(self) -> None:
        """Stop the controllers and then the API server; always reaps the process."""
        await _end(self.proc)


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), STOP_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# -- the child ----------------------------------------------------------------------------------
async def _run(args: argparse.Namespace) -> int:
    from controlplane import discovery
    from controlplane.kubeapi.server import KubeApiServer
    from controlplane.webhook import admission_hooks

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = KubeApiServer(
        args.state_dir, host=args.host, port=args.port, admission=admission_hooks()
    )
    try:
        await server.start()
    except OSError as err:
        print(f"knpy serve: cannot start the API server: {err}", file=sys.stderr, flush=True)
        await server.stop()
        return 1
    discovery.install(server)  # Prometheus: <state>/prometheus.yml, /knpy/v1/targets
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), sys.stdin.buffer
    )
    # The controllers' modules (kubernetes-asyncio is most of it: ~1 s of CPU) load while knpy
    # serve bootstraps through the API, rather than after it asks for the controllers.
    preload = loop.run_in_executor(None, _import_controllers)
    out = sys.stdout.buffer
    ready = {"url": server.url, "kubeconfig": str(server.kubeconfig_path), "token": server.token}
    out.write(json.dumps(ready).encode() + b"\n")
    out.flush()
    api: Any = None
    controllers: Any = None
    reading = loop.create_task(_commands(commands))
    stopping = loop.create_task(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait({reading, stopping}, return_when="FIRST_COMPLETED")
            if stopping in done or reading.result() != _START_CONTROLLERS:
                break
            if controllers is None:
                await preload
                from controlplane.controllers.config import DEFAULT_QUEUE_IMAGE, ControllerConfig
                from controlplane.controllers.controllers import Controllers
                from shared.kube.config import load_api_client
                from shared.kube.kubeclient import ApiKubeClient
                from shared.kube.kubeinformer import KubeInformerFactory

                api = await load_api_client({}, str(server.kubeconfig_path))
                controllers = Controllers(
                    KubeInformerFactory(api),
                    ApiKubeClient(api),
                    ControllerConfig(
                        ingress_port=args.ingress_port,  # eventing's URLs dialable from here
                        rabbitmq_url=args.rabbitmq_url,
                        queue_sidecar_command=() if args.queue_image else QUEUE_COMMAND,
                        queue_sidecar_image=args.queue_image or DEFAULT_QUEUE_IMAGE,
                        queue_env=MappingProxyType(
                            {"QUEUE_DRAIN_PERIOD_SECONDS": f"{args.drain_period:g}"}
                        ),
                    ),
                )
                await controllers.start()
                out.write(_STARTED)
                out.flush()
            reading = loop.create_task(_commands(commands))
    finally:
        reading.cancel()
        stopping.cancel()
        if controllers is not None:
            await controllers.stop()
        if api is not None:
            await api.close()
        await server.stop()
    return 0


_CONTROLLER_MODULES: Final = (
    "shared.kube.config",
    "shared.kube.kubeclient",
    "shared.kube.kubeinformer",
    "controlplane.controllers.config",
    "controlplane.controllers.controllers",
)


def _import_controllers() -> None:
    for name in _CONTROLLER_MODULES:
        importlib.import_module(name)


async def _commands(reader: asyncio.StreamReader) -> bytes:
    """The next command line; b"" at the end of input (the parent is done or gone)."""
    return await reader.readline()


def main(argv: list[str] | None = None) -> int:
    import uvloop

    p = argparse.ArgumentParser(prog="python -m controlplane.control", description=__doc__)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ingress-port", type=int, default=80, help="eventing's URLs use it")
    p.add_argument("--drain-period", type=float, default=2.0, help="the queue-proxies' seconds")
    p.add_argument("--queue-image", default=None, help="run the queue-proxy from this image")
    args = p.parse_args(argv)
    args.rabbitmq_url = os.environ.get(RABBITMQ_URL_ENV, "")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return uvloop.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())

"""``knpy serve --workers N``: the ingress on N processes, all on one SO_REUSEPORT port.

Why: one Python process serves from one core; an ingress given more should use them. Design:
routing is stateless (a host, a weighted draw, round robin over the public Endpoints), so each
of the N-1 extra workers is a whole ingress of its own (``python -m
controlplane.ingress_workers``): its own informers on the platform's API (Routes, public and
private Endpoints, ``config-kourier``, ``config-observability``), its own ``RoutingTable``,
``Ingress`` and upstream connections, and it listens on the ingress port with SO_REUSEPORT
beside ``knpy serve``'s own ingress, so the kernel spreads the client connections with no hop
between processes. Nothing is shared, so there is no limit to keep exact across them: the
capacity limits are downstream (the activator's throttler, the queue-proxies' breakers).
``config-kourier``'s ``max-connections`` applies per worker (as Envoy's per listener).

Left out: cold-start figures (``knpy get revisions``) are those of ``knpy serve``'s own
ingress; a worker's cold starts are not recorded. A worker starts serving only after its
informers' first lists, and ``knpy serve`` stops the workers (SIGTERM: close the listener,
finish what is in flight for up to 10 s) before its own ingress.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from controlplane.ingress import Ingress, RoutingTable

# In-flight requests get this long to finish once a worker is asked to stop.
DRAIN_S = 10.0


async def spawn(
    workers: int, python: str, kubeconfig: str, host: str, port: int, env: dict[str, str]
) -> list[asyncio.subprocess.Process]:
    """Start ``workers`` extra ingress processes; each prints ``ready`` once it serves."""
    from controlplane.pods import tied_to_parent

    argv = [python, "-m", "controlplane.ingress_workers", "--kubeconfig", kubeconfig,
            "--host", host, "--port", str(port)]  # fmt: skip
    procs = []
    for _ in range(workers):
        # Tied to knpy serve: a SIGKILLed serve must not leave workers serving its port (the
        # watchdog's mark is the second net, for what the parent-death signal cannot reach).
        spawn = tied_to_parent(argv, env)
        proc = await asyncio.create_subprocess_exec(
            *spawn.argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=spawn.preexec_fn,
        )
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"ingress worker {proc.pid} exited before serving")
    return procs


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM each worker; SIGKILL the ones still there after DRAIN_S and a margin."""
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), DRAIN_S + 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run(kubeconfig: str, host: str, port: int) -> None:
    """One worker: follow the API, serve the port until SIGTERM, drain, stop."""
    from shared.kube.config import load_api_client
    from shared.kube.kubeinformer import KubeInformerFactory
    from shared.proxy.server import ProxyServer

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    api = await load_api_client({}, kubeconfig)
    factory = KubeInformerFactory(api)
    table = RoutingTable()
    table.follow(factory)
    await factory.start()
    try:
        await table.synced()
        ingress = Ingress(loop=loop, table=table)
        proxy = ProxyServer(ingress, initial_tag=None, limits=ingress.limits)
        proxy.start(loop)
        server = await loop.create_server(
            proxy, host, port, backlog=4096, reuse_address=True, reuse_port=True
        )
        print("ready", flush=True)
        await stopping.wait()
        server.close()
        await proxy.drain(DRAIN_S)
        ingress.close()
    finally:
        await factory.stop()
        await api.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    import uvloop

    uvloop.run(run(args.kubeconfig, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

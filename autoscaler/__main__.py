"""``python -m autoscaler [--kubeconfig PATH]``: Knative's autoscaler, against the Kubernetes API.

In a pod (``KUBERNETES_SERVICE_HOST`` set) it uses the service account; otherwise
``--kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config`` (shared/kube/config.py). ``knpy serve``
starts it with the kubeconfig it writes for its own API.

Environment (nothing below this module reads it):
    POD_NAME, POD_IP         required: the lease identity is POD_NAME_POD_IP, and POD_IP is
                             published in the bucket EndpointSlice for stat forwarding
    SYSTEM_NAMESPACE         where the ConfigMaps, Leases and bucket objects live
                             (default knative-serving)
    CLUSTER_DOMAIN           default cluster.local
    AUTOSCALER_STAT_PORT     the activators' stat WebSocket (default 8080; 0 = any free port)
    AUTOSCALER_METRICS_PORT  Prometheus metrics at /metrics (default 9090)
    AUTOSCALER_BIND_HOST     address to bind both (default 0.0.0.0)
    AUTOSCALER_MAX_SCRAPES_IN_FLIGHT   pod scrapes at once (default 100)
    AUTOSCALER_LOG_LEVEL     DEBUG, INFO (default), WARNING, ERROR

Configuration comes from the cluster, as Knative's: the ``config-autoscaler`` ConfigMap
(followed) and ``config-leader-election`` (read at start) in SYSTEM_NAMESPACE.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping

from shared.envconfig import ConfigError


async def _run(env: Mapping[str, str], kubeconfig: str | None) -> int:
    from autoscaler.app import Autoscaler, ProcessConfig
    from shared.kube.config import KubeConfigError, load_api_client
    from shared.kube.kubeclient import ApiKubeClient
    from shared.kube.kubeinformer import KubeInformerFactory

    try:
        cfg = ProcessConfig.from_env(env)
        api = await load_api_client(env, kubeconfig)
    except (ConfigError, KubeConfigError) as err:
        print(f"autoscaler: invalid configuration: {err}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Autoscaler(cfg, ApiKubeClient(api), KubeInformerFactory(api)):
            await stop.wait()
    finally:
        await api.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoscaler", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="kubeconfig file (out of cluster)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    logging.basicConfig(
        level=env.get("AUTOSCALER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import uvloop

    return uvloop.run(_run(env, args.kubeconfig))


if __name__ == "__main__":
    sys.exit(main())

"""Run one activator process against the Kubernetes API until SIGTERM (or SIGINT) and its drain.

Knative's cmd/activator/main.go order: read ``config-network`` once (its absence is fatal),
start the informers and wait for their first lists, then serve; on SIGTERM fail the kubelet
probe, keep serving through the drain, stop.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

from activator.app import Activator
from activator.config import ActivatorConfig
from activator.configmaps import NETWORK_CONFIGMAP, data_of, network_warnings
from activator.statsink import StatSink, WebSocketStatSink
from shared.envconfig import ConfigError
from shared.kube.client import ApiError, KubeClient
from shared.kube.informer import InformerFactory
from shared.kube.resources import CONFIGMAPS, Obj

if TYPE_CHECKING:
    from shared.kube.fake import FakeCluster

__all__ = ["StartupError", "fetch_network_config", "load_cluster_file", "run", "serve"]

# Knative polls the API this long at start ("we sometimes start faster than we can reach
# kube-api") before giving up.
API_WAIT_S = 60.0
_API_RETRY_S = 1.0


class StartupError(Exception):
    """The activator cannot start (config-network missing, the API unreachable)."""


async def fetch_network_config(
    client: KubeClient, namespace: str, wait_s: float = API_WAIT_S
) -> Obj:
    """GET config-network, retrying while the API is unreachable.

    Raises:
        StartupError: it does not exist, or the API did not answer within ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            obj = await client.get(CONFIGMAPS, namespace, NETWORK_CONFIGMAP)
        except (ApiError, OSError, aiohttp.ClientError) as err:
            if time.monotonic() >= deadline:
                raise StartupError(f"failed to fetch network config: {err}") from err
            await asyncio.sleep(_API_RETRY_S)
            continue
        if obj is None:
            raise StartupError(
                f'failed to fetch network config: configmaps "{NETWORK_CONFIGMAP}" not found '
                f"in namespace {namespace}"
            )
        return obj


async def run(
    cfg: ActivatorConfig,
    client: KubeClient,
    informers: InformerFactory,
    *,
    stat_sink: StatSink | None = None,
    stop: asyncio.Event | None = None,
    on_serving: Callable[[Activator], None] | None = None,
) -> Activator:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then drain and stop.

    ``on_serving`` sees the activator once it listens and follows the informers (for tests).

    Raises:
        StartupError: see fetch_network_config.
    """
    network = await fetch_network_config(client, cfg.system_namespace)
    for warning in network_warnings(data_of(network)):
        print(f"activator: {NETWORK_CONFIGMAP}: {warning}", file=sys.stderr, flush=True)
    sink = stat_sink or WebSocketStatSink(cfg.autoscaler_url, reconnect_max_s=cfg.reconnect_max_s)
    activator = Activator(cfg, informers, sink)
    await informers.start()
    try:
        for informer in (
            activator.table.revisions,
            activator.table.private,
            activator.table.public,
            activator.configmaps.informer,
        ):
            await informer.wait_synced()
        await activator.start()
        if on_serving is not None:
            on_serving(activator)
        sigterm = stop or asyncio.Event()

        def on_signal() -> None:
            activator.begin_drain()
            sigterm.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        print(
            f"activator {cfg.pod_name}: serving :{activator.serving_port} as "
            f"{activator.table.own_address}, metrics :{activator.metrics_port}, "
            f"stats to {cfg.autoscaler_url}",
            file=sys.stderr,
            flush=True,
        )
        await sigterm.wait()
        activator.begin_drain()
        await activator.drain()
        await activator.stop()
    finally:
        await informers.stop()
    return activator


async def serve(cfg: ActivatorConfig, env: Mapping[str, str], kubeconfig: str | None) -> None:
    """``run`` against the Kubernetes API: in cluster, or by kubeconfig (shared/kube/config.py).

    Raises:
        StartupError, KubeConfigError.
    """
    from shared.kube.config import load_api_client
    from shared.kube.kubeclient import ApiKubeClient
    from shared.kube.kubeinformer import KubeInformerFactory

    api = await load_api_client(env, kubeconfig)
    try:
        await run(cfg, ApiKubeClient(api), KubeInformerFactory(api))
    finally:
        await api.close()


def load_cluster_file(path: Path) -> FakeCluster:
    """A static informer source: the Kubernetes objects in ``path`` in an in-memory cluster.

    The file holds what the API would: Revisions, Endpoints (private and public, with
    Knative's labels) and the ConfigMaps in the system namespace (config-network among
    them), as YAML documents, a JSON array, or a ``List`` object with ``items``. Nothing
    changes them afterwards; for benchmarks and hand runs without an API server.

    Raises:
        ConfigError: unreadable file, or an object of an unknown kind (named by its index).
    """
    from shared.kube.fake import FakeCluster, resource_for

    try:
        text = path.read_text()
        docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(str(path), f"cannot read the cluster file: {err}") from err
    items: list[Any] = []
    for doc in docs:
        if isinstance(doc, list):
            items.extend(doc)
        elif isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List"):
            items.extend(doc.get("items") or [])
        elif doc is not None:
            items.append(doc)
    cluster = FakeCluster()
    for i, obj in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ConfigError(where, "must be a Kubernetes object with metadata")
        try:
            resource = resource_for(str(obj.get("apiVersion")), str(obj.get("kind")))
        except KeyError:
            raise ConfigError(
                where, f"unknown apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')}"
            ) from None
        cluster.put(obj, resource)
    return cluster


async def serve_static(cfg: ActivatorConfig, path: Path) -> None:
    """``run`` over the objects of a cluster file (load_cluster_file).

    Raises:
        ConfigError, StartupError.
    """
    cluster = load_cluster_file(path)
    await run(cfg, cluster, cluster)

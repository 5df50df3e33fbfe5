"""``python -m autoscaler [--cluster-file PATH | --platform URL]``: Knative's autoscaler.

Environment (nothing below this module reads it):
    AUTOSCALER_STAT_PORT     the activators' stat WebSocket (default 8080)
    AUTOSCALER_METRICS_PORT  Prometheus metrics at /metrics (default 9090)
    AUTOSCALER_BIND_HOST     address to bind both (default 0.0.0.0)
    AUTOSCALER_CONFIG_FILE   the config-autoscaler ConfigMap as a YAML or JSON file: a whole
                             ConfigMap manifest (its ``data`` is used) or the bare key/value
                             mapping, e.g. ``stable-window: 6s``
    AUTOSCALER_CONFIG        the same, inline (YAML or JSON text); not both
    AUTOSCALER_MAX_SCRAPES_IN_FLIGHT   pod scrapes at once (default 100)
    AUTOSCALER_LOG_LEVEL     DEBUG, INFO (default), WARNING, ERROR

With ``--platform URL`` revisions and pods come from the local platform's API (``knpy serve``
passes its own) and decisions go back to it (shared/seams_http.py). Otherwise they come from
``--cluster-file``: the activator's cluster file (activator/cluster_file.py), in which the
autoscaler also reads, per revision, ``annotations`` (the autoscaling.knative.dev/* ones),
``service`` and ``configuration``, and per endpoint ``metricsPort`` (the queue-proxy's stats
port, default 9090) and ``startedAt`` (Unix seconds, default 0: "old"). Decisions go to the
log (the in-memory platform keeps them). Without the file no revision is known.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from shared.envconfig import ConfigError


def load_configmap(env: dict[str, str]) -> dict[str, str]:
    """The config-autoscaler data named by AUTOSCALER_CONFIG_FILE or AUTOSCALER_CONFIG.

    Raises:
        ConfigError: both set, the file unreadable, or not a mapping.
    """
    from autoscaler.service import parse_configmap

    path, inline = env.get("AUTOSCALER_CONFIG_FILE"), env.get("AUTOSCALER_CONFIG")
    if path and inline:
        raise ConfigError("AUTOSCALER_CONFIG", "set either it or AUTOSCALER_CONFIG_FILE, not both")
    if path:
        try:
            return parse_configmap(Path(path).read_text())
        except OSError as err:
            raise ConfigError("AUTOSCALER_CONFIG_FILE", f"cannot read {path}: {err}") from err
    return parse_configmap(inline or "")


def load_cluster(path: Path) -> Any:
    """The activator's cluster file, plus the keys only the autoscaler reads.

    Raises:
        ConfigError: as shared.cluster_file.load_cluster_file, or a bad extra key.
    """
    from shared.cluster_file import load_cluster_file

    cluster = load_cluster_file(path)
    doc = yaml.safe_load(path.read_text())  # JSON is YAML; already checked to be a mapping
    for i, rev in enumerate(doc.get("revisions") or []):
        where = f"revisions[{i}]"
        spec = cluster.get(_key(rev))
        assert spec is not None
        annotations = rev.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ConfigError(f"{where}.annotations", "must be a mapping")
        cluster.put_revision(
            replace(
                spec,
                annotations=MappingProxyType({str(k): str(v) for k, v in annotations.items()}),
                service=str(rev.get("service", "")),
                configuration=str(rev.get("configuration", "")),
            )
        )
        endpoints = cluster.endpoints(spec.key)
        extra = rev.get("endpoints") or []
        try:
            cluster.set_endpoints(
                spec.key,
                tuple(
                    replace(
                        ep,
                        metrics_port=int(raw.get("metricsPort", 9090)),
                        started_at=float(raw.get("startedAt", 0.0)),
                    )
                    for ep, raw in zip(endpoints, extra, strict=True)
                ),
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}.endpoints", f"metricsPort or startedAt: {err}") from err
    return cluster


def _key(rev: dict[str, Any]) -> Any:
    from shared.seams import RevisionKey

    return RevisionKey(str(rev.get("namespace", "default")), str(rev.get("name", "")))


async def _serve(service_cfg: Any, cluster: Any, platform: str | None = None) -> None:
    import asyncio
    import signal

    from autoscaler.service import AutoscalerService

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if platform is not None:
        from shared.seams_http import http_cluster

        async with (
            http_cluster(platform) as remote,
            AutoscalerService(service_cfg, remote, remote, remote),
        ):
            await stop.wait()
        return
    async with AutoscalerService(service_cfg, cluster, cluster, cluster):
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoscaler", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--cluster-file", type=Path, help="static revisions and endpoints")
    source.add_argument("--platform", metavar="URL", help="the local platform's API (knpy serve)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    logging.basicConfig(
        level=env.get("AUTOSCALER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from autoscaler.service import ServiceConfig
    from shared.seams import InMemoryCluster

    try:
        cfg = ServiceConfig.from_env(env, load_configmap(env))
        cluster = load_cluster(args.cluster_file) if args.cluster_file else InMemoryCluster()
    except ConfigError as err:
        print(f"autoscaler: invalid configuration: {err}", file=sys.stderr)
        return 2
    import uvloop

    uvloop.run(_serve(cfg, cluster, args.platform))
    return 0


if __name__ == "__main__":
    sys.exit(main())

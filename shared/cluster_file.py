"""A static cluster description for ``--cluster-file`` (activator, autoscaler).

A hand-run activator or autoscaler, without the local platform's API (``--platform``), reads
revisions and endpoints from a JSON or YAML file into the in-memory seams. The keys are
Knative's where it has them::

    activators: ["127.0.0.1:8012"]        # optional; the split's activator addresses
    revisions:
      - namespace: default
        name: hello-00001
        containerConcurrency: 1           # 0 = unlimited (default)
        timeoutSeconds: 300               # spec.timeoutSeconds (default 300)
        responseStartTimeoutSeconds: 0    # optional
        idleTimeoutSeconds: 0             # optional
        endpoints:                        # the pods' queue-proxies
          - {pod: hello-00001-a, host: 127.0.0.1, port: 8013, ready: true}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from shared.envconfig import ConfigError
from shared.seams import Endpoint, InMemoryCluster, RevisionKey, RevisionSpec

__all__ = ["load_cluster_file"]

_PORT_MAX = 65535


def _field(obj: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = obj.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise ConfigError(f"{where}.{key}", f"must be a {kind.__name__}, got {value!r}")
    return value


def _at_least(
    obj: dict[str, Any], key: str, kind: type, default: Any, minimum: float, where: str
) -> Any:
    value = _field(obj, key, kind, default, where)
    if value < minimum:
        raise ConfigError(f"{where}.{key}", f"must be >= {minimum:g}, got {value!r}")
    return value


def load_cluster_file(path: Path) -> InMemoryCluster:
    """Read ``path`` (JSON if it ends in .json, else YAML) into an InMemoryCluster.

    Raises:
        ConfigError: unreadable file, or a field of the wrong type, named by its path.
    """
    try:
        text = path.read_text()
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(str(path), f"cannot read the cluster file: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(str(path), "must be a mapping with a 'revisions' list")
    cluster = InMemoryCluster()
    activators = doc.get("activators", [])
    if not isinstance(activators, list) or not all(isinstance(a, str) for a in activators):
        raise ConfigError("activators", "must be a list of host:port strings")
    revisions = doc.get("revisions", [])
    if not isinstance(revisions, list):
        raise ConfigError("revisions", "must be a list")
    seen: set[RevisionKey] = set()
    for i, rev in enumerate(revisions):
        where = f"revisions[{i}]"
        if not isinstance(rev, dict):
            raise ConfigError(where, "must be a mapping")
        key = RevisionKey(
            _field(rev, "namespace", str, "default", where), _field(rev, "name", str, "", where)
        )
        if not key.name:
            raise ConfigError(f"{where}.name", "required")
        if key in seen:
            # A second entry would silently replace the first: a hand-written file's mistake.
            raise ConfigError(f"{where}.name", f"duplicate revision {key}")
        seen.add(key)
        cc = _at_least(rev, "containerConcurrency", int, 0, 0, where)
        cluster.put_revision(
            RevisionSpec(
                key,
                container_concurrency=cc,
                # 0 would put every request's deadline at its arrival: refuse it here.
                timeout_s=_at_least(rev, "timeoutSeconds", float, 300.0, 1e-3, where),
                response_start_timeout_s=_at_least(
                    rev, "responseStartTimeoutSeconds", float, 0.0, 0, where
                ),
                idle_timeout_s=_at_least(rev, "idleTimeoutSeconds", float, 0.0, 0, where),
            )
        )
        raw_endpoints = rev.get("endpoints") or []
        if not isinstance(raw_endpoints, list):
            raise ConfigError(f"{where}.endpoints", "must be a list")
        endpoints = []
        for j, ep in enumerate(raw_endpoints):
            ewhere = f"{where}.endpoints[{j}]"
            if not isinstance(ep, dict):
                raise ConfigError(ewhere, "must be a mapping")
            port = _field(ep, "port", int, 8012, ewhere)
            if not 1 <= port <= _PORT_MAX:
                raise ConfigError(f"{ewhere}.port", f"must be in [1, {_PORT_MAX}], got {port}")
            endpoints.append(
                Endpoint(
                    pod_name=_field(ep, "pod", str, f"{key.name}-{j}", ewhere),
                    host=_field(ep, "host", str, "127.0.0.1", ewhere),
                    port=port,
                    ready=_field(ep, "ready", bool, True, ewhere),
                )
            )
        cluster.set_endpoints(key, tuple(endpoints))
    cluster.set_activators(tuple(activators))
    return cluster

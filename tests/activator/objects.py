"""Knative's objects as the API server holds them, built for the activator's tests.

The shapes are those Knative's controllers write: a Revision with its labels and spec, the
revision's private Endpoints (copied by Kubernetes from the ``<rev>-private`` Service, so
they carry its labels) and public Endpoints (written by the SKS controller), ConfigMaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.kube.resources import (
    REVISION_LABEL,
    REVISION_UID_LABEL,
    SERVICE_TYPE_LABEL,
    SERVICE_TYPE_PRIVATE,
    SERVICE_TYPE_PUBLIC,
    SKS_LABEL,
    Obj,
)

SYSTEM_NAMESPACE = "knative-serving"
UID = "6b2c1a9e-0000-4000-8000-000000000001"


def revision(
    namespace: str,
    name: str,
    *,
    cc: int | None = 0,
    timeout_s: int | None = 300,
    extra_spec: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Obj:
    spec: dict[str, Any] = {"containers": [{"image": "hello", "ports": [{"containerPort": 8080}]}]}
    if cc is not None:
        spec["containerConcurrency"] = cc
    if timeout_s is not None:
        spec["timeoutSeconds"] = timeout_s
    spec.update(extra_spec or {})
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {
                "serving.knative.dev/configuration": name.rsplit("-", 1)[0],
                "serving.knative.dev/service": name.rsplit("-", 1)[0],
            },
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
    }


def address(ip: str, pod: str | None = None) -> Obj:
    addr: Obj = {"ip": ip}
    if pod is not None:
        addr["targetRef"] = {"kind": "Pod", "namespace": "default", "name": pod}
    return addr


def subset(
    ports: Mapping[str, int],
    ready: Iterable[Obj] = (),
    not_ready: Iterable[Obj] = (),
) -> Obj:
    out: Obj = {"ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports.items()]}
    if ready := list(ready):
        out["addresses"] = ready
    if not_ready := list(not_ready):
        out["notReadyAddresses"] = not_ready
    return out


def private_endpoints(namespace: str, rev: str, subsets: Iterable[Obj]) -> Obj:
    """``<rev>-private`` Endpoints with the private Service's labels."""
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "namespace": namespace,
            "name": f"{rev}-private",
            "labels": {
                REVISION_LABEL: rev,
                REVISION_UID_LABEL: UID,
                SKS_LABEL: rev,
                SERVICE_TYPE_LABEL: SERVICE_TYPE_PRIVATE,
            },
        },
        "subsets": list(subsets),
    }


def public_endpoints(namespace: str, rev: str, activators: Iterable[str]) -> Obj:
    """``<rev>`` public Endpoints in Proxy mode: the activators, each "ip:port" under the
    port named ``http`` (one subset per port number, as the API server groups them)."""
    by_port: dict[int, list[Obj]] = {}
    for a in activators:
        ip, _, port = a.rpartition(":")
        by_port.setdefault(int(port), []).append({"ip": ip})
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "namespace": namespace,
            "name": rev,
            "labels": {
                REVISION_LABEL: rev,
                SKS_LABEL: rev,
                SERVICE_TYPE_LABEL: SERVICE_TYPE_PUBLIC,
            },
        },
        "subsets": [
            {"addresses": addrs, "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
            for port, addrs in sorted(by_port.items())
        ],
    }


def configmap(name: str, data: Mapping[str, str], namespace: str = SYSTEM_NAMESPACE) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"namespace": namespace, "name": name},
        "data": dict(data),
    }

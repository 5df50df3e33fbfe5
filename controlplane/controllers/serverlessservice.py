"""Knative's ServerlessService reconciler: a revision's private and public Services and the
public Endpoints that point either at its pods or at the activators.

pkg/reconciler/serverlessservice (serverlessservice.go, resources/services.go):

- The private Service ``<sks>-private`` selects the pods of the scale target (the Deployment's
  ``spec.selector.matchLabels``); Kubernetes' endpoints controller fills its Endpoints. Its
  ports are Knative's: ``http`` (``http2`` for h2c) 80, ``http-autometric`` 9090,
  ``http-usermetric`` 9091, ``http-istio`` (``http2-istio``) 8012/8013. Knative's serving target
  ports are numbers (8012/8013); here they name the queue-proxy's ``queue-port`` instead, which
  is the same port in a cluster and lets the local pods, each on its own ports, be resolved
  pod by pod. No ``https`` port: knpy's queue-proxy serves no TLS.
- The public Service ``<sks>`` has no selector; the reconciler writes its Endpoints:
  **Serve** copies the private Endpoints, **Proxy** takes ``numActivators`` of the
  ``knative-serving/activator-service`` Endpoints, chosen by knative/pkg's consistent
  ``ChooseSubset(addresses, n, sks name)``. Proxy is forced while the private Endpoints have no
  ready address, Serve while the activator has none. Only the serving ports (named ``http``, or
  ``http2`` for h2c, and ``https``) are kept: Knative filters by number (8012/8013/8112), by name
  here because local ports differ per pod.
- Status: ``serviceName``, ``privateServiceName``; EndpointsPopulated True once the private
  Endpoints have a ready address (else Unknown ``NoHealthyBackends``), Ready = EndpointsPopulated;
  ActivatorEndpointsPopulated True while the activator is in the path (no ready pod, or Proxy
  mode), False otherwise; its transition time tells the autoscaler how long the activator has
  been in the path before it scales to zero.

Locally every pod and activator is 127.0.0.1 on its own ports, so ChooseSubset picks among
``ip:port`` strings of the ``http`` port; in a cluster the ports are equal and the choice is
Knative's (by IP).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from shared.kube.client import KubeClient
from shared.kube.resources import (
    ACTIVATOR_SERVICE,
    DEPLOYMENTS,
    ENDPOINTS,
    REVISION_LABEL,
    SERVERLESSSERVICES,
    SERVICE_TYPE_LABEL,
    SERVICE_TYPE_PRIVATE,
    SERVICE_TYPE_PUBLIC,
    SERVICES,
    SKS_LABEL,
    SYSTEM_NAMESPACE,
    Obj,
    annotations_of,
    key_of,
    labels_of,
    meta,
)

from .base import Cache, Watch, create_or_adopt, owner_keys, replace, update_status
from .config import ControllerConfig
from .deployment import (
    AUTOSCALING_METRICS_PORT,
    AUTOSCALING_METRICS_PORT_NAME,
    QUEUE_HTTP2_PORT,
    QUEUE_HTTP_PORT,
    QUEUE_PORT_NAME,
    USER_METRICS_PORT,
    USER_METRICS_PORT_NAME,
)
from .meta import Conditions, Key, child_name, is_controlled_by, owner_reference, rfc3339

__all__ = [
    "ServerlessServiceReconciler",
    "make_private_service",
    "make_public_endpoints",
    "make_public_service",
    "private_service_name",
    "public_subsets",
    "ready_address_count",
    "sks_status",
]


def private_service_name(sks_name: str) -> str:
    return child_name(sks_name, "-private")


def _port_name(protocol: str) -> str:
    return "http2" if protocol == "h2c" else "http"


def _service_meta(sks: Obj, name: str, service_type: str) -> Obj:
    out: Obj = {
        "name": name,
        "namespace": meta(sks).get("namespace", ""),
        "labels": {
            **labels_of(sks),
            SKS_LABEL: meta(sks)["name"],
            SERVICE_TYPE_LABEL: service_type,
        },
        "ownerReferences": [owner_reference(sks, SERVERLESSSERVICES)],
    }
    if annotations_of(sks):
        out["annotations"] = dict(annotations_of(sks))
    return out


def _protocol(sks: Obj) -> str:
    return str((sks.get("spec") or {}).get("protocolType") or "http1")


def make_private_service(sks: Obj, selector: dict[str, str]) -> Obj:
    """Knative's MakePrivateService, with the serving target port named (module docstring)."""
    protocol = _protocol(sks)
    name = _port_name(protocol)
    serving: Obj = {"name": name, "protocol": "TCP", "port": 80, "targetPort": QUEUE_PORT_NAME}
    if protocol == "h2c":
        serving["appProtocol"] = "kubernetes.io/h2c"
    backend = QUEUE_HTTP2_PORT if protocol == "h2c" else QUEUE_HTTP_PORT
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _service_meta(
            sks, private_service_name(meta(sks)["name"]), SERVICE_TYPE_PRIVATE
        ),
        "spec": {
            "ports": [
                serving,
                {
                    "name": AUTOSCALING_METRICS_PORT_NAME,
                    "protocol": "TCP",
                    "port": AUTOSCALING_METRICS_PORT,
                    "targetPort": AUTOSCALING_METRICS_PORT_NAME,
                },
                {
                    "name": USER_METRICS_PORT_NAME,
                    "protocol": "TCP",
                    "port": USER_METRICS_PORT,
                    "targetPort": USER_METRICS_PORT_NAME,
                },
                {
                    "name": f"{name}-istio",
                    "protocol": "TCP",
                    "port": backend,
                    "targetPort": QUEUE_PORT_NAME,
                },
            ],
            "selector": dict(selector),
        },
    }


def make_public_service(sks: Obj) -> Obj:
    """Knative's MakePublicService: no selector, the reconciler writes its Endpoints."""
    protocol = _protocol(sks)
    port: Obj = {
        "name": _port_name(protocol),
        "protocol": "TCP",
        "port": 81 if protocol == "h2c" else 80,
        "targetPort": QUEUE_HTTP2_PORT if protocol == "h2c" else QUEUE_HTTP_PORT,
    }
    if protocol == "h2c":
        port["appProtocol"] = "kubernetes.io/h2c"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _service_meta(sks, meta(sks)["name"], SERVICE_TYPE_PUBLIC),
        "spec": {"ports": [port]},
    }


def ready_address_count(endpoints: Obj | None) -> int:
    """Knative's ReadyAddressCount."""
    if not endpoints:
        return 0
    return sum(len(s.get("addresses") or ()) for s in endpoints.get("subsets") or ())


def filter_ports(subsets: Sequence[Obj], protocol: str) -> list[Obj]:
    """Knative's FilterSubsetPorts, by port name (see the module docstring)."""
    keep = {_port_name(protocol), "https"}
    out = []
    for subset in subsets:
        s = copy.deepcopy(subset)
        s["ports"] = [p for p in subset.get("ports") or () if p.get("name") in keep]
        out.append(s)
    return out


def _serving_port(subset: Obj, protocol: str) -> object:
    name = _port_name(protocol)
    for p in subset.get("ports") or ():
        if p.get("name") == name:
            return p.get("port")
    return None


def subset_endpoints(subsets: Sequence[Obj], n: int, target: str, protocol: str) -> list[Obj]:
    """Knative's subsetEndpoints: ``n`` of the ready addresses, chosen by ChooseSubset."""

    def ident(subset: Obj, address: Obj) -> str:
        return f"{address.get('ip', '')}:{_serving_port(subset, protocol)}"

    pool = {ident(s, a) for s in subsets for a in s.get("addresses") or ()}
    if not subsets or n == 0 or len(pool) <= n:
        return [copy.deepcopy(s) for s in subsets]
    from shared.kube.hashing import choose_subset  # the kubeclient engineer's knative/pkg hash

    chosen = choose_subset(pool, n, target)
    out = []
    for subset in subsets:
        kept = [a for a in subset.get("addresses") or () if ident(subset, a) in chosen]
        if kept:
            s = copy.deepcopy(subset)
            s["addresses"] = copy.deepcopy(kept)
            out.append(s)
    return out


def public_subsets(sks: Obj, private: Obj | None, activator: Obj | None) -> tuple[list[Obj], bool]:
    """The public Endpoints' subsets, and whether the revision has ready pods of its own."""
    spec = sks.get("spec") or {}
    protocol = _protocol(sks)
    mode = spec.get("mode") or "Proxy"
    found = ready_address_count(private) > 0
    if not found:
        mode = "Proxy"  # no ready pod: only the activator can take (and hold) requests
    if ready_address_count(activator) == 0:
        mode = "Serve"  # no activator: the pods (if any) are all there is
    if mode == "Serve":
        source = list((private or {}).get("subsets") or ())
    else:
        n = spec.get("numActivators") or 0
        source = subset_endpoints(
            (activator or {}).get("subsets") or (), int(n), meta(sks)["name"], protocol
        )
    return filter_ports(source, protocol), found


def make_public_endpoints(sks: Obj, subsets: list[Obj]) -> Obj:
    """Knative's MakePublicEndpoints."""
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": _service_meta(sks, meta(sks)["name"], SERVICE_TYPE_PUBLIC),
    }
    if subsets:
        body["subsets"] = subsets
    return body


def sks_status(sks: Obj, found: bool, now: str, *, problem: str = "") -> Obj:
    """SKS status: service names and the EndpointsPopulated/ActivatorEndpointsPopulated pair."""
    old = sks.get("status") or {}
    name = meta(sks)["name"]
    conds = Conditions(old.get("conditions") or (), ("EndpointsPopulated",))
    status: Obj = {
        "observedGeneration": meta(sks).get("generation", 0) or 1,
        "serviceName": name,
        "privateServiceName": private_service_name(name),
    }
    if problem:
        conds.mark("EndpointsPopulated", "False", "NotOwned", problem)
    elif found:
        conds.mark("EndpointsPopulated", "True")
    else:
        conds.mark("EndpointsPopulated", "Unknown", "NoHealthyBackends", "K8s Service is not ready")
    proxied = not found or (sks.get("spec") or {}).get("mode") == "Proxy"
    conds.mark(
        "ActivatorEndpointsPopulated",
        "True" if proxied else "False",
        "ActivatorEndpointsPopulated",
        "Revision is backed by Activator",
        severity="Info",
    )
    status["conditions"] = conds.result(now)
    return status


class ServerlessServiceReconciler:
    """networking.internal.knative.dev ServerlessServices → Services, public Endpoints, status."""

    name = "serverlessservice"
    resource = SERVERLESSSERVICES

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def _endpoints_keys(self, eps: Obj) -> list[Key]:
        namespace, name = key_of(eps)
        if namespace == SYSTEM_NAMESPACE and name == ACTIVATOR_SERVICE:
            # Any change of the activators re-runs every SKS (Knative's global resync).
            return [key_of(s) for s in self._cache.list_all(SERVERLESSSERVICES)]
        sks = labels_of(eps).get(SKS_LABEL)
        return [(namespace, sks)] if sks else []

    def _deployment_keys(self, deployment: Obj) -> list[Key]:
        # A revision's SKS, PodAutoscaler and revision share one name.
        rev = labels_of(deployment).get(REVISION_LABEL)
        return [(key_of(deployment)[0], rev)] if rev else []

    def watches(self) -> Sequence[Watch]:
        return (
            Watch(ENDPOINTS, self._endpoints_keys),
            Watch(SERVICES, owner_keys("ServerlessService")),
            Watch(DEPLOYMENTS, self._deployment_keys),
        )

    async def reconcile(self, namespace: str, name: str) -> None:
        sks = self._cache.get(SERVERLESSSERVICES, namespace, name)
        if sks is None:
            return
        ref = (sks.get("spec") or {}).get("objectRef") or {}
        target = self._cache.get(DEPLOYMENTS, namespace, str(ref.get("name", "")))
        if target is None:
            return  # the Deployment's arrival re-runs this SKS
        selector = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        problem = await self._service(sks, make_private_service(sks, selector), selector=True)
        problem = problem or await self._service(sks, make_public_service(sks), selector=False)
        found = False
        if not problem:
            private = self._cache.get(ENDPOINTS, namespace, private_service_name(name))
            activator = self._cache.get(ENDPOINTS, SYSTEM_NAMESPACE, ACTIVATOR_SERVICE)
            subsets, found = public_subsets(sks, private, activator)
            problem = await self._endpoints(sks, subsets)
        status = sks_status(sks, found, rfc3339(self._cfg.clock()), problem=problem)
        await update_status(self._client, SERVERLESSSERVICES, sks, status)

    async def _service(self, sks: Obj, want: Obj, *, selector: bool) -> str:
        namespace, name = key_of(want)
        have = self._cache.get(SERVICES, namespace, name)
        if have is None:
            await create_or_adopt(self._client, SERVICES, want)
            return ""
        if not is_controlled_by(have, sks):
            return f"Resource {name} of type Service is not owned by SKS"
        spec = have.get("spec") or {}
        want_selector = want["spec"].get("selector") if selector else None
        same_selector = (spec.get("selector") or None) == (want_selector or None)
        if spec.get("ports") == want["spec"]["ports"] and same_selector:
            return ""
        body = copy.deepcopy(have)
        body["spec"]["ports"] = want["spec"]["ports"]
        if selector:
            body["spec"]["selector"] = want_selector
        else:
            body["spec"].pop("selector", None)
        await replace(self._client, SERVICES, body)
        return ""

    async def _endpoints(self, sks: Obj, subsets: list[Obj]) -> str:
        namespace, name = key_of(sks)
        have = self._cache.get(ENDPOINTS, namespace, name)
        if have is None:
            await create_or_adopt(self._client, ENDPOINTS, make_public_endpoints(sks, subsets))
            return ""
        if not is_controlled_by(have, sks):
            return f"Resource {name} of type Endpoints is not owned by SKS"
        if (have.get("subsets") or []) == subsets:
            return ""
        body = copy.deepcopy(have)
        body["subsets"] = subsets
        await replace(self._client, ENDPOINTS, body)
        return ""

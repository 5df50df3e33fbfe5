"""Kubernetes' endpoints controller: the Endpoints of every Service with a selector.

What kube-controller-manager does (pkg/controller/endpoint), for ``knpy serve``:

- For a Service with a selector, the Endpoints of its name list the matching Pods that have an
  IP and are not being deleted (nor Succeeded/Failed): a pod whose Ready condition is True under
  ``addresses``, any other under ``notReadyAddresses``, each with ``targetRef`` (kind Pod,
  namespace, name, uid) and ``nodeName`` when the pod has one.
- Each Service port becomes an Endpoints port of the same name whose number is the
  ``targetPort``: a number as is, a name resolved against the pod's container ports (a pod
  without that named port leaves the port out, as Kubernetes' FindPort). Addresses with the
  same ports share one subset (Kubernetes' RepackSubsets), so local pods, each listening on its
  own ports on 127.0.0.1, land in one subset per pod.
- The Service's labels are copied onto the Endpoints (the activator finds a revision's private
  Endpoints by them), and the Endpoints are rewritten only when they differ. Deleting the
  Service deletes the Endpoints this controller wrote (and, after a restart, the Endpoints of
  a revision's private Service left without one); Endpoints of Services without a selector
  (the SKS's public ones, ``activator-service`` when written by hand) are never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from shared.kube.client import KubeClient
from shared.kube.labels import Selector, parse_selector
from shared.kube.resources import (
    ENDPOINTS,
    PODS,
    SERVICE_TYPE_LABEL,
    SERVICE_TYPE_PRIVATE,
    SERVICES,
    Obj,
    key_of,
    labels_of,
    meta,
)

from .base import Cache, Watch, create_or_adopt, replace
from .config import ControllerConfig
from .meta import Key, get_condition

__all__ = ["EndpointsReconciler", "endpoint_subsets", "make_endpoints"]


def _selector(service: Obj) -> Selector | None:
    sel = (service.get("spec") or {}).get("selector")
    if not isinstance(sel, dict) or not sel:
        return None
    return parse_selector(",".join(f"{k}={v}" for k, v in sorted(sel.items())))


def _find_port(pod: Obj, target: object) -> int | None:
    """Kubernetes' FindPort: a number as is; a name among the pod's container ports."""
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or ():
        for p in c.get("ports") or ():
            if p.get("name") == target and isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    return None


def _address(pod: Obj) -> Obj:
    m = meta(pod)
    address: Obj = {
        "ip": (pod.get("status") or {}).get("podIP", ""),
        "targetRef": {
            "kind": "Pod",
            "namespace": m.get("namespace", ""),
            "name": m.get("name", ""),
            "uid": m.get("uid", ""),
        },
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        address["nodeName"] = node
    return address


def _serves(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if not status.get("podIP") or meta(pod).get("deletionTimestamp"):
        return False
    return status.get("phase") not in ("Succeeded", "Failed")


def endpoint_subsets(service: Obj, pods: Sequence[Obj]) -> list[Obj]:
    """The subsets of a Service's Endpoints from the (already selected) pods."""
    service_ports = (service.get("spec") or {}).get("ports") or ()
    groups: dict[tuple[tuple[str, int, str], ...], tuple[list[Obj], list[Obj]]] = {}
    for pod in pods:
        if not _serves(pod):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in service_ports:
            number = _find_port(pod, sp.get("targetPort", sp.get("port")))
            if number is not None:
                ports.append((str(sp.get("name", "")), number, str(sp.get("protocol", "TCP"))))
        if service_ports and not ports:
            continue
        ready_cond = get_condition(pod, "Ready")
        ready = ready_cond is not None and ready_cond.get("status") == "True"
        ready_list, not_ready = groups.setdefault(tuple(sorted(ports)), ([], []))
        (ready_list if ready else not_ready).append(_address(pod))
    subsets = []
    for ports_key in sorted(groups):
        ready_list, not_ready = groups[ports_key]

        def order(a: Obj) -> tuple[str, str]:
            return str(a.get("ip", "")), str(a["targetRef"]["name"])

        subset: Obj = {}
        if ready_list:
            subset["addresses"] = sorted(ready_list, key=order)
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=order)
        subset["ports"] = [
            {"name": name, "port": number, "protocol": protocol}
            for name, number, protocol in ports_key
        ]
        subsets.append(subset)
    return subsets


def make_endpoints(service: Obj, subsets: list[Obj]) -> Obj:
    namespace, name = key_of(service)
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels_of(service))},
    }
    if subsets:
        body["subsets"] = subsets
    return body


class EndpointsReconciler:
    """core/v1 Services with a selector → their Endpoints, from the Pods."""

    name = "endpoints"
    resource = SERVICES

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg
        self._managed: set[Key] = set()

    def _orphan(self, namespace: str, name: str, service: Obj | None) -> bool:
        """Endpoints of a revision's private Service whose Service went while nobody watched
        (a restart). Kubernetes deletes every Endpoints without a Service; this deletes only
        these, so that Endpoints written by hand without a Service (activator-service in a
        local run) stay."""
        if service is not None:
            return False
        eps = self._cache.get(ENDPOINTS, namespace, name)
        if eps is None or meta(eps).get("ownerReferences"):
            return False
        return labels_of(eps).get(SERVICE_TYPE_LABEL) == SERVICE_TYPE_PRIVATE

    def _pod_services(self, pod: Obj) -> list[Key]:
        namespace = key_of(pod)[0]
        out = []
        for svc in self._cache.list(SERVICES, namespace):
            sel = _selector(svc)
            if sel is not None and sel.matches(labels_of(pod)):
                out.append(key_of(svc))
        return out

    def _own_service(self, eps: Obj) -> list[Key]:
        return [key_of(eps)]  # a changed or deleted Endpoints is put back

    def watches(self) -> Sequence[Watch]:
        return (Watch(PODS, self._pod_services), Watch(ENDPOINTS, self._own_service))

    async def reconcile(self, namespace: str, name: str) -> None:
        service = self._cache.get(SERVICES, namespace, name)
        sel = _selector(service) if service is not None else None
        if service is None or sel is None:
            if (namespace, name) in self._managed or self._orphan(namespace, name, service):
                self._managed.discard((namespace, name))
                await self._client.delete(ENDPOINTS, namespace, name)  # absent is no error
            return
        self._managed.add((namespace, name))
        pods = [p for p in self._cache.list(PODS, namespace) if sel.matches(labels_of(p))]
        want = make_endpoints(service, endpoint_subsets(service, pods))
        have = self._cache.get(ENDPOINTS, namespace, name)
        if have is None:
            await create_or_adopt(self._client, ENDPOINTS, want)
            return
        if (have.get("subsets") or []) == want.get("subsets", []) and labels_of(have) == labels_of(
            want
        ):
            return
        body = copy.deepcopy(have)
        body["subsets"] = want.get("subsets", [])
        body["metadata"]["labels"] = want["metadata"]["labels"]
        await replace(self._client, ENDPOINTS, body)

"""Knative's Service reconciler: a Service owns a Configuration and a Route of its name.

pkg/reconciler/service: ``make_configuration`` and ``make_route`` are MakeConfiguration and
MakeRoute (the Service's labels plus ``serving.knative.dev/service``/``serviceUID``, its
annotations without kubectl's last-applied-configuration, a controlling owner reference; the
Route's traffic is the Service's with ``configurationName`` set wherever no revision is
pinned). An existing child that differs in spec, labels or annotations is updated; one the
Service does not control is left alone and reported (``NotOwned``). ``service_status`` copies
the children's status up: the Configuration's latest revisions, the Route's URL, address and
traffic, and ConfigurationsReady/RoutesReady, each Unknown ``OutOfDate`` while the child has not
observed its latest generation; Ready is their conjunction.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from shared.kube.client import KubeClient
from shared.kube.resources import (
    CONFIGURATIONS,
    KSERVICES,
    ROUTES,
    SERVICE_LABEL,
    Obj,
    Resource,
    annotations_of,
    labels_of,
    meta,
)

from .base import Cache, Watch, create_or_adopt, owner_keys, replace, update_status
from .config import ControllerConfig
from .meta import (
    Conditions,
    condition_status,
    get_condition,
    is_controlled_by,
    owner_reference,
    rfc3339,
)

__all__ = ["ServiceReconciler", "make_configuration", "make_route", "service_status"]

SERVICE_UID_LABEL = "serving.knative.dev/serviceUID"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_API_VERSION = "serving.knative.dev/v1"


def _child_meta(svc: Obj) -> Obj:
    m = meta(svc)
    labels = {**labels_of(svc), SERVICE_LABEL: m["name"]}
    if m.get("uid"):
        labels[SERVICE_UID_LABEL] = m["uid"]
    annotations = {k: v for k, v in annotations_of(svc).items() if k != LAST_APPLIED}
    out: Obj = {
        "name": m["name"],
        "namespace": m.get("namespace", ""),
        "labels": labels,
        "ownerReferences": [owner_reference(svc, KSERVICES)],
    }
    if annotations:
        out["annotations"] = annotations
    return out


def make_configuration(svc: Obj) -> Obj:
    """Knative's MakeConfiguration: the Service's template under a Configuration."""
    spec = svc.get("spec") or {}
    return {
        "apiVersion": _API_VERSION,
        "kind": "Configuration",
        "metadata": _child_meta(svc),
        "spec": {"template": copy.deepcopy(spec.get("template") or {})},
    }


def make_route(svc: Obj) -> Obj:
    """Knative's MakeRoute: unpinned targets follow the Service's own Configuration."""
    name = meta(svc)["name"]
    traffic = []
    for t in (svc.get("spec") or {}).get("traffic") or ():
        target = copy.deepcopy(t)
        if not target.get("revisionName"):
            target["configurationName"] = name
        traffic.append(target)
    return {
        "apiVersion": _API_VERSION,
        "kind": "Route",
        "metadata": _child_meta(svc),
        "spec": {"traffic": traffic},
    }


def _observed(obj: Obj) -> bool:
    status = obj.get("status") or {}
    return status.get("observedGeneration") == meta(obj).get("generation")


def _propagate(conds: Conditions, type_: str, child: Obj) -> None:
    ready = get_condition(child, "Ready")
    status = condition_status(child, "Ready")
    reason = ready.get("reason", "") if ready else ""
    message = ready.get("message", "") if ready else ""
    conds.mark(type_, status, reason, message)


def service_status(
    svc: Obj,
    config: Obj | None,
    route: Obj | None,
    now: str,
    *,
    config_problem: str = "",
    route_problem: str = "",
) -> Obj:
    """The Service's status from its children (Knative's Propagate*Status and checks)."""
    old = svc.get("status") or {}
    conds = Conditions(old.get("conditions") or (), ("ConfigurationsReady", "RoutesReady"))
    status: Obj = {"observedGeneration": meta(svc).get("generation", 0)}
    for key in ("url", "address", "traffic", "latestCreatedRevisionName"):
        if key in old:
            status[key] = old[key]
    if "latestReadyRevisionName" in old:
        status["latestReadyRevisionName"] = old["latestReadyRevisionName"]
    if config_problem:
        conds.mark("ConfigurationsReady", "False", "NotOwned", config_problem)
    elif config is None:
        conds.mark("ConfigurationsReady", "Unknown")
    elif not _observed(config):
        message = "The Configuration is still working to reflect the latest desired specification."
        conds.mark("ConfigurationsReady", "Unknown", "OutOfDate", message)
    else:
        cs = config.get("status") or {}
        for key in ("latestCreatedRevisionName", "latestReadyRevisionName"):
            if cs.get(key):
                status[key] = cs[key]
        _propagate(conds, "ConfigurationsReady", config)
    if route_problem:
        conds.mark("RoutesReady", "False", "NotOwned", route_problem)
    elif route is None:
        conds.mark("RoutesReady", "Unknown")
    elif not _observed(route):
        message = "The Route is still working to reflect the latest desired specification."
        conds.mark("RoutesReady", "Unknown", "OutOfDate", message)
    else:
        rs = route.get("status") or {}
        for key in ("url", "address", "traffic"):
            if key in rs:
                status[key] = rs[key]
        _propagate(conds, "RoutesReady", route)
        latest_ready = status.get("latestReadyRevisionName", "")
        stale = [
            t
            for t in rs.get("traffic") or ()
            if t.get("latestRevision") and t.get("revisionName") != latest_ready
        ]
        if stale and condition_status(route, "Ready") == "True":
            # Knative's checkRoutesNotReady: the route still points at an older revision.
            message = "Traffic is not yet migrated to the latest revision."
            conds.mark("RoutesReady", "Unknown", "TrafficNotMigrated", message)
    status["conditions"] = conds.result(now)
    return status


def _differs(have: Obj, want: Obj) -> bool:
    return bool(
        have.get("spec") != want["spec"]
        or labels_of(have) != want["metadata"]["labels"]
        or annotations_of(have) != want["metadata"].get("annotations", {})
    )


def _updated(have: Obj, want: Obj) -> Obj:
    body = copy.deepcopy(have)
    body["spec"] = want["spec"]
    body["metadata"]["labels"] = want["metadata"]["labels"]
    body["metadata"]["annotations"] = want["metadata"].get("annotations", {})
    return body


def _not_owned(kind: str, name: str) -> str:
    return f'There is an existing {kind} "{name}" that we do not own.'


class ServiceReconciler:
    """serving.knative.dev Services → their Configuration and Route, and the Service status."""

    name = "service"
    resource = KSERVICES

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def watches(self) -> Sequence[Watch]:
        return (
            Watch(CONFIGURATIONS, owner_keys("Service")),
            Watch(ROUTES, owner_keys("Service")),
        )

    async def reconcile(self, namespace: str, name: str) -> None:
        svc = self._cache.get(KSERVICES, namespace, name)
        if svc is None:
            return  # the API server's garbage collector removes what it owned
        config, config_problem = await self._child(svc, make_configuration(svc), CONFIGURATIONS)
        route, route_problem = await self._child(svc, make_route(svc), ROUTES)
        now = rfc3339(self._cfg.clock())
        status = service_status(
            svc, config, route, now, config_problem=config_problem, route_problem=route_problem
        )
        await update_status(self._client, KSERVICES, svc, status)

    async def _child(self, svc: Obj, want: Obj, res: Resource) -> tuple[Obj | None, str]:
        namespace, name = meta(svc).get("namespace", ""), meta(svc)["name"]
        have = self._cache.get(res, namespace, name)
        if have is None:
            have = await create_or_adopt(self._client, res, want)
        if not is_controlled_by(have, svc):
            return None, _not_owned(res.kind, name)
        if _differs(have, want):
            return await replace(self._client, res, _updated(have, want)), ""
        return have, ""

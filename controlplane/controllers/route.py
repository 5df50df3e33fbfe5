"""Knative's Route reconciler: traffic resolved to revisions, the URL, and the routing state.

pkg/reconciler/route and pkg/reconciler/labeler:

- ``route_status`` resolves ``spec.traffic`` with ``traffic.resolve`` over the cached
  Configurations and Revisions. Resolved: ``status.traffic`` (one entry per distinct target,
  a tag's own URL), AllTrafficAssigned and IngressReady True (``knpy serve``'s ingress follows
  the Routes themselves; there is no separate Ingress object to wait for). Not resolved: the
  previous ``status.traffic`` stays, as Knative keeps routing as before, and AllTrafficAssigned
  takes Knative's reason and message for the first bad target (``RevisionMissing``: "Revision
  "x" is not yet ready.", Unknown while it may heal, False once it failed; ``ConfigurationMissing``
  and ``RevisionMissing`` for a missing one, ``RevisionNotOwned``).
- The labeler (``routing_patches``): every revision the route names or will name (the resolved
  targets, pinned revisions, the latest *created* revision of a followed configuration) gets the
  route in its ``serving.knative.dev/routes`` annotation and ``routingState: active``; once the
  route is Ready or failed, a revision it no longer names loses it, and with no route left
  becomes ``reserve``. The revision reconciler turns that into the PodAutoscaler's reachability.

URLs: ``http://[<tag>-]<route>.<namespace>.<domain>``; ``status.address`` is the cluster-local
``http://<route>.<namespace>.svc.<cluster domain>``. Knative's Route watches the
Configurations and Revisions it references through a tracker; here a change to one of them
re-runs the Routes of its namespace that name it (or still hold it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

from shared.kube.client import KubeClient, NotFound
from shared.kube.resources import (
    CONFIGURATION_LABEL,
    CONFIGURATIONS,
    REVISIONS,
    ROUTES,
    SERVICE_LABEL,
    Obj,
    annotations_of,
    key_of,
    labels_of,
    meta,
)

from .. import traffic as tr
from ..defaults import default_traffic
from ..model import TrafficTarget
from .base import Cache, Watch, update_status
from .config import ControllerConfig
from .configuration import ROUTING_STATE_LABEL, ROUTING_STATE_MODIFIED_ANNOTATION
from .meta import Conditions, Key, condition_status, rfc3339

__all__ = ["ROUTES_ANNOTATION", "RouteReconciler", "route_status", "routing_patches"]

ROUTES_ANNOTATION = "serving.knative.dev/routes"


def _target(t: Obj) -> TrafficTarget:
    percent = t.get("percent")
    latest = t.get("latestRevision")
    return TrafficTarget(
        tag=str(t.get("tag") or ""),
        revision_name=str(t.get("revisionName") or ""),
        configuration_name=str(t.get("configurationName") or ""),
        latest_revision=latest if isinstance(latest, bool) else None,
        percent=percent if isinstance(percent, int) else None,
    )


def spec_targets(route: Obj) -> tuple[TrafficTarget, ...]:
    """The Route's traffic as model targets, with Knative's defaults."""
    raw = (route.get("spec") or {}).get("traffic") or ()
    return default_traffic([_target(t) for t in raw], in_service=False)


def _wire(t: TrafficTarget) -> Obj:
    out: Obj = {}
    if t.tag:
        out["tag"] = t.tag
    out["revisionName"] = t.revision_name
    out["latestRevision"] = bool(t.latest_revision)
    out["percent"] = t.percent or 0
    if t.url:
        out["url"] = t.url
    return out


def _states(
    configurations: Sequence[Obj], revisions: Sequence[Obj]
) -> tuple[dict[str, tr.ConfigurationState], dict[str, tr.RevisionState]]:
    configs = {
        meta(c)["name"]: tr.ConfigurationState(
            meta(c)["name"],
            str((c.get("status") or {}).get("latestReadyRevisionName", "")),
            condition_status(c, "Ready"),
        )
        for c in configurations
    }
    revs = {
        meta(r)["name"]: tr.RevisionState(
            meta(r)["name"],
            labels_of(r).get(CONFIGURATION_LABEL, ""),
            labels_of(r).get(SERVICE_LABEL, ""),
            condition_status(r, "Ready"),
        )
        for r in revisions
    }
    return configs, revs


def _traffic_error(e: tr.TargetError) -> tuple[str, str]:
    """Knative's reason and message for a traffic target that cannot be served."""
    if isinstance(e, tr.MissingTargetError):
        return f"{e.kind}Missing", f'{e.kind} "{e.name}" referenced in traffic not found.'
    if isinstance(e, tr.UnreadyConfigurationError):
        if e.is_failure:
            return "RevisionMissing", f'Configuration "{e.name}" does not have any ready Revision.'
        return (
            "RevisionMissing",
            f'Configuration "{e.name}" is waiting for a Revision to become ready.',
        )
    if isinstance(e, tr.UnreadyRevisionError):
        if e.is_failure:
            return "RevisionMissing", f'Revision "{e.name}" failed to become ready.'
        return "RevisionMissing", f'Revision "{e.name}" is not yet ready.'
    return "RevisionNotOwned", f"{e}."


def route_status(
    route: Obj,
    configurations: Sequence[Obj],
    revisions: Sequence[Obj],
    now: str,
    *,
    domain: str,
    cluster_domain: str,
) -> tuple[Obj, tr.TrafficConfig | None, bool]:
    """The Route's status; its resolved traffic (None if not resolved); whether it failed."""
    namespace, name = key_of(route)
    old = route.get("status") or {}
    conds = Conditions(old.get("conditions") or (), ("AllTrafficAssigned", "IngressReady"))
    status: Obj = {
        "observedGeneration": meta(route).get("generation", 0),
        "url": tr.route_url(name, namespace, domain=domain),
        "address": {"url": f"http://{name}.{namespace}.svc.{cluster_domain}"},
    }
    configs, revs = _states(configurations, revisions)
    resolved: tr.TrafficConfig | None = None
    failed = False
    try:
        resolved = tr.resolve(
            spec_targets(route),
            configurations=configs,
            revisions=revs,
            service=labels_of(route).get(SERVICE_LABEL, ""),
        )
    except tr.TargetError as e:
        reason, message = _traffic_error(e)
        failed = e.is_failure
        conds.mark("AllTrafficAssigned", "False" if failed else "Unknown", reason, message)
        if "traffic" in old:
            status["traffic"] = old["traffic"]
    else:
        conds.mark("AllTrafficAssigned", "True")
        conds.mark("IngressReady", "True")
        traffic = resolved.status_traffic(name, namespace, domain)
        status["traffic"] = [_wire(t) for t in traffic]
    status["conditions"] = conds.result(now)
    return status, resolved, failed


def _listed(
    route: Obj, resolved: tr.TrafficConfig | None, configurations: Sequence[Obj]
) -> set[str]:
    """The revisions a route names or is about to name (Knative's syncRoutingMeta)."""
    names = {t.revision_name for t in resolved.revision_targets} if resolved else set()
    by_name = {meta(c)["name"]: c for c in configurations}
    for t in spec_targets(route):
        if t.revision_name:
            names.add(t.revision_name)
        config = by_name.get(t.configuration_name)
        if config is not None and t.latest_revision:
            latest = (config.get("status") or {}).get("latestCreatedRevisionName")
            if latest:
                names.add(str(latest))
    for t in (route.get("status") or {}).get("traffic") or ():
        if t.get("revisionName"):
            names.add(str(t["revisionName"]))
    return names


def routing_patches(
    route_name: str,
    revisions: Iterable[Obj],
    listed: set[str],
    *,
    clear: bool,
    now: str,
) -> list[tuple[str, Obj]]:
    """(revision, merge patch) for each revision whose routes annotation or state must change."""
    patches: list[tuple[str, Obj]] = []
    for rev in revisions:
        name = meta(rev)["name"]
        routes = {r for r in annotations_of(rev).get(ROUTES_ANNOTATION, "").split(",") if r}
        if name in listed:
            want = routes | {route_name}
        elif clear and route_name in routes:
            want = routes - {route_name}
        else:
            continue
        state = labels_of(rev).get(ROUTING_STATE_LABEL, "")
        want_state = "active" if want else "reserve"
        if want == routes and state == want_state:
            continue
        annotations: Obj = {ROUTES_ANNOTATION: ",".join(sorted(want)) if want else None}
        labels: Obj = {}
        if state != want_state:
            labels[ROUTING_STATE_LABEL] = want_state
            annotations[ROUTING_STATE_MODIFIED_ANNOTATION] = now
        patch: Obj = {"metadata": {"annotations": annotations}}
        if labels:
            patch["metadata"]["labels"] = labels
        patches.append((name, patch))
    return patches


class RouteReconciler:
    """serving.knative.dev Routes → status (traffic, URL) and the revisions' routing state."""

    name = "route"
    resource = ROUTES

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def _routes_of_configuration(self, config: Obj) -> list[Key]:
        namespace, name = key_of(config)
        return [
            key_of(r)
            for r in self._cache.list(ROUTES, namespace)
            if any(t.configuration_name == name for t in spec_targets(r))
        ]

    def _routes_of_revision(self, rev: Obj) -> list[Key]:
        """The routes that name the revision, follow its configuration, or still hold it."""
        namespace, name = key_of(rev)
        config = labels_of(rev).get(CONFIGURATION_LABEL, "")
        holders = set(annotations_of(rev).get(ROUTES_ANNOTATION, "").split(","))
        out = []
        for r in self._cache.list(ROUTES, namespace):
            route_name = key_of(r)[1]
            named = any(
                t.revision_name == name or (config and t.configuration_name == config)
                for t in spec_targets(r)
            )
            if named or route_name in holders:
                out.append(key_of(r))
        return out

    def watches(self) -> Sequence[Watch]:
        # Knative's Route tracks the Configurations and Revisions it references; here the same
        # references are found by scanning the namespace's Routes, which is cheap locally.
        return (
            Watch(CONFIGURATIONS, self._routes_of_configuration),
            Watch(REVISIONS, self._routes_of_revision),
        )

    async def reconcile(self, namespace: str, name: str) -> None:
        route = self._cache.get(ROUTES, namespace, name)
        if route is None:
            await self._forget(namespace, name)
            return
        now = rfc3339(self._cfg.clock())
        configurations, referenced = self._referenced(route)
        status, resolved, failed = route_status(
            route,
            configurations,
            referenced,
            now,
            domain=self._cfg.domain,
            cluster_domain=self._cfg.cluster_domain,
        )
        listed = _listed(route, resolved, configurations)
        clear = resolved is not None or failed
        revisions = self._cache.list(REVISIONS, namespace) if clear else referenced
        await self._patch(namespace, routing_patches(name, revisions, listed, clear=clear, now=now))
        await update_status(self._client, ROUTES, route, status)

    def _referenced(self, route: Obj) -> tuple[list[Obj], list[Obj]]:
        """The Configurations and Revisions the route's traffic can resolve to, from the cache."""
        namespace = key_of(route)[0]
        configs: dict[str, Obj] = {}
        names: set[str] = set()
        for t in spec_targets(route):
            if t.revision_name:
                names.add(t.revision_name)
            elif (
                c := self._cache.get(CONFIGURATIONS, namespace, t.configuration_name)
            ) is not None:
                configs[t.configuration_name] = c
                status = c.get("status") or {}
                names.update(
                    str(status[k])
                    for k in ("latestReadyRevisionName", "latestCreatedRevisionName")
                    if status.get(k)
                )
        revisions = [
            rev for n in sorted(names) if (rev := self._cache.get(REVISIONS, namespace, n))
        ]
        # A pinned revision's configuration must exist too (traffic.resolve checks it).
        for rev in revisions:
            config = labels_of(rev).get(CONFIGURATION_LABEL, "")
            c = self._cache.get(CONFIGURATIONS, namespace, config) if config else None
            if c is not None:
                configs[config] = c
        return list(configs.values()), revisions

    async def _forget(self, namespace: str, name: str) -> None:
        """A deleted route no longer holds any revision (Knative's labeler FinalizeKind)."""
        now = rfc3339(self._cfg.clock())
        revisions = self._cache.list(REVISIONS, namespace)
        await self._patch(namespace, routing_patches(name, revisions, set(), clear=True, now=now))

    async def _patch(self, namespace: str, patches: list[tuple[str, Obj]]) -> None:
        for rev, patch in patches:
            with contextlib.suppress(NotFound):  # deleted meanwhile (its Service went)
                await self._client.patch(REVISIONS, namespace, rev, patch)

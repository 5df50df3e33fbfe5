"""What the KPA reconciler reads from a PodAutoscaler and writes back: SKS, Metric, PA status.

Pure functions over the wire JSON (``Obj``), Knative's pkg/reconciler/autoscaling/resources
(sks.go, metric.go) and the PodAutoscaler's status lifecycle (pa_lifecycle.go): what the
reconciler (reconciler.py) compares against the informers' objects and writes when they differ.
Nothing here does I/O or reads a clock: ``now`` comes in.

Conditions follow knative/pkg's living condition set: ``Ready`` is the AND of ``Active``,
``ScaleTargetInitialized`` and ``SKSReady`` (the first False dependent makes it False with
that reason, else the first Unknown makes it Unknown). A condition's ``lastTransitionTime``
moves only when its status changes, because the KPA times scale to zero from the Active
condition's (ActiveFor, InactiveFor, CanFailActivation); ``Active``'s is the decider runner's
own transition time, so the object and the decision agree after a leader change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from autoscaler.kpa import ActiveState, PodAutoscalerStatus
from autoscaler.multiscaler import RevisionScaling
from shared.kube.resources import (
    CLASS_ANNOTATION,
    CONFIGURATION_LABEL,
    KPA_CLASS,
    METRIC_ANNOTATION,
    METRICS,
    PODAUTOSCALERS,
    REVISION_LABEL,
    SERVERLESSSERVICES,
    SERVICE_LABEL,
    Obj,
    annotations_of,
    labels_of,
    meta,
)
from shared.seams import Mode, RevisionKey, RevisionSpec

__all__ = [
    "ACTIVATOR_ENDPOINTS_POPULATED",
    "CONDITION_ACTIVE",
    "CONDITION_READY",
    "CONDITION_SCALE_TARGET_INITIALIZED",
    "CONDITION_SKS_READY",
    "PaStatus",
    "active_condition",
    "condition",
    "format_time",
    "is_controlled_by",
    "is_kpa",
    "make_metric",
    "make_sks",
    "pa_status",
    "parse_time",
    "proxy_since",
    "restore_status",
    "revision_spec",
    "sks_mode",
]

CONDITION_READY = "Ready"
CONDITION_ACTIVE = "Active"
CONDITION_SCALE_TARGET_INITIALIZED = "ScaleTargetInitialized"
CONDITION_SKS_READY = "SKSReady"
# The SKS condition whose lastTransitionTime is Knative's sks.Status.ProxyFor.
ACTIVATOR_ENDPOINTS_POPULATED = "ActivatorEndpointsPopulated"
_DEPENDENTS = (CONDITION_ACTIVE, CONDITION_SCALE_TARGET_INITIALIZED, CONDITION_SKS_READY)
REACHABILITY_UNREACHABLE = "Unreachable"
_SKS_MODE = {Mode.SERVE: "Serve", Mode.PROXY: "Proxy"}
_NS_PER_S = 1_000_000_000


# -- reading ---------------------------------------------------------------------------------
def is_kpa(pa: Obj) -> bool:
    """Knative's KPA controller filter: the class annotation must be present and be KPA's."""
    return annotations_of(pa).get(CLASS_ANNOTATION) == KPA_CLASS


def revision_spec(pa: Obj) -> RevisionSpec:
    """What the decider needs of a PodAutoscaler, as the engine's ``RevisionSpec``.

    Raises:
        ValueError: the configuration or revision label is missing (Knative's deciders need
            both to label the revision's metrics).
    """
    m, labels = meta(pa), labels_of(pa)
    for label in (CONFIGURATION_LABEL, REVISION_LABEL):
        if not labels.get(label):
            raise ValueError(f"label {label} is missing")
    spec = pa.get("spec") or {}
    return RevisionSpec(
        RevisionKey(str(m.get("namespace", "")), str(m.get("name", ""))),
        container_concurrency=int(spec.get("containerConcurrency") or 0),
        annotations=dict(annotations_of(pa)),
        service=str(labels.get(SERVICE_LABEL, "")),
        configuration=str(labels[CONFIGURATION_LABEL]),
        reachable=spec.get("reachability") != REACHABILITY_UNREACHABLE,
    )


def condition(obj: Obj, kind: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def parse_time(text: object) -> float | None:
    """An RFC 3339 timestamp (metav1.Time) as Unix seconds; None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_time(t: float) -> str:
    """Unix seconds as metav1.Time writes them: RFC 3339, whole seconds, UTC."""
    return dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def proxy_since(sks: Obj | None) -> float | None:
    """When the activators were put in the revision's path (Knative's ProxyFor), or None."""
    cond = None if sks is None else condition(sks, ACTIVATOR_ENDPOINTS_POPULATED)
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def sks_mode(sks: Obj | None) -> Mode:
    mode = None if sks is None else (sks.get("spec") or {}).get("mode")
    return Mode.SERVE if mode == "Serve" else Mode.PROXY


def restore_status(pa: Obj, sks: Obj | None, now: float) -> PodAutoscalerStatus:
    """The KPA status a new decider starts from, read back from the PA and SKS objects.

    A replica that takes a bucket over (or restarts) continues where the last leader was:
    Active since its condition's transition, the scale target initialized or not, the last
    desired scale, the SKS mode and proxy time. A PA never reconciled starts activating.
    """
    fresh = PodAutoscalerStatus.new(now)
    active = condition(pa, CONDITION_ACTIVE)
    state = {"True": ActiveState.ACTIVE, "False": ActiveState.INACTIVE}.get(
        str((active or {}).get("status")), ActiveState.ACTIVATING
    )
    since = parse_time((active or {}).get("lastTransitionTime"))
    initialized = condition(pa, CONDITION_SCALE_TARGET_INITIALIZED)
    desired = (pa.get("status") or {}).get("desiredScale")
    mode = sks_mode(sks)
    return PodAutoscalerStatus(
        active=state,
        active_since=fresh.active_since if since is None else since,
        mode=mode,
        proxy_since=proxy_since(sks) if mode is Mode.PROXY else None,
        scale_target_initialized=(initialized or {}).get("status") == "True",
        want=desired if isinstance(desired, int) else -1,
    )


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    """metav1.IsControlledBy: the controller ownerReference names the owner's uid."""
    uid = meta(owner).get("uid")
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return bool(uid) and ref.get("uid") == uid
    return False


# -- writing ---------------------------------------------------------------------------------
def _controller_ref(pa: Obj) -> Obj:
    """kmeta.NewControllerRef: the PA as the controlling owner, blocking its deletion."""
    m = meta(pa)
    return {
        "apiVersion": PODAUTOSCALERS.api_version,
        "kind": PODAUTOSCALERS.kind,
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def make_sks(pa: Obj, mode: Mode, num_activators: int) -> Obj:
    """Knative's MakeSKS: the PA's ServerlessService, same name, in Serve or Proxy mode.

    Labels are the PA's; of its annotations only the metric one (kmeta.FilterMap keeps it).
    """
    m, spec = meta(pa), pa.get("spec") or {}
    annotations = {k: v for k, v in annotations_of(pa).items() if k == METRIC_ANNOTATION}
    sks_spec: dict[str, Any] = {
        "mode": _SKS_MODE[mode],
        "objectRef": dict(spec.get("scaleTargetRef") or {}),
        "protocolType": spec.get("protocolType") or "http1",
        "numActivators": num_activators,
    }
    return {
        "apiVersion": SERVERLESSSERVICES.api_version,
        "kind": SERVERLESSSERVICES.kind,
        "metadata": {
            "name": m.get("name", ""),
            "namespace": m.get("namespace", ""),
            "labels": dict(labels_of(pa)),
            "annotations": annotations,
            "ownerReferences": [_controller_ref(pa)],
        },
        "spec": sks_spec,
    }


def make_metric(pa: Obj, scaling: RevisionScaling, scrape_target: str) -> Obj:
    """Knative's MakeMetric: windows as int64 nanoseconds (time.Duration's JSON).

    ``scrape_target`` is the private service's name, or "" when TBC is -1 (the activator is
    always in the path and the pods are not scraped: resolveScrapeTarget).
    """
    m = meta(pa)
    return {
        "apiVersion": METRICS.api_version,
        "kind": METRICS.kind,
        "metadata": {
            "name": m.get("name", ""),
            "namespace": m.get("namespace", ""),
            "labels": dict(labels_of(pa)),
            "annotations": dict(annotations_of(pa)),
            "ownerReferences": [_controller_ref(pa)],
        },
        "spec": {
            "stableWindow": round(scaling.metric.stable_window_s * _NS_PER_S),
            "panicWindow": round(scaling.metric.panic_window_s * _NS_PER_S),
            "scrapeTarget": scrape_target if scaling.metric.scraped else "",
        },
    }


@dataclass(frozen=True, slots=True)
class PaStatus:
    """One reconcile's findings about a PA, to be written as its status."""

    service_name: str | None = None  # None: leave as it was
    metrics_service_name: str | None = None
    desired_scale: int | None = None
    actual_scale: int | None = None
    active: tuple[str, str, str, float] | None = None  # status, reason, message, since
    scale_target_initialized: bool = False
    sks_ready: tuple[str, str, str] = ("Unknown", "NotReady", "")  # status, reason, message


def _set(conds: list[Obj], kind: str, status: str, reason: str, message: str, at: float) -> None:
    """Set one condition; its lastTransitionTime moves only when its status changes."""
    new: Obj = {"type": kind, "status": status}
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    for i, old in enumerate(conds):
        if old.get("type") == kind:
            same = old.get("status") == status and old.get("lastTransitionTime")
            new["lastTransitionTime"] = old["lastTransitionTime"] if same else format_time(at)
            conds[i] = new
            return
    new["lastTransitionTime"] = format_time(at)
    conds.append(new)


def pa_status(pa: Obj, found: PaStatus, now: float) -> Obj:
    """The PA's new ``status``: the old one with this reconcile's findings applied."""
    # Shallow: the old status is the informer's object, and only these levels change.
    status: Obj = dict(pa.get("status") or {})
    conds: list[Obj] = [dict(c) for c in status.get("conditions") or [] if isinstance(c, dict)]
    if found.active is not None:
        a_status, a_reason, a_message, a_since = found.active
        _set(conds, CONDITION_ACTIVE, a_status, a_reason, a_message, a_since)
    elif condition({"status": {"conditions": conds}}, CONDITION_ACTIVE) is None:
        _set(conds, CONDITION_ACTIVE, "Unknown", "", "", now)  # InitializeConditions
    if found.scale_target_initialized:
        _set(conds, CONDITION_SCALE_TARGET_INITIALIZED, "True", "", "", now)
    elif condition({"status": {"conditions": conds}}, CONDITION_SCALE_TARGET_INITIALIZED) is None:
        _set(conds, CONDITION_SCALE_TARGET_INITIALIZED, "Unknown", "", "", now)
    _set(conds, CONDITION_SKS_READY, *found.sks_ready, now)
    by_type = {c.get("type"): c for c in conds}
    ready: tuple[str, str, str] = ("True", "", "")
    for kind in _DEPENDENTS:  # the first False wins, else the first Unknown
        dep = by_type[kind]
        if dep.get("status") == "False":
            ready = ("False", str(dep.get("reason", "")), str(dep.get("message", "")))
            break
        if dep.get("status") != "True" and ready[0] == "True":
            ready = ("Unknown", str(dep.get("reason", "")), str(dep.get("message", "")))
    _set(conds, CONDITION_READY, *ready, now)
    status["conditions"] = sorted(conds, key=lambda c: str(c.get("type")))
    if found.service_name is not None:
        status["serviceName"] = found.service_name
    if found.metrics_service_name is not None:
        status["metricsServiceName"] = found.metrics_service_name
    if found.desired_scale is not None:
        status["desiredScale"] = found.desired_scale
    if found.actual_scale is not None:
        status["actualScale"] = found.actual_scale
    status["observedGeneration"] = int(meta(pa).get("generation") or 0)
    return status


def active_condition(
    status: PodAutoscalerStatus, before: ActiveState | None
) -> tuple[str, str, str, float]:
    """Knative's computeActiveCondition, as (status, reason, message, since)."""
    if status.active is ActiveState.ACTIVE:
        return ("True", "", "", status.active_since)
    if status.active is ActiveState.ACTIVATING:
        return (
            "Unknown",
            "Queued",
            "Requests to the target are being buffered as resources are provisioned.",
            status.active_since,
        )
    if before is ActiveState.ACTIVATING:
        # Scaled to zero while activating: only when activation timed out.
        return ("False", "TimedOut", "The target could not be activated.", status.active_since)
    return ("False", "NoTraffic", "The target is not receiving traffic.", status.active_since)

"""Knative's Revision reconciler: the Deployment and the PodAutoscaler, and the Revision status.

pkg/reconciler/revision (revision.go, reconcile_resources.go, cruds.go, resources/pa.go) and
RevisionStatus' lifecycle (pkg/apis/serving/v1/revision_lifecycle.go):

- The Deployment (``deployment.make_deployment``) is created once; later it is rewritten only
  when its hash label changes, keeping ``spec.replicas`` (the autoscaler's) and the selector.
- The PodAutoscaler ``<rev>``: the revision's labels and annotations (so the class and the
  ``autoscaling.knative.dev/*`` keys reach the autoscaler; the class defaults to
  config-autoscaler's ``pod-autoscaler-class`` at creation), ``containerConcurrency``,
  ``scaleTargetRef`` apps/v1 Deployment ``<rev>-deployment``, ``protocolType`` and
  ``reachability``: Reachable while a route holds the revision (``routingState: active``),
  Unreachable once none does (``reserve``) or when it failed with pods wanted and none ready,
  "" while new (``pending``).
- Status, in Knative's order. From the Deployment: ResourcesAvailable (its Progressing/Available
  conditions); if pods are wanted and none is available, the first user container that
  terminated in a pod of the revision marks ContainerHealthy False with reason
  ``ExitCode<n>`` and "Container failed with: <its termination message>"; a ready replica
  marks ContainerHealthy True. From the PodAutoscaler: actual/desiredReplicas, Active (its Ready),
  and ResourcesAvailable/ContainerHealthy True once the scale target was initialized. Ready is
  ResourcesAvailable ∧ ContainerHealthy, so a revision scaled to zero stays Ready (Active False).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from shared.kube.client import KubeClient
from shared.kube.labels import parse_selector
from shared.kube.resources import (
    CLASS_ANNOTATION,
    CONFIGMAPS,
    DEPLOYMENTS,
    PODAUTOSCALERS,
    PODS,
    REVISION_LABEL,
    REVISIONS,
    SYSTEM_NAMESPACE,
    Obj,
    annotations_of,
    key_of,
    labels_of,
    meta,
)

from .base import Cache, Watch, create_or_adopt, owner_keys, replace, update_status
from .config import ControllerConfig
from .configuration import ROUTING_STATE_LABEL
from .deployment import (
    DEPLOYMENT_HASH_LABEL,
    QUEUE_CONTAINER_NAME,
    deployment_name,
    make_deployment,
    make_labels,
    pa_annotations,
    protocol_of,
)
from .meta import (
    Conditions,
    Key,
    condition_status,
    get_condition,
    is_controlled_by,
    owner_reference,
    rfc3339,
)

__all__ = ["RevisionReconciler", "make_pa", "reachability", "revision_status"]

CONFIG_AUTOSCALER = "config-autoscaler"
CONFIG_OBSERVABILITY = "config-observability"
CONFIG_DEPLOYMENT = "config-deployment"
METRIC_ANNOTATION = "autoscaling.knative.dev/metric"
_KPA_DEFAULT_ANNOTATIONS = frozenset({CLASS_ANNOTATION, METRIC_ANNOTATION})
_DEPENDENTS = ("ResourcesAvailable", "ContainerHealthy")


def _pod_ready(pod: Obj) -> bool:
    if meta(pod).get("deletionTimestamp"):
        return False
    ready = get_condition(pod, "Ready")
    return ready is not None and ready.get("status") == "True"


def with_replica_counts(deployment: Obj, pods: Sequence[Obj]) -> Obj:
    """The Deployment with ``readyReplicas``/``availableReplicas`` counted from its pods when
    no Deployment controller wrote them (Kubernetes' would; a kubelet alone may not)."""
    status = deployment.get("status") or {}
    if "readyReplicas" in status and "availableReplicas" in status:
        return deployment
    ready = sum(1 for p in pods if _pod_ready(p))
    out = dict(deployment)
    out["status"] = {"readyReplicas": ready, "availableReplicas": ready, **status}
    return out


def reachability(rev: Obj, deployment: Obj | None) -> str:
    """Knative's PA reachability of a revision (resources/pa.go)."""
    status = rev.get("status") or {}
    infra_failure = any(condition_status(status, t) == "False" for t in _DEPENDENTS)
    if infra_failure and deployment is not None:
        replicas = (deployment.get("spec") or {}).get("replicas")
        ready = (deployment.get("status") or {}).get("readyReplicas") or 0
        if isinstance(replicas, int) and replicas > 0 and ready == 0:
            return "Unreachable"
    state = labels_of(rev).get(ROUTING_STATE_LABEL, "")
    return {"active": "Reachable", "reserve": "Unreachable"}.get(state, "")


def make_pa(rev: Obj, deployment: Obj | None) -> Obj:
    """Knative's MakePA."""
    m = meta(rev)
    spec = rev.get("spec") or {}
    return {
        "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {
            "name": m["name"],
            "namespace": m.get("namespace", ""),
            "labels": make_labels(rev),
            "annotations": pa_annotations(rev),
            "ownerReferences": [owner_reference(rev, REVISIONS)],
        },
        "spec": {
            "containerConcurrency": spec.get("containerConcurrency") or 0,
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(rev),
            },
            "protocolType": protocol_of(rev),
            "reachability": reachability(rev, deployment),
        },
    }


def _annotations_need_sync(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    # Knative's annotationsNeedReconcilingForKPA: autoscaling keys follow the revision, except
    # the class and metric, which the PA keeps once defaulted.
    for k in have:
        autoscaling = k.startswith("autoscaling.knative.dev")
        if autoscaling and k not in _KPA_DEFAULT_ANNOTATIONS and k not in want:
            return True
    for k, v in want.items():
        if k not in have:
            if k not in _KPA_DEFAULT_ANNOTATIONS:
                return True
        elif have[k] != v:
            return True
    return False


def _synced_annotations(have: Mapping[str, str], want: Mapping[str, str]) -> dict[str, str]:
    out = {
        k: v
        for k, v in have.items()
        if k in _KPA_DEFAULT_ANNOTATIONS or not k.startswith("autoscaling.knative.dev")
    }
    out.update(want)
    return out


def _propagate_deployment(conds: Conditions, deployment: Obj) -> None:
    # Knative's TransformDeploymentStatus + PropagateDeploymentStatus.
    dconds = {c.get("type"): c for c in (deployment.get("status") or {}).get("conditions") or ()}
    progressing, available = dconds.get("Progressing"), dconds.get("Available")
    if progressing is not None and progressing.get("status") == "False":
        reason = progressing.get("reason", "")
        conds.mark("ResourcesAvailable", "False", reason, progressing.get("message", ""))
    elif available is not None and available.get("status") == "True":
        conds.mark("ResourcesAvailable", "True")
    else:
        conds.mark("ResourcesAvailable", "Unknown", "Deploying")


def _container_failure(conds: Conditions, deployment: Obj, pods: Sequence[Obj]) -> None:
    """The kubelet's view of a user container that died before the revision was available."""
    timed_out = any(
        c.get("type") == "Progressing"
        and c.get("status") == "False"
        and c.get("reason") == "ProgressDeadlineExceeded"
        for c in (deployment.get("status") or {}).get("conditions") or ()
    )
    for pod in sorted(pods, key=lambda p: meta(p).get("name", "")):
        for cs in (pod.get("status") or {}).get("containerStatuses") or ():
            if cs.get("name") == QUEUE_CONTAINER_NAME:
                continue
            terminated = (cs.get("lastState") or {}).get("terminated")
            waiting = (cs.get("state") or {}).get("waiting")
            if terminated:
                code = terminated.get("exitCode", 0)
                message = terminated.get("message", "")
                if code == 0 and not message:
                    message = "container exited with no error"
                conds.mark(
                    "ContainerHealthy",
                    "False",
                    f"ExitCode{code}",
                    f"Container failed with: {message}",
                )
                return
            if waiting and timed_out:
                conds.mark(
                    "ResourcesAvailable",
                    "False",
                    waiting.get("reason", ""),
                    waiting.get("message", ""),
                )
                return


def _propagate_autoscaler(conds: Conditions, status: Obj, pa: Obj) -> None:
    # Knative's PropagateAutoscalerStatus.
    ps = pa.get("status") or {}
    unavailable = conds.is_false("ResourcesAvailable") or conds.is_false("ContainerHealthy")
    for src, dst in (("actualScale", "actualReplicas"), ("desiredScale", "desiredReplicas")):
        value = ps.get(src)
        if isinstance(value, int) and value >= 0:
            status[dst] = value
        else:
            status.pop(dst, None)
    ready = get_condition(ps, "Ready")
    if ready is None:
        conds.mark("Active", "Unknown", "Deploying")
        if not unavailable:
            conds.mark("ResourcesAvailable", "Unknown", "Deploying")
        return
    initialized = condition_status(ps, "ScaleTargetInitialized") == "True"
    if initialized and not unavailable:
        conds.mark("ResourcesAvailable", "True")
        conds.mark("ContainerHealthy", "True")
    if conds.is_true("ResourcesAvailable") and (not ps.get("serviceName") or not initialized):
        conds.mark("ResourcesAvailable", "Unknown", "Deploying")
    state = ready.get("status")
    reason, message = ready.get("reason", ""), ready.get("message", "")
    if state == "True":
        conds.mark("Active", "True")
    elif state == "False":
        if not initialized and not unavailable and ps.get("serviceName"):
            conds.mark(
                "ResourcesAvailable",
                "False",
                "ProgressDeadlineExceeded",
                "Initial scale was never achieved",
            )
        conds.mark("Active", "False", reason, message)
    else:
        conds.mark("Active", "Unknown", reason, message)


def revision_status(
    rev: Obj, deployment: Obj | None, pa: Obj | None, pods: Sequence[Obj], now: str
) -> Obj:
    """The Revision's status from its Deployment, its pods and its PodAutoscaler."""
    old = rev.get("status") or {}
    status: Obj = {k: v for k, v in old.items() if k not in ("conditions", "observedGeneration")}
    conds = Conditions(old.get("conditions") or (), _DEPENDENTS)
    if deployment is None:
        conds.mark("ResourcesAvailable", "Unknown", "Deploying")
        conds.mark("ContainerHealthy", "Unknown", "Deploying")
    else:
        _propagate_deployment(conds, deployment)
        dspec, dstatus = deployment.get("spec") or {}, deployment.get("status") or {}
        if (dspec.get("replicas") or 0) > 0 and not dstatus.get("availableReplicas"):
            _container_failure(conds, deployment, pods)
        if (dstatus.get("readyReplicas") or 0) > 0:
            conds.mark("ContainerHealthy", "True")
    if pa is not None:
        _propagate_autoscaler(conds, status, pa)
    status["observedGeneration"] = meta(rev).get("generation", 0) or 1
    status["conditions"] = conds.result(now)
    return status


class RevisionReconciler:
    """serving.knative.dev Revisions → Deployment + PodAutoscaler, and the Revision status."""

    name = "revision"
    resource = REVISIONS

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def _pod_revision(self, pod: Obj) -> list[Key]:
        rev = labels_of(pod).get(REVISION_LABEL)
        return [(key_of(pod)[0], rev)] if rev else []

    def _all_revisions(self, cm: Obj) -> list[Key]:
        # A changed ConfigMap changes every revision's Deployment (Knative's global resync).
        if meta(cm).get("name") not in (CONFIG_AUTOSCALER, CONFIG_OBSERVABILITY, CONFIG_DEPLOYMENT):
            return []
        return [key_of(r) for r in self._cache.list_all(REVISIONS)]

    def watches(self) -> Sequence[Watch]:
        return (
            Watch(DEPLOYMENTS, owner_keys("Revision")),
            Watch(PODAUTOSCALERS, owner_keys("Revision")),
            Watch(PODS, self._pod_revision),
            Watch(CONFIGMAPS, self._all_revisions, namespace=SYSTEM_NAMESPACE),
        )

    def _configmap(self, name: str) -> Mapping[str, str]:
        cm = self._cache.get(CONFIGMAPS, SYSTEM_NAMESPACE, name)
        data = cm.get("data") if cm else None
        return data if isinstance(data, dict) else {}

    async def reconcile(self, namespace: str, name: str) -> None:
        rev = self._cache.get(REVISIONS, namespace, name)
        if rev is None:
            return
        now = rfc3339(self._cfg.clock())
        want = make_deployment(
            rev,
            queue_image=self._cfg.queue_sidecar_image,
            queue_command=self._cfg.queue_sidecar_command,
            queue_env=self._cfg.queue_env,
            autoscaler_data=self._configmap(CONFIG_AUTOSCALER),
            observability=self._configmap(CONFIG_OBSERVABILITY),
            progress_deadline_s=self._cfg.progress_deadline_s,
        )
        deployment, problem = await self._deployment(rev, want)
        pods: list[Obj] = []
        if deployment is not None:
            selector = (deployment.get("spec") or {}).get("selector") or {}
            match = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
            sel = parse_selector(match)
            pods = [p for p in self._cache.list(PODS, namespace) if sel.matches(labels_of(p))]
            deployment = with_replica_counts(deployment, pods)
        pa, pa_problem = (None, "") if deployment is None else await self._pa(rev, deployment)
        status = revision_status(rev, deployment, pa, pods, now)
        if problem or pa_problem:
            conds = Conditions(status["conditions"], _DEPENDENTS)
            conds.mark("ResourcesAvailable", "False", "NotOwned", problem or pa_problem)
            status["conditions"] = conds.result(now)
        await update_status(self._client, REVISIONS, rev, status)

    async def _deployment(self, rev: Obj, want: Obj) -> tuple[Obj | None, str]:
        namespace, name = key_of(want)
        have = self._cache.get(DEPLOYMENTS, namespace, name)
        if have is None:
            return await create_or_adopt(self._client, DEPLOYMENTS, want), ""
        if not is_controlled_by(have, rev):
            return None, f'There is an existing Deployment "{name}" that we do not own.'
        have_hash = labels_of(have).get(DEPLOYMENT_HASH_LABEL)
        if have_hash == want["metadata"]["labels"][DEPLOYMENT_HASH_LABEL]:
            return have, ""
        body = copy.deepcopy(have)
        spec = copy.deepcopy(want["spec"])
        spec["replicas"] = (have.get("spec") or {}).get("replicas", spec["replicas"])
        spec["selector"] = (have.get("spec") or {}).get("selector", spec["selector"])
        body["spec"] = spec
        body["metadata"]["labels"] = _merge_meta(want["metadata"]["labels"], labels_of(have))
        body["metadata"]["annotations"] = _merge_meta(
            want["metadata"]["annotations"], annotations_of(have)
        )
        return await replace(self._client, DEPLOYMENTS, body), ""

    async def _pa(self, rev: Obj, deployment: Obj) -> tuple[Obj | None, str]:
        namespace, name = key_of(rev)
        want = make_pa(rev, deployment)
        have = self._cache.get(PODAUTOSCALERS, namespace, name)
        if have is None:
            annotations = want["metadata"]["annotations"]
            if CLASS_ANNOTATION not in annotations:
                data = self._configmap(CONFIG_AUTOSCALER)
                annotations[CLASS_ANNOTATION] = data.get(
                    "pod-autoscaler-class", "kpa.autoscaling.knative.dev"
                )
            return await create_or_adopt(self._client, PODAUTOSCALERS, want), ""
        if not is_controlled_by(have, rev):
            return None, f'There is an existing PodAutoscaler "{name}" that we do not own.'
        have_ann = annotations_of(have)
        want_ann = want["metadata"]["annotations"]
        if have.get("spec") == want["spec"] and not _annotations_need_sync(have_ann, want_ann):
            return have, ""
        body = copy.deepcopy(have)
        body["spec"] = want["spec"]
        body["metadata"]["annotations"] = _synced_annotations(have_ann, want_ann)
        return await replace(self._client, PODAUTOSCALERS, body), ""


def _merge_meta(desired: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
    # Knative's mergeMetadata: keys other writers added (not Knative's own) are kept.
    external = {k: v for k, v in current.items() if k != "app" and "knative.dev/" not in k}
    return {**external, **desired}

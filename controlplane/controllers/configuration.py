"""Knative's Configuration reconciler: each generation of a template is one Revision.

pkg/reconciler/configuration: the revision of generation ``g`` is named by the template
(``spec.template.metadata.name``) or ``<config>-<g:05d>`` (kmeta.ChildName), carries the
template's metadata plus Knative's labels (configuration, configurationGeneration,
configurationUID, service, serviceUID), starts ``routingState: pending`` for the route's
labeler, and is controlled by the Configuration. A name that already belongs to another owner
is refused as Knative's create fails: Ready False, ``RevisionFailed``, "Revision creation failed
with message: revisions.serving.knative.dev "x" already exists.".

Status: ``latestCreatedRevisionName`` is that revision; ``latestReadyRevisionName`` is the
newest ready revision of this configuration not newer than it (so a new revision that never
turns ready leaves traffic where it was); Ready follows the latest created revision (True,
Unknown while it deploys, False ``RevisionFailed`` with its message when it fails).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from shared.kube.client import KubeClient
from shared.kube.resources import (
    CONFIGURATION_GENERATION_LABEL,
    CONFIGURATION_LABEL,
    CONFIGURATIONS,
    REVISIONS,
    SERVICE_LABEL,
    Obj,
    labels_of,
    meta,
)

from .base import Cache, Watch, create_or_adopt, owner_keys, update_status
from .config import ControllerConfig
from .meta import (
    Conditions,
    child_name,
    condition_status,
    get_condition,
    is_controlled_by,
    owner_reference,
    rfc3339,
)
from .service import SERVICE_UID_LABEL

__all__ = [
    "CONFIGURATION_UID_LABEL",
    "ROUTING_STATE_LABEL",
    "ROUTING_STATE_MODIFIED_ANNOTATION",
    "ConfigurationReconciler",
    "configuration_status",
    "make_revision",
    "revision_name",
]

CONFIGURATION_UID_LABEL = "serving.knative.dev/configurationUID"
ROUTING_STATE_LABEL = "serving.knative.dev/routingState"
ROUTING_STATE_MODIFIED_ANNOTATION = "serving.knative.dev/routingStateModified"


def generation_of(obj: Obj) -> int:
    g = meta(obj).get("generation")
    return g if isinstance(g, int) and g > 0 else 1


def revision_name(config: Obj) -> str:
    """The name of the revision for the Configuration's current generation."""
    template = (config.get("spec") or {}).get("template") or {}
    fixed = (template.get("metadata") or {}).get("name")
    if fixed:
        return str(fixed)
    return child_name(meta(config)["name"], f"-{generation_of(config):05d}")


def make_revision(config: Obj, now: str) -> Obj:
    """Knative's MakeRevision: the template as a Revision, labelled and owned."""
    m = meta(config)
    template = copy.deepcopy((config.get("spec") or {}).get("template") or {})
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    annotations = dict(tmeta.get("annotations") or {})
    labels[CONFIGURATION_LABEL] = m["name"]
    labels[CONFIGURATION_GENERATION_LABEL] = str(generation_of(config))
    if m.get("uid"):
        labels[CONFIGURATION_UID_LABEL] = m["uid"]
    for key in (SERVICE_LABEL, SERVICE_UID_LABEL):
        if value := labels_of(config).get(key):
            labels[key] = value
    # Pending tells the labeler that no route has looked at this revision yet.
    labels[ROUTING_STATE_LABEL] = "pending"
    annotations[ROUTING_STATE_MODIFIED_ANNOTATION] = now
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": revision_name(config),
            "namespace": m.get("namespace", ""),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(config, CONFIGURATIONS)],
        },
        "spec": template.get("spec") or {},
    }


def _generation_label(rev: Obj) -> int:
    try:
        return int(labels_of(rev).get(CONFIGURATION_GENERATION_LABEL, "0"))
    except ValueError:
        return 0


def configuration_status(
    config: Obj, latest: Obj | None, revisions: Sequence[Obj], now: str, *, problem: str = ""
) -> Obj:
    """The Configuration's status from its latest created revision and its ready ones."""
    old = config.get("status") or {}
    conds = Conditions(old.get("conditions") or ())
    status: Obj = {"observedGeneration": generation_of(config)}
    latest_ready = str(old.get("latestReadyRevisionName", ""))
    names = {meta(r)["name"] for r in revisions}
    if latest_ready not in names:
        latest_ready = ""
    if problem:
        conds.mark("Ready", "False", "RevisionFailed", problem)
        if old.get("latestCreatedRevisionName"):
            status["latestCreatedRevisionName"] = old["latestCreatedRevisionName"]
    elif latest is not None:
        name = meta(latest)["name"]
        status["latestCreatedRevisionName"] = name
        ceiling = _generation_label(latest)
        ready = [
            r
            for r in revisions
            if condition_status(r, "Ready") == "True" and _generation_label(r) <= ceiling
        ]
        if ready:
            newest = max(ready, key=_generation_label)
            current = next((r for r in revisions if meta(r)["name"] == latest_ready), None)
            if current is None or _generation_label(newest) >= _generation_label(current):
                latest_ready = meta(newest)["name"]
        state = condition_status(latest, "Ready")
        if state == "True":
            conds.mark("Ready", "True")
        elif state == "False":
            c = get_condition(latest, "Ready") or {}
            message = f'Revision "{name}" failed with message: {c.get("message", "")}.'
            conds.mark("Ready", "False", "RevisionFailed", message)
        else:
            conds.mark("Ready", "Unknown")
    if latest_ready:
        status["latestReadyRevisionName"] = latest_ready
    status["conditions"] = conds.result(now)
    return status


class ConfigurationReconciler:
    """serving.knative.dev Configurations → a Revision per generation, and the status."""

    name = "configuration"
    resource = CONFIGURATIONS

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def watches(self) -> Sequence[Watch]:
        return (Watch(REVISIONS, owner_keys("Configuration")),)

    async def reconcile(self, namespace: str, name: str) -> None:
        config = self._cache.get(CONFIGURATIONS, namespace, name)
        if config is None:
            return
        now = rfc3339(self._cfg.clock())
        rev_name = revision_name(config)
        latest = self._cache.get(REVISIONS, namespace, rev_name)
        if latest is None:
            latest = await create_or_adopt(self._client, REVISIONS, make_revision(config, now))
        problem = ""
        if latest is not None and not is_controlled_by(latest, config):
            problem = (
                "Revision creation failed with message: "
                f'revisions.serving.knative.dev "{rev_name}" already exists.'
            )
            latest = None
        owned = [
            r
            for r in self._cache.list(REVISIONS, namespace)
            if labels_of(r).get(CONFIGURATION_LABEL) == name and is_controlled_by(r, config)
        ]
        if latest is not None and all(meta(r)["name"] != rev_name for r in owned):
            owned.append(latest)
        status = configuration_status(config, latest, owned, now, problem=problem)
        await update_status(self._client, CONFIGURATIONS, config, status)

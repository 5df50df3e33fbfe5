"""Knative's sources for ``knpy serve``: PingSource, SinkBinding and ContainerSource.

- **PingSource** (pkg/reconciler/pingsource, the mtping adapter): the sink is resolved into
  ``status.sinkUri`` and the source handed to the ping adapter that runs inside ``knpy serve``
  (controlplane/pingadapter.py: one asyncio task per source, no Deployment), which sends a
  ``dev.knative.sources.ping`` event on each tick of the cron schedule. Conditions:
  SinkProvided, Deployed (True once the adapter has the schedule), OIDCIdentityCreated.
- **SinkBinding** (pkg/reconciler/sinkbinding, ``SinkBinding.Do``/``Undo``): every subject, an
  ``apps/v1`` Deployment or a Knative Service named by ``name`` or matched by ``selector``,
  gets ``K_SINK`` (the resolved sink) and ``K_CE_OVERRIDES`` (the JSON of ``ceOverrides``, ""
  when none) in each container's env, and the annotation ``sources.knative.dev/sinkbinding`` with
  the binding's name. Knative injects through a mutating webhook on the subject's pods; here the
  subject's pod template is updated, so the Deployment rolls its pods (a Knative Service makes a
  new Revision). When the binding is deleted, the subjects carrying its annotation lose the
  variables again. Conditions: SinkProvided, Available (``SubjectMissing`` without a subject),
  and the OIDC/trust-bundle conditions True.
- **ContainerSource** (pkg/reconciler/containersource): a Deployment ``<name>-deployment`` owned
  by the source runs its pod template, with ``K_SINK`` and ``K_CE_OVERRIDES`` injected directly
  (Knative does it through a SinkBinding it creates). Conditions: SinkBindingReady (the sink
  resolved and injected), ReceiveAdapterReady (the Deployment has an available replica).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from shared.kube.client import KubeClient
from shared.kube.labels import parse_selector
from shared.kube.resources import (
    CONTAINERSOURCES,
    DEPLOYMENTS,
    KSERVICES,
    PINGSOURCES,
    SINKBINDINGS,
    Obj,
    Resource,
    annotations_of,
    key_of,
    labels_of,
    meta,
)

from .addressable import Resolved, resolve
from .base import Cache, Watch, create_or_adopt, owner_keys, replace, update_status
from .config import ControllerConfig
from .meta import Conditions, Key, child_name, is_controlled_by, owner_reference, rfc3339

__all__ = [
    "BINDING_ANNOTATION",
    "PING_EVENT_TYPE",
    "ContainerSourceReconciler",
    "PingJob",
    "PingJobs",
    "PingSourceReconciler",
    "SinkBindingReconciler",
    "bind_env",
    "make_ping_job",
    "make_source_deployment",
]

PING_EVENT_TYPE: Final = "dev.knative.sources.ping"
BINDING_ANNOTATION: Final = "sources.knative.dev/sinkbinding"
SOURCE_NAME_LABEL: Final = "sources.knative.dev/name"
SOURCE_LABEL: Final = "sources.knative.dev/source"
_INJECTED: Final = ("K_SINK", "K_CE_OVERRIDES", "K_CA_CERTS")
_OIDC_OFF: Final = "authentication-oidc feature disabled"


# -- shared: a source's sink and overrides ---------------------------------------------------


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def ce_overrides(spec: Mapping[str, object]) -> str:
    """K_CE_OVERRIDES: the JSON of ``ceOverrides``, "" when there are none (Knative's)."""
    overrides = spec.get("ceOverrides")
    return json.dumps(overrides, separators=(",", ":")) if overrides else ""


def bind_env(pod_spec: Obj, sink: str | None, overrides: str) -> Obj:
    """``pod_spec`` with K_SINK/K_CE_OVERRIDES removed from every container (and init
    container), then, when ``sink`` is given, appended again (SinkBinding's Undo then Do)."""
    out = copy.deepcopy(pod_spec)
    for key in ("initContainers", "containers"):
        for c in out.get(key) or ():
            env = [e for e in c.get("env") or () if e.get("name") not in _INJECTED]
            if sink is not None:
                env += [{"name": "K_SINK", "value": sink},
                        {"name": "K_CE_OVERRIDES", "value": overrides}]
            if env:
                c["env"] = env
            else:
                c.pop("env", None)
    return out


def _sink(cache: Cache, obj: Obj, cfg: ControllerConfig) -> Resolved:
    return resolve(cache, _spec(obj).get("sink"), key_of(obj)[0], cfg.domain, cfg.ingress_port)


def _mark_sink(conds: Conditions, status: Obj, sink: Resolved, type_: str = "SinkProvided") -> None:
    if sink.ok:
        conds.mark(type_, "True")
        status["sinkUri"] = sink.url
    else:
        conds.mark(type_, "False", "NotFound", f"Could not resolve sink: {sink.message}")


# -- PingSource ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PingJob:
    """What the ping adapter needs of one PingSource: when, where, and the event's parts."""

    schedule: str
    timezone: str
    sink: str
    source: str  # the event's ``source``: /apis/v1/namespaces/<ns>/pingsources/<name>
    data: bytes
    content_type: str
    extensions: tuple[tuple[str, str], ...] = ()


class PingJobs(Protocol):
    """The adapter's side: ``set`` a source's job (None stops it)."""

    def set(self, key: Key, job: PingJob | None) -> None: ...


def make_ping_job(source: Obj, sink: str) -> PingJob:
    """A PingSource's job (the webhook validated schedule, timezone and data)."""
    ns, name = key_of(source)
    spec = _spec(source)
    if spec.get("dataBase64"):
        data = base64.b64decode(str(spec["dataBase64"]))
    else:
        data = str(spec.get("data") or "").encode()
    overrides = spec.get("ceOverrides") or {}
    extensions = overrides.get("extensions") if isinstance(overrides, dict) else None
    return PingJob(
        schedule=str(spec.get("schedule") or "* * * * *"),
        timezone=str(spec.get("timezone") or ""),
        sink=sink,
        source=f"/apis/v1/namespaces/{ns}/pingsources/{name}",
        data=data,
        content_type=str(spec.get("contentType") or ""),
        extensions=tuple(sorted((str(k), str(v)) for k, v in (extensions or {}).items())),
    )


class PingSourceReconciler:
    """PingSources: the sink resolved, the schedule handed to the in-process adapter."""

    name = "pingsource"
    resource = PINGSOURCES

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig,
                 jobs: PingJobs) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg
        self._jobs = jobs

    def watches(self) -> Sequence[Watch]:
        return _sink_watches(self._cache, PINGSOURCES)

    async def reconcile(self, namespace: str, name: str) -> None:
        source = self._cache.get(PINGSOURCES, namespace, name)
        if source is None:
            self._jobs.set((namespace, name), None)
            return
        sink = _sink(self._cache, source, self._cfg)
        old = source.get("status") or {}
        conds = Conditions(old.get("conditions") or (),
                           ("SinkProvided", "Deployed", "OIDCIdentityCreated"))
        status: Obj = {"observedGeneration": meta(source).get("generation", 0)}
        _mark_sink(conds, status, sink)
        conds.mark("OIDCIdentityCreated", "True", _OIDC_OFF)
        if sink.ok:
            self._jobs.set((namespace, name), make_ping_job(source, sink.url))
            conds.mark("Deployed", "True")
        else:
            self._jobs.set((namespace, name), None)
            conds.mark("Deployed", "Unknown", "SinkNotResolved", "waiting for the sink")
        status["conditions"] = conds.result(rfc3339(self._cfg.clock()))
        await update_status(self._client, PINGSOURCES, source, status)


def _sink_watches(cache: Cache, resource: Resource) -> tuple[Watch, ...]:
    """A change of any addressable requeues the sources of its namespace."""
    from .addressable import ADDRESSABLES

    def same_namespace(obj: Obj) -> list[Key]:
        return [key_of(s) for s in cache.list(resource, key_of(obj)[0])]

    return tuple(Watch(r, same_namespace) for r in ADDRESSABLES.values())


# -- SinkBinding -----------------------------------------------------------------------------

# The kinds a SinkBinding may bind, and where their pod spec is.
_SUBJECTS: Final[dict[tuple[str, str], tuple[Resource, tuple[str, ...]]]] = {
    ("apps/v1", "Deployment"): (DEPLOYMENTS, ("spec", "template", "spec")),
    ("serving.knative.dev/v1", "Service"): (KSERVICES, ("spec", "template", "spec")),
}


def _dig(obj: Obj, path: Sequence[str]) -> Obj:
    for key in path:
        nxt = obj.get(key)
        obj = nxt if isinstance(nxt, dict) else {}
    return obj


def _with_pod_spec(obj: Obj, path: Sequence[str], pod_spec: Obj) -> Obj:
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = pod_spec
    return out


class SinkBindingReconciler:
    """SinkBindings: K_SINK and K_CE_OVERRIDES in their subjects' pod templates."""

    name = "sinkbinding"
    resource = SINKBINDINGS

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def watches(self) -> Sequence[Watch]:
        def bindings(obj: Obj) -> list[Key]:
            ns = key_of(obj)[0]
            out = [key_of(b) for b in self._cache.list(SINKBINDINGS, ns)]
            if bound := annotations_of(obj).get(BINDING_ANNOTATION):
                out.append((ns, bound))  # a deleted binding's leftovers
            return out

        return (
            *_sink_watches(self._cache, SINKBINDINGS),
            Watch(DEPLOYMENTS, bindings),
        )

    def _subjects(self, binding: Obj) -> tuple[Resource, tuple[str, ...], list[Obj]] | None:
        subject = _spec(binding).get("subject") or {}
        found = _SUBJECTS.get((str(subject.get("apiVersion")), str(subject.get("kind"))))
        if found is None:
            return None
        resource, path = found
        ns = str(subject.get("namespace") or key_of(binding)[0])
        if subject.get("name"):
            obj = self._cache.get(resource, ns, str(subject["name"]))
            return resource, path, [obj] if obj is not None else []
        selector = subject.get("selector") or {}
        labels = selector.get("matchLabels") or {}
        sel = parse_selector(",".join(f"{k}={v}" for k, v in sorted(labels.items())))
        matched = [o for o in self._cache.list(resource, ns) if sel.matches(labels_of(o))]
        return resource, path, matched

    async def _write(self, resource: Resource, path: tuple[str, ...], obj: Obj,
                     sink: str | None, overrides: str, binding: str | None) -> None:
        pod_spec = bind_env(_dig(obj, path), sink, overrides)
        out = _with_pod_spec(obj, path, pod_spec)
        annotations = out.setdefault("metadata", {}).setdefault("annotations", {})
        if binding is None:
            annotations.pop(BINDING_ANNOTATION, None)
        else:
            annotations[BINDING_ANNOTATION] = binding
        if out != obj:
            await replace(self._client, resource, out)

    async def reconcile(self, namespace: str, name: str) -> None:
        binding = self._cache.get(SINKBINDINGS, namespace, name)
        if binding is None:
            await self._unbind(namespace, name)
            return
        sink = _sink(self._cache, binding, self._cfg)
        old = binding.get("status") or {}
        conds = Conditions(
            old.get("conditions") or (),
            ("Available", "SinkProvided", "OIDCIdentityCreated", "OIDCTokenSecretCreated",
             "TrustBundlePropagated"),
        )
        status: Obj = {"observedGeneration": meta(binding).get("generation", 0)}
        _mark_sink(conds, status, sink)
        for type_ in ("OIDCIdentityCreated", "OIDCTokenSecretCreated"):
            conds.mark(type_, "True", _OIDC_OFF)
        conds.mark("TrustBundlePropagated", "True")
        found = self._subjects(binding)
        subject = _spec(binding).get("subject") or {}
        if found is None:
            kinds = ", ".join(f"{k} ({a})" for a, k in _SUBJECTS)
            what = f"{subject.get('kind')} ({subject.get('apiVersion')})"
            conds.mark("Available", "False", "SubjectUnsupported",
                       f"knpy binds {kinds}, not {what}")
        elif not found[2]:
            conds.mark("Available", "False", "SubjectMissing",
                       f"no {subject.get('kind')} matches the subject")
        elif sink.ok:
            resource, path, objs = found
            for obj in objs:
                await self._write(resource, path, obj, sink.url, ce_overrides(_spec(binding)), name)
            conds.mark("Available", "True")
        status["conditions"] = conds.result(rfc3339(self._cfg.clock()))
        await update_status(self._client, SINKBINDINGS, binding, status)

    async def _unbind(self, namespace: str, name: str) -> None:
        for resource, path in _SUBJECTS.values():
            for obj in self._cache.list(resource, namespace):
                if annotations_of(obj).get(BINDING_ANNOTATION) == name:
                    await self._write(resource, path, obj, None, "", None)


# -- ContainerSource -------------------------------------------------------------------------


def make_source_deployment(source: Obj, sink: str) -> Obj:
    """The Deployment running a ContainerSource's template, its sink injected."""
    ns, name = key_of(source)
    template = copy.deepcopy(_spec(source).get("template") or {})
    tmeta = template.get("metadata") or {}
    labels = {**(tmeta.get("labels") or {}), SOURCE_LABEL: "container-source-controller",
              SOURCE_NAME_LABEL: name}
    pod_spec = bind_env(template.get("spec") or {}, sink, ce_overrides(_spec(source)))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": child_name(name, "-deployment"),
            "namespace": ns,
            "labels": labels,
            "ownerReferences": [owner_reference(source, CONTAINERSOURCES)],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {SOURCE_NAME_LABEL: name,
                                         SOURCE_LABEL: "container-source-controller"}},
            "template": {"metadata": {**tmeta, "labels": labels}, "spec": pod_spec},
        },
    }


def _available(deployment: Obj | None) -> bool:
    status = (deployment or {}).get("status") or {}
    return int(status.get("availableReplicas") or 0) > 0


class ContainerSourceReconciler:
    """ContainerSources: a Deployment of their template with the sink in its env."""

    name = "containersource"
    resource = CONTAINERSOURCES

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def watches(self) -> Sequence[Watch]:
        return (*_sink_watches(self._cache, CONTAINERSOURCES),
                Watch(DEPLOYMENTS, owner_keys("ContainerSource")))

    async def reconcile(self, namespace: str, name: str) -> None:
        source = self._cache.get(CONTAINERSOURCES, namespace, name)
        if source is None:
            return  # the Deployment goes with it (owner reference)
        sink = _sink(self._cache, source, self._cfg)
        old = source.get("status") or {}
        conds = Conditions(old.get("conditions") or (), ("SinkBindingReady", "ReceiveAdapterReady"))
        status: Obj = {"observedGeneration": meta(source).get("generation", 0)}
        _mark_sink(conds, status, sink, "SinkBindingReady")
        deployment = self._cache.get(DEPLOYMENTS, namespace, child_name(name, "-deployment"))
        if sink.ok:
            deployment = await self._deployment(source, deployment, sink.url)
        if deployment is not None and not is_controlled_by(deployment, source):
            conds.mark("ReceiveAdapterReady", "False", "NotOwned",
                       f'Deployment "{key_of(deployment)[1]}" is not owned by this source')
        elif _available(deployment):
            conds.mark("ReceiveAdapterReady", "True")
        else:
            conds.mark("ReceiveAdapterReady", "Unknown", "DeploymentUnavailable",
                       f'The Deployment "{child_name(name, "-deployment")}" is unavailable.')
        status["conditions"] = conds.result(rfc3339(self._cfg.clock()))
        await update_status(self._client, CONTAINERSOURCES, source, status)

    async def _deployment(self, source: Obj, current: Obj | None, sink: str) -> Obj | None:
        want = make_source_deployment(source, sink)
        if current is None:
            return await create_or_adopt(self._client, DEPLOYMENTS, want)
        if not is_controlled_by(current, source):
            return current
        if current.get("spec", {}).get("template") == want["spec"]["template"]:
            return current
        body = copy.deepcopy(current)
        body["spec"]["template"] = want["spec"]["template"]
        body["metadata"]["labels"] = want["metadata"]["labels"]
        return await replace(self._client, DEPLOYMENTS, body)


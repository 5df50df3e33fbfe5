"""The REST semantics of kube-apiserver over the store, without HTTP.

Theory of operation. Each verb reads the stored object, decides the object to write (metadata
set by the server: uid, creationTimestamp, generation, deletionTimestamp; status kept or
replaced according to the subresource), runs admission for creates and updates of the main
resource, then writes it through the store, which stamps the resourceVersion and emits the
watch event. A dry run stops before the write. Deletes honour finalizers (mark, then remove
once they are emptied) and cascade to dependents by ``ownerReferences`` (Background and
Foreground delete them, Orphan strips the reference), as Kubernetes' garbage collector does,
but synchronously. Deleting a namespace deletes everything in it.

Every failure is a ``StatusError`` with Kubernetes' reason, so the HTTP shell only encodes.
"""

from __future__ import annotations

import builtins
import random
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from controlplane.kubeapi.admission import AdmissionHook, Denied, Operation
from controlplane.kubeapi.errors import StatusError
from controlplane.kubeapi.patch import (
    PatchError,
    clone,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from controlplane.kubeapi.registry import Kind, Registry
from controlplane.kubeapi.selectors import FieldSelector
from controlplane.kubeapi.store import Store
from shared.kube.labels import Selector
from shared.kube.resources import EVENTING_NAMESPACE, NAMESPACES, SYSTEM_NAMESPACE, Obj, Resource

__all__ = ["INITIAL_NAMESPACES", "PatchKind", "Propagation", "Rest", "StoreReader", "now_rfc3339"]

PatchKind = Literal["merge", "json", "strategic"]
Propagation = Literal["Background", "Foreground", "Orphan"]

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", SYSTEM_NAMESPACE, EVENTING_NAMESPACE)
# kube-apiserver's NamespaceLifecycle refuses to delete these.
_UNDELETABLE_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
# A DNS-1123 subdomain (most kinds' names), at most 253 characters.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# apimachinery's names.SimpleNameGenerator alphabet (no vowels, no confusable digits).
_GEN_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_WEBHOOK = "validation.webhook.serving.knative.dev"
# Knative Eventing's webhook answers for its three groups.
_EVENTING_GROUPS = ("eventing.knative.dev", "messaging.knative.dev", "sources.knative.dev")
_EVENTING_WEBHOOK = "validation.webhook.eventing.knative.dev"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _qual(kind: Kind) -> tuple[str, str]:
    return kind.resource.plural, kind.resource.group


def _spec_part(obj: Obj) -> dict[str, Any]:
    """Everything generation tracks: all but metadata, status and the type fields."""
    return {
        k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")
    }


def _ns(kind: Kind, namespace: str | None) -> str:
    return (namespace or "") if kind.resource.namespaced else ""


class StoreReader:
    """The ``ObjectReader`` over the store, for admission hooks and in-process readers:
    copies, so a caller cannot change stored objects behind the store's back."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        ns = namespace if resource.namespaced else ""
        obj = self._store.get(str(resource), ns, name)
        return clone(obj) if obj is not None else None

    def list(self, resource: Resource, namespace: str | None = None) -> list[Obj]:
        ns = namespace if resource.namespaced else None
        return [clone(o) for o in self._store.list(str(resource), ns)]


class Rest:
    """The verbs; each returns the object to send and raises ``StatusError``."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        admission: Mapping[Resource, AdmissionHook] | None = None,
        clock: Callable[[], str] = now_rfc3339,
    ) -> None:
        self.store = store
        self.registry = registry
        self.reader = StoreReader(store)
        self._admission = {str(r): h for r, h in (admission or {}).items()}
        self._clock = clock

    # -- bootstrap ----------------------------------------------------------------------------
    def ensure_namespaces(self) -> None:
        kind = self.registry.by_resource(NAMESPACES)
        assert kind is not None
        for name in INITIAL_NAMESPACES:
            if self.store.get(kind.key, "", name) is None:
                self.create(kind, None, {"metadata": {"name": name}})

    # -- reads --------------------------------------------------------------------------------
    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(kind.key, _ns(kind, namespace), name)
        if obj is None:
            raise StatusError.not_found(*_qual(kind), name)
        return obj

    def list(
        self,
        kind: Kind,
        namespace: str | None,
        labels: Selector,
        fields: FieldSelector,
    ) -> Obj:
        """The List object; items sorted by namespace and name as etcd's keys are."""
        ns = namespace if kind.resource.namespaced else None
        name = fields.name()
        if name is not None and ns is not None:
            one = self.store.get(kind.key, ns, name)
            candidates = [one] if one is not None else []
        else:
            candidates = self.store.list(kind.key, ns)
        items = [
            o for o in candidates
            if labels.matches(o["metadata"].get("labels")) and fields.matches(o)
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return {
            "kind": f"{kind.resource.kind}List",
            "apiVersion": kind.resource.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }

    # -- create -------------------------------------------------------------------------------
    def create(self, kind: Kind, namespace: str | None, body: Obj, dry_run: bool = False) -> Obj:
        obj = self._check_body(kind, namespace, None, body)
        meta = obj["metadata"]
        ns = _ns(kind, namespace)
        if kind.resource.namespaced:
            meta["namespace"] = ns
            self._require_namespace(ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise self._invalid(
                    kind, "", "metadata.name", "Required value: name or generateName is required"
                )
            meta["name"] = self._generate_name(kind, ns, str(prefix))
        name = str(meta["name"])
        self._validate_name(kind, name)
        if self.store.get(kind.key, ns, name) is not None:
            raise StatusError.already_exists(*_qual(kind), name)
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "selfLink", "managedFields"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self._clock()
        if kind.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if kind.status:
            obj.pop("status", None)
            initial = _initial_status(kind)
            if initial is not None:
                obj["status"] = initial
        _apply_defaults(kind, obj)
        obj = self._admit(kind, "CREATE", obj, None)
        if dry_run:
            return obj
        created = self.store.put(kind.key, obj).obj
        refs = created["metadata"].get("ownerReferences") or ()
        owners = [r.get("uid") for r in refs if isinstance(r, dict)]
        if owners and not any(self.store.has_uid(str(u)) for u in owners):
            # Kubernetes' garbage collector deletes a dependent whose owners are all gone: a
            # controller acting on a stale cache (a Revision's PodAutoscaler created just after
            # the Revision's delete) must not leave an orphan for ever.
            self.delete(kind, ns if kind.resource.namespaced else None, name, "Background")
        return created

    # -- update / patch -----------------------------------------------------------------------
    def update(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        body: Obj,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        if subresource == "scale":
            return self._update_scale(kind, namespace, name, body, dry_run)
        old = self.get(kind, namespace, name)
        obj = self._check_body(kind, namespace, name, body)
        return self._write(kind, old, obj, subresource, dry_run)

    def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch_type: PatchKind,
        patch: Any,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        if patch_type == "strategic" and kind.custom:
            # Kubernetes refuses strategic merge patch on custom resources.
            raise StatusError(
                415, "the body of the request was in an unknown format - accepted media "
                "types include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml", "UnsupportedMediaType",
            )
        if subresource == "scale":
            base = self.get_scale(kind, namespace, name)
        else:
            base = self.get(kind, namespace, name)
        patched = _apply_patch(patch_type, base, patch)
        if not isinstance(patched, dict):
            raise StatusError.bad_request("the patched object is not a JSON object")
        if subresource == "scale":
            return self._update_scale(kind, namespace, name, patched, dry_run)
        # A resourceVersion in the patch is a precondition; absent, the patch applies to the
        # current object.
        obj = self._check_body(kind, namespace, name, patched)
        return self._write(kind, base, obj, subresource, dry_run)

    def _write(
        self, kind: Kind, old: Obj, obj: Obj, subresource: str | None, dry_run: bool
    ) -> Obj:
        """Decide the stored form of an update of ``old`` to ``obj`` and write it."""
        name = old["metadata"]["name"]
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise StatusError.conflict(*_qual(kind), name)
        if subresource == "status":
            if not kind.status:
                raise StatusError.not_found(*_qual(kind), name)
            new = {**old, "metadata": dict(old["metadata"])}
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        elif subresource is not None:
            raise StatusError.not_found(*_qual(kind), name)
        else:
            new = obj
            meta, old_meta = new["metadata"], old["metadata"]
            for k in ("uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
                if k in old_meta:
                    meta[k] = old_meta[k]
                else:
                    meta.pop(k, None)
            meta["namespace"] = old_meta.get("namespace")
            if not kind.resource.namespaced:
                meta.pop("namespace", None)
            meta.pop("managedFields", None)
            if kind.status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            new = self._admit(kind, "UPDATE", new, old)
            # After admission, as kube-apiserver's strategies do (PrepareForUpdate runs on the
            # mutated object): re-defaulting a field the client left out is no spec change.
            if kind.generation and _spec_part(new) != _spec_part(old):
                new["metadata"]["generation"] = int(old_meta.get("generation", 0)) + 1
            elif "generation" in old_meta:
                new["metadata"]["generation"] = old_meta["generation"]
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op write keeps the resourceVersion, as Kubernetes does
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            # The last finalizer is gone: the marked object goes away now, in this state.
            return self._remove(kind, new, "Background", final=True)
        return self.store.put(kind.key, new).obj

    # -- scale --------------------------------------------------------------------------------
    def get_scale(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        if not kind.scale:
            raise StatusError.not_found(*_qual(kind), name)
        obj = self.get(kind, namespace, name)
        return _scale_of(obj)

    def _update_scale(
        self, kind: Kind, namespace: str | None, name: str, body: Obj, dry_run: bool
    ) -> Obj:
        if not kind.scale:
            raise StatusError.not_found(*_qual(kind), name)
        old = self.get(kind, namespace, name)
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise StatusError.conflict(*_qual(kind), name)
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        replicas = spec.get("replicas", 0) if isinstance(spec, dict) else 0
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise StatusError.invalid(
                "Scale", "autoscaling", name,
                [{"type": "FieldValueInvalid", "field": "spec.replicas",
                  "message": "must be greater than or equal to 0"}],
                f"spec.replicas: Invalid value: {replicas!r}: must be greater than or equal to 0",
            )
        new = {**old, "metadata": dict(old["metadata"]), "spec": dict(old.get("spec") or {})}
        new["spec"]["replicas"] = replicas
        if new != old:
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 0)) + 1
            if not dry_run:
                new = self.store.put(kind.key, new).obj
        return _scale_of(new)

    # -- delete -------------------------------------------------------------------------------
    def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        propagation: Propagation = "Background",
        preconditions: Obj | None = None,
        dry_run: bool = False,
    ) -> Obj:
        obj = self.get(kind, namespace, name)
        meta = obj["metadata"]
        pre = preconditions or {}
        if (pre.get("uid") and pre["uid"] != meta.get("uid")) or (
            pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]
        ):
            raise StatusError.conflict(*_qual(kind), name)
        if kind.resource == NAMESPACES and name in _UNDELETABLE_NAMESPACES:
            raise StatusError(
                403, f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                "Forbidden", {"name": name, "kind": "namespaces"},
            )
        if dry_run:
            return obj
        if propagation == "Orphan":
            self._orphan(obj)
        if kind.resource == NAMESPACES:
            return self._delete_namespace(kind, obj)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            new = {**obj, "metadata": dict(meta)}
            new["metadata"]["deletionTimestamp"] = self._clock()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self.store.put(kind.key, new).obj
        return self._remove(kind, obj, propagation)

    def _remove(
        self, kind: Kind, obj: Obj, propagation: Propagation, final: bool = False
    ) -> Obj:
        """Remove the object and cascade: Foreground removes the dependents first (the owner's
        DELETED event comes last), Background after, Orphan not at all."""
        meta = obj["metadata"]
        ns = str(meta.get("namespace") or "")
        uid = str(meta.get("uid", ""))
        if propagation == "Foreground":
            self._cascade(uid, "Foreground")
        ev = self.store.remove(kind.key, ns, meta["name"], obj if final else None)
        if ev is None:
            return obj
        if propagation == "Background":
            self._cascade(uid)
        if ns:
            self._maybe_finish_namespace(ns)
        return ev.obj

    def _dependents(self, uid: str) -> builtins.list[tuple[Kind, Obj]]:
        out: builtins.list[tuple[Kind, Obj]] = []
        for key, ns, name in self.store.owned_by(uid):
            kind = self.registry.by_key(key)
            obj = self.store.get(key, ns, name)
            if kind is not None and obj is not None:
                out.append((kind, obj))
        return out

    def _cascade(self, uid: str, propagation: Propagation = "Background") -> None:
        for kind, dep in self._dependents(uid):
            m = dep["metadata"]
            if self.store.get(kind.key, str(m.get("namespace") or ""), m["name"]) is not dep:
                continue  # already removed by an earlier step of this cascade
            self.delete(kind, m.get("namespace"), m["name"], propagation)

    def _orphan(self, obj: Obj) -> None:
        uid = obj["metadata"].get("uid")
        for dkind, dep in self._dependents(str(uid)):
            new = {**dep, "metadata": dict(dep["metadata"])}
            new["metadata"]["ownerReferences"] = [
                r for r in new["metadata"].get("ownerReferences", []) if r.get("uid") != uid
            ]
            if not new["metadata"]["ownerReferences"]:
                del new["metadata"]["ownerReferences"]
            self.store.put(dkind.key, new)

    def _delete_namespace(self, kind: Kind, ns_obj: Obj) -> Obj:
        name = ns_obj["metadata"]["name"]
        new = {**ns_obj, "metadata": dict(ns_obj["metadata"]),
               "status": {**(ns_obj.get("status") or {}), "phase": "Terminating"}}
        new["metadata"].setdefault("deletionTimestamp", self._clock())
        if new != ns_obj:
            ns_obj = self.store.put(kind.key, new).obj
        for k in self.registry.kinds:
            if not k.resource.namespaced:
                continue
            for o in list(self.store.list(k.key, name)):
                m = o["metadata"]
                if self.store.get(k.key, name, m["name"]) is o:
                    self.delete(k, name, m["name"], "Background")
        self._maybe_finish_namespace(name)
        return self.store.get(kind.key, "", name) or ns_obj

    def _maybe_finish_namespace(self, namespace: str) -> None:
        kind = self.registry.by_resource(NAMESPACES)
        assert kind is not None
        ns_obj = self.store.get(kind.key, "", namespace)
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return
        if any(self.store.list(k.key, namespace) for k in self.registry.kinds
               if k.resource.namespaced):
            return
        self.store.remove(kind.key, "", namespace)

    # -- helpers ------------------------------------------------------------------------------
    def _check_body(
        self, kind: Kind, namespace: str | None, name: str | None, body: Any
    ) -> Obj:
        """The body checked against the URL (kind, apiVersion, namespace and name must agree,
        as kube-apiserver checks them), with its top level and metadata copied: the caller
        owns the rest (a freshly decoded request body, or a patch result whose untouched
        subtrees are shared with the stored object, which nothing changes in place)."""
        if not isinstance(body, dict):
            raise StatusError.bad_request("the body of the request must be a JSON object")
        obj = dict(body)
        r = kind.resource
        api_version = obj.setdefault("apiVersion", r.api_version)
        if api_version != r.api_version:
            raise StatusError.bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({r.api_version})"
            )
        obj_kind = obj.setdefault("kind", r.kind)
        if obj_kind != r.kind:
            raise StatusError.bad_request(
                f"the kind in the data ({obj_kind}) does not match the expected kind ({r.kind})"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise StatusError.bad_request("metadata must be an object")
        meta = obj["metadata"] = dict(meta)
        obj_ns = meta.get("namespace")
        if r.namespaced and obj_ns and obj_ns != namespace:
            raise StatusError.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        if name is not None:
            body_name = meta.get("name")
            if body_name and body_name != name:
                raise StatusError.bad_request(
                    f"the name of the object ({body_name}) does not match the name on the URL "
                    f"({name})"
                )
            meta["name"] = name
        return obj

    def _require_namespace(self, ns: str) -> None:
        ns_kind = self.registry.by_resource(NAMESPACES)
        assert ns_kind is not None
        ns_obj = self.store.get(ns_kind.key, "", ns)
        if ns_obj is None:
            raise StatusError.not_found("namespaces", "", ns)
        if ns_obj["metadata"].get("deletionTimestamp"):
            raise StatusError(
                403, f"unable to create new content in namespace {ns} because it is being "
                "terminated", "Forbidden", {"name": ns, "kind": "namespaces"},
            )

    def _generate_name(self, kind: Kind, ns: str, prefix: str) -> str:
        for _ in range(8):
            name = prefix + "".join(random.choices(_GEN_ALPHABET, k=5))
            if self.store.get(kind.key, ns, name) is None:
                return name
        raise StatusError.already_exists(*_qual(kind), prefix)

    def _validate_name(self, kind: Kind, name: str) -> None:
        if len(name) > 253 or not _NAME.match(name):
            raise self._invalid(
                kind, name, "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of "
                "lower case alphanumeric characters, '-' or '.', and must start and end with "
                "an alphanumeric character",
            )

    def _invalid(self, kind: Kind, name: str, field: str, message: str) -> StatusError:
        return StatusError.invalid(
            kind.resource.kind, kind.resource.group, name,
            [{"type": "FieldValueInvalid", "field": field, "message": message}],
            f"{field}: {message}",
        )

    def _admit(self, kind: Kind, op: Operation, obj: Obj, old: Obj | None) -> Obj:
        hook = self._admission.get(kind.key)
        if hook is None:
            return obj
        try:
            # Hooks may change what they get in place: give them private copies, since the
            # object shares subtrees with the stored one.
            return hook.admit(op, clone(obj), clone(old) if old is not None else None,
                              self.reader)
        except Denied as d:
            webhook = _EVENTING_WEBHOOK if kind.resource.group in _EVENTING_GROUPS else _WEBHOOK
            raise StatusError(
                400,
                f'admission webhook "{webhook}" denied the request: validation failed: '
                f"{d.message}",
                "BadRequest",
                {"causes": [{"field": c.field, "message": c.message} for c in d.causes]}
                if d.causes else None,
            ) from None


def _initial_status(kind: Kind) -> Obj | None:
    """What kube-apiserver's strategies put in a new object's status."""
    k = kind.resource.kind
    if kind.resource == NAMESPACES:
        return {"phase": "Active"}
    if k == "Pod" and kind.resource.group == "":
        return {"phase": "Pending"}
    if k == "Service" and kind.resource.group == "":
        return {"loadBalancer": {}}
    return None


def _apply_defaults(kind: Kind, obj: Obj) -> None:
    """The few kube-apiserver defaults knpy's readers rely on (Deployment replicas: 1)."""
    if kind.scale:
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict) and spec.get("replicas") is None:
            spec["replicas"] = 1


def _scale_of(obj: Obj) -> Obj:
    """The autoscaling/v1 Scale of a deployment."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    match = ((spec.get("selector") or {}).get("matchLabels")) or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid"),
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": int(spec["replicas"] if spec.get("replicas") is not None else 1)},
        "status": {
            "replicas": int(status.get("replicas", 0) or 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(match.items())),
        },
    }


def _apply_patch(patch_type: PatchKind, base: Obj, patch: Any) -> Any:
    try:
        if patch_type == "json":
            return json_patch(base, patch)
        if not isinstance(patch, dict):
            raise StatusError.bad_request("a merge patch must be a JSON object")
        if patch_type == "merge":
            return merge_patch(base, patch)
        return strategic_merge_patch(base, patch)
    except PatchError as e:
        raise StatusError(422, str(e), "Invalid") from None

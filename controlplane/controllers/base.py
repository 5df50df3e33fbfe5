"""What the reconcilers share: the informer caches they read and the writes they make.

A reconciler reads only from ``Cache`` (the informers' level state) and writes through the
``KubeClient``, and only when something differs (Knative's generated reconcilers compare
before every Update). Status goes through ``/status`` (``update_status``): on a Conflict it
re-reads the object from the API and writes the same status again once, as Knative's
RetryUpdateConflicts; a second conflict propagates, and the work queue retries the whole
reconcile on fresh cache data.
"""

from __future__ import annotations

import builtins
import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.kube.client import Conflict, KubeClient
from shared.kube.informer import Informer
from shared.kube.resources import Obj, Resource, key_of, meta

from .meta import Key

__all__ = ["Cache", "Reconciler", "Watch", "create_or_adopt", "replace", "typed", "update_status"]


def of_kind(obj: Obj, resource: Resource) -> bool:
    """Whether an informer's object is of its resource's kind. A watch that replays another
    kind's events (seen with knpy's API server resuming a watch from a resourceVersion) must
    not make a Pod look like a Revision to a reconciler."""
    kind = obj.get("kind")
    return kind is None or kind == resource.kind


class Cache:
    """Read access to the informers, by resource (and namespace for namespaced informers)."""

    def __init__(self, informers: Mapping[tuple[Resource, str | None], Informer]) -> None:
        self._informers = informers  # filled by Controllers as it makes them

    def _informer(self, resource: Resource, namespace: str) -> Informer:
        inf = self._informers.get((resource, namespace)) or self._informers.get((resource, None))
        if inf is None:
            raise KeyError(f"no informer for {resource} in {namespace or 'all namespaces'}")
        return inf

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        """The cached object; never mutate it (``copy.deepcopy`` first)."""
        obj = self._informer(resource, namespace).get(namespace, name)
        return obj if obj is not None and of_kind(obj, resource) else None

    def list(self, resource: Resource, namespace: str) -> builtins.list[Obj]:
        return [
            o for o in self._informer(resource, namespace).list(namespace) if of_kind(o, resource)
        ]

    def list_all(self, resource: Resource) -> builtins.list[Obj]:
        """Every cached object of a resource, in all namespaces."""
        inf = self._informers.get((resource, None))
        if inf is None:
            raise KeyError(f"no cluster-wide informer for {resource}")
        return [o for o in inf.list(None) if of_kind(o, resource)]


@dataclass(frozen=True, slots=True)
class Watch:
    """A resource whose changes enqueue keys of the reconciler's own resource."""

    resource: Resource
    keys: Callable[[Obj], Iterable[Key]]
    namespace: str | None = None


class Reconciler(Protocol):
    """One Knative (or Kubernetes) controller: its resource, what else it watches, its run."""

    @property
    def name(self) -> str: ...

    @property
    def resource(self) -> Resource: ...

    def watches(self) -> Sequence[Watch]: ...

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring the world in line with the object ``namespace/name`` (which may be gone)."""
        ...


def owner_keys(kind: str) -> Callable[[Obj], list[Key]]:
    """Watch mapper: the controlling owner of that kind, in the object's namespace."""

    def keys(obj: Obj) -> list[Key]:
        for ref in meta(obj).get("ownerReferences") or ():
            if isinstance(ref, dict) and ref.get("controller") and ref.get("kind") == kind:
                return [(key_of(obj)[0], str(ref.get("name", "")))]
        return []

    return keys


def typed(body: Obj, resource: Resource) -> Obj:
    """``body`` with its apiVersion and kind (list items from Kubernetes carry neither)."""
    body.setdefault("apiVersion", resource.api_version)
    body.setdefault("kind", resource.kind)
    return body


async def replace(client: KubeClient, resource: Resource, body: Obj) -> Obj:
    """PUT ``body`` (a changed copy of the cached object, resourceVersion included)."""
    namespace, name = key_of(body)
    return await client.replace(resource, namespace, name, typed(body, resource))


async def update_status(client: KubeClient, resource: Resource, obj: Obj, status: Obj) -> bool:
    """Write ``status`` through ``/status`` if it differs; True if a write was made."""
    if obj.get("status") == status:
        return False
    namespace, name = key_of(obj)
    body = typed(copy.deepcopy(obj), resource)
    body["status"] = status
    try:
        await client.replace_status(resource, namespace, name, body)
    except Conflict:
        fresh = await client.get(resource, namespace, name)
        if fresh is None or fresh.get("status") == status:
            return False
        fresh["status"] = status
        await client.replace_status(resource, namespace, name, fresh)
    return True


async def create_or_adopt(client: KubeClient, resource: Resource, body: Obj) -> Obj:
    """Create ``body``; on AlreadyExists (the cache had not seen it yet) the stored object."""
    namespace, name = key_of(body)
    try:
        return await client.create(resource, namespace, body)
    except Conflict:
        existing = await client.get(resource, namespace, name)
        if existing is None:
            raise  # a conflict about something else: the work queue retries
        return existing

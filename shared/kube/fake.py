"""An in-memory Kubernetes API server for unit tests: a ``KubeClient`` and an ``InformerFactory``.

Theory of operation. ``FakeCluster`` stores objects per resource, keyed by (namespace, name),
and applies the API server's rules where reconcilers' tests care:

- create sets ``uid``, ``creationTimestamp``, ``generation: 1`` (not on ConfigMaps, Endpoints,
  EndpointSlices, Leases, Namespaces) and a ``resourceVersion`` from one global counter; a
  create of an existing name is 409 AlreadyExists; ``generateName`` works; ``status`` is
  dropped on create for resources with a status subresource (as a CRD's is).
- replace (PUT) is 409 Conflict when ``metadata.resourceVersion`` is set and stale, keeps the
  stored ``status`` (status changes only through ``/status``), bumps ``generation`` when
  anything outside ``metadata``/``status`` changed; a write that changes nothing is a no-op
  (no new resourceVersion, no event), as the API server skips no-op updates.
- ``/status`` (PUT or PATCH) changes only ``status``; ``/scale`` speaks autoscaling/v1 Scale
  and writes ``spec.replicas`` back (Knative's scaler sends a JSON patch on it).
- patches: merge (RFC 7386), JSON patch (RFC 6902), and strategic merge treated as a merge
  patch (enough for the maps knpy patches; lists are replaced whole). A ``resourceVersion`` in
  a patched body is a precondition, as on the API server.
- delete removes the object and, like the garbage collector with background propagation,
  everything whose ``ownerReferences`` name its uid, recursively, at once. Finalizers and
  ``deletionTimestamp`` are not modelled.

Events. Every write appends an event; informers see it *after* the write returns, through
``loop.call_soon`` (the write's caller never runs handlers re-entrantly, as with a real watch).
Each informer keeps its own cache, updated just before its handlers run, so a test reads a
stale cache until the events are delivered: ``await cluster.settle()`` delivers everything
pending and yields to the loop until no new events appear (reconcilers woken by handlers get
to run and write); ``cluster.flush()`` delivers synchronously, for code without a loop. A
handler that raises does not stop delivery to the others; ``settle()`` re-raises its exception
so the test sees the bug. An
informer created later lists the current state and ignores older pending events (by
resourceVersion), like list-then-watch. With a label selector, an object that stops matching
is DELETED from that informer and one that starts matching is ADDED (the watch cache does the
same). Informers are synced as soon as they exist; ``start``/``stop`` only gate delivery.

Assertions. ``cluster.writes`` records every client call that reached the store as a
``Write(verb, resource, namespace, name, body)``; verbs are ``create``, ``update``,
``update/status``, ``patch``, ``patch/status``, ``patch/scale``, ``delete``. ``cluster.put``
seeds an object (unrecorded); ``cluster.peek`` reads one synchronously; ``cluster.fail_next``
makes the next matching call raise.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import datetime
import itertools
import random
import string
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from shared.kube import resources as _resources
from shared.kube.client import ApiError, Conflict, NotFound, PatchType
from shared.kube.informer import EventType, Handler
from shared.kube.labels import Selector, SelectorError, parse_selector
from shared.kube.patch import PatchError, clone, json_patch, merge_patch
from shared.kube.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    ENDPOINTS,
    ENDPOINTSLICES,
    LEASES,
    NAMESPACES,
    Obj,
    Resource,
    key_of,
    labels_of,
    meta,
)

__all__ = ["FakeCluster", "FakeInformer", "Write", "resource_for"]

# Resources without a status subresource: a create or PUT keeps the body's status (if any).
_NO_STATUS_SUBRESOURCE = frozenset({CONFIGMAPS, ENDPOINTS, ENDPOINTSLICES, LEASES})
# Resources without metadata.generation (as on the API server: it is for spec'd objects).
_NO_GENERATION = frozenset({CONFIGMAPS, ENDPOINTS, ENDPOINTSLICES, LEASES, NAMESPACES})
# Fields the API server owns: a write cannot change them.
_SYSTEM_META = ("uid", "creationTimestamp", "generation", "resourceVersion")


def resource_for(api_version: str, kind: str) -> Resource:
    """The known Resource for an object's apiVersion and kind (``KeyError`` if unknown)."""
    resource = _resources.resource_for(api_version, kind)
    if resource is None:
        raise KeyError((api_version, kind))
    return resource


class Write(NamedTuple):
    verb: str
    resource: Resource
    namespace: str
    name: str
    body: Any  # the body or patch as sent (a deep copy); None for delete


def _not_found(resource: Resource, name: str) -> NotFound:
    return NotFound(404, "NotFound", f'{resource} "{name}" not found')


def _no_subresource(resource: Resource, name: str, subresource: str) -> NotFound:
    return NotFound(
        404, "NotFound", f"the server could not find the requested resource ({name}/{subresource})"
    )


def _conflict(resource: Resource, name: str) -> Conflict:
    return Conflict(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
    )


def _invalid(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


def _spec_of(obj: Obj) -> Obj:
    """Everything generation tracks: the object without metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


# -- the informer --------------------------------------------------------------------------------


class FakeInformer:
    """One resource/namespace/selector view of a ``FakeCluster``, with its own cache."""

    def __init__(
        self, cluster: FakeCluster, resource: Resource, namespace: str | None, selector: str | None
    ) -> None:
        self._cluster = cluster
        self._resource = resource
        self._namespace = namespace
        self._selector_text = selector
        self._selector: Selector = parse_selector(selector)
        self._handlers: builtins.list[Handler] = []
        self._cache: dict[tuple[str, str], Obj] = {}
        self._list_rv = cluster._rv
        for key, obj in cluster._store(resource).items():
            if self._matches(obj):
                self._cache[key] = copy.deepcopy(obj)

    def __repr__(self) -> str:
        return (
            f"FakeInformer({self._resource}, namespace={self._namespace!r}, "
            f"selector={self._selector_text!r}, cached={len(self._cache)})"
        )

    @property
    def resource(self) -> Resource:
        return self._resource

    @property
    def synced(self) -> bool:
        return True

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._cache.get((namespace, name))

    def list(self, namespace: str | None = None) -> builtins.list[Obj]:
        return [o for (ns, _), o in sorted(self._cache.items()) if namespace in (None, ns)]

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)
        for _, obj in sorted(self._cache.items()):
            handler(EventType.ADDED, obj)

    async def wait_synced(self) -> None:
        return None

    def _matches(self, obj: Obj) -> bool:
        ns, _ = key_of(obj)
        if self._namespace is not None and self._resource.namespaced and ns != self._namespace:
            return False
        return self._selector.matches(labels_of(obj))

    def _deliver(self, event: EventType, obj: Obj, rv: int) -> None:
        if rv <= self._list_rv:
            return  # already in the initial list
        key = key_of(obj)
        cached = key in self._cache
        if event is EventType.DELETED or not self._matches(obj):
            if not cached:
                return
            del self._cache[key]
            out = EventType.DELETED
        else:
            out = EventType.MODIFIED if cached else EventType.ADDED
            self._cache[key] = obj
        for h in builtins.list(self._handlers):
            try:
                h(out, obj)
            except Exception as e:  # the other handlers still run; settle() re-raises it
                self._cluster.handler_errors.append(e)


# -- the cluster -------------------------------------------------------------------------------


class FakeCluster:
    """An in-memory API server: ``KubeClient`` and ``InformerFactory`` in one object.

    Args:
        now: wall clock for creationTimestamp (seconds since the epoch).
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._objects: dict[Resource, dict[tuple[str, str], Obj]] = {}
        self._rv = 0
        self._pending: deque[tuple[Resource, EventType, Obj, int]] = deque()
        self._scheduled = False
        self._running = True
        self._informers: dict[tuple[Resource, str | None, str | None], FakeInformer] = {}
        self._failures: builtins.list[tuple[str, Resource | None, str | None, ApiError]] = []
        self._names = itertools.count()
        self.writes: builtins.list[Write] = []
        # Exceptions raised by informer handlers, re-raised (oldest first) by settle().
        self.handler_errors: builtins.list[Exception] = []

    def __repr__(self) -> str:
        n = sum(len(s) for s in self._objects.values())
        return f"FakeCluster(objects={n}, resourceVersion={self._rv}, pending={len(self._pending)})"

    # -- test helpers ---------------------------------------------------------------------------

    def put(self, obj: Obj, resource: Resource | None = None) -> Obj:
        """Store ``obj`` as is (status included), filling the server's fields; unrecorded.

        The resource is inferred from apiVersion/kind when not given. Informers see an ADDED or
        MODIFIED event. Returns the stored object (a copy).
        """
        res = resource or resource_for(str(obj.get("apiVersion")), str(obj.get("kind")))
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        m = obj.setdefault("metadata", {})
        if not res.namespaced:
            m.pop("namespace", None)
        key = key_of(obj)
        old = self._store(res).get(key)
        m.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
        m.setdefault("creationTimestamp", self._timestamp())
        if res not in _NO_GENERATION:
            m.setdefault("generation", 1)
        self._commit(res, key, obj, EventType.MODIFIED if old else EventType.ADDED)
        return copy.deepcopy(obj)

    def peek(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        """The stored object (a copy), synchronously, bypassing informers and ``writes``."""
        obj = self._store(resource).get((namespace if resource.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def objects(self, resource: Resource, namespace: str | None = None) -> builtins.list[Obj]:
        """Every stored object of a resource (copies), sorted by namespace/name."""
        return [
            copy.deepcopy(o)
            for (ns, _), o in sorted(self._store(resource).items())
            if namespace in (None, ns)
        ]

    def fail_next(
        self,
        verb: str,
        error: ApiError,
        resource: Resource | None = None,
        name: str | None = None,
    ) -> None:
        """Make the next call of ``verb`` (``get``, ``list``, or a ``Write`` verb), optionally
        only on one resource/name, raise ``error`` before touching the store."""
        self._failures.append((verb, resource, name, error))

    def flush(self) -> int:
        """Deliver every pending event to informers now; returns how many were delivered."""
        self._scheduled = False
        n = 0
        while self._pending and self._running:
            resource, event, obj, rv = self._pending.popleft()
            n += 1
            for (res, _, _), inf in builtins.list(self._informers.items()):
                if res == resource:
                    inf._deliver(event, obj, rv)
        return n

    async def settle(self, max_rounds: int = 1000) -> None:
        """Deliver pending events and yield until the loop is quiet (three idle rounds in a row:
        handlers ran and whatever they woke has written everything it will write)."""
        idle = 0
        for _ in range(max_rounds):
            idle = 0 if self.flush() else idle + 1
            if self.handler_errors:
                raise self.handler_errors.pop(0)
            if idle >= 3:
                return
            await asyncio.sleep(0)

    # -- InformerFactory -------------------------------------------------------------------------

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> FakeInformer:
        key = (resource, namespace, label_selector or None)
        inf = self._informers.get(key)
        if inf is None:
            inf = self._informers[key] = FakeInformer(self, resource, namespace, key[2])
        return inf

    async def start(self) -> None:
        self._running = True
        self._schedule()

    async def stop(self) -> None:
        self._running = False

    # -- KubeClient ------------------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        self._maybe_fail("get", resource, name)
        return self.peek(resource, namespace, name)

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> Obj:
        self._maybe_fail("list", resource, None)
        try:
            selector = parse_selector(label_selector)
        except SelectorError as e:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {e}") from e
        items = [
            o
            for o in self.objects(resource, namespace if resource.namespaced else None)
            if selector.matches(labels_of(o))
        ]
        return {
            "apiVersion": resource.api_version,
            "kind": f"{resource.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    async def create(self, resource: Resource, namespace: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        m = obj.setdefault("metadata", {})
        name = str(m.get("name") or "")
        self._maybe_fail("create", resource, name or None)
        if not name and m.get("generateName"):
            name = str(m["generateName"]) + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5)
            )
        if not name:
            raise _invalid("metadata.name: Required value: name or generateName is required")
        ns = namespace if resource.namespaced else ""
        if resource.namespaced and m.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "BadRequest", "the namespace of the object does not match")
        self.writes.append(Write("create", resource, ns, name, copy.deepcopy(body)))
        if (ns, name) in self._store(resource):
            raise Conflict(409, "AlreadyExists", f'{resource} "{name}" already exists')
        m["name"] = name
        if resource.namespaced:
            m["namespace"] = ns
        for f in _SYSTEM_META:
            m.pop(f, None)
        m["uid"] = str(uuid.uuid4())
        m["creationTimestamp"] = self._timestamp()
        if resource not in _NO_GENERATION:
            m["generation"] = 1
        obj["apiVersion"] = resource.api_version
        obj["kind"] = resource.kind
        if resource not in _NO_STATUS_SUBRESOURCE:
            obj.pop("status", None)
        self._commit(resource, (ns, name), obj, EventType.ADDED)
        return copy.deepcopy(obj)

    async def replace(self, resource: Resource, namespace: str, name: str, body: Obj) -> Obj:
        self._maybe_fail("update", resource, name)
        self.writes.append(Write("update", resource, namespace, name, copy.deepcopy(body)))
        old = self._current(resource, namespace, name)
        self._check_rv(resource, name, old, body)
        new = copy.deepcopy(body)
        if resource not in _NO_STATUS_SUBRESOURCE:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        return self._update(resource, old, new)

    async def replace_status(self, resource: Resource, namespace: str, name: str, body: Obj) -> Obj:
        self._maybe_fail("update/status", resource, name)
        self.writes.append(Write("update/status", resource, namespace, name, copy.deepcopy(body)))
        if resource in _NO_STATUS_SUBRESOURCE:
            raise _no_subresource(resource, name, "status")
        old = self._current(resource, namespace, name)
        self._check_rv(resource, name, old, body)
        new = copy.deepcopy(old)
        if "status" in body:
            new["status"] = copy.deepcopy(body["status"])
        else:
            new.pop("status", None)
        return self._update(resource, old, new)

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Obj | builtins.list[Obj],
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Obj:
        verb = f"patch/{subresource}" if subresource else "patch"
        self._maybe_fail(verb, resource, name)
        self.writes.append(Write(verb, resource, namespace, name, copy.deepcopy(patch)))
        old = self._current(resource, namespace, name)
        if subresource == "scale":
            return self._patch_scale(resource, old, patch, patch_type)
        if subresource not in (None, "status") or (
            subresource == "status" and resource in _NO_STATUS_SUBRESOURCE
        ):
            raise _no_subresource(resource, name, str(subresource))
        patched = self._apply(old, patch, patch_type)
        self._check_rv(resource, name, old, patched)
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in patched:
                new["status"] = patched["status"]
            else:
                new.pop("status", None)
        else:
            new = patched
            if resource not in _NO_STATUS_SUBRESOURCE:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        return self._update(resource, old, new)

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        self._maybe_fail("delete", resource, name)
        self.writes.append(Write("delete", resource, namespace, name, None))
        self._delete(resource, (namespace if resource.namespaced else "", name))

    # -- internals ------------------------------------------------------------------------------

    def _store(self, resource: Resource) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(resource, {})

    def _timestamp(self) -> str:
        t = datetime.datetime.fromtimestamp(self._now(), datetime.UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _maybe_fail(self, verb: str, resource: Resource, name: str | None) -> None:
        for i, (v, res, n, err) in enumerate(self._failures):
            if v == verb and res in (None, resource) and n in (None, name):
                del self._failures[i]
                raise err

    def _current(self, resource: Resource, namespace: str, name: str) -> Obj:
        obj = self._store(resource).get((namespace if resource.namespaced else "", name))
        if obj is None:
            raise _not_found(resource, name)
        return obj

    @staticmethod
    def _check_rv(resource: Resource, name: str, old: Obj, body: Obj) -> None:
        rv = meta(body).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise _conflict(resource, name)

    @staticmethod
    def _apply(old: Obj, patch: Obj | builtins.list[Obj], patch_type: PatchType) -> Obj:
        try:
            if patch_type == "json":
                if not isinstance(patch, list):
                    raise _invalid("a JSON patch is a list of operations")
                out = json_patch(old, patch)
            else:  # "merge", and "strategic" approximated as a merge patch
                if not isinstance(patch, dict):
                    raise _invalid("a merge patch is a JSON object")
                # The merge shares untouched subtrees with ``old``; the write below edits
                # metadata in place, so the stored object must not be one of them.
                out = clone(merge_patch(old, patch))
        except PatchError as err:
            raise _invalid(str(err)) from None
        if not isinstance(out, dict):
            raise _invalid("the patched object is not a JSON object")
        return out

    def _update(self, resource: Resource, old: Obj, new: Obj) -> Obj:
        """Store ``new`` over ``old`` keeping the server's fields; a no-op write is skipped."""
        om = old["metadata"]
        nm = new.setdefault("metadata", {})
        for f in ("uid", "creationTimestamp", "name", "namespace"):
            if f in om:
                nm[f] = om[f]
        if "generation" in om:
            nm["generation"] = om["generation"]
        else:
            nm.pop("generation", None)
        nm["resourceVersion"] = om["resourceVersion"]
        new["apiVersion"] = old.get("apiVersion", resource.api_version)
        new["kind"] = old.get("kind", resource.kind)
        if new == old:
            return copy.deepcopy(old)
        if "generation" in om and _spec_of(new) != _spec_of(old):
            nm["generation"] = int(om["generation"]) + 1
        self._commit(resource, key_of(old), new, EventType.MODIFIED)
        return copy.deepcopy(new)

    def _patch_scale(
        self, resource: Resource, old: Obj, patch: Obj | builtins.list[Obj], patch_type: PatchType
    ) -> Obj:
        spec = old.get("spec") if isinstance(old.get("spec"), dict) else None
        if spec is None or (resource is not DEPLOYMENTS and "replicas" not in spec):
            raise _not_found(resource, f"{meta(old).get('name')}/scale")
        scale = self._scale_of(old)
        patched = self._apply(scale, patch, patch_type)
        self._check_rv(resource, str(meta(old).get("name")), old, patched)
        replicas = (patched.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise _invalid(f"spec.replicas: Invalid value: {replicas!r}")
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        return self._scale_of(self._update(resource, old, new))

    @staticmethod
    def _scale_of(obj: Obj) -> Obj:
        """The autoscaling/v1 Scale of an object with ``spec.replicas``."""
        m = meta(obj)
        match = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                k: m[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in m
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(match.items())),
            },
        }

    def _delete(self, resource: Resource, key: tuple[str, str]) -> None:
        obj = self._store(resource).pop(key, None)
        if obj is None:
            return
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._emit(resource, EventType.DELETED, obj)
        uid = obj["metadata"].get("uid")
        # Background cascading deletion: the dependents go with their owner.
        for res, store in builtins.list(self._objects.items()):
            for k, o in builtins.list(store.items()):
                refs = meta(o).get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    self._delete(res, k)

    def _commit(self, resource: Resource, key: tuple[str, str], obj: Obj, event: EventType) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._store(resource)[key] = obj
        self._emit(resource, event, obj)

    def _emit(self, resource: Resource, event: EventType, obj: Obj) -> None:
        self._pending.append((resource, event, copy.deepcopy(obj), self._rv))
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled or not self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: events wait for flush(), settle() or a later write
        self._scheduled = True
        loop.call_soon(self.flush)

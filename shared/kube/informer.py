"""The informer interface: a local, level-based cache of one resource, fed by list and watch.

Knative's controllers read every object through informers (client-go's SharedIndexInformer):
list once, watch from the list's resourceVersion, relist on 410 Gone, and hand each change to
handlers that only enqueue work. Consumers never trust a single event: a handler is a hint
that an object changed, and the reconciler reads the current state from the cache, so a missed
or coalesced event still converges. This module is the interface only; it imports no asyncio
so pure code can depend on it.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable
from typing import Protocol

from shared.kube.resources import Obj, Resource

__all__ = ["EventType", "Handler", "Informer", "InformerFactory"]


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


# Called synchronously on the informer's loop with the event and the object (for DELETED, its
# last known state). Handlers must not block: enqueue a key and return.
Handler = Callable[[EventType, Obj], None]


class Informer(Protocol):
    """One resource (optionally one namespace and a label selector), cached by namespace/name."""

    @property
    def resource(self) -> Resource: ...

    @property
    def synced(self) -> bool:
        """True once the first list has been stored (client-go's HasSynced)."""
        ...

    def get(self, namespace: str, name: str) -> Obj | None:
        """The cached object, or None; namespace is "" for cluster-scoped resources."""
        ...

    def list(self, namespace: str | None = None) -> builtins.list[Obj]:
        """Every cached object, or those of one namespace."""
        ...

    def add_handler(self, handler: Handler) -> None:
        """Run ``handler`` for every later change, and at once as ADDED for what is cached.

        After a relist the informer calls handlers for every difference it finds (ADDED,
        MODIFIED, DELETED), so consumers converge after any missed event.
        """
        ...

    async def wait_synced(self) -> None:
        """Return once ``synced`` is true."""
        ...


class InformerFactory(Protocol):
    """Makes (and shares) informers; ``start`` runs them until ``stop``."""

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> Informer:
        """The informer for this resource, namespace (None = all) and selector; one per triple."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

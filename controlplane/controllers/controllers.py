"""Knative's controller (and Kubernetes' endpoints controller) as API clients of ``knpy serve``.

``Controllers`` wires one ``Controller`` (work queue + workers) per reconciler to the
informers: an event on the reconciler's own resource enqueues its key; an event on a watched
resource enqueues the keys its ``Watch`` maps it to (the owner, the namespace's routes...).
Everything else is read from the caches at run time, so the reconcilers are level-based: a
lost event, a restart, or an output deleted by hand converge on the next run.

The factory passed in is the controllers' own: ``start`` starts it and waits for every informer
to sync before the workers run (as Knative's sharedmain does), ``stop`` stops both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from controlplane.pingadapter import PingAdapter
from shared.kube.client import KubeClient
from shared.kube.informer import EventType, Handler, Informer, InformerFactory
from shared.kube.resources import Obj, Resource, key_of
from shared.kube.workqueue import WorkQueue

from .base import Cache, Reconciler, of_kind
from .broker import BrokerReconciler, TriggerReconciler
from .channel import ChannelReconciler, SubscriptionReconciler
from .config import ControllerConfig
from .configuration import ConfigurationReconciler
from .endpoints import EndpointsReconciler
from .meta import Key
from .revision import RevisionReconciler
from .route import RouteReconciler
from .serverlessservice import ServerlessServiceReconciler
from .service import ServiceReconciler
from .sources import ContainerSourceReconciler, PingSourceReconciler, SinkBindingReconciler

__all__ = ["Controllers"]

_log = logging.getLogger(__name__)


class Controllers:
    """Service, Configuration, Route, Revision, ServerlessService and Endpoints controllers,
    and Knative Eventing's: Broker, Trigger, SinkBinding, ContainerSource, Channel,
    Subscription and PingSource."""

    def __init__(
        self,
        factory: InformerFactory,
        client: KubeClient,
        cfg: ControllerConfig | None = None,
        *,
        ping_adapter: PingAdapter | None = None,
    ) -> None:
        self._factory = factory
        self._client = client
        self._cfg = cfg or ControllerConfig()
        self._informers: dict[tuple[Resource, str | None], Informer] = {}
        self._cache = Cache(self._informers)
        self.reconcilers: tuple[Reconciler, ...] = tuple(
            cls(self._cache, client, self._cfg)
            for cls in (
                ServiceReconciler,
                ConfigurationReconciler,
                RouteReconciler,
                RevisionReconciler,
                ServerlessServiceReconciler,
                EndpointsReconciler,
                BrokerReconciler,
                TriggerReconciler,
                SinkBindingReconciler,
                ContainerSourceReconciler,
                ChannelReconciler,
                SubscriptionReconciler,
            )
        )
        # PingSources' schedules run in this loop (controlplane/pingadapter.py).
        self.ping_adapter = ping_adapter or PingAdapter()
        self.reconcilers += (
            PingSourceReconciler(self._cache, client, self._cfg, self.ping_adapter),
        )
        self._controllers: list[WorkQueue[Key]] = []
        self._handlers: list[tuple[Informer, Handler]] = []
        for r in self.reconcilers:
            controller: WorkQueue[Key] = WorkQueue(
                r.name, _by_key(r.reconcile), workers=self._cfg.workers
            )
            self._controllers.append(controller)
            self._watch(controller, r.resource, None, lambda obj: [key_of(obj)])
            for w in r.watches():
                self._watch(controller, w.resource, w.namespace, w.keys)
        self._started = False

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"<Controllers {state} {' '.join(repr(c) for c in self._controllers)}>"

    def _informer(self, resource: Resource, namespace: str | None) -> Informer:
        key = (resource, namespace)
        if key not in self._informers:
            self._informers[key] = self._factory.informer(resource, namespace=namespace)
        return self._informers[key]

    def _watch(
        self,
        controller: WorkQueue[Key],
        resource: Resource,
        namespace: str | None,
        keys: Callable[[Obj], Iterable[Key]],
    ) -> None:
        informer = self._informer(resource, namespace)

        def handler(event: EventType, obj: Obj) -> None:
            if not of_kind(obj, resource):
                return
            try:
                for ns, name in keys(obj):
                    controller.add((ns, name))
            except Exception:  # a handler must never break the informer's loop
                _log.exception("%s: mapping %s %s failed", controller.name, event.value, obj)

        self._handlers.append((informer, handler))

    async def start(self) -> None:
        """Start the informers, wait until they are synced, then run the reconcilers."""
        if self._started:
            return
        await self._factory.start()
        await asyncio.gather(*(inf.wait_synced() for inf in self._informers.values()))
        for controller in self._controllers:
            await controller.start()
        for informer, handler in self._handlers:
            informer.add_handler(handler)
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for controller in self._controllers:
            await controller.stop()
        await self.ping_adapter.close()
        await self._factory.stop()

    def controllers(self) -> Sequence[WorkQueue[Key]]:
        return tuple(self._controllers)


def _by_key(reconcile: Callable[[str, str], Awaitable[None]]) -> Callable[[Key], Awaitable[None]]:
    """A reconciler's ``reconcile(namespace, name)`` as the work queue's ``reconcile(key)``."""

    def run(key: Key) -> Awaitable[None]:
        return reconcile(*key)

    return run


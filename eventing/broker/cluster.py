"""Brokers and Triggers as the data plane sees them, from the Kubernetes API's informers.

A Broker is served here when its ``eventing.knative.dev/broker.class`` annotation names this
data plane's class (``BROKER_CLASS``), or is absent and this is the default class's. A
Trigger of a served broker becomes a ``TriggerTarget``: its subscriber URL is
``status.subscriberUri`` as the control plane resolved it (a Service ``ref`` becomes its URL
there), else ``spec.subscriber.uri``; its dead-letter sink
``status.deadLetterSinkUri``, else the chosen delivery spec's ``deadLetterSink.uri``, else the
broker's ``status.deadLetterSinkUri`` when the broker's delivery spec is the one in force.
Filters are compiled when a trigger's spec changes, never per event. A trigger labelled
``messaging.knative.dev/subscription`` is a Subscription's (controlplane/controllers/channel.py):
it delivers as a channel does, its replies to the annotation ``knpy.dev/subscription-reply``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from eventing.broker.dispatcher import Matcher, TriggerTarget
from eventing.delivery import DeliveryError, effective_delivery
from eventing.filters import compile_trigger_filter
from shared.kube.informer import EventType, InformerFactory
from shared.kube.resources import (
    BROKER_CLASS_ANNOTATION,
    BROKER_INGRESS_HOST,
    BROKERS,
    DEFAULT_BROKER_CLASS,
    SUBSCRIPTION_LABEL,
    SUBSCRIPTION_REPLY_ANNOTATION,
    TRIGGERS,
    Obj,
    annotations_of,
    meta,
)

__all__ = ["BrokerCluster"]

log = logging.getLogger(__name__)


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) and "://" in value else None


class BrokerCluster:
    """The served brokers and their triggers; ``on_change`` runs (soon, once per burst) after
    any Broker or Trigger changed."""

    def __init__(
        self, informers: InformerFactory, broker_class: str, on_change: Callable[[], None]
    ) -> None:
        self.broker_class = broker_class
        self.brokers = informers.informer(BROKERS)
        self.triggers = informers.informer(TRIGGERS)
        self._on_change = on_change
        self._scheduled = False
        self._filters: dict[str, tuple[str, Matcher]] = {}  # uid -> (spec as text, filter)
        self.brokers.add_handler(self._changed)
        self.triggers.add_handler(self._changed)

    def __repr__(self) -> str:
        return (
            f"<BrokerCluster class={self.broker_class} brokers={len(self.brokers.list())} "
            f"triggers={len(self.triggers.list())}>"
        )

    def _changed(self, _event: EventType, _obj: Obj) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run_change)

    def _run_change(self) -> None:
        self._scheduled = False
        self._on_change()

    async def wait_synced(self) -> None:
        await self.brokers.wait_synced()
        await self.triggers.wait_synced()

    def _served(self, broker: Obj | None) -> bool:
        if broker is None or meta(broker).get("deletionTimestamp"):
            return False
        # Knative's webhook gives a Broker without the annotation the default class, so only
        # the default class's data plane takes one (a RabbitMQBroker data plane never does).
        cls = annotations_of(broker).get(BROKER_CLASS_ANNOTATION) or DEFAULT_BROKER_CLASS
        return cls == self.broker_class

    def serves(self, namespace: str, name: str) -> bool:
        """Whether a POST to /namespace/name is ours to store."""
        return self._served(self.brokers.get(namespace, name))

    def targets(self) -> dict[str, TriggerTarget]:
        """Every trigger of a served broker, by uid."""
        out: dict[str, TriggerTarget] = {}
        seen: set[str] = set()
        for trigger in self.triggers.list():
            m = meta(trigger)
            ns, name, uid = str(m.get("namespace", "")), str(m.get("name", "")), m.get("uid")
            spec = trigger.get("spec")
            if not isinstance(uid, str) or not isinstance(spec, dict):
                continue
            broker_name = spec.get("broker")
            broker = self.brokers.get(ns, broker_name) if isinstance(broker_name, str) else None
            if broker is None or not self._served(broker):
                continue
            seen.add(uid)
            target = self._target(trigger, spec, broker, ns, name, uid)
            if target is not None:
                out[uid] = target
        for uid in set(self._filters) - seen:
            del self._filters[uid]
        return out

    def _target(
        self, trigger: Obj, spec: dict[str, Any], broker: Obj, ns: str, name: str, uid: str
    ) -> TriggerTarget | None:
        try:
            delivery = effective_delivery(spec.get("delivery"), _dig(broker, "spec", "delivery"))
        except DeliveryError as err:
            log.error("trigger %s/%s: invalid delivery, not served: %s", ns, name, err)
            return None
        matches = self._filter(uid, spec)
        if matches is None:
            return None
        status = trigger.get("status")
        subscriber = _url(_dig(status, "subscriberUri")) or _url(_dig(spec, "subscriber", "uri"))
        dls = _url(_dig(status, "deadLetterSinkUri"))
        if dls is None and delivery.dead_letter_sink is not None:
            dls = _url(delivery.dead_letter_sink.get("uri"))
            if dls is None and spec.get("delivery") is None:
                dls = _url(_dig(broker, "status", "deadLetterSinkUri"))
        broker_name = str(spec.get("broker"))
        broker_url = _url(_dig(broker, "status", "address", "url")) or (
            f"http://{BROKER_INGRESS_HOST}/{ns}/{broker_name}"
        )
        m = meta(trigger)
        subscription_name = str((m.get("labels") or {}).get(SUBSCRIPTION_LABEL) or "")
        subscription = bool(subscription_name)
        reply = _url((m.get("annotations") or {}).get(SUBSCRIPTION_REPLY_ANNOTATION))
        return TriggerTarget(
            uid=uid, namespace=ns, name=name, broker=f"{ns}/{broker_name}",
            subscriber=subscriber, dead_letter_sink=dls, delivery=delivery, matches=matches,
            broker_url=broker_url, subscription=subscription,
            reply_url=reply if subscription else None, subscription_name=subscription_name,
        )

    def _filter(self, uid: str, spec: Mapping[str, Any]) -> Matcher | None:
        key = repr((spec.get("filter"), spec.get("filters")))
        cached = self._filters.get(uid)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            matcher = compile_trigger_filter(spec)
        except Exception as err:  # the webhook refuses bad filters; an old object may have one
            log.error("trigger %s: its filter cannot be compiled, not served: %s", uid, err)
            return None
        self._filters[uid] = (key, matcher)
        return matcher

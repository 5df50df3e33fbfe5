"""Channels and Subscriptions for ``knpy serve``, backed by the durable broker data plane.

Knative's Channel makes a backing channel of its ``channelTemplate`` kind (InMemoryChannel by
default, which keeps nothing) and each Subscription adds a subscriber to it. knpy has one
durable store, the broker data plane's, so:

- a **Channel** ``<name>`` owns a Broker ``<name>-kn-channel`` of the default class (its
  ``spec.delivery`` copied), and its ``status.address.url`` is that Broker's: events POSTed to
  it are stored before the 202, as a broker's. Conditions: BackingChannelReady (the Broker's
  Ready), Addressable, DeadLetterSinkResolved, EventPoliciesReady; Ready is their conjunction.
  ``channelTemplate`` is kept as written and copied to ``status.channel``-less Knative fields
  nowhere: the template kind is not instantiated.
- a **Subscription** owns a Trigger ``<name>-kn-sub`` on its channel's Broker, without a filter,
  with the subscriber and delivery copied: one delivery per subscription, at least once, with
  the delivery spec's retries and dead-letter sink. ``status.physicalSubscription`` has the
  resolved ``subscriberUri`` and ``deadLetterSinkUri`` (from the Trigger). Conditions:
  ReferencesResolved, ChannelReady, AddedToChannel, OIDCIdentityCreated; Ready.

- a Subscription's **reply** is Knative's channel dispatcher's
  (pkg/kncloudevents/event_dispatcher.go): ``spec.reply`` is resolved (a ``uri``, or a ref to
  a Broker, Channel or Knative Service) into ``status.physicalSubscription.replyUri`` and the
  Trigger's annotation ``knpy.dev/subscription-reply``; the data plane sends the subscriber's
  reply event there, with the delivery's retries, and drops it when the Subscription has no
  reply. A reply that cannot be delivered sends the original event to the dead-letter sink
  (``knativeerrordest`` the reply URL). A reply that cannot be resolved leaves the
  Subscription not Ready (ReferencesResolved False with the reason) and its Trigger as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Final

from shared.kube.client import KubeClient
from shared.kube.resources import (
    BROKER_CLASS_ANNOTATION,
    BROKERS,
    CHANNELS,
    DEFAULT_BROKER_CLASS,
    KSERVICES,
    SUBSCRIPTION_LABEL,
    SUBSCRIPTION_REPLY_ANNOTATION,
    SUBSCRIPTIONS,
    TRIGGERS,
    Obj,
    Resource,
    key_of,
    meta,
)

from ..eventing_webhook import defaulted
from .addressable import Resolved, refers_to, resolve
from .base import Cache, Watch, create_or_adopt, owner_keys, replace, update_status
from .config import ControllerConfig
from .meta import (
    Conditions,
    Key,
    child_name,
    get_condition,
    is_controlled_by,
    owner_reference,
    rfc3339,
)

__all__ = [
    "ChannelReconciler",
    "SubscriptionReconciler",
    "backing_broker_name",
    "make_backing_broker",
    "make_backing_trigger",
]

CHANNEL_LABEL: Final = "messaging.knative.dev/channel"


def backing_broker_name(channel: str) -> str:
    return child_name(channel, "-kn-channel")


def _child(obj: Obj, resource: Resource, name: str, labels: dict[str, str]) -> Obj:
    return {
        "name": name,
        "namespace": key_of(obj)[0],
        "labels": labels,
        "ownerReferences": [owner_reference(obj, resource)],
    }


def make_backing_broker(channel: Obj) -> Obj:
    spec = channel.get("spec") or {}
    m = _child(channel, CHANNELS, backing_broker_name(key_of(channel)[1]),
               {CHANNEL_LABEL: key_of(channel)[1]})
    m["annotations"] = {BROKER_CLASS_ANNOTATION: DEFAULT_BROKER_CLASS}
    broker_spec: Obj = {}
    if spec.get("delivery") is not None:
        broker_spec["delivery"] = copy.deepcopy(spec["delivery"])
    return {"apiVersion": BROKERS.api_version, "kind": "Broker", "metadata": m,
            "spec": broker_spec}


def make_backing_trigger(sub: Obj, reply_url: str | None = None) -> Obj:
    """The Trigger of a Subscription; ``reply_url`` is its resolved ``spec.reply``."""
    spec = sub.get("spec") or {}
    channel = str((spec.get("channel") or {}).get("name", ""))
    name = key_of(sub)[1]
    trigger_spec: Obj = {
        "broker": backing_broker_name(channel),
        "filter": {},
        "subscriber": copy.deepcopy(spec.get("subscriber") or {}),
    }
    if spec.get("delivery") is not None:
        trigger_spec["delivery"] = copy.deepcopy(spec["delivery"])
    m = _child(sub, SUBSCRIPTIONS, child_name(name, "-kn-sub"),
               {SUBSCRIPTION_LABEL: name, "eventing.knative.dev/broker": trigger_spec["broker"]})
    if reply_url:
        m["annotations"] = {SUBSCRIPTION_REPLY_ANNOTATION: reply_url}
    return {"apiVersion": TRIGGERS.api_version, "kind": "Trigger", "metadata": m,
            "spec": trigger_spec}


async def _ensure(client: KubeClient, resource: Resource, current: Obj | None, owner: Obj,
                  want: Obj) -> Obj | None:
    """Create ``want``, or bring an owned child's spec in line; None if someone else owns it."""
    want = defaulted(resource, want)  # as the webhook stores it: no update loop on defaults
    if current is None:
        return await create_or_adopt(client, resource, want)
    if not is_controlled_by(current, owner):
        return None
    annotations = dict(meta(current).get("annotations") or {})
    reply = (meta(want).get("annotations") or {}).get(SUBSCRIPTION_REPLY_ANNOTATION)
    annotations.pop(SUBSCRIPTION_REPLY_ANNOTATION, None)
    if reply:
        annotations[SUBSCRIPTION_REPLY_ANNOTATION] = reply
    if current.get("spec") == want["spec"] and (meta(current).get("annotations") or {}) == (
        annotations
    ):
        return current
    body = copy.deepcopy(current)
    body["spec"] = want["spec"]
    body["metadata"]["annotations"] = annotations
    return await replace(client, resource, body)


def _propagate(conds: Conditions, type_: str, child: Obj | None, missing: str) -> None:
    ready = get_condition(child, "Ready") if child is not None else None
    if ready is None:
        conds.mark(type_, "Unknown", "NotReconciled", missing)
        return
    status = ready.get("status")
    conds.mark(type_, status if status in ("True", "False") else "Unknown",
               ready.get("reason", ""), ready.get("message", ""))


class ChannelReconciler:
    """Channels: a backing Broker, its address and readiness."""

    name = "channel"
    resource = CHANNELS

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def watches(self) -> Sequence[Watch]:
        return (Watch(BROKERS, owner_keys("Channel")),)

    async def reconcile(self, namespace: str, name: str) -> None:
        channel = self._cache.get(CHANNELS, namespace, name)
        if channel is None:
            return
        current = self._cache.get(BROKERS, namespace, backing_broker_name(name))
        broker = await _ensure(self._client, BROKERS, current, channel,
                               make_backing_broker(channel))
        old = channel.get("status") or {}
        conds = Conditions(old.get("conditions") or (),
                           ("BackingChannelReady", "Addressable", "DeadLetterSinkResolved",
                            "EventPoliciesReady"))
        status: Obj = {"observedGeneration": meta(channel).get("generation", 0)}
        if broker is None:
            message = f'Broker "{backing_broker_name(name)}" is not owned by this channel'
            conds.mark("BackingChannelReady", "False", "NotOwned", message)
        else:
            _propagate(conds, "BackingChannelReady", broker, "the backing broker is starting")
            bstatus = broker.get("status") or {}
            if url := (bstatus.get("address") or {}).get("url"):
                status["address"] = {"name": "http", "url": url}
                conds.mark("Addressable", "True")
            if dls := bstatus.get("deadLetterSinkUri"):
                status["deadLetterSinkUri"] = dls
            dls_cond = get_condition(broker, "DeadLetterSinkResolved")
            if dls_cond is not None:
                conds.mark("DeadLetterSinkResolved", dls_cond.get("status", "Unknown"),
                           dls_cond.get("reason", ""), dls_cond.get("message", ""))
        conds.mark("EventPoliciesReady", "True")
        status["conditions"] = conds.result(rfc3339(self._cfg.clock()))
        await update_status(self._client, CHANNELS, channel, status)


class SubscriptionReconciler:
    """Subscriptions: a Trigger on their channel's backing Broker."""

    name = "subscription"
    resource = SUBSCRIPTIONS

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def watches(self) -> Sequence[Watch]:
        def of_channel(obj: Obj) -> list[Key]:
            ns, name = key_of(obj)
            return [key_of(s) for s in self._cache.list(SUBSCRIPTIONS, ns)
                    if ((s.get("spec") or {}).get("channel") or {}).get("name") == name]

        def replying_to(resource: Resource) -> Callable[[Obj], list[Key]]:
            def keys(obj: Obj) -> list[Key]:
                ns = key_of(obj)[0]
                return [key_of(s) for s in self._cache.list(SUBSCRIPTIONS, ns)
                        if refers_to((s.get("spec") or {}).get("reply"), obj, resource, ns)]

            return keys

        def channel_or_reply(obj: Obj) -> list[Key]:
            return sorted({*of_channel(obj), *replying_to(CHANNELS)(obj)})

        return (
            Watch(TRIGGERS, owner_keys("Subscription")),
            Watch(CHANNELS, channel_or_reply),
            Watch(BROKERS, replying_to(BROKERS)),
            Watch(KSERVICES, replying_to(KSERVICES)),
        )

    async def reconcile(self, namespace: str, name: str) -> None:
        sub = self._cache.get(SUBSCRIPTIONS, namespace, name)
        if sub is None:
            return
        spec = sub.get("spec") or {}
        ref = spec.get("channel") or {}
        old = sub.get("status") or {}
        conds = Conditions(old.get("conditions") or (),
                           ("ReferencesResolved", "ChannelReady", "AddedToChannel",
                            "OIDCIdentityCreated"))
        conds.mark("OIDCIdentityCreated", "True", "authentication-oidc feature disabled")
        status: Obj = {"observedGeneration": meta(sub).get("generation", 0)}
        channel = None
        if ref.get("kind") == "Channel" and ref.get("apiVersion") == CHANNELS.api_version:
            channel = self._cache.get(CHANNELS, namespace, str(ref.get("name", "")))
        if channel is None:
            message = (f'channel {ref.get("kind")} "{ref.get("name")}" not found '
                       f"(knpy subscribes to {CHANNELS.api_version} Channels)")
            conds.mark("ChannelReady", "False", "ChannelNotFound", message)
            conds.mark("ReferencesResolved", "False", "ChannelNotFound", message)
        elif spec.get("reply") and not (reply := self._resolve(spec["reply"], namespace)).ok:
            _propagate(conds, "ChannelReady", channel, "the channel is starting")
            conds.mark("ReferencesResolved", "False", reply.reason,
                       f"Failed to resolve spec.reply: {reply.message}")
        else:
            _propagate(conds, "ChannelReady", channel, "the channel is starting")
            reply_url = reply.url if spec.get("reply") else None
            trigger = await _ensure(
                self._client, TRIGGERS,
                self._cache.get(TRIGGERS, namespace, child_name(name, "-kn-sub")),
                sub, make_backing_trigger(sub, reply_url),
            )
            if trigger is None:
                conds.mark("AddedToChannel", "False", "NotOwned",
                           f'Trigger "{child_name(name, "-kn-sub")}" is not owned by this '
                           "subscription")
            else:
                tstatus = trigger.get("status") or {}
                physical = {k: tstatus[k] for k in ("subscriberUri", "deadLetterSinkUri")
                            if tstatus.get(k)}
                if reply_url:
                    physical["replyUri"] = reply_url
                if physical:
                    status["physicalSubscription"] = physical
                resolved = get_condition(trigger, "SubscriberResolved")
                if resolved is None:
                    conds.mark("ReferencesResolved", "Unknown", "NotReconciled",
                               "the subscriber is being resolved")
                else:
                    conds.mark("ReferencesResolved", resolved.get("status", "Unknown"),
                               resolved.get("reason", ""), resolved.get("message", ""))
                _propagate(conds, "AddedToChannel", trigger, "the delivery is starting")
        status["conditions"] = conds.result(rfc3339(self._cfg.clock()))
        await update_status(self._client, SUBSCRIPTIONS, sub, status)

    def _resolve(self, dest: object, namespace: str) -> Resolved:
        return resolve(self._cache, dest, namespace, self._cfg.domain, self._cfg.ingress_port)

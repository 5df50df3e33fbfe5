"""Knative Eventing's Broker and Trigger reconcilers for ``knpy serve``'s broker data plane.

The data plane (``python -m eventing.broker``, the ``eventing-broker`` Deployment in
``knative-eventing``) reads Brokers and Triggers itself; these reconcilers write what it and the
users read from status, as Knative's MTChannelBasedBroker controller does
(pkg/reconciler/broker, pkg/reconciler/broker/trigger):

- **Broker** of the class ``MTChannelBasedBroker`` (knpy's durable default):
  ``status.address.url`` is
  ``http://broker-ingress.knative-eventing.localhost:<ingress port>/<ns>/<name>`` (the ingress
  routes that Host to the data plane). Conditions: IngressReady and FilterReady from the ready
  addresses of ``knative-eventing/broker-ingress`` (one process serves both roles),
  TriggerChannelReady (True: events are stored by the data plane, there is no channel),
  Addressable, DeadLetterSinkResolved (with ``status.deadLetterSinkUri``, or True with
  ``DeadLetterSinkNotConfigured``), EventPoliciesReady (True: knpy has no event policies);
  Ready is their conjunction.
- **Broker** of the class ``RabbitMQBroker``: served by the ``rabbitmq-broker`` Deployment
  that ``knpy serve --rabbitmq URL`` runs (Host
  ``rabbitmq-broker-ingress.knative-eventing.localhost``). The conditions are
  eventing-rabbitmq's (pkg/reconciler/broker): ExchangeReady and DLXReady (False with
  ``RabbitMQNotConfigured`` when knpy serve has no ``--rabbitmq``, ``RabbitMQUnreachable``
  when an AMQP login with the URL fails: no server, or its user, password or vhost refused),
  IngressReady (the data plane's ready addresses; it becomes ready only once connected to
  RabbitMQ), Addressable, DeadLetterSinkResolved. A broker of any other class is left to
  its own controller.
- **Trigger**: BrokerReady propagated from its Broker's Ready (``BrokerDoesNotExist`` when
  missing), SubscriberResolved with ``status.subscriberUri`` (a Knative Service resolves to its
  URL with the ingress port: dialable from this host), DeadLetterSinkResolved with
  ``status.deadLetterSinkUri`` (the trigger's sink, else its broker's when the trigger has no
  delivery of its own), SubscriptionReady and DependencyReady True (the dispatcher reads the
  trigger directly), OIDCIdentityCreated True; Ready is their conjunction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from shared.kube.client import KubeClient
from shared.kube.resources import (
    BROKER_CLASS_ANNOTATION,
    BROKER_INGRESS_HOST,
    BROKERS,
    CHANNELS,
    DEFAULT_BROKER_CLASS,
    ENDPOINTS,
    EVENTING_NAMESPACE,
    KSERVICES,
    RABBITMQ_BROKER_CLASS,
    RABBITMQ_BROKER_INGRESS_HOST,
    TRIGGERS,
    Obj,
    annotations_of,
    key_of,
    meta,
)

from .addressable import Resolved, resolve
from .base import Cache, Watch, update_status
from .config import ControllerConfig
from .meta import Conditions, Key, get_condition, rfc3339

__all__ = [
    "BROKER_INGRESS_SERVICE",
    "RABBITMQ_INGRESS_SERVICE",
    "BrokerReconciler",
    "TriggerReconciler",
    "broker_status",
    "broker_url",
    "probe_rabbitmq",
    "rabbitmq_broker_status",
    "trigger_status",
]

# The Service (and so the Endpoints) of the broker data plane in knative-eventing.
BROKER_INGRESS_SERVICE: Final = "broker-ingress"
# The Service of the RabbitMQBroker class's data plane (knpy serve --rabbitmq).
RABBITMQ_INGRESS_SERVICE: Final = "rabbitmq-broker-ingress"
# The classes knpy serve reconciles: its own, and RabbitMQBroker, whose data plane it runs when
# given a RabbitMQ (and whose brokers otherwise say so in their conditions).
SERVED_CLASSES: Final = (DEFAULT_BROKER_CLASS, RABBITMQ_BROKER_CLASS)
_BROKER_CONDITIONS: Final = (
    "IngressReady", "TriggerChannelReady", "FilterReady", "Addressable",
    "DeadLetterSinkResolved", "EventPoliciesReady",
)
# eventing-rabbitmq's broker conditions (but its SecretReady: knpy holds no Secret).
_RABBITMQ_CONDITIONS: Final = (
    "ExchangeReady", "DLXReady", "IngressReady", "Addressable", "DeadLetterSinkResolved",
)
NOT_CONFIGURED: Final = (
    "RabbitMQNotConfigured",
    "knpy serve runs no RabbitMQ broker data plane: start it with "
    "--rabbitmq amqp://USER:PASSWORD@HOST:5672/",
)
# An AMQP login to RabbitMQ on loopback takes a few milliseconds; 2 s means it is not there.
RABBITMQ_PROBE_S: Final = 2.0
_TRIGGER_CONDITIONS: Final = (
    "BrokerReady", "SubscriptionReady", "DependencyReady", "SubscriberResolved",
    "DeadLetterSinkResolved", "OIDCIdentityCreated",
)
_NO_DLS: Final = ("DeadLetterSinkNotConfigured", "No dead letter sink is configured.")


def broker_url(namespace: str, name: str, port: int, host: str = BROKER_INGRESS_HOST) -> str:
    """A Broker's address: the ingress' port, the Host of its class's data plane."""
    host = host if port == 80 else f"{host}:{port}"
    return f"http://{host}/{namespace}/{name}"


def _class(broker: Obj) -> str:
    return annotations_of(broker).get(BROKER_CLASS_ANNOTATION) or DEFAULT_BROKER_CLASS


def _served(broker: Obj) -> bool:
    return _class(broker) in SERVED_CLASSES


async def probe_rabbitmq(url: str, timeout_s: float = RABBITMQ_PROBE_S) -> str | None:
    """None when RabbitMQ at ``url`` takes its login (user, password and vhost), as the data
    plane will need; else why not, without the credentials. eventing-rabbitmq's ExchangeReady
    comes from declaring the exchange, which a refused login fails as surely as an absent
    server. The handshake is aiormq's, the data plane's own AMQP client."""
    # Both only once a RabbitMQBroker is reconciled on a knpy serve --rabbitmq: the reconciler's
    # module stays importable without an event loop (tests/controlplane/controllers/test_imports).
    import asyncio

    import aiormq

    parts = urlsplit(url)
    default = 5671 if parts.scheme == "amqps" else 5672
    try:
        where = f"{parts.hostname or '127.0.0.1'}:{parts.port or default}"
    except ValueError as err:  # a port that is not a number
        return f"the RabbitMQ URL is not valid: {err}"
    try:
        async with asyncio.timeout(timeout_s):
            connection = await aiormq.connect(url)
            await connection.close()
    except TimeoutError:
        return f"cannot reach RabbitMQ at {where}: no answer within {timeout_s:g} s"
    except aiormq.exceptions.ProbableAuthenticationError as err:
        return f"RabbitMQ at {where} refused the URL's user and password: {err}"
    except aiormq.exceptions.InvalidFrameError:  # Connection.Close instead of OpenOk
        return f"RabbitMQ at {where} refused the URL's vhost {parts.path[1:] or '/'!r}"
    except (aiormq.exceptions.AMQPError, OSError) as err:
        why = str(err) or type(err).__name__
        if parts.password:  # aiormq names none today; a later version must not leak it
            why = why.replace(parts.password, "***")
        return f"cannot reach RabbitMQ at {where}: {why}"
    return None


def _ready_addresses(endpoints: Obj | None) -> int:
    return sum(len(s.get("addresses") or ()) for s in (endpoints or {}).get("subsets") or ())


def _dls(spec: object) -> object:
    delivery = spec.get("delivery") if isinstance(spec, dict) else None
    return delivery.get("deadLetterSink") if isinstance(delivery, dict) else None


def _mark_dls(conds: Conditions, status: Obj, dls: Resolved | None) -> None:
    """DeadLetterSinkResolved and ``status.deadLetterSinkUri`` (None: no sink configured)."""
    if dls is None:
        conds.mark("DeadLetterSinkResolved", "True", *_NO_DLS)
    elif dls.ok:
        conds.mark("DeadLetterSinkResolved", "True")
        status["deadLetterSinkUri"] = dls.url
    else:
        conds.mark("DeadLetterSinkResolved", "False", "Unable to get the dead letter sink's URI",
                   dls.message)


def broker_status(broker: Obj, endpoints: Obj | None, dls: Resolved | None, port: int,
                  now: str) -> Obj:
    """The Broker's status: its address and conditions (MTChannelBasedBroker's)."""
    ns, name = key_of(broker)
    old = broker.get("status") or {}
    conds = Conditions(old.get("conditions") or (), _BROKER_CONDITIONS)
    if _ready_addresses(endpoints):
        conds.mark("IngressReady", "True")
        conds.mark("FilterReady", "True")
    else:
        message = f'Endpoints "{EVENTING_NAMESPACE}/{BROKER_INGRESS_SERVICE}" are unavailable.'
        conds.mark("IngressReady", "False", "EndpointsUnavailable", message)
        conds.mark("FilterReady", "False", "EndpointsUnavailable", message)
    conds.mark("TriggerChannelReady", "True")
    conds.mark("EventPoliciesReady", "True")
    url = broker_url(ns, name, port)
    conds.mark("Addressable", "True")
    status: Obj = {
        "observedGeneration": meta(broker).get("generation", 0),
        "address": {"name": "http", "url": url},
        "addresses": [{"name": "http", "url": url}],
    }
    _mark_dls(conds, status, dls)
    status["conditions"] = conds.result(now)
    return status


def rabbitmq_broker_status(broker: Obj, endpoints: Obj | None, dls: Resolved | None,
                           port: int, now: str, problem: tuple[str, str] | None) -> Obj:
    """A RabbitMQBroker's status (eventing-rabbitmq's conditions); ``problem`` is the reason
    and message when knpy serve has no RabbitMQ, or it does not answer."""
    ns, name = key_of(broker)
    old = broker.get("status") or {}
    conds = Conditions(old.get("conditions") or (), _RABBITMQ_CONDITIONS)
    status: Obj = {"observedGeneration": meta(broker).get("generation", 0)}
    if problem is not None:
        conds.mark("ExchangeReady", "False", *problem)
        conds.mark("DLXReady", "False", *problem)
    else:
        conds.mark("ExchangeReady", "True")
        conds.mark("DLXReady", "True")
    if problem is not None and problem[0] == NOT_CONFIGURED[0]:
        # Nothing serves the class: no address to give (eventing-rabbitmq sets it once its
        # ingress exists).
        conds.mark("IngressReady", "False", *problem)
        conds.mark("Addressable", "False", *problem)
    else:
        if _ready_addresses(endpoints):
            conds.mark("IngressReady", "True")
        else:
            conds.mark("IngressReady", "False", "EndpointsUnavailable",
                       f'Endpoints "{EVENTING_NAMESPACE}/{RABBITMQ_INGRESS_SERVICE}" are '
                       "unavailable.")
        url = broker_url(ns, name, port, RABBITMQ_BROKER_INGRESS_HOST)
        status["address"] = {"name": "http", "url": url}
        status["addresses"] = [{"name": "http", "url": url}]
        conds.mark("Addressable", "True")
    _mark_dls(conds, status, dls)
    status["conditions"] = conds.result(now)
    return status


def trigger_status(trigger: Obj, broker: Obj | None, subscriber: Resolved,
                   dls: Resolved | None, now: str) -> Obj:
    """The Trigger's status from its Broker and its resolved destinations."""
    old = trigger.get("status") or {}
    conds = Conditions(old.get("conditions") or (), _TRIGGER_CONDITIONS)
    broker_name = str((trigger.get("spec") or {}).get("broker", ""))
    ready = get_condition(broker, "Ready") if broker is not None else None
    if not broker_name and (trigger.get("spec") or {}).get("brokerRef"):
        conds.mark("BrokerReady", "False", "BrokerRefNotSupported",
                   "knpy's broker data plane serves triggers that name spec.broker")
    elif broker is None:
        conds.mark("BrokerReady", "False", "BrokerDoesNotExist",
                   f'Broker "{broker_name}" does not exist')
    elif ready is None:
        conds.mark("BrokerReady", "Unknown", "BrokerNotConfigured",
                   "Broker has not yet been reconciled.")
    else:
        status = ready.get("status")
        conds.mark("BrokerReady", status if status in ("True", "False") else "Unknown",
                   ready.get("reason", ""), ready.get("message", ""))
    conds.mark("SubscriptionReady", "True")
    conds.mark("DependencyReady", "True")
    conds.mark("OIDCIdentityCreated", "True", "authentication-oidc feature disabled")
    out: Obj = {"observedGeneration": meta(trigger).get("generation", 0)}
    if subscriber.ok:
        conds.mark("SubscriberResolved", "True")
        out["subscriberUri"] = subscriber.url
    else:
        conds.mark("SubscriberResolved", "False", "Unable to get the Subscriber's URI",
                   subscriber.message)
    _mark_dls(conds, out, dls)
    out["conditions"] = conds.result(now)
    return out


class BrokerReconciler:
    """Brokers of the classes knpy serve runs: address and conditions."""

    name = "broker"
    resource = BROKERS

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def watches(self) -> Sequence[Watch]:
        def all_brokers(obj: Obj) -> list[Key]:
            if key_of(obj) not in (
                (EVENTING_NAMESPACE, BROKER_INGRESS_SERVICE),
                (EVENTING_NAMESPACE, RABBITMQ_INGRESS_SERVICE),
            ):
                return []
            return [key_of(b) for b in self._cache.list_all(BROKERS)]

        def same_namespace(obj: Obj) -> list[Key]:
            return [key_of(b) for b in self._cache.list(BROKERS, key_of(obj)[0])]

        return (
            Watch(ENDPOINTS, all_brokers, EVENTING_NAMESPACE),
            Watch(KSERVICES, same_namespace),
            Watch(CHANNELS, same_namespace),
        )

    async def reconcile(self, namespace: str, name: str) -> None:
        broker = self._cache.get(BROKERS, namespace, name)
        if broker is None or not _served(broker):
            return
        dest = _dls(broker.get("spec"))
        cfg = self._cfg
        dls = (
            None if dest is None
            else resolve(self._cache, dest, namespace, cfg.domain, cfg.ingress_port)
        )
        now = rfc3339(cfg.clock())
        if _class(broker) == RABBITMQ_BROKER_CLASS:
            problem: tuple[str, str] | None = NOT_CONFIGURED
            if cfg.rabbitmq_url:
                why = await probe_rabbitmq(cfg.rabbitmq_url)
                problem = None if why is None else ("RabbitMQUnreachable", why)
            endpoints = self._cache.get(ENDPOINTS, EVENTING_NAMESPACE, RABBITMQ_INGRESS_SERVICE)
            status = rabbitmq_broker_status(broker, endpoints, dls, cfg.ingress_port, now,
                                            problem)
        else:
            endpoints = self._cache.get(ENDPOINTS, EVENTING_NAMESPACE, BROKER_INGRESS_SERVICE)
            status = broker_status(broker, endpoints, dls, cfg.ingress_port, now)
        await update_status(self._client, BROKERS, broker, status)


class TriggerReconciler:
    """Triggers: their broker's readiness and their resolved subscriber and dead-letter sink."""

    name = "trigger"
    resource = TRIGGERS

    def __init__(self, cache: Cache, client: KubeClient, cfg: ControllerConfig) -> None:
        self._cache = cache
        self._client = client
        self._cfg = cfg

    def watches(self) -> Sequence[Watch]:
        def of_broker(obj: Obj) -> list[Key]:
            ns, name = key_of(obj)
            return [
                key_of(t) for t in self._cache.list(TRIGGERS, ns)
                if (t.get("spec") or {}).get("broker") == name
            ]

        def same_namespace(obj: Obj) -> list[Key]:
            return [key_of(t) for t in self._cache.list(TRIGGERS, key_of(obj)[0])]

        return (
            Watch(BROKERS, of_broker),
            Watch(KSERVICES, same_namespace),
            Watch(CHANNELS, same_namespace),
        )

    async def reconcile(self, namespace: str, name: str) -> None:
        trigger = self._cache.get(TRIGGERS, namespace, name)
        if trigger is None:
            return
        spec = trigger.get("spec") or {}
        broker = self._cache.get(BROKERS, namespace, str(spec.get("broker", "")))
        if broker is not None and not _served(broker):
            return  # another class' controller owns its triggers
        cfg = self._cfg

        def resolved(dest: object) -> Resolved:
            return resolve(self._cache, dest, namespace, cfg.domain, cfg.ingress_port)

        subscriber = resolved(spec.get("subscriber"))
        dls: Resolved | None = None
        if spec.get("delivery") is not None:
            # A trigger's delivery replaces its broker's wholesale (eventing.delivery).
            dest = _dls(spec)
            dls = None if dest is None else resolved(dest)
        elif broker is not None and (dest := _dls(broker.get("spec"))) is not None:
            dls = resolved(dest)
        status = trigger_status(trigger, broker, subscriber, dls, rfc3339(cfg.clock()))
        await update_status(self._client, TRIGGERS, trigger, status)

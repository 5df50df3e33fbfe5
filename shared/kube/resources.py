"""The Kubernetes resources knpy reads and writes, and Knative's labels on them.

Objects travel as plain JSON dicts (``Obj``), exactly as the API server sends them: the
kubernetes-asyncio models are slow to build for cluster-wide lists, and the data plane reads
only a handful of fields. Knative's label and annotation names are kept verbatim
(pkg/apis/serving/register.go, networking's register.go).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "BROKERS",
    "CHANNELS",
    "CONFIGMAPS",
    "CONFIGURATIONS",
    "CONTAINERSOURCES",
    "DEPLOYMENTS",
    "ENDPOINTS",
    "ENDPOINTSLICES",
    "KSERVICES",
    "LEASES",
    "METRICS",
    "NAMESPACES",
    "PINGSOURCES",
    "PODAUTOSCALERS",
    "PODS",
    "REVISIONS",
    "ROUTES",
    "SERVERLESSSERVICES",
    "SERVICES",
    "SINKBINDINGS",
    "SUBSCRIPTIONS",
    "TRIGGERS",
    "Obj",
    "Resource",
    "known_resources",
    "resource_for",
]

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resource:
    """A group/version/plural and its kind: enough to build any REST path for it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path: the collection (all namespaces when ``namespace`` is None), an object
        or one of its subresources (``status``, ``scale``)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource is not None:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


KSERVICES: Final = Resource("serving.knative.dev", "v1", "services", "Service")
CONFIGURATIONS: Final = Resource("serving.knative.dev", "v1", "configurations", "Configuration")
REVISIONS: Final = Resource("serving.knative.dev", "v1", "revisions", "Revision")
ROUTES: Final = Resource("serving.knative.dev", "v1", "routes", "Route")
PODAUTOSCALERS: Final = Resource(
    "autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers", "PodAutoscaler"
)
METRICS: Final = Resource("autoscaling.internal.knative.dev", "v1alpha1", "metrics", "Metric")
SERVERLESSSERVICES: Final = Resource(
    "networking.internal.knative.dev", "v1alpha1", "serverlessservices", "ServerlessService"
)
DEPLOYMENTS: Final = Resource("apps", "v1", "deployments", "Deployment")
PODS: Final = Resource("", "v1", "pods", "Pod")
SERVICES: Final = Resource("", "v1", "services", "Service")
ENDPOINTS: Final = Resource("", "v1", "endpoints", "Endpoints")
CONFIGMAPS: Final = Resource("", "v1", "configmaps", "ConfigMap")
NAMESPACES: Final = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
LEASES: Final = Resource("coordination.k8s.io", "v1", "leases", "Lease")
ENDPOINTSLICES: Final = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
# Knative Eventing (pkg/apis/eventing/v1, messaging/v1, sources/v1).
BROKERS: Final = Resource("eventing.knative.dev", "v1", "brokers", "Broker")
TRIGGERS: Final = Resource("eventing.knative.dev", "v1", "triggers", "Trigger")
CHANNELS: Final = Resource("messaging.knative.dev", "v1", "channels", "Channel")
SUBSCRIPTIONS: Final = Resource("messaging.knative.dev", "v1", "subscriptions", "Subscription")
PINGSOURCES: Final = Resource("sources.knative.dev", "v1", "pingsources", "PingSource")
SINKBINDINGS: Final = Resource("sources.knative.dev", "v1", "sinkbindings", "SinkBinding")
CONTAINERSOURCES: Final = Resource(
    "sources.knative.dev", "v1", "containersources", "ContainerSource"
)

# -- Knative's labels and annotations --------------------------------------------------------
SERVICE_LABEL: Final = "serving.knative.dev/service"
CONFIGURATION_LABEL: Final = "serving.knative.dev/configuration"
CONFIGURATION_GENERATION_LABEL: Final = "serving.knative.dev/configurationGeneration"
REVISION_LABEL: Final = "serving.knative.dev/revision"
REVISION_UID_LABEL: Final = "serving.knative.dev/revisionUID"
ROUTE_LABEL: Final = "serving.knative.dev/route"
SKS_LABEL: Final = "networking.internal.knative.dev/serverlessservice"
SERVICE_TYPE_LABEL: Final = "networking.internal.knative.dev/serviceType"
SERVICE_TYPE_PUBLIC: Final = "Public"
SERVICE_TYPE_PRIVATE: Final = "Private"
CLASS_ANNOTATION: Final = "autoscaling.knative.dev/class"
KPA_CLASS: Final = "kpa.autoscaling.knative.dev"
METRIC_ANNOTATION: Final = "autoscaling.knative.dev/metric"
# The system namespace Knative's components run in (SYSTEM_NAMESPACE in their manifests).
SYSTEM_NAMESPACE: Final = "knative-serving"
ACTIVATOR_SERVICE: Final = "activator-service"
# Eventing's system namespace and the Broker class annotation (eventing.knative.dev/v1).
EVENTING_NAMESPACE: Final = "knative-eventing"
BROKER_CLASS_ANNOTATION: Final = "eventing.knative.dev/broker.class"
# knpy's default class: durable, stored in the state dir (docs/eventing.md).
DEFAULT_BROKER_CLASS: Final = "MTChannelBasedBroker"
RABBITMQ_BROKER_CLASS: Final = "RabbitMQBroker"
# The Host the ingress routes to the broker data plane (a Broker's status.address.url).
BROKER_INGRESS_HOST: Final = "broker-ingress.knative-eventing.localhost"
# ... and to the RabbitMQBroker class's data plane (knpy serve --rabbitmq).
RABBITMQ_BROKER_INGRESS_HOST: Final = "rabbitmq-broker-ingress.knative-eventing.localhost"
AUTOSCALER_SERVICE: Final = "autoscaler"
# A Subscription's backing Trigger (knpy's channels): the label names the Subscription; the
# annotation carries its resolved spec.reply URL, where the data plane sends replies.
SUBSCRIPTION_LABEL: Final = "messaging.knative.dev/subscription"
SUBSCRIPTION_REPLY_ANNOTATION: Final = "knpy.dev/subscription-reply"


def known_resources() -> dict[tuple[str, str], Resource]:
    """Every resource above by (apiVersion, kind), the key an object itself carries."""
    return {(r.api_version, r.kind): r for r in globals().values() if isinstance(r, Resource)}


_KNOWN: Final = known_resources()


def resource_for(api_version: str, kind: str) -> Resource | None:
    """The resource of an object's apiVersion and kind, or None when knpy does not know it."""
    return _KNOWN.get((api_version, kind))


def meta(obj: Obj) -> Obj:
    """``metadata`` of an object (an empty dict when absent), for terse reads."""
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def key_of(obj: Obj) -> tuple[str, str]:
    """(namespace, name) of an object; namespace "" for cluster-scoped ones."""
    m = meta(obj)
    return str(m.get("namespace", "")), str(m.get("name", ""))


def labels_of(obj: Obj) -> dict[str, str]:
    labels = meta(obj).get("labels")
    return labels if isinstance(labels, dict) else {}


def annotations_of(obj: Obj) -> dict[str, str]:
    annotations = meta(obj).get("annotations")
    return annotations if isinstance(annotations, dict) else {}

"""The table of served resources: one ``Kind`` row per resource, everything else derives from it.

Discovery documents, REST routing, the status/scale subresources, generation bookkeeping and
kubectl's table columns all read this table, so adding a resource (eventing's, later) is one row
here. Printer columns follow Knative's CRDs (config/core/300-resources/*.yaml) and, for core
types, kube-apiserver's printers (pkg/printers/internalversion).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.kube.resources import (
    BROKERS,
    CHANNELS,
    CONFIGMAPS,
    CONFIGURATIONS,
    CONTAINERSOURCES,
    DEPLOYMENTS,
    ENDPOINTS,
    ENDPOINTSLICES,
    KSERVICES,
    LEASES,
    METRICS,
    NAMESPACES,
    PINGSOURCES,
    PODAUTOSCALERS,
    PODS,
    REVISIONS,
    ROUTES,
    SERVERLESSSERVICES,
    SERVICES,
    SINKBINDINGS,
    SUBSCRIPTIONS,
    TRIGGERS,
    Resource,
)

__all__ = ["EVENTS", "KINDS", "Column", "Kind", "Registry"]

EVENTS = Resource("", "v1", "events", "Event")

# A jsonpath of Knative's CRD printer columns: the Ready condition's fields.
_READY = ".status.conditions[?(@.type=='Ready')].status"
_REASON = ".status.conditions[?(@.type=='Ready')].reason"


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: a CRD-style jsonpath, or a builtin printer name (``@pod_ready``...).
    A kind whose columns include ``@name`` places the Name column itself; others get it
    first."""

    name: str
    path: str
    type: str = "string"
    priority: int = 0  # 1: shown only with -o wide
    default: Any = None  # the cell when the path is absent (kube's printers show 0 for counts)


@dataclass(frozen=True, slots=True)
class Kind:
    """A served resource and how the server treats it."""

    resource: Resource
    singular: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource; PUT/PATCH of the main one keep status
    scale: bool = False  # has a /scale subresource (autoscaling/v1 Scale)
    generation: bool = True  # metadata.generation moves on changes outside metadata/status
    custom: bool = False  # a CRD in a cluster (Knative's): no strategic merge patch
    columns: tuple[Column, ...] = ()  # after NAME; CRDs list AGE themselves when they show it
    verbs: tuple[str, ...] = (
        "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch",
    )

    @property
    def key(self) -> str:
        """The store's key: ``plural.group`` (``pods`` for the core group)."""
        return str(self.resource)


_KNATIVE = ("all", "knative", "serving")
_AGE = Column("Age", "@age", "date")
_EVENTING = ("all", "knative", "eventing")
_MESSAGING = ("all", "knative", "messaging")
_SOURCES = ("all", "knative", "sources")
_READY_REASON = (_AGE, Column("Ready", _READY), Column("Reason", _REASON))
_SINK = Column("Sink", ".status.sinkUri")

KINDS: tuple[Kind, ...] = (
    Kind(
        KSERVICES, "service", ("kservice", "ksvc"), _KNATIVE, status=True, custom=True,
        columns=(
            Column("URL", ".status.url"),
            Column("LatestCreated", ".status.latestCreatedRevisionName"),
            Column("LatestReady", ".status.latestReadyRevisionName"),
            Column("Ready", _READY),
            Column("Reason", _REASON),
        ),
    ),
    Kind(
        CONFIGURATIONS, "configuration", ("config", "cfg"), _KNATIVE, status=True, custom=True,
        columns=(
            Column("LatestCreated", ".status.latestCreatedRevisionName"),
            Column("LatestReady", ".status.latestReadyRevisionName"),
            Column("Ready", _READY),
            Column("Reason", _REASON),
        ),
    ),
    Kind(
        REVISIONS, "revision", ("rev",), _KNATIVE, status=True, custom=True,
        columns=(
            Column("Config Name", ".metadata.labels['serving\\.knative\\.dev/configuration']"),
            Column(
                "Generation",
                ".metadata.labels['serving\\.knative\\.dev/configurationGeneration']",
            ),
            Column("Ready", _READY),
            Column("Reason", _REASON),
            Column("Actual Replicas", ".status.actualReplicas", "integer"),
            Column("Desired Replicas", ".status.desiredReplicas", "integer"),
        ),
    ),
    Kind(
        ROUTES, "route", ("rt",), _KNATIVE, status=True, custom=True,
        columns=(
            Column("URL", ".status.url"),
            Column("Ready", _READY),
            Column("Reason", _REASON),
        ),
    ),
    Kind(
        PODAUTOSCALERS, "podautoscaler", ("kpa", "pa"), ("knative-internal", "autoscaling"),
        status=True, custom=True,
        columns=(
            Column("DesiredScale", ".status.desiredScale", "integer"),
            Column("ActualScale", ".status.actualScale", "integer"),
            Column("Ready", _READY),
            Column("Reason", _REASON),
        ),
    ),
    Kind(
        METRICS, "metric", (), ("knative-internal", "autoscaling"), status=True, custom=True,
        columns=(Column("Ready", _READY), Column("Reason", _REASON)),
    ),
    Kind(
        SERVERLESSSERVICES, "serverlessservice", ("sks",), ("knative-internal", "networking"),
        status=True, custom=True,
        columns=(
            Column("Mode", ".spec.mode"),
            Column("Activators", ".spec.numActivators", "integer"),
            Column("ServiceName", ".status.serviceName"),
            Column("PrivateServiceName", ".status.privateServiceName"),
            Column("Ready", _READY),
            Column("Reason", _REASON),
        ),
    ),
    # Knative Eventing's CRDs (config/core/resources/*.yaml): their columns and categories.
    Kind(
        BROKERS, "broker", (), _EVENTING, status=True, custom=True,
        columns=(
            Column("URL", ".status.address.url"),
            *_READY_REASON,
            Column("Class", ".metadata.annotations['eventing\\.knative\\.dev/broker\\.class']",
                   priority=1),
        ),
    ),
    Kind(
        TRIGGERS, "trigger", (), _EVENTING, status=True, custom=True,
        columns=(
            Column("Broker", ".spec.broker"),
            Column("Subscriber_URI", ".status.subscriberUri"),
            *_READY_REASON,
        ),
    ),
    Kind(
        CHANNELS, "channel", ("ch",), _MESSAGING, status=True, custom=True,
        columns=(Column("URL", ".status.address.url"), *_READY_REASON),
    ),
    Kind(SUBSCRIPTIONS, "subscription", ("sub",), _MESSAGING, status=True, custom=True,
         columns=_READY_REASON),
    Kind(
        PINGSOURCES, "pingsource", (), _SOURCES, status=True, custom=True,
        columns=(_SINK, Column("Schedule", ".spec.schedule"), *_READY_REASON),
    ),
    Kind(SINKBINDINGS, "sinkbinding", (), _SOURCES, status=True, custom=True,
         columns=(_SINK, *_READY_REASON)),
    Kind(CONTAINERSOURCES, "containersource", (), _SOURCES, status=True, custom=True,
         columns=(_SINK, *_READY_REASON)),
    Kind(
        DEPLOYMENTS, "deployment", ("deploy",), ("all",), status=True, scale=True,
        columns=(
            Column("Ready", "@deployment_ready"),
            Column("Up-to-date", ".status.updatedReplicas", "integer", default=0),
            Column("Available", ".status.availableReplicas", "integer", default=0),
            _AGE,
        ),
    ),
    Kind(
        PODS, "pod", ("po",), ("all",), status=True,
        columns=(
            Column("Ready", "@pod_ready"),
            Column("Status", "@pod_status"),
            Column("Restarts", "@pod_restarts", "string"),
            _AGE,
            Column("IP", ".status.podIP", priority=1),
            Column("Node", ".spec.nodeName", priority=1),
        ),
    ),
    Kind(
        SERVICES, "service", ("svc",), ("all",), status=True,
        columns=(
            Column("Type", ".spec.type"),
            Column("Cluster-IP", ".spec.clusterIP"),
            Column("External-IP", "@service_external_ip"),
            Column("Port(s)", "@service_ports"),
            _AGE,
        ),
    ),
    Kind(
        ENDPOINTS, "endpoints", ("ep",), generation=False,
        columns=(Column("Endpoints", "@endpoints"), _AGE),
    ),
    Kind(
        CONFIGMAPS, "configmap", ("cm",), generation=False,
        columns=(Column("Data", "@configmap_data", "integer"), _AGE),
    ),
    Kind(
        NAMESPACES, "namespace", ("ns",), status=True, generation=False,
        columns=(Column("Status", ".status.phase"), _AGE),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    Kind(
        EVENTS, "event", ("ev",), generation=False,
        # kube's event printer: the name is shown only with -o wide.
        columns=(
            Column("Last Seen", "@event_last_seen", "date"),
            Column("Type", ".type"),
            Column("Reason", ".reason"),
            Column("Object", "@event_object"),
            Column("Message", ".message"),
            Column("Name", "@name", priority=1),
        ),
    ),
    Kind(
        LEASES, "lease", (), generation=False,
        columns=(Column("Holder", ".spec.holderIdentity"), _AGE),
    ),
    Kind(
        ENDPOINTSLICES, "endpointslice", (), generation=False,
        columns=(Column("AddressType", ".addressType"), Column("Ports", "@slice_ports"), _AGE),
    ),
)


@dataclass(slots=True)
class Registry:
    """Lookups over the kinds: by store key, by (group, version, plural), by group."""

    kinds: tuple[Kind, ...] = KINDS
    _by_path: dict[tuple[str, str, str], Kind] = field(default_factory=dict)
    _by_key: dict[str, Kind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k in self.kinds:
            r = k.resource
            self._by_path[(r.group, r.version, r.plural)] = k
            self._by_key[k.key] = k

    def lookup(self, group: str, version: str, plural: str) -> Kind | None:
        return self._by_path.get((group, version, plural))

    def by_key(self, key: str) -> Kind | None:
        return self._by_key.get(key)

    def by_resource(self, resource: Resource) -> Kind | None:
        return self._by_key.get(str(resource))

    def groups(self) -> dict[str, list[str]]:
        """Named groups (not core) and their versions, in table order."""
        out: dict[str, list[str]] = {}
        for k in self.kinds:
            g = k.resource.group
            if g:
                versions = out.setdefault(g, [])
                if k.resource.version not in versions:
                    versions.append(k.resource.version)
        return out

    def in_group_version(self, group: str, version: str) -> Iterable[Kind]:
        return (
            k for k in self.kinds
            if k.resource.group == group and k.resource.version == version
        )

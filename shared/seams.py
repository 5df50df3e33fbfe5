"""The data plane's value types: a revision's key, what the autoscaler reads of it, a pod as
the data plane reaches it, the ServerlessService mode and a scaling decision.

They are what components make of Kubernetes objects (shared/kube informers), kept here so the
activator, the autoscaler and the ingress name a revision the same way. The in-memory stand-in
for a cluster is ``shared/kube/fake.py``; there is no second protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True, order=True)
class RevisionKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class RevisionSpec:
    """What the data plane needs of a Revision (serving.knative.dev/v1)."""

    key: RevisionKey
    container_concurrency: int = 0  # 0 = unlimited, as Knative
    timeout_s: float = 300.0  # spec.timeoutSeconds
    response_start_timeout_s: float = 0.0
    idle_timeout_s: float = 0.0
    # The revision template's annotations, autoscaling.knative.dev/* among them.
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    service: str = ""
    configuration: str = ""
    # Knative's PodAutoscaler reachability: a route sends traffic to the revision (or it is new
    # and not routed yet). An unreachable revision ignores min-scale and scales down at once.
    reachable: bool = True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One pod of a revision, as the data plane reaches it."""

    pod_name: str
    host: str  # the pod IP (127.0.0.1 on the local platform)
    port: int  # the queue-proxy's serving port (8012 in Kubernetes)
    metrics_port: int = 9090  # the queue-proxy's autoscaler stats port
    ready: bool = True  # the platform marked it ready (kubelet probe passed)
    started_at: float = 0.0  # Unix time the pod started: the autoscaler prefers older pods

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Mode(enum.Enum):
    """Knative's ServerlessService mode: is the activator in the request path?"""

    SERVE = "serve"  # ingress -> pods
    PROXY = "proxy"  # ingress -> activator -> pods


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """What the autoscaler publishes for a revision each time it decides."""

    key: RevisionKey
    desired_scale: int  # -1 = unknown yet (Knative's "no decision")
    mode: Mode
    activators: int  # how many activators should hold this revision's capacity
    excess_burst_capacity: float = 0.0

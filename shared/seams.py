"""The seams between the data plane and whatever runs the pods (local platform, Kubernetes).

The activator and the autoscaler never talk to Kubernetes or the local platform directly. They
read revision specs and endpoints, and publish scaling decisions, through the small interfaces
here. Each has an in-memory implementation (``InMemoryCluster``) for unit tests and for wiring
processes by hand; the local platform implements them over its HTTP API, and Kubernetes later
over Endpoints, PodAutoscaler, ServerlessService and the Deployment scale subresource.

Watches are async iterators that yield the *whole* current value each time it changes (level
based, like a Kubernetes informer's resync), never deltas: a consumer that misses a change still
converges on the next one.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


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


class RevisionSource(Protocol):
    """Revision specs by key, and their changes."""

    def get(self, key: RevisionKey) -> RevisionSpec | None: ...

    def watch_revisions(self) -> AsyncIterator[Mapping[RevisionKey, RevisionSpec]]: ...


class EndpointsSource(Protocol):
    """The pods of each revision, ready or not, and the activators' own endpoints."""

    def endpoints(self, key: RevisionKey) -> tuple[Endpoint, ...]: ...

    def watch_endpoints(self, key: RevisionKey) -> AsyncIterator[tuple[Endpoint, ...]]: ...

    def watch_activators(self) -> AsyncIterator[tuple[str, ...]]:
        """The addresses (host:port) of every activator; an activator finds its own index."""
        ...


class Scaler(Protocol):
    """Where the autoscaler's decisions go."""

    async def apply(self, decision: ScaleDecision) -> None: ...


class _Watchable(Generic[T]):
    """A value and the waiters for its next change (single event loop)."""

    def __init__(self, value: T) -> None:
        self.value = value
        self._changed = asyncio.Event()

    def set(self, value: T) -> None:
        self.value = value
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self) -> AsyncIterator[T]:
        while True:
            changed = self._changed
            yield self.value
            await changed.wait()


class InMemoryCluster:
    """Every seam in one object, for tests and hand wiring; the test drives it directly."""

    def __init__(self) -> None:
        self._revisions: _Watchable[Mapping[RevisionKey, RevisionSpec]] = _Watchable(
            MappingProxyType({})
        )
        self._endpoints: dict[RevisionKey, _Watchable[tuple[Endpoint, ...]]] = {}
        self._activators: _Watchable[tuple[str, ...]] = _Watchable(())
        self.decisions: list[ScaleDecision] = []
        self._decided = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"<InMemoryCluster revisions={len(self._revisions.value)} "
            f"decisions={len(self.decisions)}>"
        )

    # -- driven by the test --------------------------------------------------------------
    def put_revision(self, spec: RevisionSpec) -> None:
        revisions = dict(self._revisions.value)
        revisions[spec.key] = spec
        self._revisions.set(MappingProxyType(revisions))

    def delete_revision(self, key: RevisionKey) -> None:
        revisions = dict(self._revisions.value)
        revisions.pop(key, None)
        self._revisions.set(MappingProxyType(revisions))
        self.set_endpoints(key, ())

    def set_endpoints(self, key: RevisionKey, endpoints: tuple[Endpoint, ...]) -> None:
        self._watchable(key).set(tuple(endpoints))

    def set_activators(self, addresses: tuple[str, ...]) -> None:
        self._activators.set(tuple(addresses))

    async def next_decision(self, timeout_s: float = 5.0) -> ScaleDecision:
        """Wait for the next decision published after this call."""
        seen = len(self.decisions)
        async with asyncio.timeout(timeout_s):
            while len(self.decisions) == seen:
                await self._decided.wait()
        return self.decisions[seen]

    def latest(self, key: RevisionKey) -> ScaleDecision | None:
        for decision in reversed(self.decisions):
            if decision.key == key:
                return decision
        return None

    # -- RevisionSource ------------------------------------------------------------------
    def get(self, key: RevisionKey) -> RevisionSpec | None:
        return self._revisions.value.get(key)

    def watch_revisions(self) -> AsyncIterator[Mapping[RevisionKey, RevisionSpec]]:
        return self._revisions.watch()

    # -- EndpointsSource -----------------------------------------------------------------
    def endpoints(self, key: RevisionKey) -> tuple[Endpoint, ...]:
        return self._watchable(key).value

    def watch_endpoints(self, key: RevisionKey) -> AsyncIterator[tuple[Endpoint, ...]]:
        return self._watchable(key).watch()

    def watch_activators(self) -> AsyncIterator[tuple[str, ...]]:
        return self._activators.watch()

    # -- Scaler --------------------------------------------------------------------------
    async def apply(self, decision: ScaleDecision) -> None:
        self.decisions.append(decision)
        self._decided.set()
        self._decided = asyncio.Event()

    def _watchable(self, key: RevisionKey) -> _Watchable[tuple[Endpoint, ...]]:
        w = self._endpoints.get(key)
        if w is None:
            w = self._endpoints[key] = _Watchable(())
        return w

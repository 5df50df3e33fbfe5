"""What the activator reads of Knative's cluster objects: Revisions and Endpoints, as values.

Pure functions from the API server's JSON (camelCase dicts, exactly as on the wire) to the
few values the data plane needs; no I/O, no asyncio. The informer wiring is in
activator/revisions.py (RevisionTable), which calls these on every change.

- A **Revision** (serving.knative.dev/v1) gives its ``spec``: containerConcurrency (0 or
  absent = no per-pod limit), timeoutSeconds (absent: Knative's default 300),
  responseStartTimeoutSeconds and idleTimeoutSeconds (absent: 0, none), the protocol
  (``containers[0].ports[0].name == "h2c"``), and its labels and annotations
  (pkg/activator/net/throttler.go, handler/context_handler.go).
- The revision's **private Endpoints** (labels ``serving.knative.dev/revisionUID`` present and
  ``networking.internal.knative.dev/serviceType=Private``, the revision named by
  ``serving.knative.dev/revision``) give its pods: per subset, the port *named* ``http``
  (``http2`` for h2c); ``addresses`` are ready pods, ``notReadyAddresses`` are not; the pod's
  name is ``targetRef.name`` (pkg/activator/net/helpers.go endpointsToDests).
- The revision's **public Endpoints** (``serviceType=Public``) list the activators that front
  it in Proxy mode (Knative's SKS controller picks a subset of activator-service). This
  activator's share is its place among their ready addresses under the ``http`` port: none
  when it is not listed, else (index, count) with the index its position in the sorted list
  (throttler.go handlePubEpsUpdate, inferIndex).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from shared.kube.resources import (
    REVISION_LABEL,
    REVISION_UID_LABEL,
    SERVICE_TYPE_LABEL,
    SERVICE_TYPE_PRIVATE,
    SERVICE_TYPE_PUBLIC,
    Obj,
    annotations_of,
    key_of,
    labels_of,
)
from shared.seams import Endpoint, RevisionKey

__all__ = [
    "PRIVATE_ENDPOINTS_SELECTOR",
    "PUBLIC_ENDPOINTS_SELECTOR",
    "Endpoint",
    "Protocol",
    "RevisionKey",
    "RevisionSpec",
    "activator_share",
    "endpoints_revision",
    "port_name",
    "private_endpoints",
    "public_addresses",
    "revision_spec",
]

# Knative's endpoints informer filters (pkg/activator/net/revision_backends.go, throttler.go).
PRIVATE_ENDPOINTS_SELECTOR: Final = (
    f"{REVISION_UID_LABEL},{SERVICE_TYPE_LABEL}={SERVICE_TYPE_PRIVATE}"
)
PUBLIC_ENDPOINTS_SELECTOR: Final = f"{SERVICE_TYPE_LABEL}={SERVICE_TYPE_PUBLIC}"

# apis/config DefaultRevisionTimeoutSeconds: what an undefaulted Revision gets.
DEFAULT_TIMEOUT_S: Final = 300.0
_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


class Protocol(enum.Enum):
    """How the activator talks to the revision's pods (Knative's networking.ProtocolType)."""

    HTTP1 = "http1"
    H2C = "h2c"


@dataclass(frozen=True, slots=True)
class RevisionSpec:
    """What the activator needs of a Revision (serving.knative.dev/v1)."""

    key: RevisionKey
    container_concurrency: int = 0  # 0 = unlimited, as Knative
    timeout_s: float = DEFAULT_TIMEOUT_S  # spec.timeoutSeconds
    response_start_timeout_s: float = 0.0  # 0 = none
    idle_timeout_s: float = 0.0  # 0 = none
    protocol: Protocol = Protocol.HTTP1
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


def _seconds(spec: Obj, key: str, default: float) -> float:
    value = spec.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return default


def revision_spec(obj: Obj) -> RevisionSpec:
    """The activator's view of a Revision object; absent or malformed fields take defaults
    (the webhook defaults them; the activator must not crash on what it cannot use)."""
    namespace, name = key_of(obj)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    cc = spec.get("containerConcurrency")
    if not isinstance(cc, int) or isinstance(cc, bool) or cc < 0:
        cc = 0
    timeout_s = _seconds(spec, "timeoutSeconds", DEFAULT_TIMEOUT_S)
    if timeout_s == 0:
        timeout_s = DEFAULT_TIMEOUT_S  # 0 would end every request at its arrival
    return RevisionSpec(
        RevisionKey(namespace, name),
        container_concurrency=cc,
        timeout_s=timeout_s,
        response_start_timeout_s=_seconds(spec, "responseStartTimeoutSeconds", 0.0),
        idle_timeout_s=_seconds(spec, "idleTimeoutSeconds", 0.0),
        protocol=_protocol(spec),
        annotations=MappingProxyType(dict(annotations_of(obj))),
        labels=MappingProxyType(dict(labels_of(obj))),
    )


def _protocol(spec: Obj) -> Protocol:
    """h2c when the first container's first port is named "h2c" (Knative's GetProtocol)."""
    containers = spec.get("containers")
    if isinstance(containers, list) and containers and isinstance(containers[0], dict):
        ports = containers[0].get("ports")
        if (
            isinstance(ports, list)
            and ports
            and isinstance(ports[0], dict)
            and ports[0].get("name") == "h2c"
        ):
            return Protocol.H2C
    return Protocol.HTTP1


def port_name(protocol: Protocol) -> str:
    """The Service/Endpoints port name for a protocol (Knative's ServicePortName)."""
    return "http2" if protocol is Protocol.H2C else "http"


def endpoints_revision(obj: Obj) -> RevisionKey | None:
    """The revision an Endpoints object belongs to, by its ``serving.knative.dev/revision``
    label (copied from the Service by Kubernetes' endpoints controller); None without it."""
    name = labels_of(obj).get(REVISION_LABEL)
    if not name:
        return None
    return RevisionKey(key_of(obj)[0], name)


def _subsets(obj: Obj, port: str) -> Iterable[tuple[int, list[object], list[object]]]:
    """(port number, addresses, notReadyAddresses) of each subset that has the named port."""
    subsets = obj.get("subsets")
    if not isinstance(subsets, list):
        return
    for subset in subsets:
        if not isinstance(subset, dict):
            continue
        for p in subset.get("ports") or ():
            if isinstance(p, dict) and p.get("name") == port and isinstance(p.get("port"), int):
                addresses = _list(subset.get("addresses"))
                yield p["port"], addresses, _list(subset.get("notReadyAddresses"))


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _endpoint(address: object, port: int, ready: bool) -> Endpoint | None:
    if not isinstance(address, dict) or not isinstance(address.get("ip"), str):
        return None
    ref = address.get("targetRef")
    pod = ref.get("name") if isinstance(ref, dict) else None
    ip: str = address["ip"]
    return Endpoint(pod_name=pod if isinstance(pod, str) else ip, host=ip, port=port, ready=ready)


def private_endpoints(obj: Obj, port: str = "http") -> tuple[Endpoint, ...]:
    """The pods in a revision's private Endpoints under the port named ``port``, ready ones
    first, each address once (a ready listing wins over a not-ready one)."""
    ready: dict[str, Endpoint] = {}
    not_ready: dict[str, Endpoint] = {}
    for number, addresses, not_ready_addresses in _subsets(obj, port):
        for raw in addresses:
            ep = _endpoint(raw, number, True)
            if ep is not None:
                ready[ep.address] = ep
        for raw in not_ready_addresses:
            ep = _endpoint(raw, number, False)
            if ep is not None:
                not_ready.setdefault(ep.address, ep)
    return (*ready.values(), *(ep for a, ep in not_ready.items() if a not in ready))


def public_addresses(obj: Obj, port: str = "http") -> list[str]:
    """The ready ``ip:port`` addresses in a revision's public Endpoints, in activator order
    (see activator_share)."""
    return sorted({ep.address for ep in private_endpoints(obj, port) if ep.ready}, key=_order)


def _order(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port) if port.isdigit() else 0


def activator_share(addresses: Iterable[str], own_address: str) -> tuple[int, int] | None:
    """(this activator's index, the number of activators), or None when it is not listed.

    Knative sorts the activators' IP strings and takes its own ``POD_IP``'s position
    (inferIndex). knpy identifies an activator by ``ip:port`` and sorts by (IP string, port
    number): on the local platform every activator is 127.0.0.1 with its own port, and in a
    cluster, where every activator serves on the same port (8012), the order is Knative's IP
    string order exactly. (Sorting the "ip:port" strings themselves would not be: "10.0.0.12:"
    sorts before "10.0.0.1:" because "2" < ":", while Knative has 10.0.0.1 first.)
    """
    ordered = sorted(set(addresses), key=_order)
    if own_address not in ordered:
        return None
    return ordered.index(own_address), len(ordered)

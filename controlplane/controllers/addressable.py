"""Destinations (``ref`` and/or ``uri``) resolved to URLs a process on this host can dial.

Knative's resolver (knative.dev/pkg/resolver) reads an Addressable's ``status.address.url``.
In ``knpy serve`` every address goes through the one ingress port, so:

- a Knative Service resolves to its ``status.url`` (``http://hello.default.localhost``) with the
  ingress port added (``:8080``), since its ``status.address.url`` names a cluster-local host
  this machine cannot resolve;
- a Broker or a Channel resolves to its ``status.address.url`` (already with the port);
- a ``uri`` beside a ``ref`` is resolved against the ref's URL (Go's ResolveReference);
- any other kind is refused by name: knpy has no other addressable kinds.

Pure: reads the informer cache only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit, urlunsplit

from shared.kube.resources import BROKERS, CHANNELS, KSERVICES, Obj, Resource

from .base import Cache

__all__ = ["ADDRESSABLES", "Resolved", "dialable", "refers_to", "resolve"]

# (group, kind) of every kind a ref may name, and the resource to read it from.
ADDRESSABLES: Final[dict[tuple[str, str], Resource]] = {
    (KSERVICES.group, KSERVICES.kind): KSERVICES,
    (BROKERS.group, BROKERS.kind): BROKERS,
    (CHANNELS.group, CHANNELS.kind): CHANNELS,
}


@dataclass(frozen=True, slots=True)
class Resolved:
    """A destination's URL, or why there is none (``reason`` and ``message`` for a condition)."""

    url: str = ""
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.url)


def dialable(url: str, domain: str, port: int) -> str:
    """``url`` with the ingress port when its host is served by the ingress (``*.<domain>``)
    and it names no port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if port == 80 or parts.port is not None or not (host == domain or host.endswith("." + domain)):
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def refers_to(dest: object, obj: Obj, resource: Resource, namespace: str) -> bool:
    """Whether a destination's ref names ``obj`` (for watches: which objects to requeue)."""
    ref = dest.get("ref") if isinstance(dest, Mapping) else None
    if not isinstance(ref, Mapping):
        return False
    m = obj.get("metadata") or {}
    return (
        ref.get("kind") == resource.kind
        and _group(str(ref.get("apiVersion", ""))) == resource.group
        and ref.get("name") == m.get("name")
        and (ref.get("namespace") or namespace) == m.get("namespace")
    )


def resolve(cache: Cache, dest: object, namespace: str, domain: str, port: int) -> Resolved:
    """The URL of a Destination as written in a spec (validated by the webhook)."""
    if not isinstance(dest, Mapping):
        return Resolved(reason="NoDestination", message="no ref or uri")
    uri = dest.get("uri")
    ref = dest.get("ref")
    if not isinstance(ref, Mapping):
        if isinstance(uri, str) and uri:
            return Resolved(uri)
        return Resolved(reason="NoDestination", message="no ref or uri")
    kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
    ns = str(ref.get("namespace") or namespace)
    group = _group(str(ref.get("apiVersion", "")))
    resource = ADDRESSABLES.get((group, kind))
    if resource is None:
        served = ", ".join(f"{k}.{g}" for g, k in ADDRESSABLES)
        message = f"{kind}.{group} {ns}/{name} is not addressable in knpy serve (served: {served})"
        return Resolved(reason="NotAddressable", message=message)
    obj = cache.get(resource, ns, name)
    if obj is None:
        message = f'failed to get object {ns}/{name}: {resource} "{name}" not found'
        return Resolved(reason="NotFound", message=message)
    status = obj.get("status") or {}
    if resource == KSERVICES:
        url = status.get("url") or ""
    else:
        url = (status.get("address") or {}).get("url") or ""
    if not isinstance(url, str) or not url:
        message = f"address not set for {kind} {ns}/{name}"
        return Resolved(reason="AddressNotSet", message=message)
    url = dialable(url, domain, port)
    if isinstance(uri, str) and uri:
        url = urljoin(url, uri)
    return Resolved(url)

"""The write side of the Kubernetes seam: a small client over raw JSON objects.

Reconcilers read from informers and write through this interface; ``kubeclient`` implements it
over kubernetes-asyncio, ``fake`` in memory. Errors are the API server's ``Status`` mapped to a
flat vocabulary (404 NotFound, 409 Conflict/AlreadyExists, 410 Gone, 422 Invalid), so callers
can retry a conflict as Knative's generated reconcilers do (re-read, re-apply, write again).
"""

from __future__ import annotations

import builtins
from typing import Literal, Protocol

from shared.kube.resources import Obj, Resource

__all__ = ["ApiError", "Conflict", "Gone", "KubeClient", "NotFound", "PatchType"]

# JSON merge patch (RFC 7386), JSON patch (RFC 6902), Kubernetes strategic merge patch.
PatchType = Literal["merge", "json", "strategic"]
PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class ApiError(Exception):
    """A failed API call: the HTTP status, the Status reason and its message."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: a stale resourceVersion (Conflict) or a create of an existing name (AlreadyExists)."""


class Gone(ApiError):
    """410: the resourceVersion asked for is older than the history kept; relist."""


def error_for(status: int, reason: str = "", message: str = "") -> ApiError:
    """The ApiError subclass for an HTTP status."""
    cls = {404: NotFound, 409: Conflict, 410: Gone}.get(status, ApiError)
    return cls(status, reason, message)


class KubeClient(Protocol):
    """Raw-JSON CRUD on any resource; every method raises ApiError (or a subclass)."""

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist (404)."""
        ...

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> Obj:
        """The List object (``items`` and ``metadata.resourceVersion``)."""
        ...

    async def create(self, resource: Resource, namespace: str, body: Obj) -> Obj: ...

    async def replace(self, resource: Resource, namespace: str, name: str, body: Obj) -> Obj:
        """PUT; Conflict when ``body.metadata.resourceVersion`` is stale."""
        ...

    async def replace_status(
        self, resource: Resource, namespace: str, name: str, body: Obj
    ) -> Obj:
        """PUT on ``/status`` (Knative's UpdateStatus); Conflict when stale."""
        ...

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Obj | builtins.list[Obj],
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Obj:
        """PATCH the object or a subresource (``status``, ``scale``)."""
        ...

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        """DELETE; a missing object is not an error."""
        ...

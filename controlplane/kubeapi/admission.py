"""Admission: the seam between the generic API server and Knative's webhook.

The API server knows no Knative semantics. Before it stores a create or an update (and for a
dry run), it calls the hook registered for the resource, as kube-apiserver calls Knative's
defaulting and validating webhooks. A hook returns the object to store (defaulted) or raises
``Denied``; the server answers 400 with the message Knative's webhook gives, one cause per bad
field, and stores nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from shared.kube.resources import Obj, Resource

__all__ = ["AdmissionHook", "Cause", "Denied", "ObjectReader", "Operation"]

Operation = Literal["CREATE", "UPDATE"]


@dataclass(frozen=True, slots=True)
class Cause:
    """One bad field: its path (``spec.traffic[1].percent``) and what is wrong."""

    field: str
    message: str


class Denied(Exception):
    """The webhook refused the object; ``message`` is the whole text, ``causes`` the fields."""

    def __init__(self, message: str, causes: Sequence[Cause] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.causes = tuple(causes)


class ObjectReader(Protocol):
    """Read access to the stored objects, for checks that look at others (config-defaults)."""

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None: ...

    def list(self, resource: Resource, namespace: str | None = None) -> list[Obj]: ...


class AdmissionHook(Protocol):
    """Defaults and validates one resource's objects before they are stored."""

    def admit(
        self, operation: Operation, obj: Obj, old: Obj | None, reader: ObjectReader
    ) -> Obj:
        """The object to store (defaults applied), or raise ``Denied``.

        ``obj`` is the full new object after the server set metadata (uid, generation...);
        ``old`` is the stored one for an UPDATE. Status-only writes (the ``/status``
        subresource) are not admitted, as Knative's webhook ignores them.
        """
        ...

"""The field errors eventing's apply-time validation reports, shared by every validator.

Knative's webhooks answer with ``apis.FieldError``: a message and the field paths it concerns
(``spec.delivery.retry``). One error here is one message at one path, so a validator returns a
flat list and a caller prints ``path: message`` lines, as kubectl shows a webhook's refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FieldError", "join_path"]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One refused field: ``path`` is dotted from the object's root (``spec.delivery.retry``,
    ``spec.filters[0].cesql``), ``message`` says what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.message}: {self.path}" if self.path else self.message


def join_path(base: str, field: str) -> str:
    """``base`` + ``.field`` (or ``[i]`` for an index), with no dot at the root."""
    if not base:
        return field
    if field.startswith("["):
        return base + field
    return f"{base}.{field}"

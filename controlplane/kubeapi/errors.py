"""Kubernetes ``Status`` errors: the one error vocabulary of the API server.

Every failure leaves the server as a ``Status`` object (apimachinery's StatusError) with
Kubernetes' reason and code, because kubectl and client libraries branch on ``reason``
(``AlreadyExists`` vs ``Conflict`` are both 409) and print ``message`` verbatim.
"""

from __future__ import annotations

from typing import Any

from shared.kube.resources import Obj

__all__ = ["StatusError", "status_obj"]

_REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


def status_obj(
    code: int,
    message: str,
    reason: str | None = None,
    details: Obj | None = None,
) -> Obj:
    """A failure ``Status`` object as kube-apiserver writes it."""
    out: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else _REASONS.get(code, ""),
        "code": code,
    }
    if details:
        out["details"] = details
    return out


class StatusError(Exception):
    """A request failed: answer with this HTTP code and Status body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: Obj | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_obj(code, message, reason, details)

    @classmethod
    def not_found(cls, kind_plural: str, group: str, name: str) -> StatusError:
        qual = f"{kind_plural}.{group}" if group else kind_plural
        return cls(
            404, f'{qual} "{name}" not found', "NotFound",
            {"name": name, "group": group, "kind": kind_plural},
        )

    @classmethod
    def already_exists(cls, kind_plural: str, group: str, name: str) -> StatusError:
        qual = f"{kind_plural}.{group}" if group else kind_plural
        return cls(
            409, f'{qual} "{name}" already exists', "AlreadyExists",
            {"name": name, "group": group, "kind": kind_plural},
        )

    @classmethod
    def conflict(cls, kind_plural: str, group: str, name: str) -> StatusError:
        qual = f"{kind_plural}.{group}" if group else kind_plural
        return cls(
            409,
            f'Operation cannot be fulfilled on {qual} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            "Conflict",
            {"name": name, "group": group, "kind": kind_plural},
        )

    @classmethod
    def invalid(
        cls, kind: str, group: str, name: str, causes: list[dict[str, Any]], message: str
    ) -> StatusError:
        qual = f"{kind}.{group}" if group else kind
        return cls(
            422, f'{qual} "{name}" is invalid: {message}', "Invalid",
            {"name": name, "group": group, "kind": kind, "causes": causes},
        )

    @classmethod
    def bad_request(cls, message: str) -> StatusError:
        return cls(400, message, "BadRequest")

"""``/openapi/v2``: the smallest OpenAPI document kubectl accepts.

kubectl downloads ``/openapi/v2`` (as gnostic's ``openapi_v2.Document`` protobuf, or JSON) for
client-side validation and, since 1.2x, tries ``/openapi/v3`` first. A document with no
definitions makes every kind "unknown", and kubectl then skips schema validation for it
(kubectl/pkg/validation: a resource absent from the schema is not validated) and computes
apply patches from its compiled-in types (strategic merge for core types) or as JSON merge
patches (Knative's kinds, as for CRDs). ``/openapi/v3`` answers 404, so kubectl falls back to
v2, the path both kubectl 1.20 and 1.3x take.

The protobuf is written by hand: three fields of ``openapi_v2.Document`` (swagger = 1,
info = 2 with title = 1 and version = 2, paths = 8), which saves a generated gnostic module.
"""

from __future__ import annotations

import json

from controlplane.kubeapi.discovery import GIT_VERSION
from controlplane.kubeapi.registry import Registry

__all__ = ["PROTOBUF_V2", "document"]

PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
_TITLE = "Kubernetes (knpy)"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _v2_protobuf() -> bytes:
    info = _field(1, _TITLE.encode()) + _field(2, GIT_VERSION.encode())
    return _field(1, b"2.0") + _field(2, info) + _field(8, b"")


def _v2_json() -> bytes:
    doc = {"swagger": "2.0", "info": {"title": _TITLE, "version": GIT_VERSION}, "paths": {}}
    return json.dumps(doc).encode()


_V2_PROTOBUF = _v2_protobuf()
_V2_JSON = _v2_json()


def document(registry: Registry, segs: list[str], accept: str) -> tuple[bytes, str] | None:
    """The body and content type for ``/openapi/<segs>``, or None for 404."""
    if segs == ["v2"]:
        if "protobuf" in accept:
            # kube-openapi matches Accept on this type but answers application/octet-stream
            # (the "@" does not parse as a media type in Go).
            return _V2_PROTOBUF, "application/octet-stream"
        return _V2_JSON, "application/json"
    return None

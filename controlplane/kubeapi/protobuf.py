"""Kubernetes' protobuf request bodies, decoded to JSON for the few kinds kubectl sends so.

Why: kubectl 1.2x/1.3x sends ``application/vnd.kubernetes.protobuf`` from its typed commands
(``kubectl create namespace``, ``kubectl create configmap``); ``apply``, ``replace``, ``patch``
and every Knative kind travel as JSON. The body is the magic ``k8s\\x00`` and a
``runtime.Unknown`` (typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2), whose ``raw`` is the
object in the field numbers of k8s.io/api's generated.proto. Only the kinds in ``_KINDS`` are
decoded (ConfigMap, Namespace, and their ObjectMeta); any other is refused with 415, naming
``kubectl apply`` as the way.

The decoder is a plain wire-format reader over a schema table: a message is a dict of field
number -> (JSON name, type); types are scalars, ``map`` (string to string, or to bytes as
base64 as in JSON), ``time`` (metav1.Time as RFC 3339) or another message.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

__all__ = ["MAGIC", "PROTOBUF", "ProtobufError", "UnsupportedKind", "decode"]

MAGIC = b"k8s\x00"
PROTOBUF = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """The body is not a well-formed Kubernetes protobuf object (400)."""


class UnsupportedKind(ProtobufError):
    """A well-formed body of a kind knpy does not decode from protobuf (415)."""


# field number -> (json name, type, repeated)
_Schema = dict[int, tuple[str, str, bool]]

_SCHEMAS: dict[str, _Schema] = {
    "Unknown": {1: ("typeMeta", "TypeMeta", False), 2: ("raw", "raw", False),
                3: ("contentEncoding", "string", False), 4: ("contentType", "string", False)},
    "TypeMeta": {1: ("apiVersion", "string", False), 2: ("kind", "string", False)},
    "ObjectMeta": {
        1: ("name", "string", False), 2: ("generateName", "string", False),
        3: ("namespace", "string", False), 5: ("uid", "string", False),
        6: ("resourceVersion", "string", False), 7: ("generation", "int", False),
        8: ("creationTimestamp", "time", False), 9: ("deletionTimestamp", "time", False),
        10: ("deletionGracePeriodSeconds", "int", False), 11: ("labels", "map", False),
        12: ("annotations", "map", False), 13: ("ownerReferences", "OwnerReference", True),
        14: ("finalizers", "string", True),
    },
    "OwnerReference": {
        1: ("kind", "string", False), 3: ("name", "string", False), 4: ("uid", "string", False),
        5: ("apiVersion", "string", False), 6: ("controller", "bool", False),
        7: ("blockOwnerDeletion", "bool", False),
    },
    "ConfigMap": {1: ("metadata", "ObjectMeta", False), 2: ("data", "map", False),
                  3: ("binaryData", "mapbytes", False), 4: ("immutable", "bool", False)},
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False)},
    "NamespaceSpec": {1: ("finalizers", "string", True)},
    "Time": {1: ("seconds", "int", False), 2: ("nanos", "int", False)},
}
_KINDS = frozenset({"ConfigMap", "Namespace"})


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) in order; value is an int or bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ProtobufError("truncated field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _message(name: str, buf: bytes) -> dict[str, Any]:
    schema = _SCHEMAS[name]
    out: dict[str, Any] = {}
    for number, _wire, raw in _fields(buf):
        entry = schema.get(number)
        if entry is None:
            continue  # a field knpy does not serve (selfLink, managedFields...)
        json_name, typ, repeated = entry
        if typ in ("map", "mapbytes"):
            kv = {n: v for n, _w, v in _fields(raw)}
            key = kv.get(1, b"").decode()
            val = kv.get(2, b"")
            out.setdefault(json_name, {})[key] = (
                base64.b64encode(val).decode() if typ == "mapbytes" else val.decode()
            )
            continue
        value = _scalar(typ, raw)
        if not repeated and (value == "" or (typ == "int" and value == 0) or value is None):
            continue  # Go's JSON omits empty strings, zero counts and zero times (omitempty)
        if repeated:
            out.setdefault(json_name, []).append(value)
        else:
            out[json_name] = value
    return out


def _scalar(typ: str, raw: Any) -> Any:
    if typ == "string":
        return bytes(raw).decode()
    if typ == "raw":
        return bytes(raw)
    if typ == "bool":
        return bool(raw)
    if typ == "int":
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    if typ == "time":
        seconds = _message("Time", raw).get("seconds", 0)
        if not seconds:
            return None
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _message(typ, raw)


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object of a protobuf request body.

    Raises:
        ProtobufError: not a well-formed Kubernetes protobuf object.
        UnsupportedKind: a kind knpy does not decode.
    """
    if not body.startswith(MAGIC):
        raise ProtobufError("the body lacks the Kubernetes protobuf magic prefix")
    envelope = _message("Unknown", body[len(MAGIC):])
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in _KINDS:
        raise UnsupportedKind(
            f"knpy decodes protobuf bodies only for {', '.join(sorted(_KINDS))}, not "
            f"{kind or 'this kind'}; send JSON or YAML (kubectl apply -f does)"
        )
    obj = _message(kind, envelope.get("raw", b""))
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}

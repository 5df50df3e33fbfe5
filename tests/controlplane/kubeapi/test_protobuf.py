"""Kubernetes protobuf request bodies (kubectl's typed create commands) decoded to JSON."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.kubeapi.protobuf import MAGIC, ProtobufError, UnsupportedKind, decode


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _f(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _v(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _entry(number: int, key: str, value: bytes | str) -> bytes:
    return _f(number, _f(1, key) + _f(2, value))


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return MAGIC + _f(1, _f(1, api_version) + _f(2, kind)) + _f(2, raw) + _f(4, "")


_META = (
    _f(1, "c1") + _f(2, "") + _f(3, "demo") + _entry(11, "app", "x")
    + _entry(12, "note", "hi") + _f(14, "a/b") + _f(14, "c/d")
    + _f(13, _f(1, "Revision") + _f(3, "r") + _f(4, "u-1") + _f(5, "serving.knative.dev/v1")
         + _v(6, 1))
    + _f(8, b"")  # an empty creationTimestamp, as client-go sends it
)


@pytest.mark.parametrize(
    ("body", "want"),
    [
        pytest.param(
            _envelope("v1", "ConfigMap", _f(1, _META) + _entry(2, "a", "b") + _entry(2, "x", "yy")
                      + _entry(3, "bin", b"\x00\x01") + _v(4, 1)),
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "c1", "namespace": "demo", "labels": {"app": "x"},
                          "annotations": {"note": "hi"}, "finalizers": ["a/b", "c/d"],
                          "ownerReferences": [{"kind": "Revision", "name": "r", "uid": "u-1",
                                               "apiVersion": "serving.knative.dev/v1",
                                               "controller": True}]},
             "data": {"a": "b", "x": "yy"}, "binaryData": {"bin": "AAE="}, "immutable": True},
            id="configmap",
        ),
        pytest.param(
            _envelope("v1", "Namespace", _f(1, _f(1, "demo")) + _f(2, b"")),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}, "spec": {}},
            id="namespace",
        ),
    ],
)
def test_decode(body: bytes, want: dict[str, Any]) -> None:
    assert decode(body) == want


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(_envelope("apps/v1", "Deployment", _f(1, _f(1, "d"))), UnsupportedKind,
                     id="unsupported-kind"),
        pytest.param(b'{"kind":"ConfigMap"}', ProtobufError, id="no-magic"),
        pytest.param(MAGIC + b"\x0a\x50ab", ProtobufError, id="truncated"),
    ],
)
def test_decode_errors(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode(body)

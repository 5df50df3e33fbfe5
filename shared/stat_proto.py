"""Knative's Stat wire format, byte for byte (pkg/autoscaler/metrics/stat.proto).

The queue-proxy serves one ``Stat`` per second to the autoscaler's scraper, and the activator
streams ``WireStatMessages`` over its WebSocket; both sides may be Knative's Go binaries, so
the bytes must be theirs. The schema is declared here as a descriptor built in Python (same
package ``metrics``, same message names, field numbers and types as the .proto) and the
protobuf runtime does the encoding: no protoc, no generated code.

The classes live in a private descriptor pool so that another copy of stat.proto loaded into
the default pool (a generated module, say) cannot clash with this one.

Callers use the typed helpers and ``StatData``; the message classes are exported for code
that needs the protobuf API itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

__all__ = [
    "Stat",
    "StatData",
    "WireStat",
    "WireStatMessage",
    "WireStatMessages",
    "decode_stat",
    "decode_wire_stats",
    "encode_stat",
    "encode_wire_stats",
]

_PACKAGE = "metrics"  # stat.proto's ``package metrics;``
_F = descriptor_pb2.FieldDescriptorProto

# (name, number, type) in stat.proto's order; numbers are the wire contract.
_STAT_FIELDS = (
    ("pod_name", 1, _F.TYPE_STRING),
    ("average_concurrent_requests", 2, _F.TYPE_DOUBLE),
    ("average_proxied_concurrent_requests", 3, _F.TYPE_DOUBLE),
    ("request_count", 4, _F.TYPE_DOUBLE),
    ("proxied_request_count", 5, _F.TYPE_DOUBLE),
    ("process_uptime", 6, _F.TYPE_DOUBLE),
    ("timestamp", 7, _F.TYPE_INT64),
)
_OPTIONAL_MESSAGE = {"type": _F.TYPE_MESSAGE, "label": _F.LABEL_OPTIONAL}
_REPEATED_MESSAGE = {"type": _F.TYPE_MESSAGE, "label": _F.LABEL_REPEATED}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="knpy/metrics/stat.proto", package=_PACKAGE, syntax="proto3"
    )
    stat = fdp.message_type.add(name="Stat")
    for name, number, type_ in _STAT_FIELDS:
        stat.field.add(name=name, number=number, type=type_, label=_F.LABEL_OPTIONAL)
    wire = fdp.message_type.add(name="WireStatMessage")
    wire.field.add(name="namespace", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    wire.field.add(name="name", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    wire.field.add(name="stat", number=3, type_name=f".{_PACKAGE}.Stat", **_OPTIONAL_MESSAGE)
    wires = fdp.message_type.add(name="WireStatMessages")
    wires.field.add(
        name="messages", number=1, type_name=f".{_PACKAGE}.WireStatMessage", **_REPEATED_MESSAGE
    )
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message_class(name: str) -> type[message.Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


Stat = _message_class("Stat")
WireStatMessage = _message_class("WireStatMessage")
WireStatMessages = _message_class("WireStatMessages")


# The dynamic classes are plain ``Message`` to the type checker; these views name their fields.
class _StatFields(Protocol):
    pod_name: str
    average_concurrent_requests: float
    average_proxied_concurrent_requests: float
    request_count: float
    proxied_request_count: float
    process_uptime: float
    timestamp: int


class _WireFields(Protocol):
    namespace: str
    name: str

    @property
    def stat(self) -> _StatFields: ...

    def HasField(self, field_name: str) -> bool: ...


class _WireList(Protocol):
    def add(self) -> _WireFields: ...

    def __iter__(self) -> Iterator[_WireFields]: ...


class _WiresFields(Protocol):
    @property
    def messages(self) -> _WireList: ...


@dataclass(frozen=True, slots=True)
class StatData:
    """One pod's figures for one reporting period (Knative's Stat), as plain Python."""

    pod_name: str = ""
    average_concurrent_requests: float = 0.0
    average_proxied_concurrent_requests: float = 0.0  # part of average_concurrent_requests
    request_count: float = 0.0  # requests since the last Stat
    proxied_request_count: float = 0.0  # part of request_count
    process_uptime: float = 0.0  # seconds
    timestamp: int = 0  # seconds since the Unix epoch


# (namespace, name of the revision, stat): Knative's StatMessage.
WireStat = tuple[str, str, StatData]


def _fill(fields: _StatFields, stat: StatData) -> None:
    # ``+ 0.0`` turns -0.0 into 0.0: Knative's gogo-generated marshaller skips a double that
    # compares equal to 0 (stat.pb.go, ``if m.X != 0``), Python's protobuf writes -0.0's bits.
    fields.pod_name = stat.pod_name
    fields.average_concurrent_requests = stat.average_concurrent_requests + 0.0
    fields.average_proxied_concurrent_requests = stat.average_proxied_concurrent_requests + 0.0
    fields.request_count = stat.request_count + 0.0
    fields.proxied_request_count = stat.proxied_request_count + 0.0
    fields.process_uptime = stat.process_uptime + 0.0
    fields.timestamp = stat.timestamp


def _read(fields: _StatFields) -> StatData:
    return StatData(
        pod_name=fields.pod_name,
        average_concurrent_requests=fields.average_concurrent_requests,
        average_proxied_concurrent_requests=fields.average_proxied_concurrent_requests,
        request_count=fields.request_count,
        proxied_request_count=fields.proxied_request_count,
        process_uptime=fields.process_uptime,
        timestamp=fields.timestamp,
    )


def _parse(cls: type[message.Message], data: bytes) -> message.Message:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (message.DecodeError, TypeError) as err:
        raise ValueError(f"invalid {cls.DESCRIPTOR.full_name} protobuf: {err}") from err
    return msg


def encode_stat(stat: StatData) -> bytes:
    """Serialize one Stat, as the queue-proxy serves it on :9090/metrics.

    Raises:
        ValueError: timestamp outside int64.
    """
    msg = Stat()
    _fill(cast(_StatFields, msg), stat)
    return msg.SerializeToString(deterministic=True)


def decode_stat(data: bytes) -> StatData:
    """Parse one Stat; unknown fields are skipped, as protobuf's forward compatibility wants.

    Raises:
        ValueError: ``data`` is not a valid Stat encoding.
    """
    return _read(cast(_StatFields, _parse(Stat, data)))


def encode_wire_stats(stats: Iterable[WireStat]) -> bytes:
    """Serialize WireStatMessages, as the activator sends them to the autoscaler.

    Raises:
        ValueError: a timestamp outside int64.
    """
    msg = WireStatMessages()
    messages = cast(_WiresFields, msg).messages
    for namespace, name, stat in stats:
        wire = messages.add()
        wire.namespace = namespace
        wire.name = name
        # Present even when all-default (3: empty), as Go's ToWireStatMessage always sets
        # Stat; an absent stat would make the autoscaler drop the message.
        cast(message.Message, wire.stat).SetInParent()
        _fill(wire.stat, stat)
    return msg.SerializeToString(deterministic=True)


def decode_wire_stats(data: bytes) -> list[WireStat]:
    """Parse WireStatMessages; messages without a stat are dropped.

    Knative's stat server drops them too ("to allow for future protobuf schema changes",
    pkg/autoscaler/statserver/server.go).

    Raises:
        ValueError: ``data`` is not a valid WireStatMessages encoding.
    """
    msg = cast(_WiresFields, _parse(WireStatMessages, data))
    return [
        (wire.namespace, wire.name, _read(wire.stat))
        for wire in msg.messages
        if wire.HasField("stat")
    ]

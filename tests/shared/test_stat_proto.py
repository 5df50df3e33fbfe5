"""Tests for shared.stat_proto: Knative's stat.proto encodings, checked against hand-built bytes.

The expected bytes are spelled out field by field (tag = field_number << 3 | wire_type;
doubles are 8 little-endian bytes; int64 is a base-128 varint), so compatibility with the
Go side rests on the protobuf wire format, not on the library under test.
"""

from __future__ import annotations

import math

import pytest

from shared.stat_proto import (
    Stat,
    StatData,
    WireStat,
    WireStatMessage,
    WireStatMessages,
    decode_stat,
    decode_wire_stats,
    encode_stat,
    encode_wire_stats,
)

POD_STAT = StatData(
    pod_name="pod-1",
    average_concurrent_requests=1.5,
    average_proxied_concurrent_requests=0.5,
    request_count=3.0,
    proxied_request_count=1.0,
    process_uptime=12.25,
    timestamp=1_700_000_000,
)
POD_STAT_BYTES = bytes.fromhex(
    "0a 05 706f642d31"  # 1 pod_name, wire type 2 (length-delimited): 5 bytes "pod-1"
    "11 000000000000f83f"  # 2 average_concurrent_requests, wire type 1 (64-bit): 1.5
    "19 000000000000e03f"  # 3 average_proxied_concurrent_requests: 0.5
    "21 0000000000000840"  # 4 request_count: 3.0
    "29 000000000000f03f"  # 5 proxied_request_count: 1.0
    "31 0000000000802840"  # 6 process_uptime: 12.25
    "38 80e2cfaa06"  # 7 timestamp, wire type 0 (varint): 1700000000 = 0x6553f100
)


@pytest.mark.parametrize(
    ("stat", "want"),
    [
        pytest.param(POD_STAT, POD_STAT_BYTES, id="all-fields"),
        pytest.param(StatData(), b"", id="defaults-are-not-written"),
        pytest.param(
            StatData(average_concurrent_requests=-0.0), b"", id="negative-zero-as-go-omits-it"
        ),
        pytest.param(
            StatData(pod_name="p", timestamp=-1),
            bytes.fromhex("0a 01 70  38 ffffffffffffffffff01"),  # int64 -1: a ten-byte varint
            id="negative-timestamp",
        ),
        pytest.param(
            StatData(request_count=2.0**-1074),
            bytes.fromhex("21 0100000000000000"),  # the smallest subnormal double
            id="subnormal-double",
        ),
    ],
)
def test_encode_stat_bytes(stat: StatData, want: bytes) -> None:
    assert encode_stat(stat) == want
    assert decode_stat(want) == stat


WIRE: list[WireStat] = [
    ("ns", "rev-a", StatData(pod_name="activator", request_count=2.0)),
    ("ns", "rev-b", StatData()),
]
WIRE_BYTES = bytes.fromhex(
    "0a 21"  # WireStatMessages.messages (field 1): 33 bytes = 4 + 7 + 22
    "0a 02 6e73"  # . namespace "ns": 4 bytes
    "12 05 7265762d61"  # . name "rev-a": 7 bytes
    "1a 14"  # . stat (field 3): 20 bytes = 11 + 9
    "0a 09 616374697661746f72"  # . . pod_name "activator": 11 bytes
    "21 0000000000000040"  # . . request_count 2.0: 9 bytes
    "0a 0d"  # messages: 13 bytes = 4 + 7 + 2
    "0a 02 6e73"  # . namespace "ns"
    "12 05 7265762d62"  # . name "rev-b"
    "1a 00"  # . stat present but empty, as Go writes &Stat{}
)


def test_encode_wire_stats_bytes() -> None:
    assert encode_wire_stats(WIRE) == WIRE_BYTES
    assert decode_wire_stats(WIRE_BYTES) == WIRE


@pytest.mark.parametrize(
    "stats",
    [
        pytest.param([], id="empty"),
        pytest.param(WIRE, id="two"),
        pytest.param([("n", "r", POD_STAT)] * 100, id="hundred"),
        pytest.param([("ñs", "rév", StatData(pod_name="pöd-✓"))], id="unicode"),
    ],
)
def test_wire_round_trip(stats: list[WireStat]) -> None:
    assert decode_wire_stats(encode_wire_stats(stats)) == stats


@pytest.mark.parametrize(
    "stat",
    [
        pytest.param(POD_STAT, id="pod"),
        pytest.param(StatData(average_concurrent_requests=math.inf), id="inf"),
        pytest.param(StatData(timestamp=2**63 - 1, process_uptime=1e300), id="extremes"),
    ],
)
def test_stat_round_trip(stat: StatData) -> None:
    assert decode_stat(encode_stat(stat)) == stat


def test_decode_skips_unknown_fields() -> None:
    # Field 15 (varint 1) from a newer schema is ignored, as protobuf's rules want.
    assert decode_stat(POD_STAT_BYTES + bytes.fromhex("78 01")) == POD_STAT


def test_decode_drops_wire_messages_without_stat() -> None:
    # Knative's stat server skips them (pkg/autoscaler/statserver/server.go).
    no_stat = bytes.fromhex("0a 060a 01 6e12 01 72")
    assert decode_wire_stats(no_stat + WIRE_BYTES) == WIRE


def test_encode_rejects_out_of_range_timestamp() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_stat(StatData(timestamp=2**63))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff", id="truncated-tag"),
        pytest.param(bytes.fromhex("0a 05 6162"), id="string-shorter-than-its-length"),
        pytest.param(bytes.fromhex("0a 02 fffe"), id="pod-name-not-utf8"),
        pytest.param(bytes.fromhex("11 0000"), id="truncated-double"),
        pytest.param(bytes.fromhex("38 ffffffffffffffffffff01"), id="varint-too-long"),
    ],
)
def test_decode_invalid_bytes(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"^invalid metrics\.Stat protobuf"):
        decode_stat(data)
    with pytest.raises(ValueError, match=r"^invalid metrics\.WireStatMessages protobuf"):
        decode_wire_stats(bytes([0x0A, len(data)]) + data)


def test_message_classes_follow_stat_proto() -> None:
    assert Stat.DESCRIPTOR.full_name == "metrics.Stat"
    assert [(f.name, f.number) for f in Stat.DESCRIPTOR.fields] == [
        ("pod_name", 1),
        ("average_concurrent_requests", 2),
        ("average_proxied_concurrent_requests", 3),
        ("request_count", 4),
        ("proxied_request_count", 5),
        ("process_uptime", 6),
        ("timestamp", 7),
    ]
    assert [(f.name, f.number) for f in WireStatMessage.DESCRIPTOR.fields] == [
        ("namespace", 1),
        ("name", 2),
        ("stat", 3),
    ]
    assert [(f.name, f.number) for f in WireStatMessages.DESCRIPTOR.fields] == [("messages", 1)]

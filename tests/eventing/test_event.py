"""The broker's CloudEvents codec against the ``cloudevents`` package, both ways, and the
forms an event can travel in."""

from __future__ import annotations

import base64
import json

import pytest
from cloudevents.core.bindings.http import (
    HTTPMessage,
    from_http_event,
    to_binary_event,
    to_structured_event,
)
from cloudevents.core.v1.event import CloudEvent

from shared.cloudevent import (
    Event,
    EventError,
    Form,
    parse_message,
    to_binary,
    to_structured,
)


def sdk_event(data: object, **attrs: object) -> CloudEvent:
    base: dict[str, object] = {
        "type": "com.example.t", "source": "/src", "id": "e1", "specversion": "1.0",
    }
    return CloudEvent(attributes={**base, **attrs}, data=data)


def pairs(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in headers.items()]


CASES = [
    pytest.param({"a": 1, "b": ["x", "é"]}, {"datacontenttype": "application/json"}, id="json"),
    pytest.param(b"\x00\x01\xff", {"datacontenttype": "application/octet-stream"}, id="bytes"),
    pytest.param("plain text", {"datacontenttype": "text/plain"}, id="text"),
    pytest.param(None, {}, id="no-data"),
    pytest.param({"a": 1}, {"datacontenttype": "application/json", "subject": "sp ace %",
                            "myext": "ünïcode"}, id="encoded-headers"),
]


@pytest.mark.parametrize(("data", "attrs"), CASES)
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_sdk_to_lean_to_sdk(data: object, attrs: dict[str, object], mode: str) -> None:
    """What the package writes we read; what we write back the package reads as the same."""
    ev = sdk_event(data, **attrs)
    msg = to_binary_event(ev) if mode == "binary" else to_structured_event(ev)
    (ours,) = parse_message(pairs(dict(msg.headers)), msg.body)
    assert ours.attrs["id"] == "e1"
    assert ours.attrs.get("subject") == attrs.get("subject")
    assert ours.attrs.get("myext") == attrs.get("myext")
    for write in ("binary", "structured"):
        if write == "binary":
            headers, body = to_binary(ours)
            back = from_http_event(HTTPMessage(
                headers={k.decode(): v.decode() for k, v in headers}, body=body))
        else:
            back = from_http_event(HTTPMessage(
                headers={"content-type": "application/cloudevents+json"},
                body=to_structured(ours)))
        assert back.get_attributes()["id"] == "e1"
        assert back.get_attributes().get("subject") == attrs.get("subject")
        assert back.get_extension("myext") == attrs.get("myext")
        got = back.get_data()
        if isinstance(data, str) and isinstance(got, bytes):
            got = got.decode()
        assert got == data, (mode, write)


def test_no_time_is_not_added() -> None:
    """The package would add ``time`` to an event without one; an intermediary must not."""
    (ev,) = parse_message(
        pairs({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}), b""
    )
    headers, body = to_binary(ev)
    assert b"ce-time" not in dict(headers)
    assert "time" not in json.loads(to_structured(ev))
    assert body == b""


def test_structured_with_duplicate_ce_headers_stays_structured() -> None:
    doc = {"specversion": "1.0", "id": "s", "source": "/s", "type": "from-body"}
    (ev,) = parse_message(
        pairs({"content-type": "application/cloudevents+json", "ce-type": "from-header"}),
        json.dumps(doc).encode(),
    )
    assert ev.attrs["type"] == "from-body"
    assert ev.form is Form.STRUCTURED_NONE


@pytest.mark.parametrize(
    ("doc", "form", "data"),
    [
        pytest.param({"data": {"k": 1}}, Form.STRUCTURED_JSON, b'{"k":1}', id="json-value"),
        pytest.param({"data": "t", "datacontenttype": "text/plain"}, Form.STRUCTURED_TEXT, b"t",
                     id="text"),
        pytest.param({"data_base64": base64.b64encode(b"\x01").decode()},
                     Form.STRUCTURED_BASE64, b"\x01", id="base64"),
        pytest.param({"data": base64.b64encode(b"\x02").decode(), "specversion": "0.3",
                      "datacontentencoding": "base64"}, Form.STRUCTURED_BASE64, b"\x02",
                     id="0.3-base64"),
    ],
)
def test_structured_forms_round_trip(doc: dict[str, object], form: Form, data: bytes) -> None:
    full = {"specversion": "1.0", "id": "s", "source": "/s", "type": "t", **doc}
    (ev,) = parse_message(pairs({"content-type": "application/cloudevents+json"}),
                          json.dumps(full).encode())
    assert (ev.form, ev.data) == (form, data)
    assert json.loads(to_structured(ev)) == full


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        pytest.param({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s"}, b"",
                     "type", id="no-type"),
        pytest.param({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t",
                      "ce-x": "%C0%A0"}, b"", "UTF-8", id="bad-utf8"),
        pytest.param({"content-type": "application/cloudevents+json"},
                     b'{"specversion":"1.0","id":"1","source":"/s","type":"t","n":1.5}',
                     "32-bit", id="float-attribute"),
        pytest.param({"content-type": "application/cloudevents+json"},
                     b'{"specversion":"1.0","id":"1","source":"/s","type":"t","n":4294967296}',
                     "32-bit", id="int-overflow"),
        pytest.param({"content-type": "application/cloudevents+json"},
                     b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,'
                     b'"data_base64":"AA=="}', "exclusive", id="data-and-base64"),
        pytest.param({"content-type": "application/cloudevents-batch+json"}, b'{"a":1}',
                     "array", id="batch-not-array"),
    ],
)
def test_invalid(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        parse_message(pairs(headers), body)


def test_repr_and_copy() -> None:
    ev = Event({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}, b"xy", Form.BINARY)
    assert repr(ev) == "<Event 1.0 id='1' type='t' source='/s' BINARY data=2B>"
    assert ev.copy(extra=1, id=None).attrs == {
        "specversion": "1.0", "source": "/s", "type": "t", "extra": 1,
    }

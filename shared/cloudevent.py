"""CloudEvents 1.0 and 0.3 over HTTP: a lean codec for the broker's hot path.

It lives in shared/ because two users need it: the broker (eventing/broker) and ``knpy send`` /
``knpy listen`` (shared/eventing_cli.py), whose console script every image runs and which must
not import a component package that an image leaves out.

Theory of operation. An ``Event`` is its attributes (context attributes and extensions, as JSON
scalars: str, int, bool; ``datacontenttype`` among them) and its data as bytes, in the form the
binary mode would carry (the HTTP body). ``form`` remembers how it arrived, so that it leaves
the same way unless the trigger's ``delivery.format`` asks otherwise:

- ``BINARY``: ``ce-*`` headers and the body.
- ``STRUCTURED_*``: one JSON document (``application/cloudevents+json``); its data was a JSON
  value (``_JSON``: kept as its serialization and spliced back unparsed), a string (``_TEXT``),
  ``data_base64`` (``_BASE64``) or absent (``_NONE``).

Why not the ``cloudevents`` package on this path: measured here (a binary request parsed and
written back in binary mode, 1 KB of JSON data: ``benchmarks/eventing/run.py --codec``), this
codec takes 0.39x the time of the package's v1 API (``from_http`` + ``to_binary``) and 0.36x
that of its 2.x core (``from_http_event`` + ``to_binary_event``); and as an intermediary the
package would alter events: it adds ``time`` (and ``id``) to events that have none, decodes
and re-encodes JSON data, and picks binary mode from any ``ce-`` header even in a structured
request (shared/research/eventing-and-functions.md 4.4). The tests check this codec against
the package both ways.

Validation is sdk-go's ``event.Validate`` (what Knative's ingress runs): ``specversion`` 1.0
or 0.3; ``id``, ``source`` and ``type`` non-empty strings; ``subject`` non-empty when set;
``time`` RFC 3339; attribute names lower-case letters and digits; values strings, booleans or
32-bit integers. A failure is an ``EventError`` (the ingress answers 400).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_to_bytes

__all__ = [
    "MAX_TTL",
    "TTL",
    "Event",
    "EventError",
    "Form",
    "compact_json",
    "parse_message",
    "to_binary",
    "to_structured",
]

TTL: Final = "knativebrokerttl"
ARRIVAL: Final = "knativearrivaltime"
MAX_TTL: Final = 255  # Knative's ingress MAX_TTL default (cmd/broker/ingress/main.go)

STRUCTURED_TYPE: Final = b"application/cloudevents+json"
BATCH_PREFIX: Final = b"application/cloudevents-batch"
JSON_CONTENT: Final = "application/json"

_SPEC_VERSIONS: Final = frozenset({"1.0", "0.3"})
_NAME: Final = re.compile(r"[a-z0-9]+")
_TIME: Final = re.compile(
    r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)"
)
_INT32: Final = (-(2**31), 2**31 - 1)
# Header values that need no percent-encoding (RFC 9110 visible ASCII but space, '"' and '%').
_PLAIN: Final = re.compile(r'[!#-$&-~]*')


# json.dumps with options builds a new encoder per call; one, built once, is a third faster.
compact_json: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Form(enum.IntEnum):
    BINARY = 0
    STRUCTURED_JSON = 1
    STRUCTURED_TEXT = 2
    STRUCTURED_BASE64 = 3
    STRUCTURED_NONE = 4


class EventError(ValueError):
    """Not a valid CloudEvent; the message says why (the ingress's 400 body)."""


class Event:
    """One CloudEvent: attributes, data in binary-mode form, and the form it arrived in."""

    __slots__ = ("attrs", "data", "form")

    def __init__(self, attrs: dict[str, object], data: bytes | None, form: Form) -> None:
        self.attrs = attrs
        self.data = data
        self.form = form

    def __repr__(self) -> str:
        a = self.attrs
        return (
            f"<Event {a.get('specversion')} id={a.get('id')!r} type={a.get('type')!r} "
            f"source={a.get('source')!r} {self.form.name} data={len(self.data or b'')}B>"
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Event)
            and self.attrs == other.attrs
            and self.data == other.data
            and self.form == other.form
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def content_type(self) -> str | None:
        ct = self.attrs.get("datacontenttype")
        return ct if isinstance(ct, str) else None

    def copy(self, **attrs: object) -> Event:
        """A copy with ``attrs`` set (None removes one)."""
        new = dict(self.attrs)
        for k, v in attrs.items():
            if v is None:
                new.pop(k, None)
            else:
                new[k] = v
        return Event(new, self.data, self.form)


def _is_json_type(ct: str | None) -> bool:
    """JSON data: no content type (JSON format's default), ``*/json`` or ``*/*+json``."""
    if ct is None:
        return True
    media = ct.split(";", 1)[0].strip().lower()
    return media.endswith("/json") or media.endswith("+json")


def _is_text_type(ct: str | None) -> bool:
    if ct is None:
        return False
    media = ct.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media.endswith("/xml") or media.endswith("+xml")


def validate(attrs: dict[str, object]) -> None:
    """sdk-go's checks (module doc). Raises EventError."""
    version = attrs.get("specversion")
    if version not in _SPEC_VERSIONS:
        raise EventError(f"unsupported specversion {version!r}")
    for name in ("id", "source", "type"):
        value = attrs.get(name)
        if not isinstance(value, str) or not value:
            raise EventError(f"{name}: a non-empty string is required")
    for name, value in attrs.items():
        if not _NAME.fullmatch(name):
            raise EventError(f"attribute name {name!r}: lower-case letters and digits only")
        if isinstance(value, (bool, str)):
            continue
        if isinstance(value, int) and _INT32[0] <= value <= _INT32[1]:
            continue
        raise EventError(f"{name}: a string, boolean or 32-bit integer is required")
    subject = attrs.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        raise EventError("subject: must be a non-empty string when set")
    time = attrs.get("time")
    if time is not None and (not isinstance(time, str) or not _TIME.fullmatch(time)):
        raise EventError(f"time: not an RFC 3339 timestamp: {time!r}")


def _header_value(raw: bytes) -> str:
    """A ``ce-`` header's value: unquote an RFC 7230 quoted-string, then percent-decode UTF-8
    once (HTTP binding 3.1.3.2). Raises EventError on invalid UTF-8."""
    if len(raw) >= 2 and raw[:1] == b'"' and raw[-1:] == b'"':
        raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    try:
        if b"%" in raw:
            return unquote_to_bytes(raw).decode("utf-8")
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError("a ce- header is not valid UTF-8 after percent-decoding") from None


def _binary(headers: Iterable[tuple[bytes, bytes]], body: bytes) -> Event:
    attrs: dict[str, object] = {}
    for name, value in headers:
        lname = name.lower()
        if lname.startswith(b"ce-"):
            key = lname[3:].decode("latin-1")
            if key not in attrs:  # the first of repeated headers, as Go's Header.Get
                attrs[key] = _header_value(value)
        elif lname == b"content-type":
            attrs["datacontenttype"] = value.decode("latin-1")
    if "specversion" not in attrs:
        raise EventError("not a CloudEvent: no ce-specversion header and no event format")
    if attrs.get("specversion") == "0.3" and attrs.get("datacontentencoding") == "base64":
        attrs.pop("datacontentencoding")  # the body is the data itself in binary mode
    validate(attrs)
    return Event(attrs, body or None, Form.BINARY)


def _structured(doc: object) -> Event:
    if not isinstance(doc, dict):
        raise EventError("a structured event must be a JSON object")
    attrs: dict[str, object] = {}
    data: bytes | None = None
    form = Form.STRUCTURED_NONE
    for key, value in doc.items():
        if key == "data" or key == "data_base64" or value is None:
            continue
        attrs[key] = value
    validate(attrs)
    if "data" in doc and "data_base64" in doc:
        raise EventError("data and data_base64 are mutually exclusive")
    ct = attrs.get("datacontenttype")
    ct = ct if isinstance(ct, str) else None
    if "data_base64" in doc:
        raw = doc["data_base64"]
        if not isinstance(raw, str):
            raise EventError("data_base64 must be a string")
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise EventError("data_base64 is not valid base64") from None
        form = Form.STRUCTURED_BASE64
    elif "data" in doc:
        value = doc["data"]
        if attrs.get("datacontentencoding") == "base64" and isinstance(value, str):
            try:  # CloudEvents 0.3: base64 data in the "data" member
                data = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise EventError("data is not valid base64") from None
            form = Form.STRUCTURED_BASE64
        elif isinstance(value, str) and not _is_json_type(ct):
            data, form = value.encode("utf-8"), Form.STRUCTURED_TEXT
        else:
            data = compact_json(value).encode("utf-8")
            form = Form.STRUCTURED_JSON
    return Event(attrs, data, form)


def parse_message(headers: Iterable[tuple[bytes, bytes]], body: bytes) -> list[Event]:
    """The events of an HTTP request or response: one for binary and structured mode, each
    of a batch (``application/cloudevents-batch+json``, a JSON array of structured events).

    ``headers`` are (name, value) byte pairs, names in any case.

    Raises:
        EventError: not an event, an unknown format, or an invalid event (the first).
    """
    headers = list(headers)
    ctype = b""
    for name, value in headers:
        if name.lower() == b"content-type":
            ctype = value.strip().lower()
            break
    if ctype.startswith(BATCH_PREFIX):
        docs = _json(body)
        if not isinstance(docs, list):
            raise EventError("a batch must be a JSON array of events")
        return [_structured(d) for d in docs]
    if ctype.startswith(b"application/cloudevents"):
        if not ctype.startswith(STRUCTURED_TYPE):
            raise EventError(f"unsupported event format {ctype.decode('latin-1')!r}")
        return [_structured(_json(body))]
    return [_binary(headers, body)]


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise EventError(f"the body is not JSON: {err}") from None


def canonical(value: object) -> str:
    """An attribute's canonical string (booleans ``true``/``false``)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if isinstance(value, str) else str(value)


def _encode_header(text: str) -> bytes:
    if _PLAIN.fullmatch(text):
        return text.encode("ascii")
    out = bytearray()
    for b in text.encode("utf-8"):
        if 0x21 <= b <= 0x7E and b not in (0x22, 0x25):
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)


def to_binary(event: Event) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Binary mode: ``ce-`` headers (and Content-Type from ``datacontenttype``), the data as
    the body."""
    headers: list[tuple[bytes, bytes]] = []
    ct = event.content_type
    for name, value in event.attrs.items():
        if name == "datacontenttype":
            continue
        headers.append((b"ce-" + name.encode("ascii"), _encode_header(canonical(value))))
    if ct is not None:
        headers.append((b"content-type", ct.encode("latin-1")))
    elif event.data is not None and event.form is Form.STRUCTURED_JSON:
        headers.append((b"content-type", JSON_CONTENT.encode()))
    return headers, event.data or b""


def to_structured(event: Event) -> bytes:
    """Structured mode: one JSON document; the data as JSON, a string, or ``data_base64``."""
    head = compact_json(event.attrs).encode("utf-8")
    data = event.data
    if data is None:
        return head
    form = event.form
    if form is Form.BINARY:
        form = _form_for(event.content_type, data)
    if form is Form.STRUCTURED_JSON:
        member = b',"data":' + data
    elif form is Form.STRUCTURED_TEXT:
        member = b',"data":' + compact_json(data.decode("utf-8")).encode()
    elif event.attrs.get("specversion") == "0.3":
        member = b',"data":"' + base64.b64encode(data) + b'"'
    else:
        member = b',"data_base64":"' + base64.b64encode(data) + b'"'
    return head[:-1] + member + b"}"


def _form_for(ct: str | None, data: bytes) -> Form:
    """How binary-mode data is best written in a JSON document."""
    if _is_json_type(ct):
        try:
            json.loads(data)
            return Form.STRUCTURED_JSON
        except (ValueError, UnicodeDecodeError):
            return Form.STRUCTURED_BASE64
    if _is_text_type(ct):
        try:
            data.decode("utf-8")
            return Form.STRUCTURED_TEXT
        except UnicodeDecodeError:
            pass
    return Form.STRUCTURED_BASE64

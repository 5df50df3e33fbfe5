"""The CloudEvent a function's code sees, and the bytes on the wire.

On the wire the project's codec (shared/cloudevent.py) parses and writes every event. The code
of a function sees the CloudEvents SDK's ``cloudevents.core.v1.event.CloudEvent``, as in
Knative's cloudevents template (knative/func templates/python/cloudevents/function/func.py,
func-python src/func_python/cloudevent.py): a function written for Knative runs here unchanged,
and its tests build the same objects.

Data crosses as the SDK's own JSON binding does: JSON content (or none) becomes the decoded
value, text content a ``str``, anything else ``bytes``; on the way out a dict or list is JSON,
a ``str`` text, ``bytes`` base64 in the structured document.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from shared.cloudevent import Event, Form, compact_json, validate

__all__ = ["CloudEvent", "from_wire", "to_wire"]

_CORE_ATTRS = frozenset({"specversion", "id", "source", "type"})


def _media(ct: str | None) -> str:
    return (ct or "").split(";", 1)[0].strip().lower()


def from_wire(event: Event) -> CloudEvent:
    """The SDK CloudEvent for a parsed event (its time as a datetime, its data decoded)."""
    attrs: dict[str, Any] = dict(event.attrs)
    time = attrs.get("time")
    if isinstance(time, str):
        attrs["time"] = dt.datetime.fromisoformat(time.replace("z", "Z"))
    data: dict[str, Any] | str | bytes | None = None
    raw = event.data
    if raw is not None:
        media = _media(event.content_type)
        if media == "" or media.endswith("/json") or media.endswith("+json"):
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                data = raw
        elif media.startswith("text/"):
            try:
                data = raw.decode("utf-8")
            except UnicodeDecodeError:
                data = raw
        else:
            data = raw
    if "time" not in attrs:
        # The SDK stamps a missing time with now; the event had none, so it keeps none: a
        # function that echoes the event must not invent one (research 4.4).
        ev = CloudEvent(attributes={**attrs, "time": dt.datetime.now(dt.UTC)}, data=data)
        ev.get_attributes().pop("time", None)
        return ev
    return CloudEvent(attributes=attrs, data=data)


def to_wire(event: CloudEvent) -> Event:
    """The codec's Event for an SDK CloudEvent (checked as the ingress would check it).

    Raises:
        shared.cloudevent.EventError: the event would not pass sdk-go's validation.
    """
    attrs: dict[str, object] = {}
    for key, value in event.get_attributes().items():
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            text = value.isoformat()
            value = text[:-6] + "Z" if text.endswith("+00:00") else text
        attrs[key] = value
    data = event.get_data()
    ct = attrs.get("datacontenttype")
    if data is None:
        body, form = None, Form.STRUCTURED_NONE
    elif isinstance(data, bytes):
        body, form = data, Form.STRUCTURED_BASE64
    elif isinstance(data, str) and not (isinstance(ct, str) and "json" in _media(ct)):
        body, form = data.encode("utf-8"), Form.STRUCTURED_TEXT
    else:
        body, form = compact_json(data).encode("utf-8"), Form.STRUCTURED_JSON
        attrs.setdefault("datacontenttype", "application/json")
    validate(attrs)
    return Event(attrs, body, form)

"""``knpy send``, ``knpy listen`` and ``knpy get brokers|triggers|...``: Eventing from the shell.

- ``knpy send`` is ``kn event send``: one CloudEvent (type, source, id, data, extensions) in
  binary or structured mode, to a Broker by name (its ``status.address.url``, read through the
  API with the kubeconfig) or to a URL. Hosts under ``.localhost`` are dialled on 127.0.0.1
  whatever the system resolver says (RFC 6761; knpy serve names its hosts so).
- ``knpy listen`` is Knative's event display (``cmd/event_display``): an HTTP server that prints
  every event it receives (binary, structured or batched) in the Go SDK's layout. For demos it
  can also answer with a reply event (``--reply-type``: a reply chain) or fail
  (``--status 500``: what a dead-letter sink gets).
- ``knpy get`` of the eventing kinds prints kn's columns.

Everything here is synchronous (the standard library's HTTP client and server), as the rest of
knpy's CLI: it starts fast and needs no event loop.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

from shared.apiclient import ApiFailure, load_kubeconfig
from shared.cloudevent import (
    STRUCTURED_TYPE,
    Event,
    EventError,
    Form,
    canonical,
    parse_message,
    to_binary,
    to_structured,
    validate,
)
from shared.kube.resources import (
    BROKERS,
    CHANNELS,
    CONTAINERSOURCES,
    PINGSOURCES,
    SINKBINDINGS,
    SUBSCRIPTIONS,
    TRIGGERS,
    Resource,
)

__all__ = [
    "EVENTING_KINDS",
    "add_commands",
    "display",
    "get_eventing",
    "parse_event",
]

Json = dict[str, Any]
DEFAULT_TYPE: Final = "dev.knpy.cli.event"
DEFAULT_SOURCE: Final = "knpy/send"
_CORE: Final = ("specversion", "id", "type", "source", "subject", "time", "dataschema",
                "datacontenttype")
_NAME: Final = re.compile(r"^[a-z0-9]{1,20}$")  # CloudEvents 1.0 attribute names
_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    cell: Callable[[Json], str]


def _path(*keys: str) -> Callable[[Json], str]:
    def cell(obj: Json) -> str:
        v: Any = obj
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return "" if v is None else str(v)

    return cell


def _ready(obj: Json) -> str:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return str(c.get("status", "Unknown"))
    return "Unknown"


def _reason(obj: Json) -> str:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return str(c.get("reason", ""))
    return ""


def _sink(obj: Json) -> str:
    return _path("status", "sinkUri")(obj)


def _subject(obj: Json) -> str:
    subject = (obj.get("spec") or {}).get("subject") or {}
    return f"{subject.get('kind', '')}:{subject.get('name') or subject.get('selector') or ''}"


# kn's list columns for each kind (kn broker/trigger/channel/subscription/source ... list).
EVENTING_KINDS: Final[dict[str, tuple[Resource, tuple[Column, ...]]]] = {
    "brokers": (BROKERS, (Column("URL", _path("status", "address", "url")),)),
    "triggers": (TRIGGERS, (Column("BROKER", _path("spec", "broker")),
                            Column("SINK", _path("status", "subscriberUri")))),
    "channels": (CHANNELS, (Column("URL", _path("status", "address", "url")),)),
    "subscriptions": (SUBSCRIPTIONS, (Column("CHANNEL", _path("spec", "channel", "name")),
                                      Column("SUBSCRIBER", _path("status", "physicalSubscription",
                                                                 "subscriberUri")))),
    "pingsources": (PINGSOURCES, (Column("SCHEDULE", _path("spec", "schedule")),
                                  Column("SINK", _sink))),
    "sinkbindings": (SINKBINDINGS, (Column("SUBJECT", _subject), Column("SINK", _sink))),
    "containersources": (CONTAINERSOURCES, (Column("SINK", _sink),)),
}
# Every name a person may type for them (singular, kubectl's short names).
EVENTING_ALIASES: Final = {
    **{k: k for k in EVENTING_KINDS},
    **{k[:-1]: k for k in EVENTING_KINDS},
    "ch": "channels",
    "sub": "subscriptions",
}


def get_eventing(args: argparse.Namespace) -> int:
    """``knpy get <eventing kind> [name]``: kn's table, or the objects as JSON/YAML."""
    kind = EVENTING_ALIASES[args.kind]
    resource, columns = EVENTING_KINDS[kind]
    if getattr(args, "watch", False):
        raise ApiFailure(f"knpy get -w shows services, revisions and routes; for {kind}: "
                         f"kubectl get {kind} -w --kubeconfig {args.kubeconfig}")
    api = load_kubeconfig(args.kubeconfig)
    if args.name:
        item = api.get(resource, args.namespace or "default", args.name)
        if item is None:
            raise ApiFailure(f'{resource} "{args.name}" not found')
        items = [item]
    else:
        items = sorted(api.list(resource, args.namespace),
                       key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]))
    if args.output in ("json", "yaml"):
        doc = items[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": items}
        if args.output == "json":
            print(json.dumps(doc, indent=2))
        else:
            import yaml

            print(yaml.safe_dump(doc, sort_keys=False), end="")
        return 0
    if not items:
        print(f"No {kind} found.")
        return 0
    header = ["NAMESPACE", "NAME", *(c.header for c in columns), "READY", "REASON"]
    rows = [
        [i["metadata"].get("namespace", ""), i["metadata"]["name"],
         *(c.cell(i) for c in columns), _ready(i), _reason(i)]
        for i in items
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


# -- knpy send -------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_event(args: argparse.Namespace) -> Event:
    """``knpy send``'s event, checked as the broker's ingress checks it (same codec)."""
    attrs: dict[str, object] = {
        "specversion": "1.0",
        "id": args.id or str(uuid.uuid4()),
        "type": args.type,
        "source": args.source,
        "time": _now(),
    }
    for ext in args.extension:
        name, sep, value = ext.partition("=")
        if not sep or not _NAME.match(name) or name in _CORE:
            raise ApiFailure(
                f"bad extension {ext!r}: NAME=VALUE, NAME lowercase letters and digits "
                "(at most 20) and not a core attribute"
            )
        attrs[name] = value
    data: str | None = args.data
    content_type = args.content_type
    if data is not None and not content_type:
        try:
            json.loads(data)
            content_type = "application/json"
        except ValueError:
            content_type = "text/plain"
    if content_type:
        attrs["datacontenttype"] = content_type
    try:
        validate(attrs)
    except EventError as err:
        raise ApiFailure(f"not a valid CloudEvent: {err}") from None
    return Event(attrs, None if data is None else data.encode(), Form.BINARY)


def encode(event: Event, mode: str) -> tuple[dict[str, str], bytes]:
    """The request (headers, body) of ``event`` in binary or structured mode."""
    if mode == "structured":
        return {"Content-Type": STRUCTURED_TYPE.decode()}, to_structured(event)
    pairs, body = to_binary(event)
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in pairs}, body


def post(url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, bytes]:
    """POST to ``url`` (``*.localhost`` dialled on 127.0.0.1); (status, reason, body)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiFailure(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    address = "127.0.0.1" if host == "localhost" or host.endswith(".localhost") else host
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(address, parts.port, timeout=_TIMEOUT_S)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={"Host": parts.netloc, **headers})
        resp = conn.getresponse()
        return resp.status, resp.reason, resp.read()
    except OSError as err:
        raise ApiFailure(f"cannot send to {url}: {err}") from None
    finally:
        conn.close()


def _target(args: argparse.Namespace) -> str:
    if re.match(r"^https?://", args.to):
        return str(args.to)
    api = load_kubeconfig(args.kubeconfig)
    broker = api.get(BROKERS, args.namespace, args.to)
    if broker is None:
        raise ApiFailure(f'brokers.eventing.knative.dev "{args.to}" not found in '
                         f'namespace "{args.namespace}"')
    url = ((broker.get("status") or {}).get("address") or {}).get("url")
    if not url:
        raise ApiFailure(f'broker "{args.to}" has no address yet (not reconciled)')
    return str(url)


def send(args: argparse.Namespace) -> int:
    url = _target(args)
    event = build_event(args)
    status, reason, answer = post(url, *encode(event, args.mode))
    event_id = event.attrs["id"]
    if 200 <= status < 300:
        print(f"Event {event_id} sent to {url}: {status} {reason}")
        return 0
    text = answer.decode("utf-8", "replace").strip()
    print(f"Error: {url} answered {status} {reason}{': ' + text if text else ''}",
          file=sys.stderr)
    return 1


# -- knpy listen -----------------------------------------------------------------------------


def parse_event(headers: Mapping[str, str], body: bytes) -> list[Json]:
    """The events of one request (binary, structured or batched mode), parsed and validated
    by the broker's codec, each as ``display`` takes it: its attributes, with ``data`` (text)
    or ``data_base64``.

    Raises:
        EventError (a ValueError): not a valid CloudEvent.
    """
    pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return [_as_json(e) for e in parse_message(pairs, body)]


def _as_json(event: Event) -> Json:
    out: Json = {k: canonical(v) for k, v in event.attrs.items()}
    if event.data is not None:
        try:
            out["data"] = event.data.decode("utf-8")
        except UnicodeDecodeError:
            out["data_base64"] = base64.b64encode(event.data).decode()
    return out


def display(event: Mapping[str, Any]) -> str:
    """An event as Knative's event display prints it (the Go SDK's ``Event.String``)."""
    lines = ["☁️  cloudevents.Event", "Context Attributes,"]
    lines += [f"  {k}: {event[k]}" for k in _CORE if k in event]
    extensions = sorted(k for k in event if k not in _CORE and k not in ("data", "data_base64"))
    if extensions:
        lines.append("Extensions,")
        lines += [f"  {k}: {event[k]}" for k in extensions]
    if "data" in event or "data_base64" in event:
        lines.append("Data,")
        data = event.get("data")
        if "data_base64" in event:
            lines.append(f"  (base64) {event['data_base64']}")
        elif isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                lines.append(f"  {data}")
                data = None
        if data is not None and not isinstance(data, str):
            lines += [f"  {line}" for line in json.dumps(data, indent=2).splitlines()]
    return "\n".join(lines)


def _handler(status: int, reply_type: str) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # the standard library's names
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
            try:
                events = parse_message(pairs, body)
            except EventError as err:
                self._answer(400, {"Content-Type": "text/plain"}, f"{err}\n".encode())
                return
            with lock:
                for event in events:
                    print(display(_as_json(event)), flush=True)
            if reply_type and events and status < 300:
                ct = events[0].content_type
                attrs: dict[str, object] = {"specversion": "1.0", "id": str(uuid.uuid4()),
                                            "type": reply_type, "source": "knpy/listen",
                                            **({"datacontenttype": ct} if ct else {})}
                self._answer(200, *encode(Event(attrs, events[0].data, Form.BINARY), "binary"))
                return
            self._answer(status, {}, b"")

        def do_OPTIONS(self) -> None:
            self._answer(200, {"WebHook-Allowed-Origin": "*", "WebHook-Allowed-Rate": "*",
                               "Allow": "POST"}, b"")

        def _answer(self, code: int, headers: Mapping[str, str], body: bytes) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the events are the output

    return Handler


def listen(args: argparse.Namespace) -> int:
    server = ThreadingHTTPServer((args.host, args.port), _handler(args.status, args.reply_type))
    print(f"knpy listen: http://{args.host}:{server.server_address[1]}/ "
          f"(answers {200 if args.reply_type else args.status})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_commands(sub: Any, with_api: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
                 ) -> None:
    """Register ``send`` and ``listen`` on knpy's subcommand parser."""
    s = with_api(sub.add_parser("send", help="send a CloudEvent to a broker or a URL"))
    s.add_argument("--to", required=True, help="a Broker's name (in -n) or a URL")
    s.add_argument("-n", "--namespace", default="default", help="the Broker's namespace")
    s.add_argument("--type", default=DEFAULT_TYPE, help=f"ce-type (default {DEFAULT_TYPE})")
    s.add_argument("--source", default=DEFAULT_SOURCE, help=f"ce-source (default {DEFAULT_SOURCE})")
    s.add_argument("--id", default="", help="ce-id (default: a random UUID)")
    s.add_argument("-d", "--data", default=None, help="the event's data (JSON or text)")
    s.add_argument("--content-type", default="", help="datacontenttype (default: guessed)")
    s.add_argument("-e", "--extension", action="append", default=[], metavar="NAME=VALUE",
                   help="an extension attribute (repeatable)")
    s.add_argument("--mode", choices=("binary", "structured"), default="binary")
    s.set_defaults(run=send)
    lsn = sub.add_parser("listen", help="print every CloudEvent received (an event display)")
    lsn.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8080),
                     help="default $PORT (a Knative Service's), else 8080; 0: any free port")
    lsn.add_argument("--host", default="127.0.0.1")
    lsn.add_argument("--status", type=int, default=202, help="the answer (500: always fail)")
    lsn.add_argument("--reply-type", default="", help="answer 200 with a reply event of this type")
    lsn.set_defaults(run=listen)


def eventing_choices() -> Sequence[str]:
    return sorted(EVENTING_ALIASES)

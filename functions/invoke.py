"""``knpy func invoke``: one request or one CloudEvent to the function, and its answer.

Knative's ``func invoke`` (knative/func cmd/invoke.go, pkg/functions/invoke.go):

- the format is ``-f`` if given, else func.yaml's ``invoke``, else http;
- the message defaults: id a new UUID, source ``/boson/fn``, type ``boson.fn``, content type
  ``application/json``, data ``{"message":"Hello World"}``, method POST; ``--file`` sends a
  file's bytes as the data; ``-e k=v`` adds an extension;
- the target is ``--target`` (``local``, ``remote`` or a URL), else the local instance if one
  runs (``knpy func run``'s ``.func/run.json``), else the deployed one;
- http: an answer above 299 is a failure; cloudevent: the event goes in binary mode (the Go
  SDK client's default) and a reply event is printed as the Go SDK prints one.

The deployed instance's URL comes from ``functions.deploy.deployed_url(project)`` when that
module exists (``knpy func deploy``; the hook below), so this module does not know how a
function is deployed.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from functions.project import FunctionProject, ProjectError, load
from functions.run import parse_pairs, read_instance
from shared.cloudevent import Event, EventError, Form, to_binary, validate

__all__ = ["Answer", "InvokeMessage", "invoke", "invoke_command", "resolve_target"]

# pkg/functions/invoke.go's defaults.
DEFAULT_SOURCE: Final = "/boson/fn"
DEFAULT_TYPE: Final = "boson.fn"
DEFAULT_CONTENT_TYPE: Final = "application/json"
DEFAULT_DATA: Final = b'{"message":"Hello World"}'
TIMEOUT_S: Final = 60.0  # sendHttp's client timeout (a minute)


@dataclass(frozen=True, slots=True)
class InvokeMessage:
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    source: str = DEFAULT_SOURCE
    type: str = DEFAULT_TYPE
    content_type: str = DEFAULT_CONTENT_TYPE
    data: bytes = DEFAULT_DATA
    request_type: str = "POST"
    extensions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def deployed_url(project: FunctionProject) -> str | None:
    """The deployed instance's URL, from ``functions.deploy.deployed_url`` when it exists."""
    try:
        deploy = importlib.import_module("functions.deploy")
    except ModuleNotFoundError:
        return None
    finder: Callable[[FunctionProject], str | None] | None = getattr(deploy, "deployed_url", None)
    return finder(project) if finder is not None else None


def resolve_target(project: FunctionProject, target: str | None) -> str:
    """Knative's invocationRoute: local, remote, a URL, or the first running of local/remote.

    Raises:
        ProjectError: the chosen instance is not running (says how to start one).
    """
    if target in (None, "", "local"):
        local = read_instance(project)
        if local is not None:
            return local
        if target == "local":
            raise ProjectError(
                f"function '{project.name}' is not running locally: start it with "
                "`knpy func run` (in its directory)"
            )
    if target in (None, "", "remote"):
        remote = deployed_url(project)
        if remote is not None:
            return remote
        if target == "remote":
            raise ProjectError(
                f"function '{project.name}' is not deployed: `knpy func deploy` first"
            )
        raise ProjectError(
            f"function '{project.name}' is not running locally or deployed: start it with "
            "`knpy func run`, deploy it, or pass --target URL"
        )
    assert target is not None
    if urlsplit(target).scheme not in ("http", "https"):
        raise ProjectError(f"--target {target!r}: want local, remote or an http(s) URL")
    return target


def _send(url: str, method: str, headers: Mapping[str, str], body: bytes) -> Answer:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    address = "127.0.0.1" if host == "localhost" or host.endswith(".localhost") else host
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(address, parts.port, timeout=TIMEOUT_S)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, path, body=body or None, headers={"Host": parts.netloc, **headers})
        resp = conn.getresponse()
        return Answer(resp.status, resp.reason, resp.getheaders(), resp.read())
    except OSError as err:
        raise ProjectError(f"cannot reach the function at {url}: {err}") from None
    finally:
        conn.close()


def event_of(message: InvokeMessage) -> Event:
    """The CloudEvent of an invoke message (binary-mode form)."""
    attrs: dict[str, object] = {
        "specversion": "1.0",
        "id": message.id,
        "source": message.source,
        "type": message.type,
    }
    attrs.update(message.extensions)
    if message.data:
        attrs["datacontenttype"] = message.content_type
    try:
        validate(attrs)
    except EventError as err:
        raise ProjectError(f"not a valid CloudEvent: {err}") from None
    return Event(attrs, message.data or None, Form.BINARY)


def invoke(url: str, fmt: str, message: InvokeMessage) -> Answer:
    """Send ``message`` to ``url`` as an HTTP request or a CloudEvent."""
    if fmt == "cloudevent":
        pairs, body = to_binary(event_of(message))
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in pairs}
        return _send(url, message.request_type, headers, body)
    headers = {"Content-Type": message.content_type}
    return _send(url, message.request_type, headers, message.data)


def render(answer: Answer, fmt: str) -> str:
    """What invoke prints: a reply event as the Go SDK prints it, else the body."""
    from shared.eventing_cli import display, parse_event

    if fmt == "cloudevent" and answer.body:
        try:
            return "\n".join(display(e) for e in parse_event(dict(answer.headers), answer.body))
        except EventError:
            pass
    return answer.body.decode("utf-8", "replace")


def invoke_command(args: argparse.Namespace) -> int:
    """``knpy func invoke`` (functions/cli.py)."""
    project = load(args.path)
    fmt = {"cloudevents": "cloudevent"}.get(args.format, args.format) or project.invoke
    data = DEFAULT_DATA
    if args.file is not None:
        try:
            data = args.file.read_bytes()
        except OSError as err:
            raise ProjectError(f"--file {args.file}: {err.strerror}") from None
    elif args.data is not None:
        data = args.data.encode()
    message = InvokeMessage(
        id=args.id or str(uuid.uuid4()),
        source=args.source or DEFAULT_SOURCE,
        type=args.type or DEFAULT_TYPE,
        content_type=args.content_type or DEFAULT_CONTENT_TYPE,
        data=data,
        request_type=args.request_type,
        extensions=parse_pairs(args.extension),
    )
    url = resolve_target(project, args.target)
    answer = invoke(url, fmt, message)
    if answer.status > 299:
        text = answer.body.decode("utf-8", "replace").strip()
        print(f"Error: invoking {url} ({fmt}) answered {answer.status} {answer.reason}"
              f"{': ' + text if text else ''}", file=sys.stderr)  # fmt: skip
        return 1
    shown = render(answer, fmt)
    if shown:
        print(shown)
    else:
        print(f"{answer.status} {answer.reason} (no body)", file=sys.stderr)
    return 0

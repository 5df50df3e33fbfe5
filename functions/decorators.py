"""The plain-function form: ``@http`` and ``@cloudevent`` on an ``async def``.

Knative's Python contract is raw ASGI (``handle(scope, receive, send)``), the most bare of
the serverless platforms compared in shared/research/eventing-and-functions.md §6. This form
is the shorter one Cloud Run's functions-framework offers, with Knative's reply semantics:

    from functions import cloudevent, http, Request, Response

    @http
    async def handle(request: Request) -> Response | str | bytes | dict | list | None: ...

    @cloudevent
    async def handle(event: CloudEvent) -> CloudEvent | None: ...

An ``@http`` result becomes the response: a ``Response`` as given, ``str`` text/plain,
``bytes`` application/octet-stream, a dict or list JSON, all 200; ``None`` is 204. An
``@cloudevent`` result is the reply event (200, structured); ``None`` acknowledges without a
reply (202); anything else is a 500 that says a broker would refuse it.

A decorated function is itself a function instance (it has ``handle(scope, receive, send)``),
so ``function/__init__.py`` exports it as ``handle``; the host serves ``@cloudevent`` with
the cloudevents middleware whatever func.yaml's ``invoke`` says.

Nothing here imports asyncio or aiohttp: ``import functions`` in a function's code is cheap.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

from functions.middleware import Receive, Scope, Send, read_body

__all__ = ["EventFunction", "HttpFunction", "Request", "Response", "cloudevent", "http"]

_JSON: Final = [(b"content-type", b"application/json")]
_TEXT: Final = [(b"content-type", b"text/plain; charset=utf-8")]
_BYTES: Final = [(b"content-type", b"application/octet-stream")]


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, read whole (a function's requests are small; stream with the ASGI
    form when they are not)."""

    method: str
    path: str
    query: Mapping[str, str]  # the last value of each name
    headers: Mapping[str, str]  # names lower-case
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Response:
    body: bytes | str = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


def _require_async(fn: Callable[..., Any], decorator: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@{decorator} decorates an `async def`, not {fn!r}")


class HttpFunction:
    """An ``async def f(request) -> ...`` as a function instance."""

    __slots__ = ("fn",)
    invoke: Final[Literal["http"]] = "http"

    def __init__(self, fn: Callable[[Request], Awaitable[object]]) -> None:
        _require_async(fn, "http")
        self.fn = fn

    def __repr__(self) -> str:
        return f"<HttpFunction {self.fn.__qualname__}>"

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        headers = {
            bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
            for k, v in scope.get("headers") or ()
        }
        query = dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1")))
        request = Request(scope.get("method", "GET"), scope.get("path", "/"), query, headers, body)
        result = await self.fn(request)
        status, head, data = _response(result)
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": data})


def _response(result: object) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if result is None:
        return 204, [], b""
    if isinstance(result, Response):
        data = result.body.encode() if isinstance(result.body, str) else result.body
        head = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in
                result.headers.items()]  # fmt: skip
        if not any(k == b"content-type" for k, _ in head) and data:
            head += _TEXT if isinstance(result.body, str) else _BYTES
        return result.status, head, data
    if isinstance(result, str):
        return 200, _TEXT, result.encode()
    if isinstance(result, (bytes, bytearray)):
        return 200, _BYTES, bytes(result)
    if isinstance(result, (dict, list)):
        return 200, _JSON, json.dumps(result).encode()
    raise TypeError(
        f"an @http function returned {type(result).__name__}; return a Response, str, bytes, "
        "dict, list or None"
    )


class EventFunction:
    """An ``async def f(event) -> CloudEvent | None`` as a function instance."""

    __slots__ = ("fn",)
    invoke: Final[Literal["cloudevent"]] = "cloudevent"

    def __init__(self, fn: Callable[[Any], Awaitable[object]]) -> None:
        _require_async(fn, "cloudevent")
        self.fn = fn

    def __repr__(self) -> str:
        return f"<EventFunction {self.fn.__qualname__}>"

    async def handle(self, scope: Scope, receive: Receive, send: Any) -> None:
        from functions.events import CloudEvent

        reply = await self.fn(scope["event"])
        if reply is None:
            return  # the middleware acknowledges with 202
        if not isinstance(reply, CloudEvent):
            raise TypeError(
                f"a @cloudevent function returned {type(reply).__name__}, not a CloudEvent: "
                "a broker refuses a reply that is not an event (return None for no reply)"
            )
        await send(reply)


def http(fn: Callable[[Request], Awaitable[object]]) -> HttpFunction:
    """Serve ``fn(request)`` (module doc)."""
    return HttpFunction(fn)


def cloudevent(fn: Callable[[Any], Awaitable[object]]) -> EventFunction:
    """Serve ``fn(event)`` (module doc)."""
    return EventFunction(fn)

"""The function middleware: what stands between the HTTP server and the user's ``handle``.

It matches Knative's func-python (knative-extensions/func-python src/func_python/http.py and
cloudevent.py) in its contract:

- the function is an instance with ``async handle(scope, receive, send)`` (ASGI) and the
  optional ``start(cfg)`` (cfg: a copy of the environment), ``stop()``, ``alive()`` and
  ``ready()``; ``alive``/``ready`` return a bool or ``(bool, message)``, and are served at
  ``/health/liveness`` and ``/health/readiness`` (200 or 500, text, "OK" by default);
- any other path goes to ``handle``; an exception there is a 500;
- in the cloudevents middleware the request is decoded into ``scope["event"]`` (the SDK's
  ``CloudEvent``) and ``send`` is a sender: ``await send(event)`` (structured),
  ``send.structured(event, status)``, ``send.binary(event, status)``, ``send.http(message)``;
  a request that is not a CloudEvent is a 400; any other failure a 500 whose body is a
  structured ``dev.functions.error`` event.

It differs from func-python where the issue asks (knpy issue 14):

- a ``ValueError`` raised by the user's code is a **500** (retriable), not the 400 func-python
  means (as released, 0.8.1, that 400 fails in its own sender and goes out as a confusing
  500; docs/functions.md):
  a broker never retries a 400, so a transient failure that happens to raise ValueError (a
  bad reading from a flaky dependency, ``int()`` of a half-written file) would lose the event.
  Only a request that does not decode as a CloudEvent is a 400.
- a reply that is not an event is never sent as a 2xx with a body: a broker would refuse it
  (Knative's dispatcher counts 200 with a non-event body as a failed delivery, 502, and
  retries it up to ten times). ``send(x)`` with something other than a CloudEvent, and a raw
  ``send.http`` response of 2xx whose body is not a CloudEvent, become a 500 that says so.
  A 2xx with no body (202, 204) passes: it is an acknowledgement without a reply.
- ``start``, ``stop``, ``alive`` and ``ready`` may also be ``async``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Literal, Protocol

from shared.cloudevent import STRUCTURED_TYPE, EventError, parse_message, to_binary, to_structured

__all__ = [
    "LIVENESS_PATH",
    "READINESS_PATH",
    "CloudEventSender",
    "FunctionApp",
    "FunctionInstance",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LIVENESS_PATH: Final = "/health/liveness"
READINESS_PATH: Final = "/health/readiness"
_TEXT: Final = [(b"content-type", b"text/plain")]
_ERROR_TYPE: Final = "dev.functions.error"  # func-python's send_exception_cloudevent
_ERROR_SOURCE: Final = "/cloudevent/error"
_NOT_AN_EVENT: Final = b"Bad Request: This endpoint expects CloudEvent requests. "

log = logging.getLogger("functions")


class FunctionInstance(Protocol):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None: ...


async def maybe_await(value: object) -> object:
    """A hook's result, awaited if the hook was ``async``."""
    if inspect.isawaitable(value):
        return await value
    return value


async def _health(send: Send, hook: Callable[[], object] | None) -> None:
    """func-python's handle_liveness/handle_readiness: ok by default, message "OK"."""
    ok, message = True, "OK"
    if hook is not None:
        result = await maybe_await(hook())
        if isinstance(result, tuple):
            ok, message = bool(result[0]), str(result[1])
        else:
            ok = bool(result)
    await send({"type": "http.response.start", "status": 200 if ok else 500, "headers": _TEXT})
    await send({"type": "http.response.body", "body": message.encode()})


async def send_text(send: Send, status: int, text: str | bytes) -> None:
    body = text.encode() if isinstance(text, str) else text
    await send({"type": "http.response.start", "status": status, "headers": _TEXT})
    await send({"type": "http.response.body", "body": body})


class FunctionApp:
    """The ASGI application for one function instance (``invoke``: http or cloudevent)."""

    __slots__ = ("_alive", "_ready", "instance", "invoke")

    def __init__(self, instance: object, invoke: Literal["http", "cloudevent"]) -> None:
        if not callable(getattr(instance, "handle", None)):
            raise AttributeError("Function must implement a 'handle' method.")
        self.instance: FunctionInstance = instance  # type: ignore[assignment]
        self.invoke = invoke
        self._alive: Callable[[], object] | None = getattr(instance, "alive", None)
        self._ready: Callable[[], object] | None = getattr(instance, "ready", None)

    def __repr__(self) -> str:
        return f"<FunctionApp {type(self.instance).__name__} invoke={self.invoke}>"

    async def start(self, cfg: dict[str, str]) -> None:
        hook = getattr(self.instance, "start", None)
        if hook is not None:
            await maybe_await(hook(cfg))

    async def stop(self) -> None:
        hook = getattr(self.instance, "stop", None)
        if hook is not None:
            await maybe_await(hook())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await send_text(send, 400, f"Functions support HTTP only, got {scope['type']}")
            return
        path = scope["path"]
        if path == LIVENESS_PATH:
            await _health(send, self._alive)
        elif path == READINESS_PATH:
            await _health(send, self._ready)
        elif self.invoke == "cloudevent":
            await self._event(scope, receive, send)
        else:
            guard = _Guard(send)
            try:
                await self.instance.handle(scope, receive, guard)
            except Exception as err:
                log.exception("the function failed")
                if not guard.started:
                    await send_text(send, 500, f"Error: {err}")
                else:
                    raise  # the status is out: the server drops the connection
            else:
                await guard.finish()

    async def _event(self, scope: Scope, receive: Receive, send: Send) -> None:
        from functions.events import from_wire

        body = await read_body(receive)
        try:
            events = parse_message(scope["headers"], body)
            if len(events) != 1:
                raise EventError("a batch of events; a function takes one event per request")
            scope["event"] = from_wire(events[0])
        except (EventError, ValueError) as err:
            # func-python's 400 for a request that is not a CloudEvent (cloudevent.py).
            log.warning("not a CloudEvent: %s %s: %s", scope.get("method"), scope["path"], err)
            await send_text(send, 400, _NOT_AN_EVENT)
            return
        sender = CloudEventSender(send)
        try:
            await self.instance.handle(scope, _replay(), sender)
        except _Refused:
            return  # its 500 went out
        except Exception as err:  # ValueError too: 500, retriable (module doc)
            log.exception("the function failed")
            if sender.started:
                raise
            await sender.error(500, f"Error: {err}")
        else:
            await sender.finish()


def _replay() -> Receive:
    """``receive`` after the body was read for decoding: the end of the body, then nothing."""
    done = False

    async def receive() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class _Guard:
    """``send`` for the http middleware: remembers whether the response started, and answers
    500 for a handle that returned without one (hypercorn would drop the connection)."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def finish(self) -> None:
        if not self.started:
            await send_text(self._send, 500, "Error: the function returned without a response")


class CloudEventSender:
    """func-python's CloudEventSender, with knpy's rule for replies that are not events."""

    __slots__ = ("_held", "_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self._held: Message | None = None  # a 2xx start waiting to see its body

    async def __call__(self, event: object, status: int = 200) -> None:
        from functions.events import CloudEvent

        if isinstance(event, CloudEvent):
            await self.structured(event, status)
        elif isinstance(event, MutableMapping) and str(event.get("type", "")).startswith(
            "http."
        ):
            await self.http(event)
        else:
            raise TypeError(
                f"send() takes a CloudEvent, got {type(event).__name__}: a reply that is not "
                "an event would be refused by a broker (send an event, or answer 202 with "
                "send.http for no reply)"
            )

    async def structured(self, event: Any, status: int = 200) -> None:
        from functions.events import to_wire

        body = to_structured(to_wire(event))
        headers = [(b"content-type", STRUCTURED_TYPE)]
        await self._respond(status, headers, body)

    async def binary(self, event: Any, status: int = 200) -> None:
        from functions.events import to_wire

        headers, body = to_binary(to_wire(event))
        await self._respond(status, headers, body)

    async def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

    async def http(self, message: Message) -> None:
        """A raw ASGI message. A 2xx start is held until its first body: with a body and no
        event in the headers it becomes a 500 (module doc)."""
        if message["type"] == "http.response.start":
            self.started = True
            if 200 <= int(message.get("status", 200)) < 300 and not _declares_event(
                message.get("headers") or []
            ):
                self._held = message
                return
            await self._send(message)
            return
        if self._held is not None and message["type"] == "http.response.body":
            held, self._held = self._held, None
            if message.get("body") or message.get("more_body"):
                status = held.get("status")
                log.error("the function replied %s with a body that is not a CloudEvent", status)
                await send_text(
                    self._send,
                    500,
                    f"Error: the function replied {status} with a body that is not a "
                    "CloudEvent; a broker refuses such a reply. Reply with send(event), or "
                    "with 202 and no body for no reply.",
                )
                raise _Refused
            await self._send(held)
        await self._send(message)

    async def error(self, status: int, message: str) -> None:
        """func-python's send_exception_cloudevent: a structured ``dev.functions.error``."""
        from functions.events import CloudEvent

        event = CloudEvent(
            attributes={"type": _ERROR_TYPE, "source": _ERROR_SOURCE}, data={"message": message}
        )
        await self.structured(event, status)

    async def finish(self) -> None:
        """After handle returned: a held start is sent with an empty body; no response at all
        is a 202, knpy's choice: the event was taken and there is no reply."""
        if self._held is not None:
            held, self._held = self._held, None
            await self._send(held)
            await self._send({"type": "http.response.body", "body": b""})
        elif not self.started:
            self.started = True
            await self._send({"type": "http.response.start", "status": 202, "headers": []})
            await self._send({"type": "http.response.body", "body": b""})


class _Refused(Exception):
    """The 500 for a non-event reply went out; the rest of the handler's output is dropped."""


def _declares_event(headers: list[Any]) -> bool:
    for name, value in headers:
        lname = bytes(name).lower()
        if lname == b"ce-specversion":
            return True
        if lname == b"content-type" and bytes(value).lower().startswith(b"application/cloudevents"):
            return True
    return False

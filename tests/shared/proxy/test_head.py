"""The common end of a rewritten request head, and the header-kind table."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import Tracer, TracerProvider

from shared.proxy.exchange import Exchange
from shared.proxy.head import (
    DROP,
    PASS,
    HeaderKinds,
    connection_tokens,
    drop_listed,
    finish_head,
    request_line,
)
from shared.proxy.memory import MemoryTransport
from shared.proxy.server import ProxyServer
from shared.proxy.tracing import Tracing

from .rig import Rig


def test_header_kinds_learn_spellings_up_to_the_bound() -> None:
    kinds = HeaderKinds({b"host": 2}, prefixes={b"knative-": 3}, max_spellings=3)
    assert kinds.learn(b"Host") == 2
    assert kinds.learn(b"Upgrade") == DROP  # hop-by-hop, restated by the proxy itself
    assert kinds.learn(b"Knative-Serving-Revision") == 3
    assert kinds.learn(b"X-Other") == PASS
    assert kinds.spellings == {b"Host": 2, b"Upgrade": DROP, b"Knative-Serving-Revision": 3}
    assert repr(kinds).startswith("<HeaderKinds kinds=")


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        pytest.param(b"close", [b"close"], id="one"),
        pytest.param(
            b"Keep-Alive, X-Secret ,Upgrade",
            [b"keep-alive", b"x-secret", b"upgrade"],
            id="several, spaced and cased",
        ),
    ],
)
def test_connection_tokens(value: bytes, tokens: list[bytes]) -> None:
    assert connection_tokens(value) == tokens


def test_drop_listed_keeps_the_request_line() -> None:
    out = [b"GET / HTTP/1.1\r\n", b"X-Secret: 1\r\n", b"Accept: */*\r\n"]
    drop_listed(out, [b"x-secret"])
    assert out == [b"GET / HTTP/1.1\r\n", b"Accept: */*\r\n"]
    drop_listed(out, [])
    assert len(out) == 2


def _exchange(raw: bytes) -> Exchange[None]:
    rig = Rig()
    rig.handler.hold = True
    rig.client().feed(raw)
    return rig.handler.handled[0]


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        pytest.param(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /a?b HTTP/1.1\r\n", id="1.1"),
        pytest.param(b"POST / HTTP/1.0\r\n\r\n", b"POST / HTTP/1.0\r\n", id="1.0"),
    ],
)
async def test_request_line(raw: bytes, line: bytes) -> None:
    assert request_line(_exchange(raw)) == line


@pytest.mark.parametrize(
    ("raw", "xff", "traceparent", "tracestate", "want"),
    [
        pytest.param(
            b"GET / HTTP/1.1\r\n\r\n",
            None,
            None,
            None,
            b"X-Forwarded-For: 192.0.2.1\r\n\r\n",
            id="first hop",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n\r\n",
            b"10.1.1.1",
            b"00-tp",
            b"ts",
            b"X-Forwarded-For: 10.1.1.1, 192.0.2.1\r\ntraceparent: 00-tp\r\ntracestate: ts\r\n\r\n",
            id="appended, trace context passed on",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            None,
            b"00-tp",
            None,
            b"X-Forwarded-For: 192.0.2.1\r\nTransfer-Encoding: chunked\r\n"
            b"traceparent: 00-tp\r\n\r\n",
            id="chunked restated",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            None,
            None,
            None,
            b"X-Forwarded-For: 192.0.2.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            id="upgrade restated",
        ),
    ],
)
async def test_finish_head_without_tracing(
    raw: bytes, xff: bytes | None, traceparent: bytes | None, tracestate: bytes | None, want: bytes
) -> None:
    ex = _exchange(raw)
    head = finish_head(
        [b"L\r\n"],
        ex,
        xff=xff,
        traceparent=traceparent,
        tracestate=tracestate,
        tracing=None,
        span_name="unused",
    )
    assert head == b"L\r\n" + want and ex.span is None


async def test_finish_head_with_tracing_starts_a_child_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    assert isinstance(tracer, Tracer)
    tracing = Tracing(tracer)
    assert repr(tracing).startswith("<Tracing ")
    ex = _exchange(b"GET / HTTP/1.1\r\n\r\n")
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    head = finish_head(
        [],
        ex,
        xff=None,
        traceparent=parent,
        tracestate=None,
        tracing=tracing,
        span_name="kn.test",
        terminate=False,
    )
    assert ex.span is not None
    context = ex.span.get_span_context()
    assert f"{context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-" in head
    assert not head.endswith(b"\r\n\r\n")
    child = tracing.start_child("kn.wait", ex.span)
    assert child.get_span_context().trace_id == context.trace_id
    assert tracing.start_child("kn.root", None).get_span_context().trace_id != context.trace_id
    child.end()
    ex.span.end()


async def test_local_handler_routes_by_path() -> None:
    from shared.proxy.http1 import simple_response
    from shared.proxy.local import LocalHandler

    local = LocalHandler(
        {"/metrics": lambda ex: ex.respond(simple_response(200, b"m"), status=200)}
    )
    assert repr(local) == "<LocalHandler ['/metrics']>"
    server: ProxyServer[None] = ProxyServer(local, initial_tag=None)
    for request, answer in [
        (b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK"),
        (b"GET /nope HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found"),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 405 Method Not Allowed",
        ),
    ]:
        # One connection each: an answer given while the head is parsed, before the parser saw
        # the end of the (empty) body, closes the connection (body_done is still False).
        t = MemoryTransport(server()).open()
        t.feed(request)
        assert t.take().startswith(answer) and t.closing

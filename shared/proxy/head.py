"""The end of a rewritten request head, the same for every hop of the data plane.

Each component scans the client's headers once for what its policy needs and appends the rest
as it goes; what follows that scan is common: headers named in ``Connection`` dropped (they are
hop-by-hop too, RFC 9110 section 7.6.1), the client's address appended to X-Forwarded-For (as
Go's httputil.ReverseProxy does), the body framing and the upgrade re-stated (the proxy
re-frames chunked bodies), and the W3C trace context: a new span's when tracing is on, the
caller's untouched when it is off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.proxy.exchange import Exchange

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer


class Tracing:
    """A tracer with the header helpers, imported only when tracing is on.

    OpenTelemetry's SDK costs about 10 MB of memory per process; a pod that does not trace
    should not pay it.
    """

    __slots__ = ("_extract", "_inject", "tracer")

    def __init__(self, tracer: Tracer) -> None:
        from shared.tracing import extract_context, inject_headers

        self.tracer = tracer
        self._extract = extract_context
        self._inject = inject_headers

    def __repr__(self) -> str:
        return f"<Tracing {self.tracer!r}>"


def drop_listed(out: list[bytes], drop: list[bytes]) -> None:
    """Remove, in place, the header lines whose names ``Connection`` listed (after line 0)."""
    if drop:
        out[1:] = [line for line in out[1:] if line.split(b":", 1)[0].lower() not in drop]


def finish_head(
    out: list[bytes],
    ex: Exchange,
    *,
    xff: bytes | None,
    traceparent: bytes | None,
    tracestate: bytes | None,
    tracing: Tracing | None,
    span_name: str,
    terminate: bool = True,
) -> bytes:
    """Complete the head begun in ``out`` (request line, passed-through and added headers).

    With ``tracing``, starts the span ``span_name`` as a child of the caller's context and
    stores it in ``ex.span``; the upstream gets that span as its parent. Without
    ``terminate`` the blank line is left off, for a caller that adds per-upstream lines later.
    """
    append = out.append
    remote = ex.conn.remote.encode()
    append(b"X-Forwarded-For: %b\r\n" % (xff + b", " + remote if xff else remote))
    if ex.chunked:
        append(b"Transfer-Encoding: chunked\r\n")
    if ex.upgrade:
        append(b"Connection: Upgrade\r\nUpgrade: %b\r\n" % (ex.header(b"upgrade") or b""))
    if tracing is not None:
        span = tracing.tracer.start_span(
            span_name, context=tracing._extract(traceparent, tracestate)
        )
        ex.span = span
        for name, value in tracing._inject(span):
            append(b"%b: %b\r\n" % (name, value))
    elif traceparent is not None:
        append(b"traceparent: %b\r\n" % traceparent)
        if tracestate is not None:
            append(b"tracestate: %b\r\n" % tracestate)
    if terminate:
        append(b"\r\n")
    return b"".join(out)


def connection_tokens(value: bytes) -> list[bytes]:
    """The lower-case header names a ``Connection`` header lists."""
    return [t.strip().lower() for t in value.split(b",")]

"""The proxy's view of tracing: a tracer and the W3C header helpers, loaded only when on.

OpenTelemetry's SDK costs about 10 MB of memory per process; a pod that does not trace should
not pay it, so nothing here imports it at module level: a component builds a ``Tracing`` only
when ``shared.tracing.setup_tracing`` gave it a tracer, and its hot path tests for None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Tracer
    from opentelemetry.trace import Span


class Tracing:
    """A tracer with the header helpers a raw-bytes proxy needs."""

    __slots__ = ("_extract", "_in_context", "_inject", "tracer")

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry.trace import set_span_in_context

        from shared.tracing import extract_context, inject_headers

        self.tracer = tracer
        self._extract = extract_context
        self._inject = inject_headers
        self._in_context = set_span_in_context

    def __repr__(self) -> str:
        return f"<Tracing {self.tracer!r}>"

    def start_remote_child(
        self, name: str, traceparent: bytes | None, tracestate: bytes | None
    ) -> Span:
        """A span under the caller's W3C context (a new root if it sent none or a bad one)."""
        return self.tracer.start_span(name, context=self._extract(traceparent, tracestate))

    def start_child(self, name: str, parent: Span | None) -> Span:
        """A span under ``parent`` (the request's), e.g. for the wait in a breaker."""
        context = self._in_context(parent) if parent is not None else None
        return self.tracer.start_span(name, context=context)

    def headers(self, span: Span) -> list[tuple[bytes, bytes]]:
        """The ``traceparent`` (and ``tracestate``) naming ``span`` as the upstream's parent."""
        return self._inject(span)

"""The end of a rewritten request head, the same for every hop of the data plane.

Each component scans the client's headers once for what its policy needs and appends the rest
as it goes; what follows that scan is common: headers named in ``Connection`` dropped (they are
hop-by-hop too, RFC 9110 section 7.6.1), the client's address appended to X-Forwarded-For (as
Go's httputil.ReverseProxy does), the body framing and the upgrade re-stated (the proxy
re-frames chunked bodies), and the W3C trace context: a new span's when tracing is on, the
caller's untouched when it is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from shared.proxy.contract import TagT
from shared.proxy.exchange import Exchange
from shared.proxy.http1 import HOP_BY_HOP

if TYPE_CHECKING:
    from shared.proxy.tracing import Tracing

# Header kinds every component shares; each adds its own from 2 up.
PASS: Final = 0  # passed through untouched
DROP: Final = 1  # not forwarded

# Hop-by-hop headers (Go's ReverseProxy list) are not forwarded; the proxy re-states framing and
# upgrade itself. Connection, hop-by-hop too, is a kind of each component's: it names more.
_NOT_FORWARDED: Final = HOP_BY_HOP - {b"connection"}

# The request line's tail per HTTP version, built once ("1.1" -> b" HTTP/1.1\r\n").
_VERSION_TAILS: Final = {v: b" HTTP/%b\r\n" % v.encode() for v in ("1.0", "1.1")}


def request_line(ex: Exchange[TagT]) -> bytes:
    tail = _VERSION_TAILS.get(ex.version) or b" HTTP/%b\r\n" % ex.version.encode()
    return b"%b %b%b" % (ex.method, ex.target, tail)


class HeaderKinds:
    """A component's header name -> kind table, looked up by the client's own spelling.

    A client sends the same few spellings ("Host", "host") on every request, so the hot path does
    one dict lookup per header instead of a ``lower()`` and a lookup. The spellings learnt are
    bounded, so that a client inventing names cannot grow the table; past the bound a new
    spelling is looked up the slow way each time.
    """

    __slots__ = ("_kinds", "_max", "_prefixes", "spellings")

    def __init__(
        self,
        kinds: Mapping[bytes, int],
        *,
        prefixes: Mapping[bytes, int] | None = None,
        max_spellings: int = 4096,
    ) -> None:
        self._kinds = dict.fromkeys(_NOT_FORWARDED, DROP)
        self._kinds.update(kinds)
        self._prefixes = tuple((prefixes or {}).items())
        self._max = max_spellings
        self.spellings: dict[bytes, int] = {}

    def __repr__(self) -> str:
        return f"<HeaderKinds kinds={len(self._kinds)} spellings={len(self.spellings)}>"

    def learn(self, name: bytes) -> int:
        """The kind of a name not seen in this spelling yet; remembered if there is room."""
        lower = name.lower()
        kind = self._kinds.get(lower)
        if kind is None:
            kind = next((k for prefix, k in self._prefixes if lower.startswith(prefix)), PASS)
        if len(self.spellings) < self._max:
            self.spellings[name] = kind
        return kind


def drop_listed(out: list[bytes], drop: list[bytes]) -> None:
    """Remove, in place, the header lines whose names ``Connection`` listed (after line 0)."""
    if drop:
        out[1:] = [line for line in out[1:] if line.split(b":", 1)[0].lower() not in drop]


def finish_head(
    out: list[bytes],
    ex: Exchange[TagT],
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
    remote = ex.conn.remote.encode()
    out.append(b"X-Forwarded-For: %b\r\n" % (xff + b", " + remote if xff else remote))
    if ex.chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if ex.upgrade:
        out.append(b"Connection: Upgrade\r\nUpgrade: %b\r\n" % (ex.header(b"upgrade") or b""))
    if tracing is not None:
        span = tracing.start_remote_child(span_name, traceparent, tracestate)
        ex.span = span
        for name, value in tracing.headers(span):
            out.append(b"%b: %b\r\n" % (name, value))
    elif traceparent is not None:
        out.append(b"traceparent: %b\r\n" % traceparent)
        if tracestate is not None:
            out.append(b"tracestate: %b\r\n" % tracestate)
    if terminate:
        out.append(b"\r\n")
    return b"".join(out)


# Names ``Connection`` cannot make hop-by-hop: the message's own routing and framing. Go's
# ReverseProxy cannot drop them either (Host, Content-Length and Transfer-Encoding live outside
# its Header map); here a client's ``Connection: Host`` would delete the Host line, and a
# ``Connection: Content-Length`` would send a body with no length, so that the next hop read
# the body as the next request. RFC 9110 section 7.6.1 forbids listing end-to-end fields.
_NOT_HOP_BY_HOP: Final = frozenset({b"host", b"content-length", b"transfer-encoding"})


def connection_tokens(value: bytes) -> list[bytes]:
    """The lower-case header names a ``Connection`` header lists, less the end-to-end ones
    it may not remove (``_NOT_HOP_BY_HOP``)."""
    tokens = [t.strip().lower() for t in value.split(b",")]
    return [t for t in tokens if t not in _NOT_HOP_BY_HOP]

"""HTTP/1.1 bytes the proxy writes itself, precomputed where the hot path needs them."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

# Hop-by-hop headers a proxy must not forward (RFC 9110 section 7.6.1), as Go's
# httputil.ReverseProxy removes them. Lower-case, as compared.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

CRLF: Final = b"\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one chunk of a chunked body (RFC 9112 section 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("latin-1")
    except ValueError:
        return b"Unknown"


def simple_response(
    status: int,
    body: bytes = b"",
    *,
    keep_alive: bool = True,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    content_type: bytes = b"text/plain; charset=utf-8",
) -> bytes:
    """A complete response the proxy answers by itself (probes, errors).

    Error bodies end with a newline, as Go's ``http.Error`` writes them, so that a client
    printing them gets a tidy line.
    """
    lines = [b"HTTP/1.1 %d %b\r\n" % (status, reason(status))]
    if body or status >= 400:
        lines.append(b"Content-Type: %b\r\n" % content_type)
    lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.extend(b"%b: %b\r\n" % (name, value) for name, value in headers)
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(CRLF)
    lines.append(body)
    return b"".join(lines)


def error_body(message: str) -> bytes:
    return message.encode("utf-8", "replace") + b"\n"

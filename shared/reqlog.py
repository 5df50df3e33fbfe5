"""Per-request log lines rendered from Knative's request log template.

Knative's queue-proxy executes SERVING_REQUEST_LOG_TEMPLATE, a Go text/template, once per
request (pkg/http/request_log.go) and writes the result as one line to stdout. knpy renders
the subset Knative documents, compiled once at start into literals and field slots, so a
log call is one ``str.format`` and one write:

* fields: ``.Request.Method``, ``.Request.RequestURI``, ``.Request.ContentLength``,
  ``.Request.UserAgent``, ``.Request.RemoteAddr``, ``.Request.Referer``, ``.Request.Proto``,
  ``.Request.Host``, ``.Response.Code``, ``.Response.Size``, ``.Response.Latency``,
  ``.Revision.Name|Namespace|Service|Configuration|PodName|PodIP``, ``.TraceID``;
* the ``js`` function, as ``{{js .X}}`` or ``{{.X | js}}`` (Go's JSEscapeString);
* ``{{- ... -}}`` whitespace trimming and ``{{/* comments */}}``.

Anything else (other functions, ``if``/``range``, variables) is rejected at start with a
ConfigError naming SERVING_REQUEST_LOG_TEMPLATE, instead of Go's per-request
"Invalid request log template" line.

Two deliberate departures from Go, both so that the default (JSON) template stays JSON for
any input: ``js`` writes an apostrophe as ``\\u0027`` rather than ``\\'`` (not a JSON
escape), and a non-printable character beyond U+FFFF as a UTF-16 surrogate pair rather
than Go's 5-hex-digit ``\\uXXXXX``. And ``trace_id_from_headers`` keeps only a well-formed
hex trace ID, where Knative's ExtractTraceID copies the header verbatim into an unescaped
``{{.TraceID}}``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from shared.envconfig import ConfigError

if TYPE_CHECKING:
    from shared.proxy.exchange import Exchange

__all__ = [
    "RequestLogRevision",
    "RequestLogger",
    "js_escape",
    "trace_id_from_headers",
]

TEMPLATE_ENV = "SERVING_REQUEST_LOG_TEMPLATE"


@dataclass(frozen=True, slots=True)
class RequestLogRevision:
    """The revision identity a template can print (Knative's RequestLogRevision)."""

    name: str
    namespace: str
    service: str
    configuration: str
    pod_name: str
    pod_ip: str


# Per-request fields, in the order RequestLogger.log passes them to str.format.
_REQUEST_FIELDS = (
    ".Request.Method",
    ".Request.RequestURI",
    ".Request.ContentLength",
    ".Request.UserAgent",
    ".Request.RemoteAddr",
    ".Request.Referer",
    ".Request.Proto",
    ".Request.Host",
    ".Response.Code",
    ".Response.Size",
    ".Response.Latency",
    ".TraceID",
)
_SLOT = {field: i for i, field in enumerate(_REQUEST_FIELDS)}
_REVISION_FIELDS = {
    ".Revision.Name": "name",
    ".Revision.Namespace": "namespace",
    ".Revision.Service": "service",
    ".Revision.Configuration": "configuration",
    ".Revision.PodName": "pod_name",
    ".Revision.PodIP": "pod_ip",
}

_ACTION = re.compile(r"{{(.*?)}}", re.DOTALL)
_FIELD = r"(\.[A-Za-z]+(?:\.[A-Za-z]+)*)"
_PLAIN = re.compile(_FIELD)
_JS_CALL = re.compile(r"js\s+" + _FIELD)
_JS_PIPE = re.compile(_FIELD + r"\s*\|\s*js")
_COMMENT = re.compile(r"/\*.*\*/", re.DOTALL)

# Go's JSEscape: these ASCII characters, control characters, and non-ASCII to check.
_JS_SPECIAL = re.compile("[\\\\'\"<>&=\x00-\x1f\x80-\U0010ffff]")
_JS_ASCII = {
    "\\": "\\\\",
    "'": "\\u0027",  # Go writes \' which JSON rejects; \u0027 is valid in both.
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
} | {chr(c): f"\\u{c:04X}" for c in range(0x20)}


def _js_char(match: re.Match[str]) -> str:
    c = match.group()
    escaped = _JS_ASCII.get(c)
    if escaped is not None:
        return escaped
    if c.isprintable():  # Go's unicode.IsPrint: same categories (L, M, N, P, S, ' ').
        return c
    code = ord(c)
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04X}"


def js_escape(value: str) -> str:
    """Go's template.JSEscapeString, but emitting only escapes that JSON also accepts."""
    return _JS_SPECIAL.sub(_js_char, value)


def _go_float(value: float) -> str:
    """Go's ``%v`` for a float64: shortest repr, integral values without ".0"."""
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


_TRACE_ID = re.compile(rb"[0-9a-f]{32}|[0-9a-f]{16}")


def trace_id_from_headers(traceparent: bytes | None, b3_trace_id: bytes | None) -> str:
    """The trace ID for ``{{.TraceID}}``: W3C traceparent first, then B3 (Knative's order).

    Like Knative's ExtractTraceID (pkg/http/trace.go), but a value that is not a hex trace
    ID yields "" instead of being copied into the log line.
    """
    if traceparent:
        parts = traceparent.split(b"-", 2)
        if len(parts) >= 2 and _TRACE_ID.fullmatch(parts[1]):
            return parts[1].decode("ascii")
    if b3_trace_id and _TRACE_ID.fullmatch(b3_trace_id.lower()):
        return b3_trace_id.lower().decode("ascii")
    return ""


def _trim(text: str, left: bool, right: bool) -> str:
    # Go trims ASCII white space only.
    if left:
        text = text.lstrip(" \t\r\n")
    if right:
        text = text.rstrip(" \t\r\n")
    return text


def _compile(
    template: str, revision: RequestLogRevision
) -> tuple[str, tuple[tuple[int, bool], ...]]:
    """A str.format pattern with one "{}" per request field, and per "{}": (field, js)."""
    pieces: list[str] = []
    slots: list[tuple[int, bool]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(template):
        action = match.group(1)
        trim_prev = action[:2] in ("- ", "-\t", "-\n", "-\r")
        trim_after = action[-2:] in (" -", "\t-", "\n-", "\r-")
        text = template[pos : match.start()]
        pieces.append(_trim(text, trim_next, trim_prev).replace("{", "{{").replace("}", "}}"))
        pos, trim_next = match.end(), trim_after
        body = action[1 if trim_prev else 0 : len(action) - 1 if trim_after else None].strip()
        if _COMMENT.fullmatch(body):
            continue
        field, js = body, False
        for pattern in (_JS_CALL, _JS_PIPE):
            if m := pattern.fullmatch(body):
                field, js = m.group(1), True
        if not _PLAIN.fullmatch(field):
            raise ConfigError(TEMPLATE_ENV, f"unsupported action {match.group()!r}")
        if field in _REVISION_FIELDS:
            value = getattr(revision, _REVISION_FIELDS[field])
            pieces.append(js_escape(value) if js else value)
        elif field in _SLOT:
            pieces.append("{}")
            slots.append((_SLOT[field], js))
        else:
            raise ConfigError(TEMPLATE_ENV, f"unsupported field {field!r} in {match.group()!r}")
    rest = template[pos:]
    if "{{" in rest:
        raise ConfigError(TEMPLATE_ENV, "unclosed action: '{{' without '}}'")
    pieces.append(_trim(rest, trim_next, False).replace("{", "{{").replace("}", "}}"))
    return "".join(pieces), tuple(slots)


class RequestLogSettings(Protocol):
    """The request-log fields of shared.observability.ObservabilityConfig."""

    @property
    def enable_request_log(self) -> bool: ...
    @property
    def request_log_template(self) -> str: ...
    @property
    def enable_probe_request_log(self) -> bool: ...


class RequestLogger:
    """Writes one rendered template line per request, as Knative's RequestLogHandler does."""

    __slots__ = ("_pattern", "_slots", "_stream", "log_probes", "template")

    def __init__(
        self,
        template: str,
        revision: RequestLogRevision,
        *,
        stream: TextIO | None = None,
        enable_probe_request_log: bool = False,
    ) -> None:
        """Compiles ``template`` once.

        Raises:
            ConfigError: the template is empty or uses an unsupported action; the message
                names SERVING_REQUEST_LOG_TEMPLATE.
        """
        if not template:
            raise ConfigError(TEMPLATE_ENV, "must be set when request logging is enabled")
        # Knative appends a newline so that log backends can split entries.
        self.template = template if template.endswith("\n") else template + "\n"
        self._pattern, self._slots = _compile(self.template, revision)
        self._stream = sys.stdout if stream is None else stream
        self.log_probes = enable_probe_request_log

    @classmethod
    def from_config(
        cls,
        cfg: RequestLogSettings,
        revision: RequestLogRevision,
        *,
        stream: TextIO | None = None,
    ) -> RequestLogger | None:
        """The logger the config asks for, or None when request logging is off."""
        if not cfg.enable_request_log:
            return None
        return cls(
            cfg.request_log_template,
            revision,
            stream=stream,
            enable_probe_request_log=cfg.enable_probe_request_log,
        )

    def log(
        self,
        *,
        method: str,
        uri: str,
        proto: str,
        host: str,
        remote_addr: str,
        user_agent: str,
        referer: str,
        content_length: int,
        status: int,
        response_size: int,
        latency_s: float,
        trace_id: str,
        probe: bool = False,
    ) -> None:
        """Writes the line for one finished request.

        ``content_length`` is -1 when unknown (chunked), as Go's Request.ContentLength.
        Probe requests are skipped unless probe logging is enabled (Knative's
        enable-probe-request-log).
        """
        if probe and not self.log_probes:
            return
        fields = (
            method,
            uri,
            str(content_length),
            user_agent,
            remote_addr,
            referer,
            proto,
            host,
            str(status),
            str(response_size),
            _go_float(latency_s),
            trace_id,
        )
        line = self._pattern.format(
            *[js_escape(fields[i]) if js else fields[i] for i, js in self._slots]
        )
        try:
            # One write per line (Knative buffers the expansion, then writes it whole), and
            # a flush so lines reach the container log as they happen.
            self._stream.write(line)
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken log stream must not fail the request (Knative ignores
            # write errors too).
            pass

    def log_exchange(
        self, ex: Exchange[Any], status: int, latency_s: float, *, probe: bool = False
    ) -> None:
        """The line for a finished proxied request, read from its exchange (the queue-proxy's
        and the activator's RequestLogHandler alike)."""
        span = ex.span
        if span is not None:
            trace_id = f"{span.get_span_context().trace_id:032x}"
        else:
            # As Knative: the trace the caller sent, when this hop itself is not tracing.
            trace_id = trace_id_from_headers(ex.header(b"traceparent"), ex.header(b"x-b3-traceid"))
        self.log(
            method=ex.method.decode("latin-1"),
            uri=ex.target.decode("latin-1"),
            proto="HTTP/" + ex.version,
            host=(ex.header(b"host") or b"").decode("latin-1"),
            remote_addr=ex.conn.remote,
            user_agent=(ex.header(b"user-agent") or b"").decode("latin-1"),
            referer=(ex.header(b"referer") or b"").decode("latin-1"),
            content_length=ex.request_bytes,
            status=status,
            response_size=ex.response_bytes,
            latency_s=latency_s,
            trace_id=trace_id,
            probe=probe,
        )

    def __repr__(self) -> str:
        return f"RequestLogger(template={self.template!r}, log_probes={self.log_probes})"

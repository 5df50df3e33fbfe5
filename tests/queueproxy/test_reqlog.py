from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pytest

from shared.envconfig import ConfigError
from shared.observability import DEFAULT_REQUEST_LOG_TEMPLATE
from shared.reqlog import (
    RequestLogger,
    RequestLogRevision,
    js_escape,
    trace_id_from_headers,
)

REVISION = RequestLogRevision(
    name="hello-00001",
    namespace="default",
    service="hello",
    configuration="hello-cfg",
    pod_name="hello-00001-deployment-abc",
    pod_ip="10.0.0.7",
)

REQUEST: dict[str, Any] = {
    "method": "GET",
    "uri": "/path?q=1",
    "proto": "HTTP/1.1",
    "host": "hello.default.example.com",
    "remote_addr": "10.0.0.1:53422",
    "user_agent": "curl/8.0",
    "referer": "",
    "content_length": 0,
    "status": 200,
    "response_size": 12,
    "latency_s": 0.0123,
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
}


def _render(template: str, **overrides: Any) -> str:
    out = io.StringIO()
    RequestLogger(template, REVISION, stream=out).log(**{**REQUEST, **overrides})
    return out.getvalue()


def test_default_template_matches_knative_output() -> None:
    assert _render(DEFAULT_REQUEST_LOG_TEMPLATE) == (
        '{"httpRequest": {"requestMethod": "GET", "requestUrl": "/path?q\\u003D1", '
        '"requestSize": "0", "status": 200, "responseSize": "12", "userAgent": "curl/8.0", '
        '"remoteIp": "10.0.0.1:53422", "serverIp": "10.0.0.7", "referer": "", '
        '"latency": "0.0123s", "protocol": "HTTP/1.1"}, '
        '"traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}\n'
    )


HOSTILE = [
    pytest.param('a"b', id="double-quote"),
    pytest.param("it's", id="apostrophe"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("line1\nline2\r\t\x00\x1b", id="control-characters"),
    pytest.param("</script><b>&=", id="html"),
    pytest.param("naïve 日本語 😀", id="unicode"),
    pytest.param("\u2028\u2029\u200b\ufeff", id="unicode-separators-and-format"),
    pytest.param("\U000e0001\ud800", id="non-printable-astral-and-lone-surrogate"),
    pytest.param('"},"injected":{"x":"', id="json-injection"),
]


@pytest.mark.parametrize("value", HOSTILE)
def test_default_template_is_json_for_hostile_input(value: str) -> None:
    line = _render(
        DEFAULT_REQUEST_LOG_TEMPLATE,
        uri="/" + value,
        user_agent=value,
        referer=value,
        remote_addr=value,
        trace_id=trace_id_from_headers(value.encode("utf-8", "surrogatepass"), None),
    )
    assert line.endswith("}\n")
    assert line.count("\n") == 1
    doc = json.loads(line)
    assert doc["httpRequest"]["userAgent"] == value
    assert doc["httpRequest"]["referer"] == value
    assert doc["httpRequest"]["requestUrl"] == "/" + value
    assert doc["traceId"] == ""


@pytest.mark.parametrize(
    ("value", "want"),
    [
        pytest.param("plain", "plain", id="fast-path"),
        pytest.param("\\'\"<>&=", '\\\\\\u0027\\"\\u003C\\u003E\\u0026\\u003D', id="ascii"),
        pytest.param("\x00\x1f\x7f", "\\u0000\\u001F\x7f", id="controls-del-kept"),
        pytest.param("é😀", "é😀", id="printable-unicode-kept"),
        pytest.param("\u0085\u200b", "\\u0085\\u200B", id="non-printable-bmp"),
        pytest.param("\U000e0001", "\\uDB40\\uDC01", id="non-printable-astral-surrogates"),
    ],
)
def test_js_escape(value: str, want: str) -> None:
    assert js_escape(value) == want


@pytest.mark.parametrize(
    ("template", "overrides", "want"),
    [
        pytest.param("{{.Request.Method}}", {}, "GET\n", id="newline-appended"),
        pytest.param("x\n", {}, "x\n", id="newline-kept"),
        pytest.param(
            "{{.Revision.Name}} {{.Revision.Namespace}} {{.Revision.Service}} "
            "{{.Revision.Configuration}} {{.Revision.PodName}} {{.Revision.PodIP}}",
            {},
            "hello-00001 default hello hello-cfg hello-00001-deployment-abc 10.0.0.7\n",
            id="revision-fields",
        ),
        pytest.param(
            "{{.Request.Host}} {{.Request.RequestURI}} {{.Request.ContentLength}} "
            "{{.Request.Proto}} {{.Response.Code}} {{.Response.Size}}",
            {"content_length": -1, "uri": "/a b"},
            "hello.default.example.com /a b -1 HTTP/1.1 200 12\n",
            id="request-fields",
        ),
        pytest.param(
            "{{ js .Request.UserAgent }}|{{.Request.UserAgent | js}}|{{.Request.UserAgent}}",
            {"user_agent": "a'b"},
            "a\\u0027b|a\\u0027b|a'b\n",
            id="js-call-pipe-and-raw",
        ),
        pytest.param(
            "{{.Request.Method}}{{.Request.Method}}{{.Response.Code}}",
            {},
            "GETGET200\n",
            id="field-repeated",
        ),
        pytest.param("{a} {{.Response.Code}} {}", {}, "{a} 200 {}\n", id="literal-braces"),
        pytest.param("a  {{- .Response.Code -}}  \n b", {}, "a200b\n", id="trim-markers"),
        pytest.param("a{{/* note */}}b", {}, "ab\n", id="comment"),
        pytest.param("{{.Response.Latency}}", {"latency_s": 1.0}, "1\n", id="latency-integral"),
        pytest.param("{{.Response.Latency}}", {"latency_s": 0.5}, "0.5\n", id="latency-half"),
        pytest.param(
            "{{.Response.Latency}}", {"latency_s": 4.2e-05}, "4.2e-05\n", id="latency-tiny"
        ),
        pytest.param(
            "{{js .Revision.Name}}",
            {},
            "hello-00001\n",
            id="js-on-static-field",
        ),
    ],
)
def test_template_rendering(template: str, overrides: dict[str, Any], want: str) -> None:
    assert _render(template, **overrides) == want


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("{{.Request.Header}}", id="unknown-field"),
        pytest.param('{{printf "%s" .Request.Method}}', id="other-function"),
        pytest.param("{{if .TraceID}}x{{end}}", id="control-flow"),
        pytest.param("{{html .Request.UserAgent}}", id="html-function"),
        pytest.param("{{$x := 1}}", id="variable"),
        pytest.param("{{.Request.Method", id="unclosed"),
        pytest.param("", id="empty"),
    ],
)
def test_unsupported_templates_fail_at_start(template: str) -> None:
    with pytest.raises(ConfigError, match=r"^SERVING_REQUEST_LOG_TEMPLATE: "):
        RequestLogger(template, REVISION)


@pytest.mark.parametrize(
    ("probe", "log_probes", "want_lines"),
    [
        pytest.param(False, False, 1, id="request"),
        pytest.param(True, False, 0, id="probe-skipped"),
        pytest.param(True, True, 1, id="probe-logged-when-enabled"),
    ],
)
def test_probe_requests(probe: bool, log_probes: bool, want_lines: int) -> None:
    out = io.StringIO()
    logger = RequestLogger(
        "{{.Response.Code}}", REVISION, stream=out, enable_probe_request_log=log_probes
    )
    logger.log(**REQUEST, probe=probe)
    assert out.getvalue().count("\n") == want_lines


@dataclass(frozen=True)
class Settings:
    enable_request_log: bool
    request_log_template: str = DEFAULT_REQUEST_LOG_TEMPLATE
    enable_probe_request_log: bool = False


def test_from_config() -> None:
    assert RequestLogger.from_config(Settings(enable_request_log=False), REVISION) is None
    logger = RequestLogger.from_config(
        Settings(enable_request_log=True, enable_probe_request_log=True), REVISION
    )
    assert logger is not None
    assert logger.log_probes
    with pytest.raises(ConfigError, match="SERVING_REQUEST_LOG_TEMPLATE"):
        RequestLogger.from_config(
            Settings(enable_request_log=True, request_log_template=""), REVISION
        )


def test_closed_stream_does_not_fail_the_request() -> None:
    out = io.StringIO()
    logger = RequestLogger("{{.Response.Code}}", REVISION, stream=out)
    out.close()
    logger.log(**REQUEST)


def test_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    RequestLogger("{{.Response.Code}}", REVISION).log(**REQUEST)
    assert capsys.readouterr().out == "200\n"


@pytest.mark.parametrize(
    ("traceparent", "b3", "want"),
    [
        pytest.param(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
            "4bf92f3577b34da6a3ce929d0e0e4736",
            id="w3c",
        ),
        pytest.param(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"80f198ee56343ba864fe8b2a57d3eff7",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            id="w3c-before-b3",
        ),
        pytest.param(None, b"80F198EE56343BA8", "80f198ee56343ba8", id="b3-64-bit"),
        pytest.param(b"garbage", b"80f198ee56343ba8", "80f198ee56343ba8", id="bad-w3c-then-b3"),
        pytest.param(b'00-"x"-y-01', None, "", id="hostile-w3c"),
        pytest.param(None, None, "", id="none"),
    ],
)
def test_trace_id_from_headers(traceparent: bytes | None, b3: bytes | None, want: str) -> None:
    assert trace_id_from_headers(traceparent, b3) == want


def test_repr() -> None:
    assert repr(RequestLogger("x", REVISION)) == "RequestLogger(template='x\\n', log_probes=False)"


def test_from_observability_config() -> None:
    from shared.observability import ObservabilityConfig

    out = io.StringIO()
    logger = RequestLogger.from_config(
        ObservabilityConfig(enable_request_log=True), REVISION, stream=out
    )
    assert logger is not None
    logger.log(**REQUEST)
    assert json.loads(out.getvalue())["httpRequest"]["status"] == 200

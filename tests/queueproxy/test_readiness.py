from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from queueproxy.readiness import (
    PROBE_USER_AGENT,
    HTTPGetAction,
    Probe,
    ReadinessProber,
    TCPSocketAction,
    parse_probes,
)
from shared.envconfig import ConfigError
from shared.ports import free_port

HOST = "127.0.0.1"


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        pytest.param("", (Probe(TCPSocketAction(HOST, 8080)),), id="empty-is-default-tcp"),
        pytest.param(
            '{"tcpSocket":{"port":"8090","host":"127.0.0.2"},"successThreshold":1}',
            (Probe(TCPSocketAction("127.0.0.2", 8090)),),
            id="knative-encoding",
        ),
        pytest.param(
            '{"tcpSocket":{"port":"http"}}',
            (Probe(TCPSocketAction(HOST, 8080)),),
            id="named-port-is-user-port",
        ),
        pytest.param(
            '[{"tcpSocket":{"port":8080}},{"tcpSocket":{"port":8090}}]',
            (Probe(TCPSocketAction(HOST, 8080)), Probe(TCPSocketAction(HOST, 8090))),
            id="multi-container-list",
        ),
        pytest.param(
            '{"httpGet":{"path":"healthz","port":9000,"scheme":"HTTPS",'
            '"httpHeaders":[{"name":"X-A","value":"b"}]},"periodSeconds":5,'
            '"timeoutSeconds":3,"successThreshold":2,"failureThreshold":4}',
            (
                Probe(
                    HTTPGetAction(HOST, 9000, "/healthz", "HTTPS", (("X-A", "b"),)),
                    period_s=5,
                    timeout_s=3.0,
                    success_threshold=2,
                    failure_threshold=4,
                ),
            ),
            id="http-all-fields",
        ),
        pytest.param(
            '{"httpGet":{}, "periodSeconds":10}',
            (Probe(HTTPGetAction(HOST, 8080, "/", "HTTP", ()), period_s=10, timeout_s=1.0),),
            id="http-defaults-and-timeout-at-least-1s",
        ),
        pytest.param(
            '{"exec":{"command":["true"]},"periodSeconds":0}',
            (Probe(TCPSocketAction(HOST, 8080)),),
            id="exec-becomes-tcp",
        ),
    ],
)
def test_parse_probes(spec: str, want: tuple[Probe, ...]) -> None:
    assert parse_probes(spec, HOST, 8080) == want


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        pytest.param("{not json", "invalid JSON", id="invalid-json"),
        pytest.param('"wrongProbeObject"', "must be a JSON object", id="not-an-object"),
        pytest.param("{}", "no probe handler", id="no-handler"),
        pytest.param('{"grpc":{"port":9000}}', "gRPC", id="grpc"),
        pytest.param('{"tcpSocket":{"port":70000}}', "port", id="bad-port"),
        pytest.param('{"httpGet":{"scheme":"FTP"}}', "scheme", id="bad-scheme"),
        pytest.param('{"tcpSocket":{},"periodSeconds":-1}', "periodSeconds", id="negative"),
        pytest.param(
            '{"httpGet":{"httpHeaders":[{"name":"A","value":"x\\r\\nB: y"}]}}',
            "line breaks",
            id="header-injection",
        ),
    ],
)
def test_parse_errors_name_the_variable(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=f"^SERVING_READINESS_PROBE: .*{match}"):
        ReadinessProber(spec, HOST, 8080)
    with pytest.raises(ConfigError):
        parse_probes(spec, HOST, 8080)


class HTTPApp:
    """A raw HTTP/1.1 server on 127.0.0.1 answering with status(n) for request n (1-based)."""

    def __init__(self, status: Callable[[int], int], delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.requests: list[bytes] = []
        self.handlers: set[asyncio.Task[object]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._respond(reader, writer)
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        code = self.status(len(self.requests))
        await asyncio.sleep(self.delay_s)
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % code)
        await writer.drain()


@asynccontextmanager
async def http_app(app: HTTPApp) -> AsyncIterator[int]:
    server = await asyncio.start_server(app.handle, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in app.handlers:
            task.cancel()
        await asyncio.gather(*app.handlers, return_exceptions=True)
        await server.wait_closed()


def _http_spec(port: int, period_s: int = 0, success: int = 1, **extra: object) -> str:
    spec: dict[str, object] = {
        "httpGet": {"host": HOST, "port": port, "path": "/ready", **extra},
        "periodSeconds": period_s,
        "successThreshold": success,
    }
    return json.dumps(spec)


@pytest.mark.parametrize(
    ("status", "want"),
    [
        pytest.param(200, True, id="200"),
        pytest.param(302, True, id="302"),
        pytest.param(399, True, id="399"),
        pytest.param(400, False, id="400"),
        pytest.param(500, False, id="500"),
        pytest.param(199, False, id="199"),
    ],
)
async def test_http_status_decides_single_check(status: int, want: bool) -> None:
    app = HTTPApp(lambda n: status)
    async with http_app(app) as port:
        prober = ReadinessProber(_http_spec(port, period_s=1), HOST, port)
        assert await prober.probe() is want
    assert len(app.requests) == 1
    assert (prober.last_error is None) is want


async def test_http_probe_sends_knative_headers() -> None:
    app = HTTPApp(lambda n: 200)
    async with http_app(app) as port:
        spec = _http_spec(port, period_s=1, httpHeaders=[{"name": "Test-Key", "value": "v"}])
        assert await ReadinessProber(spec, HOST, port).probe()
    head = app.requests[0].decode()
    assert head.startswith("GET /ready HTTP/1.1\r\n")
    assert f"\r\nHost: {HOST}:{port}\r\n" in head
    assert f"\r\nUser-Agent: {PROBE_USER_AGENT}\r\n" in head
    assert "\r\nTest-Key: v\r\n" in head


async def test_aggressive_http_retries_until_ready() -> None:
    start = time.monotonic()
    app = HTTPApp(lambda n: 200 if time.monotonic() - start > 0.3 else 503)
    async with http_app(app) as port:
        prober = ReadinessProber(_http_spec(port), HOST, port)
        assert await prober.probe()
    # Every 50 ms for ~300 ms: about six attempts, at least three.
    assert 3 <= len(app.requests) <= 12


async def test_aggressive_tcp_succeeds_once_the_app_listens() -> None:
    port = free_port()
    prober = ReadinessProber(json.dumps({"tcpSocket": {"port": port}}), HOST, port)
    probing = asyncio.create_task(prober.probe())
    await asyncio.sleep(0.2)
    assert not probing.done()
    server = await asyncio.start_server(lambda r, w: w.close(), HOST, port)
    async with server:
        assert await asyncio.wait_for(probing, 2)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param('{"tcpSocket":{}}', id="tcp"),
        pytest.param('{"httpGet":{}}', id="http"),
        pytest.param("", id="default"),
    ],
)
async def test_aggressive_probe_of_refusing_port_fails_after_poll_timeout(spec: str) -> None:
    prober = ReadinessProber(spec, HOST, free_port(), poll_timeout_s=0.2)
    start = time.monotonic()
    assert not await prober.probe()
    assert 0.15 <= time.monotonic() - start < 1.0
    assert prober.last_error is not None
    assert "aggressive probe error (failed" in prober.last_error


async def test_aggressive_probe_of_500_fails() -> None:
    app = HTTPApp(lambda n: 500)
    async with http_app(app) as port:
        prober = ReadinessProber(_http_spec(port), HOST, port, poll_timeout_s=0.2)
        assert not await prober.probe()
    assert prober.last_error is not None
    assert "got status code: 500" in prober.last_error


# Knative's TestKnHTTPSuccessWithThreshold and ...WithThresholdAndFailure.
@pytest.mark.parametrize(
    ("status", "threshold", "min_requests"),
    [
        pytest.param(lambda n: 200, 3, 3, id="threshold-3"),
        pytest.param(lambda n: 400 if n == 2 else 200, 3, 5, id="failure-resets-count"),
    ],
)
async def test_success_threshold_counts_consecutive_successes(
    status: Callable[[int], int], threshold: int, min_requests: int
) -> None:
    app = HTTPApp(status)
    async with http_app(app) as port:
        assert await ReadinessProber(_http_spec(port, success=threshold), HOST, port).probe()
    assert len(app.requests) >= min_requests


async def test_single_check_honours_timeout_seconds() -> None:
    app = HTTPApp(lambda n: 200, delay_s=3)
    async with http_app(app) as port:
        prober = ReadinessProber(_http_spec(port, period_s=1), HOST, port)
        start = time.monotonic()
        assert not await prober.probe()
        # timeoutSeconds 0 with periodSeconds > 0 becomes Knative's 1 s.
        assert 0.9 <= time.monotonic() - start < 2.0


async def test_aggressive_check_times_out_after_100ms() -> None:
    app = HTTPApp(lambda n: 200, delay_s=1)
    async with http_app(app) as port:
        prober = ReadinessProber(_http_spec(port), HOST, port, poll_timeout_s=0.05)
        assert not await prober.probe()


async def test_concurrent_callers_share_one_round() -> None:
    app = HTTPApp(lambda n: 200, delay_s=0.1)
    async with http_app(app) as port:
        prober = ReadinessProber(_http_spec(port, period_s=1), HOST, port)
        assert await asyncio.gather(*(prober.probe() for _ in range(10))) == [True] * 10
        assert len(app.requests) == 1
        assert await prober.probe()
        assert len(app.requests) == 2


@pytest.mark.parametrize(
    ("second_status", "want"),
    [pytest.param(200, True, id="all-pass"), pytest.param(503, False, id="one-fails")],
)
async def test_multiple_probes_must_all_pass(second_status: int, want: bool) -> None:
    first, second = HTTPApp(lambda n: 200), HTTPApp(lambda n: second_status)
    async with http_app(first) as port1, http_app(second) as port2:
        spec = f"[{_http_spec(port1, period_s=1)},{_http_spec(port2, period_s=1)}]"
        assert await ReadinessProber(spec, HOST, port1).probe() is want
    assert len(first.requests) == len(second.requests) == 1


async def test_close_cancels_a_round_in_flight() -> None:
    prober = ReadinessProber('{"tcpSocket":{}}', HOST, free_port())
    waiter = asyncio.create_task(prober.probe())
    await asyncio.sleep(0.1)
    await prober.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await prober.close()


def test_repr() -> None:
    assert repr(ReadinessProber("", HOST, 8080)) == (
        "ReadinessProber([Probe(action=TCPSocketAction(host='127.0.0.1', port=8080), "
        "period_s=0, timeout_s=0.0, success_threshold=1, failure_threshold=0)])"
    )

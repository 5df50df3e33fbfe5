"""The harness of the queue-proxy integration tests: children, ports, raw HTTP, Stat decoding.

conftest.py turns these into fixtures; the tests import the helpers from here (a module name
of its own, so that it cannot clash with another directory's conftest on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
# Where the queue-proxy's code is imported from: the repository, or the compiled tree that
# tests/native/test_native_build.py runs these tests against (KNPY_NATIVE=1, setup.py).
CODE_ROOT = Path(os.environ.get("KNPY_TEST_CODE_ROOT") or REPO_ROOT)
SAMPLE_APP = REPO_ROOT / "examples" / "sampleapp" / "app.py"
LOOPBACK = "127.0.0.1"
# A child that has not opened its ports by then is broken, not slow: both start in < 1 s.
READY_TIMEOUT_S = 10.0
READY_POLL_INTERVAL_S = 0.05
# Bytes of a child's stderr quoted in a failure message.
STDERR_TAIL_BYTES = 4000
# Enough for every test here; a test that needs a bound of its own sets it.
CLIENT_TIMEOUT_S = 30.0
POD_NAME = "hello-00001-deployment-7d9f8-abcde"

KUBELET_PROBE_HEADERS = {"K-Kubelet-Probe": "queue"}
KUBELET_UA_HEADERS = {"User-Agent": "kube-probe/1.30"}


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    return free_port()


@dataclass
class Child:
    """One subprocess, with its stdout and stderr captured in files."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stderr_tail(self) -> str:
        return self.stderr()[-STDERR_TAIL_BYTES:]

    def describe(self) -> str:
        code = self.proc.poll()
        state = "running" if code is None else f"exited with {code}"
        return f"{self.name} (pid {self.pid}, {state}); stderr tail:\n{self.stderr_tail()}"

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown, as the kubelet does)."""
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    async def wait_exit(self, timeout_s: float) -> int | None:
        """The exit code, or None if the child still runs after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.02)
        return self.proc.poll()


@dataclass
class SampleApp:
    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass
class QueueProxy:
    child: Child
    env: dict[str, str]
    serving_port: int
    admin_port: int
    metrics_port: int
    user_metrics_port: int
    user_port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.serving_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}"

    @property
    def user_metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.user_metrics_port}"


@dataclass
class Stack:
    app: SampleApp
    qp: QueueProxy


StartApp = Callable[..., Awaitable[SampleApp]]
StartQueueProxy = Callable[..., Awaitable[QueueProxy]]
StartStack = Callable[..., Awaitable[Stack]]


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_listening(child: Child, ports: Mapping[str, int]) -> None:
    """Poll until every port accepts connections; fail with the child's stderr otherwise."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = dict(ports)
    while pending:
        if not child.alive():
            pytest.fail(f"{child.describe()}\nexited before listening on {pending}")
        for name, port in list(pending.items()):
            if await _port_open(port):
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{child.describe()}\nnot listening after {READY_TIMEOUT_S} s on {pending}")
        await asyncio.sleep(READY_POLL_INTERVAL_S)


def default_readiness_probe(app_port: int) -> str:
    return json.dumps({"httpGet": {"path": "/healthz", "port": app_port}, "periodSeconds": 0})


def periodic_readiness_probe(app_port: int) -> str:
    """A probe that asks the app once per kubelet probe (no aggressive retry loop)."""
    return json.dumps(
        {
            "httpGet": {"path": "/healthz", "port": app_port},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 1,
        }
    )


def queue_proxy_env(
    user_port: int,
    serving_port: int,
    admin_port: int,
    metrics_port: int,
    user_metrics_port: int,
) -> dict[str, str]:
    """Knative's env contract for one revision's pod, with knpy's extra ports."""
    return {
        "SERVING_NAMESPACE": "default",
        "SERVING_SERVICE": "hello",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_POD": POD_NAME,
        "SERVING_POD_IP": LOOPBACK,
        "QUEUE_SERVING_PORT": str(serving_port),
        "QUEUE_ADMIN_PORT": str(admin_port),
        "QUEUE_METRICS_PORT": str(metrics_port),
        "USER_METRICS_PORT": str(user_metrics_port),
        "USER_PORT": str(user_port),
        "QUEUE_BIND_HOST": LOOPBACK,
        "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_READINESS_PROBE": default_readiness_probe(user_port),
        "QUEUE_DRAIN_PERIOD_SECONDS": "1",
        "QUEUE_STATS_PERIOD_SECONDS": "1",
        "SERVING_ENABLE_REQUEST_LOG": "false",
    }


def slow_mode() -> bool:
    """KNPY_SLOW=1 runs the full-size form of the tests marked slow."""
    return os.environ.get("KNPY_SLOW", "") not in ("", "0")


# ---------------------------------------------------------------------------------------------
# Raw HTTP over a socket, for input aiohttp would refuse to send.


@dataclass
class RawResponse:
    status: int
    head: bytes
    body: bytes
    closed: bool  # the server closed the connection after this response

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


async def read_until_close(reader: asyncio.StreamReader, timeout_s: float) -> tuple[bytes, bool]:
    """Everything until EOF; closed=False if the peer still held the connection at timeout."""
    data = bytearray()
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(data), False
        try:
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
        except TimeoutError:
            return bytes(data), False
        except ConnectionResetError:
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk


def parse_raw(data: bytes, closed: bool) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise AssertionError(f"no HTTP response, got {data[:200]!r} (closed={closed})")
    return RawResponse(int(parts[1]), head, body, closed)


async def raw_exchange(port: int, payload: bytes, timeout_s: float = 3.0) -> RawResponse:
    """Send bytes as they are and read the response until the server closes or timeout_s."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(payload)
        await writer.drain()
        data, closed = await read_until_close(reader, timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return parse_raw(data, closed)


# ---------------------------------------------------------------------------------------------
# Probes, stats and metrics.


async def app_stats(session: aiohttp.ClientSession, app_url: str) -> dict[str, int]:
    """The sample app's own counters, read directly (not through the proxy)."""
    async with session.get(app_url + "/stats") as resp:
        stats: dict[str, int] = await resp.json()
    return stats


async def kubelet_probe(
    session: aiohttp.ClientSession,
    qp: QueueProxy,
    headers: Mapping[str, str] = KUBELET_PROBE_HEADERS,
    timeout_s: float = 12.0,
) -> int:
    async with session.get(
        qp.url + "/", headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as resp:
        await resp.read()
        return resp.status


async def poll_status(
    probe: Callable[[], Awaitable[int]], want: int, within_s: float, interval_s: float = 0.1
) -> list[int]:
    """Call probe until it returns want or within_s passes; returns every status seen."""
    seen: list[int] = []
    deadline = time.monotonic() + within_s
    while True:
        status = await probe()
        seen.append(status)
        if status == want or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(interval_s)


@dataclass(frozen=True)
class DecodedStat:
    pod_name: str = ""
    average_concurrent_requests: float = 0.0
    average_proxied_concurrent_requests: float = 0.0
    request_count: float = 0.0
    proxied_request_count: float = 0.0
    process_uptime: float = 0.0
    timestamp: int = 0


_DOUBLE_FIELDS = {
    2: "average_concurrent_requests",
    3: "average_proxied_concurrent_requests",
    4: "request_count",
    5: "proxied_request_count",
    6: "process_uptime",
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def wire_decode_stat(data: bytes) -> DecodedStat:
    """Knative's Stat from protobuf wire bytes, independent of shared.stat_proto (a cross-check)."""
    values: dict[str, Any] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            raw, pos = _varint(data, pos)
            if number == 7:
                values["timestamp"] = raw - (1 << 64) if raw >= 1 << 63 else raw
        elif wire_type == 1:
            (double,) = struct.unpack_from("<d", data, pos)
            pos += 8
            if number in _DOUBLE_FIELDS:
                values[_DOUBLE_FIELDS[number]] = double
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if number == 1:
                values["pod_name"] = data[pos : pos + length].decode()
            pos += length
        elif wire_type == 5:
            pos += 4
        else:
            raise AssertionError(f"unexpected wire type {wire_type} in Stat bytes {data!r}")
    return DecodedStat(**values)


def decode_stat(data: bytes) -> DecodedStat:
    """Decode with shared.stat_proto when it exists, and check it agrees with the wire decoder."""
    wire = wire_decode_stat(data)
    try:
        from shared.stat_proto import decode_stat as shared_decode
    except ImportError:
        return wire
    stat = shared_decode(data)
    for name in DecodedStat.__dataclass_fields__:
        assert getattr(stat, name) == getattr(wire, name), (name, stat, wire)
    return wire


async def fetch_stat(session: aiohttp.ClientSession, qp: QueueProxy) -> DecodedStat:
    async with session.get(
        qp.metrics_url + "/metrics", headers={"Accept": "application/protobuf"}
    ) as resp:
        body = await resp.read()
        assert resp.status == 200, (resp.status, body[:200])
    return decode_stat(body)

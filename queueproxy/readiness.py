"""Readiness probing of the user container, with Knative's queue-proxy semantics.

Theory of operation (pkg/queue/readiness/probe.go, pkg/queue/health/probe.go): the
queue-proxy, not the kubelet, probes the user container, so that a new pod turns ready as
soon as the app listens instead of on the kubelet's next period.

* SERVING_READINESS_PROBE holds a JSON corev1.Probe, or a JSON list of them when every
  container of a multi-container revision is probed (probe_encoding.go). Each probe is a
  ``tcpSocket`` (connect) or an ``httpGet`` (GET; 200-399 is ready). All probes run
  concurrently and all must pass.
* periodSeconds == 0 means Knative's aggressive probing: check at once, then every
  ``RETRY_INTERVAL_S`` (50 ms), each check bounded by ``AGGRESSIVE_PROBE_TIMEOUT_S``
  (100 ms), until ``successThreshold`` consecutive successes or ``POLL_TIMEOUT_S`` (10 s).
  The count of consecutive successes carries over between calls and any failure resets
  it, as Knative keeps it on the probe.
* periodSeconds > 0 means one check per call, bounded by timeoutSeconds. Thresholds are
  then the caller's business: in Kubernetes the kubelet applies success/failureThreshold
  to the queue-proxy's answers, and Knative's queue-proxy ignores them here. The local
  platform should do what the kubelet does.
* Concurrent calls share the check in flight (Knative's gateValue barrier), so a burst of
  kubelet and network probes costs the app one probe.

Also as Knative's controller (pkg/reconciler/revision/resources/queue.go,
applyReadinessProbeDefaults): an ``exec`` probe becomes a TCP probe of the user port (the
kubelet runs the exec probe itself), and timeoutSeconds < 1 becomes 1 when periodSeconds > 0.
An empty spec means Knative's default readiness probe: aggressive TCP to the user port.
gRPC probes are rejected at start: knpy does not ship a gRPC client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from shared.envconfig import ConfigError

__all__ = [
    "AGGRESSIVE_PROBE_TIMEOUT_S",
    "POLL_TIMEOUT_S",
    "PROBE_USER_AGENT",
    "RETRY_INTERVAL_S",
    "HTTPGetAction",
    "Probe",
    "ReadinessProber",
    "TCPSocketAction",
    "parse_probes",
]

_log = logging.getLogger(__name__)

PROBE_ENV = "SERVING_READINESS_PROBE"

# Knative's aggressiveProbeTimeout, PollTimeout and retryInterval (readiness/probe.go).
AGGRESSIVE_PROBE_TIMEOUT_S = 0.1
POLL_TIMEOUT_S = 10.0
RETRY_INTERVAL_S = 0.05

# Knative sends KubeProbeUAPrefix + KubeMajor + "/" + KubeMinor with both versions unset
# (health/probe.go), so apps that check for "kube-probe/" treat it as a kubelet probe.
PROBE_USER_AGENT = "kube-probe//"


@dataclass(frozen=True, slots=True)
class TCPSocketAction:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class HTTPGetAction:
    host: str
    port: int
    path: str
    scheme: Literal["HTTP", "HTTPS"]
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Probe:
    """One corev1.Probe, reduced to what the queue-proxy uses, with defaults applied."""

    action: TCPSocketAction | HTTPGetAction
    period_s: int = 0
    timeout_s: float = 0.0
    success_threshold: int = 1
    failure_threshold: int = 0

    @property
    def aggressive(self) -> bool:
        """Knative's shouldProbeAggressively."""
        return self.period_s == 0


def _bad(reason: str) -> ConfigError:
    return ConfigError(PROBE_ENV, reason)


def _int_field(obj: dict[str, object], key: str, default: int = 0) -> int:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"{key} must be a non-negative integer, got {value!r}")
    return value


def _object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object, got {value!r}")
    return value


def _port(action: dict[str, object], default_port: int) -> int:
    port = action.get("port")
    # An IntOrString; a named port cannot be resolved here, so it means the user port.
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return port
    if port is None or isinstance(port, str):
        return default_port
    raise _bad(f"port must be 1-65535 or a port name, got {port!r}")


def _host(action: dict[str, object], default_host: str) -> str:
    host = action.get("host") or default_host
    if not isinstance(host, str):
        raise _bad(f"host must be a string, got {host!r}")
    return host


def _http_action(raw: dict[str, object], host: str, port: int) -> HTTPGetAction:
    scheme = str(raw.get("scheme") or "HTTP").upper()
    if scheme not in ("HTTP", "HTTPS"):
        raise _bad(f"httpGet.scheme must be HTTP or HTTPS, got {scheme!r}")
    path = raw.get("path") or ""
    if not isinstance(path, str):
        raise _bad(f"httpGet.path must be a string, got {path!r}")
    headers: list[tuple[str, str]] = []
    items = raw.get("httpHeaders") or []
    if not isinstance(items, list):
        raise _bad(f"httpGet.httpHeaders must be a list, got {items!r}")
    for item in items:
        header = _object(item, "httpGet.httpHeaders[]")
        name, value = header.get("name"), header.get("value", "")
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise _bad(f"httpGet.httpHeaders[] needs a string name and value, got {header!r}")
        if "\r" in name + value or "\n" in name + value:
            raise _bad(f"httpGet.httpHeaders[] must not contain line breaks, got {header!r}")
        headers.append((name, value))
    return HTTPGetAction(
        host=host,
        port=port,
        # Knative builds the URL as "/" + TrimPrefix(path, "/").
        path="/" + path.removeprefix("/"),
        scheme="HTTPS" if scheme == "HTTPS" else "HTTP",
        headers=tuple(headers),
    )


def _parse_probe(raw: object, default_host: str, default_port: int) -> Probe:
    obj = _object(raw, "a probe")
    action: TCPSocketAction | HTTPGetAction
    if (http := obj.get("httpGet")) is not None:
        http_obj = _object(http, "httpGet")
        action = _http_action(
            http_obj, _host(http_obj, default_host), _port(http_obj, default_port)
        )
    elif (tcp := obj.get("tcpSocket")) is not None:
        tcp_obj = _object(tcp, "tcpSocket")
        action = TCPSocketAction(_host(tcp_obj, default_host), _port(tcp_obj, default_port))
    elif obj.get("exec") is not None:
        # The kubelet runs the exec probe in the user container; the queue-proxy checks
        # the port (Knative's applyReadinessProbeDefaults).
        action = TCPSocketAction(default_host, default_port)
    elif obj.get("grpc") is not None:
        raise _bad("gRPC probes are not supported by knpy's queue-proxy; use httpGet or tcpSocket")
    else:
        raise _bad(f"no probe handler (httpGet, tcpSocket or exec) in {obj!r}")
    period_s = _int_field(obj, "periodSeconds")
    timeout_s = float(_int_field(obj, "timeoutSeconds"))
    if period_s > 0 and timeout_s < 1:
        timeout_s = 1.0
    return Probe(
        action=action,
        period_s=period_s,
        timeout_s=timeout_s,
        success_threshold=_int_field(obj, "successThreshold", 1),
        failure_threshold=_int_field(obj, "failureThreshold"),
    )


def parse_probes(spec_json: str, default_host: str, default_port: int) -> tuple[Probe, ...]:
    """Decodes SERVING_READINESS_PROBE: one probe object or a list of them.

    Args:
        default_host, default_port: where a probe without host/port (or with a named
            port, or an exec probe) connects: the user container.

    Raises:
        ConfigError (a ValueError): invalid JSON or an unusable probe; the message names
            SERVING_READINESS_PROBE.
    """
    if not spec_json.strip():
        return (Probe(TCPSocketAction(default_host, default_port)),)
    try:
        decoded = json.loads(spec_json)
    except json.JSONDecodeError as e:
        raise _bad(f"invalid JSON: {e}") from None
    raws = decoded if isinstance(decoded, list) else [decoded]
    return tuple(_parse_probe(raw, default_host, default_port) for raw in raws)


class ProbeFailed(Exception):
    """One check's failure, with the reason Knative would log."""


async def _tcp_check(action: TCPSocketAction, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s or None):
            _, writer = await asyncio.open_connection(action.host, action.port)
    except (OSError, TimeoutError) as e:
        raise ProbeFailed(f"dial tcp {action.host}:{action.port}: {e!r}") from None
    writer.close()


def _insecure_tls() -> ssl.SSLContext:
    # Kubelet's HTTPS probes do not verify the certificate; neither do Knative's.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _http_request(action: HTTPGetAction) -> bytes:
    host = f"[{action.host}]" if ":" in action.host else action.host
    lines = [f"GET {action.path} HTTP/1.1", f"Host: {host}:{action.port}"]
    names = {name.lower() for name, _ in action.headers}
    if "user-agent" not in names:
        lines.append(f"User-Agent: {PROBE_USER_AGENT}")
    # Go's client ignores a "Host" entry in the header map, so Knative's probes do too.
    lines.extend(f"{n}: {v}" for n, v in action.headers if n.lower() != "host")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _http_check(action: HTTPGetAction, request: bytes, timeout_s: float) -> None:
    writer = None
    try:
        async with asyncio.timeout(timeout_s or None):
            reader, writer = await asyncio.open_connection(
                action.host,
                action.port,
                ssl=_insecure_tls() if action.scheme == "HTTPS" else None,
            )
            writer.write(request)
            status_line = await reader.readline()
    except (OSError, TimeoutError, ValueError) as e:  # ValueError: an over-long line
        raise ProbeFailed(f"GET {action.host}:{action.port}{action.path}: {e!r}") from None
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ProbeFailed(f"HTTP probe got a malformed status line {status_line!r}")
    status = int(parts[1])
    if not 200 <= status < 400:
        raise ProbeFailed(f"HTTP probe did not respond Ready, got status code: {status}")


class _ProbeRunner:
    """One probe's checks, and its count of consecutive successes (Knative's wrappedProbe)."""

    __slots__ = ("_check", "count", "poll_timeout_s", "probe")

    def __init__(self, probe: Probe, poll_timeout_s: float) -> None:
        self.probe = probe
        self.count = 0
        self.poll_timeout_s = poll_timeout_s
        action = probe.action
        self._check: Callable[[float], Awaitable[None]]
        if isinstance(action, HTTPGetAction):
            request = _http_request(action)
            self._check = lambda timeout_s: _http_check(action, request, timeout_s)
        else:
            self._check = lambda timeout_s: _tcp_check(action, timeout_s)

    async def run(self) -> None:
        if not self.probe.aggressive:
            await self._check(self.probe.timeout_s)
            return
        failures = 0
        last_error: ProbeFailed | None = None
        deadline = time.monotonic() + self.poll_timeout_s
        try:
            async with asyncio.timeout(self.poll_timeout_s):
                while True:
                    try:
                        await self._check(AGGRESSIVE_PROBE_TIMEOUT_S)
                    except ProbeFailed as e:
                        # Failures are expected while the app starts: counted, logged once.
                        self.count, failures, last_error = 0, failures + 1, e
                    else:
                        self.count += 1
                        if self.count >= self.probe.success_threshold:
                            return
                    if time.monotonic() + RETRY_INTERVAL_S > deadline:
                        break
                    await asyncio.sleep(RETRY_INTERVAL_S)
        except TimeoutError:
            pass
        if last_error is not None:
            raise ProbeFailed(f"aggressive probe error (failed {failures} times): {last_error}")
        raise ProbeFailed(f"aggressive probe timed out after {self.poll_timeout_s}s")


class ReadinessProber:
    """Probes the user container as SERVING_READINESS_PROBE says; see the module doc."""

    def __init__(
        self,
        spec_json: str,
        default_host: str,
        default_port: int,
        *,
        poll_timeout_s: float = POLL_TIMEOUT_S,
    ) -> None:
        """Parses the spec now, so a bad one stops the queue-proxy at start.

        Args:
            poll_timeout_s: the aggressive polling window; tests shorten it, as Knative's do.

        Raises:
            ConfigError (a ValueError): the spec is unusable; names SERVING_READINESS_PROBE.
        """
        self.probes = parse_probes(spec_json, default_host, default_port)
        self._runners = tuple(_ProbeRunner(p, poll_timeout_s) for p in self.probes)
        self._inflight: asyncio.Task[bool] | None = None
        self.last_error: str | None = None

    async def probe(self) -> bool:
        """True when every probe passes; concurrent callers share one round of checks."""
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.ensure_future(self._probe_all())
            task.add_done_callback(self._clear)
        # Shielded: one impatient caller must not cancel the round the others wait for.
        return await asyncio.shield(task)

    def _clear(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _probe_all(self) -> bool:
        results = await asyncio.gather(
            *(runner.run() for runner in self._runners), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, ProbeFailed):
                raise error
        self.last_error = "; ".join(map(str, errors)) or None
        if self.last_error is not None:
            _log.warning("readiness probe failed: %s", self.last_error)
        return not errors

    async def close(self) -> None:
        """Cancels a round in flight (its waiters get CancelledError)."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __repr__(self) -> str:
        return f"ReadinessProber({list(self.probes)!r})"

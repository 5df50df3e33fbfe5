"""The local platform's pods: a user process and its queue-proxy, started, probed and drained.

Theory of operation. What Kubernetes does for a Knative revision's Deployment, on one machine:

* A pod is two processes on free 127.0.0.1 ports: the user container (command + args, with
  PORT, K_SERVICE, K_CONFIGURATION, K_REVISION) and ``python -m queueproxy`` configured by
  Knative's queue-proxy environment (pkg/reconciler/revision/resources/queue.go). Each writes
  its output to a log file under ``<state dir>/pods/<pod>/``. Both run in their own session, so a
  Ctrl-C at the terminal reaches ``knpy serve`` only, which then drains them in order.
* Readiness is the kubelet's: it polls the queue-proxy's serving port with
  ``K-Network-Probe: queue`` and a ``kube-probe/`` user agent, applying the user probe's
  period and success/failure thresholds (the queue-proxy ignores them, as Knative's does).
  With periodSeconds 0 (Knative's default) the queue-proxy itself probes the app every 50 ms
  for up to 10 s per call, so one outstanding kubelet call is enough while starting.
* Every change (a pod started, turned ready or not, removed) is published as the revision's
  whole endpoint list, ready or not, as Kubernetes' Endpoints object with notReadyAddresses.
* Scale-down removes the pod from the endpoints first, then sends SIGTERM to the queue-proxy,
  which fails its probes and keeps serving through its drain period (what arrives while the
  removal propagates is still served), then finishes what is in flight and exits; only then is
  the user process stopped (Knative's preStop ``/wait-for-drain`` hook gives the same order).
  So no request is lost.
* A process that exits on its own is a crash: the pod is removed and a replacement started,
  after a back-off that doubles with each consecutive crash (Kubernetes' CrashLoopBackOff).
  Once the user process has crashed CRASH_LOOP_FAILURES times in a row, each further crash is
  reported as a ``ContainerFailure`` (exit code, last log line): what Knative's revision
  reconciler reads from the pod's last termination state to mark ContainerHealthy False.

Which pods to start or stop is decided by the pure ``plan_scale``; the ``PodManager`` does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

import aiohttp

from shared.seams import Endpoint, RevisionKey

__all__ = [
    "ContainerFailure",
    "PodManager",
    "PodStatus",
    "PodTemplate",
    "ProbeSettings",
    "ScalePlan",
    "free_port",
    "plan_scale",
    "terminate",
]

_log = logging.getLogger(__name__)

LOOPBACK: Final = "127.0.0.1"
# The local endpoint watches propagate a removal in milliseconds, not the seconds of a
# cluster's Endpoints -> kube-proxy/ingress path, so the queue-proxy's drain period (its quiet
# period after SIGTERM, Knative's 30 s drainSleepDuration) can be much shorter here: 2 s covers
# a request that an ingress or activator picked this pod for just before the removal arrived.
DEFAULT_DRAIN_PERIOD_S: Final = 2.0
# After the queue-proxy exited, the user process gets SIGTERM and this long before SIGKILL
# (Kubernetes' terminationGracePeriodSeconds default is 30 s; the app has nothing left to serve).
USER_STOP_GRACE_S: Final = 10.0
# Margin over drain period + revision timeout before a queue-proxy that does not exit is killed.
QUEUE_STOP_MARGIN_S: Final = 5.0
# Kubernetes' probe defaults (periodSeconds 10, timeoutSeconds 1, failureThreshold 3).
KUBELET_PERIOD_S: Final = 10.0
KUBELET_FAILURE_THRESHOLD: Final = 3
# With periodSeconds 0 the queue-proxy polls aggressively for up to 10 s per call (its
# POLL_TIMEOUT_S); the kubelet call waits a little longer than that.
AGGRESSIVE_CALL_TIMEOUT_S: Final = 11.0
# While not ready a pod is polled again this soon; once ready, every KUBELET_PERIOD_S unless
# the probe says otherwise (a crash is noticed by the process exit, not by probes).
STARTING_POLL_S: Final = 0.05
# CrashLoopBackOff: 0.5 s, 1 s, 2 s ... at most 30 s between replacements of crashing pods.
CRASH_BACKOFF_FIRST_S: Final = 0.5
CRASH_BACKOFF_MAX_S: Final = 30.0
# A pod that ran this long before it crashed resets the back-off.
CRASH_BACKOFF_RESET_S: Final = 60.0
# The user process crashed this often in a row: the kubelet would show the container as
# CrashLoopBackOff (it is now waiting out the back-off, 0.5 s then 1 s, ~2 s after the first
# start), so it is reported as failing. One or two crashes may be a port race or a slow
# dependency; three with a growing back-off between them are the app's own fault.
CRASH_LOOP_FAILURES: Final = 3
# How much of the end of a crashed container's log is read for its last line (Kubernetes'
# FallbackToLogsOnError, which Knative sets on user containers, keeps at most 2048 bytes).
TERMINATION_LOG_TAIL_BYTES: Final = 2048
_PROBE_HEADERS: Final = {"K-Network-Probe": "queue", "K-Kubelet-Probe": "queue"}
_PROBE_USER_AGENT: Final = "kube-probe/knpy"
_INTERPRETERS: Final = frozenset({"python", "python3"})


# -- what a revision's pods run ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """The kubelet side of the user's readinessProbe (corev1.Probe timings)."""

    period_s: float = 0.0  # 0 = Knative's aggressive probing inside the queue-proxy
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = KUBELET_FAILURE_THRESHOLD
    initial_delay_s: float = 0.0

    @classmethod
    def from_probe(cls, probe: Mapping[str, object] | None) -> ProbeSettings:
        if not probe:
            return cls()

        def number(key: str, default: float) -> float:
            value = probe.get(key)
            return float(value) if isinstance(value, int | float) and value > 0 else default

        return cls(
            period_s=number("periodSeconds", 0.0),
            timeout_s=number("timeoutSeconds", 1.0),
            success_threshold=int(number("successThreshold", 1)),
            failure_threshold=int(number("failureThreshold", KUBELET_FAILURE_THRESHOLD)),
            initial_delay_s=number("initialDelaySeconds", 0.0),
        )


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """What every pod of one revision runs: its container and its queue-proxy settings."""

    key: RevisionKey
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    working_dir: str = ""  # "" = the platform's working directory
    container_port: int = 8080  # the declared containerPort; the pod gets a free one
    service: str = ""
    configuration: str = ""
    container_concurrency: int = 0
    timeout_s: float = 300.0
    response_start_timeout_s: float = 0.0
    idle_timeout_s: float = 0.0
    readiness_probe: Mapping[str, object] | None = None  # the container's corev1.Probe
    # The platform's own settings for this revision's queue-proxies (drain, stats period ...).
    queue_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError(f"revision {self.key}: a local run needs the container's command")


# -- the pure decision --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PodStatus:
    """One pod as the platform sees it (the API shows these)."""

    name: str
    ready: bool
    started_at: float  # Unix time the processes were spawned
    ready_after_s: float | None = None  # spawn to first ready probe; None until then
    terminating: bool = False


@dataclass(frozen=True, slots=True)
class ScalePlan:
    start: int = 0
    stop: tuple[str, ...] = ()


def plan_scale(pods: Sequence[PodStatus], desired: int) -> ScalePlan:
    """Which pods to start or stop so that ``desired`` are running (terminating ones aside).

    A desired scale below 0 is Knative's "no decision yet": nothing changes. Scale-down stops
    the pods that serve least first, as Kubernetes' ReplicaSet ranks victims: not ready before
    ready, then the newest first (the oldest have warm caches and are the autoscaler's
    preferred stat sources). E.g. pods a (ready, t=1), b (ready, t=3), c (starting, t=4) and
    desired 1: stop c, then b.
    """
    if desired < 0:
        return ScalePlan()
    live = [p for p in pods if not p.terminating]
    if len(live) < desired:
        return ScalePlan(start=desired - len(live))
    excess = len(live) - desired
    if excess == 0:
        return ScalePlan()
    ranked = sorted(live, key=lambda p: (p.ready, -p.started_at, p.name))
    return ScalePlan(stop=tuple(p.name for p in ranked[:excess]))


@dataclass(frozen=True, slots=True)
class ContainerFailure:
    """A revision's user container keeps exiting (its last termination, as the kubelet has it)."""

    exit_code: int  # 128 + signal for a process killed by a signal, as Kubernetes reports it
    last_log_line: str = ""

    @property
    def reason(self) -> str:
        """Knative's v1.ExitCodeReason: ``ExitCode1``."""
        return f"ExitCode{self.exit_code}"

    @property
    def message(self) -> str:
        """Knative's v1.RevisionContainerExitingMessage (its fallback for no message)."""
        return f"Container failed with: {self.last_log_line or 'container exited with no error'}"


def exit_code(returncode: int) -> int:
    """Kubernetes' exit code of a process: killed by signal N is 128 + N (SIGKILL: 137)."""
    return returncode if returncode >= 0 else 128 - returncode


def last_log_line(path: Path) -> str:
    """The last non-blank line of a container's log ("" if there is none)."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - TERMINATION_LOG_TAIL_BYTES))
            tail = log.read()
    except OSError:
        return ""
    lines = [line.strip() for line in tail.decode(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")


def crash_backoff_s(consecutive_crashes: int) -> float:
    """Delay before replacing a pod after this many crashes in a row (0 for none)."""
    if consecutive_crashes <= 0:
        return 0.0
    return float(min(CRASH_BACKOFF_MAX_S, CRASH_BACKOFF_FIRST_S * 2 ** (consecutive_crashes - 1)))


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    """A free loopback port (bound once, released; the child binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class PodPorts:
    user: int
    serving: int
    admin: int
    metrics: int
    user_metrics: int

    @classmethod
    def allocate(cls) -> PodPorts:
        ports: set[int] = set()
        while len(ports) < 5:
            ports.add(free_port())
        user, serving, admin, metrics, user_metrics = sorted(ports)
        return cls(user, serving, admin, metrics, user_metrics)


def local_readiness_probe(
    probe: Mapping[str, object] | None, ports: PodPorts, declared: int
) -> str:
    """SERVING_READINESS_PROBE for a pod: the user's probe aimed at the pod's real user port.

    A probe port equal to the declared containerPort (or none) means the user port, which the
    local platform moved to a free one; any other port is kept as written.
    """
    if not probe:
        return ""
    spec = json.loads(json.dumps(probe))
    for action in ("httpGet", "tcpSocket"):
        handler = spec.get(action)
        if isinstance(handler, dict):
            port = handler.get("port")
            if port in (None, 0, "", declared, str(declared)) or isinstance(port, str):
                handler["port"] = ports.user
            handler["host"] = LOOPBACK
    return json.dumps(spec, separators=(",", ":"))


def user_env(template: PodTemplate, ports: PodPorts, base: Mapping[str, str]) -> dict[str, str]:
    """The user container's environment: the platform's own, the container's, then Knative's."""
    return {
        **base,
        **template.env,
        "PORT": str(ports.user),
        "K_SERVICE": template.service,
        "K_CONFIGURATION": template.configuration,
        "K_REVISION": template.key.name,
    }


def queue_env(
    template: PodTemplate, pod: str, ports: PodPorts, base: Mapping[str, str], drain_period_s: float
) -> dict[str, str]:
    """Knative's queue-proxy environment contract for one pod, plus knpy's port split."""
    key = template.key
    return {
        **base,
        "SERVING_NAMESPACE": key.namespace,
        "SERVING_SERVICE": template.service,
        "SERVING_CONFIGURATION": template.configuration,
        "SERVING_REVISION": key.name,
        "SERVING_POD": pod,
        "SERVING_POD_IP": LOOPBACK,
        "QUEUE_SERVING_PORT": str(ports.serving),
        "QUEUE_ADMIN_PORT": str(ports.admin),
        "QUEUE_METRICS_PORT": str(ports.metrics),
        "USER_METRICS_PORT": str(ports.user_metrics),
        "USER_PORT": str(ports.user),
        "USER_HOST": LOOPBACK,
        "QUEUE_BIND_HOST": LOOPBACK,
        "CONTAINER_CONCURRENCY": str(template.container_concurrency),
        "REVISION_TIMEOUT_SECONDS": _seconds(template.timeout_s),
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": _seconds(template.response_start_timeout_s),
        "REVISION_IDLE_TIMEOUT_SECONDS": _seconds(template.idle_timeout_s),
        "SERVING_READINESS_PROBE": local_readiness_probe(
            template.readiness_probe, ports, template.container_port
        ),
        "QUEUE_DRAIN_PERIOD_SECONDS": _seconds(drain_period_s),
        **template.queue_env,
    }


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class _Pod:
    """A running pod: its processes, ports and probe state (mutable, owned by the manager)."""

    def __init__(
        self, name: str, template: PodTemplate, ports: PodPorts, started_at: float
    ) -> None:
        self.name = name
        self.template = template
        self.ports = ports
        self.started_at = started_at
        self.started_mono = time.monotonic()
        self.user: asyncio.subprocess.Process | None = None
        self.queue: asyncio.subprocess.Process | None = None
        self.ready = False
        self.ready_after_s: float | None = None
        self.terminating = False
        self.tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "terminating" if self.terminating else "ready" if self.ready else "starting"
        return f"<Pod {self.name} {state} serving={self.ports.serving}>"

    def status(self) -> PodStatus:
        return PodStatus(
            self.name, self.ready, self.started_at, self.ready_after_s, self.terminating
        )

    def endpoint(self) -> Endpoint:
        return Endpoint(
            pod_name=self.name,
            host=LOOPBACK,
            port=self.ports.serving,
            metrics_port=self.ports.metrics,
            ready=self.ready,
            started_at=self.started_at,
        )


@dataclass(slots=True)
class _Revision:
    template: PodTemplate
    desired: int = 0
    pods: dict[str, _Pod] = field(default_factory=dict)
    crashes: int = 0
    not_before: float = 0.0  # monotonic: no new pod before (crash back-off)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


Publish = Callable[[RevisionKey, tuple[Endpoint, ...]], None]
OnContainerFailure = Callable[[RevisionKey, ContainerFailure], None]


class PodManager:
    """Runs each revision's pods at its desired scale and publishes their endpoints.

    ``scale`` only records the wish; one reconcile task per revision acts on it, so starts
    and stops of a revision never interleave.
    """

    def __init__(
        self,
        state_dir: Path,
        publish: Publish,
        *,
        drain_period_s: float = DEFAULT_DRAIN_PERIOD_S,
        base_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        clock: Callable[[], float] = time.time,
        on_container_failure: OnContainerFailure | None = None,
    ) -> None:
        if drain_period_s < 0:
            raise ValueError(f"drain period must be >= 0, got {drain_period_s}")
        self.state_dir = state_dir
        self.publish = publish
        self.drain_period_s = drain_period_s
        self.base_env: Mapping[str, str] = dict(os.environ if base_env is None else base_env)
        self.python = python
        self.clock = clock
        self.on_container_failure = on_container_failure
        self._revisions: dict[RevisionKey, _Revision] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._seq = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        pods = sum(len(r.pods) for r in self._revisions.values())
        return f"<PodManager revisions={len(self._revisions)} pods={pods}>"

    # -- what the platform asks for ---------------------------------------------------------
    def set_template(self, template: PodTemplate) -> None:
        """Know a revision (revisions are immutable: a known one keeps its template)."""
        if template.key not in self._revisions:
            self._revisions[template.key] = _Revision(template)

    def known(self, key: RevisionKey) -> bool:
        return key in self._revisions

    def scale(self, key: RevisionKey, desired: int) -> None:
        """Run ``desired`` pods of a known revision (below 0: no decision, keep what runs)."""
        rev = self._revisions.get(key)
        if rev is None or self._closed or desired < 0:
            return
        rev.desired = desired
        rev.dirty.set()
        if rev.task is None:
            rev.task = asyncio.get_running_loop().create_task(self._reconcile_loop(key, rev))

    def forget(self, key: RevisionKey) -> None:
        """The revision is gone: drain its pods and forget it."""
        rev = self._revisions.pop(key, None)
        if rev is None:
            return
        if rev.task is not None:
            rev.task.cancel()
        for pod in list(rev.pods.values()):
            self._stop(key, rev, pod)
        self.publish(key, ())

    def desired(self, key: RevisionKey) -> int:
        rev = self._revisions.get(key)
        return rev.desired if rev is not None else 0

    def pods(self, key: RevisionKey) -> tuple[PodStatus, ...]:
        rev = self._revisions.get(key)
        if rev is None:
            return ()
        return tuple(pod.status() for pod in rev.pods.values())

    def endpoints(self, key: RevisionKey) -> tuple[Endpoint, ...]:
        rev = self._revisions.get(key)
        if rev is None:
            return ()
        return tuple(pod.endpoint() for pod in rev.pods.values() if not pod.terminating)

    async def close(self) -> None:
        """Drain and stop every pod; nothing is left running afterwards."""
        self._closed = True
        for key, rev in list(self._revisions.items()):
            if rev.task is not None:
                rev.task.cancel()
            for pod in list(rev.pods.values()):
                self._stop(key, rev, pod)
            self.publish(key, ())
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- reconcile --------------------------------------------------------------------------
    async def _reconcile_loop(self, key: RevisionKey, rev: _Revision) -> None:
        while True:
            await rev.dirty.wait()
            rev.dirty.clear()
            wait_s = rev.not_before - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            plan = plan_scale([p.status() for p in rev.pods.values()], rev.desired)
            for name in plan.stop:
                self._stop(key, rev, rev.pods[name])
            for _ in range(plan.start):
                try:
                    await self._start(key, rev)
                except OSError as err:
                    _log.error("pod of %s failed to start: %s", key, err)
                    self._crashed(rev)
                    rev.dirty.set()
                    break
            if plan.start or plan.stop:
                self._publish(key, rev)

    def _crashed(self, rev: _Revision) -> None:
        rev.crashes += 1
        rev.not_before = time.monotonic() + crash_backoff_s(rev.crashes)

    async def _start(self, key: RevisionKey, rev: _Revision) -> None:
        template = rev.template
        name = f"{key.name}-pod-{next(self._seq)}"
        ports = PodPorts.allocate()
        pod = _Pod(name, template, ports, self.clock())
        log_dir = self._log_dir(key, name)
        log_dir.mkdir(parents=True, exist_ok=True)
        command = list(template.command)
        if command[0] in _INTERPRETERS:
            # "python" means the interpreter running knpy (its venv has the app's packages).
            command[0] = self.python
        cwd = template.working_dir or None
        with (log_dir / "user.log").open("ab") as out:
            pod.user = await asyncio.create_subprocess_exec(
                *command,
                *template.args,
                cwd=cwd,
                env=user_env(template, ports, self.base_env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with (log_dir / "queue-proxy.log").open("ab") as out:
                pod.queue = await asyncio.create_subprocess_exec(
                    self.python,
                    "-m",
                    "queueproxy",
                    env=queue_env(template, name, ports, self.base_env, self.drain_period_s),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError:
            await terminate(pod.user, 0.0)
            raise
        rev.pods[name] = pod
        loop = asyncio.get_running_loop()
        for task in (
            loop.create_task(self._watch_exit(key, rev, pod)),
            loop.create_task(self._probe_loop(key, rev, pod)),
        ):
            pod.tasks.add(task)
            task.add_done_callback(pod.tasks.discard)
        _log.info("pod %s started (serving %s:%d)", name, LOOPBACK, ports.serving)

    def _log_dir(self, key: RevisionKey, pod_name: str) -> Path:
        return self.state_dir / "pods" / key.namespace / pod_name

    def _stop(self, key: RevisionKey, rev: _Revision, pod: _Pod) -> None:
        """Take the pod out of the endpoints now; drain and stop its processes in the back."""
        if pod.terminating:
            return
        pod.terminating = True
        pod.ready = False
        for task in list(pod.tasks):
            task.cancel()
        self._publish(key, rev)
        task = asyncio.get_running_loop().create_task(self._drain(rev, pod))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, rev: _Revision, pod: _Pod) -> None:
        template = pod.template
        queue_limit = self.drain_period_s + template.timeout_s + QUEUE_STOP_MARGIN_S
        try:
            await terminate(pod.queue, queue_limit)
            await terminate(pod.user, USER_STOP_GRACE_S)
        finally:
            if rev.pods.get(pod.name) is pod:
                del rev.pods[pod.name]
            _log.info("pod %s stopped", pod.name)

    async def _watch_exit(self, key: RevisionKey, rev: _Revision, pod: _Pod) -> None:
        assert pod.user is not None and pod.queue is not None
        waits = {
            asyncio.ensure_future(pod.user.wait()): "user",
            asyncio.ensure_future(pod.queue.wait()): "queue-proxy",
        }
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()
        if pod.terminating:
            return
        which = waits[next(iter(done))]
        lived_s = time.monotonic() - pod.started_mono
        _log.warning(
            "pod %s: the %s process exited after %.1f s; replacing", pod.name, which, lived_s
        )
        if lived_s >= CRASH_BACKOFF_RESET_S:
            rev.crashes = 0
        self._crashed(rev)
        pod.tasks.discard(asyncio.current_task())
        self._stop(key, rev, pod)
        rev.dirty.set()
        if which == "user" and rev.crashes >= CRASH_LOOP_FAILURES:
            self._container_failed(key, pod)

    def _container_failed(self, key: RevisionKey, pod: _Pod) -> None:
        assert pod.user is not None and pod.user.returncode is not None
        log = self._log_dir(key, pod.name) / "user.log"
        failure = ContainerFailure(exit_code(pod.user.returncode), last_log_line(log))
        _log.warning("revision %s is crash-looping: %s", key, failure.message)
        if self.on_container_failure is not None and self._revisions.get(key) is not None:
            self.on_container_failure(key, failure)

    async def _probe_loop(self, key: RevisionKey, rev: _Revision, pod: _Pod) -> None:
        settings = ProbeSettings.from_probe(pod.template.readiness_probe)
        url = f"http://{LOOPBACK}:{pod.ports.serving}/"
        timeout_s = settings.timeout_s if settings.period_s > 0 else AGGRESSIVE_CALL_TIMEOUT_S
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        headers = {**_PROBE_HEADERS, "User-Agent": _PROBE_USER_AGENT}
        session = self._client()
        successes = failures = 0
        await asyncio.sleep(settings.initial_delay_s)
        while True:
            ok = await _probe_once(session, url, headers, timeout)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if not pod.ready and successes >= settings.success_threshold:
                pod.ready = True
                if pod.ready_after_s is None:
                    pod.ready_after_s = time.monotonic() - pod.started_mono
                    rev.crashes = 0
                self._publish(key, rev)
            elif pod.ready and failures >= settings.failure_threshold:
                pod.ready = False
                self._publish(key, rev)
            if pod.ready:
                await asyncio.sleep(settings.period_s or KUBELET_PERIOD_S)
            else:
                await asyncio.sleep(settings.period_s or STARTING_POLL_S)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _publish(self, key: RevisionKey, rev: _Revision) -> None:
        if self._revisions.get(key) is rev:
            self.publish(key, self.endpoints(key))


async def _probe_once(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    timeout: aiohttp.ClientTimeout,
) -> bool:
    """One kubelet HTTP probe: 200-399 is a pass, anything else (or no answer) a fail."""
    try:
        async with session.get(url, headers=headers, timeout=timeout) as resp:
            await resp.read()
            return 200 <= resp.status < 400
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def terminate(proc: asyncio.subprocess.Process | None, grace_s: float) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; always reaps the process."""
    if proc is None or proc.returncode is not None:
        if proc is not None:
            await proc.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()

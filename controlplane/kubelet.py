"""The local node: Kubernetes' Deployment controller and kubelet for Deployments in the API.

Theory of operation. ``knpy serve`` has one node, 127.0.0.1, and this is its kubelet. It
watches Deployments (all namespaces) and, for each, keeps ``spec.replicas`` Pod objects of
the current template in the API and their containers running as local processes:

* **Pods.** A pod is created in the API as ``<deployment>-<hash>-<5 random>`` with the
  template's labels plus ``pod-template-hash``, an owner reference to the Deployment (so a
  cascading delete takes it), and its spec localized (``controlplane/podspec.py``: every
  declared port moved to a free local one), then each container is started as a process
  (``command`` + ``args``; the queue-proxy sidecar runs ``python -m queueproxy``; images are
  not pulled), output to ``<state dir>/pods/<namespace>/<pod>/<container>.log``, each in its
  own session so Ctrl-C reaches ``knpy serve`` only, which drains them in order.
* **Status.** The kubelet writes the Pod's status: phase, podIP 127.0.0.1, startTime, the
  Ready/ContainersReady conditions from each container's readinessProbe (httpGet, tcpSocket
  or exec, with a ``kube-probe/`` user agent, the probe's thresholds; while not ready it polls
  every 50 ms, so a cold start is not a kubelet period long), and containerStatuses: a
  container that exits is restarted in place after a back-off that doubles per crash
  (Kubernetes' CrashLoopBackOff: ``waiting`` with that reason, ``lastState.terminated`` with
  the exit code and the log's last line as message, ``restartCount``); a command that cannot
  start at all shows at once as ``RunContainerError`` with the OS error (exit code 128,
  reason StartError). Status writes are coalesced per pod: a reader sees the latest state,
  never a backlog. The Deployment's status (replicas, readyReplicas, availableReplicas,
  updatedReplicas, observedGeneration, Available/Progressing) is written the same way.
* **Scale and rollout** are decided by the pure ``podspec.plan_rollout``: scale-down stops
  not-ready pods first, then the newest; a template change starts new pods and stops old ones
  only as new ones turn ready (maxUnavailable 0). A pod that goes is deleted from the API
  first (the Endpoints controller takes it out of every Endpoints at once), then drained: the
  queue-proxy gets SIGTERM and keeps serving through its drain period, then finishes what is
  in flight; only then do the other containers stop (Knative's preStop ``/wait-for-drain``
  gives the same order). A pod deleted by someone else (``kubectl delete pod``, a cascade) is
  drained the same way and replaced if its Deployment still wants it.
* **Restart.** Processes do not outlive ``knpy serve``, so Pod objects left in the state dir by
  the previous run are deleted at start, and the Deployments make new ones.
* **Images.** With ``knpy serve --images``, a container whose image is one of knpy's built
  images (the queue-proxy, the activator, the autoscaler) runs from that image under buildah
  (``controlplane/containers.py``); its process is supervised like any other.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from shared.kube.client import ApiError, Conflict, KubeClient, NotFound
from shared.kube.informer import EventType, Informer, InformerFactory
from shared.kube.resources import DEPLOYMENTS, PODS, Obj
from shared.ports import free_port

from .containers import ImageRuntime
from .pods import (
    AGGRESSIVE_CALL_TIMEOUT_S,
    CRASH_BACKOFF_RESET_S,
    DEFAULT_DRAIN_PERIOD_S,
    KUBELET_PERIOD_S,
    QUEUE_STOP_MARGIN_S,
    STARTING_POLL_S,
    USER_STOP_GRACE_S,
    LocalProcess,
    ProbeSettings,
    crash_backoff_s,
    end_group,
    exit_code,
    last_log_line,
    start_process,
    terminate,
    tied_to_parent,
)
from .podspec import (
    LOOPBACK,
    NODE_NAME,
    QUEUE_PROXY,
    READY_AFTER_ANNOTATION,
    ContainerView,
    PodSummary,
    PodView,
    container_argv,
    deployment_status,
    desired_replicas,
    named_port,
    plan_rollout,
    pod_name,
    pod_object,
    pod_status,
    pod_template,
    ports_to_allocate,
    resolve_env,
    template_hash,
)

__all__ = ["Kubelet"]

_log = logging.getLogger("knpy.kubelet")

PROBE_USER_AGENT: Final = "kube-probe/knpy"
# Kubernetes' defaults: terminationGracePeriodSeconds 30, progressDeadlineSeconds 600.
DEFAULT_GRACE_S: Final = 30.0
DEFAULT_PROGRESS_DEADLINE_S: Final = 600.0
# A failed API write (the server restarting, a conflict) is tried again after this long.
RETRY_S: Final = 0.5
# Attempts at a free pod name before giving up for this round (5 random characters of 27:
# a clash is one in 14 million per existing pod).
NAME_ATTEMPTS: Final = 5


def rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- one container, one pod, one deployment (mutable, owned by the kubelet's loop) --------------
@dataclass(eq=False, slots=True)
class _Container:
    spec: Obj
    log: Path
    proc: LocalProcess | None = None
    restart_count: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    ready: bool = False
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    last_terminated: Obj | None = None
    crashes: int = 0
    running: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    def view(self) -> ContainerView:
        return ContainerView(
            name=self.name,
            image=str(self.spec.get("image", "")),
            ready=self.ready,
            restart_count=self.restart_count,
            started_at=self.started_at,
            waiting_reason=self.waiting_reason,
            waiting_message=self.waiting_message,
            last_terminated=self.last_terminated,
        )


@dataclass(eq=False, slots=True)
class _Pod:
    obj: Obj  # as created in the API (uid, localized spec)
    hash: str
    created: float
    start_time: str
    containers: list[_Container]
    terminating: bool = False
    ready: bool = False
    ready_since: str = ""
    ready_after_s: float | None = None  # creation to the first Ready, once known
    annotated: bool = False
    written: Obj | None = None
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    def summary(self) -> PodSummary:
        return PodSummary(self.name, self.hash, self.ready, self.created)

    def view(self) -> PodView:
        return PodView(
            start_time=self.start_time,
            containers=tuple(c.view() for c in self.containers),
            ready_since=self.ready_since,
        )


@dataclass(eq=False, slots=True)
class _Deployment:
    namespace: str
    name: str
    pods: dict[str, _Pod] = field(default_factory=dict)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    frozen: bool = False  # shutting down: no pod is started or replaced
    written: Obj | None = None
    hash: str = ""
    replicas: int = -1
    progress_since: float = 0.0
    deadline: asyncio.TimerHandle | None = None


class Kubelet:
    """Runs the Deployments of the API as local pods; ``start``, then ``close``."""

    def __init__(
        self,
        client: KubeClient,
        factory: InformerFactory,
        state_dir: Path,
        *,
        python: str = sys.executable,
        base_env: Mapping[str, str] | None = None,
        drain_period_s: float = DEFAULT_DRAIN_PERIOD_S,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        images: ImageRuntime | None = None,
    ) -> None:
        self.client = client
        self.state_dir = state_dir
        self.python = python
        self.base_env: Mapping[str, str] = dict(os.environ if base_env is None else base_env)
        self.drain_period_s = drain_period_s
        self.images = images  # knpy serve --images: these containers run from their image
        self.clock = clock
        self._rng = rng or random.Random()
        self._deployments: Informer = factory.informer(DEPLOYMENTS)
        self._pod_informer: Informer = factory.informer(PODS)
        self._runs: dict[tuple[str, str], _Deployment] = {}
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Kubelet deployments={len(self._runs)} pods={len(self._pods)}>"

    # -- life ------------------------------------------------------------------------------
    async def remove_stale_pods(self) -> int:
        """Delete the Pod objects of a previous run on this node (their processes are gone)."""
        listed = await self.client.list(PODS)
        stale = [
            p
            for p in listed.get("items") or []
            if (p.get("spec") or {}).get("nodeName") == NODE_NAME
        ]
        for pod in stale:
            meta = pod["metadata"]
            await self.client.delete(PODS, meta["namespace"], meta["name"])
        return len(stale)

    def start(self) -> None:
        """Follow the Deployments (call before or after the factory starts)."""
        self._deployments.add_handler(self._on_deployment)
        self._pod_informer.add_handler(self._on_pod)

    async def stop_matching(self, namespace: str, labels: Mapping[str, str]) -> None:
        """Drain and stop the pods of the Deployments in ``namespace`` whose template has
        ``labels``, and start none of theirs again (shutdown, edge first)."""
        for run in list(self._runs.values()):
            dep = self._deployments.get(run.namespace, run.name)
            tlabels = (pod_template(dep or {}).get("metadata") or {}).get("labels") or {}
            if run.namespace == namespace and all(tlabels.get(k) == v for k, v in labels.items()):
                run.frozen = True
                for pod in list(run.pods.values()):
                    self._stop(run, pod, delete=False)
        await self._drained()

    async def close(self) -> None:
        """Drain and stop every pod; nothing is left running afterwards."""
        self._closed = True
        for run in list(self._runs.values()):
            run.frozen = True
            if run.task is not None:
                run.task.cancel()
            if run.deadline is not None:
                run.deadline.cancel()
            for pod in list(run.pods.values()):
                self._stop(run, pod, delete=False)
        await self._drained()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _drained(self) -> None:
        while self._draining:
            await asyncio.gather(*list(self._draining), return_exceptions=True)

    # -- what tests and the platform read ------------------------------------------------------
    def pod_names(self, namespace: str, deployment: str) -> list[str]:
        """The running (not terminating) pods of a Deployment."""
        run = self._runs.get((namespace, deployment))
        return sorted(n for n, p in (run.pods if run else {}).items() if not p.terminating)

    # -- informer handlers -------------------------------------------------------------------
    def _on_deployment(self, event: EventType, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        run = self._runs.get(key)
        if run is None:
            if event is EventType.DELETED or self._closed:
                return
            run = self._runs[key] = _Deployment(*key)
        run.dirty.set()
        if run.task is None and not self._closed:
            run.task = asyncio.get_running_loop().create_task(self._reconcile_loop(run))

    def _on_pod(self, event: EventType, obj: Obj) -> None:
        if event is not EventType.DELETED:
            return
        meta = obj.get("metadata") or {}
        pod = self._pods.get((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        if pod is None or pod.terminating:
            return
        if pod.obj["metadata"].get("uid") != meta.get("uid"):
            return  # an older pod of the same name
        run = self._run_of(pod)
        _log.info("pod %s/%s was deleted; draining it", pod.namespace, pod.name)
        if run is not None:
            self._stop(run, pod, delete=False)
            run.dirty.set()

    def _run_of(self, pod: _Pod) -> _Deployment | None:
        for ref in pod.obj["metadata"].get("ownerReferences") or []:
            run = self._runs.get((pod.namespace, str(ref.get("name"))))
            if run is not None and pod.name in run.pods:
                return run
        return None

    # -- the Deployment controller ------------------------------------------------------------
    async def _reconcile_loop(self, run: _Deployment) -> None:
        while True:
            await run.dirty.wait()
            run.dirty.clear()
            try:
                if not await self._reconcile(run):
                    return
            except (ApiError, OSError, aiohttp.ClientError) as err:
                _log.warning("deployment %s/%s: %s; retrying", run.namespace, run.name, err)
                await asyncio.sleep(RETRY_S)
                run.dirty.set()

    async def _reconcile(self, run: _Deployment) -> bool:
        """One pass; False once the Deployment is gone and its pods are going."""
        dep = self._deployments.get(run.namespace, run.name)
        if dep is None:
            for pod in list(run.pods.values()):
                self._stop(run, pod, delete=False)
            if run.deadline is not None:
                run.deadline.cancel()
            self._runs.pop((run.namespace, run.name), None)
            return False
        if run.frozen:
            return True
        current = template_hash(pod_template(dep))
        replicas = desired_replicas(dep)
        if (current, replicas) != (run.hash, run.replicas):
            run.hash, run.replicas = current, replicas
            self._progressed(run, dep)
        live = [p.summary() for p in run.pods.values() if not p.terminating]
        plan = plan_rollout(live, replicas, current)
        for name in plan.stop:
            self._stop(run, run.pods[name], delete=True)
        for _ in range(plan.start):
            await self._create(run, dep, current)
        await self._write_deployment_status(run, dep, current)
        return True

    def _progressed(self, run: _Deployment, dep: Obj) -> None:
        """Restart the progress deadline clock (a new rollout, a scale, a pod turning ready)."""
        run.progress_since = time.monotonic()
        if run.deadline is not None:
            run.deadline.cancel()
        deadline_s = float(
            (dep.get("spec") or {}).get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE_S
        )
        run.deadline = asyncio.get_running_loop().call_later(deadline_s, run.dirty.set)

    def _deadline_exceeded(self, run: _Deployment, dep: Obj) -> bool:
        deadline_s = float(
            (dep.get("spec") or {}).get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE_S
        )
        return time.monotonic() - run.progress_since >= deadline_s

    async def _write_deployment_status(self, run: _Deployment, dep: Obj, current: str) -> None:
        live = [p.summary() for p in run.pods.values() if not p.terminating]
        status = deployment_status(
            dep,
            live,
            current,
            run.written or dep.get("status"),
            rfc3339(self.clock()),
            progress_deadline_exceeded=self._deadline_exceeded(run, dep),
        )
        if _same(status, run.written, ignore=("lastUpdateTime", "lastTransitionTime")):
            return
        try:
            await self.client.patch(
                DEPLOYMENTS, run.namespace, run.name, {"status": status}, subresource="status"
            )
        except NotFound:
            return
        run.written = status

    async def _create(self, run: _Deployment, dep: Obj, current: str) -> None:
        spec = pod_template(dep).get("spec") or {}
        free, pinned = ports_to_allocate(spec)
        ports = dict(pinned)
        taken = set(pinned.values())
        for declared in free:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            ports[declared] = port
        now = self.clock()
        for _ in range(NAME_ATTEMPTS):
            name = pod_name(run.name, current, self._rng.getrandbits(40))
            body = pod_object(dep, name, current, ports, now)
            try:
                created = await self.client.create(PODS, run.namespace, body)
                break
            except Conflict:
                continue
        else:
            raise ApiError(409, "AlreadyExists", f"no free pod name for {run.name}")
        log_dir = self.state_dir / "pods" / run.namespace / name
        log_dir.mkdir(parents=True, exist_ok=True)
        containers = [
            _Container(spec=c, log=log_dir / f"{c.get('name', 'container')}.log")
            for c in (created.get("spec") or {}).get("containers") or []
        ]
        pod = _Pod(
            obj=created,
            hash=current,
            created=now,
            start_time=rfc3339(now),
            containers=containers,
        )
        run.pods[name] = pod
        self._pods[run.namespace, name] = pod
        loop = asyncio.get_running_loop()
        pod.tasks.add(loop.create_task(self._status_loop(run, pod)))
        for c in containers:
            pod.tasks.add(loop.create_task(self._run_container(run, pod, c)))
            pod.tasks.add(loop.create_task(self._probe_loop(run, pod, c)))
        pod.dirty.set()
        _log.info("pod %s/%s created", run.namespace, name)

    # -- containers ----------------------------------------------------------------------------
    async def _run_container(self, run: _Deployment, pod: _Pod, c: _Container) -> None:
        while not pod.terminating:
            began = self.clock()
            argv = [""]
            try:
                own_env = resolve_env(c.spec, pod.obj)
                env = {**self.base_env, **own_env}
                if self.images is not None and self.images.runs(c.spec):
                    argv = self.images.argv(c.spec, pod.obj, own_env)
                else:
                    argv = container_argv(c.spec, self.python)
                spawn = tied_to_parent(argv, env)
                with c.log.open("ab") as out:
                    c.proc = start_process(
                        spawn, cwd=c.spec.get("workingDir") or None, env=env, stdout=out
                    )
            except (OSError, ValueError) as err:
                # Kubernetes: the runtime could not start the process (exec format, not
                # found, ...): exit code 128, reason StartError, then RunContainerError; the
                # message names the executable as runc's does ('exec: "app": ...').
                message = _start_error(argv[0], err)
                _log.error("pod %s: container %s cannot start: %s", pod.name, c.name, message)
                when = rfc3339(self.clock())
                c.last_terminated = {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": message,
                    "startedAt": when,
                    "finishedAt": when,
                }
                waiting = "RunContainerError"
            else:
                c.started_at = rfc3339(began)
                c.started_mono = time.monotonic()
                c.waiting_reason = c.waiting_message = ""
                c.running.set()
                self._changed(run, pod)
                code = await c.proc.wait()
                end_group(c.proc.pid)  # what the container's main process left behind
                c.running.clear()
                if pod.terminating:
                    return
                lived_s = time.monotonic() - c.started_mono
                code = exit_code(code)
                c.last_terminated = {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "message": last_log_line(c.log),
                    "startedAt": c.started_at,
                    "finishedAt": rfc3339(self.clock()),
                }
                c.started_at = ""
                c.ready = False
                if lived_s >= CRASH_BACKOFF_RESET_S:
                    c.crashes = 0
                _log.warning(
                    "pod %s: container %s exited %d after %.1f s (log: %s)",
                    pod.name, c.name, code, lived_s, c.log,
                )  # fmt: skip
                waiting = "CrashLoopBackOff"
            c.crashes += 1
            delay_s = crash_backoff_s(c.crashes)
            c.waiting_reason = waiting
            c.waiting_message = (
                f"back-off {delay_s:g}s restarting failed container={c.name} pod={pod.name}"
                if waiting == "CrashLoopBackOff"
                else str((c.last_terminated or {}).get("message", ""))
            )
            self._changed(run, pod)
            await asyncio.sleep(delay_s)
            c.restart_count += 1

    async def _probe_loop(self, run: _Deployment, pod: _Pod, c: _Container) -> None:
        probe = c.spec.get("readinessProbe")
        settings = ProbeSettings.from_probe(probe if isinstance(probe, dict) else None)
        successes = failures = 0
        while True:
            if not c.running.is_set():
                if c.ready:
                    c.ready = False
                    self._changed(run, pod)
                await c.running.wait()
                successes = failures = 0
                await asyncio.sleep(settings.initial_delay_s)
            ok = await self._probe(c, probe if isinstance(probe, dict) else None, settings)
            if not c.running.is_set():
                continue
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if not c.ready and successes >= settings.success_threshold:
                c.ready = True
                c.crashes = 0
                self._changed(run, pod)
            elif c.ready and failures >= settings.failure_threshold:
                c.ready = False
                self._changed(run, pod)
            if c.ready:
                await asyncio.sleep(settings.period_s or KUBELET_PERIOD_S)
            else:
                await asyncio.sleep(settings.period_s or STARTING_POLL_S)

    async def _probe(self, c: _Container, probe: Obj | None, settings: ProbeSettings) -> bool:
        """One kubelet probe; a container without a readinessProbe is ready while it runs."""
        if not probe:
            return True
        timeout_s = settings.timeout_s if settings.period_s > 0 else AGGRESSIVE_CALL_TIMEOUT_S
        http = probe.get("httpGet")
        if isinstance(http, dict):
            port = named_port(c.spec, http.get("port"))
            if port is None:
                return False
            headers = {
                str(h.get("name")): str(h.get("value")) for h in http.get("httpHeaders") or []
            }
            headers.setdefault("User-Agent", PROBE_USER_AGENT)
            path = str(http.get("path") or "/")
            url = f"http://{LOOPBACK}:{port}{path if path.startswith('/') else '/' + path}"
            try:
                async with self._client().get(
                    url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
                ) as resp:
                    await resp.read()
                    return 200 <= resp.status < 400
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False
        tcp = probe.get("tcpSocket")
        if isinstance(tcp, dict):
            port = named_port(c.spec, tcp.get("port"))
            if port is None:
                return False
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(LOOPBACK, port), timeout_s
                )
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True
        exec_ = probe.get("exec")
        if isinstance(exec_, dict) and exec_.get("command"):
            try:
                proc = await asyncio.create_subprocess_exec(
                    *[str(a) for a in exec_["command"]],
                    env=self.base_env,  # with the run's mark: the watchdog ends a stuck one
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            except OSError:
                return False
            try:
                code: int = await asyncio.wait_for(proc.wait(), timeout_s)
                return code == 0
            except TimeoutError:
                await terminate(proc, 0.0)
                return False
        return True

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- status -------------------------------------------------------------------------------
    def _changed(self, run: _Deployment, pod: _Pod) -> None:
        ready = all(c.ready for c in pod.containers) and bool(pod.containers)
        if ready != pod.ready:
            pod.ready = ready
            pod.ready_since = rfc3339(self.clock())
            if ready and pod.ready_after_s is None:
                pod.ready_after_s = self.clock() - pod.created
            dep = self._deployments.get(run.namespace, run.name)
            if ready and dep is not None:
                self._progressed(run, dep)
            run.dirty.set()
        pod.dirty.set()

    async def _status_loop(self, run: _Deployment, pod: _Pod) -> None:
        while not pod.terminating:
            await pod.dirty.wait()
            pod.dirty.clear()
            if pod.terminating:
                return
            status = pod_status(pod.view())
            if _same(status, pod.written):
                continue
            try:
                await self.client.patch(
                    PODS, pod.namespace, pod.name, {"status": status}, subresource="status"
                )
                if pod.ready_after_s is not None and not pod.annotated:
                    figure = {READY_AFTER_ANNOTATION: f"{pod.ready_after_s:.6f}"}
                    patch = {"metadata": {"annotations": figure}}
                    await self.client.patch(PODS, pod.namespace, pod.name, patch)
                    pod.annotated = True
            except NotFound:
                return  # deleted: the pod informer's DELETED drains it
            except (ApiError, OSError, aiohttp.ClientError) as err:
                _log.warning("pod %s status: %s; retrying", pod.name, err)
                await asyncio.sleep(RETRY_S)
                pod.dirty.set()
                continue
            pod.written = status

    # -- stop ----------------------------------------------------------------------------------
    def _stop(self, run: _Deployment, pod: _Pod, *, delete: bool) -> None:
        """Out of the endpoints now (the Pod object goes first); drain and stop in the back."""
        if pod.terminating:
            return
        pod.terminating = True
        pod.ready = False
        current = asyncio.current_task()
        for task in list(pod.tasks):
            if task is not current:
                task.cancel()
        task = asyncio.get_running_loop().create_task(self._drain(run, pod, delete))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, run: _Deployment, pod: _Pod, delete: bool) -> None:
        try:
            if delete:
                try:
                    await self.client.delete(PODS, pod.namespace, pod.name)
                except (ApiError, OSError, aiohttp.ClientError) as err:
                    _log.warning("pod %s: delete failed: %s", pod.name, err)
            grace_s = float(
                (pod.obj.get("spec") or {}).get("terminationGracePeriodSeconds") or DEFAULT_GRACE_S
            )
            queue = [c for c in pod.containers if c.name == QUEUE_PROXY]
            others = [c for c in pod.containers if c.name != QUEUE_PROXY]
            for c in queue:
                await terminate(
                    c.proc, self.drain_period_s + grace_s + QUEUE_STOP_MARGIN_S, group=True
                )
            await asyncio.gather(
                *(
                    terminate(c.proc, USER_STOP_GRACE_S if queue else grace_s, group=True)
                    for c in others
                )
            )
        finally:
            if run.pods.get(pod.name) is pod:
                del run.pods[pod.name]
            if self._pods.get((pod.namespace, pod.name)) is pod:
                del self._pods[pod.namespace, pod.name]
            if not self._closed and not run.frozen:
                run.dirty.set()
            _log.info("pod %s/%s stopped", pod.namespace, pod.name)


def _start_error(command: str, err: OSError | ValueError) -> str:
    """What a container that could not start shows (``exec: "app": [Errno 2] No such ...``)."""
    if not isinstance(err, OSError) or err.errno is None:
        return str(err)
    where = f": {err.filename}" if err.filename not in (None, command) else ""
    return f'exec: "{command}": [Errno {err.errno}] {err.strerror}{where}'


def _same(a: Obj | None, b: Obj | None, ignore: tuple[str, ...] = ()) -> bool:
    """Equal, leaving out the timestamp keys in ``ignore`` (a status that only ages is not
    written again)."""
    return bool(_strip(a, ignore) == _strip(b, ignore))


def _strip(value: Any, ignore: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_strip(v, ignore) for v in value]
    return value

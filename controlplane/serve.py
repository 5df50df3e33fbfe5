"""``knpy serve``: the local platform in one foreground process, plus its children.

Theory of operation. What a cluster spreads over an API server, controllers, kubelets and
deployments runs here in one event loop, with the data plane in real processes:

```
knpy serve ── store (SQLite, state dir) ── LocalPlatform ── PodManager ── pods: app + queue-proxy
   │ API :9080 (controlplane/api.py) ── PlatformSeams ──watch──> autoscaler, activator (children)
   │ ingress :8080 (controlplane/ingress.py) ── routes from the store, modes from the decisions
   └ autoscaler ──POST decision──> API ──> PodManager.scale + the ingress's serve/proxy mode
```

* ``LocalPlatform`` is the reconciler: after every apply or delete (and at start) it makes the
  seams' revisions, the pod manager's templates and the ingress's routes match the store. A
  revision new to this run starts at its initial scale if it is routed or never was ready
  (Knative makes every new revision reach readiness once); from then on the autoscaler's
  decisions drive its scale. The first ready pod of a revision marks it Ready in the store,
  which is what lets routes that follow the latest revision move to it. A revision whose app
  crash-loops before it was ever ready is marked failed (Ready and ContainerHealthy False,
  "ExitCode1", the last log line), as Knative's revision reconciler does; its pods keep being
  retried with the back-off, and a pod that turns ready makes it Ready after all.
* The autoscaler and the activator are child processes (``--platform`` = this API), restarted
  with a back-off if they die. Their ports are chosen once per run, so the activator's address
  in the seams stays valid across its restarts. A changed config-autoscaler restarts the
  autoscaler with the new data (it reads the ConfigMap at start).
* Shutdown (Ctrl-C or SIGTERM) goes from the edge inwards, so nothing is cut mid-request: the
  ingress stops accepting and finishes what it has, the activator and autoscaler drain and
  stop, every pod drains (queue-proxy first, then the app), the API stops last.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from aiohttp import web

from shared.seams import Endpoint, RevisionKey, RevisionSpec, ScaleDecision

from .api import ApiError, Json, PlatformApi, PlatformSeams, start_api
from .ingress import ColdStarts, Ingress, Target
from .model import (
    CONFIG_AUTOSCALER,
    CONFIGURATION_LABEL,
    SERVICE_LABEL,
    Revision,
    ValidationError,
    to_dict,
)
from .pods import LOOPBACK, ContainerFailure, PodManager, PodPorts, PodTemplate, terminate
from .store import Store
from .traffic import TargetError

__all__ = ["LocalPlatform", "LocalServe", "ServeConfig", "run_serve"]

_log = logging.getLogger("knpy.serve")

# Children that die are restarted after 0.5 s, 1 s, 2 s ... at most 10 s.
CHILD_BACKOFF_FIRST_S: Final = 0.5
CHILD_BACKOFF_MAX_S: Final = 10.0
# A child that ran this long before it died restarts without delay.
CHILD_HEALTHY_S: Final = 30.0
# The activator drains for this long after SIGTERM. The ingress in front of it has already
# stopped, so nothing new arrives; Knative's 45 s is for a cluster's load balancers to notice.
ACTIVATOR_DRAIN_S: Final = 1.0
CHILD_STOP_GRACE_S: Final = 10.0
# The activator is ready ~0.5-1 s after it is spawned here (Python start, the seams' first
# sync, the autoscaler's WebSocket); 30 s means something is wrong, and its log says what.
ACTIVATOR_READY_S: Final = 30.0
_ACTIVATOR_POLL_S: Final = 0.02
# In-flight ingress requests get this long to finish at shutdown before they are cut.
INGRESS_DRAIN_S: Final = 30.0
_INGRESS_CHECK_S: Final = 0.05
_RESOURCE_KINDS: Final = {"services": "Service", "revisions": "Revision", "routes": "Route"}


@dataclass(frozen=True, slots=True)
class ServeConfig:
    port: int = 8080
    api_port: int = 9080
    state_dir: Path = Path(".knpy")
    files: tuple[Path, ...] = ()
    host: str = LOOPBACK
    # The queue-proxies' drain period (controlplane/pods.py explains the local value).
    drain_period_s: float = 2.0
    python: str = sys.executable
    # Extra environment for every child (tests shorten periods through it).
    child_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


# -- Knative resources to the data plane's view --------------------------------------------------
def revision_spec(rev: Revision, *, reachable: bool = True) -> RevisionSpec:
    """The seams' RevisionSpec of a stored (defaulted) Revision."""
    meta, spec = rev.metadata, rev.spec
    return RevisionSpec(
        key=RevisionKey(meta.namespace, meta.name),
        container_concurrency=spec.container_concurrency or 0,
        timeout_s=float(spec.timeout_seconds or 300),
        response_start_timeout_s=float(spec.response_start_timeout_seconds or 0),
        idle_timeout_s=float(spec.idle_timeout_seconds or 0),
        annotations=MappingProxyType(dict(meta.annotations)),
        service=meta.labels.get(SERVICE_LABEL, ""),
        configuration=meta.labels.get(CONFIGURATION_LABEL, ""),
        reachable=reachable,
    )


def pod_template(rev: Revision, queue_env: Mapping[str, str]) -> PodTemplate:
    """What the pod manager runs for a Revision: its one container and queue-proxy settings."""
    spec = revision_spec(rev)
    (container,) = rev.spec.containers
    body: Any = to_dict(rev)
    probe = body.get("spec", {}).get("containers", [{}])[0].get("readinessProbe")
    return PodTemplate(
        key=spec.key,
        command=container.command,
        args=container.args,
        env=MappingProxyType({e.name: e.value for e in container.env}),
        working_dir=container.working_dir,
        container_port=container.ports[0].container_port if container.ports else 8080,
        service=spec.service,
        configuration=spec.configuration,
        container_concurrency=spec.container_concurrency,
        timeout_s=spec.timeout_s,
        response_start_timeout_s=spec.response_start_timeout_s,
        idle_timeout_s=spec.idle_timeout_s,
        readiness_probe=probe,
        queue_env=queue_env,
    )


def initial_scale(
    annotations: Mapping[str, str], cc: int, autoscaler_data: Mapping[str, str]
) -> int:
    """Knative's initial scale: the annotation's, else config-autoscaler's initial-scale."""
    from autoscaler.config import AutoscalerConfig, RevisionAutoscaling
    from autoscaler.config import initial_scale as knative_initial_scale
    from shared.envconfig import ConfigError

    try:
        cfg = AutoscalerConfig.from_configmap(autoscaler_data)
        return knative_initial_scale(
            cfg, RevisionAutoscaling.from_annotations(annotations, cc, cfg)
        )
    except ConfigError:
        return 1  # validated at apply; a config that went bad since gets Knative's default


def _ready(rev: Revision) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in rev.status.conditions)


# -- the reconciler ------------------------------------------------------------------------------
class LocalPlatform:
    """The store's resources made real: seams, pods and routes (implements api.Platform)."""

    def __init__(
        self,
        store: Store,
        seams: PlatformSeams,
        pods: PodManager,
        *,
        cold_starts: ColdStarts | None = None,
        set_routes: Callable[[Mapping[str, tuple[Target, ...]]], None] | None = None,
        on_autoscaler_config: Callable[[Mapping[str, str]], None] | None = None,
        queue_env: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.seams = seams
        self.pods = pods
        self.cold_starts = cold_starts if cold_starts is not None else ColdStarts()
        self.set_routes = set_routes
        self.on_autoscaler_config = on_autoscaler_config
        self.queue_env: Mapping[str, str] = MappingProxyType(dict(queue_env or {}))
        self.routes: dict[str, tuple[Target, ...]] = {}
        self._route_hosts: dict[tuple[str, str], dict[str, tuple[Target, ...]]] = {}
        self._ready_once: set[RevisionKey] = set()
        self._autoscaler_data: Mapping[str, str] = self._autoscaler_config()
        seams.on_decision = self.on_decision

    def __repr__(self) -> str:
        return f"<LocalPlatform {self.store!r} routes={len(self.routes)}>"

    # -- api.Platform ---------------------------------------------------------------------
    def apply(self, text: str) -> Json:
        try:
            result = self.store.apply_text(text)
        except ValidationError as err:
            raise ApiError(400, str(err).splitlines()) from None
        self.sync()
        return {
            "results": [
                {
                    "kind": a.kind,
                    "namespace": a.namespace,
                    "name": a.name,
                    "action": a.outcome.value,
                    "line": str(a),
                }
                for a in result.applied
            ],
            "revisionsCreated": [str(key) for key in result.revisions_created],
        }

    def list_kind(self, kind: str, namespace: str | None) -> list[Json]:
        if kind == "services":
            return [to_dict(s) for s in self.store.list_services(namespace)]
        if kind == "routes":
            return [to_dict(r) for r in self.store.list_routes(namespace)]
        traffic = self._traffic_by_revision()
        return [self._revision_json(r, traffic) for r in self.store.list_revisions(namespace)]

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        if kind == "services":
            service = self.store.get_service(namespace, name)
            return None if service is None else to_dict(service)
        if kind == "routes":
            route = self.store.get_route(namespace, name)
            return None if route is None else to_dict(route)
        rev = self.store.get_revision(namespace, name)
        return None if rev is None else self._revision_json(rev, self._traffic_by_revision())

    def delete_service(self, namespace: str, name: str) -> bool:
        deleted = self.store.delete_service(namespace, name)
        if deleted:
            self.sync()
        return deleted

    # -- reconcile ------------------------------------------------------------------------
    def sync(self) -> None:
        """Make the seams, the pods and the routes match the store."""
        data = self._autoscaler_config()
        if data != self._autoscaler_data:
            self._autoscaler_data = data
            if self.on_autoscaler_config is not None:
                self.on_autoscaler_config(data)
        self._sync_routes()
        routed = {t.key for targets in self.routes.values() for t in targets}
        revisions = self.store.list_revisions()
        keys = set()
        for rev in revisions:
            key = RevisionKey(rev.metadata.namespace, rev.metadata.name)
            if _ready(rev):
                self._ready_once.add(key)
            # As Knative's revision reconciler: routed, or new and not routed yet (Unknown,
            # which the autoscaler treats as reachable).
            spec = revision_spec(rev, reachable=key in routed or key not in self._ready_once)
            keys.add(spec.key)
            if self.seams.get(spec.key) != spec:
                self.seams.put_revision(spec)
            if not self.pods.known(spec.key):
                self.pods.set_template(pod_template(rev, self.queue_env))
                wanted = spec.key in routed or spec.key not in self._ready_once
                scale = initial_scale(spec.annotations, spec.container_concurrency, data)
                self.pods.scale(spec.key, scale if wanted else 0)
        for key in self.seams.revision_keys() - keys:
            self.pods.forget(key)  # publishes no endpoints, then the revision goes
            self.seams.delete_revision(key)
            self._ready_once.discard(key)

    def _sync_routes(self) -> None:
        table: dict[tuple[str, str], dict[str, tuple[Target, ...]]] = {}
        for route in self.store.list_routes():
            ns, name = route.metadata.namespace, route.metadata.name
            try:
                resolved = self.store.resolve_route(ns, name)
            except TargetError as err:
                # Knative keeps the last good routing while a target is not ready (yet).
                _log.info("route %s/%s keeps its routing: %s", ns, name, err)
                if (ns, name) in self._route_hosts:
                    table[ns, name] = self._route_hosts[ns, name]
                continue
            if resolved is None:
                continue
            table[ns, name] = {
                host: tuple(Target(RevisionKey(ns, t.revision_name), t.percent) for t in targets)
                for host, targets in resolved.hosts(name, ns).items()
                if targets
            }
        self._route_hosts = table
        routes = {host: targets for hosts in table.values() for host, targets in hosts.items()}
        if routes != self.routes:
            self.routes = routes
            if self.set_routes is not None:
                self.set_routes(MappingProxyType(dict(routes)))

    def _autoscaler_config(self) -> Mapping[str, str]:
        cm = self.store.configmap(CONFIG_AUTOSCALER)
        return MappingProxyType(dict(cm.data) if cm is not None else {})

    # -- from the data plane --------------------------------------------------------------
    def publish(self, key: RevisionKey, endpoints: tuple[Endpoint, ...]) -> None:
        """The pod manager's endpoints: to the seams; a first ready pod makes the rev Ready."""
        self.seams.set_endpoints(key, endpoints)
        if key not in self._ready_once and any(e.ready for e in endpoints):
            self._ready_once.add(key)
            self.store.set_revision_status(
                key.namespace, key.name, ready=True, container_healthy=True
            )
            self._sync_routes()

    def container_failed(self, key: RevisionKey, failure: ContainerFailure) -> None:
        """The pod manager's crash loop: a revision never ready is failed, as in Knative.

        A revision that was ready keeps its status: routes that reached it stay as they are.
        """
        if key in self._ready_once:
            return
        self.store.set_revision_status(
            key.namespace,
            key.name,
            ready=False,
            reason=failure.reason,
            message=failure.message,
            container_healthy=False,
        )
        self._sync_routes()

    def on_decision(self, decision: ScaleDecision) -> None:
        self.pods.scale(decision.key, decision.desired_scale)

    # -- reads with live status -----------------------------------------------------------
    def _traffic_by_revision(self) -> dict[tuple[str, str], tuple[int, list[str]]]:
        traffic: dict[tuple[str, str], tuple[int, list[str]]] = {}
        for route in self.store.list_routes():
            for t in route.status.traffic:
                where = (route.metadata.namespace, t.revision_name)
                percent, tags = traffic.get(where, (0, []))
                traffic[where] = (percent + (t.percent or 0), [*tags, *([t.tag] if t.tag else [])])
        return traffic

    def _revision_json(
        self, rev: Revision, traffic: Mapping[tuple[str, str], tuple[int, list[str]]]
    ) -> Json:
        key = RevisionKey(rev.metadata.namespace, rev.metadata.name)
        pods = self.pods.pods(key)
        actual = sum(1 for p in pods if p.ready and not p.terminating)
        status = dataclasses.replace(
            rev.status, actual_replicas=actual, desired_replicas=self.pods.desired(key)
        )
        body: Json = to_dict(dataclasses.replace(rev, status=status))
        extra: Json = body.setdefault("status", {})
        extra.setdefault("actualReplicas", actual)
        extra.setdefault("desiredReplicas", self.pods.desired(key))
        percent, tags = traffic.get((key.namespace, key.name), (0, []))
        extra["trafficPercent"] = percent
        extra["tags"] = tags
        extra["mode"] = self.seams.mode_of(key).value
        cold = self.cold_starts.summary(key)
        ready_after = [p.ready_after_s for p in pods if p.ready_after_s is not None]
        if cold is not None or ready_after:
            figures: Json = dict(cold or {})
            if cold is not None:
                figures["count"] = int(cold["count"])
            if ready_after:
                figures["lastPodReadySeconds"] = round(ready_after[-1], 3)
            extra["coldStarts"] = figures
        return body


# -- children ------------------------------------------------------------------------------------
class Child:
    """One supervised child process: restarted with a back-off until ``stop``."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0  # after it died; planned restarts (``restart``) are not counted
        self._stopping = False
        self._planned = ""  # why ``restart`` stopped the running process, until it is restarted
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"<Child {self.name} pid={pid} restarts={self.restarts}>"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def _spawn(self) -> asyncio.subprocess.Process:
        with self.log.open("ab") as out:
            return await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches knpy serve only; it stops us in order
            )

    async def _supervise(self) -> None:
        backoff_s = CHILD_BACKOFF_FIRST_S
        while not self._stopping:
            started = time.monotonic()
            self.proc = await self._spawn()
            code = await self.proc.wait()
            if self._stopping:
                return
            if self._planned:
                _log.info("%s restarting %s", self.name, self._planned)
                self._planned = ""
                continue
            lived_s = time.monotonic() - started
            if lived_s >= CHILD_HEALTHY_S:
                backoff_s = CHILD_BACKOFF_FIRST_S
            _log.warning(
                "%s exited with %s after %.1f s; restarting in %.1f s (log: %s)",
                self.name,
                code,
                lived_s,
                backoff_s,
                self.log,
            )
            self.restarts += 1
            await asyncio.sleep(backoff_s)
            backoff_s = min(CHILD_BACKOFF_MAX_S, backoff_s * 2)

    async def stop(self, grace_s: float = CHILD_STOP_GRACE_S) -> None:
        """SIGTERM (the child drains), SIGKILL after ``grace_s``; the process is reaped."""
        self._stopping = True
        await terminate(self.proc, grace_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def restart(self, why: str) -> None:
        """Stop the running process; the supervisor starts a new one at once, logging ``why``
        ("with the new config-autoscaler"). Nothing running (it died and waits out its
        back-off): the next start has the new settings anyway.
        """
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
                self._planned = why


# -- the whole platform ---------------------------------------------------------------------------
class LocalServe:
    """Everything ``knpy serve`` runs; ``start`` then ``stop`` (tests drive it in-process)."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.state_dir = cfg.state_dir.resolve()
        self.api_url = f"http://{LOOPBACK}:{cfg.api_port}"
        self.store = Store(self.state_dir)
        self.seams = PlatformSeams()
        self.cold_starts = ColdStarts()
        self.base_env = {**os.environ, **cfg.child_env}
        self.pods = PodManager(
            self.state_dir,
            self._publish,
            drain_period_s=cfg.drain_period_s,
            base_env=self.base_env,
            python=cfg.python,
            on_container_failure=self._container_failed,
        )
        self.platform = LocalPlatform(
            self.store,
            self.seams,
            self.pods,
            cold_starts=self.cold_starts,
            set_routes=self._set_routes,
            on_autoscaler_config=self._autoscaler_config_changed,
        )
        # Ports of the children, fixed for the run.
        ports = PodPorts.allocate()
        self.activator_port = ports.serving
        self.activator_metrics_port = ports.admin
        self.autoscaler_stat_port = ports.metrics
        self.autoscaler_metrics_port = ports.user_metrics
        self.ingress: Ingress | None = None
        self.children: list[Child] = []
        self._autoscaler: Child | None = None
        self._runner: web.AppRunner | None = None
        self._ingress_server: asyncio.Server | None = None
        self._ingress_proxy: Any = None

    def __repr__(self) -> str:
        return f"<LocalServe ingress=:{self.cfg.port} api={self.api_url} {self.state_dir}>"

    def _publish(self, key: RevisionKey, endpoints: tuple[Endpoint, ...]) -> None:
        self.platform.publish(key, endpoints)

    def _container_failed(self, key: RevisionKey, failure: ContainerFailure) -> None:
        self.platform.container_failed(key, failure)

    def _set_routes(self, routes: Mapping[str, tuple[Target, ...]]) -> None:
        if self.ingress is not None:
            self.ingress.set_routes(routes)

    def _autoscaler_config_changed(self, data: Mapping[str, str]) -> None:
        if self._autoscaler is not None:
            self._autoscaler.env["AUTOSCALER_CONFIG"] = json.dumps(dict(data))
            restart = self._autoscaler.restart(f"with the new {CONFIG_AUTOSCALER}")
            asyncio.get_running_loop().create_task(restart)

    def apply_files(self, files: Sequence[Path]) -> list[str]:
        """Apply ``-f`` files before anything runs. Raises ApiError (or OSError) on a bad one."""
        lines = []
        for path in files:
            result = self.platform.apply(path.read_text())
            lines += [r["line"] for r in result["results"]]
        return lines

    async def start(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        api = PlatformApi(self.seams, self.platform, cold_starts=self.cold_starts)
        self._runner = await start_api(api, cfg.host, cfg.api_port)
        # The ingress: the lead's Ingress on the raw proxy server.
        from shared.proxy.server import ProxyServer

        self.ingress = Ingress(
            loop=loop,
            endpoints=self.seams,
            mode_of=self.seams.mode_of,
            activator=(LOOPBACK, self.activator_port),
            cold_starts=self.cold_starts,
        )
        self._ingress_proxy = ProxyServer(self.ingress)
        self._ingress_proxy.start(loop)
        # Bound now (a port in use stops start-up before anything runs), served only once the
        # activator is ready: until then a request for a revision in proxy mode or at zero
        # would be refused by a port nobody listens on yet (a 502; seen in tests/e2e about
        # 0.1-0.2 s after the first route went live). Connections made meanwhile wait in the
        # backlog. Knative's ingress likewise only reaches activators that pass readiness.
        self._ingress_server = await loop.create_server(
            self._ingress_proxy,
            cfg.host,
            cfg.port,
            backlog=4096,
            reuse_address=True,
            start_serving=False,
        )
        self.seams.set_activators((f"{LOOPBACK}:{self.activator_port}",))
        self.platform.sync()
        self.ingress.set_routes(self.platform.routes)
        self._start_children()
        await self._activator_ready()
        await self._ingress_server.start_serving()

    async def _activator_ready(self) -> None:
        """Wait until the activator's ``/healthz`` answers 200 (Knative's activator readiness:
        serving, its revisions synced from the API, connected to the autoscaler).

        Raises:
            OSError: not ready within ACTIVATOR_READY_S; ``serve`` then stops, as for a port
                in use.
        """
        deadline = time.monotonic() + ACTIVATOR_READY_S
        request = f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n"
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection(
                    LOOPBACK, self.activator_metrics_port
                )
                try:
                    writer.write(request.encode())
                    status_line = await reader.readline()
                finally:
                    writer.close()
                if status_line.split(b" ", 2)[1:2] == [b"200"]:
                    return
            if time.monotonic() > deadline:
                log = self.state_dir / "logs" / "activator.log"
                raise OSError(f"the activator was not ready within {ACTIVATOR_READY_S:g} s ({log})")
            await asyncio.sleep(_ACTIVATOR_POLL_S)

    def _start_children(self) -> None:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        python, platform = self.cfg.python, ["--platform", self.api_url]
        autoscaler = Child(
            "autoscaler",
            [python, "-m", "autoscaler", *platform],
            {
                **self.base_env,
                "AUTOSCALER_STAT_PORT": str(self.autoscaler_stat_port),
                "AUTOSCALER_METRICS_PORT": str(self.autoscaler_metrics_port),
                "AUTOSCALER_BIND_HOST": LOOPBACK,
                "AUTOSCALER_CONFIG": json.dumps(dict(self.platform._autoscaler_data)),
            },
            logs / "autoscaler.log",
        )
        activator = Child(
            "activator",
            [python, "-m", "activator", *platform],
            {
                "ACTIVATOR_DRAIN_TIMEOUT_SECONDS": str(ACTIVATOR_DRAIN_S),
                **self.base_env,
                "ACTIVATOR_SERVING_PORT": str(self.activator_port),
                "ACTIVATOR_METRICS_PORT": str(self.activator_metrics_port),
                "ACTIVATOR_BIND_HOST": LOOPBACK,
                "POD_IP": LOOPBACK,
                "POD_NAME": "activator",
                "ACTIVATOR_AUTOSCALER_URL": f"ws://{LOOPBACK}:{self.autoscaler_stat_port}",
            },
            logs / "activator.log",
        )
        self._autoscaler = autoscaler
        self.children = [activator, autoscaler]
        for child in self.children:
            child.start()

    async def stop(self) -> None:
        """Drain from the edge inwards; nothing is left running afterwards."""
        await self._stop_ingress()
        for child in self.children:  # the activator first: it may hold requests for pods
            await child.stop(self.cfg.drain_period_s + ACTIVATOR_DRAIN_S + CHILD_STOP_GRACE_S)
        await self.pods.close()
        if self.ingress is not None:
            self.ingress.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()

    async def _stop_ingress(self) -> None:
        if self._ingress_server is None:
            return
        self._ingress_server.close()
        proxy = self._ingress_proxy
        deadline = time.monotonic() + INGRESS_DRAIN_S
        while proxy.live and time.monotonic() < deadline:
            proxy.close_idle()
            await asyncio.sleep(_INGRESS_CHECK_S)
        proxy.stop()
        proxy.abort_all()


async def serve(cfg: ServeConfig, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set; 1 if a ``-f`` file is refused (then nothing runs)."""
    platform = LocalServe(cfg)
    try:
        for line in platform.apply_files(cfg.files):
            print(line, flush=True)
    except (ApiError, OSError) as err:
        print(f"knpy serve: {err}", file=sys.stderr)
        platform.store.close()
        return 1
    try:
        await platform.start()
    except OSError as err:  # a port in use, most likely
        print(f"knpy serve: cannot start: {err}", file=sys.stderr)
        await platform.stop()
        return 1
    print(
        f"knpy serve: ingress http://{cfg.host}:{cfg.port} (Host: <service>.<namespace>.localhost),"
        f" API {platform.api_url}, state {platform.state_dir}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        print("knpy serve: draining ...", file=sys.stderr, flush=True)
        await platform.stop()
        print("knpy serve: stopped", file=sys.stderr, flush=True)
    return 0


def run_serve(cfg: ServeConfig) -> int:
    """``knpy serve``: the platform in the foreground until Ctrl-C or SIGTERM."""
    import uvloop

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await serve(cfg, stop)

    return uvloop.run(main())

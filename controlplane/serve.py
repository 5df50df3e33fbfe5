"""``knpy serve``: Knative Serving on one machine, in one foreground process and its children.

Theory of operation. What a cluster spreads over kube-apiserver, Knative's controller and
webhook, the Deployment controller, kubelets and an ingress runs here in two processes, each
part a client of the same Kubernetes API, with the data plane in real processes:

```
knpy serve ── ingress :8080: Routes + public Endpoints (informers) → activator or pods
   │          Kubelet: Deployments → Pods → processes (user app + queue-proxy; activator;
   │                   autoscaler), children of this process, tied to its life
   ├ control process (controlplane/control.py):
   │    KubeApiServer :9080 (objects in <state>/kube.sqlite3, Knative's webhook)
   │    Controllers: Service → Configuration + Route, Revision → Deployment + PodAutoscaler,
   │                 SKS → private/public Services and Endpoints, Services → Endpoints
   └ watchdog (controlplane/supervision.py): ends every process of the run once this one ends
autoscaler (pod) ── PodAutoscaler → SKS mode, Deployment /scale      (--kubeconfig)
activator  (pod) ── Revisions, Endpoints; stats → autoscaler         (--kubeconfig)
```

The ingress never waits on control work (issue 10: an 858 KB apply once froze it for 14 s):
parsing, admission, storing and reconciling run in the control process, on its own event loop
and CPU. Nothing talks to anything but through the API: the platform's own parts read it
through informers over HTTP (``KubeInformerFactory``), exactly as the activator and the
autoscaler do with the kubeconfig the server writes (``<state dir>/kubeconfig``, a bearer
token), and as ``kubectl --kubeconfig .knpy/kubeconfig`` does.

* Start: the lock on the state dir (a second ``knpy serve`` on it is refused), the end of
  whatever a killed run on it left running, the watchdog, then the control process's API
  server (objects of an earlier run come back from the state dir), the ConfigMaps Knative's
  components GET at start, then the dry run of every document of the ``-f`` files (as ``knpy
  apply`` does: a bad file stops ``knpy serve`` before anything runs), then the system objects
  (activator and autoscaler Deployments and Services), the kubelet (which first removes the Pod
  objects of the previous run: their processes are gone), the controllers, the ``-f`` files for
  real, and the ingress, which starts serving once the activator is Ready in
  ``activator-service``'s Endpoints (until then a cold request would have nowhere to go).
* Shutdown (Ctrl-C or SIGTERM) goes from the edge inwards, so nothing is cut mid-request: the
  ingress stops accepting and finishes what it has, the activator drains and stops, then the
  autoscaler, every pod drains (queue-proxy first, then the app), then the control process
  stops its controllers and its API server. If the control process dies, ``knpy serve`` stops
  the same way and exits 1: without its API nothing of the platform could change.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from shared.apiclient import Api, ApiFailure, Planned, execute, plan_text
from shared.kube.informer import Informer
from shared.kube.resources import ACTIVATOR_SERVICE, ENDPOINTS, SYSTEM_NAMESPACE
from shared.ports import free_port

from . import ingress_workers
from .containers import ImageRuntime, KnpyImages
from .control import RABBITMQ_URL_ENV, ControlEndpoint, ControlProcess
from .ingress import ColdStarts, ColdStartWriter, Ingress, RoutingTable
from .kubelet import Kubelet
from .pods import LOOPBACK
from .supervision import (
    StateDirBusy,
    Watchdog,
    end_marked,
    lock_state_dir,
    mark,
    write_private,
)
from .system import ACTIVATOR, AUTOSCALER, SystemConfig, bootstrap, start_eventing

__all__ = ["LocalServe", "ServeConfig", "rabbitmq_prefix", "run_serve"]

_log = logging.getLogger("knpy.serve")

# The activator is Ready ~1-2 s after the kubelet starts it here (Python start, its informers'
# first sync, the autoscaler's WebSocket); 60 s means something is wrong, and its log says what.
ACTIVATOR_READY_S: Final = 60.0
_ACTIVATOR_POLL_S: Final = 0.05
# In-flight ingress requests get this long to finish at shutdown before they are cut.
INGRESS_DRAIN_S: Final = 30.0
_INGRESS_CHECK_S: Final = 0.05


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
    # ``--images``: the queue-proxies, the activator and the autoscaler run from these built
    # images (controlplane/containers.py) instead of as host processes.
    images: KnpyImages | None = None
    # ``--workers N``: the ingress on N processes (controlplane/ingress_workers.py).
    workers: int = 1
    # ``--rabbitmq URL``: run the RabbitMQBroker class's data plane on this server.
    rabbitmq_url: str = ""


def rabbitmq_prefix(state_dir: Path) -> str:
    """The RabbitMQ names' prefix of one state dir: runs of other state dirs (other users, test
    runs) share a RabbitMQ without meeting; a restart of this one finds its queues again."""
    return f"knpy.{hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]}."


RABBITMQ_URL_FILE: Final = "rabbitmq-url"  # in the state dir, 0600 (--rabbitmq's password)


class LocalServe:
    """Everything ``knpy serve`` runs: ``open`` (API), ``apply_files``, ``start``, ``stop``."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.state_dir = cfg.state_dir.resolve()
        # Every child carries the state dir's mark (controlplane/supervision.py); none inherits
        # knpy serve's RabbitMQ URL (a password) from its environment: the control process is
        # given it, the data plane reads it from a file.
        inherited = {k: v for k, v in os.environ.items() if k != RABBITMQ_URL_ENV}
        self.base_env = {**inherited, **cfg.child_env, **mark(self.state_dir)}
        self.cold_starts = ColdStarts()
        self.control: ControlProcess | None = None
        self.api_url = ""
        self._api: Any = None  # the kubernetes-asyncio ApiClient of the platform's parts
        self.client: Any = None
        self.factory: Any = None
        self.kubelet: Kubelet | None = None
        self.table = RoutingTable()
        self.ingress: Ingress | None = None
        self._cold_writer: ColdStartWriter | None = None
        self._ingress_server: asyncio.Server | None = None
        self._ingress_proxy: Any = None
        self._ingress_workers: list[asyncio.subprocess.Process] = []
        self._planned: list[Planned] = []

    def __repr__(self) -> str:
        return f"<LocalServe ingress=:{self.cfg.port} api={self.api_url} {self.state_dir}>"

    @property
    def endpoint(self) -> ControlEndpoint:
        assert self.control is not None, "open() first"
        return self.control.endpoint

    async def open(self) -> None:
        """The control process (API server, Knative's webhook), and the ConfigMaps (nothing
        runs yet)."""
        self.control = await ControlProcess.spawn(
            self.state_dir,
            host=self.cfg.host,
            port=self.cfg.api_port,
            drain_period_s=self.cfg.drain_period_s,
            python=self.cfg.python,
            env=self.base_env,
            ingress_port=self.cfg.port,
            queue_image=None if self.cfg.images is None else self.cfg.images.queue_proxy,
            rabbitmq_url=self.cfg.rabbitmq_url,
        )
        # These imports (kubernetes-asyncio: ~1 s of CPU) run while the child starts.
        from shared.kube.config import load_api_client
        from shared.kube.kubeclient import ApiKubeClient
        from shared.kube.kubeinformer import KubeInformerFactory

        await self.control.ready()
        self.api_url = self.endpoint.url
        self._api = await load_api_client({}, str(self.endpoint.kubeconfig))
        self.client = ApiKubeClient(self._api)
        self.factory = KubeInformerFactory(self._api)
        await bootstrap(self.client, None)

    async def check_files(self, files: Sequence[Path]) -> None:
        """Dry-run every document of the ``-f`` files (as ``knpy apply`` does first), before
        anything runs. Raises ApiFailure (or OSError) with every refusal."""
        api = self._local_api()
        for path in files:
            self._planned += await asyncio.to_thread(plan_text, api, path.read_text())

    async def apply_files(self) -> list[str]:
        """Write what ``check_files`` checked, once the controllers run (a file that names one
        object twice, as steps, needs each step seen before the next)."""
        planned, self._planned = self._planned, []
        return await asyncio.to_thread(execute, self._local_api(), planned)

    def _local_api(self) -> Api:
        return Api(self.endpoint.url, self.endpoint.token)

    def _rabbitmq_url_file(self) -> str:
        """The file the RabbitMQ data plane reads ``--rabbitmq`` from ("" without it): written
        at each start, removed by one without it."""
        path = self.state_dir / RABBITMQ_URL_FILE
        if not self.cfg.rabbitmq_url:
            path.unlink(missing_ok=True)
            return ""
        write_private(path, self.cfg.rabbitmq_url + "\n")
        return str(path)

    async def start(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        runtime = await self._image_runtime()
        self.kubelet = Kubelet(
            self.client,
            self.factory,
            self.state_dir,
            python=cfg.python,
            base_env=self.base_env,
            drain_period_s=cfg.drain_period_s,
            images=runtime,
        )
        removed = await self.kubelet.remove_stale_pods()
        if removed:
            _log.info("removed %d pods of the previous run", removed)
        system = SystemConfig(
            python=cfg.python,
            kubeconfig=str(self.endpoint.kubeconfig),
            autoscaler_stat_port=free_port(),
            images=cfg.images,
            broker_state_dir=str(self.state_dir / "eventing"),  # the broker's event log
            rabbitmq_url_file=self._rabbitmq_url_file(),
            rabbitmq_prefix=rabbitmq_prefix(self.state_dir),
            ingress_port=cfg.port,
        )
        await bootstrap(self.client, system)
        self.kubelet.start()
        self.table.follow(self.factory)
        activator_endpoints: Informer = self.factory.informer(ENDPOINTS, namespace=SYSTEM_NAMESPACE)
        await self.factory.start()
        assert self.control is not None
        await self.control.start_controllers()
        for line in await self.apply_files():
            print(line, flush=True)
        from shared.proxy.server import ProxyServer

        self.ingress = Ingress(loop=loop, table=self.table, cold_starts=self.cold_starts)
        self._cold_writer = ColdStartWriter(self.client, self.cold_starts)
        self._cold_writer.start()
        self._ingress_proxy = ProxyServer(
            self.ingress, initial_tag=None, limits=self.ingress.limits
        )
        self._ingress_proxy.start(loop)
        # Bound now (a port in use stops start-up), served once the activator is Ready:
        # connections made meanwhile wait in the backlog. Knative's ingress likewise only
        # reaches activators that pass readiness.
        self._ingress_server = await loop.create_server(
            self._ingress_proxy,
            cfg.host,
            cfg.port,
            backlog=4096,
            reuse_address=True,
            reuse_port=cfg.workers > 1 or None,
            start_serving=False,
        )
        await self._activator_ready(activator_endpoints)
        await self._ingress_server.start_serving()
        if cfg.workers > 1:
            self._ingress_workers = await ingress_workers.spawn(
                cfg.workers - 1, cfg.python, str(self.endpoint.kubeconfig), cfg.host, cfg.port,
                self.base_env,
            )  # fmt: skip
        await start_eventing(self.client, system)  # the broker data plane, after serving's

    async def _image_runtime(self) -> ImageRuntime | None:
        """``--images``: every image inspected now (a missing one stops the start, naming
        it), and the working containers a killed run of this state dir left removed."""
        if self.cfg.images is None:
            return None
        runtime = await asyncio.to_thread(
            ImageRuntime.load,
            self.cfg.images.refs(),
            self.state_dir,
            python=self.cfg.python,
            # The mark inside too: the supervision finds the entrypoints as it finds pods.
            extra_env={**self.cfg.child_env, **mark(self.state_dir)},
        )
        removed = await asyncio.to_thread(runtime.remove_leftovers)
        if removed:
            _log.info("removed %d working containers of the previous run", removed)
        return runtime

    async def _activator_ready(self, endpoints: Informer) -> None:
        """Wait until ``activator-service`` has a ready address (the activator pod passed its
        kubelet probe: serving, synced, connected to the autoscaler).

        Raises:
            OSError: not within ACTIVATOR_READY_S; ``serve`` then stops, as for a port in use.
        """
        deadline = time.monotonic() + ACTIVATOR_READY_S
        assert self.kubelet is not None
        while True:
            # This run's activator pod, not an address the Endpoints kept from the last run.
            ep = endpoints.get(SYSTEM_NAMESPACE, ACTIVATOR_SERVICE) or {}
            pods = set(self.kubelet.pod_names(SYSTEM_NAMESPACE, ACTIVATOR))
            ready = {
                (a.get("targetRef") or {}).get("name")
                for s in ep.get("subsets") or []
                for a in s.get("addresses") or []
            }
            if ready & pods:
                return
            if time.monotonic() > deadline:
                logs = self.state_dir / "pods" / SYSTEM_NAMESPACE
                raise OSError(
                    f"the activator was not ready within {ACTIVATOR_READY_S:g} s (logs: {logs})"
                )
            await asyncio.sleep(_ACTIVATOR_POLL_S)

    async def stop(self) -> None:
        """Drain from the edge inwards; nothing is left running afterwards."""
        await self._stop_ingress()
        if self.kubelet is not None:
            await self.kubelet.stop_matching(SYSTEM_NAMESPACE, {"app": ACTIVATOR})
            await self.kubelet.stop_matching(SYSTEM_NAMESPACE, {"app": AUTOSCALER})
            await self.kubelet.close()
        if self._cold_writer is not None:
            await self._cold_writer.stop()
        if self.factory is not None:
            await self.factory.stop()
        if self.ingress is not None:
            self.ingress.close()
        if self._api is not None:
            await self._api.close()
        if self.control is not None:
            await self.control.stop()

    async def _stop_ingress(self) -> None:
        await ingress_workers.stop(self._ingress_workers)
        if self._ingress_server is None:
            return
        self._ingress_server.close()
        await self._ingress_proxy.drain(INGRESS_DRAIN_S, _INGRESS_CHECK_S)


async def serve(cfg: ServeConfig, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set; 1 if the state dir is another run's or a ``-f`` file is
    refused (then nothing runs).

    The state dir is locked first, then what a killed run on it left running is ended (its
    processes carry the dir's mark), and a watchdog ends this run's processes once it is
    gone, however it goes (controlplane/supervision.py).
    """
    state_dir = cfg.state_dir.resolve()
    try:
        lock = lock_state_dir(state_dir)
    except StateDirBusy as err:
        print(f"knpy serve: {err}", file=sys.stderr)
        return 1
    try:
        ended = await asyncio.to_thread(end_marked, state_dir)
        if ended:
            _log.warning("ended %d processes a killed knpy serve left running", ended)
        watchdog = Watchdog(state_dir, cfg.python)
        try:
            return await _serve(cfg, stop)
        finally:
            await asyncio.to_thread(watchdog.close)
    finally:
        lock.release()


async def _serve(cfg: ServeConfig, stop: asyncio.Event) -> int:
    platform = LocalServe(cfg)
    try:
        await platform.open()
        await platform.check_files(cfg.files)
    except (ApiFailure, OSError) as err:
        print(f"knpy serve: {err}", file=sys.stderr)
        await platform.stop()
        return 1
    try:
        await platform.start()
    except (ApiFailure, OSError) as err:  # a port in use, most likely
        print(f"knpy serve: cannot start: {err}", file=sys.stderr)
        await platform.stop()
        return 1
    except BaseException:
        await platform.stop()  # nothing a failed start began may outlive it
        raise
    print(
        f"knpy serve: ingress http://{cfg.host}:{cfg.port} (Host: <service>.<namespace>.localhost),"
        f" API {platform.api_url} (kubeconfig {platform.endpoint.kubeconfig}),"
        f" state {platform.state_dir}",
        file=sys.stderr,
        flush=True,
    )
    assert platform.control is not None
    control_exit = asyncio.ensure_future(platform.control.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({control_exit, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        failed = control_exit.done()
        control_exit.cancel()
        if failed:  # without its API nothing of the platform can change: stop it all
            print(
                f"knpy serve: the control process (API server, controllers) exited"
                f" {control_exit.result()}; stopping",
                file=sys.stderr,
                flush=True,
            )
        print("knpy serve: draining ...", file=sys.stderr, flush=True)
        await platform.stop()
        print("knpy serve: stopped", file=sys.stderr, flush=True)
    return 1 if failed else 0


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

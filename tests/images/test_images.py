"""knpy's images, built --offline by images/build.sh and run from their own entrypoints.

One session-scoped build (tests/images/conftest.py; warm from the cache after the first: the
debootstrap base, the wheels and buildah's layers are kept) feeds every test; each image then
runs under chroot isolation on the host's loopback (tests/images/harness.py) and is checked
against Knative's contract: the queue-proxy's environment, proxying, ``K-Network-Probe: queue``,
the Stat protobuf and a SIGTERM drain; the activator's probes, metrics and readiness that waits
for an autoscaler; the autoscaler's stat WebSocket. The activator and autoscaler read the
cluster through a real Kubernetes API: ``python -m controlplane.kubeapi`` on 127.0.0.1, its
kubeconfig copied in.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from images import deps
from shared.ports import free_port
from shared.stat_proto import StatData, decode_stat, encode_wire_stats
from tests.images.harness import (
    COMPONENTS,
    ROOT,
    Built,
    Container,
    http_get,
    image_config,
    wait_for,
)

# The first test pays for the module's build: cold, about three minutes here.
pytestmark = pytest.mark.timeout(900)

NONROOT = "65532:65532"
KUBECONFIG_IN_IMAGE = "/home/nonroot/kubeconfig"
SYSTEM_NAMESPACE = "knative-serving"
START_TIMEOUT_S = 30.0
# Knative's ports per image (config/core/deployments, queue-proxy's sidecar ports).
EXPOSED = {
    "queue-proxy": {"8012/tcp", "8022/tcp", "9090/tcp", "9091/tcp"},
    "activator": {"8012/tcp", "9090/tcp"},
    "autoscaler": {"8080/tcp", "9090/tcp"},
}
KUBELET = {"User-Agent": "kube-probe/1.34"}


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


def _rss_mb(ctr: Container) -> int:
    """Resident memory of the entrypoint's process, for the figures (-s shows them)."""
    rss: int = ctr.entrypoint_process().memory_info().rss
    return round(rss / 1e6)


@contextlib.contextmanager
def running(image: str, log_dir: Path) -> Iterator[Container]:
    with Container(image, log_dir) as ctr:
        yield ctr


# --- what the images are ------------------------------------------------------------------

_FACTS = """
import importlib.util, importlib.metadata, json, os, sys
mod = sys.argv[1]
spec = importlib.util.find_spec(mod + ".config")
print(json.dumps({
    "uid": os.getuid(),
    "missing": [m for m in ("pip", "setuptools", "ensurepip", "pytest", "mypy", "ruff")
                if importlib.util.find_spec(m) is None],
    "cached": os.path.exists(spec.cached),
    "dists": sorted(d.metadata["Name"].lower().replace("_", "-")
                    for d in importlib.metadata.distributions()),
    "proxy_core": importlib.util.find_spec("shared.proxy.server").origin,
}))
"""


@pytest.mark.parametrize("component", COMPONENTS, ids=list(COMPONENTS))
def test_image_properties(component: str, images: dict[str, Built], log_dir: Path) -> None:
    built = images[component]
    config = image_config(built.image)
    labels = config["Labels"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert config["User"] == NONROOT
    assert config["Entrypoint"] == ["/opt/knpy/bin/knpy", component]
    assert set(config["ExposedPorts"]) == EXPOSED[component]
    assert labels["org.opencontainers.image.version"] == version
    # The commit built from (others may have committed since): one in HEAD's history.
    revision = labels["org.opencontainers.image.revision"].removesuffix("-dirty")
    ancestor = subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "--is-ancestor", revision, "HEAD"], check=False
    )
    assert len(revision) == 40 and ancestor.returncode == 0

    package = deps.COMPONENTS[component]
    with running(built.image, log_dir) as ctr:
        facts = json.loads(ctr.exec(["/opt/knpy/bin/python", "-c", _FACTS, package]))
        other_uid = ctr.exec(["/bin/sh", "-c", "id -u"]).strip()
    assert facts["uid"] == 65532 and other_uid == "65532"
    # No installers or dev tools; the component's bytecode compiled into the image.
    assert set(facts["missing"]) == {"pip", "setuptools", "ensurepip", "pytest", "mypy", "ruff"}
    assert facts["cached"]
    # The native build (setup.py, mypyc) wherever images/build.sh could compile: a C compiler
    # on the host (the dev venv has mypyc); a pure-Python wheel only without one.
    native = shutil.which("cc") is not None
    assert facts["proxy_core"].endswith(".so" if native else ".py"), facts["proxy_core"]
    wheels = Path(os.environ.get("KNPY_IMAGES_CACHE", Path.home() / ".cache/knpy-images"))
    wanted, _ = deps.distributions(component, wheels / "context" / "wheels")
    assert set(wanted) <= set(facts["dists"])
    if "kubernetes-asyncio" not in wanted:
        assert "kubernetes-asyncio" not in facts["dists"]


@pytest.mark.parametrize("component", COMPONENTS, ids=list(COMPONENTS))
def test_oci_archive(component: str, images: dict[str, Built], archive_dir: Path) -> None:
    """--archive writes an OCI archive whose ref name is the image (what ctr import reads)."""
    with tarfile.open(archive_dir / f"{component}.tar") as tar:
        layout = json.load(tar.extractfile("oci-layout"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert layout["imageLayoutVersion"] == "1.0.0"
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert refs == [images[component].image]


# --- queue-proxy --------------------------------------------------------------------------


class _App(BaseHTTPRequestHandler):
    """The user container, on the host: echoes the path; /slow answers after 2 s."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(2.0)
        body = json.dumps({"path": self.path, "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _queue_proxy_env(app_port: int) -> dict[str, str]:
    serving, admin, metrics, user_metrics = (free_port() for _ in range(4))
    return {
        # Knative's queue-proxy contract (pkg/reconciler/revision/resources/queue.go).
        "SERVING_NAMESPACE": "default",
        "SERVING_SERVICE": "hello",
        "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001",
        "SERVING_POD": "hello-00001-deployment-abc",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(serving),
        "USER_PORT": str(app_port),
        "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_READINESS_PROBE": json.dumps(
            {"tcpSocket": {"port": app_port, "host": "127.0.0.1"}, "successThreshold": 1}
        ),
        # knpy's own ports (many pods on one host), and a short drain for the test.
        "QUEUE_ADMIN_PORT": str(admin),
        "QUEUE_METRICS_PORT": str(metrics),
        "USER_METRICS_PORT": str(user_metrics),
        "QUEUE_DRAIN_PERIOD_SECONDS": "1",
    }


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param({"SERVING_CONFIGURATION": None}, "SERVING_CONFIGURATION", id="no-config"),
        pytest.param({"CONTAINER_CONCURRENCY": "-1"}, "CONTAINER_CONCURRENCY", id="cc-negative"),
        pytest.param({"SERVING_READINESS_PROBE": "{"}, "SERVING_READINESS_PROBE", id="probe-json"),
    ],
)
def test_queue_proxy_refuses_a_broken_contract(
    images: dict[str, Built], log_dir: Path, change: dict[str, str | None], named: str
) -> None:
    """The image's entrypoint stops at once (exit 2) and names the variable at fault."""
    env = _queue_proxy_env(free_port())
    for key, value in change.items():
        if value is None:
            del env[key]
        else:
            env[key] = value
    with running(images["queue-proxy"].image, log_dir) as qp:
        qp.start(env)
        assert qp.wait(timeout_s=30) == 2
        assert named in qp.logs()


def test_queue_proxy(images: dict[str, Built], log_dir: Path, app_port: int) -> None:
    env = _queue_proxy_env(app_port)
    serving, metrics = env["QUEUE_SERVING_PORT"], env["QUEUE_METRICS_PORT"]
    base = f"http://127.0.0.1:{serving}"
    with running(images["queue-proxy"].image, log_dir) as qp:
        qp.start(env)
        ready_s = wait_for(
            lambda: http_get(base, {"K-Network-Probe": "queue"}).body == b"queue",
            START_TIMEOUT_S, "queue-proxy answers K-Network-Probe", qp.logs,
        )
        print(f"queue-proxy start to ready: {ready_s:.2f} s, {_rss_mb(qp)} MB resident")

        reply = http_get(f"{base}/hello?x=1", {"Host": "hello.default.example.com"})
        assert reply.status == 200
        assert json.loads(reply.body) == {"path": "/hello?x=1", "host": "hello.default.example.com"}
        assert http_get(base, KUBELET).status == 200

        def stat() -> StatData:
            r = http_get(f"http://127.0.0.1:{metrics}/metrics", {"Accept": "application/protobuf"})
            assert r.status == 200 and r.headers["Content-Type"].startswith("application/protobuf")
            return decode_stat(r.body)

        wait_for(lambda: stat().request_count >= 1, 5.0, "a Stat counting the request", qp.logs)
        assert stat().pod_name == env["SERVING_POD"]

        # SIGTERM during a 2 s request: kubelet probes fail at once, requests are still
        # served, the slow one completes, and the process exits 0 after the quiet period.
        slow: dict[str, int] = {}

        def slow_request() -> None:
            slow["status"] = http_get(f"{base}/slow", timeout_s=10).status

        t = threading.Thread(target=slow_request)
        t.start()
        time.sleep(0.3)
        qp.sigterm()
        wait_for(lambda: http_get(base, KUBELET).status != 200, 2.0, "probe fails", qp.logs)
        assert http_get(f"{base}/during-drain").status == 200
        t.join(timeout=10)
        assert slow == {"status": 200}
        assert qp.wait(timeout_s=15) == 0, qp.logs()
        # Knative runs the sidecar with readOnlyRootFilesystem: nothing may be written.
        assert qp.written_files() == set()


# --- activator and autoscaler ---------------------------------------------------------------


class KubeApi:
    """``python -m controlplane.kubeapi`` on 127.0.0.1 and a client for seeding it."""

    def __init__(self, state_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane.kubeapi", "--state-dir", str(state_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.kubeconfig = Path(self.proc.stdout.readline().strip())
        if not self.kubeconfig.is_file():
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise RuntimeError("python -m controlplane.kubeapi did not start")
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.token = config["users"][0]["user"]["token"]
        self.ssl = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )

    def create(self, path: str, body: dict[str, Any]) -> int:
        req = urllib.request.Request(
            self.server + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return err.code

    def stop(self) -> None:
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    api = KubeApi(tmp_path_factory.mktemp("kubeapi"))
    try:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}
        assert api.create("/api/v1/namespaces", ns) in (201, 409)
        # Knative's activator reads config-network once at start and stops without it.
        for name in ("config-network", "config-logging", "config-observability",
                     "config-autoscaler", "config-leader-election"):
            cm = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE}, "data": {}}
            path = f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/configmaps"
            assert api.create(path, cm) in (201, 409)
        # Readable by the images' uid 65532 once copied in.
        api.kubeconfig.chmod(0o644)
        yield api
    finally:
        api.stop()


def _autoscaler_env(stat_port: int, metrics_port: int) -> dict[str, str]:
    return {
        "POD_NAME": "autoscaler-0",
        "POD_IP": "127.0.0.1",
        "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
        "AUTOSCALER_STAT_PORT": str(stat_port),
        "AUTOSCALER_METRICS_PORT": str(metrics_port),
    }


def _start_autoscaler(ctr: Container, kube: KubeApi, stat_port: int, metrics_port: int) -> float:
    ctr.copy_in(kube.kubeconfig, KUBECONFIG_IN_IMAGE)
    ctr.start(_autoscaler_env(stat_port, metrics_port), ["--kubeconfig", KUBECONFIG_IN_IMAGE])
    return wait_for(
        lambda: http_get(f"http://127.0.0.1:{stat_port}/", KUBELET).status == 200,
        START_TIMEOUT_S, "autoscaler answers kubelet probes", ctr.logs,
    )


async def test_autoscaler_takes_a_stat_websocket(
    images: dict[str, Built], kube: KubeApi, log_dir: Path
) -> None:
    stat_port, metrics_port = free_port(), free_port()
    with running(images["autoscaler"].image, log_dir) as ctr:
        ready_s = _start_autoscaler(ctr, kube, stat_port, metrics_port)
        print(f"autoscaler start to ready: {ready_s:.2f} s, {_rss_mb(ctr)} MB resident")
        frame = encode_wire_stats(
            [("default", "hello-00001", StatData(pod_name="activator-0",
                                                 average_concurrent_requests=1.0,
                                                 request_count=1.0))]
        )
        async with aiohttp.ClientSession() as session, session.ws_connect(
            f"ws://127.0.0.1:{stat_port}/", autoping=False, timeout=aiohttp.ClientWSTimeout(5)
        ) as ws:
            await ws.send_bytes(frame)
            # Knative's activator pings and drops the socket without a pong within 10 s.
            await ws.ping(b"knpy")
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"knpy"
            assert not ws.closed
        metrics = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.status == 200 and b"# TYPE" in metrics.body
        ctr.sigterm()
        assert ctr.wait(timeout_s=30) == 0, ctr.logs()
        assert ctr.written_files() == set()


def test_activator_ready_only_with_an_autoscaler(
    images: dict[str, Built], kube: KubeApi, log_dir: Path
) -> None:
    serving, metrics, stat_port, as_metrics = (free_port() for _ in range(4))
    env = {
        # Knative's activator Deployment (config/core/deployments/activator.yaml).
        "POD_NAME": "activator-0",
        "POD_IP": "127.0.0.1",
        "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
        "CONFIG_LOGGING_NAME": "config-logging",
        "CONFIG_OBSERVABILITY_NAME": "config-observability",
        # knpy's knobs: ports on a shared host, the autoscaler's stat WebSocket, a short drain.
        "ACTIVATOR_SERVING_PORT": str(serving),
        "ACTIVATOR_METRICS_PORT": str(metrics),
        "ACTIVATOR_AUTOSCALER_URL": f"ws://127.0.0.1:{stat_port}",
        "ACTIVATOR_DRAIN_TIMEOUT_SECONDS": "1",
    }
    base = f"http://127.0.0.1:{serving}"
    with running(images["activator"].image, log_dir) as act:
        act.copy_in(kube.kubeconfig, KUBECONFIG_IN_IMAGE)
        act.start(env, ["--kubeconfig", KUBECONFIG_IN_IMAGE])
        up_s = wait_for(
            lambda: http_get(base, {"K-Network-Probe": "activator"}).body == b"activator",
            START_TIMEOUT_S, "activator answers K-Network-Probe", act.logs,
        )
        print(f"activator start to serving: {up_s:.2f} s")
        # Knative's HealthHandler: not ready while the stat WebSocket is down.
        for _ in range(5):
            assert http_get(base, KUBELET).status != 200
            time.sleep(0.1)
        metrics_reply = http_get(f"http://127.0.0.1:{metrics}/metrics")
        assert metrics_reply.status == 200 and b"# TYPE" in metrics_reply.body

        with running(images["autoscaler"].image, log_dir) as autoscaler:
            _start_autoscaler(autoscaler, kube, stat_port, as_metrics)
            ready_s = wait_for(
                lambda: http_get(base, KUBELET).status == 200, START_TIMEOUT_S,
                "activator ready once the autoscaler is up", act.logs,
            )
            rss = _rss_mb(act)
            print(f"activator ready {ready_s:.2f} s after the autoscaler, {rss} MB resident")
            act.sigterm()
            assert act.wait(timeout_s=30) == 0, act.logs()
            autoscaler.sigterm()
            assert autoscaler.wait(timeout_s=30) == 0, autoscaler.logs()
            assert act.written_files() == set()
            assert autoscaler.written_files() == set()

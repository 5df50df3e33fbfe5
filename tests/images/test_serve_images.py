"""``knpy serve --images``: the three images together against knpy serve's API, end to end.

The session's build (tests/images/conftest.py) feeds a real ``knpy serve --images`` (the e2e
harness: free loopback ports, its own state dir): its kubelet runs the activator, the
autoscaler and every revision's queue-proxy from those images under buildah's chroot
isolation, and the Service's app as a host process. A Service that starts at zero pods
(``initial-scale: 0``) then gets one request through the ingress: activator -> autoscaler ->
scale 0 -> 1 -> the pod's queue-proxy -> the app, 200. The processes are then checked where
they run: each component's entrypoint is below knpy serve, chrooted into its image's root
filesystem (``/proc/<pid>/root``), as the image's user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from controlplane.containers import ImageRuntime
from shared.ports import free_port
from tests.e2e.harness import REPO_ROOT, STEP_S, Serve, hello_yaml, serving
from tests.images.harness import Built, buildah

# Alone, this module pays for the session's build (cold: about three minutes).
pytestmark = pytest.mark.timeout(900)

HELLO = "hello.default.localhost"
SYSTEM_NAMESPACE = "knative-serving"
# Knative's flag for a revision that starts at zero pods, and short windows for the rest.
ALLOW_ZERO = """
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {allow-zero-initial-scale: "true", stable-window: 6s, scale-to-zero-grace-period: 2s}
"""
AT_ZERO = "autoscaling.knative.dev/initial-scale: '0'"
NONROOT_UID = 65532
# knpy serve --images is up in 6-10 s here, 24 s with a load of 9 on the 2 cores (two working
# containers made, the activator's readiness); the revision is at zero ~2 s after its apply.
READY_S = 60.0


def _tag(images: dict[str, Built]) -> str:
    return images["queue-proxy"].image.rsplit(":", 1)[1]


def _in_image(serve: Serve, component: str, pod: str | None = None) -> psutil.Process:
    """The component's entrypoint process below ``knpy serve``, run from its image: the
    image's interpreter and entrypoint, and (for a queue-proxy) the pod named in its env."""
    found = []
    for proc in psutil.Process(serve.proc.pid).children(recursive=True):
        try:
            if proc.cmdline()[:3] != ["/opt/knpy/bin/python", "/opt/knpy/bin/knpy", component]:
                continue
            if pod is not None and proc.environ().get("SERVING_POD") != pod:
                continue
        except psutil.NoSuchProcess:
            continue
        found.append(proc)
    assert len(found) == 1, f"{component} {pod or ''}: {found}"
    return found[0]


def _assert_chrooted(proc: psutil.Process) -> None:
    root = os.readlink(f"/proc/{proc.pid}/root")
    assert root != "/", f"{proc.cmdline()} runs in the host's root"
    # The image's own files, seen through that root (in the container's mount namespace):
    # its virtualenv, which the host does not have.
    assert Path(f"/proc/{proc.pid}/root/opt/knpy/bin/python").exists()
    assert not Path("/opt/knpy").exists()
    assert proc.uids().real == NONROOT_UID


async def _ready_at_zero(s: Serve) -> bool:
    rev = (await s.get("revisions"))["items"]
    if not rev:
        return False
    conditions = {c["type"]: c["status"] for c in rev[0].get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True" and not await s.pods("hello-00001")


def _containers(pod: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c.get("image", "") for c in pod["spec"]["containers"]}


async def test_knpy_serve_runs_the_images_and_serves_from_zero(
    images: dict[str, Built], tmp_path: Path
) -> None:
    async with serving(tmp_path) as start:
        began = time.monotonic()
        s = start(args=["--images", "--image-tag", _tag(images)], start_s=READY_S)
        ready_s = time.monotonic() - began

        # The system pods name the images and run from them.
        system = await s.kube(f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/pods")
        named = {img for p in system["items"] for img in _containers(p).values()}
        assert named == {images["activator"].image, images["autoscaler"].image}
        for component in ("activator", "autoscaler"):
            _assert_chrooted(_in_image(s, component))

        # A revision at zero pods: Knative's allow-zero-initial-scale, read by the webhook
        # from the ConfigMap it just saw change.
        await s.apply(ALLOW_ZERO)
        service = hello_yaml(annotations=AT_ZERO)

        async def accepted() -> bool:
            return (await s.apply(service, check=False))[0] == 0

        await s.until(accepted, "the Service with initial-scale 0 accepted")
        await s.until(lambda: _ready_at_zero(s), "hello-00001 Ready at zero pods", READY_S)

        sent = time.monotonic()
        status, body = await s.request(HELLO)
        cold_s = time.monotonic() - sent
        assert status == 200 and "revision: hello-00001" in body, (status, body)

        pods = await s.pods("hello-00001")
        assert len(pods) == 1
        pod = pods[0]
        assert _containers(pod)["queue-proxy"] == images["queue-proxy"].image
        queue = _in_image(s, "queue-proxy", pod["metadata"]["name"])
        _assert_chrooted(queue)
        # The app is the Service's own command, a host process (knpy pulls no app images).
        app = [
            p
            for p in psutil.Process(s.proc.pid).children(recursive=True)
            if "sampleapp" in " ".join(p.cmdline())
        ]
        assert len(app) == 1 and os.readlink(f"/proc/{app[0].pid}/root") == "/"
        print(
            f"knpy serve --images ready in {ready_s:.1f} s; scale from zero through the"
            f" ingress {cold_s:.2f} s"
        )

        prefix = ImageRuntime({}, s.state.resolve()).prefix
        assert await s.stop() == 0
        # Each component got the kubelet's SIGTERM itself and drained to exit 0 (buildah run
        # answers SIGTERM with SIGKILL: exit 1), and every working container was removed.
        pods_dir = s.state / "pods"
        for log in ("*/activator-*/activator.log", "*/autoscaler-*/autoscaler.log",
                    f"default/{pod['metadata']['name']}/queue-proxy.log"):  # fmt: skip
            (path,) = pods_dir.glob(log)
            text = path.read_text()
            assert "SIGTERM passed to the entrypoint; it exited 0" in text, (path, text[-2000:])
        left = buildah("containers", "--format", "{{.ContainerName}}").split()
        assert not [name for name in left if name.startswith(prefix)]


def test_missing_image_stops_knpy_serve_naming_it(tmp_path: Path) -> None:
    """A tag nobody built: knpy serve stops at start (exit 1) and says what to build."""
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "serve", "--images", "--image-tag", "no-such-tag",
         "--port", str(free_port()), "--api-port", str(free_port()),
         "--state-dir", str(tmp_path / "state")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=STEP_S, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "localhost/knpy/queue-proxy:no-such-tag not found" in proc.stderr
    assert "images/build.sh" in proc.stderr

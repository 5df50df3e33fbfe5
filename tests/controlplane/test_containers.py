"""``knpy serve --images``: which containers run from an image, and the argv of their process.

The pure parts, as tables: Kubernetes' command/args rule against the image's Entrypoint and
Cmd, hostPath volumes as copies, the working container's name, the environment passed in,
the system Deployments in images mode, and the lines of ``buildah run`` that are dropped from
a container's log. tests/images/test_serve_images.py runs all of it for real under buildah.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from controlplane.containers import (
    Image,
    ImageRuntime,
    KnpyImages,
    _copy_stderr,
    host_paths,
    main,
)
from controlplane.system import KUBECONFIG_IN_IMAGE, SystemConfig, system_objects
from shared.kube.resources import DEPLOYMENTS

QP = Image("localhost/knpy/queue-proxy:1", ("/opt/knpy/bin/knpy", "queue-proxy"), (), "65532")
SHELL = Image("localhost/x:1", ("/bin/sh", "-c"), ("echo hi",), "")


@pytest.mark.parametrize(
    ("image", "container", "argv"),
    [
        pytest.param(QP, {}, ["/opt/knpy/bin/knpy", "queue-proxy"], id="entrypoint"),
        pytest.param(
            QP, {"args": ["--kubeconfig", "/k"]},
            ["/opt/knpy/bin/knpy", "queue-proxy", "--kubeconfig", "/k"], id="entrypoint-args",
        ),
        pytest.param(SHELL, {}, ["/bin/sh", "-c", "echo hi"], id="entrypoint-cmd"),
        pytest.param(SHELL, {"args": ["echo bye"]}, ["/bin/sh", "-c", "echo bye"], id="args-cmd"),
        pytest.param(
            SHELL, {"command": ["/bin/true"]}, ["/bin/true"], id="command-replaces-both",
        ),
        pytest.param(
            SHELL, {"command": ["/bin/echo"], "args": [1]}, ["/bin/echo", "1"], id="command-args",
        ),
    ],
)  # fmt: skip
def test_argv_follows_kubernetes_rules(image: Image, container: Any, argv: list[str]) -> None:
    assert image.argv(container) == argv


POD = {
    "metadata": {"name": "activator-abc-x2k4q", "namespace": "knative-serving"},
    "spec": {
        "volumes": [
            {"name": "kubeconfig", "hostPath": {"path": "/state/kubeconfig", "type": "File"}},
            {"name": "scratch", "emptyDir": {}},
        ]
    },
}


@pytest.mark.parametrize(
    ("mounts", "copies"),
    [
        pytest.param([], [], id="none"),
        pytest.param(
            [{"name": "kubeconfig", "mountPath": "/etc/knpy/kubeconfig"}],
            [("/state/kubeconfig", "/etc/knpy/kubeconfig")], id="host-path",
        ),
        pytest.param([{"name": "scratch", "mountPath": "/tmp"}], [], id="not-a-host-path"),
        pytest.param([{"name": "absent", "mountPath": "/x"}], [], id="unknown-volume"),
    ],
)  # fmt: skip
def test_host_path_volumes_become_copies(mounts: list[Any], copies: list[Any]) -> None:
    assert host_paths({"volumeMounts": mounts}, POD) == copies


def test_runtime_argv_passes_only_the_container_env_and_names_the_working_container() -> None:
    runtime = ImageRuntime(
        {QP.ref: QP}, Path("/state"), python="/py", extra_env={"QUEUE_DRAIN_PERIOD_SECONDS": "1"}
    )
    container = {
        "name": "activator",
        "image": QP.ref,
        "args": ["--kubeconfig", "/etc/knpy/kubeconfig"],
        "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/knpy/kubeconfig"}],
    }
    assert runtime.runs(container)
    assert not runtime.runs({"name": "user-container", "image": "knpy/sampleapp"})
    argv = runtime.argv(container, POD, ["POD_NAME", "ACTIVATOR_SERVING_PORT"])
    assert argv == [
        "/py", "-m", "controlplane.containers", "--image", QP.ref,
        "--name", f"{runtime.prefix}activator-abc-x2k4q-activator", "--user", "65532",
        "--env", "ACTIVATOR_SERVING_PORT", "--env", "POD_NAME",
        "--env", "QUEUE_DRAIN_PERIOD_SECONDS",
        "--copy", "/state/kubeconfig", "/etc/knpy/kubeconfig",
        "--", "/opt/knpy/bin/knpy", "queue-proxy", "--kubeconfig", "/etc/knpy/kubeconfig",
    ]  # fmt: skip
    # Two state dirs, two prefixes: one knpy serve never removes another's containers.
    assert runtime.prefix != ImageRuntime({}, Path("/other")).prefix
    assert repr(runtime) == f"<ImageRuntime ['{QP.ref}'] prefix='{runtime.prefix}'>"


def test_system_deployments_in_images_mode() -> None:
    """The image's entrypoint (no command), the kubeconfig as a hostPath volume."""
    images = KnpyImages.named("t1")
    cfg = SystemConfig("/py", "/state/kubeconfig", 40123, images=images)
    deployments = {o["metadata"]["name"]: o for r, o in system_objects(cfg) if r == DEPLOYMENTS}
    for name, image in (("activator", images.activator), ("autoscaler", images.autoscaler)):
        spec = deployments[name]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert "command" not in container
        assert container["image"] == image == f"localhost/knpy/{name}:t1"
        assert container["args"] == ["--kubeconfig", KUBECONFIG_IN_IMAGE]
        assert host_paths(container, {"spec": spec}) == [("/state/kubeconfig", KUBECONFIG_IN_IMAGE)]
    plain = SystemConfig("/py", "/state/kubeconfig", 40123)
    for r, o in system_objects(plain):
        if r == DEPLOYMENTS:
            assert "volumes" not in o["spec"]["template"]["spec"]


def test_buildah_exit_lines_are_dropped_from_the_log() -> None:
    """The log's last line stays the component's own (Kubernetes' termination message)."""
    out = io.BytesIO()
    _copy_stderr(
        io.BytesIO(
            b"queue-proxy: CONTAINER_CONCURRENCY must be >= 0\n"
            b"subprocess exited with status 2\nsubprocess exited with status 2\n"
            b"Error: exit status 2\nsubprocess exited on killed\n"
        ),
        out,
    )
    assert out.getvalue() == b"queue-proxy: CONTAINER_CONCURRENCY must be >= 0\n"


def test_wrapper_refuses_a_call_without_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--image", "x", "--name", "y"])
    assert exc.value.code == 2
    assert "argv" in capsys.readouterr().err

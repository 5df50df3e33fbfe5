"""``knpy func build``: what goes into the image (pure checks), and one real ``--offline``
build with buildah whose container answers as Knative's function contract says."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import pytest

from functions.build import (
    DEFAULT_BASE,
    HOST_DISTRIBUTIONS,
    HOST_MODULES,
    OFFLINE_BASE,
    cache_dir,
    containerfile,
    function_requirements,
    image_exists,
    plan,
)
from functions.project import FunctionProject, ProjectError
from shared.ports import free_port
from tests.images.harness import Container, http_get, image_config, remove_image, require_tools

ROOT = Path(__file__).resolve().parents[2]


def _deps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("images_deps", ROOT / "images" / "deps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_holds_every_module_and_distribution_the_host_imports() -> None:
    deps = _deps()
    deps.FIRST_PARTY = (*deps.FIRST_PARTY, "functions", "eventing")
    modules, third_party = deps.closure(["functions.host"], shallow=())
    for module in modules:
        path = deps.module_file(module).relative_to(ROOT).as_posix()
        assert any(path == m or path.startswith(m + "/") for m in HOST_MODULES), path
    import importlib.metadata

    owners = importlib.metadata.packages_distributions()
    wanted = {owners[name.split(".")[0]][0] for name in third_party}
    # every distribution must be named (the host has no indirect ones since functions/server.py).
    assert wanted <= set(HOST_DISTRIBUTIONS), wanted


def fn(tmp_path: Path, doc: dict[str, object] | None = None) -> FunctionProject:
    return FunctionProject(tmp_path, "fn", "python", "http", (), doc or {})


def test_plan_names_and_bases(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["httpx>=0.27"]\n')
    p = plan(fn(tmp_path), image=None, offline=True, base=None, engine="buildah")
    assert p.image == "localhost/knpy-func/fn:latest" and p.base == OFFLINE_BASE
    assert p.requirements[-1] == "httpx>=0.27"
    assert any(r.startswith("httptools==") for r in p.requirements)
    named = plan(fn(tmp_path, {"image": "reg/x:1"}), image=None, offline=False, base=None,
                 engine="docker")  # fmt: skip
    assert (named.image, named.base) == ("reg/x:1", DEFAULT_BASE)
    with pytest.raises(ProjectError, match="exclude each other"):
        plan(fn(tmp_path), image=None, offline=True, base="x", engine="buildah")


def test_a_bad_pyproject_is_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(ProjectError, match=r"pyproject\.toml: not valid TOML"):
        function_requirements(tmp_path)
    assert function_requirements(tmp_path / "nowhere") == []


def test_the_containerfile_runs_the_host_as_nonroot_on_port_8080(tmp_path: Path) -> None:
    text = containerfile(fn(tmp_path))
    assert 'ENTRYPOINT ["/opt/func/bin/python", "-m", "functions.host", "/workspace"]' in text
    assert "USER 65532:65532" in text and "EXPOSE 8080" in text and "PORT=8080" in text


@pytest.fixture
def offline_base() -> None:
    """The --offline base, made by images/build.sh when this machine has none yet (the lock
    tests/images takes: one build at a time)."""
    require_tools()
    lock = Path(tempfile.gettempdir()) / "knpy-images-build.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not image_exists("buildah", OFFLINE_BASE):
            tag = f"func-base-{os.getpid()}"
            subprocess.run(
                ["bash", str(ROOT / "images" / "build.sh"), "--offline", "--engine", "buildah",
                 "--tag", tag, "queue-proxy"],
                cwd=ROOT, check=True, capture_output=True, timeout=900,
            )  # fmt: skip
            remove_image(f"localhost/knpy/queue-proxy:{tag}")


# On a machine without the base, the fixture builds it (debootstrap, knpy's native wheel, an
# image: minutes), as tests/images does under the same bound.
@pytest.mark.timeout(900)
def test_build_offline_and_run_the_image(offline_base: None, tmp_path: Path) -> None:
    name = f"build-{os.getpid()}"
    image = f"localhost/knpy-func/{name}:test"
    subprocess.run(
        [sys.executable, "-m", "shared.cli", "func", "create", name],
        cwd=tmp_path, check=True, capture_output=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "func", "build", "-p", str(tmp_path / name),
         "--offline", "--engine", "buildah", "-i", image],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.returncode == 0, proc.stderr
        assert f"Function built: {image}" in proc.stdout
        assert (tmp_path / name / ".func" / "built-image").read_text().strip() == image
        config = image_config(image)
        assert config["User"] == "65532:65532"
        assert config["Labels"]["function.knative.dev/name"] == name
        port = free_port()
        with Container(image, tmp_path) as c:
            c.start({"PORT": str(port)})
            deadline = time.monotonic() + 30
            while True:
                try:
                    ready = http_get(f"http://127.0.0.1:{port}/health/readiness", timeout_s=1)
                    break
                except OSError:
                    assert time.monotonic() < deadline, c.logs()
                    time.sleep(0.1)
            assert ready.status == 200
            reply = http_get(f"http://127.0.0.1:{port}/")
            assert (reply.status, reply.body) == (200, b"OK"), reply
            assert c.entrypoint_process().uids().real == 65532
        print(f"build {time.monotonic() - started:.1f} s")
    finally:
        remove_image(image)
        shutil.rmtree(cache_dir() / "function-context" / name, ignore_errors=True)

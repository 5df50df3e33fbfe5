"""``knpy func build``: the function as an OCI image, with no buildpack builder to download.

Knative's ``func build`` runs Cloud Native Buildpacks by default, whose Python builder is an
image of several GB that the first build pulls (knative/func#2202), or its ``host`` builder,
which lays the function and its dependencies over ``python:3.13-slim``
(pkg/oci/python_builder.go). This is the second way through knpy's images machinery
(images/README.md): a Containerfile built by buildah (``bud --isolation chroot``) or Docker,
on the base images/build.sh uses:

- default: ``docker.io/library/python:3.11-slim-bookworm`` (``--base`` another);
- ``--offline``: ``localhost/knpy/debian-python3:bookworm``, Debian's python3 that
  ``bash images/build.sh --offline`` makes once with debootstrap; nothing is pulled.

Every wheel is fetched on the host by pip (``pip download --only-binary`` for CPython 3.11 on
manylinux, kept in ``$KNPY_IMAGES_CACHE/function-wheels-<hash>``), so the image build has no
network: the function host's own dependencies pinned to the versions this knpy runs with
(``HOST_DISTRIBUTIONS``), and the function's ``[project].dependencies`` from its
pyproject.toml. knpy's part is only the host's modules (``HOST_MODULES``: the ``functions``
package, ``shared/cloudevent.py`` and ``shared/gosyntax.py``), not knpy's wheel: the image
carries no kubernetes client and no platform.

The image: a virtualenv at /opt/func (pip removed, bytecode compiled), the function's
directory at /workspace (without .func, .git, .venv and caches), uid 65532, ``PORT=8080``,
``EXPOSE 8080``, entrypoint ``python -m functions.host /workspace``: Knative's contract for a
function's container (it listens on $PORT, health at /health/liveness and /health/readiness).
Its name is ``--image``, else func.yaml's ``image``, else
``localhost/knpy-func/<name>:latest``; ``.func/built-image`` records it for ``deploy``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from functions.project import FunctionProject, ProjectError, load

__all__ = [
    "BUILT_IMAGE_FILE",
    "HOST_DISTRIBUTIONS",
    "HOST_MODULES",
    "BuildPlan",
    "build_command",
    "containerfile",
    "function_requirements",
    "plan",
]

KNPY_ROOT: Final = Path(__file__).resolve().parents[1]
# The function host's first-party modules (tests/functions/test_build.py checks them against
# the import closure of functions.host that images/deps.py computes).
HOST_MODULES: Final = (
    "functions",
    "shared/__init__.py",
    "shared/cloudevent.py",
    "shared/gosyntax.py",  # func.yaml's Go durations (functions/project.py duration_s)
)
# Top-level imports of those modules that no standard library module provides, by the
# distribution that holds them (the same test checks the list).
HOST_DISTRIBUTIONS: Final = ("httptools", "uvloop", "PyYAML", "cloudevents")
DEFAULT_BASE: Final = "docker.io/library/python:3.11-slim-bookworm"  # images/build.sh's
OFFLINE_BASE: Final = "localhost/knpy/debian-python3:bookworm"  # images/build.sh --offline's
TARGET_PYTHON: Final = "3.11"  # both bases' python3
BUILT_IMAGE_FILE: Final = "built-image"
_SKIPPED: Final = frozenset(
    {".func", ".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
)
BUILD_TIMEOUT_S: Final = 900.0


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """What one build makes, from what."""

    image: str
    base: str
    engine: str  # buildah | docker
    requirements: tuple[str, ...]  # pip requirement strings, host's then the function's


def function_requirements(root: Path) -> list[str]:
    """The function's ``[project].dependencies`` (its pyproject.toml), [] without one.

    Raises:
        ProjectError: a pyproject.toml that does not parse.
    """
    path = root / "pyproject.toml"
    if not path.is_file():
        return []
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ProjectError(f"{path}: not valid TOML: {err}") from None
    deps = (doc.get("project") or {}).get("dependencies") or []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ProjectError(f"{path}: [project].dependencies must be a list of strings")
    return list(deps)


def host_requirements() -> list[str]:
    """HOST_DISTRIBUTIONS pinned to the versions installed here (the image runs the host with
    what it was tested with)."""
    out = []
    for name in HOST_DISTRIBUTIONS:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return out


def plan(
    project: FunctionProject,
    *,
    image: str | None,
    offline: bool,
    base: str | None,
    engine: str,
) -> BuildPlan:
    """Decide the image's name, base and requirements (no I/O beyond reading the project).

    Raises:
        ProjectError: --offline with --base, or an unknown engine.
    """
    if offline and base:
        raise ProjectError("--offline and --base exclude each other (as in images/build.sh)")
    if engine not in ("buildah", "docker"):
        raise ProjectError(f"--engine {engine!r}: want buildah or docker")
    name = image or str(project.doc.get("image") or "") or default_image(project.name)
    reqs = (*host_requirements(), *function_requirements(project.root))
    return BuildPlan(name, OFFLINE_BASE if offline else (base or DEFAULT_BASE), engine, reqs)


def default_image(name: str) -> str:
    return f"localhost/knpy-func/{name}:latest"


def containerfile(project: FunctionProject) -> str:
    """The image's definition; the context holds wheels/ (with requirements.txt), knpy/ (the
    host's modules) and function/ (the function's directory)."""
    title = f"knpy function {project.name}"
    return f"""\
ARG BASE={DEFAULT_BASE}
FROM ${{BASE}} AS build
COPY wheels/ /wheels/
RUN set -eu; \\
    python3 -m venv /opt/func; \\
    /opt/func/bin/python -m pip install --quiet --no-index --no-compile --find-links /wheels \\
        -r /wheels/requirements.txt; \\
    /opt/func/bin/python -m pip uninstall --quiet --yes pip setuptools || true; \\
    rm -f /opt/func/bin/pip* /opt/func/bin/activate* /opt/func/bin/Activate.ps1
COPY knpy/ /opt/func/knpy/
RUN /opt/func/bin/python -m compileall -q /opt/func

FROM ${{BASE}}
COPY --from=build /opt/func /opt/func
COPY function/ /workspace/
ENV PATH=/opt/func/bin:/usr/local/bin:/usr/bin:/bin \\
    PYTHONPATH=/opt/func/knpy \\
    PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    LANG=C.UTF-8 \\
    PORT=8080
LABEL org.opencontainers.image.title="{title}" \\
      function.knative.dev/name="{project.name}" \\
      function.knative.dev/runtime="{project.runtime}"
USER 65532:65532
WORKDIR /workspace
EXPOSE 8080
ENTRYPOINT ["/opt/func/bin/python", "-m", "functions.host", "/workspace"]
"""


# -- the build (I/O) -----------------------------------------------------------------------------
def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "knpy-images"
    return Path(os.environ.get("KNPY_IMAGES_CACHE") or default)


def _run(cmd: Sequence[str], what: str, timeout_s: float = BUILD_TIMEOUT_S) -> str:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        raise ProjectError(f"{what}: {cmd[0]} is not installed (bash images/ci-deps.sh)") from None
    except subprocess.TimeoutExpired:
        raise ProjectError(f"{what}: no answer after {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        raise ProjectError(f"{what} failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    return proc.stdout


def _wheels(requirements: Sequence[str], say: bool) -> Path:
    """Every wheel the requirements need for the image's Python, downloaded once per set."""
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]
    arch = platform.machine()
    dest = cache_dir() / f"function-wheels-{key}-{arch}"
    if (dest / ".complete").is_file():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    # pip does not widen --platform to older manylinux tags: list them (as images/build.sh).
    platforms = [f"manylinux2014_{arch}"] + [f"manylinux_2_{m}_{arch}" for m in range(17, 37)]
    if say:
        print(f"Downloading {len(requirements)} requirements' wheels (once)", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
           "--only-binary=:all:", "--python-version", TARGET_PYTHON, "--implementation", "cp",
           "--abi", f"cp{TARGET_PYTHON.replace('.', '')}"]  # fmt: skip
    for p in platforms:
        cmd += ["--platform", p]
    _run([*cmd, *requirements], "pip download of the function's requirements")
    (dest / ".complete").touch()
    return dest


def _write_if_changed(path: Path, data: bytes) -> None:
    """Keep a file's mtime when its bytes are the same (the engine's layer cache holds)."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _sync_tree(src: Path, dest: Path, keep: set[Path]) -> None:
    for item in sorted(src.iterdir()):
        if item.name in _SKIPPED or item.name.endswith(".pyc"):
            continue
        target = dest / item.name
        if item.is_dir():
            _sync_tree(item, target, keep)
        elif item.is_file():
            _write_if_changed(target, item.read_bytes())
            keep.add(target)


def _context(project: FunctionProject, build: BuildPlan, wheels: Path) -> Path:
    """The build context under the cache (``function-context/<name>``), files rewritten only
    when their bytes change; files no longer there removed."""
    ctx = cache_dir() / "function-context" / project.name
    keep: set[Path] = set()
    for whl in sorted(wheels.glob("*.whl")):
        target = ctx / "wheels" / whl.name
        if not target.is_file() or target.stat().st_size != whl.stat().st_size:
            _write_if_changed(target, whl.read_bytes())
        keep.add(target)
    req = ctx / "wheels" / "requirements.txt"
    _write_if_changed(req, ("\n".join(build.requirements) + "\n").encode())
    keep.add(req)
    for module in HOST_MODULES:
        src = KNPY_ROOT / module
        if src.is_dir():
            _sync_tree(src, ctx / "knpy" / module, keep)
        else:
            target = ctx / "knpy" / module
            _write_if_changed(target, src.read_bytes())
            keep.add(target)
    _sync_tree(project.root, ctx / "function", keep)
    cf = ctx / "Containerfile"
    _write_if_changed(cf, containerfile(project).encode())
    keep.add(cf)
    for path in sorted(ctx.rglob("*"), reverse=True):
        if path.is_file() and path not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return ctx


def image_exists(engine: str, image: str) -> bool:
    cmd = (
        ["docker", "image", "inspect", image]
        if engine == "docker"
        else ["buildah", "inspect", "--type", "image", image]
    )
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60, check=False).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def pick_engine(given: str | None) -> str:
    """``--engine``, else Docker when ``docker info`` answers, else buildah (images/build.sh)."""
    if given:
        return given
    try:
        ok = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
        if ok.returncode == 0:
            return "docker"
    except (FileNotFoundError, subprocess.TimeoutExpired):
        pass
    return "buildah"


def build(project: FunctionProject, build_plan: BuildPlan, *, say: bool = True) -> str:
    """Make the image; its name.

    Raises:
        ProjectError: the offline base is missing, a wheel cannot be had, the build fails.
    """
    if build_plan.base == OFFLINE_BASE and not image_exists(build_plan.engine, OFFLINE_BASE):
        raise ProjectError(
            f"the offline base {OFFLINE_BASE} is not built yet: run `bash images/build.sh "
            f"--offline --engine {build_plan.engine}` once (it makes it with debootstrap)"
        )
    wheels = _wheels(build_plan.requirements, say)
    ctx = _context(project, build_plan, wheels)
    args = ["-t", build_plan.image, "-f", str(ctx / "Containerfile"),
            "--build-arg", f"BASE={build_plan.base}"]  # fmt: skip
    if build_plan.engine == "docker":
        cmd = ["docker", "build", "--quiet", *args, str(ctx)]
    else:
        cmd = ["buildah", "bud", "--quiet", "--isolation", "chroot", "--layers", *args, str(ctx)]
    _run(cmd, f"building {build_plan.image} with {build_plan.engine}")
    project.run_dir.mkdir(exist_ok=True)
    (project.run_dir / BUILT_IMAGE_FILE).write_text(build_plan.image + "\n")
    return build_plan.image


def built_image(project: FunctionProject) -> str:
    """The image the last ``knpy func build`` of this directory made, or ""."""
    try:
        return (project.run_dir / BUILT_IMAGE_FILE).read_text().strip()
    except OSError:
        return ""


def build_command(args: argparse.Namespace) -> int:
    """``knpy func build`` (functions/cli.py)."""
    project = load(args.path)
    engine = pick_engine(args.engine)
    build_plan = plan(
        project, image=args.image, offline=args.offline, base=args.base, engine=engine
    )
    started = time.monotonic()
    print(f"Building {build_plan.image} ({engine}, base {build_plan.base})", file=sys.stderr)
    image = build(project, build_plan)
    print(f"Function built: {image} ({time.monotonic() - started:.1f} s)")
    return 0

"""images/deps.py (what a component imports) and images/strip_wheels.py, on small real inputs."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from images import deps, strip_wheels

# A first-party tree: shared/ with one module per import style.
TREE = {
    "shared/__init__.py": "",
    "shared/top.py": "import alpha\nfrom . import rel\n",
    "shared/rel.py": "from .deep.leaf import x\n",
    "shared/deep/__init__.py": "import beta.sub\n",
    "shared/deep/leaf.py": "x = 1\n",
    "shared/lazy.py": "def f():\n    import gamma\n",
    "shared/typed.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import delta\nelse:\n"
        "    import epsilon\n"
    ),
    "shared/entry.py": "import zeta\ndef run():\n    import eta\n    from shared import lazy\n",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel, text in TREE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("root", "modules", "third_party"),
    [
        pytest.param(
            "shared.top",
            {"shared", "shared.top", "shared.rel", "shared.deep", "shared.deep.leaf"},
            {"alpha", "beta.sub"},
            id="plain-relative-and-package-inits",
        ),
        pytest.param("shared.lazy", {"shared", "shared.lazy"}, {"gamma"}, id="lazy-in-function"),
        pytest.param(
            "shared.typed", {"shared", "shared.typed"}, {"epsilon"}, id="type-checking-skipped"
        ),
        pytest.param(
            "shared.entry", {"shared", "shared.entry"}, {"zeta"}, id="entry-module-level-only"
        ),
    ],
)
def test_closure(tree: Path, root: str, modules: set[str], third_party: set[str]) -> None:
    seen, found = deps.closure([root], root=tree, shallow=["shared.entry"])
    assert seen == modules
    # ``typing`` is the standard library; ``x`` is an attribute, not a module.
    assert {n for n in found if n.split(".")[0] != "typing"} == third_party


def test_queue_proxy_needs_no_aiohttp_or_kubernetes() -> None:
    """The real tree: the queue-proxy's imports stay small (its image depends on it)."""
    _, found = deps.closure(deps.component_roots("queue-proxy"))
    tops = {n.split(".")[0] for n in found}
    assert {"uvloop", "httptools"} <= tops
    assert not tops & {"aiohttp", "kubernetes_asyncio"}


def test_strip_wheel_keeps_the_module_loadable(tmp_path: Path) -> None:
    """uvloop's wheel from PyPI ships loop.so with debug info: stripped, it still runs."""
    import uvloop

    strip = shutil.which("strip")
    assert strip is not None, "binutils' strip is needed (images/ci-deps.sh environment)"
    package = Path(uvloop.__file__).parent
    so = next(package.glob("loop*.so"))
    wheel = tmp_path / "uvloop-0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        names = []
        for f in sorted(package.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                name = f"uvloop/{f.relative_to(package).as_posix()}"
                zf.write(f, name)
                names.append(name)
        zf.writestr("uvloop-0.dist-info/RECORD", "".join(f"{n},,\n" for n in names))
    before = wheel.stat().st_size

    saved = strip_wheels.strip_wheel(wheel, strip)
    if saved == 0:
        pytest.fail(f"{so.name} had no debug symbols to strip: pick another extension")
    assert wheel.stat().st_size < before

    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(f"uvloop/{so.name}")
        record = zf.read("uvloop-0.dist-info/RECORD").decode()
        zf.extractall(tmp_path / "site")
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert f"uvloop/{so.name},sha256={digest},{len(data)}" in record.splitlines()
    # The stripped extension still imports and runs a loop.
    code = "import uvloop; print(uvloop.run(__import__('asyncio').sleep(0, 'ok')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path / "site", capture_output=True, text=True,
        timeout=60, check=False, env={"PYTHONPATH": str(tmp_path / "site")},
    )
    assert out.stdout.strip() == "ok", out.stderr


# knpy's top-level packages (pyproject's packages.find): an image keeps only those its
# component imports (deps.packages) and removes the rest.
_PYPROJECT = tomllib.loads((deps.ROOT / "pyproject.toml").read_text())
KNPY_PACKAGES = tuple(
    p.rstrip("*") for p in _PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
)
_BLOCKER = """
import importlib.abc, sys
class Removed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REMOVED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
        return None
sys.meta_path.insert(0, Removed())
from shared.cli import main
sys.exit(main(ARGV))
"""


@pytest.mark.parametrize("component", sorted(deps.COMPONENTS))
def test_the_console_script_runs_with_only_the_image_packages(component: str) -> None:
    """The image's entrypoint is ``knpy <component>``: with the packages its image removes
    unimportable, the console script still parses its command line (twice a subcommand's
    eager import of eventing/ or functions/ broke every image; this finds it in a second)."""
    kept = set(deps.packages(component))
    removed = sorted(set(KNPY_PACKAGES) - kept)
    assert removed, "the image would keep every package"
    # --help builds the whole parser (every subcommand) as ``knpy <component>`` does first.
    code = _BLOCKER.replace("REMOVED", repr(set(removed))).replace("ARGV", repr(["--help"]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        cwd=deps.ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert component in out.stdout

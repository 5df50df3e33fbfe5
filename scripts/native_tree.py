"""Build a copy of the source tree with the native hot path compiled in place (KNPY_NATIVE=1).

Why a copy: an in-place build in the working tree would leave .so files beside the .py files
they were built from, and Python imports the .so first, so an edit would silently not run.
The benchmarks (``--native``) and tests/native run the components from such a copy instead
(its root first on sys.path). A copy whose sources are unchanged is reused.

Usage: .venv/bin/python scripts/native_tree.py DEST   (prints DEST when it is ready)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "queueproxy", "activator", "autoscaler", "controlplane", "eventing",
            "functions")  # fmt: skip
FILES = ("pyproject.toml", "setup.py", "README.md")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.so", "*.c")


def native_modules() -> list[str]:
    """The modules the native build compiles, as paths (pyproject.toml's [tool.knpy] native)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["tool"]["knpy"]["native"])


def _sources_key() -> str:
    digest = hashlib.sha256()
    paths = [ROOT / f for f in FILES]
    for pkg in PACKAGES:
        paths.extend(sorted((ROOT / pkg).rglob("*.py")))
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build(dest: Path) -> Path:
    """The native tree at ``dest``, built unless it is there for the current sources."""
    key = _sources_key()
    stamp = dest / ".native-sources"
    if stamp.is_file() and stamp.read_text() == key:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in FILES:
        shutil.copy2(ROOT / name, dest / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=_IGNORE)
    log = dest / "build.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=dest,
            env={**os.environ, "KNPY_NATIVE": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError("the native build failed; the end of its log:\n" + "\n".join(tail))
    stamp.write_text(key)
    return dest


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(build(Path(sys.argv[1]).resolve()))
    except RuntimeError as err:
        print(f"native_tree: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build a copy of the source tree with the native hot path compiled in place (KNPY_NATIVE=1).

Why a copy: an in-place build in the working tree would leave .so files beside the .py files
they were built from, and Python imports the .so first, so an edit would silently not run.
The benchmarks (``--native``) and tests/native run the components from such a copy instead
(its root first on sys.path), and images/build.sh makes the images' wheel from it (``--wheel``),
so that one compilation (about a minute of gcc) serves them all. A copy whose sources are
unchanged is reused; a lock keeps two builders (two test workers) from racing on one copy.

Usage: .venv/bin/python scripts/native_tree.py [DEST] [--wheel DIR]
       (prints DEST, or the wheel's path, when it is ready; DEST defaults to ~/.cache/knpy/native)
"""

from __future__ import annotations

import argparse
import fcntl
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
DEFAULT = Path.home() / ".cache" / "knpy" / "native"


def native_modules() -> list[str]:
    """The modules the native build compiles, as paths (pyproject.toml's [tool.knpy] native)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["tool"]["knpy"]["native"])


def _sources_key() -> str:
    digest = hashlib.sha256()
    paths = [ROOT / "pyproject.toml", ROOT / "setup.py"]  # README.md: the wheel's text only
    for pkg in PACKAGES:
        paths.extend(sorted((ROOT / pkg).rglob("*.py")))
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build(dest: Path = DEFAULT) -> Path:
    """The native tree at ``dest``, built unless it is there for the current sources."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (dest.parent / f"{dest.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(dest)


def wheel(out: Path, tree: Path = DEFAULT) -> Path:
    """knpy's native wheel in ``out``, made from the tree (built first if stale).

    No build isolation: the tree's build/ directory already holds the compiled objects, so
    setuptools links them again instead of compiling (this Python needs setuptools and mypy:
    the dev venv has both).
    """
    tree = build(tree)
    out.mkdir(parents=True, exist_ok=True)
    with (tree.parent / f"{tree.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "--wheel-dir", str(out), str(tree)], tree, tree / "wheel.log")  # fmt: skip
    wheels = sorted(out.glob("knpy-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"pip wheel made no knpy wheel in {out}")
    return wheels[-1]


def _run(argv: list[str], cwd: Path, log: Path) -> None:
    with log.open("wb") as out:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env={**os.environ, "KNPY_NATIVE": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{' '.join(argv[:4])} failed; the end of its log:\n" + "\n".join(tail))


def _build(dest: Path) -> Path:
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
    _run([sys.executable, "setup.py", "build_ext", "--inplace"], dest, dest / "build.log")
    stamp.write_text(key)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--wheel", type=Path, metavar="DIR", help="also make the wheel in DIR")
    args = parser.parse_args()
    try:
        if args.wheel is not None:
            print(wheel(args.wheel.resolve(), args.dest.resolve()))
        else:
            print(build(args.dest.resolve()))
    except RuntimeError as err:
        print(f"native_tree: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

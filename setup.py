"""The optional native build: with KNPY_NATIVE=1, mypyc compiles the data plane's hot path.

Why mypyc: the proxies' remaining cost per request is CPython running their typed Python
(benchmarks/queueproxy/README.md); mypyc compiles that same code, unchanged, to a C
extension (native attribute slots, direct calls), so there is one source, checked by mypy
--strict, and no C of ours to keep. The modules are listed in pyproject.toml's
[tool.knpy] native; each has a pure-Python twin (the .py file), which is what runs without
the build (the editable development install, tests). Without KNPY_NATIVE=1 this is a plain
setuptools build; pyproject.toml holds everything else.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).resolve().parent


def native_modules() -> list[str]:
    with (HERE / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["tool"]["knpy"]["native"])


kwargs: dict[str, Any] = {}
if os.environ.get("KNPY_NATIVE") == "1":
    # setuptools' build backend returns setup_requires from get_requires_for_build_wheel, so
    # pip installs mypy into the isolated build environment first; on that first pass it is
    # not importable yet, and the extensions are declared on the second.
    kwargs["setup_requires"] = ["mypy>=1.10"]
    try:
        from mypyc.build import mypycify
    except ImportError:
        pass
    else:
        kwargs["ext_modules"] = mypycify([str(HERE / m) for m in native_modules()], opt_level="3")

setup(**kwargs)

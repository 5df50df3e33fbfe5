"""The KNPY_NATIVE=1 build (setup.py), held to the same tests as the Python it compiles.

mypyc compiles the hot path's source unchanged, but the result differs from CPython running it in
ways the pure-Python suite cannot see: it checks annotations at run time (a value of the wrong type
is a TypeError, not a duck), it calls compiled methods directly (so a test's patch of a class or of
a module global does not reach them), and an interpreted subclass cannot override a compiled
method. So the tree is built once (scripts/native_tree.py) and the unit tests of the proxy core, the
queue-proxy's and the activator's policies, and one file of integration tests with real
queue-proxy processes, run again in a child pytest with that tree first on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
try:
    import native_tree
finally:
    sys.path.pop(0)

# Run again against the compiled tree. Everything they import from the listed modules is native.
SUITES = [
    "tests/shared/proxy",
    "tests/shared/test_breaker.py",
    "tests/shared/test_metrics.py",
    "tests/shared/test_request_stats.py",
    "tests/queueproxy/test_handler.py",
    "tests/queueproxy/test_metrics.py",
    "tests/queueproxy/test_drain.py",
    "tests/queueproxy/test_forwarded.py",
    "tests/activator/test_handler.py",
    "tests/activator/test_throttler.py",
    "tests/activator/test_lb_policy.py",
    "tests/activator/test_revisions.py",
    "tests/activator/test_reporter.py",
    "tests/controlplane/test_ingress.py",
    "tests/controlplane/test_ingress_edge.py",
    # Real queue-proxy processes from the tree (qpharness.CODE_ROOT); tests/images runs every
    # component's image, whose wheel is this build, under traffic too.
    "tests/queueproxy/integration/test_proxy.py",
]
# Tests that watch the Python code itself and so cannot see compiled code: this one records
# connection state changes through a subclass's __setattr__ (tests/shared/proxy/conftest.py),
# which compiled methods bypass (they store to the instance's slot directly).
PYTHON_ONLY = ["tests/shared/proxy/test_lifecycle.py::test_a_plain_get_walks_the_tables"]


@pytest.fixture(scope="module")
def tree() -> Path:
    try:
        # Reused while the sources are unchanged (native_tree's stamp), also by images/build.sh.
        return native_tree.build()
    except RuntimeError as err:
        pytest.fail(str(err))


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "KNPY_TEST_CODE_ROOT": str(tree)}


@pytest.mark.timeout(600)
def test_every_listed_module_is_compiled(tree: Path) -> None:
    modules = [m.removesuffix(".py").replace("/", ".") for m in native_tree.native_modules()]
    code = "import importlib as i, sys\nfor m in sys.argv[1:]: print(i.import_module(m).__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=tree,
        env=_env(tree),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(out) == len(modules) > 10
    for module, path in zip(modules, out, strict=True):
        assert path.startswith(str(tree)) and path.endswith(".so"), (module, path)


@pytest.mark.timeout(600)
def test_the_proxy_tests_pass_against_the_compiled_tree(tree: Path) -> None:
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    # append: the tests' rootdir goes after the tree on sys.path, so the tree's modules win.
    pytest += ["--import-mode=append", f"--rootdir={REPO}", "-c", str(REPO / "pyproject.toml")]
    argv = [*pytest, *(f"--deselect={t}" for t in PYTHON_ONLY), *(str(REPO / s) for s in SUITES)]
    done = subprocess.run(argv, cwd=tree, env=_env(tree), capture_output=True, text=True)
    summary = done.stdout.strip().splitlines()[-1:] or [done.stderr[-2000:]]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in summary[0] and "failed" not in summary[0], summary
    # Proof that the run above imported the compiled modules: the Python-only test, run the
    # same way, cannot see compiled code and fails (it passes in the pure-Python suite).
    (python_only,) = PYTHON_ONLY
    probe = subprocess.run(
        [*pytest, str(REPO / python_only)], cwd=tree, env=_env(tree), capture_output=True
    )
    assert probe.returncode == 1, probe.stdout[-2000:]

"""The layering rules of issue 8, checked on the source (AST), transitively within the repo.

- ``shared/`` holds what two components use and imports no component package.
- The pure cores (value types, interfaces, algorithms) import neither asyncio nor aiohttp, even
  through another repo module or a package ``__init__``, so they stay testable without a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = frozenset(
    {"activator", "autoscaler", "queueproxy", "controlplane", "eventing", "functions"}
)
FORBIDDEN_IN_PURE = frozenset({"asyncio", "aiohttp", "uvloop"})
PURE = [
    "shared/kube/resources.py",
    "shared/kube/informer.py",
    "shared/kube/client.py",
    "shared/kube/labels.py",
    "shared/kube/hashing.py",
    "shared/kube/patch.py",
    "shared/breaker.py",
    "autoscaler/aggregation.py",
    "autoscaler/scaling.py",
    "activator/split.py",
    "activator/lb_policy.py",
    "activator/throttler.py",
]
# The ``knpy`` console script dispatches to every component (lazily, inside ``main``); it is
# the one entry point under shared/ until it moves out (platform's shared/cli.py).
ENTRY_POINTS = frozenset({"shared/cli.py"})


def imports(path: Path) -> Iterator[str]:
    """Every module an import statement names (at any depth: lazy imports count too), with
    ``from X import y`` also yielding ``X.y`` (y may be a submodule)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def module_file(name: str) -> Path | None:
    """The repo file that defines module ``name``, or None (stdlib or third party)."""
    p = ROOT.joinpath(*name.split("."))
    for candidate in (p.with_suffix(".py"), p / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def closure(start: Path) -> dict[str, Path]:
    """Every external module imported from ``start``, transitively through repo modules (and
    the ``__init__`` of each package on the way), mapped to the repo file that imports it."""
    seen: set[Path] = set()
    external: dict[str, Path] = {}
    todo = [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        rel = f.relative_to(ROOT).parts
        for i in range(1, len(rel)):  # the packages' __init__ run first
            init = ROOT.joinpath(*rel[:i], "__init__.py")
            if init.is_file():
                todo.append(init)
        for name in imports(f):
            target = module_file(name)
            if target is not None:
                todo.append(target)
            elif module_file(name.rsplit(".", 1)[0]) is None or "." not in name:
                external.setdefault(name.split(".")[0], f)
    return external


def shared_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "shared").rglob("*.py"))


@pytest.mark.parametrize("rel", [f for f in shared_files() if f not in ENTRY_POINTS])
def test_shared_imports_no_component(rel: str) -> None:
    bad = sorted(n for n in imports(ROOT / rel) if n.split(".")[0] in COMPONENTS)
    assert not bad, f"{rel} imports component modules {bad}"


@pytest.mark.parametrize("rel", PURE)
def test_pure_core_has_no_asyncio(rel: str) -> None:
    assert (ROOT / rel).is_file(), rel
    external = closure(ROOT / rel)
    bad = {
        name: str(via.relative_to(ROOT))
        for name, via in external.items()
        if name in FORBIDDEN_IN_PURE
    }
    assert not bad, f"{rel} reaches {bad} (module: imported by)"


def test_the_checker_sees_lazy_and_transitive_imports() -> None:
    """The rules would catch a violation: a repo module that imports asyncio lazily is found
    through a module that only imports it."""
    assert "controlplane" in {n.split(".")[0] for n in imports(ROOT / "shared/cli.py")}
    via = closure(ROOT / "shared/kube/kubeinformer.py")
    assert via["aiohttp"].name in ("kubeinformer.py", "kubeclient.py")
    assert "asyncio" in closure(ROOT / "shared/kube/fake.py")

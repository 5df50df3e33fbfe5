"""Which distributions and which of knpy's packages one component's image needs.

Theory of operation: the components import most third-party modules lazily (inside ``main`` or
behind a setting), so asking a running interpreter what it imported would miss them. Instead
this walks the source: from the component's ``__main__`` (and ``shared.cli``, the ``knpy``
console script, whose module-level imports only: its other subcommands import the platform
lazily) it parses every first-party module it can reach, follows each ``import`` and
``from ... import`` (relative ones too, at any depth inside functions), and skips only imports
under ``if TYPE_CHECKING:``. Each third-party dotted name is mapped to the wheel that holds its
longest importable prefix, read from the file lists of the wheels that ``pip wheel`` filled:
``opentelemetry`` is a namespace package split over five distributions, so top-level names
are not enough. Names no wheel holds are optional imports behind ``importlib`` or
``ImportError`` (the OTLP/gRPC exporter) and are reported, not installed. pip then installs the
distributions and their own requirements from the same directory.

Usage (images/build.sh calls it)::

    python images/deps.py --wheels DIR COMPONENT     # distributions, one a line
    python images/deps.py --packages COMPONENT       # knpy's top-level packages, one a line
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("shared", "queueproxy", "activator", "autoscaler", "controlplane")
# Component (the image and `knpy <component>`) -> the package whose __main__ it runs.
COMPONENTS = {
    "queue-proxy": "queueproxy",
    "activator": "activator",
    "autoscaler": "autoscaler",
}
ENTRY_MODULES = ("shared.cli",)


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of first-party module ``name``, or None when it is not one."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(path: Path, module: str, *, module_level: bool = False) -> set[str]:
    """Dotted names a module imports at run time (``from a import b`` gives ``a`` and ``a.b``).

    ``module_level`` keeps only the imports run when the module is imported (not those inside
    functions).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes: Iterable[ast.AST] = tree.body if module_level else _runtime_nodes(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def closure(
    roots: Iterable[str], root: Path = ROOT, shallow: Iterable[str] = ENTRY_MODULES
) -> tuple[set[str], set[str]]:
    """(first-party modules reached, third-party dotted names imported) from ``roots``.

    Modules in ``shallow`` contribute their module-level imports only.
    """
    shallow = set(shallow)
    seen: set[str] = set()
    third_party: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        top = name.split(".")[0]
        if top not in FIRST_PARTY:
            if top not in sys.stdlib_module_names:
                third_party.add(name)
            continue
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            path = module_file(sub, root)
            if path is None or sub in seen:
                continue
            seen.add(sub)
            todo.extend(imported_names(path, sub, module_level=sub in shallow))
    return seen, third_party


def component_roots(component: str) -> list[str]:
    """The modules `knpy <component>` starts from."""
    if component not in COMPONENTS:
        raise SystemExit(f"deps.py: unknown component {component!r} (known: {sorted(COMPONENTS)})")
    return [*ENTRY_MODULES, f"{COMPONENTS[component]}.__main__"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_modules(wheels: Path) -> dict[str, str]:
    """Importable dotted name -> distribution, from the file list of every wheel in ``wheels``.

    A module ``a/b/c.py`` (or an extension ``c.cpython-311-...so``) gives ``a.b.c``, a package
    ``a/b/__init__.py`` gives ``a.b``; namespace directories give nothing.
    """
    owners: dict[str, str] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        dist = _canonical(wheel.name.split("-")[0])
        with zipfile.ZipFile(wheel) as zf:
            for entry in zf.namelist():
                parts = entry.split("/")
                if parts[0].endswith((".dist-info", ".data")):
                    continue
                leaf = parts[-1]
                if leaf == "__init__.py":
                    dotted = parts[:-1]
                elif leaf.endswith((".py", ".so", ".pyd")):
                    dotted = [*parts[:-1], leaf.split(".")[0]]
                else:
                    continue
                if dotted:
                    owners.setdefault(".".join(dotted), dist)
    return owners


def owner(name: str, modules: dict[str, str]) -> str | None:
    """The distribution holding the longest importable prefix of ``name``, if any."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        dist = modules.get(".".join(parts[:i]))
        if dist is not None:
            return dist
    return None


def distributions(component: str, wheels: Path) -> tuple[list[str], list[str]]:
    """(distributions `knpy <component>` imports, knpy excluded; names no wheel holds)."""
    _, third_party = closure(component_roots(component))
    modules = wheel_modules(wheels)
    found = {name: owner(name, modules) for name in third_party}
    # A name that only a namespace directory holds (``opentelemetry`` itself) is not missing
    # when a longer name under it was found.
    missing = sorted(
        n
        for n, dist in found.items()
        if dist is None and not any(o.startswith(n + ".") and found[o] for o in found)
    )
    return sorted({d for d in found.values() if d} - {"knpy"}), missing


def packages(component: str) -> list[str]:
    """knpy's top-level packages `knpy <component>` reaches."""
    seen, _ = closure(component_roots(component))
    return sorted({m.split(".")[0] for m in seen})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("component", choices=sorted(COMPONENTS))
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--wheels", type=Path, help="wheel directory: print distributions")
    mode.add_argument("--packages", action="store_true", help="print knpy's packages")
    args = parser.parse_args(argv)
    if args.wheels:
        lines, missing = distributions(args.component, args.wheels)
        for name in missing:
            print(f"deps.py: {args.component}: no wheel holds {name} (optional?)", file=sys.stderr)
    else:
        lines = packages(args.component)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

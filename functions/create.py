"""``knpy func create``: a new function directory in Knative's current Python layout.

What Knative's ``func create -l python -t http|cloudevents`` writes (knative/func
templates/python/{http,cloudevents}): ``func.yaml``, ``pyproject.toml``,
``function/__init__.py``, ``function/func.py``, ``tests/test_func.py``, a README and a
``.gitignore``; ``invoke: cloudevent`` in func.yaml for the cloudevents template (its
manifest.yaml). The template files live in functions/templates/<template>/ with a ``.tmpl``
suffix, so that neither the linters nor pytest take them for knpy's own code.

Knative refuses to create into a directory that has files in it (pkg/functions/client.go
Init: "directory is not empty"); so does this, naming what is there.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Final

from functions.project import Invoke, ProjectError, new_doc, valid_name, write

__all__ = ["LANGUAGES", "TEMPLATES", "create", "create_command"]

TEMPLATES_DIR: Final = Path(__file__).resolve().parent / "templates"
TEMPLATES: Final = ("http", "cloudevents")
LANGUAGES: Final = ("python",)
_SUFFIX: Final = ".tmpl"
# Files a fresh directory may hold already (an editor's or git's), as Knative's contentiousFiles.
_HARMLESS: Final = frozenset({".git", ".gitignore", ".idea", ".vscode", ".DS_Store"})


def create(
    root: Path, *, language: str = "python", template: str = "http", name: str | None = None
) -> list[Path]:
    """Write a new function into ``root`` (made if missing). Returns the files written.

    Raises:
        ProjectError: an unknown language or template, an invalid name, or ``root`` not empty.
    """
    if language not in LANGUAGES:
        raise ProjectError(
            f"unknown language {language!r}: knpy writes Python functions (-l python)"
        )
    if template not in TEMPLATES:
        raise ProjectError(
            f"unknown template {template!r}: choose one of {', '.join(TEMPLATES)} (-t)"
        )
    root = root.resolve()
    name = name or root.name
    if not valid_name(name):
        raise ProjectError(
            f"{name!r} is not a valid function name: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit (it becomes a Knative Service name)"
        )
    if root.exists() and not root.is_dir():
        raise ProjectError(f"{root} exists and is not a directory")
    present = sorted(p.name for p in root.iterdir() if p.name not in _HARMLESS) if (
        root.exists()
    ) else []
    if present:
        raise ProjectError(
            f"{root} is not empty ({', '.join(present[:5])}{', ...' if len(present) > 5 else ''})"
            ": create the function in a new directory"
        )
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    source = TEMPLATES_DIR / template
    for tmpl in sorted(source.rglob(f"*{_SUFFIX}")):
        rel = tmpl.relative_to(source).with_suffix("")  # drops .tmpl
        if rel.name == "gitignore":
            rel = rel.with_name(".gitignore")
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        text = tmpl.read_text(encoding="utf-8")
        if rel.suffix == ".md":
            text = text.replace("{name}", name)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    invoke: Invoke = "cloudevent" if template == "cloudevents" else "http"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    written.append(write(root, new_doc(name, invoke, now=now)))
    return written


def create_command(args: argparse.Namespace) -> int:
    """``knpy func create`` (functions/cli.py)."""
    written = create(args.path, language=args.language, template=args.template)
    root = args.path.resolve()
    print(f"Created {args.language} function ({args.template}) in {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    return 0

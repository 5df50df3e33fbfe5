"""knpy func create: Knative's layout, errors that say what to do, the project's own tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from functions.create import create
from functions.project import ProjectError, load
from tests.functions.harness import ROOT, knpy_env

LAYOUT = {
    ".gitignore",
    "README.md",
    "func.yaml",
    "pyproject.toml",
    "function/__init__.py",
    "function/func.py",
    "tests/test_func.py",
}


@pytest.mark.parametrize(
    ("template", "invoke"),
    [pytest.param("http", "http", id="http"), pytest.param("cloudevents", "cloudevent", id="ce")],
)
def test_layout_and_func_yaml(tmp_path: Path, template: str, invoke: str) -> None:
    root = tmp_path / "my-fn"
    written = create(root, template=template)
    assert {str(p.relative_to(root)) for p in written} == LAYOUT
    project = load(root)
    assert (project.name, project.runtime, project.invoke) == ("my-fn", "python", invoke)
    assert "my-fn" in (root / "README.md").read_text()
    assert "invoke" not in project.doc if invoke == "http" else project.doc["invoke"] == invoke


@pytest.mark.parametrize("template", ["http", "cloudevents"])
def test_the_generated_projects_tests_pass(tmp_path: Path, template: str) -> None:
    root = tmp_path / "fn"
    create(root, template=template)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env=knpy_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"template": "event"}, "unknown template 'event'", id="template"),
        pytest.param({"language": "go"}, "unknown language 'go'", id="language"),
        pytest.param({"name": "Bad_Name"}, "not a valid function name", id="name"),
    ],
)
def test_bad_input(tmp_path: Path, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ProjectError) as err:
        create(tmp_path / "fn", **kwargs)
    assert message in str(err.value)
    assert not (tmp_path / "fn").exists()


def test_a_directory_with_files_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "fn"
    root.mkdir()
    (root / "main.py").write_text("")
    (root / ".git").mkdir()
    with pytest.raises(ProjectError, match=r"not empty \(main.py\)"):
        create(root)


def test_the_cli(tmp_path: Path) -> None:
    knpy = [sys.executable, "-c", "import sys; from shared.cli import main; sys.exit(main())"]
    done = subprocess.run(
        [*knpy, "func", "create", "-l", "python", "-t", "cloudevents", str(tmp_path / "ev")],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env=knpy_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "function/func.py" in done.stdout
    bad = subprocess.run(
        [*knpy, "func", "create", "-t", "nope", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env=knpy_env(),
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error: unknown template 'nope': choose one of http, cloudevents")
    assert "Traceback" not in bad.stderr

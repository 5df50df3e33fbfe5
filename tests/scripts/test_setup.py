"""``scripts/setup.sh`` run for real: one progress line on a first install, silence after, and
the log's end with a nonzero exit when a step fails.

Each test runs the script from a copy of the project's packaging files in ``tmp_path`` whose
``.venv`` is made beforehand without pip and sees this checkout's ``.venv`` site-packages
through a ``.pth`` file: pip and every dependency are then already there, so the run installs
only knpy itself (what differs is the build backend's output, which is what made the pages of
warnings) and the test stays well under a minute instead of the first install's minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The first install fetches pip's and the build backend's index pages (two registry look-ups);
# ~15 s here on a busy machine.
INSTALL_TIMEOUT_S = 90.0


def project_copy(tmp_path: Path) -> Path:
    """pyproject.toml, README.md and scripts/setup.sh, with a pip-less .venv that sees ours."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "scripts/setup.sh"):
        shutil.copy(REPO_ROOT / name, root / name)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")],
        check=True,
        timeout=60,
    )
    ours = sysconfig.get_paths()["purelib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = root / ".venv" / "lib" / version / "site-packages"
    (site / "knpy-test-base.pth").write_text(ours + "\n")
    return root


def setup(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup.sh")],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )


@pytest.mark.timeout(2 * INSTALL_TIMEOUT_S)
def test_first_install_shows_one_line_then_nothing(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    first = setup(root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr == ""
    assert first.stdout.startswith("setup: installing knpy") and first.stdout.count("\n") == 1
    log = (root / ".venv" / "setup.log").read_text()
    assert "Successfully installed knpy" in log
    # The cause of the pages of warnings is gone, not only hidden: the license is an SPDX string.
    assert "project.license` as a TOML table is deprecated" not in log
    assert (root / ".venv" / "bin" / "knpy").exists()
    again = setup(root)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_a_failing_step_shows_the_log_and_fails(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('name = "knpy"', 'name = "knpy'))
    # No index: pip's own upgrade finds nothing newer and passes; knpy's install then fails on
    # the broken pyproject.toml before any look-up.
    run = setup(root, PIP_NO_INDEX="1")
    assert run.returncode == 1
    assert run.stdout.count("\n") == 1
    assert "setup: failed: .venv/bin/python -m pip install -e .[dev]" in run.stderr
    assert "TOMLDecodeError" in run.stderr  # the log's end names the cause
    assert not (root / ".venv" / ".knpy-installed").exists()

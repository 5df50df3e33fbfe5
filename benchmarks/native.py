"""The benchmarks' way to the KNPY_NATIVE=1 build: scripts/native_tree.py's compiled tree.

It imports nothing of knpy, so a script can put the tree first on its path (``put_first``)
before its own imports of knpy's modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree() -> Path:
    """The compiled tree, built if it is stale (~1 min; shared with tests/native and the
    images' wheel). Raises RuntimeError when the build fails."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import native_tree
    finally:
        sys.path.pop(0)
    return native_tree.build()


def put_first(argv: list[str]) -> None:
    """With ``--native`` among ``argv``, the compiled tree first on sys.path."""
    if "--native" in argv:
        sys.path.insert(0, str(tree()))

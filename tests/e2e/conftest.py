"""Fixtures: ``serve`` starts real ``knpy serve`` processes, cleaned up whatever happens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from .harness import Serve, serving


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Serve]]:
    async with serving(tmp_path) as start:
        yield start

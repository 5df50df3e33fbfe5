"""One build of knpy's images per test session, shared by every module of tests/images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.harness import Built, build, remove_image, require_tools


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every image test in one xdist worker, so the session's one build serves them all."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.xdist_group("images"))


@pytest.fixture(scope="session")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archives")


@pytest.fixture(scope="session")
def images(archive_dir: Path) -> Iterator[dict[str, Built]]:
    """Every component's image, built --offline under a tag of this run, removed afterwards.

    Warm from the cache after the first build on a machine (the debootstrap base, the wheels
    and buildah's layers are kept): about 25 s; cold about three minutes.
    """
    require_tools()
    tag = f"test-{os.getpid()}"
    built = build(tag, archive=archive_dir)
    try:
        yield built
    finally:
        for b in built.values():
            remove_image(b.image)

"""One build of knpy's images per test session, shared by every module of tests/images.

Under pytest-xdist (scripts/test.sh) two workers may each need the images: their builds take
turns on a lock, so the second one is a warm build from the first one's cache rather than two
debootstraps of the base racing for one cache directory.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.harness import Built, build, remove_image, require_tools


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
    lock = Path(tempfile.gettempdir()) / "knpy-images-build.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        built = build(tag, archive=archive_dir)
    try:
        yield built
    finally:
        for b in built.values():
            remove_image(b.image)

"""Suite-wide set-up: each pytest-xdist worker takes its free ports from a range of its own,
and one worker runs every image build, first.

``shared.ports.free_port`` probes a port and releases it for a child to bind; two workers
probing the kernel's ephemeral range could both get the same port in between (a CI run lost a
test so). Below 32768 the kernel hands out no ports by itself, so disjoint ranges there keep
the workers, and every process they start (which inherits the variable), apart.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from shared.ports import PORT_RANGE_ENV

_FIRST, _LAST = 10_000, 32_767


def _worker_range() -> str:
    """This worker's share of the range; a serial run (no xdist) takes all of it, which also
    keeps its ports off the ephemeral range that outgoing connections draw from."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not worker.startswith("gw") or count < 1:
        return f"{_FIRST}-{_LAST}"
    index = int(worker[2:])
    span = (_LAST - _FIRST + 1) // count
    lo = _FIRST + index * span
    return f"{lo}-{lo + span - 1}"


if not os.environ.get(PORT_RANGE_ENV):
    os.environ[PORT_RANGE_ENV] = _worker_range()


# The image builds (tests/images, and `knpy func build --offline` on the same base) share one
# cache behind a lock and take minutes on a cold machine. As one xdist scope at the head of the
# queue (scripts/test.sh passes --no-loadscope-reorder) they run on one worker from the start
# while the other runs the rest; scheduled as separate files by test count (xdist's default),
# they came last, and the worker that lost the lock waited for the other's build. In this
# order: tests/images makes the base, then the function's build finds it.
_IMAGE_BUILDS = ("tests/images/", "tests/functions/test_build.py")


def _rank(nodeid: str) -> int:
    """The position of ``nodeid``'s image build in _IMAGE_BUILDS; their count for any other."""
    ranks = (i for i, prefix in enumerate(_IMAGE_BUILDS) if nodeid.startswith(prefix))
    return next(ranks, len(_IMAGE_BUILDS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)  # a run with -p no:xdist has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadFileScheduling

    class _ImageBuildsTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if _rank(nodeid) < len(_IMAGE_BUILDS):
                return "image builds"
            return super()._split_scope(nodeid)

    return _ImageBuildsTogether(config, log)

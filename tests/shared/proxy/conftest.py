"""Every state change of every connection in these tests is checked against the tables.

The connections are replaced by subclasses that record each assignment to ``state``; at the end
of each test, every (old, new) pair that differs must be in ``lifecycle``'s transition table.
So the tables are not documentation only: the edges the tests drive prove them.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Any

import pytest

from shared.proxy import server, upstream
from shared.proxy.lifecycle import (
    SERVER_TRANSITIONS,
    UPSTREAM_TRANSITIONS,
    ServerState,
    UpstreamState,
)

Seen = list[tuple[Enum, Enum]]


def _recording(cls: type[Any], seen: Seen) -> type[Any]:
    class Recording(cls):  # type: ignore[misc]
        def __setattr__(self, name: str, value: object) -> None:
            if name == "state":
                old = getattr(self, "state", None)
                if old is not None and isinstance(value, Enum):
                    seen.append((old, value))
            super().__setattr__(name, value)

    Recording.__name__ = cls.__name__
    return Recording


@pytest.fixture(autouse=True)
def transitions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    seen: Seen = []
    monkeypatch.setattr(server, "ServerConnection", _recording(server.ServerConnection, seen))
    monkeypatch.setattr(
        upstream, "UpstreamConnection", _recording(upstream.UpstreamConnection, seen)
    )
    yield seen
    for old, new in seen:
        if old is new:
            continue
        if isinstance(old, ServerState):
            assert isinstance(new, ServerState) and new in SERVER_TRANSITIONS[old], (old, new)
        else:
            assert isinstance(old, UpstreamState) and isinstance(new, UpstreamState)
            assert new in UPSTREAM_TRANSITIONS[old], (old, new)

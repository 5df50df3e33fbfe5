"""The drain's quiet period, as Knative's Drainer, with a fake clock."""

from __future__ import annotations

import pytest

from queueproxy.drain import Drainer, DrainState

QUIET_S = 30.0
TIMEOUT_S = 300.0


@pytest.mark.parametrize(
    ("requests_at", "now", "in_flight", "want"),
    [
        pytest.param((), 29.9, 0, DrainState.DRAINING, id="within the quiet period"),
        pytest.param((), 30.0, 0, DrainState.DONE, id="quiet period over, idle"),
        pytest.param((10.0, 25.0), 54.9, 0, DrainState.DRAINING, id="requests restart the period"),
        pytest.param((10.0, 25.0), 55.0, 0, DrainState.DONE, id="quiet after the last request"),
        pytest.param((), 31.0, 2, DrainState.QUIET, id="quiet but requests in flight"),
        pytest.param((), 329.9, 1, DrainState.QUIET, id="in flight within the revision timeout"),
        pytest.param((), 330.0, 1, DrainState.DONE, id="revision timeout bounds the wait"),
    ],
)
def test_drain_state(
    requests_at: tuple[float, ...], now: float, in_flight: int, want: DrainState
) -> None:
    d = Drainer(QUIET_S, TIMEOUT_S)
    d.start(0.0)
    for t in requests_at:
        d.last_request = t
    assert d.state(now, in_flight) is want


def test_serving_until_started_and_after_reset() -> None:
    d = Drainer(QUIET_S, TIMEOUT_S)
    assert d.state(100.0, 0) is DrainState.SERVING
    assert not d.draining
    d.start(100.0)
    assert d.draining
    d.start(120.0)  # a second SIGTERM does not restart the period
    assert d.state(130.0, 0) is DrainState.DONE
    d.reset()
    assert d.state(200.0, 0) is DrainState.SERVING


def test_request_before_drain_does_not_shorten_it() -> None:
    d = Drainer(QUIET_S, TIMEOUT_S)
    d.last_request = 0.0
    d.start(50.0)
    assert d.state(79.0, 0) is DrainState.DRAINING


@pytest.mark.parametrize(
    ("quiet", "timeout"),
    [pytest.param(-1.0, 1.0, id="negative quiet"), pytest.param(1.0, 0.0, id="zero timeout")],
)
def test_invalid(quiet: float, timeout: float) -> None:
    with pytest.raises(ValueError):
        Drainer(quiet, timeout)

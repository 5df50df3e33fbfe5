"""Tests for shared.request_stats, the scenarios of knative/networking's request_test.go.

Case names are Knative's. Events are (kind, milliseconds since the start): ``in``/``out``
for direct requests, ``inP``/``outP`` for proxied ones, ``report`` to close a window.
"""

from __future__ import annotations

from dataclasses import astuple

import pytest

from shared.request_stats import RequestStats, StatReport

Event = tuple[str, int]


def R(avg: float, count: float, avg_p: float = 0.0, count_p: float = 0.0) -> StatReport:
    return StatReport(
        avg_concurrency=avg,
        avg_proxied_concurrency=avg_p,
        request_count=count,
        proxied_request_count=count_p,
    )


def replay(events: list[Event], start: float = 0.0) -> list[StatReport]:
    stats = RequestStats(start)
    reports = []
    for kind, ms in events:
        now = start + ms / 1000
        match kind:
            case "in" | "inP":
                stats.req_in(now, proxied=kind == "inP")
            case "out" | "outP":
                stats.req_out(now, proxied=kind == "outP")
            case "report":
                reports.append(stats.report(now))
    return reports


@pytest.mark.parametrize(
    ("events", "want"),
    [
        pytest.param([("report", 1000)], [R(0, 0)], id="no requests"),
        pytest.param(
            [("in", 0), ("out", 1000), ("report", 1000)], [R(1, 1)], id="1 request, entire time"
        ),
        pytest.param(
            [("in", 0), ("out", 3000), ("report", 6000)], [R(0.5, 1)], id="1 request, half the time"
        ),
        pytest.param(
            [("in", 0), ("out", 1), ("report", 1000)], [R(1 / 1000, 1)], id="very short request"
        ),
        pytest.param(
            [
                ("in", 0),
                ("out", 300),
                ("in", 300),
                ("out", 600),
                ("in", 600),
                ("out", 1000),
                ("report", 1000),
            ],
            [R(1, 3)],
            id="3 requests, fill entire time",
        ),
        pytest.param(
            [("in", 0), ("in", 100), ("out", 600), ("out", 1000), ("report", 1000)],
            [R(1.5, 2)],
            id="interleaved requests",
        ),
        pytest.param(
            [("in", 0), ("report", 1000), ("out", 1500), ("report", 2000)],
            [R(1, 1), R(0.5, 0)],
            id="request across reporting",
        ),
        pytest.param(
            [
                ("in", 0),
                ("report", 1000),
                ("report", 2000),
                ("report", 3000),
                ("out", 3500),
                ("report", 4000),
            ],
            [R(1, 1), R(1, 0), R(1, 0), R(0.5, 0)],
            id="request across multiple reportings",
        ),
        pytest.param(
            [("inP", 0), ("outP", 1000), ("report", 1000)],
            [R(1, 1, 1, 1)],
            id="1 request, proxied, entire time",
        ),
        pytest.param(
            [("inP", 0), ("outP", 500), ("report", 1000)],
            [R(0.5, 1, 0.5, 1)],
            id="1 request, proxied, half the time",
        ),
        pytest.param(
            [("inP", 0), ("in", 0), ("outP", 500), ("out", 1000), ("report", 1000)],
            [R(1.5, 2, 0.5, 1)],
            id="2 requests, proxied and non proxied",
        ),
        pytest.param(
            [("in", 500), ("in", 499), ("out", 1000), ("out", 999), ("report", 1000)],
            [R(1, 2)],
            id="ignore 'negative' requests",
        ),
        pytest.param(
            [("in", 0), ("in", 0), ("in", 0), ("in", 0), ("report", 1000)],
            [R(4, 4)],
            id="4 steady concurrent requests over 1 s average 4",
        ),
        pytest.param(
            [("in", 0), ("in", 0), ("in", 0), ("in", 0), ("report", 1000), ("report", 2000)],
            [R(4, 4), R(4, 0)],
            id="steady requests carry into the next window without being counted again",
        ),
        pytest.param(
            [("report", 0)], [R(0, 0)], id="report at the start covers no time and divides by none"
        ),
    ],
)
def test_request_stats(events: list[Event], want: list[StatReport]) -> None:
    expected = [pytest.approx(astuple(r), rel=1e-9) for r in want]
    assert [astuple(r) for r in replay(events)] == expected
    # A monotonic clock starts anywhere: the figures depend on differences only.
    assert [astuple(r) for r in replay(events, start=12345.678)] == expected


def test_repr() -> None:
    stats = RequestStats(0.0)
    stats.req_in(0.0, proxied=True)
    stats.req_in(0.5, proxied=False)
    assert repr(stats) == "<RequestStats concurrency=2 proxied=1 window=0.5s requests=2>"

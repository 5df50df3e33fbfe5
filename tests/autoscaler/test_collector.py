"""The collector: proxied figures subtracted, no data is not zero, windows resized."""

from __future__ import annotations

import pytest

from autoscaler.collector import Aggregation, MetricCollector, MetricSpec
from shared.seams import RevisionKey
from shared.stat_proto import StatData

KEY = RevisionKey("default", "hello-00001")
SPEC = MetricSpec(stable_window_s=60.0, panic_window_s=6.0)
T0 = 1_000.0


def stat(
    concurrency: float, proxied: float = 0.0, requests: float = 0.0, prx_req: float = 0.0
) -> StatData:
    return StatData("p", concurrency, proxied, requests, prx_req)


def test_proxied_requests_are_not_counted_twice() -> None:
    """Pod 10 in flight (4 via the activator) + activator 4 = 10 in the second's bucket."""
    c = MetricCollector()
    c.create_or_update(KEY, SPEC, T0)
    c.record(KEY, T0, stat(10.0, 4.0, 20.0, 8.0))  # the pod's scrape
    c.record(KEY, T0, stat(4.0, 0.0, 8.0, 0.0))  # the activator's report
    got = c.stable_and_panic_concurrency(KEY, T0)
    assert got is not None
    assert (got.stable, got.panic) == (10.0, 10.0)
    rps = c.stable_and_panic_rps(KEY, T0)
    assert rps is not None
    assert rps.stable == 20.0


@pytest.mark.parametrize(
    ("scraped", "want"),
    [
        pytest.param(True, None, id="scraped-no-data"),
        pytest.param(False, (0.0, 0.0), id="activator-only-reads-zero"),
    ],
)
def test_empty_windows(scraped: bool, want: tuple[float, float] | None) -> None:
    """Knative's ErrNoData only when the revision's pods are scraped (ScrapeTarget set)."""
    c = MetricCollector()
    c.create_or_update(KEY, MetricSpec(60.0, 6.0, scraped=scraped), T0)
    got = c.stable_and_panic_concurrency(KEY, T0)
    assert (None if got is None else (got.stable, got.panic)) == want


def test_no_data_after_a_stable_window_without_records() -> None:
    c = MetricCollector()
    c.create_or_update(KEY, SPEC, T0)
    c.record(KEY, T0, stat(5.0))
    assert c.stable_and_panic_concurrency(KEY, T0 + 60) is not None
    assert c.stable_and_panic_concurrency(KEY, T0 + 61) is None


def test_unknown_revision_is_not_collecting_and_record_is_ignored() -> None:
    c = MetricCollector()
    c.record(KEY, T0, stat(5.0))
    assert c.stable_and_panic_concurrency(KEY, T0) is None
    assert KEY not in c


def test_resize_keeps_data_and_algorithm_change_restarts() -> None:
    c = MetricCollector()
    c.create_or_update(KEY, SPEC, T0)
    c.record(KEY, T0, stat(5.0))
    c.create_or_update(KEY, MetricSpec(30.0, 3.0), T0)
    got = c.stable_and_panic_concurrency(KEY, T0)
    assert got is not None and got.stable > 0  # how much is aggregation's business
    c.create_or_update(KEY, MetricSpec(30.0, 3.0, Aggregation.WEIGHTED_EXPONENTIAL), T0)
    assert c.stable_and_panic_concurrency(KEY, T0) is None


def test_last_error_reports_changes_only() -> None:
    c = MetricCollector()
    c.create_or_update(KEY, SPEC, T0)
    assert c.set_error(KEY, "refused")
    assert not c.set_error(KEY, "refused")
    assert c.set_error(KEY, None)
    assert c.last_error(KEY) is None

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from shared.metrics import (
    FastCounter,
    FastGauge,
    FastHistogram,
    FastRegistry,
    render_text,
)


def _samples(registry: FastRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(render_text(registry).decode()):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counter_labelled_children_are_cached() -> None:
    reg = FastRegistry()
    c = reg.counter("requests", "Requests.", ["code"])
    ok = c.labels("200")
    assert c.labels("200") is ok
    ok.inc()
    ok.value += 2
    c.labels("500").inc(0.5)
    got = _samples(reg)
    assert got[("requests_total", (("code", "200"),))] == 3
    assert got[("requests_total", (("code", "500"),))] == 0.5


def test_unlabelled_counter_and_gauge() -> None:
    reg = FastRegistry()
    reg.counter("hits", "Hits.").labels().inc()
    g = reg.gauge("level", "Level.").labels()
    g.set(4)
    g.inc(2)
    g.dec()
    assert _samples(reg) == {("hits_total", ()): 1, ("level", ()): 5}


def test_gauge_callable_is_read_at_scrape() -> None:
    reg = FastRegistry()
    depth = [3]
    reg.gauge("depth", "Depth.").labels().set_function(lambda: depth[0])
    assert _samples(reg)[("depth", ())] == 3
    depth[0] = 7
    assert _samples(reg)[("depth", ())] == 7


@pytest.mark.parametrize(
    ("observations", "want_buckets", "want_sum"),
    [
        pytest.param([], [0, 0, 0, 0], 0.0, id="empty"),
        pytest.param([0.1], [1, 1, 1, 1], 0.1, id="on-first-bound-is-inclusive"),
        pytest.param([0.2, 0.5], [0, 1, 2, 2], 0.7, id="between-and-on-bound"),
        pytest.param([2.0, 0.0], [1, 1, 1, 2], 2.0, id="above-last-bound-is-inf-only"),
        pytest.param([-1.0], [1, 1, 1, 1], -1.0, id="negative"),
    ],
)
def test_histogram_buckets_are_cumulative(
    observations: list[float], want_buckets: list[int], want_sum: float
) -> None:
    reg = FastRegistry()
    h = reg.histogram("latency_seconds", "Latency.", [0.1, 0.25, 1], ["code"])
    child = h.labels("200")
    for v in observations:
        child.observe(v)
    got = _samples(reg)
    les = ["0.1", "0.25", "1.0", "+Inf"]
    assert [got[("latency_seconds_bucket", (("code", "200"), ("le", le)))] for le in les] == (
        want_buckets
    )
    assert got[("latency_seconds_count", (("code", "200"),))] == len(observations)
    assert math.isclose(got[("latency_seconds_sum", (("code", "200"),))], want_sum)
    assert child.count == len(observations)


@pytest.mark.parametrize(
    "buckets",
    [
        pytest.param([], id="empty"),
        pytest.param([1, 1], id="repeated"),
        pytest.param([2, 1], id="decreasing"),
    ],
)
def test_histogram_rejects_bad_buckets(buckets: list[float]) -> None:
    with pytest.raises(ValueError, match="buckets"):
        FastHistogram("h", "H.", buckets)


def test_histogram_inf_bound_is_implicit() -> None:
    assert FastHistogram("h", "H.", [1, math.inf]).bounds == (1.0,)


def test_wrong_label_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="label values"):
        FastCounter("c", "C.", ["a", "b"]).labels("x")


def test_duplicate_registration_is_rejected() -> None:
    reg = FastRegistry()
    reg.gauge("g", "G.")
    with pytest.raises(ValueError, match="already registered"):
        reg.register(FastGauge("g", "G."))


def test_label_values_are_escaped() -> None:
    reg = FastRegistry()
    reg.counter("c", "C.", ["v"]).labels('a"b\\c\nd').inc()
    assert _samples(reg) == {("c_total", (("v", 'a"b\\c\nd'),)): 1}


def test_repr() -> None:
    reg = FastRegistry()
    c = reg.counter("c", "C.", ["v"])
    c.labels("x").inc()
    assert repr(c) == "FastCounter('c', labels=('v',), children=1)"
    assert repr(c.labels("x")) == "CounterValue(1.0)"
    assert repr(reg) == "FastRegistry(['c'])"

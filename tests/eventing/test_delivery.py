"""The DeliverySpec: validation with field paths, the retry set and the backoff schedule,
to the millisecond with a fake clock."""

from __future__ import annotations

import pytest

from eventing.delivery import (
    CLUSTER_DEFAULT,
    BackoffPolicy,
    DeliveryError,
    DeliverySpec,
    effective_delivery,
    is_success,
    parse_delivery,
    parse_duration_s,
    parse_retry_after_s,
    should_retry,
    validate_delivery,
)
from eventing.errors import FieldError

NOW = 1_700_000_000.0  # the fake wall clock


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("PT0.2S", 0.2, id="fraction"),
        pytest.param("PT1M30S", 90.0, id="minutes"),
        pytest.param("PT2H", 7200.0, id="hours"),
        pytest.param("P1D", 86400.0, id="day"),
        pytest.param("P1W", 604800.0, id="week"),
        pytest.param("P1DT1S", 86401.0, id="date-and-time"),
        pytest.param("PT0,5S", 0.5, id="comma"),
        pytest.param("pt1s", 1.0, id="lower-case"),
        pytest.param("PT0S", 0.0, id="zero"),
    ],
)
def test_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1s", "P", "PT", "P1.2.3S", "", "T1S", "PT1X"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        pytest.param(None, True, id="no-response"),
        pytest.param(500, True, id="500"),
        pytest.param(502, True, id="502"),
        pytest.param(503, True, id="503"),
        pytest.param(404, True, id="404"),
        pytest.param(408, True, id="408"),
        pytest.param(409, True, id="409"),
        pytest.param(429, True, id="429"),
        pytest.param(400, False, id="400"),
        pytest.param(401, False, id="401"),
        pytest.param(403, False, id="403"),
        pytest.param(413, False, id="413"),
        pytest.param(422, False, id="422"),
        pytest.param(302, False, id="3xx"),
        pytest.param(100, False, id="1xx"),
    ],
)
def test_retry_set(status: int | None, retried: bool) -> None:
    assert should_retry(status) is retried
    assert not is_success(status)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_success_is_2xx(status: int) -> None:
    assert is_success(status)


def schedule(spec: DeliverySpec) -> list[int]:
    """Every wait of a delivery that always fails with a 500, in whole milliseconds, as a fake
    clock that the dispatcher's sleeps advance would read them."""
    clock = 0.0
    waits = []
    for k in range(1, spec.attempts):
        wait = spec.wait_s(k, 500, None, NOW + clock)
        clock += wait
        waits.append(round(wait * 1000))
    return waits


@pytest.mark.parametrize(
    ("spec", "waits_ms"),
    [
        pytest.param(
            CLUSTER_DEFAULT,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 102400],
            id="cluster-default",
        ),
        pytest.param(
            DeliverySpec(retry=4, backoff_policy=BackoffPolicy.LINEAR, backoff_delay_s=1.5),
            [1500, 3000, 4500, 6000],
            id="linear",
        ),
        pytest.param(
            DeliverySpec(retry=3, backoff_policy=BackoffPolicy.EXPONENTIAL, backoff_delay_s=0.05),
            [50, 100, 200],
            id="exponential",
        ),
        pytest.param(DeliverySpec(retry=3), [0, 0, 0], id="no-policy-immediate"),
        pytest.param(
            DeliverySpec(retry=2, backoff_delay_s=1.0), [0, 0], id="delay-without-policy"
        ),
        pytest.param(DeliverySpec(retry=0), [], id="no-retry"),
    ],
)
def test_backoff_schedule(spec: DeliverySpec, waits_ms: list[int]) -> None:
    assert schedule(spec) == waits_ms
    assert len(waits_ms) == spec.attempts - 1


def test_cluster_default_total_backoff() -> None:
    # 0.2 s * (2**10 - 1) = 204.6 s of waiting before the dead-letter sink.
    assert sum(schedule(CLUSTER_DEFAULT)) == 204_600


RA = DeliverySpec(
    retry=3, backoff_policy=BackoffPolicy.LINEAR, backoff_delay_s=0.5, retry_after_max_s=30.0
)


@pytest.mark.parametrize(
    ("spec", "status", "header", "wait_ms"),
    [
        pytest.param(RA, 429, "3", 3000, id="429-honoured"),
        pytest.param(RA, 503, "3", 3000, id="503-honoured"),
        pytest.param(RA, 429, "120", 30000, id="capped-by-retryAfterMax"),
        pytest.param(RA, 429, "0", 500, id="backoff-larger"),
        pytest.param(RA, 500, "3", 500, id="500-ignores-header"),
        pytest.param(RA, 429, "soon", 500, id="unparsable-ignored"),
        pytest.param(
            RA, 429, "Tue, 14 Nov 2023 22:13:30 GMT", 10000, id="http-date-10s-ahead"
        ),
        pytest.param(
            DeliverySpec(retry=1, backoff_policy=BackoffPolicy.LINEAR, backoff_delay_s=0.5),
            429, "3", 500, id="no-retryAfterMax-ignores",
        ),
        pytest.param(
            DeliverySpec(retry=1, backoff_policy=BackoffPolicy.LINEAR, backoff_delay_s=0.5,
                         retry_after_max_s=0.0),
            429, "3", 500, id="PT0S-ignores",
        ),
    ],
)
def test_retry_after(spec: DeliverySpec, status: int, header: str, wait_ms: int) -> None:
    # NOW + 10 s is 2023-11-14T22:13:30Z.
    assert round(spec.wait_s(1, status, header, NOW) * 1000) == wait_ms


def test_retry_after_past_date_is_zero() -> None:
    assert parse_retry_after_s("Tue, 14 Nov 2000 22:13:30 GMT", NOW) == 0.0


@pytest.mark.parametrize(
    ("spec", "errors"),
    [
        pytest.param(None, [], id="absent"),
        pytest.param({}, [], id="empty"),
        pytest.param(
            {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S", "timeout": "PT5S",
             "retryAfterMax": "PT30S", "format": "json",
             "deadLetterSink": {"uri": "http://dls.example.com"}},
            [], id="full",
        ),
        pytest.param({"retry": -1}, [("spec.delivery.retry", "invalid value: -1")], id="retry"),
        pytest.param(
            {"backoffPolicy": "fibonacci"},
            [("spec.delivery.backoffPolicy", "invalid value: fibonacci")], id="policy",
        ),
        pytest.param(
            {"backoffDelay": "1s"}, [("spec.delivery.backoffDelay", "invalid value: 1s")],
            id="delay",
        ),
        pytest.param(
            {"timeout": "PT0S"}, [("spec.delivery.timeout", "invalid value: PT0S")],
            id="zero-timeout",
        ),
        pytest.param(
            {"retryAfterMax": "-PT1S"},
            [("spec.delivery.retryAfterMax", "invalid value: -PT1S")], id="negative-cap",
        ),
        pytest.param(
            {"format": "xml"}, [("spec.delivery.format", "invalid value: xml")], id="format"
        ),
        pytest.param(
            {"deadLetterSink": {}},
            [("spec.delivery.deadLetterSink", "expected exactly one, got neither: ref, uri")],
            id="dls-empty",
        ),
        pytest.param(
            {"deadLetterSink": {"ref": {"kind": "Service"}}},
            [("spec.delivery.deadLetterSink.ref.name", "missing field(s)"),
             ("spec.delivery.deadLetterSink.ref.apiVersion", "missing field(s)")],
            id="dls-ref",
        ),
        pytest.param(
            {"retry": "3", "colour": 1},
            [("spec.delivery.colour", "unknown field"),
             ("spec.delivery.retry", "invalid value: 3")],
            id="several",
        ),
    ],
)
def test_validate(spec: object, errors: list[tuple[str, str]]) -> None:
    assert validate_delivery(spec) == [FieldError(p, m) for p, m in errors]


def test_parse_refuses_with_every_field() -> None:
    with pytest.raises(DeliveryError) as err:
        parse_delivery({"retry": -2, "format": "xml"}, "spec.delivery")
    assert [e.path for e in err.value.errors] == ["spec.delivery.retry", "spec.delivery.format"]
    assert "invalid value: -2: spec.delivery.retry" in str(err.value)


def test_parse() -> None:
    spec = parse_delivery(
        {"retry": 2, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S", "timeout": "PT2S",
         "retryAfterMax": "PT10S", "format": "binary", "deadLetterSink": {"uri": "http://x"}}
    )
    assert spec == DeliverySpec(
        retry=2, backoff_policy=BackoffPolicy.EXPONENTIAL, backoff_delay_s=0.5, timeout_s=2.0,
        retry_after_max_s=10.0, dead_letter_sink={"uri": "http://x"}, format="binary",
    )
    assert spec.attempts == 3


@pytest.mark.parametrize(
    ("trigger", "broker", "expected"),
    [
        pytest.param(None, None, CLUSTER_DEFAULT, id="cluster-default"),
        pytest.param(None, {"retry": 3}, DeliverySpec(retry=3), id="broker"),
        # Wholesale: the trigger's spec has no DLS and no backoff, and gets none of the broker's.
        pytest.param(
            {"retry": 1},
            {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S",
             "deadLetterSink": {"uri": "http://dls"}},
            DeliverySpec(retry=1), id="trigger-replaces-wholesale",
        ),
        pytest.param({}, {"retry": 3}, DeliverySpec(), id="empty-trigger-spec-still-replaces"),
    ],
)
def test_effective(trigger: object, broker: object, expected: DeliverySpec) -> None:
    assert effective_delivery(trigger, broker) == expected

"""Tests for autoscaler.annotations, from Knative's own table.

pkg/apis/autoscaling/annotation_validation_test.go (TestValidateAnnotations): Knative joins
its errors into one string ("expected 0 <= -1 <= 2147483647: <key>"); here each error is a
(key, reason) pair with the same reason text.
"""

from __future__ import annotations

import dataclasses

import pytest

from autoscaler.annotations import AnnotationError, RevisionAutoscaling
from autoscaler.configmap import AutoscalerConfig
from autoscaler.register import (
    ACTIVATION_SCALE_KEY,
    CLASS_KEY,
    HPA,
    INITIAL_SCALE_KEY,
    KPA,
    MAX_SCALE_KEY,
    METRIC_AGGREGATION_ALGORITHM_KEY,
    METRIC_KEY,
    MIN_SCALE_KEY,
    PANIC_THRESHOLD_PERCENTAGE_KEY,
    PANIC_WINDOW_PERCENTAGE_KEY,
    SCALE_DOWN_DELAY_KEY,
    SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY,
    TARGET_BURST_CAPACITY_KEY,
    TARGET_KEY,
    TARGET_UTILIZATION_PERCENTAGE_KEY,
    WEIGHTED_EXPONENTIAL,
    WINDOW_KEY,
)
from autoscaler.resolve import (
    initial_scale,
    panic_window,
    scale_bounds,
    scale_to_zero_pod_retention,
)

DEFAULT = AutoscalerConfig()


def cfg(**changes: object) -> AutoscalerConfig:
    return dataclasses.replace(DEFAULT, **changes)  # type: ignore[arg-type]


# --- TestValidateAnnotations ------------------------------------------------------------------

GOOD_CLASS_KPA = {CLASS_KEY: KPA}
ANNOTATION_CASES = [
    pytest.param(None, {}, [], id="nil annotations"),
    pytest.param({}, {}, [], id="empty annotations"),
    pytest.param(
        {CLASS_KEY: "unsupported.knative.dev"},
        {},
        [(CLASS_KEY, "invalid value: unsupported.knative.dev")],
        id="invalid class",
    ),
    pytest.param({CLASS_KEY: "some.other.domain"}, {}, [], id="non-knative.dev domain class"),
    pytest.param({MIN_SCALE_KEY: "0"}, {}, [], id="minScale is 0"),
    pytest.param({MAX_SCALE_KEY: "0"}, {}, [], id="maxScale is 0"),
    pytest.param(
        {MIN_SCALE_KEY: "-1"},
        {},
        [(MIN_SCALE_KEY, "expected 0 <= -1 <= 2147483647")],
        id="minScale is -1",
    ),
    pytest.param(
        {MAX_SCALE_KEY: "2147483648"},
        {},
        [(MAX_SCALE_KEY, "expected 0 <= 2147483648 <= 2147483647")],
        id="maxScale is huuuuuuuge",
    ),
    pytest.param(
        {MAX_SCALE_KEY: "-1"},
        {},
        [(MAX_SCALE_KEY, "expected 0 <= -1 <= 2147483647")],
        id="maxScale is -1",
    ),
    pytest.param(
        {MIN_SCALE_KEY: "foo"}, {}, [(MIN_SCALE_KEY, "invalid value: foo")], id="minScale is foo"
    ),
    pytest.param(
        {MAX_SCALE_KEY: "bar"}, {}, [(MAX_SCALE_KEY, "invalid value: bar")], id="maxScale is bar"
    ),
    pytest.param(
        {MAX_SCALE_KEY: "bar", MIN_SCALE_KEY: "bar"},
        {},
        [(MIN_SCALE_KEY, "invalid value: bar"), (MAX_SCALE_KEY, "invalid value: bar")],
        id="max/minScale is bar",
    ),
    pytest.param({MIN_SCALE_KEY: "5"}, {}, [], id="minScale is 5"),
    pytest.param({MAX_SCALE_KEY: "2"}, {}, [], id="maxScale is 2"),
    pytest.param(
        {MIN_SCALE_KEY: "2", MAX_SCALE_KEY: "5"}, {}, [], id="minScale is 2, maxScale is 5"
    ),
    pytest.param(
        {MIN_SCALE_KEY: "5", MAX_SCALE_KEY: "2"},
        {},
        [(f"{MAX_SCALE_KEY}, {MIN_SCALE_KEY}", "max-scale=2 is less than min-scale=5")],
        id="minScale is 5, maxScale is 2",
    ),
    pytest.param(
        {MIN_SCALE_KEY: "0", MAX_SCALE_KEY: "0"}, {}, [], id="minScale is 0, maxScale is 0"
    ),
    pytest.param(
        {MAX_SCALE_KEY: "11"},
        {"max_scale_limit": 10, "max_scale": 1},
        [(MAX_SCALE_KEY, "expected 1 <= 11 <= 10")],
        id="maxScale is greater than MaxScaleLimit when in create",
    ),
    pytest.param(
        {MAX_SCALE_KEY: "20"},
        {"max_scale_limit": 10, "max_scale": 10},
        [(MAX_SCALE_KEY, "expected 1 <= 20 <= 10")],
        id="maxScale is greater than MaxScaleLimit when in create and default MaxScale is set",
    ),
    pytest.param(
        {MAX_SCALE_KEY: "0"},
        {"max_scale_limit": 10, "max_scale": 1},
        [(MAX_SCALE_KEY, "max-scale=0 (unlimited), must be less than 10")],
        id="maxScale is explicitly set to 0 when MaxScaleLimit and default MaxScale are set",
    ),
    pytest.param(
        {},
        {"max_scale_limit": 10, "max_scale": 10},
        [],
        id="maxScale is not set when both MaxScaleLimit and default MaxScale are set",
    ),
    pytest.param(
        {MAX_SCALE_KEY: "9"},
        {"max_scale_limit": 10, "max_scale": 1},
        [],
        id="maxScale is less than MaxScaleLimit",
    ),
    pytest.param(
        {MIN_SCALE_KEY: "1", ACTIVATION_SCALE_KEY: "2", MAX_SCALE_KEY: "3"},
        {},
        [],
        id="min-scale, activation-scale, max-scale all set appropriately",
    ),
    pytest.param(
        {MIN_SCALE_KEY: "3", ACTIVATION_SCALE_KEY: "2"},
        {},
        [(ACTIVATION_SCALE_KEY, "min-scale=3 is greater than activation-scale=2")],
        id="min-scale is greater than activation-scale",
    ),
    pytest.param(
        {MAX_SCALE_KEY: "1", ACTIVATION_SCALE_KEY: "2"},
        {},
        [(ACTIVATION_SCALE_KEY, "max-scale=1 is less than activation-scale=2")],
        id="max-scale is less than activation-scale",
    ),
    pytest.param(
        {METRIC_AGGREGATION_ALGORITHM_KEY: "linear", **GOOD_CLASS_KPA},
        {},
        [],
        id="valid algorithm on KPA",
    ),
    pytest.param(
        {METRIC_AGGREGATION_ALGORITHM_KEY: "", **GOOD_CLASS_KPA}, {}, [], id="empty algorithm"
    ),
    pytest.param(
        {METRIC_AGGREGATION_ALGORITHM_KEY: "random-selection", **GOOD_CLASS_KPA},
        {},
        [(METRIC_AGGREGATION_ALGORITHM_KEY, "invalid value: random-selection")],
        id="random algorithm on KPA",
    ),
    pytest.param(
        {METRIC_AGGREGATION_ALGORITHM_KEY: "random-selection", CLASS_KEY: "of-keys"},
        {},
        [],
        id="random algorithm on non KPA",
    ),
    pytest.param(
        {PANIC_WINDOW_PERCENTAGE_KEY: "-1"},
        {},
        [(PANIC_WINDOW_PERCENTAGE_KEY, "expected 1 <= -1 <= 100")],
        id="panic window percentage bad",
    ),
    pytest.param(
        {PANIC_WINDOW_PERCENTAGE_KEY: "202"},
        {},
        [(PANIC_WINDOW_PERCENTAGE_KEY, "expected 1 <= 202 <= 100")],
        id="panic window percentage bad2",
    ),
    pytest.param(
        {PANIC_WINDOW_PERCENTAGE_KEY: "fifty"},
        {},
        [(PANIC_WINDOW_PERCENTAGE_KEY, "invalid value: fifty")],
        id="panic window percentage bad3",
    ),
    pytest.param(
        {PANIC_THRESHOLD_PERCENTAGE_KEY: "210"}, {}, [], id="panic window percentage good"
    ),
    pytest.param(
        {PANIC_THRESHOLD_PERCENTAGE_KEY: "109"},
        {},
        [(PANIC_THRESHOLD_PERCENTAGE_KEY, "expected 110 <= 109 <= 1000")],
        id="panic threshold percentage bad2",
    ),
    pytest.param(
        {PANIC_THRESHOLD_PERCENTAGE_KEY: "10009"},
        {},
        [(PANIC_THRESHOLD_PERCENTAGE_KEY, "expected 110 <= 10009 <= 1000")],
        id="panic threshold percentage bad2.5",
    ),
    pytest.param(
        {PANIC_THRESHOLD_PERCENTAGE_KEY: "fifty"},
        {},
        [(PANIC_THRESHOLD_PERCENTAGE_KEY, "invalid value: fifty")],
        id="panic threshold percentage bad3",
    ),
    pytest.param(
        {TARGET_KEY: "-11"},
        {},
        [(TARGET_KEY, "target -11 should be at least 0.01")],
        id="target negative",
    ),
    pytest.param(
        {TARGET_KEY: "0"}, {}, [(TARGET_KEY, "target 0 should be at least 0.01")], id="target 0"
    ),
    pytest.param(None, {}, [], id="unnamed empty case"),
    pytest.param(
        {TARGET_KEY: "100}"}, {}, [(TARGET_KEY, "invalid value: 100}")], id="invalid target"
    ),
    pytest.param({TARGET_KEY: "11"}, {}, [], id="target okay"),
    pytest.param(
        {TARGET_BURST_CAPACITY_KEY: "-11"},
        {},
        [(TARGET_BURST_CAPACITY_KEY, "invalid value: -11")],
        id="TBC negative",
    ),
    pytest.param({TARGET_BURST_CAPACITY_KEY: "0"}, {}, [], id="TBC 0"),
    pytest.param({TARGET_BURST_CAPACITY_KEY: "19870709"}, {}, [], id="TBC 19880709"),
    pytest.param({TARGET_BURST_CAPACITY_KEY: "-1"}, {}, [], id="TBC -1"),
    pytest.param(
        {TARGET_BURST_CAPACITY_KEY: "qarashen"},
        {},
        [(TARGET_BURST_CAPACITY_KEY, "invalid value: qarashen")],
        id="TBC invalid",
    ),
    pytest.param(
        {TARGET_UTILIZATION_PERCENTAGE_KEY: "0"},
        {},
        [(TARGET_UTILIZATION_PERCENTAGE_KEY, "expected 1 <= 0 <= 100")],
        id="TU too small",
    ),
    pytest.param(
        {TARGET_UTILIZATION_PERCENTAGE_KEY: "101"},
        {},
        [(TARGET_UTILIZATION_PERCENTAGE_KEY, "expected 1 <= 101 <= 100")],
        id="TU too big",
    ),
    pytest.param(
        {TARGET_UTILIZATION_PERCENTAGE_KEY: "dghyak"},
        {},
        [(TARGET_UTILIZATION_PERCENTAGE_KEY, "invalid value: dghyak")],
        id="TU invalid",
    ),
    pytest.param(
        {WINDOW_KEY: "jerry-was-a-racecar-driver"},
        {},
        [(WINDOW_KEY, "invalid value: jerry-was-a-racecar-driver")],
        id="window invalid",
    ),
    pytest.param(
        {WINDOW_KEY: "1s"},
        {},
        [(WINDOW_KEY, "expected 6s <= 1s <= 1h0m0s")],
        id="window too short",
    ),
    pytest.param(
        {WINDOW_KEY: "365h"},
        {},
        [(WINDOW_KEY, "expected 6s <= 365h <= 1h0m0s")],
        id="window too long",
    ),
    pytest.param(
        {WINDOW_KEY: "1m9s82ms"},
        {},
        [(WINDOW_KEY, "must be specified with at most second precision")],
        id="window too precise",
    ),
    pytest.param(
        {WINDOW_KEY: "7s", CLASS_KEY: KPA}, {}, [], id="annotation /window is valid for class KPA"
    ),
    pytest.param(
        {WINDOW_KEY: "7s", CLASS_KEY: "test"},
        {},
        [],
        id="annotation /window is valid for other than HPA and KPA class",
    ),
    pytest.param(
        {WINDOW_KEY: "365h", CLASS_KEY: KPA},
        {},
        [(WINDOW_KEY, "expected 6s <= 365h <= 1h0m0s")],
        id="value too long and valid class for /window annotation",
    ),
    pytest.param(
        {WINDOW_KEY: "jerry-was-a-racecar-driver", CLASS_KEY: KPA},
        {},
        [(WINDOW_KEY, "invalid value: jerry-was-a-racecar-driver")],
        id="invalid format and valid class for /window annotation",
    ),
    pytest.param(
        {SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY: "0"},
        {},
        [],
        id="valid 0 last pod scaledown timeout",
    ),
    pytest.param(
        {SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY: "21m31s"},
        {},
        [],
        id="valid positive last pod scaledown timeout",
    ),
    pytest.param(
        {SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY: "311m"},
        {},
        [(SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY, "expected 0s <= 311m <= 1h0m0s")],
        id="invalid positive last pod scaledown timeout",
    ),
    pytest.param(
        {SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY: "-42s"},
        {},
        [(SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY, "expected 0s <= -42s <= 1h0m0s")],
        id="invalid negative last pod scaledown timeout",
    ),
    pytest.param(
        {SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY: "twenty-two-minutes-and-five-seconds"},
        {},
        [
            (
                SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY,
                "invalid value: twenty-two-minutes-and-five-seconds",
            )
        ],
        id="invalid last pod scaledown timeout",
    ),
    pytest.param({SCALE_DOWN_DELAY_KEY: "0"}, {}, [], id="valid 0 scale down delay"),
    pytest.param({SCALE_DOWN_DELAY_KEY: "21m31s"}, {}, [], id="valid positive scale down delay"),
    pytest.param(
        {SCALE_DOWN_DELAY_KEY: "311m"},
        {},
        [(SCALE_DOWN_DELAY_KEY, "expected 0s <= 311m <= 1h0m0s")],
        id="invalid positive scale down delay",
    ),
    pytest.param(
        {SCALE_DOWN_DELAY_KEY: "42.5s"},
        {},
        [(SCALE_DOWN_DELAY_KEY, "must be specified with at most second precision")],
        id="invalid positive scale down delay - too precise",
    ),
    pytest.param(
        {SCALE_DOWN_DELAY_KEY: "-42s"},
        {},
        [(SCALE_DOWN_DELAY_KEY, "expected 0s <= -42s <= 1h0m0s")],
        id="invalid negative scale down delay",
    ),
    pytest.param(
        {SCALE_DOWN_DELAY_KEY: "twenty-two-minutes-and-five-seconds"},
        {},
        [(SCALE_DOWN_DELAY_KEY, "invalid value: twenty-two-minutes-and-five-seconds")],
        id="invalid scale down delay",
    ),
    pytest.param(
        {
            PANIC_THRESHOLD_PERCENTAGE_KEY: "fifty",
            PANIC_WINDOW_PERCENTAGE_KEY: "-11",
            MIN_SCALE_KEY: "-4",
            MAX_SCALE_KEY: "never",
        },
        {},
        [
            (MIN_SCALE_KEY, "expected 0 <= -4 <= 2147483647"),
            (MAX_SCALE_KEY, "invalid value: never"),
            (PANIC_WINDOW_PERCENTAGE_KEY, "expected 1 <= -11 <= 100"),
            (PANIC_THRESHOLD_PERCENTAGE_KEY, "invalid value: fifty"),
        ],
        id="all together now fail",
    ),
    pytest.param(
        {
            PANIC_THRESHOLD_PERCENTAGE_KEY: "125",
            PANIC_WINDOW_PERCENTAGE_KEY: "75",
            MIN_SCALE_KEY: "5",
            MAX_SCALE_KEY: "8",
            WINDOW_KEY: "1984s",
        },
        {},
        [],
        id="all together now, succeed",
    ),
    pytest.param(
        {METRIC_KEY: "cpu"},
        {},
        [(METRIC_KEY, "invalid value: cpu")],
        id="invalid metric for default class(KPA)",
    ),
    pytest.param(
        {METRIC_KEY: "", CLASS_KEY: HPA},
        {},
        [(METRIC_KEY, "invalid value: ")],
        id="invalid metric for HPA class",
    ),
    pytest.param({METRIC_KEY: "rps"}, {}, [], id="valid class KPA with metric RPS"),
    pytest.param({METRIC_KEY: "concurrency"}, {}, [], id="valid class KPA with metric Concurrency"),
    pytest.param({CLASS_KEY: HPA, METRIC_KEY: "cpu"}, {}, [], id="valid class HPA with metric CPU"),
    pytest.param(
        {CLASS_KEY: "other", METRIC_KEY: "rps"}, {}, [], id="other than HPA and KPA class"
    ),
    pytest.param(
        {INITIAL_SCALE_KEY: "0"},
        {},
        [(INITIAL_SCALE_KEY, "invalid value: 0, =0 not allowed by cluster")],
        id="initial scale is zero but cluster doesn't allow",
    ),
    pytest.param(
        {METRIC_KEY: "cpu"},
        {"pod_autoscaler_class": HPA},
        [],
        id="valid global class HPA with metric CPU",
    ),
    pytest.param(
        {INITIAL_SCALE_KEY: "0"},
        {"allow_zero_initial_scale": True},
        [],
        id="initial scale is zero and cluster allows",
    ),
    pytest.param({INITIAL_SCALE_KEY: "2"}, {}, [], id="initial scale is greater than 0"),
    pytest.param(
        {INITIAL_SCALE_KEY: "-1"},
        {},
        [(INITIAL_SCALE_KEY, "invalid value: -1, must be greater than 0")],
        id="initial scale is less than 0",
    ),
    pytest.param(
        {INITIAL_SCALE_KEY: "invalid"},
        {},
        [(INITIAL_SCALE_KEY, "invalid value: invalid")],
        id="initial scale non-parseable",
    ),
    # knpy's own.
    pytest.param(
        {"autoscaling.knative.dev/minScale": "-2"},
        {},
        [("autoscaling.knative.dev/minScale", "expected 0 <= -2 <= 2147483647")],
        id="knpy/legacy camelCase key is read and named",
    ),
    pytest.param(
        {ACTIVATION_SCALE_KEY: "1"},
        {},
        [(ACTIVATION_SCALE_KEY, "activation-scale=1 must be greater than 1")],
        id="knpy/activation-scale 1",
    ),
]


@pytest.mark.parametrize(("annotations", "changes", "want"), ANNOTATION_CASES)
def test_validate_annotations(
    annotations: dict[str, str] | None, changes: dict[str, object], want: list[tuple[str, str]]
) -> None:
    """TestValidateAnnotations: every error, each under its key, in Knative's check order."""
    config = cfg(**changes)
    if not want:
        RevisionAutoscaling.from_annotations(annotations, 0, config)
        return
    with pytest.raises(AnnotationError) as caught:
        RevisionAutoscaling.from_annotations(annotations, 0, config)
    assert list(caught.value.errors) == want
    assert (caught.value.name, caught.value.reason) == want[0]
    assert str(caught.value) == "\n".join(f"{key}: {reason}" for key, reason in want)


def test_negative_container_concurrency_refused() -> None:
    with pytest.raises(AnnotationError, match="containerConcurrency"):
        RevisionAutoscaling.from_annotations({}, -1, DEFAULT)


def test_annotations_parsed() -> None:
    """Every annotation lands in its field, in the units the resolvers use."""
    ra = RevisionAutoscaling.from_annotations(
        {
            CLASS_KEY: KPA,
            METRIC_KEY: "rps",
            TARGET_KEY: "150",
            TARGET_UTILIZATION_PERCENTAGE_KEY: "75",
            WINDOW_KEY: "2m",
            PANIC_WINDOW_PERCENTAGE_KEY: "20",
            PANIC_THRESHOLD_PERCENTAGE_KEY: "300",
            MIN_SCALE_KEY: "1",
            MAX_SCALE_KEY: "9",
            INITIAL_SCALE_KEY: "3",
            ACTIVATION_SCALE_KEY: "2",
            SCALE_DOWN_DELAY_KEY: "5m",
            TARGET_BURST_CAPACITY_KEY: "-1",
            SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY: "1m30s",
            METRIC_AGGREGATION_ALGORITHM_KEY: "weightedExponential",
        },
        4,
        DEFAULT,
    )
    assert ra == RevisionAutoscaling(
        autoscaler_class=KPA,
        metric="rps",
        container_concurrency=4,
        target=150.0,
        target_utilization=0.75,
        window=120.0,
        panic_window_percentage=20.0,
        panic_threshold_percentage=300.0,
        min_scale=1,
        max_scale=9,
        initial_scale=3,
        activation_scale=2,
        scale_down_delay=300.0,
        target_burst_capacity=-1.0,
        scale_to_zero_pod_retention_period=90.0,
        metric_aggregation_algorithm=WEIGHTED_EXPONENTIAL,
    )
    assert panic_window(DEFAULT, ra) == 24.0
    assert scale_bounds(DEFAULT, ra) == (1, 9)
    assert scale_bounds(DEFAULT, ra, reachable=False) == (0, 9)
    assert scale_to_zero_pod_retention(DEFAULT, ra) == 90.0
    assert initial_scale(DEFAULT, ra) == 3

"""Tests for autoscaler.config, from Knative's own tables.

- pkg/autoscaler/config/config_test.go (TestNewConfig): the ConfigMap.
- pkg/apis/autoscaling/annotation_validation_test.go (TestValidateAnnotations): Knative joins
  its errors into one string ("expected 0 <= -1 <= 2147483647: <key>"); here each error is a
  (key, reason) pair with the same reason text.
- pkg/reconciler/autoscaling/resources/target_test.go, metric_test.go and
  kpa/resources/decider_test.go: target resolution, windows and the DeciderSpec.

Knative builds some test configs as bare Go structs, with zero max-scale-down-rate and
activator-capacity, which its validation would refuse; since an AutoscalerConfig is always
valid, those rows use the defaults (2 and 100) instead. Rows whose config Knative's own
validation refuses (max-scale 11 over max-scale-limit 10) use the largest valid value.
"""

from __future__ import annotations

import dataclasses

import pytest

from autoscaler.config import (
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
    TARGET_MIN,
    TARGET_UTILIZATION_PERCENTAGE_KEY,
    WEIGHTED_EXPONENTIAL,
    WINDOW_KEY,
    AnnotationError,
    AutoscalerConfig,
    RevisionAutoscaling,
    decider_spec,
    initial_scale,
    panic_window,
    parse_go_duration,
    resolve_metric_target,
    scale_bounds,
    scale_to_zero_pod_retention,
    stable_window,
)
from autoscaler.scaling import DeciderSpec
from shared.envconfig import ConfigError

ACTIVATION_SCALE_KEY = "autoscaling.knative.dev/activation-scale"
DEFAULT = AutoscalerConfig()

# The _example block of Knative's config/core/configmaps/autoscaler.yaml.
EXAMPLE = {
    "container-concurrency-target-percentage": "70",
    "container-concurrency-target-default": "100",
    "requests-per-second-target-default": "200",
    "target-burst-capacity": "211",
    "stable-window": "60s",
    "panic-window-percentage": "10.0",
    "panic-threshold-percentage": "200.0",
    "max-scale-up-rate": "1000.0",
    "max-scale-down-rate": "2.0",
    "enable-scale-to-zero": "true",
    "scale-to-zero-grace-period": "30s",
    "scale-to-zero-pod-retention-period": "0s",
    "pod-autoscaler-class": "kpa.autoscaling.knative.dev",
    "activator-capacity": "100.0",
    "initial-scale": "1",
    "allow-zero-initial-scale": "false",
    "min-scale": "0",
    "max-scale": "0",
    "scale-down-delay": "0s",
    "max-scale-limit": "0",
}


def cfg(**changes: object) -> AutoscalerConfig:
    return dataclasses.replace(DEFAULT, **changes)  # type: ignore[arg-type]


# --- TestNewConfig ----------------------------------------------------------------------------

VALID_CONFIGS = [
    pytest.param({}, DEFAULT, id="default"),
    pytest.param({"_example": "# everything commented out"}, DEFAULT, id="actual"),
    pytest.param(EXAMPLE, DEFAULT, id="example"),
    pytest.param(
        {
            "enable-scale-to-zero": "true",
            "max-scale-down-rate": "3.0",
            "max-scale-up-rate": "1.01",
            "container-concurrency-target-percentage": "0.71",
            "container-concurrency-target-default": "10.5",
            "requests-per-second-target-default": "10.11",
            "target-burst-capacity": "12345",
            "scale-down-delay": "15m",
            "stable-window": "5m",
            "tick-interval": "2s",
            "panic-window-percentage": "10",
            "panic-threshold-percentage": "200",
            "pod-autoscaler-class": "some.class",
            "activator-capacity": "905",
            "scale-to-zero-pod-retention-period": "2m3s",
        },
        cfg(
            target_burst_capacity=12345.0,
            container_concurrency_target_default=10.5,
            container_concurrency_target_fraction=0.71,
            rps_target_default=10.11,
            max_scale_down_rate=3.0,
            max_scale_up_rate=1.01,
            scale_down_delay=900.0,
            stable_window=300.0,
            activator_capacity=905.0,
            pod_autoscaler_class="some.class",
            scale_to_zero_pod_retention_period=123.0,
        ),
        id="overridden",
    ),
    pytest.param(
        {
            "max-scale-up-rate": "1.001",
            "container-concurrency-target-percentage": "0.5",
            "container-concurrency-target-default": "10.0",
            "target-burst-capacity": "0",
            "stable-window": "5m",
            "tick-interval": "2s",
            "panic-window-percentage": "10",
            "panic-threshold-percentage": "200",
            "activator-capacity": "1",
        },
        cfg(
            container_concurrency_target_fraction=0.5,
            container_concurrency_target_default=10.0,
            max_scale_up_rate=1.001,
            target_burst_capacity=0.0,
            stable_window=300.0,
            activator_capacity=1.0,
        ),
        id="minimum",
    ),
    pytest.param(
        {"container-concurrency-target-percentage": "55"},
        cfg(container_concurrency_target_fraction=0.55),
        id="concurrency target percentage as percent",
    ),
    pytest.param(
        {"target-burst-capacity": "-1"}, cfg(target_burst_capacity=-1.0), id="with -1 tbc"
    ),
    pytest.param({"enable-scale-to-zero": "TRUE"}, DEFAULT, id="with toggles on strange casing"),
    pytest.param(
        {"enable-scale-to-zero": "false", "min-scale": "1", "max-scale": "2"},
        cfg(enable_scale_to_zero=False, min_scale=1, max_scale=2),
        id="with toggles explicitly flipped",
    ),
    pytest.param(
        {
            "enable-scale-to-zero": "false",
            "scale-to-zero-grace-period": "33s",
            "min-scale": "1",
            "max-scale": "2",
        },
        cfg(enable_scale_to_zero=False, scale_to_zero_grace_period=33.0, min_scale=1, max_scale=2),
        id="with explicit grace period",
    ),
    pytest.param(
        {"allow-zero-initial-scale": "true", "initial-scale": "0"},
        cfg(allow_zero_initial_scale=True, initial_scale=0),
        id="with valid default initial scale",
    ),
    pytest.param({"max-scale": "10"}, cfg(max_scale=10), id="with valid default max scale"),
    pytest.param(
        {"min-scale": "4"}, cfg(min_scale=4), id="with min scale set but max-scale not set"
    ),
    pytest.param(
        {"max-scale": "10", "max-scale-limit": "11"},
        cfg(max_scale=10, max_scale_limit=11),
        id="with valid default max scale and max scale limit",
    ),
]


@pytest.mark.parametrize(("data", "want"), VALID_CONFIGS)
def test_new_config(data: dict[str, str], want: AutoscalerConfig) -> None:
    """TestNewConfig, the rows that parse."""
    assert AutoscalerConfig.from_configmap(data) == want


INVALID_CONFIGS = [
    pytest.param({"max-scale-up-rate": "not a float"}, "max-scale-up-rate", id="malformed float"),
    pytest.param({"scale-down-delay": "-1m23s"}, "scale-down-delay", id="invalid scale-down-delay"),
    pytest.param(
        {"scale-to-zero-pod-retention-period": "-4m11s"},
        "scale-to-zero-pod-retention-period",
        id="invalid pod retention period",
    ),
    pytest.param({"stable-window": "not a duration"}, "stable-window", id="malformed duration"),
    pytest.param(
        {"target-burst-capacity": "-11"},
        "target-burst-capacity",
        id="invalid target burst capacity",
    ),
    pytest.param(
        {"container-concurrency-target-percentage": "-42"},
        "container-concurrency-target-percentage",
        id="invalid target %, too small",
    ),
    pytest.param(
        {"container-concurrency-target-percentage": "142.4"},
        "container-concurrency-target-percentage",
        id="invalid target %, too big",
    ),
    pytest.param(
        {"requests-per-second-target-default": "-5.25"},
        "requests-per-second-target-default",
        id="invalid RPS target, too small",
    ),
    pytest.param({"max-scale-up-rate": "1"}, "max-scale-up-rate", id="max scale up rate 1.0"),
    pytest.param(
        {"max-scale-down-rate": "-55"}, "max-scale-down-rate", id="max down down rate negative"
    ),
    pytest.param({"max-scale-down-rate": "1"}, "max-scale-down-rate", id="max down down rate 1.0"),
    pytest.param({"stable-window": "1h1s"}, "stable-window", id="stable window too big"),
    pytest.param({"stable-window": "1s"}, "stable-window", id="stable window too small"),
    pytest.param({"stable-window": "61984ms"}, "stable-window", id="stable not seconds"),
    pytest.param(
        {"scale-down-delay": "61984ms"}, "scale-down-delay", id="scale-down-delay not seconds"
    ),
    pytest.param(
        {"activator-capacity": "0.95"}, "activator-capacity", id="activator-capacity invalid"
    ),
    pytest.param(
        {"panic-window-percentage": "0.1"},
        "panic-window-percentage",
        id="panic window percentage too small",
    ),
    pytest.param(
        {"stable-window": "12s", "panic-window": "3s", "panic-window-percentage": "110"},
        "panic-window-percentage",
        id="panic window percentage too big",
    ),
    pytest.param(
        {
            "container-concurrency-target-percentage": "1",
            "container-concurrency-target-default": "0.001",
        },
        "container-concurrency-target-default",
        id="TU*CC < 0.01",
    ),
    pytest.param(
        {"stable-window": "12s", "scale-to-zero-grace-period": "0s"},
        "scale-to-zero-grace-period",
        id="grace window too small",
    ),
    pytest.param(
        {"allow-zero-initial-scale": "false", "initial-scale": "0"},
        "initial-scale",
        id="with prohibited default initial scale",
    ),
    pytest.param(
        {"allow-zero-initial-scale": "false", "initial-scale": "-1"},
        "initial-scale",
        id="with negative default initial scale",
    ),
    pytest.param(
        {"allow-zero-initial-scale": "false", "initial-scale": "invalid"},
        "initial-scale",
        id="with non-parseable default initial scale",
    ),
    pytest.param(
        {"allow-zero-initial-scale": "invalid"},
        "allow-zero-initial-scale",
        id="with non-parseable allow-zero-initial-scale",
    ),
    pytest.param({"max-scale": "-1"}, "max-scale", id="with negative default max scale"),
    pytest.param(
        {"max-scale": "10", "max-scale-limit": "9"},
        "max-scale",
        id="max scale exceeding max scale limit",
    ),
    pytest.param({"max-scale-limit": "-9"}, "max-scale-limit", id="with negative max scale limit"),
    pytest.param(
        {"max-scale": "0", "max-scale-limit": "11"},
        "max-scale",
        id="with max scale limit and zero default max scale",
    ),
    pytest.param(
        {"min-scale": "4", "max-scale": "3"}, "min-scale", id="with max scale less than min-scale"
    ),
    # knpy's own: Go's strict number syntax, and a present key must parse even when empty.
    pytest.param({"max-scale": " 3"}, "max-scale", id="knpy/space in an integer"),
    pytest.param({"activator-capacity": "1_000"}, "activator-capacity", id="knpy/underscore"),
    pytest.param({"max-scale-up-rate": "inf"}, "max-scale-up-rate", id="knpy/infinity"),
    pytest.param({"stable-window": ""}, "stable-window", id="knpy/empty duration"),
    pytest.param({"max-scale": "2147483648"}, "max-scale", id="knpy/beyond int32"),
]


@pytest.mark.parametrize(("data", "key"), INVALID_CONFIGS)
def test_new_config_refused(data: dict[str, str], key: str) -> None:
    """TestNewConfig, the rows Knative refuses: the error names the key at fault."""
    with pytest.raises(ConfigError) as caught:
        AutoscalerConfig.from_configmap(data)
    assert caught.value.name == key
    assert str(caught.value).startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("text", "want_ns"),
    [
        pytest.param("0", 0, id="bare zero"),
        pytest.param("15m", 900_000_000_000, id="minutes"),
        pytest.param("2m3s", 123_000_000_000, id="two units"),
        pytest.param("1m9s82ms", 69_082_000_000, id="three units"),
        pytest.param("-42s", -42_000_000_000, id="negative"),
        pytest.param("1.5h", 5_400_000_000_000, id="fraction"),
        pytest.param(".5s", 500_000_000, id="leading point"),
        pytest.param("1\u00b5s", 1_000, id="micro sign"),
        pytest.param("3ns", 3, id="nanoseconds"),
    ],
)
def test_parse_go_duration(text: str, want_ns: int) -> None:
    assert parse_go_duration(text) == want_ns


@pytest.mark.parametrize("text", ["", "5", "s", "1d", "1h 2m", "jerry-was-a-racecar-driver", "."])
def test_parse_go_duration_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


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


# --- target resolution, windows and the decider ------------------------------------------------

# The shared config of Knative's resources tests (metric_test.go).
RESOURCES_CFG = AutoscalerConfig(
    container_concurrency_target_fraction=1.0,
    container_concurrency_target_default=100.0,
    rps_target_default=200.0,
    target_utilization=0.7,
    max_scale_up_rate=10.0,
    stable_window=60.0,
    panic_threshold_percentage=200.0,
    panic_window_percentage=10.0,
    scale_to_zero_grace_period=30.0,
)


def pa(container_concurrency: int = 0, **annotations: str) -> RevisionAutoscaling:
    """Knative's test PodAutoscaler: class KPA, the given annotations (by short name)."""
    keys = {
        "target": TARGET_KEY,
        "tu": TARGET_UTILIZATION_PERCENTAGE_KEY,
        "metric": METRIC_KEY,
        "window": WINDOW_KEY,
        "pwp": PANIC_WINDOW_PERCENTAGE_KEY,
        "ptp": PANIC_THRESHOLD_PERCENTAGE_KEY,
        "tbc": TARGET_BURST_CAPACITY_KEY,
        "sdd": SCALE_DOWN_DELAY_KEY,
        "initial": INITIAL_SCALE_KEY,
        "activation": ACTIVATION_SCALE_KEY,
    }
    m = {CLASS_KEY: KPA, **{keys[name]: value for name, value in annotations.items()}}
    return RevisionAutoscaling.from_annotations(m, container_concurrency, RESOURCES_CFG)


@pytest.mark.parametrize(
    ("ra", "changes", "want_target", "want_total"),
    [
        pytest.param(pa(), {}, 100, 100, id="defaults"),
        pytest.param(
            pa(), {"container_concurrency_target_fraction": 0.8}, 80, 100, id="default CC + 80% TU"
        ),
        pytest.param(
            pa(),
            {
                "container_concurrency_target_fraction": 0.3,
                "container_concurrency_target_default": 2,
            },
            0.6,
            2,
            id="non-default CC and TU",
        ),
        pytest.param(
            pa(12, tu="75"),
            {"container_concurrency_target_fraction": 0.8},
            9,
            12,
            id="with container concurrency 12 and TU=80%, but TU annotation 75%",
        ),
        pytest.param(
            pa(10),
            {"container_concurrency_target_fraction": 0.8},
            8,
            10,
            id="with container concurrency 10 and TU=80%",
        ),
        pytest.param(
            pa(1),
            {"container_concurrency_target_fraction": 0.8},
            0.8,
            1,
            id="with container concurrency 1 and TU=80%",
        ),
        pytest.param(pa(1), {}, 1, 1, id="with container concurrency 1"),
        pytest.param(
            pa(10),
            {"container_concurrency_target_fraction": 0.8},
            8,
            10,
            id="with container concurrency 10 and TU=80% (again)",
        ),
        pytest.param(pa(10), {}, 10, 10, id="with container concurrency 10"),
        pytest.param(pa(target="1"), {}, 1, 1, id="with target annotation 1"),
        pytest.param(
            pa(target="1"),
            {"container_concurrency_target_fraction": 0.001},
            TARGET_MIN,
            1,
            id="with target annotation 1 and TU=0.1%",
        ),
        pytest.param(
            pa(target="1"),
            {"container_concurrency_target_fraction": 0.75},
            0.75,
            1,
            id="with target annotation 1 and TU=75%",
        ),
        pytest.param(
            pa(target="10"),
            {"container_concurrency_target_fraction": 0.75},
            7.5,
            10,
            id="with target annotation 10 and TU=75%",
        ),
        pytest.param(
            pa(10, target="1"),
            {},
            1,
            1,
            id="with container concurrency greater than target annotation (ok)",
        ),
        pytest.param(
            pa(target="500"), {}, 500, 500, id="with target annotation greater than default (ok)"
        ),
        pytest.param(
            pa(1, target="10"),
            {},
            1,
            1,
            id="with target annotation greater than container concurrency "
            "(ignore annotation for safety)",
        ),
        pytest.param(pa(1, metric="rps"), {}, 140, 200, id="RPS: defaults"),
        pytest.param(pa(metric="rps", target="1"), {}, 0.7, 1, id="RPS: with target annotation 1"),
        pytest.param(pa(metric="rps", tu="75"), {}, 150, 200, id="RPS: with TU annotation 75%"),
        pytest.param(
            pa(metric="rps", target="300"),
            {},
            210,
            300,
            id="RPS: with target annotation greater than default",
        ),
    ],
)
def test_resolve_metric_target(
    ra: RevisionAutoscaling, changes: dict[str, object], want_target: float, want_total: float
) -> None:
    """TestResolveMetricTarget (target_test.go)."""
    config = dataclasses.replace(RESOURCES_CFG, **changes)  # type: ignore[arg-type]
    target, total = resolve_metric_target(config, ra, ra.container_concurrency)
    assert target == pytest.approx(want_target)
    assert total == want_total


@pytest.mark.parametrize(
    ("container_concurrency", "want_target", "want_total"),
    [
        pytest.param(0, 70, 100, id="issue/CC=0 gives 70 of 100"),
        pytest.param(10, 7, 10, id="issue/CC=10 gives 7 of 10"),
    ],
)
def test_default_config_targets(
    container_concurrency: int, want_target: float, want_total: float
) -> None:
    """The figures of the issue, with the default config-autoscaler."""
    ra = RevisionAutoscaling.from_annotations({}, container_concurrency, DEFAULT)
    target, total = resolve_metric_target(DEFAULT, ra, container_concurrency)
    assert target == pytest.approx(want_target)
    assert total == want_total
    rps = RevisionAutoscaling.from_annotations({METRIC_KEY: "rps"}, 0, DEFAULT)
    assert resolve_metric_target(DEFAULT, rps, 0)[1] == 200
    assert resolve_metric_target(DEFAULT, rps, 0)[0] == pytest.approx(140)


@pytest.mark.parametrize(
    ("ra", "want_stable", "want_panic"),
    [
        pytest.param(pa(), 60.0, 6.0, id="defaults"),
        pytest.param(pa(window="10s", pwp="10"), 10.0, 1.0, id="with too short panic window"),
        pytest.param(
            pa(window="10m"),
            600.0,
            60.0,
            id="with longer stable window, no panic window percentage, defaults to 10%",
        ),
        pytest.param(pa(pwp="50"), 60.0, 30.0, id="with longer panic window percentage"),
        pytest.param(pa(pwp="51"), 60.0, 31.0, id="with panic window percentage+rounding"),
        pytest.param(pa(window="251s"), 251.0, 25.0, id="TestStableWindow/annotation"),
    ],
)
def test_make_metric_windows(
    ra: RevisionAutoscaling, want_stable: float, want_panic: float
) -> None:
    """TestMakeMetric and TestStableWindow (metric_test.go): the stable and panic windows."""
    assert stable_window(RESOURCES_CFG, ra) == want_stable
    assert panic_window(RESOURCES_CFG, ra) == want_panic


# The config of Knative's decider_test.go.
DECIDER_CFG = AutoscalerConfig(
    container_concurrency_target_fraction=1.0,
    container_concurrency_target_default=100.0,
    target_burst_capacity=211.0,
    max_scale_up_rate=10.0,
    rps_target_default=100.0,
    activator_capacity=811.0,
    target_utilization=1.0,
    stable_window=60.0,
    panic_threshold_percentage=200.0,
    panic_window_percentage=10.0,
    scale_to_zero_grace_period=30.0,
    initial_scale=1,
)
WANT_DECIDER = DeciderSpec(
    max_scale_up_rate=10.0,
    max_scale_down_rate=DECIDER_CFG.max_scale_down_rate,
    scaling_metric="concurrency",
    target_value=100.0,
    total_value=100.0,
    target_burst_capacity=211.0,
    panic_threshold=2.0,
    activator_capacity=811.0,
    stable_window=60.0,
    initial_scale=1,
    reachable=True,
)


def decider(**changes: object) -> DeciderSpec:
    return dataclasses.replace(WANT_DECIDER, **changes)  # type: ignore[arg-type]


def decider_pa(container_concurrency: int = 0, **annotations: str) -> RevisionAutoscaling:
    """Knative's decider_test PodAutoscaler: class KPA and metric concurrency annotations."""
    return pa(container_concurrency, **{"metric": "concurrency", **annotations})


@pytest.mark.parametrize(
    ("ra", "changes", "reachable", "want"),
    [
        pytest.param(decider_pa(), {}, True, decider(), id="defaults"),
        pytest.param(decider_pa(), {}, False, decider(reachable=False), id="unreachable"),
        pytest.param(decider_pa(), {}, True, decider(), id="explicit reachable"),
        pytest.param(
            decider_pa(),
            {"container_concurrency_target_fraction": 0.8},
            True,
            decider(target_value=80.0),
            id="tu < 1",
        ),
        pytest.param(
            decider_pa(),
            {"max_scale_up_rate": 19.84, "max_scale_down_rate": 19.88},
            True,
            decider(max_scale_up_rate=19.84, max_scale_down_rate=19.88),
            id="scale up and scale down rates",
        ),
        pytest.param(
            decider_pa(1),
            {},
            True,
            decider(target_value=1.0, total_value=1.0),
            id="with container concurrency 1",
        ),
        pytest.param(
            decider_pa(target="1"),
            {},
            True,
            decider(target_value=1.0, total_value=1.0),
            id="with target annotation 1",
        ),
        pytest.param(
            decider_pa(100),
            {"container_concurrency_target_fraction": 0.8},
            True,
            decider(target_value=80.0),
            id="with container concurrency and tu < 1",
        ),
        pytest.param(
            decider_pa(120),
            {"target_burst_capacity": 63.0, "container_concurrency_target_fraction": 0.8},
            True,
            decider(target_value=96.0, total_value=120.0, target_burst_capacity=63.0),
            id="with burst capacity set",
        ),
        pytest.param(
            decider_pa(),
            {"activator_capacity": 420.0},
            True,
            decider(activator_capacity=420.0),
            id="with activator capacity override",
        ),
        pytest.param(
            decider_pa(120, tbc="211"),
            {"target_burst_capacity": 63.0, "container_concurrency_target_fraction": 0.8},
            True,
            decider(target_value=96.0, total_value=120.0, target_burst_capacity=211.0),
            id="with burst capacity set on the annotation",
        ),
        pytest.param(
            decider_pa(10, target="1"),
            {},
            True,
            decider(target_value=1.0, total_value=1.0),
            id="with container concurrency greater than target annotation (ok)",
        ),
        pytest.param(
            decider_pa(1, target="10"),
            {},
            True,
            decider(target_value=1.0, total_value=1.0),
            id="with target annotation greater than container concurrency "
            "(ignore annotation for safety)",
        ),
        pytest.param(
            decider_pa(target="10", ptp="400"),
            {},
            True,
            decider(target_value=10.0, total_value=10.0, panic_threshold=4.0),
            id="with higher panic target",
        ),
        pytest.param(
            decider_pa(metric="rps"),
            {},
            True,
            decider(scaling_metric="rps"),
            id="with metric annotation",
        ),
        pytest.param(
            decider_pa(),
            {"scale_down_delay": 300.0},
            True,
            decider(scale_down_delay=300.0),
            id="with scale down delay from config",
        ),
        pytest.param(
            decider_pa(sdd="10m"),
            {"scale_down_delay": 300.0},
            True,
            decider(scale_down_delay=600.0),
            id="with scale down delay from annotation",
        ),
        pytest.param(
            decider_pa(initial="2"), {}, True, decider(initial_scale=2), id="with initial scale"
        ),
        pytest.param(
            decider_pa(activation="3"),
            {},
            True,
            decider(activation_scale=3),
            id="with activation-scale",
        ),
    ],
)
def test_make_decider(
    ra: RevisionAutoscaling, changes: dict[str, object], reachable: bool, want: DeciderSpec
) -> None:
    """TestMakeDecider (kpa/resources/decider_test.go)."""
    config = dataclasses.replace(DECIDER_CFG, **changes)  # type: ignore[arg-type]
    assert decider_spec(config, ra, ra.container_concurrency, reachable=reachable) == want


@pytest.mark.parametrize(
    ("annotation", "allow_zero", "want"),
    [
        pytest.param(None, False, 1, id="revision initial scale not set"),
        pytest.param("2", False, 2, id="revision initial scale overrides cluster initial scale"),
        pytest.param("0", True, 0, id="cluster allows initial scale zero"),
        pytest.param("0", False, 1, id="cluster does not allows initial scale zero"),
    ],
)
def test_get_initial_scale(annotation: str | None, allow_zero: bool, want: int) -> None:
    """TestGetInitialScale. A 0 the cluster forbids never passes validation, so that row
    builds the RevisionAutoscaling directly, as a PodAutoscaler made before the rule."""
    config = cfg(allow_zero_initial_scale=allow_zero)
    value = None if annotation is None else int(annotation)
    ra = RevisionAutoscaling(autoscaler_class=KPA, metric="concurrency", initial_scale=value)
    assert initial_scale(config, ra) == want


def test_decider_spec_of_default_revision() -> None:
    """The default config and containerConcurrency 0 give DeciderSpec's own defaults."""
    ra = RevisionAutoscaling.from_annotations({}, 0, DEFAULT)
    assert decider_spec(DEFAULT, ra, 0) == DeciderSpec()

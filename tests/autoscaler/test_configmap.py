"""Tests for autoscaler.configmap, from Knative's own table.

pkg/autoscaler/config/config_test.go (TestNewConfig): the config-autoscaler ConfigMap, its
defaults, the values that parse and the ones refused, each error under its key.
"""

from __future__ import annotations

import dataclasses

import pytest

from autoscaler.configmap import AutoscalerConfig
from shared.envconfig import ConfigError

DEFAULT = AutoscalerConfig()


def cfg(**changes: object) -> AutoscalerConfig:
    return dataclasses.replace(DEFAULT, **changes)  # type: ignore[arg-type]


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

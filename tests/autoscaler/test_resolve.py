"""Tests for autoscaler.resolve, from Knative's own tables.

pkg/reconciler/autoscaling/resources/target_test.go, metric_test.go and
kpa/resources/decider_test.go: target resolution, windows and the DeciderSpec.

Knative builds some test configs as bare Go structs, with zero max-scale-down-rate and
activator-capacity, which its validation would refuse; since an AutoscalerConfig is always
valid, those rows use the defaults (2 and 100) instead. Rows whose config Knative's own
validation refuses (max-scale 11 over max-scale-limit 10) use the largest valid value.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from autoscaler.annotations import RevisionAutoscaling
from autoscaler.configmap import AutoscalerConfig
from autoscaler.register import (
    ACTIVATION_SCALE_KEY,
    CLASS_KEY,
    INITIAL_SCALE_KEY,
    KPA,
    METRIC_KEY,
    PANIC_THRESHOLD_PERCENTAGE_KEY,
    PANIC_WINDOW_PERCENTAGE_KEY,
    SCALE_DOWN_DELAY_KEY,
    TARGET_BURST_CAPACITY_KEY,
    TARGET_KEY,
    TARGET_MIN,
    TARGET_UTILIZATION_PERCENTAGE_KEY,
    WINDOW_KEY,
)
from autoscaler.resolve import (
    decider_spec,
    initial_scale,
    panic_window,
    resolve_metric_target,
    resolve_scaling,
    stable_window,
)
from autoscaler.scaling import DeciderSpec
from shared.seams import RevisionKey, RevisionSpec

DEFAULT = AutoscalerConfig()


def cfg(**changes: object) -> AutoscalerConfig:
    return dataclasses.replace(DEFAULT, **changes)  # type: ignore[arg-type]


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


# --- resolve_scaling: the decider, KPA and metric specs of one revision --------------------------

KEY = RevisionKey("default", "hello-00001")
# Short windows, as the integration tests use: stable 6 s, grace 6 s.
SHORT_WINDOWS = {"stable-window": "6s", "scale-to-zero-grace-period": "6s"}


def test_resolve_scaling_short_windows_and_tbc() -> None:
    cfg = AutoscalerConfig.from_configmap({**SHORT_WINDOWS, "target-burst-capacity": "-1"})
    scaling = resolve_scaling(RevisionSpec(KEY, 10), cfg)
    assert scaling is not None
    assert (scaling.decider.target_value, scaling.decider.total_value) == (7.0, 10.0)
    assert (scaling.metric.stable_window_s, scaling.metric.panic_window_s) == (6.0, 1.0)
    assert not scaling.metric.scraped  # TBC -1: the activator's stats only
    assert scaling.kpa.scale_to_zero_grace_period_s == 6.0


@pytest.mark.parametrize(
    ("reachable", "want_min", "want_reachable"),
    [
        pytest.param(True, 2, True, id="routed: min-scale holds"),
        pytest.param(False, 0, False, id="unreachable: min-scale ignored, no rate limit"),
    ],
)
def test_resolve_scaling_follows_reachability(
    reachable: bool, want_min: int, want_reachable: bool
) -> None:
    """Knative's PodAutoscaler reachability: only a routed revision keeps its min-scale."""
    spec = RevisionSpec(
        RevisionKey("default", "old-00001"),
        annotations=MappingProxyType({"autoscaling.knative.dev/min-scale": "2"}),
        reachable=reachable,
    )
    scaling = resolve_scaling(spec, AutoscalerConfig())
    assert scaling is not None
    assert scaling.kpa.min_scale == want_min
    assert scaling.decider.reachable is want_reachable

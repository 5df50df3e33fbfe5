"""Tests for autoscaler.scaling: every scenario of Knative's scaling/autoscaler_test.go.

Knative's decider pulls the ready pods from a pod counter and the averages from a metric
client; the fakes return fixed values that the tests change between calls. Here a scenario
passes those values into each ``scale`` call instead, so a Go test reads as a list of steps:
"at this time, with these pods and these averages, decide this". Go's ``time.Now()`` becomes
T0, and its zero time (the scale-down delay tests) becomes T0 as well: only differences
matter, and T0 is aligned to the 2 s slots as Go's zero time is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import pytest

from autoscaler.scaling import (
    INVALID_SCALE_RESULT,
    TICK_INTERVAL_S,
    Autoscaler,
    DeciderSpec,
    ScaleResult,
)

T0 = 1_700_000_010.0
STABLE_WINDOW = 60.0
TARGET_UTILIZATION = 0.75  # Knative's tests presume 75 %
ACTIVATOR_CAPACITY = 150.0


def knative_spec(
    target: float, tbc: float, metric: str = "concurrency", **changes: object
) -> DeciderSpec:
    """Knative's newTestAutoscalerWithScalingMetric spec."""
    spec = DeciderSpec(
        target_value=target,
        total_value=target / TARGET_UTILIZATION,
        target_burst_capacity=tbc,
        panic_threshold=2.0,
        max_scale_up_rate=10.0,
        max_scale_down_rate=10.0,
        activator_capacity=ACTIVATOR_CAPACITY,
        stable_window=STABLE_WINDOW,
        reachable=True,
        scaling_metric=metric,
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def go_spec(**values: object) -> DeciderSpec:
    """A spec written as a Go struct literal: every field not given is Go's zero value."""
    zero = DeciderSpec(
        target_value=1.0,
        total_value=0.0,
        target_burst_capacity=0.0,
        panic_threshold=0.0,
        max_scale_up_rate=1.0,
        max_scale_down_rate=1.0,
        stable_window=0.0,
        scale_down_delay=0.0,
        activator_capacity=0.0,
        initial_scale=0,
        reachable=False,
        activation_scale=0,
    )
    return dataclasses.replace(zero, **values)  # type: ignore[arg-type]


def expected_ebc(tot_cap: float, target_bc: float, concurrency: float, pods: float) -> int:
    """Knative's expectedEBC; results are compared with its tolerance of one."""
    return math.floor(tot_cap / TARGET_UTILIZATION * pods - target_bc - concurrency)


_KEEP = object()  # a step that does not check the panic time


@dataclass(frozen=True)
class Scale:
    now: float
    ready: int | None
    stable: float | None
    panic: float | None
    want: ScaleResult
    panic_time: object = _KEEP
    in_panic: bool | None = None


@dataclass(frozen=True)
class Update:
    spec: DeciderSpec


@dataclass(frozen=True)
class Scenario:
    spec: DeciderSpec
    steps: list[Scale | Update]
    created_ready: int = 1
    created_at: float = T0
    in_panic_at_start: bool | None = None
    max_panic_pods_at_start: int | None = None


def ok(pods: int, ebc: int) -> ScaleResult:
    return ScaleResult(pods, ebc, True)


DELAY_SPEC = go_spec(
    target_value=10.0,
    max_scale_down_rate=10.0,
    max_scale_up_rate=10.0,
    panic_threshold=100.0,
    scale_down_delay=300.0,
    reachable=True,
)
DELAY_SIMPLE: list[Scale | Update] = [
    Scale(T0 + 2, 0, 40, 40, ok(4, 0)),  # scale up
    Scale(T0 + 300, 0, 0, 0, ok(4, 0)),  # five minutes at no load: still within the delay
    Scale(T0 + 302, 0, 0, 0, ok(0, 0)),  # five minutes and 2 s: the 4 has aged out
]
DELAY_GRADUAL: list[Scale | Update] = [
    Scale(T0 + 540, 0, 40, 40, ok(4, 0)),
    Scale(T0 + 600, 0, 30, 30, ok(4, 0)),  # 4 still dominates
    Scale(T0 + 660, 0, 0, 0, ok(4, 0)),
    Scale(T0 + 840, 0, 0, 0, ok(3, 0)),  # 4 scrolls out, the 3 remains
    Scale(T0 + 900, 0, 0, 0, ok(0, 0)),  # everything scrolled out
]

# Steps from the start of TestAutoscalerUnpanicAfterSlowIncrease and ExtendPanicWindow.
JUMP_10_TO_25 = Scale(T0, 10, 11, 25, ok(25, expected_ebc(1, 98, 25, 10)), panic_time=T0)
TM = T0 + 0.5  # Go takes time.Now() again after the first decision
START_IN_PANIC_SPEC = knative_spec(100, 11, panic_threshold=220.0)

SCENARIOS = [
    pytest.param(
        Scenario(DELAY_SPEC, DELAY_SIMPLE, created_ready=0),
        id="TestAutoscalerScaleDownDelay/simple",
    ),
    pytest.param(
        Scenario(DELAY_SPEC, DELAY_SIMPLE + DELAY_GRADUAL, created_ready=0),
        id="TestAutoscalerScaleDownDelay/gradual",
    ),
    pytest.param(
        Scenario(
            DELAY_SPEC,
            [
                Scale(T0 + 2, 0, 40, 40, ok(4, 0)),
                Scale(T0 + 60, 0, 0, 0, ok(4, 0)),
                # Another revision takes the traffic: no delay and no rate limit any more.
                Update(dataclasses.replace(DELAY_SPEC, reachable=False)),
                Scale(T0 + 2, 0, 0, 0, ok(0, 0)),
            ],
            created_ready=0,
        ),
        id="TestAutoscalerScaleDownDelayNotReachable",
    ),
    pytest.param(
        Scenario(
            go_spec(
                target_value=10.0,
                max_scale_down_rate=10.0,
                max_scale_up_rate=10.0,
                panic_threshold=100.0,
            ),
            [
                Scale(T0, 0, 40, 40, ok(4, 0)),
                # No delay: down at once, even within the same 2 s slot.
                Scale(T0 + 0.5, 0, 20, 20, ok(2, 0)),
            ],
            created_ready=0,
        ),
        id="TestAutoscalerScaleDownDelayZero",
    ),
    pytest.param(
        Scenario(knative_spec(10, 100), [Scale(T0, 1, None, None, INVALID_SCALE_RESULT)]),
        id="TestAutoscalerNoDataNoAutoscale",
    ),
    pytest.param(
        Scenario(knative_spec(10, 100), [], created_ready=2, in_panic_at_start=True),
        id="TestAutoscalerStartMetrics",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 100),
            [Scale(T0, 1, 50, 50, ok(5, expected_ebc(10, 100, 50, 1)), in_panic=True)],
            in_panic_at_start=False,
        ),
        id="TestAutoscalerMetrics",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 100, "rps"),
            [Scale(T0 + 61, 1, 100, 99, ok(10, expected_ebc(10, 100, 99, 1)), in_panic=True)],
        ),
        id="TestAutoscalerMetricsWithRPS",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 101),
            [
                Scale(T0, 1, 50, 10, ok(5, expected_ebc(10, 101, 10, 1))),
                Scale(T0, 1, 100, 10, ok(10, expected_ebc(10, 101, 10, 1))),
            ],
        ),
        id="TestAutoscalerStableModeIncreaseWithConcurrencyDefault",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 101, "rps"),
            [
                Scale(T0, 1, 50, 50, ok(5, expected_ebc(10, 101, 50, 1))),
                Scale(T0, 1, 100, 99, ok(10, expected_ebc(10, 101, 99, 1))),
            ],
        ),
        id="TestAutoscalerStableModeIncreaseWithRPS",
    ),
    pytest.param(
        Scenario(
            knative_spec(1, 98),
            [
                JUMP_10_TO_25,
                # Half a stable window later, having added a pod per tick: +15 pods. Not
                # over the threshold any more, but the panic time does not move.
                Scale(
                    T0 + STABLE_WINDOW / 2,
                    40,
                    30,
                    41,
                    ok(41, expected_ebc(1, 98, 41, 40)),
                    panic_time=T0,
                ),
                # A whole stable window and a tick after the last panic tick: calm, +30 pods.
                Scale(
                    T0 + STABLE_WINDOW + TICK_INTERVAL_S,
                    55,
                    50,
                    56,
                    ok(50, expected_ebc(1, 98, 56, 55)),
                    panic_time=None,
                ),
            ],
        ),
        id="TestAutoscalerUnpanicAfterSlowIncrease",
    ),
    pytest.param(
        Scenario(
            knative_spec(1, 98),
            [
                JUMP_10_TO_25,
                # Still surging half a window later: the panic is extended to now.
                Scale(
                    T0 + STABLE_WINDOW / 2,
                    40,
                    30,
                    80,
                    ok(80, expected_ebc(1, 98, 80, 40)),
                    panic_time=T0 + STABLE_WINDOW / 2,
                ),
            ],
        ),
        id="TestAutoscalerExtendPanicWindow",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 98),
            [
                Scale(T0, 8, 100, 100, ok(10, expected_ebc(10, 98, 100, 8))),
                Scale(T0, 8, 50, 50, ok(5, expected_ebc(10, 98, 50, 8))),
            ],
        ),
        id="TestAutoscalerStableModeDecrease",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 75),
            [
                Scale(T0, 1, 1, 0, ok(1, expected_ebc(10, 75, 0, 1))),
                Scale(T0, 1, 0, 0, ok(0, expected_ebc(10, 75, 0, 1))),
            ],
        ),
        id="TestAutoscalerStableModeNoTrafficScaleToZero",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 75, activation_scale=2),
            [
                Scale(T0, 1, 0, 0, ok(0, expected_ebc(10, 75, 0, 1))),
                Scale(T0, 1, 1, 0, ok(2, expected_ebc(10, 75, 0, 1))),
            ],
        ),
        id="TestAutoscalerActivationScale",
    ),
    pytest.param(
        Scenario(
            knative_spec(1, 101),
            [
                # Each step brings concurrency back to the target (1), then traffic grows x6.
                Scale(T0, 1, 6, 6, ok(6, expected_ebc(1, 101, 6, 1))),
                Scale(TM, 6, 36, 36, ok(36, expected_ebc(1, 101, 36, 6)), panic_time=TM),
                Scale(
                    TM + 1, 36, 216, 216, ok(216, expected_ebc(1, 101, 216, 36)), panic_time=TM + 1
                ),
                Scale(
                    TM + 1,
                    216,
                    1296,
                    1296,
                    ok(1296, expected_ebc(1, 101, 1296, 216)),
                    panic_time=TM + 1,
                ),
                # At 1296 the traffic stabilises.
                Scale(TM + 2, 1296, 1296, 1296, ok(1296, expected_ebc(1, 101, 1296, 1296))),
            ],
        ),
        id="TestAutoscalerPanicModeExponentialTrackAndStabilize",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 93),
            [
                Scale(T0, 1, 100, 100, ok(10, expected_ebc(10, 93, 100, 1))),
                Scale(TM, 10, 100, 1000, ok(100, expected_ebc(10, 93, 1000, 10))),
                # Traffic dropped off, but the scale stays while panicking.
                Scale(TM + 30, 10, 1, 1, ok(100, expected_ebc(10, 93, 1, 10))),
                # Down after the stable window.
                Scale(TM + 61, 10, 1, 1, ok(1, expected_ebc(10, 93, 1, 10))),
            ],
        ),
        id="TestAutoscalerPanicThenUnPanicScaleDown",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 61),
            [
                # 100 pods wanted, but only x10 per decision.
                Scale(T0, 1, 1000, 1001, ok(10, expected_ebc(10, 61, 1001, 1))),
                Scale(T0, 10, 1000, 1001, ok(100, expected_ebc(10, 61, 1001, 10))),
            ],
        ),
        id="TestAutoscalerRateLimitScaleUp",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 61),
            [
                # 1 pod wanted, but only /10 per decision.
                Scale(T0, 100, 1, 1, ok(10, expected_ebc(10, 61, 1, 100))),
                Scale(T0, 10, 1, 1, ok(1, expected_ebc(10, 61, 1, 10))),
            ],
        ),
        id="TestAutoscalerRateLimitScaleDown",
    ),
    pytest.param(
        Scenario(knative_spec(10, 81), [Scale(T0, None, 1000, 888, INVALID_SCALE_RESULT)]),
        id="TestCantCountPods",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 81),
            # No ready pods count as one for the rate limit (x10), not zero.
            [Scale(T0, 0, 1000, 888, ok(10, expected_ebc(10, 81, 888, 0)))],
        ),
        id="TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 77),
            [
                Scale(T0, 1, 100, 101, ok(10, expected_ebc(10, 77, 101, 1))),
                Update(
                    go_spec(
                        target_value=1.0,
                        total_value=1 / TARGET_UTILIZATION,
                        activator_capacity=21.0,
                        target_burst_capacity=71.0,
                        panic_threshold=2.0,
                        max_scale_down_rate=10.0,
                        max_scale_up_rate=10.0,
                        stable_window=STABLE_WINDOW,
                    )
                ),
                Scale(T0, 10, 100, 101, ok(100, expected_ebc(1, 71, 101, 10))),
            ],
        ),
        id="TestAutoscalerUpdateTarget",
    ),
    *(
        pytest.param(
            Scenario(
                START_IN_PANIC_SPEC,
                [],
                created_ready=pods,
                in_panic_at_start=pods > 1,
                max_panic_pods_at_start=pods,
            ),
            id=f"TestStartInPanicMode/{pods}-pods",
        )
        for pods in (0, 1, 2)
    ),
    pytest.param(
        # Knative: the pod counter fails at creation, which counts as 0 pods.
        Scenario(knative_spec(100, 11), [], created_ready=0, max_panic_pods_at_start=0),
        id="TestNewFail",
    ),
    # knpy's own: what Knative leaves to its Go types or its shell.
    pytest.param(
        Scenario(knative_spec(10, 100), [Scale(T0, 1, 50, None, INVALID_SCALE_RESULT)]),
        id="knpy/no panic data",
    ),
    pytest.param(
        Scenario(knative_spec(10, 100), [Scale(T0, 1, math.nan, 5, INVALID_SCALE_RESULT)]),
        id="knpy/not a number is no data",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 100, reachable=True),
            [
                Scale(T0, 4, 40, 40, ok(4, expected_ebc(10, 100, 40, 4))),
                # A delay added later holds the decisions made from then on (Knative would
                # ignore it until the decider is recreated)...
                Update(knative_spec(10, 100, scale_down_delay=10.0)),
                Scale(T0 + 2, 4, 40, 40, ok(4, expected_ebc(10, 100, 40, 4))),
                Scale(T0 + 10, 4, 0, 0, ok(4, expected_ebc(10, 100, 0, 4))),
                Scale(T0 + 12, 4, 0, 0, ok(0, expected_ebc(10, 100, 0, 4))),
            ],
        ),
        id="knpy/scale-down delay added by update",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 100, scale_down_delay=300.0),
            [
                Scale(T0, 4, 40, 40, ok(4, expected_ebc(10, 100, 40, 4))),
                # ...a delay removed later stops holding at once...
                Update(knative_spec(10, 100)),
                Scale(T0 + 2, 4, 0, 0, ok(0, expected_ebc(10, 100, 0, 4))),
            ],
        ),
        id="knpy/scale-down delay removed by update",
    ),
    pytest.param(
        Scenario(
            knative_spec(10, 100, scale_down_delay=20.0),
            [
                Scale(T0, 4, 40, 40, ok(4, expected_ebc(10, 100, 40, 4))),
                # ...and a shorter delay keeps holding what the old one held, for its length.
                Update(knative_spec(10, 100, scale_down_delay=10.0)),
                Scale(T0 + 2, 4, 0, 0, ok(4, expected_ebc(10, 100, 0, 4))),
                Scale(T0 + 10, 4, 0, 0, ok(4, expected_ebc(10, 100, 0, 4))),
                Scale(T0 + 12, 4, 0, 0, ok(0, expected_ebc(10, 100, 0, 4))),
            ],
        ),
        id="knpy/scale-down delay changed by update",
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_autoscaler(scenario: Scenario) -> None:
    """Each step's decision, EBC within one as Knative compares it, and the panic state."""
    autoscaler = Autoscaler(scenario.spec, scenario.created_ready, scenario.created_at)
    if scenario.in_panic_at_start is not None:
        assert autoscaler.in_panic is scenario.in_panic_at_start
    if scenario.max_panic_pods_at_start is not None:
        assert autoscaler.max_panic_pods == scenario.max_panic_pods_at_start
    for number, step in enumerate(scenario.steps):
        if isinstance(step, Update):
            autoscaler.update(step.spec)
            assert autoscaler.spec is step.spec
            continue
        got = autoscaler.scale(step.now, step.ready, step.stable, step.panic)
        context = f"step {number}: {step}"
        assert (got.desired_pod_count, got.scale_valid) == (
            step.want.desired_pod_count,
            step.want.scale_valid,
        ), context
        assert abs(got.excess_burst_capacity - step.want.excess_burst_capacity) <= 1, context
        if step.panic_time is not _KEEP:
            assert autoscaler.panic_time == step.panic_time, context
        if step.in_panic is not None:
            assert autoscaler.in_panic is step.in_panic, context


@dataclass(frozen=True)
class TableCase:
    """A row of Knative's TestAutoscalerScale: one decision from a fresh decider."""

    spec: DeciderSpec
    stable: float
    panic: float
    base_scale: int
    want_scale: int
    want_ebc: int
    # Knative's prepFunc that puts the decider into panic 5 s ago with 5 pods: here the
    # decider is created 5 s ago with 5 ready pods, which is that state.
    panicking_5s_with_5_pods: bool = False
    extra: dict[str, object] = field(default_factory=dict)


TABLE = [
    pytest.param(
        TableCase(knative_spec(10, 100), 0, 0, 1, 0, expected_ebc(10, 100, 0, 1)),
        id="AutoscalerNoDataAtZeroNoAutoscale",
    ),
    pytest.param(
        TableCase(knative_spec(10, 100), 0, 0, 1, 0, expected_ebc(10, 100, 0, 1)),
        id="AutoscalerNoDataAtZeroNoAutoscaleWithExplicitEPs",
    ),
    pytest.param(
        TableCase(knative_spec(181, -1), 21, 26, 1, 1, -1),
        id="AutoscalerStableModeUnlimitedTBC",
    ),
    pytest.param(TableCase(knative_spec(10, 0), 50, 49, 1, 5, 0), id="Autoscaler0TBC"),
    pytest.param(
        TableCase(knative_spec(10, 100), 50, 50, 1, 5, expected_ebc(10, 100, 50, 1)),
        id="AutoscalerStableModeNoChange",
    ),
    pytest.param(
        # The stable value decides here, as it is the larger.
        TableCase(knative_spec(1, 100), 50, 30, 5, 50, expected_ebc(1, 100, 30, 5), True),
        id="AutoscalerPanicStableLargerThanPanic",
    ),
    pytest.param(
        # And here the panic value, since it is larger.
        TableCase(knative_spec(1, 100), 20, 30, 5, 30, expected_ebc(1, 100, 30, 5), True),
        id="AutoscalerPanicStableLessThanPanic",
    ),
    pytest.param(
        TableCase(knative_spec(10, 100), 50, 50, 5, 5, expected_ebc(10, 100, 50, 5)),
        id="AutoscalerStableModeNoChangeAlreadyScaled",
    ),
    pytest.param(
        TableCase(
            knative_spec(1, 1982, max_scale_up_rate=1.1),
            3,
            3.1,
            2,
            3,
            expected_ebc(1, 1982, 3.1, 2),
        ),
        id="AutoscalerStableModeIncreaseWithSmallScaleUpRate",
    ),
    pytest.param(
        TableCase(
            knative_spec(10, 1982, max_scale_down_rate=1.1),
            1,
            1,
            100,
            90,
            expected_ebc(10, 1982, 1, 100),
        ),
        id="AutoscalerStableModeDecreaseWithSmallScaleDownRate",
    ),
    pytest.param(
        TableCase(
            knative_spec(10, 1982, max_scale_down_rate=1.1, reachable=False),
            1,
            1,
            100,
            1,
            expected_ebc(10, 1982, 1, 100),
        ),
        id="AutoscalerStableModeDecreaseNonReachable",
    ),
    pytest.param(
        # The panic concurrency takes precedence.
        TableCase(knative_spec(10, 84), 50, 100, 1, 10, expected_ebc(10, 84, 100, 1)),
        id="AutoscalerPanicModeDoublePodCount",
    ),
]


@pytest.mark.parametrize("case", TABLE)
def test_autoscaler_scale(case: TableCase) -> None:
    """TestAutoscalerScale."""
    if case.panicking_5s_with_5_pods:
        autoscaler = Autoscaler(case.spec, 5, T0 - 5)
        assert (autoscaler.panic_time, autoscaler.max_panic_pods) == (T0 - 5, 5)
    else:
        autoscaler = Autoscaler(case.spec, 1, T0)
    got = autoscaler.scale(T0, case.base_scale, case.stable, case.panic)
    assert (got.desired_pod_count, got.scale_valid) == (case.want_scale, True)
    assert abs(got.excess_burst_capacity - case.want_ebc) <= 1


def test_default_spec_is_knatives_default_revision() -> None:
    """DeciderSpec() is what Knative decides for containerConcurrency 0 and default config."""
    assert DeciderSpec() == DeciderSpec(
        target_value=70.0,
        total_value=100.0,
        target_burst_capacity=211.0,
        panic_threshold=2.0,
        max_scale_up_rate=1000.0,
        max_scale_down_rate=2.0,
        stable_window=60.0,
        scale_down_delay=0.0,
        activator_capacity=100.0,
        initial_scale=1,
        reachable=True,
        activation_scale=0,
        scaling_metric="concurrency",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"target_value": 0.0}, "target_value", id="zero target"),
        pytest.param({"max_scale_down_rate": 0.0}, "max_scale_down_rate", id="zero down rate"),
        pytest.param({"max_scale_up_rate": -1.0}, "max_scale_up_rate", id="negative up rate"),
        pytest.param({"scale_down_delay": -1.0}, "scale_down_delay", id="negative delay"),
    ],
)
def test_spec_fails_fast(changes: dict[str, float], message: str) -> None:
    """A spec the formula would divide by zero with is refused when built."""
    with pytest.raises(ValueError, match=message):
        DeciderSpec(**changes)  # type: ignore[arg-type]


def test_negative_ready_pods_refused() -> None:
    with pytest.raises(ValueError, match="ready_pods"):
        Autoscaler(DeciderSpec(), -1, T0)


def test_repr() -> None:
    """The decider says its mode, for logs."""
    autoscaler = Autoscaler(DeciderSpec(), 3, T0)
    assert repr(autoscaler) == f"Autoscaler(target=70.0, panic since {T0}, max_panic_pods=3)"
    assert repr(Autoscaler(DeciderSpec(), 1, T0)) == (
        "Autoscaler(target=70.0, stable, max_panic_pods=1)"
    )


def test_issue_example_twenty_concurrent_at_cc10() -> None:
    """20 concurrent requests at containerConcurrency 10 and 70 % give 3 pods."""
    spec = DeciderSpec(target_value=7.0, total_value=10.0)
    assert Autoscaler(spec, 1, T0).scale(T0, 1, 20.0, 20.0).desired_pod_count == 3

"""The KPA pass: bounds, Knative's scale-to-zero state machine, mode and activators."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autoscaler.kpa import (
    SCALE_UNKNOWN,
    ActiveState,
    KpaSpec,
    PodAutoscalerStatus,
    apply_bounds,
    compute_num_activators,
    reconcile,
)
from shared.seams import Mode

T0 = 1_000.0
SPEC = KpaSpec(stable_window_s=60.0, scale_to_zero_grace_period_s=30.0)
ACTIVE = PodAutoscalerStatus(
    ActiveState.ACTIVE, T0, Mode.SERVE, None, scale_target_initialized=True, applied_scale=1, want=1
)
INACTIVE = PodAutoscalerStatus(
    ActiveState.INACTIVE, T0, Mode.PROXY, T0, scale_target_initialized=True, applied_scale=1, want=0
)
ACTIVATING = PodAutoscalerStatus.new(T0)


@pytest.mark.parametrize(
    ("min_scale", "max_scale", "x", "want"),
    [
        pytest.param(0, 0, 5, 5, id="unbounded"),
        pytest.param(2, 0, 1, 2, id="below-min"),
        pytest.param(0, 3, 7, 3, id="above-max"),
        pytest.param(1, 3, 0, 1, id="zero-to-min"),
        pytest.param(0, 3, -1, 0, id="unknown-to-min-zero"),
    ],
)
def test_apply_bounds(min_scale: int, max_scale: int, x: int, want: int) -> None:
    assert apply_bounds(min_scale, max_scale, x) == want


@pytest.mark.parametrize(
    ("ready", "tbc", "total", "capacity", "want"),
    [
        pytest.param(0, 0.0, 100.0, 100.0, 2, id="tbc-0-min"),
        pytest.param(3, 211.0, 10.0, 100.0, 3, id="3-pods-tbc-211"),
        pytest.param(10, 211.0, 100.0, 100.0, 13, id="10-pods-tbc-211"),
        pytest.param(10, -1.0, 100.0, 100.0, 10, id="tbc-unlimited-pods-only"),
        pytest.param(0, 50.0, 100.0, 100.0, 2, id="small-still-2"),
    ],
)
def test_compute_num_activators(
    ready: int, tbc: float, total: float, capacity: float, want: int
) -> None:
    assert compute_num_activators(ready, tbc, total, capacity) == want


# (spec, status, decider desired, ebc, ready, now) -> (want, scale, mode, new state)
# fmt: off
CASES = [
    pytest.param(
        SPEC, ACTIVATING, -1, -111, 0, T0 + 1,
        (SCALE_UNKNOWN, SCALE_UNKNOWN, Mode.PROXY, ActiveState.ACTIVATING),
        id="new-no-metrics-no-pods",
    ),
    pytest.param(
        SPEC, ACTIVATING, -1, -111, 1, T0 + 1,
        (SCALE_UNKNOWN, SCALE_UNKNOWN, Mode.PROXY, ActiveState.ACTIVE),
        id="new-pod-ready-becomes-active",
    ),
    pytest.param(
        SPEC, ACTIVATING, 0, -111, 0, T0 + 631,
        (0, 0, Mode.PROXY, ActiveState.INACTIVE),
        id="activation-timeout-gives-up",
    ),
    pytest.param(
        SPEC, ACTIVATING, 0, -111, 0, T0 + 600,
        (SCALE_UNKNOWN, SCALE_UNKNOWN, Mode.PROXY, ActiveState.ACTIVATING),
        id="activating-within-timeout-waits",
    ),
    pytest.param(
        SPEC, ACTIVE, 3, 89, 1, T0 + 5,
        (3, 3, Mode.SERVE, ActiveState.ACTIVE),
        id="scale-up-serve",
    ),
    pytest.param(
        SPEC, ACTIVE, 3, -12, 1, T0 + 5,
        (3, 3, Mode.PROXY, ActiveState.ACTIVE),
        id="negative-ebc-proxy",
    ),
    pytest.param(
        SPEC, ACTIVE, 0, 0, 1, T0 + 59,
        (1, 1, Mode.SERVE, ActiveState.ACTIVE),
        id="idle-before-stable-window-keeps-one",
    ),
    pytest.param(
        SPEC, ACTIVE, 0, 0, 1, T0 + 60,
        (0, 1, Mode.PROXY, ActiveState.INACTIVE),
        id="idle-after-stable-window-inactive-not-scaled",
    ),
    pytest.param(
        SPEC, INACTIVE, 0, 0, 1, T0 + 29,
        (0, 1, Mode.PROXY, ActiveState.INACTIVE),
        id="inactive-within-grace-keeps-pod",
    ),
    pytest.param(
        SPEC, INACTIVE, 0, 0, 1, T0 + 30,
        (0, 0, Mode.PROXY, ActiveState.INACTIVE),
        id="inactive-after-grace-scales-to-zero",
    ),
    pytest.param(
        replace(SPEC, scale_to_zero_pod_retention_s=90.0), INACTIVE, 0, 0, 1, T0 + 60,
        (0, 1, Mode.PROXY, ActiveState.INACTIVE),
        id="last-pod-retention-holds",
    ),
    pytest.param(
        replace(SPEC, scale_to_zero_pod_retention_s=90.0), INACTIVE, 0, 0, 1, T0 + 90,
        (0, 0, Mode.PROXY, ActiveState.INACTIVE),
        id="last-pod-retention-over",
    ),
    pytest.param(
        replace(SPEC, scale_to_zero_pod_retention_s=90.0, reachable=False),
        INACTIVE, 0, 0, 1, T0 + 30,
        (0, 0, Mode.PROXY, ActiveState.INACTIVE),
        id="unreachable-ignores-retention",
    ),
    pytest.param(
        replace(SPEC, scale_to_zero_pod_retention_s=10.0),
        replace(INACTIVE, proxy_since=T0 - 100),
        0, 0, 1, T0 + 10,
        (0, 0, Mode.PROXY, ActiveState.INACTIVE),
        id="retention-met-and-proxied-for-grace",
    ),
    pytest.param(
        replace(SPEC, min_scale=1), ACTIVE, 0, 0, 1, T0 + 600,
        (1, 1, Mode.SERVE, ActiveState.ACTIVE),
        id="min-scale-never-zero",
    ),
    pytest.param(
        replace(SPEC, max_scale=4), ACTIVE, 9, 5, 4, T0 + 5,
        (4, 4, Mode.SERVE, ActiveState.ACTIVE),
        id="max-scale-caps",
    ),
    pytest.param(
        replace(SPEC, enable_scale_to_zero=False), ACTIVE, 0, 0, 1, T0 + 600,
        (1, 1, Mode.SERVE, ActiveState.ACTIVE),
        id="scale-to-zero-disabled",
    ),
    pytest.param(
        replace(SPEC, initial_scale=3), ACTIVATING, 1, -111, 1, T0 + 5,
        (3, 3, Mode.PROXY, ActiveState.ACTIVATING),
        id="initial-scale-until-reached",
    ),
    pytest.param(
        replace(SPEC, initial_scale=3), replace(ACTIVE, scale_target_initialized=True),
        1, 89, 3, T0 + 5,
        (1, 1, Mode.SERVE, ActiveState.ACTIVE),
        id="initial-scale-forgotten-once-reached",
    ),
    pytest.param(
        SPEC, INACTIVE, 1, -111, 0, T0 + 100,
        (1, 1, Mode.PROXY, ActiveState.ACTIVATING),
        id="cold-request-activates-behind-activator",
    ),
    pytest.param(
        SPEC, replace(INACTIVE, applied_scale=0), -1, -111, 0, T0 + 100,
        (SCALE_UNKNOWN, 0, Mode.PROXY, ActiveState.INACTIVE),
        id="unknown-after-zero-stays-proxy",
    ),
]
# fmt: on


@pytest.mark.parametrize(("spec", "status", "desired", "ebc", "ready", "now", "want"), CASES)
def test_reconcile(
    spec: KpaSpec,
    status: PodAutoscalerStatus,
    desired: int,
    ebc: float,
    ready: int,
    now: float,
    want: tuple[int, int, Mode, ActiveState],
) -> None:
    got = reconcile(spec, status, desired, ebc, ready, now)
    assert (got.want, got.scale, got.mode, got.status.active) == want


def test_idle_revision_timeline() -> None:
    """Idle from the start: one pod kept a stable window, then the grace period, then zero.

    Stable window 60 s, grace 30 s, ticks every 2 s: active at t=0 (pod ready), inactive at
    t=60 (want 0, proxy mode), scaled to 0 at t=90; the pod's retention is not asked for.
    """
    status = PodAutoscalerStatus.new(0.0)
    status = reconcile(SPEC, status, -1, -111, 1, 0.0).status
    assert status.active is ActiveState.ACTIVE
    scales: dict[float, tuple[int, Mode]] = {}
    for t in range(2, 100, 2):
        out = reconcile(SPEC, status, 0, 0, 1 if status.applied_scale != 0 else 0, float(t))
        status = out.status
        scales[float(t)] = (out.scale, out.mode)
    assert scales[58.0] == (1, Mode.SERVE)
    assert scales[60.0] == (1, Mode.PROXY)
    assert scales[88.0] == (1, Mode.PROXY)
    assert scales[90.0] == (0, Mode.PROXY)
    assert status.active is ActiveState.INACTIVE


def test_transition_time_moves_only_on_change() -> None:
    out = reconcile(SPEC, ACTIVE, 3, 10, 3, T0 + 50)
    assert out.status.active_since == T0
    out = reconcile(SPEC, ACTIVE, 0, 0, 1, T0 + 70)
    assert out.status.active is ActiveState.INACTIVE
    assert out.status.active_since == T0 + 70
    assert out.status.proxy_since == T0 + 70


def test_requeue_says_when_progress_is_possible() -> None:
    assert reconcile(SPEC, ACTIVE, 0, 0, 1, T0 + 45).requeue_after_s == 15.0
    assert reconcile(SPEC, INACTIVE, 0, 0, 1, T0 + 10).requeue_after_s == 20.0


def test_spec_validates() -> None:
    with pytest.raises(ValueError, match="min-scale 3 > max-scale 2"):
        KpaSpec(min_scale=3, max_scale=2)
    with pytest.raises(ValueError, match="activator capacity"):
        KpaSpec(activator_capacity=0)

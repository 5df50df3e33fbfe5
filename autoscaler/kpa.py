"""What Knative's KPA reconciler does with a decision: bounds, scale to zero, mode, activators.

Theory of operation. The decider (``autoscaling.scaling.Autoscaler``) says how many pods the
load needs; Knative's PodAutoscaler reconciler (pkg/reconciler/autoscaling/kpa/kpa.go and
scaler.go) turns that into what the platform is told. knpy has no PodAutoscaler object, so
its status lives here, as ``PodAutoscalerStatus``, and ``reconcile`` is one pass of Knative's
ReconcileKind: a pure function of (spec, status, decision, ready pods, now) that returns the
new status and what to publish. It runs after every decider tick.

1. Bounds. The decider's desired scale is clamped to [min-scale, max-scale] (max 0 means
   unbounded); until the revision first reached its initial scale, min is raised to it.
2. Scale to zero (handleScaleToZero). A desired 0 is not applied at once:
   - Activating (Active=Unknown, a revision starting up): keep what it has, unless it has been
     activating longer than the activation timeout (progress deadline 600 s + 30 s buffer),
     then give up and scale to 0.
   - Active: not before the revision was active for a whole stable window; until then scale
     to 1. After it, do not scale yet but mark the revision Inactive (want 0), which puts
     the activator in the path (proxy mode).
   - Inactive: scale to 0 once inactive for max(grace period, last-pod retention), or once
     the retention has passed and the activator has been in the path for the grace period.
     E.g. stable window 60 s, grace 30 s, retention 0: idle traffic is noticed within 60 s of
     the last request (the stable average falls to 0 once the window has no requests), the
     revision was active long before, so it is marked Inactive; 30 s later its pods go.
   Knative also probes that the activator really is in the path before the last step; here
   the platform applies the mode published by this same pass, so proxy-for is measured from
   when proxy mode was published.
3. Mode: serve (activator out of the path) only when the revision wants pods and has excess
   burst capacity >= 0; proxy otherwise. A revision whose scale is unknown but which was
   scaled to zero stays in proxy mode.
4. Activators: enough to hold the revision's capacity plus its target burst capacity,
   at least 2 (computeNumActivators). E.g. 3 ready pods of total 10, TBC 211, activator
   capacity 100: ceil((30 + 211) / 100) = 3.
5. Active condition (computeActiveCondition): want 0 -> Inactive; fewer ready pods than the
   active threshold -> Activating; enough -> Active.

Pure: no asyncio, time passed in; the status is an immutable value.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

from shared.seams import Mode

__all__ = [
    "ACTIVATION_TIMEOUT_BUFFER_S",
    "DEFAULT_PROGRESS_DEADLINE_S",
    "MIN_ACTIVATORS",
    "SCALE_UNKNOWN",
    "ActiveState",
    "KpaSpec",
    "PodAutoscalerStatus",
    "Reconciled",
    "apply_bounds",
    "compute_num_activators",
    "reconcile",
]

SCALE_UNKNOWN = -1  # Knative's scaleUnknown: no decision yet
# Knative's minActivators: a revision is always spread over at least two activators.
MIN_ACTIVATORS = 2
# Knative's activationTimeoutBuffer, added to the progress deadline so that the Revision
# reconciler can report why pods failed before the KPA gives up on them.
ACTIVATION_TIMEOUT_BUFFER_S = 30.0
# config-deployment's progress-deadline default.
DEFAULT_PROGRESS_DEADLINE_S = 600.0


class ActiveState(enum.Enum):
    """The PodAutoscaler's Active condition: Unknown, True or False."""

    ACTIVATING = "Activating"  # Active=Unknown
    ACTIVE = "Active"  # Active=True
    INACTIVE = "Inactive"  # Active=False


@dataclass(frozen=True, slots=True)
class KpaSpec:
    """One revision's scaling bounds and scale-to-zero settings, resolved from config."""

    min_scale: int = 0
    max_scale: int = 0  # 0 = unbounded
    initial_scale: int = 1
    reachable: bool = True
    enable_scale_to_zero: bool = True
    stable_window_s: float = 60.0
    scale_to_zero_grace_period_s: float = 30.0
    scale_to_zero_pod_retention_s: float = 0.0
    target_burst_capacity: float = 211.0
    total_value: float = 100.0  # one pod's capacity in the scaling metric
    activator_capacity: float = 100.0
    activation_timeout_s: float = DEFAULT_PROGRESS_DEADLINE_S + ACTIVATION_TIMEOUT_BUFFER_S

    def __post_init__(self) -> None:
        if self.min_scale < 0 or self.max_scale < 0:
            raise ValueError(f"scale bounds must be >= 0, got {self.min_scale}, {self.max_scale}")
        if self.max_scale and self.min_scale > self.max_scale:
            raise ValueError(f"min-scale {self.min_scale} > max-scale {self.max_scale}")
        if self.activator_capacity <= 0:
            raise ValueError(f"activator capacity must be > 0, got {self.activator_capacity}")


@dataclass(frozen=True, slots=True)
class PodAutoscalerStatus:
    """The parts of Knative's PodAutoscaler and ServerlessService status the KPA reads."""

    active: ActiveState
    active_since: float  # the Active condition's last transition time
    mode: Mode  # the ServerlessService mode last published
    proxy_since: float | None  # when proxy mode was published; None in serve mode
    scale_target_initialized: bool = False  # the revision once reached its initial scale
    applied_scale: int = SCALE_UNKNOWN  # the replicas last asked of the platform
    want: int = SCALE_UNKNOWN  # the PA's desired scale

    @classmethod
    def new(cls, now: float) -> PodAutoscalerStatus:
        """A new PodAutoscaler: activating, behind the activator (Knative's first SKS)."""
        return cls(ActiveState.ACTIVATING, now, Mode.PROXY, now)

    def active_for(self, now: float) -> float:
        return now - self.active_since if self.active is ActiveState.ACTIVE else -1.0

    def inactive_for(self, now: float) -> float:
        return now - self.active_since if self.active is ActiveState.INACTIVE else -1.0

    def activating_for(self, now: float) -> float:
        return now - self.active_since if self.active is ActiveState.ACTIVATING else -1.0

    def proxy_for(self, now: float) -> float:
        return 0.0 if self.proxy_since is None else now - self.proxy_since


@dataclass(frozen=True, slots=True)
class Reconciled:
    """One reconcile's result: the new status and what to tell the platform."""

    status: PodAutoscalerStatus
    want: int  # the PA's desired scale (-1 unknown)
    scale: int  # the replicas the platform should run now (-1: none asked yet)
    mode: Mode
    activators: int
    requeue_after_s: float | None = None  # reconcile again this soon to progress


def apply_bounds(min_scale: int, max_scale: int, x: int) -> int:
    """Clamp x into [min, max]; max 0 is unbounded (Knative's applyBounds)."""
    if x < min_scale:
        return min_scale
    if max_scale != 0 and x > max_scale:
        return max_scale
    return x


def compute_num_activators(
    ready_pods: int, target_burst_capacity: float, total_value: float, activator_capacity: float
) -> int:
    """Activators that should carry this revision (Knative's computeNumActivators)."""
    if target_burst_capacity == 0:
        return MIN_ACTIVATORS
    capacity = ready_pods * total_value
    if target_burst_capacity > 0:
        capacity += target_burst_capacity
    return max(MIN_ACTIVATORS, math.ceil(capacity / activator_capacity))


def _last_pod_retention(spec: KpaSpec) -> float:
    # An unreachable revision (no route) keeps no last pod.
    return spec.scale_to_zero_pod_retention_s if spec.reachable else 0.0


def _handle_scale_to_zero(
    spec: KpaSpec, status: PodAutoscalerStatus, desired: int, now: float
) -> tuple[int, bool, float | None]:
    """(scale, apply it?, requeue after): Knative's handleScaleToZero, minus the probe."""
    if desired != 0:
        return desired, True, None
    if not spec.enable_scale_to_zero:
        return 1, True, None
    if status.active is ActiveState.ACTIVATING:
        activating_for = status.activating_for(now)
        if activating_for > spec.activation_timeout_s:
            return desired, True, None  # activation timed out: give up
        return SCALE_UNKNOWN, False, spec.activation_timeout_s - activating_for
    if status.active is ActiveState.ACTIVE:
        active_for = status.active_for(now)
        if active_for >= spec.stable_window_s:
            return desired, False, None  # mark inactive, scale later
        return 1, True, spec.stable_window_s - active_for
    # Inactive.
    inactive_for = status.inactive_for(now)
    retention = _last_pod_retention(spec)
    if inactive_for >= max(spec.scale_to_zero_grace_period_s, retention):
        return desired, True, None
    if retention > 0 and inactive_for < retention:
        return desired, False, retention - inactive_for
    remaining = spec.scale_to_zero_grace_period_s - status.proxy_for(now)
    if remaining <= 0:
        return desired, True, None
    return desired, False, remaining


def _scale(
    spec: KpaSpec, status: PodAutoscalerStatus, desired: int, now: float
) -> tuple[int, bool, float | None]:
    """Knative's scaler.scale: bounds, initial scale, then scale to zero."""
    if desired < 0 and status.active is not ActiveState.ACTIVATING:
        return desired, False, None  # metrics not collected yet
    min_scale = spec.min_scale if spec.reachable else 0
    if spec.initial_scale > 1 and not status.scale_target_initialized and spec.reachable:
        min_scale = max(spec.initial_scale, min_scale)
    desired = apply_bounds(min_scale, spec.max_scale, desired)
    return _handle_scale_to_zero(spec, status, desired, now)


def _active_threshold(spec: KpaSpec, status: PodAutoscalerStatus) -> int:
    min_scale = spec.min_scale if spec.reachable else 0
    if not status.scale_target_initialized:
        return max(min_scale, spec.initial_scale)
    return max(min_scale, 1)


def _active_condition(
    spec: KpaSpec, status: PodAutoscalerStatus, want: int, ready: int, now: float
) -> PodAutoscalerStatus:
    """Knative's computeActiveCondition, with the transition time kept as a condition's is."""
    min_ready = _active_threshold(spec, status)
    if ready >= min_ready and not status.scale_target_initialized:
        status = replace(status, scale_target_initialized=True)
    new = status.active
    if want == 0 or min_ready == 0:
        new = ActiveState.INACTIVE
    elif ready < min_ready:
        if want > 0 or status.active is not ActiveState.INACTIVE:
            new = ActiveState.ACTIVATING
    elif want > 0 or status.active is not ActiveState.INACTIVE:
        new = ActiveState.ACTIVE
    if new is status.active:
        return status
    return replace(status, active=new, active_since=now)


def reconcile(
    spec: KpaSpec,
    status: PodAutoscalerStatus,
    desired_scale: int,
    excess_burst_capacity: float,
    ready_pods: int,
    now: float,
) -> Reconciled:
    """One pass of Knative's KPA ReconcileKind for a revision.

    Args:
        desired_scale: the decider's latest DesiredScale (-1 before its first valid tick).
        excess_burst_capacity: the decider's latest ExcessBurstCapacity.
        ready_pods: the revision's ready pods now.
    """
    want, apply, requeue = _scale(spec, status, desired_scale, now)
    if want == SCALE_UNKNOWN and status.active is ActiveState.INACTIVE:
        mode = Mode.PROXY
    elif want > 0 and excess_burst_capacity >= 0:
        mode = Mode.SERVE
    else:
        mode = Mode.PROXY
    activators = compute_num_activators(
        ready_pods, spec.target_burst_capacity, spec.total_value, spec.activator_capacity
    )
    proxy_since = status.proxy_since
    if mode is not status.mode:
        proxy_since = now if mode is Mode.PROXY else None
    applied = want if apply else status.applied_scale
    # Knative's computeStatus: a restarted autoscaler's -1 does not overwrite a known want.
    status_want = status.want if want == SCALE_UNKNOWN and status.want >= 0 else want
    status = replace(
        status, mode=mode, proxy_since=proxy_since, applied_scale=applied, want=status_want
    )
    status = _active_condition(spec, status, want, ready_pods, now)
    return Reconciled(status, want, applied, mode, activators, requeue)

"""The KPA decider of one revision: Knative's pkg/autoscaler/scaling/autoscaler.go, pure.

Theory of operation. Every tick (2 s) the caller hands ``Autoscaler.scale`` the ready pods and
the observed stable and panic averages of the scaling metric (per revision, e.g. concurrency
60 s and 6 s windows); the decider answers with a desired pod count:

1. Wanted pods: ``ceil(observed / target)`` for both windows. E.g. target 7 (containerConcurrency
   10 at 70 %), stable 20, panic 20: 3 pods each.
2. Rate limits, from the ready pods (0 counts as 1): at most ``ceil(max_scale_up_rate * ready)``
   and, when the revision is reachable, at least ``floor(ready / max_scale_down_rate)``.
   E.g. rate 10 and 1 ready pod: at most 10 even if 100 are wanted; rate 2 and 100 ready: at
   least 50. The ceil matters for small rates: 1.1 * 2 pods allows 3, not 2.
   An unreachable revision (no route points at it) may drop to anything at once.
3. Activation scale: a wanted count above zero is raised to ``activation_scale`` when that is
   above 1, so a revision leaving zero starts with that many pods.
4. Panic: when panic pods / ready pods >= ``panic_threshold`` (2.0 = 200 %), the decider panics
   and re-arms the panic on every tick still over it. It calms down only when a whole
   ``stable_window`` has passed since the last tick over the threshold. While panicking the
   count is the larger of stable and panic pods and never decreases. A decider created
   with more than one ready pod starts panicking: it has no history yet, and must not scale
   a running revision down because of that.
5. Scale-down delay: when reachable and ``scale_down_delay`` > 0, the result is the maximum
   of the counts decided over the last delay, in 2 s slots.
6. Excess burst capacity: ``floor(ready * total_value - target_burst_capacity - panic)``;
   0 when the burst capacity is 0 and -1 when it is -1 (unlimited: always keep the activator
   in the path). Negative means the pods cannot absorb the wanted burst, so the activator
   should stay in the request path. E.g. 3 pods of total 10, burst 211, panic 20: -201.

No data (a None average) gives Knative's invalid result, ScaleResult(0, 0, False): the
caller keeps the current scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoscaler.aggregation import TimeWindow

__all__ = [
    "INVALID_SCALE_RESULT",
    "TICK_INTERVAL_S",
    "Autoscaler",
    "DeciderSpec",
    "ScaleResult",
]

# Knative's tickInterval: how often the decider runs, and the slot of the scale-down delay
# window (so a 300 s delay keeps 150 decisions).
TICK_INTERVAL_S = 2.0


@dataclass(frozen=True, slots=True)
class DeciderSpec:
    """How one revision is scaled (Knative's DeciderSpec).

    The defaults are what Knative's MakeDecider gives a revision with containerConcurrency 0
    under the default config-autoscaler: target 70 of a total 100 concurrent requests.
    """

    # The metric value per pod to maintain; ``target_value <= total_value``.
    target_value: float = 70.0
    # The metric value one pod can take at most (containerConcurrency, or the target default).
    total_value: float = 100.0
    # Spare capacity to keep before taking the activator out of the path; -1 is unlimited.
    target_burst_capacity: float = 211.0
    # Panic pods / ready pods at which to panic: 2.0 is 200 %.
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    # Seconds. Panic ends only after this long below the threshold.
    stable_window: float = 60.0
    # Seconds at reduced load before a scale-down is applied; 0 applies it at once.
    scale_down_delay: float = 0.0
    # Concurrent requests one activator takes, for the activator subsetting.
    activator_capacity: float = 100.0
    initial_scale: int = 1
    # Whether a route points at the revision; if not, it may scale down without limits.
    reachable: bool = True
    # The minimum non-zero scale; 0 or 1 means none (Knative leaves it 0 when unset).
    activation_scale: int = 0
    # "concurrency" or "rps": which of the revision's averages the caller passes in.
    scaling_metric: str = "concurrency"

    def __post_init__(self) -> None:
        """Refuse values that would divide by zero or go back in time.

        Raises:
            ValueError: a target or scale-down rate that is not positive, or a negative window.
        """
        if not self.target_value > 0:
            raise ValueError(f"target_value must be positive, got {self.target_value}")
        if not self.max_scale_down_rate > 0:
            raise ValueError(
                f"max_scale_down_rate must be positive, got {self.max_scale_down_rate}"
            )
        if not self.max_scale_up_rate > 0:
            raise ValueError(f"max_scale_up_rate must be positive, got {self.max_scale_up_rate}")
        if self.stable_window < 0 or self.scale_down_delay < 0:
            raise ValueError(
                "stable_window and scale_down_delay must not be negative, got "
                f"{self.stable_window} and {self.scale_down_delay}"
            )


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """One decision (Knative's ScaleResult)."""

    desired_pod_count: int
    # Spare capacity beyond the target burst capacity; negative: keep the activator in path.
    excess_burst_capacity: int
    # False when there was not enough information to decide: keep the current scale.
    scale_valid: bool


# Knative's invalidSR.
INVALID_SCALE_RESULT = ScaleResult(0, 0, False)


def _delay_window(spec: DeciderSpec) -> TimeWindow | None:
    if spec.scale_down_delay > 0:
        return TimeWindow(spec.scale_down_delay, TICK_INTERVAL_S)
    return None


class Autoscaler:
    """The decider of one revision: panic state, scale-down delay and the scaling formula."""

    __slots__ = ("_delay_window", "_max_panic_pods", "_panic_time", "_resize_delay", "_spec")

    def __init__(self, spec: DeciderSpec, ready_pods: int, now: float) -> None:
        """Create the decider with the ready pods seen at creation.

        More than one ready pod starts it in panic mode, so that an autoscaler restart (which
        loses the metric history) keeps at least the current scale until data has built up.

        Raises:
            ValueError: ready_pods is negative.
        """
        if ready_pods < 0:
            raise ValueError(f"ready_pods must not be negative, got {ready_pods}")
        self._spec = spec
        self._delay_window = _delay_window(spec)
        self._resize_delay = False
        self._panic_time: float | None = now if ready_pods > 1 else None
        self._max_panic_pods = ready_pods

    def __repr__(self) -> str:
        mode = "stable" if self._panic_time is None else f"panic since {self._panic_time}"
        return (
            f"Autoscaler(target={self._spec.target_value}, {mode}, "
            f"max_panic_pods={self._max_panic_pods})"
        )

    @property
    def spec(self) -> DeciderSpec:
        """The spec in force."""
        return self._spec

    @property
    def in_panic(self) -> bool:
        """Whether the decider is in panic mode."""
        return self._panic_time is not None

    @property
    def panic_time(self) -> float | None:
        """The last tick over the panic threshold while panicking; None when stable."""
        return self._panic_time

    @property
    def max_panic_pods(self) -> int:
        """The highest count decided during this panic: panic never scales below it."""
        return self._max_panic_pods

    def update(self, spec: DeciderSpec) -> None:
        """Replace the spec; it applies from the next ``scale``.

        A changed scale-down delay resizes the delay window at the next ``scale`` (Knative
        keeps the window it was created with until the decider is recreated).
        """
        if spec.scale_down_delay != self._spec.scale_down_delay:
            self._resize_delay = True
        self._spec = spec

    def _apply_delay_change(self, now: float) -> None:
        """Rebuild the delay window for a new delay, carrying over the count it holds."""
        old = self._delay_window
        self._delay_window = _delay_window(self._spec)
        self._resize_delay = False
        if old is not None and self._delay_window is not None:
            # A longer or shorter delay must not drop a scale that is still being held;
            # recording a 0 first ages out what the old window no longer holds at ``now``.
            old.record(now, 0)
            self._delay_window.record(now, old.current())

    def scale(
        self,
        now: float,
        ready_pods: int | None,
        stable: float | None,
        panic: float | None,
    ) -> ScaleResult:
        """Decide the desired pod count at ``now``.

        Args:
            now: seconds, on the same clock as the constructor's ``now``.
            ready_pods: the revision's ready pods; None when they could not be counted
                (Knative's pod counter error), which gives the invalid result.
            stable: the observed stable-window average of the spec's metric; None: no data.
            panic: the observed panic-window average; None: no data.

        Returns:
            The decision, or INVALID_SCALE_RESULT when there is nothing to decide on.
        """
        if ready_pods is None or stable is None or panic is None:
            return INVALID_SCALE_RESULT
        if not (math.isfinite(stable) and math.isfinite(panic)):
            return INVALID_SCALE_RESULT
        spec = self._spec
        if self._resize_delay:
            self._apply_delay_change(now)
        # No pods count as one, so the rate limits still allow growth from zero.
        ready = float(max(1, ready_pods))

        # E.g. rate 1.1, 2 ready pods, 3 wanted: ceil(2.2) = 3 lets it grow by at least one.
        max_scale_up = math.ceil(spec.max_scale_up_rate * ready)
        max_scale_down = math.floor(ready / spec.max_scale_down_rate) if spec.reachable else 0

        stable_pods = math.ceil(stable / spec.target_value)
        panic_pods = math.ceil(panic / spec.target_value)
        desired_stable = min(max(stable_pods, max_scale_down), max_scale_up)
        desired_panic = min(max(panic_pods, max_scale_down), max_scale_up)

        if spec.activation_scale > 1:
            if stable_pods > 0 and spec.activation_scale > desired_stable:
                desired_stable = spec.activation_scale
            if panic_pods > 0 and spec.activation_scale > desired_panic:
                desired_panic = spec.activation_scale

        over_threshold = panic_pods / ready >= spec.panic_threshold
        if over_threshold:
            # Enter panic, or extend it: it ends a stable window after the last such tick.
            self._panic_time = now
        elif self._panic_time is not None and self._panic_time + spec.stable_window < now:
            # The surge has made its way into the stable window: calm down.
            self._panic_time = None
            self._max_panic_pods = 0

        desired = desired_stable
        if self._panic_time is not None:
            # Provision for whichever window sees more, and never scale down while panicking.
            desired = max(desired, desired_panic, self._max_panic_pods)
            self._max_panic_pods = desired

        if spec.reachable and self._delay_window is not None:
            self._delay_window.record(now, desired)
            desired = self._delay_window.current()

        if spec.target_burst_capacity == 0:
            excess = 0
        elif spec.target_burst_capacity > 0:
            total_capacity = ready_pods * spec.total_value
            excess = math.floor(total_capacity - spec.target_burst_capacity - panic)
        else:
            excess = -1
        return ScaleResult(desired, excess, True)

"""The multiscaler: one decider per revision, ticked every 2 s, poked when a revision wakes.

Theory of operation (Knative's pkg/autoscaler/scaling/multiscaler.go, with the KPA
reconciler's pass folded in): each revision has a runner holding its decider
(``scaling.Autoscaler``), the decider's last valid status (DesiredScale, ExcessBurstCapacity;
-1 and the initial-scale capacity before the first valid tick) and its PodAutoscaler status
(``kpa.PodAutoscalerStatus``). ``tick`` reads the collector's stable and panic averages of the
revision's metric, lets the decider decide, keeps the status when the decision is invalid (no
data: the revision keeps what it had), then runs the KPA pass and returns the ScaleDecision
to publish.

Knative ticks each decider on its own 2-s ticker; here one loop ticks them all, which is the
same cadence at a fraction of the cost for 10,000 revisions. A poke (``wants_poke``) ticks one
revision at once: when a revision at zero gets a Stat with requests in it (the activator's
first report of a cold request), waiting up to 2 s for the ticker would add that to the cold
start.

Pure: no asyncio, time passed in. The service owns the loop and the I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from autoscaler.collector import MetricCollector, MetricSpec, WindowAverages
from autoscaler.kpa import KpaSpec, PodAutoscalerStatus, reconcile
from autoscaler.register import RPS
from autoscaler.scaling import Autoscaler, DeciderSpec
from shared.seams import Mode, RevisionKey, ScaleDecision
from shared.stat_proto import StatData

__all__ = [
    "MultiScaler",
    "RevisionScaling",
    "Tick",
    "initial_excess_burst_capacity",
]

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class RevisionScaling:
    """Everything the autoscaler resolved for one revision from its spec and the config."""

    decider: DeciderSpec
    kpa: KpaSpec
    metric: MetricSpec


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick of one revision: what to publish and what was observed (for metrics)."""

    decision: ScaleDecision
    changed: bool  # differs from the last published decision in a way the platform cares about
    concurrency: WindowAverages | None
    rps: WindowAverages | None
    target: float
    in_panic: bool
    desired_pods: int  # the decider's
    requested_pods: int  # asked of the platform
    actual_pods: int  # ready


def initial_excess_burst_capacity(spec: DeciderSpec) -> float:
    """A new decider's ExcessBurstCapacity (Knative's createScaler).

    TBC -1 (activator always in the path) and 0 (never) stand as they are; otherwise the
    capacity initial-scale pods would have, less TBC: with TBC 211 and total 100, one pod
    gives 100 - 211 = -111, so a new revision starts behind the activator.
    """
    if spec.target_burst_capacity in (-1, 0):
        return spec.target_burst_capacity
    return float(int(spec.initial_scale * spec.total_value - spec.target_burst_capacity))


class _Runner:
    """Knative's scalerRunner: a decider, its last valid status, the PA status."""

    __slots__ = (
        "decider",
        "desired_scale",
        "excess_burst_capacity",
        "published",
        "scaling",
        "status",
    )

    def __init__(self, scaling: RevisionScaling, ready_pods: int, now: float) -> None:
        self.scaling = scaling
        self.decider = Autoscaler(scaling.decider, ready_pods, now)
        self.desired_scale = -1
        self.excess_burst_capacity = initial_excess_burst_capacity(scaling.decider)
        self.status = PodAutoscalerStatus.new(now)
        self.published: ScaleDecision | None = None


def _significant(d: ScaleDecision) -> tuple[int, Mode, int, bool]:
    # Knative re-reconciles on a new desired scale or when EBC changes sign; the exact EBC
    # moves every tick and is only informative.
    return (d.desired_scale, d.mode, d.activators, d.excess_burst_capacity >= 0)


class MultiScaler:
    """Every revision's runner; single-threaded (one event loop)."""

    def __init__(self, collector: MetricCollector) -> None:
        self._collector = collector
        self._runners: dict[RevisionKey, _Runner] = {}

    def __repr__(self) -> str:
        return f"<MultiScaler revisions={len(self._runners)}>"

    def __contains__(self, key: RevisionKey) -> bool:
        return key in self._runners

    def __len__(self) -> int:
        return len(self._runners)

    def revisions(self) -> list[RevisionKey]:
        return list(self._runners)

    def create_or_update(
        self, key: RevisionKey, scaling: RevisionScaling, ready_pods: int, now: float
    ) -> None:
        """Start deciding for a revision (and collecting its stats), or apply a new spec."""
        self._collector.create_or_update(key, scaling.metric, now)
        runner = self._runners.get(key)
        if runner is None:
            self._runners[key] = _Runner(scaling, ready_pods, now)
            return
        if scaling.decider != runner.scaling.decider:
            runner.decider.update(scaling.decider)
        runner.scaling = scaling

    def delete(self, key: RevisionKey) -> None:
        self._runners.pop(key, None)
        self._collector.delete(key)

    def scaling(self, key: RevisionKey) -> RevisionScaling | None:
        runner = self._runners.get(key)
        return None if runner is None else runner.scaling

    def status(self, key: RevisionKey) -> PodAutoscalerStatus | None:
        runner = self._runners.get(key)
        return None if runner is None else runner.status

    def restore_status(self, key: RevisionKey, status: PodAutoscalerStatus) -> None:
        """Start a revision's KPA pass from a recorded status (the PA object's, read back by a
        new leader): its Active time and scale-to-zero timing carry over."""
        runner = self._runners.get(key)
        if runner is not None:
            runner.status = status

    def desired_scale(self, key: RevisionKey) -> int | None:
        """The decider's latest DesiredScale (-1 before its first valid tick)."""
        runner = self._runners.get(key)
        return None if runner is None else runner.desired_scale

    def mark_published(self, decision: ScaleDecision) -> None:
        """The platform took this decision; ticks compare against it from now on."""
        runner = self._runners.get(decision.key)
        if runner is not None:
            runner.published = decision

    def wants_poke(self, key: RevisionKey, stat: StatData) -> bool:
        """Tick now? Yes when a revision decided at zero sees requests (Knative's Poke)."""
        runner = self._runners.get(key)
        return (
            runner is not None
            and runner.desired_scale == 0
            and stat.average_concurrent_requests != 0
        )

    def tick(self, key: RevisionKey, ready_pods: int, now: float) -> Tick | None:
        """Decide for one revision and run its KPA pass; None if it is not known."""
        runner = self._runners.get(key)
        if runner is None:
            return None
        concurrency = self._collector.stable_and_panic_concurrency(key, now)
        rps = self._collector.stable_and_panic_rps(key, now)
        spec = runner.scaling.decider
        observed = rps if spec.scaling_metric == RPS else concurrency
        result = runner.decider.scale(
            now,
            ready_pods,
            None if observed is None else observed.stable,
            None if observed is None else observed.panic,
        )
        if result.scale_valid:
            runner.desired_scale = result.desired_pod_count
            runner.excess_burst_capacity = result.excess_burst_capacity
        outcome = reconcile(
            runner.scaling.kpa,
            runner.status,
            runner.desired_scale,
            runner.excess_burst_capacity,
            ready_pods,
            now,
        )
        if outcome.status.active is not runner.status.active:
            log.info(
                "%s: %s -> %s (want %d, ready %d)",
                key,
                runner.status.active.value,
                outcome.status.active.value,
                outcome.want,
                ready_pods,
            )
        runner.status = outcome.status
        decision = ScaleDecision(
            key,
            outcome.scale,
            outcome.mode,
            outcome.activators,
            runner.excess_burst_capacity,
        )
        previous = runner.published
        changed = previous is None or _significant(previous) != _significant(decision)
        return Tick(
            decision=decision,
            changed=changed,
            concurrency=concurrency,
            rps=rps,
            target=spec.target_value,
            in_panic=runner.decider.in_panic,
            desired_pods=runner.desired_scale,
            requested_pods=outcome.scale,
            actual_pods=ready_pods,
        )

"""A revision's scaling, resolved from config-autoscaler and its annotations.

These functions combine the cluster's config-autoscaler (configmap.py) and a revision's
annotations (annotations.py) as Knative's PodAutoscaler reconciler does
(pkg/reconciler/autoscaling/resources and kpa/resources/decider.go). The target per pod is
``total * utilization``, at least 0.01:

- concurrency with containerConcurrency 0: total is container-concurrency-target-default,
  so 100 * 70 % = target 70 of 100; with containerConcurrency 10: 10 * 70 % = 7 of 10;
- rps: total is requests-per-second-target-default, 200 * 70 % = 140 of 200;
- a ``target`` annotation replaces the total, but never above a non-zero
  containerConcurrency (target 50 at containerConcurrency 10 stays 10 * 70 % = 7);
- ``target-utilization-percentage`` replaces the utilization (75 -> 0.75).

The panic window is the stable window times panic-window-percentage, rounded to whole
seconds and at least 1 s: 60 s at 10 % is 6 s; 10 s at 10 % is 1 s; 60 s at 51 % is 31 s.
"""

from __future__ import annotations

from autoscaler.annotations import RevisionAutoscaling
from autoscaler.collector import Aggregation, MetricSpec
from autoscaler.configmap import AutoscalerConfig
from autoscaler.kpa import KpaSpec
from autoscaler.multiscaler import RevisionScaling
from autoscaler.register import BUCKET_SIZE_S, CONCURRENCY, KPA, RPS, TARGET_MIN
from autoscaler.scaling import DeciderSpec
from shared.gosyntax import NS_PER_S
from shared.seams import RevisionSpec

__all__ = [
    "decider_spec",
    "initial_scale",
    "panic_window",
    "resolve_metric_target",
    "resolve_scaling",
    "scale_bounds",
    "scale_to_zero_pod_retention",
    "stable_window",
]

def resolve_metric_target(
    cfg: AutoscalerConfig, ra: RevisionAutoscaling, container_concurrency: int
) -> tuple[float, float]:
    """Knative's ResolveMetricTarget: (target per pod, total per pod) of the scaling metric."""
    if ra.metric == RPS:
        total = cfg.rps_target_default
        utilization = cfg.target_utilization
    else:
        # Unlimited containerConcurrency targets the cluster default.
        total = float(container_concurrency) or cfg.container_concurrency_target_default
        utilization = cfg.container_concurrency_target_fraction
    if ra.target is not None:
        total = ra.target
        if ra.metric == CONCURRENCY and container_concurrency != 0:
            # Never aim above what the app can take at once.
            total = min(ra.target, float(container_concurrency))
    if ra.target_utilization is not None:
        utilization = ra.target_utilization
    return max(TARGET_MIN, total * utilization), total


def stable_window(cfg: AutoscalerConfig, ra: RevisionAutoscaling) -> float:
    """The revision's stable window in seconds: its window annotation, or the cluster's."""
    return cfg.stable_window if ra.window is None else ra.window


def panic_window(cfg: AutoscalerConfig, ra: RevisionAutoscaling) -> float:
    """The panic window in seconds: stable window x percentage, whole seconds, at least 1 s."""
    percentage = (
        cfg.panic_window_percentage
        if ra.panic_window_percentage is None
        else ra.panic_window_percentage
    )
    # As Go: a float product truncated to nanoseconds, then rounded half up to seconds.
    ns = int(float(round(stable_window(cfg, ra) * NS_PER_S)) * percentage / 100.0)
    rounded = (ns + NS_PER_S // 2) // NS_PER_S * NS_PER_S
    return max(rounded / NS_PER_S, BUCKET_SIZE_S)


def scale_bounds(
    cfg: AutoscalerConfig, ra: RevisionAutoscaling, *, reachable: bool = True
) -> tuple[int, int]:
    """Knative's ScaleBounds: (min, max) pods, 0 meaning unbounded; no min when unreachable."""
    low = 0
    if reachable:
        low = cfg.min_scale if ra.min_scale is None else ra.min_scale
    high = cfg.max_scale if ra.max_scale is None else ra.max_scale
    return low, high


def initial_scale(cfg: AutoscalerConfig, ra: RevisionAutoscaling) -> int:
    """Knative's GetInitialScale: the annotation's, unless it is a 0 the cluster forbids."""
    if ra.initial_scale is None or (ra.initial_scale == 0 and not cfg.allow_zero_initial_scale):
        return cfg.initial_scale
    return ra.initial_scale


def scale_to_zero_pod_retention(cfg: AutoscalerConfig, ra: RevisionAutoscaling) -> float:
    """Seconds the last pod is kept after the decision to scale to zero."""
    if ra.scale_to_zero_pod_retention_period is None:
        return cfg.scale_to_zero_pod_retention_period
    return ra.scale_to_zero_pod_retention_period


def decider_spec(
    cfg: AutoscalerConfig,
    ra: RevisionAutoscaling,
    container_concurrency: int,
    *,
    reachable: bool = True,
) -> DeciderSpec:
    """Knative's MakeDecider: the revision's DeciderSpec from the cluster config and annotations.

    Args:
        reachable: whether a route points at the revision (Knative's PA reachability);
            an unreachable revision scales down without rate limit or delay.
    """
    target, total = resolve_metric_target(cfg, ra, container_concurrency)
    threshold_percentage = (
        cfg.panic_threshold_percentage
        if ra.panic_threshold_percentage is None
        else ra.panic_threshold_percentage
    )
    return DeciderSpec(
        target_value=target,
        total_value=total,
        target_burst_capacity=(
            cfg.target_burst_capacity
            if ra.target_burst_capacity is None
            else ra.target_burst_capacity
        ),
        panic_threshold=threshold_percentage / 100.0,
        max_scale_up_rate=cfg.max_scale_up_rate,
        max_scale_down_rate=cfg.max_scale_down_rate,
        stable_window=stable_window(cfg, ra),
        scale_down_delay=cfg.scale_down_delay
        if ra.scale_down_delay is None
        else ra.scale_down_delay,
        activator_capacity=cfg.activator_capacity,
        initial_scale=initial_scale(cfg, ra),
        reachable=reachable,
        activation_scale=0 if ra.activation_scale is None else ra.activation_scale,
        scaling_metric=ra.metric,
    )


def resolve_scaling(spec: RevisionSpec, cfg: AutoscalerConfig) -> RevisionScaling | None:
    """A revision's decider spec, KPA bounds and metric windows (Knative's MakeDecider/Metric).

    Returns:
        None for a revision of another autoscaler class (the HPA's), which the KPA leaves alone.

    Raises:
        ConfigError: an ``autoscaling.knative.dev/*`` annotation is invalid.
    """
    cc = spec.container_concurrency
    ra = RevisionAutoscaling.from_annotations(spec.annotations, cc, cfg)
    if ra.autoscaler_class != KPA:
        return None
    decider = decider_spec(cfg, ra, cc, reachable=spec.reachable)
    min_scale, max_scale = scale_bounds(cfg, ra, reachable=spec.reachable)
    kpa = KpaSpec(
        min_scale=min_scale,
        max_scale=max_scale,
        initial_scale=decider.initial_scale,
        reachable=decider.reachable,
        enable_scale_to_zero=cfg.enable_scale_to_zero,
        stable_window_s=decider.stable_window,
        scale_to_zero_grace_period_s=cfg.scale_to_zero_grace_period,
        scale_to_zero_pod_retention_s=scale_to_zero_pod_retention(cfg, ra),
        target_burst_capacity=decider.target_burst_capacity,
        total_value=decider.total_value,
        activator_capacity=decider.activator_capacity,
    )
    metric = MetricSpec(
        stable_window_s=decider.stable_window,
        panic_window_s=panic_window(cfg, ra),
        aggregation=Aggregation(ra.metric_aggregation_algorithm),
        # Knative's resolveScrapeTarget: TBC -1 keeps the activator in the path, so the pods
        # are not scraped and the activator's stats are all there is.
        scraped=decider.target_burst_capacity != -1,
    )
    return RevisionScaling(decider, kpa, metric)

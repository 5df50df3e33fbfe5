"""Knative's config-autoscaler ConfigMap: the cluster-wide autoscaling defaults, validated.

Knative's pkg/autoscaler/config/config.go: every key with Knative's default, parsed once from
the ConfigMap's data as Go parses it (strconv, time.ParseDuration: "1m30s", "500ms"; see
shared/gosyntax.py), then checked in Knative's order; every error names the key at fault.
Durations are float seconds here. A revision's ``autoscaling.knative.dev/*`` annotations
override some of these keys (annotations.py); resolve.py combines the two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from autoscaler.register import (
    KPA,
    PANIC_WINDOW_PERCENTAGE_MAX,
    PANIC_WINDOW_PERCENTAGE_MIN,
    TARGET_MIN,
    WINDOW_MAX_S,
    WINDOW_MAX_TEXT,
    WINDOW_MIN_S,
    WINDOW_MIN_TEXT,
)
from shared.envconfig import ConfigError
from shared.gosyntax import parse_bool, parse_float, parse_int32, parse_seconds, quote

__all__ = ["CONFIG_NAME", "AutoscalerConfig"]

_T = TypeVar("_T")

CONFIG_NAME: Final = "config-autoscaler"
_DEFAULT_TARGET_UTILIZATION: Final = 0.7

@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """Knative's config-autoscaler, validated at construction. Durations in seconds."""

    enable_scale_to_zero: bool = True
    # container-concurrency-target-percentage as a fraction: "70" and "0.7" both give 0.7.
    container_concurrency_target_fraction: float = _DEFAULT_TARGET_UTILIZATION
    container_concurrency_target_default: float = 100.0
    # The utilization for metrics other than concurrency; not a ConfigMap key in Knative.
    target_utilization: float = _DEFAULT_TARGET_UTILIZATION
    rps_target_default: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    target_burst_capacity: float = 211.0
    panic_window_percentage: float = 10.0
    activator_capacity: float = 100.0
    panic_threshold_percentage: float = 200.0
    stable_window: float = 60.0
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    scale_down_delay: float = 0.0
    pod_autoscaler_class: str = KPA
    allow_zero_initial_scale: bool = False
    initial_scale: int = 1
    min_scale: int = 0
    max_scale: int = 0
    max_scale_limit: int = 0

    def __post_init__(self) -> None:
        """Knative's validate(), in its order, naming the ConfigMap key at fault.

        Raises:
            ConfigError: a value out of its range.
        """
        _validate(self)

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> AutoscalerConfig:
        """Build the config from a ``config-autoscaler`` ConfigMap's data.

        Absent keys take Knative's defaults; unknown keys (``_example``) are ignored. A
        present key must parse, even when empty, as in Knative.

        Raises:
            ConfigError: a value that does not parse or is out of range; names the key.
        """
        d = cls()
        fraction = _cm_float(
            data,
            "container-concurrency-target-percentage",
            d.container_concurrency_target_fraction,
        )
        # For legacy reasons both a fraction in (0, 1] and a percentage are accepted.
        if fraction > 1.0:
            fraction /= 100.0
        return cls(
            pod_autoscaler_class=data.get("pod-autoscaler-class", d.pod_autoscaler_class),
            enable_scale_to_zero=_cm_bool(data, "enable-scale-to-zero", d.enable_scale_to_zero),
            allow_zero_initial_scale=_cm_bool(
                data, "allow-zero-initial-scale", d.allow_zero_initial_scale
            ),
            max_scale_up_rate=_cm_float(data, "max-scale-up-rate", d.max_scale_up_rate),
            max_scale_down_rate=_cm_float(data, "max-scale-down-rate", d.max_scale_down_rate),
            container_concurrency_target_fraction=fraction,
            container_concurrency_target_default=_cm_float(
                data, "container-concurrency-target-default", d.container_concurrency_target_default
            ),
            rps_target_default=_cm_float(
                data, "requests-per-second-target-default", d.rps_target_default
            ),
            target_burst_capacity=_cm_float(data, "target-burst-capacity", d.target_burst_capacity),
            panic_window_percentage=_cm_float(
                data, "panic-window-percentage", d.panic_window_percentage
            ),
            activator_capacity=_cm_float(data, "activator-capacity", d.activator_capacity),
            panic_threshold_percentage=_cm_float(
                data, "panic-threshold-percentage", d.panic_threshold_percentage
            ),
            initial_scale=_cm_int32(data, "initial-scale", d.initial_scale),
            min_scale=_cm_int32(data, "min-scale", d.min_scale),
            max_scale=_cm_int32(data, "max-scale", d.max_scale),
            max_scale_limit=_cm_int32(data, "max-scale-limit", d.max_scale_limit),
            stable_window=_cm_duration(data, "stable-window", d.stable_window),
            scale_down_delay=_cm_duration(data, "scale-down-delay", d.scale_down_delay),
            scale_to_zero_grace_period=_cm_duration(
                data, "scale-to-zero-grace-period", d.scale_to_zero_grace_period
            ),
            scale_to_zero_pod_retention_period=_cm_duration(
                data, "scale-to-zero-pod-retention-period", d.scale_to_zero_pod_retention_period
            ),
        )



def _cm_value(
    data: Mapping[str, str], key: str, default: _T, parse: Callable[[str], _T], expected: str
) -> _T:
    """The key's value parsed, or ``default`` when the key is absent (not when it is empty)."""
    raw = data.get(key)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(key, f"must be {expected}, got {quote(raw)}") from None


def _cm_float(data: Mapping[str, str], key: str, default: float) -> float:
    return _cm_value(data, key, default, parse_float, "a finite number")


def _cm_int32(data: Mapping[str, str], key: str, default: int) -> int:
    return _cm_value(data, key, default, parse_int32, "a 32-bit integer")


def _cm_bool(data: Mapping[str, str], key: str, default: bool) -> bool:
    return _cm_value(data, key, default, parse_bool, "a boolean (true/false/1/0/t/f)")


def _cm_duration(data: Mapping[str, str], key: str, default: float) -> float:
    return _cm_value(data, key, default, parse_seconds, 'a duration such as "30s" or "1m30s"')


def _whole_seconds(seconds: float) -> bool:
    return float(seconds).is_integer()


def _validate(c: AutoscalerConfig) -> None:
    """Knative's validate(): its checks in its order; the first failing one is raised."""

    def check(ok: bool, key: str, reason: str) -> None:
        if not ok:
            raise ConfigError(key, reason)

    check(
        c.scale_to_zero_grace_period > 0,
        "scale-to-zero-grace-period",
        f"must be positive, was: {c.scale_to_zero_grace_period}s",
    )
    check(
        c.scale_down_delay >= 0,
        "scale-down-delay",
        f"cannot be negative, was: {c.scale_down_delay}s",
    )
    check(
        _whole_seconds(c.scale_down_delay),
        "scale-down-delay",
        f"= {c.scale_down_delay}s, must be specified with at most second precision",
    )
    check(
        c.scale_to_zero_pod_retention_period >= 0,
        "scale-to-zero-pod-retention-period",
        f"cannot be negative, was: {c.scale_to_zero_pod_retention_period}s",
    )
    check(
        c.target_burst_capacity >= 0 or c.target_burst_capacity == -1,
        "target-burst-capacity",
        f"must be either non-negative or -1 (for unlimited), was: {c.target_burst_capacity}",
    )
    fraction = c.container_concurrency_target_fraction
    check(
        0 < fraction <= 1,
        "container-concurrency-target-percentage",
        f"= {fraction} is outside of valid range of (0, 100]",
    )
    target = fraction * c.container_concurrency_target_default
    check(
        target >= TARGET_MIN,
        "container-concurrency-target-default",
        f"with container-concurrency-target-percentage yields target concurrency of "
        f"{target}, can't be less than {TARGET_MIN}",
    )
    check(
        c.rps_target_default >= TARGET_MIN,
        "requests-per-second-target-default",
        f"must be at least {TARGET_MIN}, was: {c.rps_target_default}",
    )
    check(
        c.activator_capacity >= 1,
        "activator-capacity",
        f"= {c.activator_capacity}, must be at least 1",
    )
    check(
        c.max_scale_up_rate > 1.0,
        "max-scale-up-rate",
        f"= {c.max_scale_up_rate}, must be greater than 1.0",
    )
    check(
        c.max_scale_down_rate > 1.0,
        "max-scale-down-rate",
        f"= {c.max_scale_down_rate}, must be greater than 1.0",
    )
    check(
        WINDOW_MIN_S <= c.stable_window <= WINDOW_MAX_S,
        "stable-window",
        f"= {c.stable_window}s, must be in [{WINDOW_MIN_TEXT}; {WINDOW_MAX_TEXT}] range",
    )
    check(
        _whole_seconds(c.stable_window),
        "stable-window",
        f"= {c.stable_window}s, must be specified with at most second precision",
    )
    check(
        PANIC_WINDOW_PERCENTAGE_MIN <= c.panic_window_percentage <= PANIC_WINDOW_PERCENTAGE_MAX,
        "panic-window-percentage",
        f"= {c.panic_window_percentage}, must be in [1, 100] interval",
    )
    check(
        c.initial_scale > 0 or (c.initial_scale == 0 and c.allow_zero_initial_scale),
        "initial-scale",
        f"= {c.initial_scale}, must be at least 0 "
        "(or at least 1 when allow-zero-initial-scale is false)",
    )
    check(c.min_scale >= 0, "min-scale", f"= {c.min_scale}, must be at least 0")
    # With a max-scale-limit, a default max-scale (not "unlimited") is required.
    min_max_scale = 1 if c.max_scale_limit > 0 else 0
    check(
        c.max_scale >= min_max_scale
        and (c.max_scale_limit <= 0 or c.max_scale <= c.max_scale_limit),
        "max-scale",
        f"= {c.max_scale}, must be in "
        f"[{min_max_scale}, max-scale-limit({c.max_scale_limit})] range",
    )
    check(
        c.max_scale_limit >= 0,
        "max-scale-limit",
        f"= {c.max_scale_limit}, must be at least 0",
    )
    check(
        not (c.min_scale > c.max_scale > 0),
        "min-scale",
        f"({c.min_scale}) must be less than max-scale ({c.max_scale})",
    )

